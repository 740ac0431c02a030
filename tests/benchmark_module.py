"""A script of benchmarks/ loaded as a module, for tests of its bookkeeping (nothing is timed).

Each script puts benchmarks/ on the import path itself (for its ``_common``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def load_benchmark(name: str):
    """benchmarks/<name>.py as a fresh module named ``<name>_bench``."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
