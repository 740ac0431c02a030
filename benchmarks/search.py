"""Benchmark of codesign's search: the supernet on fused ops against the same supernet on the
reference ops, and GDAS against random search at equal compute under the same latency budget.

    python benchmarks/search.py [--data-dir ../shared/data/cifar10-mini] [--seeds 0 1 2] [--quick]
                                [--work DIR] [--part supernet|compare|l2o|all]

Part 1 (supernet): seconds per search step and per epoch, and the peak resident memory the
training steps add, for the DARTS supernet (8 candidates, 14 edges per cell) and the NB201
supernet on CIFAR-sized batches, with ``codesign.use_backend("auto")`` (C++ fused mixed op and
Gumbel-softmax) and ``"reference"`` (plain PyTorch ops, pools materialised). Each variant runs in
its own process so that peak memory (ru_maxrss) is its own.

Part 2 (compare): ``codesign search --strategy gdas --compare random`` on CIFAR-10 (the folder
given) for every seed: the random baseline gets the same compute as GDAS used, counted in
network passes (forward + backward of one batch through one path; see codesign.search.strategies); both
networks are trained from scratch with the same recipe, exported and measured with TVM. Reported
per seed and as means, whichever wins.

Part 3 (l2o): the same search with the architecture weights updated by Adam and by codesign's
shipped learned optimizer (``--arch-optimizer l2o:supernet``): darts on the NB201 space on digits,
for every seed; supernet validation accuracy at the end of search, the derived network's test
accuracy, its predicted latency and the search seconds.

Prints JSON with the hardware; resumable (runs live in --work and are resumed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import hardware  # noqa: E402

HERE = Path(__file__).resolve().parent


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def supernet_variant(space_name: str, backend: str, strategy: str, steps: int, batch: int, kwargs: dict) -> dict:
    """Runs in a child process: `steps` search steps (arch + weight) of one strategy."""
    import torch

    import codesign
    from codesign.pipeline import SearchConfig
    from codesign.search.costs import CostTable
    from codesign.search.strategies import SearchContext, create_strategy
    from codesign.spaces import create_space

    torch.manual_seed(0)
    space = create_space(space_name, input_shape=(1, 3, 32, 32), **kwargs)
    n = batch * (steps + 1)
    x = torch.randn(n, 3, 32, 32)
    y = torch.randint(0, 10, (n,))
    zeros = [torch.zeros(len(d.options)).numpy() for d in space.decisions()]
    costs = CostTable(space_name, "bench", "-", {"latency_ms": zeros}, {"latency_ms": 0.0}, [1.0] * len(zeros))
    cfg = SearchConfig(space=space_name, strategy=strategy, epochs=10, warmup_epochs=0, batch_size=batch)
    ctx = SearchContext(space, x, y, x, y, costs, [], cfg)
    s = create_strategy(strategy, ctx)
    xs = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(steps + 1)]
    with codesign.use_backend(backend):
        def step(i):
            xt, yt = xs[i]
            s.arch_step(xt, yt, xt, yt, i, 0.05)
            s.weight_step(xt, yt, i + 1, 0.05)

        step(0)  # warm-up: first custom-op call, allocator
        rss0 = _rss_mb()
        times = []
        for i in range(1, steps + 1):
            t0 = time.perf_counter()
            step(i)
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in s.net.parameters())
    return {"space": space_name, "strategy": strategy, "backend": backend, "batch": batch, "steps": steps,
            "step_s": statistics.median(times), "peak_rss_mb": peak, "steady_rss_mb": rss0,
            "peak_over_steady_mb": peak - rss0, "supernet_params": params}


def part_supernet(quick: bool) -> list[dict]:
    cases = [("darts", "darts", {"c": 8, "layers": 5}, 32), ("nb201", "darts", {"c": 16, "cells": 2}, 64),
             ("nb201", "gdas", {"c": 16, "cells": 2}, 64)]
    steps = 3 if quick else 8
    rows = []
    for space, strategy, kw, batch in cases:
        res = {}
        for backend in ("auto", "reference"):
            code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import search as b; "
                    f"print(json.dumps(b.supernet_variant({space!r}, {backend!r}, {strategy!r}, {steps}, {batch}, {kw!r})))")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            res[backend] = json.loads(out.stdout.strip().splitlines()[-1])
        f, r = res["auto"], res["reference"]
        steps_per_epoch = 2500 // batch  # CIFAR-10-mini: 5,000 train images split in half for the bilevel steps
        rows.append({
            "space": space, "strategy": strategy, "space_args": kw, "batch": batch,
            "fused_step_s": round(f["step_s"], 4), "reference_step_s": round(r["step_s"], 4),
            "fused_epoch_s": round(f["step_s"] * steps_per_epoch, 2),
            "reference_epoch_s": round(r["step_s"] * steps_per_epoch, 2),
            "speedup_vs_reference": round(r["step_s"] / f["step_s"], 2),
            "fused_peak_rss_mb": round(f["peak_rss_mb"], 1), "reference_peak_rss_mb": round(r["peak_rss_mb"], 1),
            "fused_step_extra_mb": round(f["peak_over_steady_mb"], 1),
            "reference_step_extra_mb": round(r["peak_over_steady_mb"], 1),
            "peak_memory_ratio": round(f["peak_rss_mb"] / r["peak_rss_mb"], 3),
        })
    return rows


def part_compare(data_dir: str, seeds: list[int], work: Path, quick: bool) -> dict:
    from codesign.pipeline import SearchConfig, run_search

    runs = []
    for seed in seeds:
        cfg = SearchConfig(space="nb201", space_args={"c": 8, "cells": 1}, strategy="gdas", data="cifar10",
                           data_dir=data_dir, epochs=3 if quick else 10, warmup_epochs=1 if quick else 2,
                           train_epochs=2 if quick else 10, candidate_epochs=1 if quick else 2,
                           latency_ms="0.5x", compare="random", seed=seed, db=str(work / "profiles.sqlite"))
        run_dir = work / f"gdas-vs-random-s{seed}"
        if (run_dir / "results.json").exists():
            r = json.loads((run_dir / "results.json").read_text())
        elif (run_dir / "config.json").exists():
            r = run_search(run_dir=run_dir, resume=True, quiet=True)
        else:
            r = run_search(cfg, run_dir=run_dir, quiet=True)
        c = r["compare"]
        runs.append({
            "seed": seed, "budget_latency_ms": r["budgets"][0]["limit"],
            "gdas": {"genotype": r["genotype"], "test_accuracy": r["test_accuracy"],
                     "predicted_latency_ms": r["predicted"]["latency_ms"],
                     "measured_latency_ms": (r["measured"] or {}).get("latency_ms"),
                     "search_seconds": round(r["search_seconds"], 1), "search_passes": r["search_passes"]},
            "random": {"genotype": c["derived"]["genotype"], "test_accuracy": c["test_accuracy"],
                       "predicted_latency_ms": c["predicted"]["latency_ms"],
                       "measured_latency_ms": (c["measured"] or {}).get("latency_ms"),
                       "search_seconds": round(c["search_seconds"], 1), "search_passes": c["search_passes"],
                       "candidates": c["candidates"]},
        })
    mean = {k: {m: statistics.mean(r[k][m] for r in runs) for m in ("test_accuracy", "measured_latency_ms",
                                                                    "predicted_latency_ms")}
            for k in ("gdas", "random")}
    wins = sum(r["gdas"]["test_accuracy"] > r["random"]["test_accuracy"] for r in runs)
    return {"runs": runs, "mean": mean, "gdas_wins": wins, "random_wins": len(runs) - wins,
            "verdict": ("gdas more accurate on average" if mean["gdas"]["test_accuracy"] > mean["random"]["test_accuracy"]
                        else "random search as accurate or better on average")}


def part_l2o(seeds: list[int], work: Path, quick: bool) -> dict:
    from codesign.pipeline import SearchConfig, run_search

    rows = []
    for seed in seeds:
        row = {"seed": seed}
        for opt in ("adam", "l2o:supernet"):
            cfg = SearchConfig(space="nb201", space_args={"c": 8, "cells": 1}, strategy="darts", data="digits",
                               epochs=4 if quick else 15, warmup_epochs=1 if quick else 3,
                               train_epochs=2 if quick else 15, latency_ms="0.5x", seed=seed, measure=False,
                               arch_optimizer=opt, db=str(work / "profiles.sqlite"))
            run_dir = work / f"l2o-{opt.replace(':', '-')}-s{seed}"
            if (run_dir / "results.json").exists():
                r = json.loads((run_dir / "results.json").read_text())
            elif (run_dir / "config.json").exists():
                r = run_search(run_dir=run_dir, resume=True, quiet=True)
            else:
                r = run_search(cfg, run_dir=run_dir, quiet=True)
            last = json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])
            row[opt] = {"supernet_val_accuracy": last["val_accuracy"], "test_accuracy": r["test_accuracy"],
                        "predicted_latency_ms": r["predicted"]["latency_ms"], "genotype": r["genotype"],
                        "search_seconds": round(r["search_seconds"], 1),
                        "expected_latency_ms_end": last["expected"]["latency_ms"]}
        rows.append(row)
    mean = {opt: {m: statistics.mean(r[opt][m] for r in rows) for m in ("supernet_val_accuracy", "test_accuracy",
                                                                       "predicted_latency_ms", "search_seconds")}
            for opt in ("adam", "l2o:supernet")}
    return {"runs": rows, "mean": mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "cifar10-mini"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", default="search-bench")
    ap.add_argument("--part", choices=("supernet", "compare", "l2o", "all"), default="all")
    ap.add_argument("--quick", action="store_true", help="fewer steps and epochs (smoke test)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = {"benchmark": "search", "hardware": hardware(), "load_average_start": os.getloadavg()[0]}
    if args.part in ("supernet", "all"):
        out["supernet"] = part_supernet(args.quick)
    if args.part in ("compare", "all"):
        if not Path(args.data_dir).exists():
            sys.exit(f"benchmarks/search.py: no CIFAR-10 folder at {args.data_dir}; pass --data-dir")
        out["gdas_vs_random"] = part_compare(args.data_dir, args.seeds, work, args.quick)
    if args.part in ("l2o", "all"):
        out["l2o_arch_optimizer"] = part_l2o(args.seeds, work, args.quick)
    out["load_average_end"] = os.getloadavg()[0]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
