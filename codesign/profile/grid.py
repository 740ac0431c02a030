"""Documented shape grids per op, so predictors learn more than one search space's kernels.

For each op a grid of typical CNN shapes at small and mid resolutions (batch 1, NCHW) is
enumerated; ``grid_specs(op, samples, seed)`` draws ``samples`` distinct points uniformly from
it (all of them when samples >= the grid size). The grids:

- conv2d: channels in {8, 16, 24, 32, 48, 64, 96, 128} (in and out drawn independently),
  resolution in {7, 8, 14, 16, 28, 32, 56}, kernel in {1, 3, 5, 7}, stride in {1, 2},
  groups in {1, depthwise} (depthwise: out = in), activation in {none, relu}, bias in {no, yes};
- avg_pool2d / max_pool2d: channels as above, resolution as above, kernel 3, stride {1, 2}, pad 1;
- global_avg_pool2d, batch_norm, relu, relu6, hardswish, sigmoid, add, mul: channels x resolution;
- dense: features in {16, 32, 64, 128, 256, 512, 1024} x out in {10, 16, 64, 256, 1000}.
"""

from __future__ import annotations

import itertools
import random

from ..errors import CodesignError
from ..kernelspec import _REQUIRED, OPS, KernelSpec

CHANNELS = (8, 16, 24, 32, 48, 64, 96, 128)
RESOLUTIONS = (7, 8, 14, 16, 28, 32, 56)


def _grid(op: str) -> list[KernelSpec]:
    out = []
    if op == "conv2d":
        for ci, co, r, k, s, dw, act, bias in itertools.product(
            CHANNELS, CHANNELS, RESOLUTIONS, (1, 3, 5, 7), (1, 2), (False, True), ("none", "relu"), (False, True)
        ):
            if dw and ci != co:
                continue
            if k > r:
                continue
            out.append(KernelSpec.make("conv2d", (1, ci, r, r), out_channels=co, kernel=k, stride=s,
                                       groups=ci if dw else 1, activation=act, bias=bias))
    elif op in ("avg_pool2d", "max_pool2d"):
        for c, r, s in itertools.product(CHANNELS, RESOLUTIONS, (1, 2)):
            out.append(KernelSpec.make(op, (1, c, r, r), kernel=3, stride=s, padding=1))
    elif op == "dense":
        for f, o in itertools.product((16, 32, 64, 128, 256, 512, 1024), (10, 16, 64, 256, 1000)):
            out.append(KernelSpec.make("dense", (1, f), out_features=o, weight_kn=True))
    elif op in _PLAIN_OPS:
        for c, r in itertools.product(CHANNELS, RESOLUTIONS):
            out.append(KernelSpec.make(op, (1, c, r, r)))
    else:
        raise CodesignError(f"no --grid for op {op!r}; choose from {', '.join(grid_ops())}")
    return out


# Ops of (N, C, H, W) inputs that need no attribute: their grid is channels x resolution.
_PLAIN_OPS = sorted(op for op, (rank, defaults) in OPS.items()
                    if 4 in (rank if isinstance(rank, tuple) else (rank,))
                    and all(v is not _REQUIRED for v in defaults.values()))


def grid_ops() -> list[str]:
    """The ops ``grid_specs`` has a grid for."""
    return sorted({"conv2d", "avg_pool2d", "max_pool2d", "dense", *_PLAIN_OPS})


def grid_specs(op: str, samples: int = 50, seed: int = 0) -> list[KernelSpec]:
    """``samples`` distinct kernels drawn from the op's grid (reproducible with ``seed``)."""
    if samples < 1:
        raise CodesignError(f"--grid-samples must be >= 1, got {samples}")
    grid = _grid(op)
    if samples >= len(grid):
        return grid
    return random.Random(seed).sample(grid, samples)
