"""Benchmark of distributed runs on Ray: a random search of 8 candidates and the profiling of 40
kernels, each on the plain serial path, on a local Ray of 1 worker and of 2 workers, in one run.

    python benchmarks/distributed.py [--candidates 8] [--candidate-epochs 6] [--kernels 40]
                                     [--repeats 3] [--min-repeat-ms 10] [--only search|profile]
                                     [--schedule tuned|untuned] [--tune-trials 8]

Prints JSON. Figures, all ratios of wall times measured in this run:
- ``speedup_2_over_1``: Ray with 1 worker over Ray with 2 workers (the issue's 1 vs 2 workers);
- ``ray_1_overhead``: Ray with 1 worker over the serial path, minus 1, without Ray's start-up
  (``ray_start_s``, reported apart: starting Ray and importing torch or TVM in every worker, a
  cost once per run, whatever its length; ``ray_1_overhead_with_start`` includes it);
- ``parallel_capacity_before``/``_after``: two plain processes' throughput over one process's,
  measured just before and after: the most any 2-worker speed-up could be at that time;
- ``identical``: whether every candidate's record (genotype, accuracies, passes) and the answer of
  each Ray run equal the serial run's (search), or the same kernels were stored without error
  (profile).
Search: nb201 (c=8, one cell) on the digits set, costs from the eyeriss-like accelerator model (no
TVM), torch at one thread in the serial run as in each Ray task. Profile: kernels of a fixed grid
sample on cpu-local, tuned (codesign's default policy: MetaSchedule tuning on the workers, into a
fresh database each run) or untuned (``--schedule untuned``: compilation only, the cheap end);
the serial path overlaps one compilation with timing; timing stays in the driver on every path.
The load average is recorded before and after each part: on a shared machine every speed-up
measured under load is a lower bound of the unloaded one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TVM_NUM_THREADS", "1")
from _common import hardware  # noqa: E402


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _spin(n: int) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i * i % 7
    return time.perf_counter() - t0


def parallel_capacity(n: int = 20_000_000) -> float:
    """How much more work two processes get done than one in the same time, now, on this machine:
    the ceiling of any 2-worker speed-up measured beside it (2.0 on two idle cores; about 1.0 when
    other jobs leave this user one core's share)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_spin, [1000, 1000]))  # both processes started
        t0 = time.perf_counter()
        pool.submit(_spin, n).result()
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(pool.map(_spin, [n, n]))
        two = time.perf_counter() - t0
    return 2 * one / two


def _ray(workers: int, preload: tuple[str, ...]):
    from codesign.distributed import RayExecutor

    t0 = time.perf_counter()
    ex = RayExecutor(workers=workers, object_store_bytes=300 * 2**20, preload=preload).start()
    return ex, time.perf_counter() - t0


def _compare(out: dict, run, same_as_serial, preload: tuple[str, ...]) -> dict:
    """``run(executor) -> (figures, results)`` serially, then on a fresh local Ray of 1 and of 2
    workers; wall-time ratios and whether each Ray run's results equal the serial run's."""
    out["load_before"] = _load()
    out["parallel_capacity_before"] = parallel_capacity()
    serial, ref = run(None)
    out["serial"] = serial
    same = True
    for workers in (1, 2):
        ex, start_s = _ray(workers, preload)
        try:
            res, got = run(ex)
        finally:
            ex.close()
        res["ray_start_s"] = start_s
        out[f"ray_{workers}"] = res
        same = same and same_as_serial(res, got, ref)
    out["load_after"] = _load()
    out["parallel_capacity_after"] = parallel_capacity()
    out["identical"] = same
    out["speedup_2_over_1"] = out["ray_1"]["wall_s"] / out["ray_2"]["wall_s"]
    out["ray_1_overhead"] = out["ray_1"]["wall_s"] / serial["wall_s"] - 1
    out["ray_1_overhead_with_start"] = (out["ray_1"]["wall_s"] + out["ray_1"]["ray_start_s"]) / serial["wall_s"] - 1
    return out


def bench_search(args) -> dict:
    import torch

    from codesign.pipeline import SearchConfig
    from codesign.pipeline.phases import costs_phase, setup, split_train_val
    from codesign.search.strategies import SearchContext, create_strategy

    cfg = SearchConfig(space="nb201", space_args={"c": 8, "cells": 1}, strategy="random", device="accel:eyeriss-like",
                       latency_ms="0.6x", candidates=args.candidates, candidate_epochs=args.candidate_epochs,
                       batch_size=32, seed=0)
    s = setup(cfg, quiet=True)
    costs = costs_phase(s, None)
    split = split_train_val(s.dataset, cfg.val_fraction, cfg.seed)
    torch.set_num_threads(1)

    def search(executor):
        logs = []
        ctx = SearchContext(s.space, split.x_train, split.y_train, split.x_val, split.y_val, costs.table,
                            costs.budgets, cfg, None, logs.append, executor=executor)
        t0 = time.perf_counter()
        found = create_strategy("random", ctx).run()
        wall = time.perf_counter() - t0
        recs = sorted((r["candidate"], r["genotype"], r["val_accuracy"], r["train_accuracy"], r["passes"])
                       for r in logs)
        return {"wall_s": wall, "candidates": len(logs), "choices": found["choices"],
                "candidate_seconds": sum(r["seconds"] for r in logs)}, recs

    out: dict = {"settings": {"space": "nb201 c=8 cells=1", "data": s.dataset.describe(), "candidates": args.candidates,
                              "candidate_epochs": args.candidate_epochs, "batch_size": 32,
                              "train_images": len(split.y_train)}}
    return _compare(out, search, lambda res, recs, ref: recs == ref and res["choices"] == out["serial"]["choices"],
                    ("codesign.search.strategies",))


def bench_profile(args) -> dict:
    from codesign.profile import ProfileDB, get_device, profile_kernels
    from codesign.profile.grid import grid_specs

    per_op = max(1, args.kernels // 5)
    specs = (grid_specs("conv2d", 2 * per_op, seed=7) + grid_specs("max_pool2d", per_op, seed=7)
             + grid_specs("dense", per_op, seed=7) + grid_specs("add", per_op, seed=7))[: args.kernels]
    device = get_device("cpu-local")

    def profile(executor):
        with tempfile.TemporaryDirectory() as tmp, ProfileDB(os.path.join(tmp, "p.sqlite")) as db:
            t0 = time.perf_counter()
            rep = profile_kernels(specs, device, db, schedule=args.schedule, repeats=args.repeats,
                                  min_repeat_ms=args.min_repeat_ms, progress=False, executor=executor,
                                  tune_trials=args.tune_trials)
            wall = time.perf_counter() - t0
            keys = sorted(m.kernel_key for m in db.query(ok_only=True, schedule=rep.schedule))
        return {"wall_s": wall, "measured": rep.measured, "failed": rep.failed, "compile_s": rep.compile_s,
                "timing_s": rep.timing_s}, keys

    out: dict = {"settings": {"kernels": len(specs), "schedule": args.schedule,
                              "tune_trials": args.tune_trials if args.schedule == "tuned" else None,
                              "repeats": args.repeats,
                              "min_repeat_ms": args.min_repeat_ms, "device": "cpu-local (1 thread)"}}
    return _compare(out, profile, lambda res, keys, ref: keys == ref and res["failed"] == 0,
                    ("tvm", "codesign.profile.profiler"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--candidate-epochs", type=int, default=6)
    parser.add_argument("--kernels", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-repeat-ms", type=float, default=10.0)
    parser.add_argument("--schedule", default="tuned",
                        help="profile: tuned (codesign's default policy: MetaSchedule tuning on the workers; "
                             "about 6 min in all on 2 cores) or untuned (compilation only, seconds)")
    parser.add_argument("--tune-trials", type=int, default=8, help="profile, tuned: mean trials per kernel")
    parser.add_argument("--only", choices=["search", "profile"], default=None)
    args = parser.parse_args()
    out = {"hardware": hardware(), "load_start": _load()}
    if args.only in (None, "search"):
        out["search"] = bench_search(args)
    if args.only in (None, "profile"):
        out["profile"] = bench_profile(args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
