"""codesign: find networks (and accelerator parameters) that meet latency and energy budgets.

The fused ops at the core of the search are exported here; see README.md for the CLI.
"""

from .ops import FREE_OPS, backends, current_backend, gumbel_softmax, mixed_op, use_backend

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
