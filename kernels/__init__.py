"""Triton GPU kernels of codesign's fused ops (installed as codesign.kernels).

Importing this package imports neither triton nor the CUDA driver: the kernel modules load on the
first call, and ``available(device)`` says whether they can run on a device and why not. On CPU
tensors they run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before triton is
imported), which is how the test suite checks them on machines without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def available(device=None) -> tuple[bool, str | None]:
    """(True, None) when the Triton kernels can run on ``device`` (default: the current GPU)."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install 'codesign[triton]')"
    kind = getattr(device, "type", device) or "cuda"
    if kind == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return False, "CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before importing triton"
        if "triton" in sys.modules and not _imported_interpreted():
            return False, "triton was imported before TRITON_INTERPRET=1 was set"
        return True, None
    if kind != "cuda":
        return False, f"no Triton kernels for {kind} tensors"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device is visible to torch"
    return True, None


def _imported_interpreted() -> bool:
    try:
        from triton import knobs

        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):
        return os.environ.get("TRITON_INTERPRET") == "1"


def mixed_op_forward(x, ys, weights, free_codes, stride):
    from .mixed_op import mixed_op_forward as fwd

    return fwd(x, ys, weights, free_codes, stride)


def mixed_op_backward(grad, x, ys, weights, free_codes, stride):
    from .mixed_op import mixed_op_backward as bwd

    return bwd(grad, x, ys, weights, free_codes, stride)


def gumbel_softmax_forward(logits, tau, hard, seed):
    from .gumbel import gumbel_softmax_forward as fwd

    return fwd(logits, tau, hard, seed)


def gumbel_softmax_backward(grad_y, logits, tau, seed):
    from .gumbel import gumbel_softmax_backward as bwd

    return bwd(grad_y, logits, tau, seed)
