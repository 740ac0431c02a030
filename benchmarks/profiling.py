"""Benchmark of the profiler: kernels profiled per minute, compile vs timing split, the spread of
the same kernels profiled three times (fresh databases), and two comparisons made in the same run:
compilation overlapped with timing against one after the other, and TVM's untuned kernels against
eager PyTorch on the same kernels.

(Named profiling.py: a profile.py in benchmarks/ would shadow the standard library's profile
module, which torch imports, for every script run from this folder.)

    python benchmarks/profiling.py [--kernels N] [--repeats R] [--min-repeat-ms M] [--schedule S]

Prints JSON. The kernels are a fixed grid sample (conv2d, depthwise included, max pools, dense,
elementwise add). The spread is max/min - 1 of each kernel's median latency over the three
overlapped runs, summarised by its median and maximum; ``overlap_speedup`` is the median
kernels-per-minute of the overlapped runs over that of one sequential run; ``tvm_over_torch`` is
the per-kernel ratio of TVM's latency (first run) to eager PyTorch's (``--reference torch``).
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


def _summary(values: list[float]) -> dict:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=40, help="kernels per run (default 40)")
    parser.add_argument("--repeats", type=int, default=10, help="time_evaluator repeats (default 10)")
    parser.add_argument("--min-repeat-ms", type=float, default=50.0, help="ms per repeat (default 50)")
    parser.add_argument("--device", default="cpu-local", help="device (default cpu-local)")
    parser.add_argument("--schedule", default="untuned", help="schedule policy (default untuned)")
    args = parser.parse_args()
    per_op = max(1, args.kernels // 5)
    specs = (grid_specs("conv2d", 2 * per_op, seed=7) + grid_specs("max_pool2d", per_op, seed=7)
             + grid_specs("dense", per_op, seed=7) + grid_specs("add", per_op, seed=7))[: args.kernels]
    device = get_device(args.device)
    runs, latencies, torch_ms = [], [], {}
    for i, overlap in enumerate((True, True, True, False)):
        with tempfile.TemporaryDirectory() as tmp, ProfileDB(os.path.join(tmp, "p.sqlite")) as db:
            rep = profile_kernels(specs, device, db, schedule=args.schedule, repeats=args.repeats,
                                  min_repeat_ms=args.min_repeat_ms, progress=False, overlap_compile=overlap)
            runs.append(rep.to_dict())
            latencies.append({m.kernel_key: m.latency_ms for m in db.query(schedule=args.schedule, ok_only=True)})
            if i == 0:  # the PyTorch reference, timed once, outside the throughput figures
                profile_kernels(specs, device, db, schedule=args.schedule, reference="torch",
                                repeats=args.repeats, progress=False)
                torch_ms = {m.kernel_key: m.latency_ms for m in db.query(schedule="torch-eager", ok_only=True)}
    overlapped, sequential = runs[:3], runs[3]
    keys = [k for k in latencies[0] if all(k in lat for lat in latencies[:3])]
    spreads = [max(lat[k] for lat in latencies[:3]) / min(lat[k] for lat in latencies[:3]) - 1 for k in keys]
    kpm = [60 * r["measured"] / r["wall_s"] for r in overlapped]
    kpm_seq = 60 * sequential["measured"] / sequential["wall_s"]
    by_op: dict[str, list[float]] = {}
    for k, t in torch_ms.items():
        if k in latencies[0]:
            by_op.setdefault(k.split("|", 1)[0], []).append(latencies[0][k] / t)
    result = {
        "benchmark": "profile",
        "hardware": hardware(),
        "device": device.name,
        "schedule": args.schedule,
        "kernels": len(specs),
        "repeats": args.repeats,
        "min_repeat_ms": args.min_repeat_ms,
        "kernels_per_minute": kpm,
        "compile_s": [r["compile_s"] for r in overlapped],
        "timing_s": [r["timing_s"] for r in overlapped],
        "wall_s": [r["wall_s"] for r in overlapped],
        "compile_share_of_wall": [r["compile_s"] / r["wall_s"] for r in overlapped],
        "failed": [r["failed"] for r in runs],
        "spread_of_three_runs": {
            **_summary(spreads),
            "kernels_within_5pct": sum(s <= 0.05 for s in spreads),
        },
        "sequential_compile": {"kernels_per_minute": kpm_seq, "wall_s": sequential["wall_s"],
                               "compile_s": sequential["compile_s"], "timing_s": sequential["timing_s"]},
        "overlap_speedup": statistics.median(kpm) / kpm_seq,
        "tvm_over_torch": {op: _summary(v) for op, v in sorted(by_op.items())},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
