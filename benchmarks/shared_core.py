"""Kernel timing on a core another job shares: the profiler's core-share scaling against TVM's
wall-clock time_evaluator.

For a few kernels: each is timed on a core of its own (this process pinned to one CPU), then with a
busy process pinned to the same CPU, by codesign's runner (``LocalRunner.time``: each repeat scaled
by the share of its wall time the thread was on the core, ``runners.own_core_repeats``) and by
the plain time_evaluator (wall clock). Prints JSON: per kernel both timings in both conditions,
and each shared timing as a ratio to the same method's own-core timing (1.0 is what a profile
should read whatever else runs).

    python benchmarks/shared_core.py [--repeats 10] [--min-repeat-ms 50] [--cpu 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import hardware  # noqa: E402

KERNELS = (
    'conv2d|1x64x32x32|activation="relu",bias=True,kernel=1,out_channels=16',
    "conv2d|1x16x32x32|bias=True,kernel=3,out_channels=16",
    "conv2d|1x32x16x16|groups=32,kernel=3,out_channels=32",
    "avg_pool2d|1x32x16x16|kernel=3,padding=1",
)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--min-repeat-ms", type=float, default=50.0)
    p.add_argument("--cpu", type=int, default=0, help="the CPU this process and the busy job share")
    args = p.parse_args(argv)
    if args.cpu not in os.sched_getaffinity(0):
        p.error(f"--cpu {args.cpu} is not one this process may run on ({sorted(os.sched_getaffinity(0))})")

    import tvm

    from codesign.kernelspec import KernelSpec
    from codesign.profile.builders import build, random_args
    from codesign.profile.runners import LocalRunner, set_threads

    set_threads(1)
    os.sched_setaffinity(0, {args.cpu})
    runner = LocalRunner(args.repeats, args.min_repeat_ms, threads=1)
    compiled = []
    for key in KERNELS:
        built = build(KernelSpec.from_key(key))
        compiled.append((key, tvm.compile(built.func, target="llvm"), built.arg_shapes))

    def time_all() -> dict:
        out = {}
        for key, ex, shapes in compiled:
            scaled = runner.time(ex, shapes).latency_ms
            share = runner.least_share
            mod = ex.jit()
            targs = [tvm.runtime.tensor(a, tvm.cpu(0)) for a in random_args(shapes)]
            ev = mod.time_evaluator("main", tvm.cpu(0), number=1, repeat=args.repeats,
                                    min_repeat_ms=int(round(args.min_repeat_ms)))
            wall = statistics.median(ev(*targs).results) * 1e3
            out[key] = {"codesign_ms": scaled, "wall_clock_ms": wall, "least_core_share": share}
        return out

    load_start = os.getloadavg()
    alone = time_all()
    busy = subprocess.Popen(["taskset", "-c", str(args.cpu), sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        shared = time_all()
    finally:
        busy.kill()
        busy.wait()
    rows = []
    for key in KERNELS:
        a, s = alone[key], shared[key]
        rows.append({"kernel": key, "own_core": a, "shared_core": s,
                     "codesign_shared_over_own": s["codesign_ms"] / a["codesign_ms"],
                     "wall_clock_shared_over_own": s["wall_clock_ms"] / a["wall_clock_ms"]})
    out = {"benchmark": "shared_core", "hardware": hardware(), "cpu": args.cpu, "repeats": args.repeats,
           "min_repeat_ms": args.min_repeat_ms, "load_average_start": load_start, "load_average_end": os.getloadavg(),
           "kernels": rows,
           "median_codesign_shared_over_own": statistics.median(r["codesign_shared_over_own"] for r in rows),
           "median_wall_clock_shared_over_own": statistics.median(r["wall_clock_shared_over_own"] for r in rows)}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
