"""Benchmark of the profiler: kernels profiled per minute, compile vs timing split, and the
spread of the same kernels profiled three times (fresh databases), on cpu-local.

(Named profiling.py: a profile.py in benchmarks/ would shadow the standard library's profile
module, which torch imports, for every script run from this folder.)

    python benchmarks/profiling.py [--kernels N] [--repeats R] [--min-repeat-ms M]

Prints JSON. The kernels are a fixed grid sample (conv2d, depthwise included, pools, dense,
elementwise) under the untuned schedule; the spread is max/min - 1 of each kernel's median latency
over the three runs, summarised by its median and maximum.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import hardware  # noqa: E402

from codesign.profile import ProfileDB, get_device, profile_kernels  # noqa: E402
from codesign.profile.grid import grid_specs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=40, help="kernels per run (default 40)")
    parser.add_argument("--repeats", type=int, default=10, help="time_evaluator repeats (default 10)")
    parser.add_argument("--min-repeat-ms", type=float, default=50.0, help="ms per repeat (default 50)")
    parser.add_argument("--device", default="cpu-local", help="device (default cpu-local)")
    args = parser.parse_args()
    per_op = max(1, args.kernels // 5)
    specs = (grid_specs("conv2d", 2 * per_op, seed=7) + grid_specs("max_pool2d", per_op, seed=7)
             + grid_specs("dense", per_op, seed=7) + grid_specs("add", per_op, seed=7))[: args.kernels]
    device = get_device(args.device)
    runs, latencies = [], []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp, ProfileDB(os.path.join(tmp, "p.sqlite")) as db:
            rep = profile_kernels(specs, device, db, repeats=args.repeats, min_repeat_ms=args.min_repeat_ms,
                                  progress=False)
            runs.append(rep.to_dict())
            latencies.append({m.kernel_key: m.latency_ms for m in db.query(ok_only=True)})
    keys = [k for k in latencies[0] if all(k in lat for lat in latencies)]
    spreads = [max(lat[k] for lat in latencies) / min(lat[k] for lat in latencies) - 1 for k in keys]
    result = {
        "benchmark": "profile",
        "hardware": hardware(),
        "device": device.name,
        "schedule": "untuned",
        "kernels": len(specs),
        "repeats": args.repeats,
        "min_repeat_ms": args.min_repeat_ms,
        "kernels_per_minute": [60 * r["measured"] / r["wall_s"] for r in runs],
        "compile_s": [r["compile_s"] for r in runs],
        "timing_s": [r["timing_s"] for r in runs],
        "wall_s": [r["wall_s"] for r in runs],
        "compile_share_of_wall": [r["compile_s"] / r["wall_s"] for r in runs],
        "failed": [r["failed"] for r in runs],
        "spread_of_three_runs": {
            "median": statistics.median(spreads) if spreads else None,
            "max": max(spreads) if spreads else None,
            "kernels_within_5pct": sum(s <= 0.05 for s in spreads),
            "kernels": len(spreads),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
