"""Triton GPU kernels of codesign's fused ops (installed as codesign.kernels).

Importing this package never touches the CUDA driver; ``available(device)`` says whether the
kernels can run on a device and why not.
"""

from __future__ import annotations

import importlib.util
import os


def available(device=None) -> tuple[bool, str | None]:
    """(True, None) when the Triton kernels can run on ``device`` (default: a CUDA GPU)."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install 'codesign[triton]')"
    return False, "the Triton kernels are not built yet"
