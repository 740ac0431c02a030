"""codesign: find networks (and accelerator parameters) that meet latency and energy budgets.

The fused ops at the core of the search are exported here; see README.md for the CLI.
"""

import os as _os

# OpenMP threads that spin while they wait take the cores from whatever else runs, and a supernet
# step of small tensors then runs up to ~10x slower on a shared machine (benchmarks/threads.py).
# Sleeping threads cost little on an idle one. Effective when codesign is imported before torch
# (the CLI always is); a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .ops import FREE_OPS, backends, current_backend, gumbel_softmax, mixed_op, use_backend  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "FREE_OPS",
    "backends",
    "current_backend",
    "gumbel_softmax",
    "mixed_op",
    "use_backend",
    "__version__",
]
