"""Benchmark of codesign's search: the supernet on fused ops against the same supernet on the
reference ops; remedies against collapse; the default strategy against random search and RSWS at
equal compute under one latency budget; the supernet's ranking; the default job's cell on CIFAR-10.

    python benchmarks/search.py [--data-dir ../shared/data/cifar10-mini] [--seeds 0 1 2] [--quick]
                                [--work DIR] [--part supernet|remedies|compare|remeasure|ranking|default|public|scores|l2o|all]
                                [--rounds 2] [--threads 1] [--variants reference fused ...]
                                [--remedy-variants gdas+tunas ...] [--nb201-table CSV]

Part 1 (supernet): seconds per search step (wall and CPU time of the process) and peak resident
memory, for the DARTS supernet (8 candidates, 14 edges per cell) and the NB201 supernet on
CIFAR-sized batches: the reference supernet (``codesign.use_backend("reference")``: plain PyTorch,
DARTS as written, NCHW, every intermediate stored, every weight gradient computed in the
architecture step) against the fused one (every default: channels_last, the fused mixed op, shared
ReLU, candidates recomputed in backward in the first stage's cells and stored in later ones,
ReLU and BN+ReLU maps recomputed rather than kept, BN keeping its output, codesign's
depthwise-conv and BN (+ ReLU) kernels, recycled output buffers, architecture steps without
weight gradients, a single path's scaling without a pass), and ablations that change one part
each: ``fused_stored`` (candidates stored in every cell), ``fused_all_checkpointed`` (recomputed
in every cell), ``fused_arch_weight_grads`` (architecture steps compute the weight gradients too,
as DARTS's code does), ``fused_nchw``, ``fused_no_shared_relu``, ``fused_torch_conv_bn``,
``fused_no_buffer_pool``. Besides peak RSS, each variant reports the MB of activations one soft
forward keeps for backward (``saved_activation_mb``, counted by a saved-tensor hook: what the
formulation stores, whatever the allocator caches). Each variant runs in its own process
(OMP_NUM_THREADS=--threads) so that peak memory (ru_maxrss) is its own; variants alternate over
--rounds rounds and the least disturbed round (lowest CPU time) of each is reported, with all
rounds' figures and the load average beside it. Speedups are given from CPU time (what a loaded
shared machine distorts least) and from wall time.

Part remedies: every (strategy, regularizer) of REMEDY_VARIANTS (``--remedy-variants`` to choose) searched on
the spaces and seeds given, each derived network trained by one protocol (``--train-epochs``),
exported and measured; ranked by mean test accuracy per space.

Part compare: the default strategy (``SearchConfig()``'s strategy and regularizer) against
``random`` and ``rsws`` given the same compute in passes (forward + backward of one batch through
one path; see codesign.search.strategies), under the latency budget ``--latency``, for every space
and seed; every final network trained by the same recipe, exported and measured with TVM.
Reported per seed, as mean ± std, and as wins of the default per (space, seed).

Part remeasure: the final networks of compare timed again, interleaved in the same rounds with
the costliest network of their space (the reference of a relative budget), so that the load of a
shared machine scales them alike; each is checked against the budget as a fraction of the
costliest network's measured latency.

Part ranking: Kendall tau between the supernet's accuracy of sampled architectures (RSWS's
shared weights) and their stand-alone accuracy after short training.

Part public (needs ``--nb201-table``, the public NAS-Bench-201 CIFAR-10 accuracies of every cell, see
benchmarks/nb201_public.py): which cheap signal ranks NB201 cells under the budget by their accuracy
after full training (NASWOT, SynFlow, parameters, their rank sums, one-epoch accuracy, the final
protocol's accuracy), and
what each selection rule picks, in expectation. With the table, compare also judges every NB201 cell
by it (public accuracy, and percentile among the cells under the same budget).

Part scores (after compare, in its --work): which training-free score (NASWOT, SynFlow, parameters,
their rank sums) ranks a space's cells by their accuracy after the final protocol, on random search's
own candidates trained by it: for spaces without a public table (DARTS).

Part default: the genotype the default ``codesign search`` (digits) finds, trained on the CIFAR-10
folder beside random cells under the same latency budget, by one protocol; with remeasure, its
network is also timed interleaved with the costliest network of the default job's space.

Part l2o: the architecture weights updated by Adam and by codesign's shipped learned optimizer.

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
import nb201_public  # noqa: E402
from _common import hardware, saved_storages  # noqa: E402
from _common import run_or_resume as _run  # noqa: E402

HERE = Path(__file__).resolve().parent


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# Supernet variants: backend, space arguments, switches of codesign.nn.fused_features, pool limit.
# "fused" is every default; each ablation turns one part of the fused formulation off.
VARIANTS = {
    "reference": ("reference", {}, {}, None),
    "fused": ("auto", {}, {}, None),
    "fused_stored": ("auto", {"checkpoint": 0}, {}, None),
    "fused_all_checkpointed": ("auto", {"checkpoint": 1}, {}, None),
    "fused_arch_weight_grads": ("auto", {}, {"arch_grads_only": False}, None),
    "fused_nchw": ("auto", {}, {"channels_last": False}, None),
    "fused_no_shared_relu": ("auto", {}, {"shared_relu": False}, None),
    "fused_torch_conv_bn": ("auto", {}, {"conv_bn_kernels": False}, None),
    "fused_no_buffer_pool": ("auto", {}, {}, 0),
}
CASES = [("darts", "darts", {"c": 8, "layers": 5}, 32), ("nb201", "darts", {"c": 16, "cells": 2}, 64),
         ("nb201", "gdas", {"c": 16, "cells": 2}, 64)]


def supernet_variant(space_name: str, variant: str, strategy: str, steps: int, batch: int, kwargs: dict) -> dict:
    """Runs in a child process: `steps` search steps (arch + weight) of one strategy."""
    import torch

    import codesign
    from codesign.nn import fused_features
    from codesign.ops import buffer_pool
    from codesign.pipeline import SearchConfig
    from codesign.search.costs import CostTable
    from codesign.search.strategies import SearchContext, create_strategy
    from codesign.spaces import create_space

    backend, space_args, switches, pool_limit = VARIANTS[variant]
    if pool_limit is not None:
        buffer_pool(pool_limit)
    torch.manual_seed(0)
    rss_base = _rss_mb()  # the interpreter, torch and codesign, before any supernet
    space = create_space(space_name, input_shape=(1, 3, 32, 32), **kwargs, **space_args)
    n = batch * (steps + 1)
    x = torch.randn(n, 3, 32, 32)
    y = torch.randint(0, 10, (n,))
    zeros = [torch.zeros(len(d.options)).numpy() for d in space.decisions()]
    costs = CostTable(space_name, "bench", "-", {"latency_ms": zeros}, {"latency_ms": 0.0}, [1.0] * len(zeros))
    cfg = SearchConfig(space=space_name, strategy=strategy, epochs=10, warmup_epochs=0, batch_size=batch)
    ctx = SearchContext(space, x, y, x, y, costs, [], cfg)
    s = create_strategy(strategy, ctx)
    xs = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(steps + 1)]
    with codesign.use_backend(backend), fused_features(**switches):
        def step(i):
            xt, yt = xs[i]
            s.arch_step(xt, yt, xt, yt, i, 0.05)
            s.weight_step(xt, yt, i + 1, 0.05)

        step(0)  # warm-up: first custom-op call, allocator
        rss0 = _rss_mb()
        wall, cpu = [], []
        for i in range(1, steps + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            step(i)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    saved_mb = _saved_activation_mb(space, s, xs[0][0], backend, switches)
    params = sum(p.numel() for p in s.net.parameters())
    return {"space": space_name, "strategy": strategy, "variant": variant, "batch": batch, "steps": steps,
            "step_s": statistics.median(wall), "step_cpu_s": statistics.median(cpu), "peak_rss_mb": peak,
            "base_rss_mb": rss_base, "steady_rss_mb": rss0, "supernet_params": params,
            "saved_activation_mb": saved_mb,
            "load_average": os.getloadavg()[0]}


def _saved_activation_mb(space, strategy, x, backend: str, switches: dict) -> float:
    """MB of distinct storages that one soft forward (every candidate mixed) keeps for backward,
    counted by a saved-tensor hook around it: what the formulation stores, independent of the
    allocator and of the machine's load (peak RSS also counts the allocator's caching)."""
    import torch

    import codesign
    from codesign.nn import fused_features, supernet_input

    weights = [torch.softmax(torch.zeros(len(d.options)), 0).requires_grad_() for d in space.decisions()]
    with codesign.use_backend(backend), fused_features(**switches):
        out, saved = saved_storages(lambda: strategy.net(supernet_input(x), weights))
    del out
    return round(sum(saved.values()) / 2**20, 1)


def _run_variant(space, variant, strategy, steps, batch, kw, threads) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import search as b; "
            f"print(json.dumps(b.supernet_variant({space!r}, {variant!r}, {strategy!r}, {steps}, {batch}, {kw!r})))")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def part_supernet(quick: bool, rounds: int, threads: int, variants: list[str]) -> list[dict]:
    steps = 2 if quick else 4
    rows = []
    for space, strategy, kw, batch in CASES:
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(rounds):  # variants alternate, so that a change of load hits them all alike
            for v in variants:
                runs[v].append(_run_variant(space, v, strategy, steps, batch, kw, threads))
        # per variant: the least disturbed round (lowest median CPU seconds per step)
        best = {v: min(rs, key=lambda r: r["step_cpu_s"]) for v, rs in runs.items()}
        ref = best["reference"]
        row = {"space": space, "strategy": strategy, "space_args": kw, "batch": batch, "steps_per_round": steps,
               "rounds": rounds, "variants": {}}
        for v, r in best.items():
            row["variants"][v] = {
                "step_cpu_s": round(r["step_cpu_s"], 3), "step_wall_s": round(r["step_s"], 3),
                "speedup_vs_reference_cpu": round(ref["step_cpu_s"] / r["step_cpu_s"], 2),
                "speedup_vs_reference_wall": round(ref["step_s"] / r["step_s"], 2),
                "peak_rss_mb": round(r["peak_rss_mb"], 1),
                "peak_memory_ratio": round(r["peak_rss_mb"] / ref["peak_rss_mb"], 3),
                "peak_above_base_mb": round(r["peak_rss_mb"] - r["base_rss_mb"], 1),
                "saved_activation_mb": r["saved_activation_mb"],
                "saved_activation_ratio": round(r["saved_activation_mb"] / ref["saved_activation_mb"], 3),
                "peak_above_base_ratio": round((r["peak_rss_mb"] - r["base_rss_mb"])
                                               / (ref["peak_rss_mb"] - ref["base_rss_mb"]), 3),
                "all_rounds_step_cpu_s": [round(x["step_cpu_s"], 3) for x in runs[v]],
                "all_rounds_step_wall_s": [round(x["step_s"], 3) for x in runs[v]],
                "load_average": [round(x["load_average"], 1) for x in runs[v]],
            }
        rows.append(row)
    return rows


SPACE_ARGS = {"nb201": {"c": 8, "cells": 1}, "darts": {"c": 4, "layers": 3}}
# The remedies screened (--part remedies): (strategy, regularizer).
REMEDY_VARIANTS = [("gdas", "none"), ("gdas", "tunas"), ("gdas", "beta-darts"), ("gdas", "shrink"), ("gdas", "tunas,shrink"),
            ("darts", "none"), ("darts", "tunas"), ("darts", "drnas"), ("darts", "darts-minus"),
            ("darts", "beta-darts")]


def _config(space: str, seed: int, args, **kw):
    from codesign.pipeline import SearchConfig

    base = dict(space=space, space_args=SPACE_ARGS[space], data="cifar10", data_dir=args.data_dir, seed=seed,
                latency_ms=args.latency, epochs=args.epochs, warmup_epochs=args.warmup, batch_size=args.batch_size,
                train_epochs=args.train_epochs, candidate_epochs=args.candidate_epochs,
                ws_candidates=args.ws_candidates, ws_eval_batches=args.ws_eval_batches, db=args.db,
                measure=not args.no_measure, schedule=args.schedule)
    return SearchConfig(**{**base, **kw})


def _design(r: dict) -> dict:
    """One final network: accuracy, latencies, budget, compute."""
    budget = r["budgets"][0]["limit"]
    measured = (r.get("measured") or {}).get("latency_ms")
    met = r.get("budgets_met_measured")  # judged by the statistic the budget's anchors were timed with
    return {"genotype": r["genotype"], "test_accuracy": r["test_accuracy"],
            "predicted_latency_ms": r["predicted"]["latency_ms"], "measured_latency_ms": measured,
            "measured_fastest_ms": (r.get("measured") or {}).get("latency_min_ms"),
            "budget_latency_ms": budget,
            "measured_under_budget": met if met is not None else (None if measured is None else measured <= budget),
            "search_passes": round(r["search_passes"], 1), "search_seconds": round(r["search_seconds"], 1),
            "run_dir": r["run_dir"]}


def _label(strategy: str, regularizer: str | None) -> str:
    return strategy if regularizer in (None, "none") else f"{strategy}+{regularizer.replace(',', '+')}"


def gradient_run(space: str, seed: int, args, work: Path, strategy: str, regularizer: str | None) -> dict:
    cfg = _config(space, seed, args, strategy=strategy, regularizer=regularizer)
    return _run(cfg, work / f"{space}-{_label(strategy, regularizer)}-s{seed}")


def part_remedies(args, work: Path) -> dict:
    """Every remedy of REMEDY_VARIANTS on the same search, derived network trained by one protocol."""
    rows = []
    for space in args.spaces:
        for seed in args.seeds:
            for strategy, reg in REMEDY_VARIANTS:
                if args.remedy_variants and _label(strategy, reg) not in args.remedy_variants:
                    continue
                r = gradient_run(space, seed, args, work, strategy, reg)
                rows.append({"space": space, "seed": seed, "variant": _label(strategy, reg), **_design(r)})
    ranked = {}
    for space in args.spaces:
        by: dict[str, list[float]] = {}
        for row in rows:
            if row["space"] == space:
                by.setdefault(row["variant"], []).append(row["test_accuracy"])
        ranked[space] = sorted(({"variant": k, "mean_test_accuracy": statistics.mean(v), "runs": len(v)}
                                for k, v in by.items()), key=lambda d: -d["mean_test_accuracy"])
    return {"runs": rows, "ranked": ranked}


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def part_compare(args, work: Path) -> dict:
    """The default strategy against ``--against`` (random search and RSWS) at equal compute, every
    final network trained by one protocol (``--train-epochs``) and measured with TVM. The compute
    (passes) is ``--passes``, or else that of GDAS with TuNAS's reward at ``--epochs``, which is
    then run and reported beside them (as ``gdas+tunas``) when it is not the default."""
    from codesign.pipeline import SearchConfig
    from codesign.search.regularizers import default_regularizer

    default = SearchConfig()
    strategy = default.strategy
    gradient = strategy in ("darts", "darts2", "gdas")
    regularizer = default_regularizer(strategy) if gradient and default.regularizer is None else default.regularizer
    yardstick = _label("gdas", "tunas")
    # the yardstick runs when it sets the compute or is compared (as itself or as the default)
    run_yardstick = args.passes is None or yardstick in args.against or (
        gradient and (strategy, regularizer) == ("gdas", "tunas"))
    rows = []
    for space in args.spaces:
        for seed in args.seeds:
            g = gradient_run(space, seed, args, work, "gdas", "tunas") if run_yardstick else None
            passes = g["search_passes"] if args.passes is None else args.passes
            row = {"space": space, "seed": seed}
            if gradient:
                row["default"] = _design(g if (strategy, regularizer) == ("gdas", "tunas")
                                         else gradient_run(space, seed, args, work, strategy, regularizer))
            else:
                row["default"] = _design(_run(_config(space, seed, args, strategy=strategy, max_passes=passes),
                                              work / f"{space}-{strategy}-s{seed}"))
            for other in [*args.against, *args.also]:  # further strategies at the same compute
                if other not in row and other not in (strategy, yardstick):
                    row[other] = _design(_run(_config(space, seed, args, strategy=other, max_passes=passes),
                                              work / f"{space}-{other}-s{seed}"))
            if g is not None and _label(strategy, regularizer) != yardstick:
                row[yardstick] = _design(g)
            rows.append(row)
    label = _label(strategy, regularizer)
    methods = ["default", *[m for m in rows[0] if m not in ("space", "seed", "default")]]
    summary = {}
    for space in args.spaces:
        rs = [r for r in rows if r["space"] == space]
        summary[space] = {m: _mean_std([r[m]["test_accuracy"] for r in rs]) for m in methods}
        for m in methods[1:]:
            summary[space][f"default_wins_vs_{m}"] = sum(r["default"]["test_accuracy"] > r[m]["test_accuracy"]
                                                         for r in rs)
        for m in methods[1:]:
            if m == "random":
                continue
            summary[space][f"{m}_wins_vs_random"] = sum(r[m]["test_accuracy"] > r["random"]["test_accuracy"]
                                                        for r in rs)
        summary[space]["seeds"] = len(rs)
    all_designs = [r[m] for r in rows for m in methods]
    if args.public_table is not None:
        _judge_public(args, rows, methods, summary)
    return {"default_strategy": label, "passes": "gdas+tunas's" if args.passes is None else args.passes,
            "final_training_epochs": args.train_epochs, "runs": rows, "summary": summary,
            "default_wins_vs_random": sum(s["default_wins_vs_random"] for s in summary.values()),
            "pairs": len(rows),
            # None: some network was not measured (--no-measure), so the verdict is unknown
            "every_result_measured_under_budget": (None if any(d["measured_under_budget"] is None for d in all_designs)
                                                   else all(d["measured_under_budget"] for d in all_designs))}


def _judge_public(args, rows: list[dict], methods: list[str], summary: dict) -> None:
    """Each NB201 final cell judged by the public table (``--nb201-table``): its 200-epoch CIFAR-10
    accuracy and percentile among the connected cells under the same budget on its run's cost table;
    per method the means, and per method the seeds it beats random on."""
    from codesign.search.costs import CostTable

    feasible_by: dict[tuple, object] = {}
    for r in rows:
        if r["space"] != "nb201":
            continue
        for m in methods:
            d = r[m]
            costs_file = Path(d["run_dir"]) / "costs.json"
            key = (costs_file.read_bytes(), d["budget_latency_ms"])
            if key not in feasible_by:
                feasible_by[key] = nb201_public.feasible_accuracies(args.public_table, args.public_space,
                                                                    CostTable.load(costs_file), d["budget_latency_ms"])
            d.update(nb201_public.judge(args.public_table, feasible_by[key], d["genotype"]))
    rs = [r for r in rows if r["space"] == "nb201"]
    if not rs:
        return
    pub = summary["nb201"]["public"] = {}
    for m in methods:
        pub[m] = {"mean_public_test_accuracy": statistics.mean(r[m]["public_test_accuracy"] for r in rs),
                  "mean_public_percentile": statistics.mean(r[m]["public_percentile"] for r in rs)}
        if m != "random":
            pub[m]["wins_vs_random"] = sum(r[m]["public_test_accuracy"] > r["random"]["public_test_accuracy"]
                                           for r in rs)
    pub["feasible_cells"] = len(next(iter(feasible_by.values())))


def part_remeasure(args, work: Path, compare: dict | None) -> dict:
    """The final networks of compare and of remedies (those of the parts that ran), see ``remeasure``."""
    runs: dict[str, dict[str, Path]] = {space: {} for space in args.spaces}
    for row in (compare or {}).get("runs", []):
        for m in [k for k, v in row.items() if isinstance(v, dict) and "run_dir" in v]:  # every method compared
            runs[row["space"]][f"{m}-s{row['seed']}"] = Path(row[m]["run_dir"])
    for row in (args.remedy_rows or []):
        runs[row["space"]].setdefault(f"{row['variant']}-s{row['seed']}", Path(row["run_dir"]))
    return remeasure(args, work, runs)


def remeasure(args, work: Path, runs: dict[str, dict[str, Path]]) -> dict:
    """Every final network of the comparison timed again with TVM, interleaved with the costliest
    network of its space (the reference of the relative budget) in the same rounds, so that the
    load of a shared machine scales all of them alike: a network meets a budget of ``F x`` when
    its latency is at most F times the costliest network's, both measured here. The search
    pipeline's own measurement (``measured_latency_ms``) times each network alone, at whatever
    load the machine had then."""
    if not args.latency.endswith("x"):
        raise SystemExit("benchmarks/search.py: --part remeasure needs a relative budget (--latency 0.5x)")
    out = {}
    for space in [sp for sp in args.spaces if runs.get(sp)]:  # spaces some part ran networks on
        s, costs, _ = _setup_costs(space, args)
        out[space] = time_interleaved(s, costs, runs[space], work / f"remeasure-{space}-costliest.onnx",
                                      float(args.latency[:-1]), args)
    return out


def time_interleaved(s, costs, networks: dict[str, Path], ref_path: Path, fraction: float, args) -> dict:
    """Run directories' networks (``model.onnx``) and the costliest network of the setup ``s``'s
    space (exported to ``ref_path``), compiled under the policy the costs were profiled with and
    timed in interleaved rounds (the fastest repeat of each, as codesign's own budget check);
    each against ``fraction`` of the costliest one's latency."""
    from codesign.costs.model import NETWORK_STATISTIC
    from codesign.export import export_checked
    from codesign.profile.devices import get_device
    from codesign.profile.measure import time_networks_interleaved

    device = get_device(s.cfg.device)
    top = s.space.format(s.space.costliest(costs.table.table["latency_ms"]))
    if not ref_path.exists():
        export_checked(s.space.build(top).eval(), s.space.input_shape, ref_path)
    models = {"costliest": ref_path, **{k: d / "model.onnx" for k, d in networks.items()}}
    # under the policy the costs were profiled with (tuned: from the same tuning records)
    schedule = getattr(s.source, "schedule", None) or "untuned"
    tuning = getattr(s.source, "tuning_dir", None)
    timed = time_networks_interleaved({k: str(v) for k, v in models.items()}, device, schedule,
                                      None if tuning is None else str(tuning), getattr(s.source, "tune_trials", 8),
                                      rounds=args.remeasure_rounds, repeats=args.remeasure_repeats,
                                      statistic=NETWORK_STATISTIC)
    med = {k: float(v[0]) for k, v in timed.items()}
    ref = med["costliest"]
    out = {"budget": f"{fraction}x", "costliest_genotype": top, "costliest_latency_ms": ref,
           "networks": {k: {"latency_ms": med[k], "fraction_of_costliest": med[k] / ref,
                            "meets_budget": med[k] <= fraction * ref} for k in models if k != "costliest"},
           "rounds": args.remeasure_rounds, "repeats_per_round": args.remeasure_repeats, "statistic": NETWORK_STATISTIC,
           "schedule": schedule}
    out["all_meet_budget"] = all(v["meets_budget"] for v in out["networks"].values())
    return out


def _setup_costs(space: str, args):
    from codesign.pipeline.phases import costs_phase, setup, split_train_val

    s = setup(_config(space, 0, args), quiet=True)
    return s, costs_phase(s, None), split_train_val


def part_ranking(args, work: Path) -> dict:
    """Kendall tau between the supernet's accuracy of sampled architectures (RSWS's shared weights,
    scored on the validation split) and their stand-alone validation accuracy after short training."""
    import random as pyrandom

    import torch
    from scipy.stats import kendalltau, spearmanr

    from codesign.search import checkpoint as ckpt
    from codesign.search import naswot_score
    from codesign.search.strategies import SearchContext, create_strategy, sample_feasible
    from codesign.search.train import evaluate, train_network
    from codesign.search.weight_sharing import supernet_accuracy

    out = {}
    for space in args.spaces:
        s, costs, split_fn = _setup_costs(space, args)
        cfg = _config(space, args.seeds[0], args, strategy="rsws", epochs=args.rank_supernet_epochs)
        split = split_fn(s.dataset, cfg.val_fraction, cfg.seed)
        ctx = SearchContext(s.space, split.x_train, split.y_train, split.x_val, split.y_val, costs.table,
                            costs.budgets, cfg, work / f"ranking-{space}-supernet-e{args.rank_supernet_epochs}",
                            augment=s.dataset.augment)
        ws = create_strategy("rsws", ctx)
        if ckpt.exists(ctx.checkpoint_stem):
            ws.load(ckpt.load(ctx.checkpoint_stem)[0])
        ws.train()
        full = ws.val_batches()
        rng = pyrandom.Random(12_345)
        # stand-alone results depend only on the cell and its training, so supernets trained for
        # different epochs reuse them (resumable: one entry per cell, written as it finishes)
        store = work / f"ranking-{space}-standalone-s{args.rank_epochs}.json"
        alone = json.loads(store.read_text()) if store.exists() else {}
        archs = [sample_feasible(ctx, rng)[:len(s.space.decisions())] for _ in range(args.rank_archs)]
        done = []
        for i, choices in enumerate(archs):
            genotype = s.space.format(choices)
            if genotype not in alone:
                torch.manual_seed(i)
                net = s.space.build(genotype)
                train_network(net, split.x_train, split.y_train, args.rank_epochs, i, cfg.batch_size, cfg.lr,
                              cfg.weight_decay, s.dataset.augment)
                alone[genotype] = evaluate(net, split.x_val, split.y_val)["accuracy"]
                store.write_text(json.dumps(alone, indent=1))
            done.append({"genotype": genotype, "latency_ms": costs.table.of(choices, "latency_ms"),
                         "supernet_accuracy": supernet_accuracy(ws.net, s.space, choices, full),
                         "standalone_accuracy": alone[genotype]})
        gen = torch.Generator().manual_seed(0)
        probe = split.x_train[torch.randperm(len(split.x_train), generator=gen)[:64]]
        for i, d in enumerate(done):  # training-free signals of the same cells, for comparison
            torch.manual_seed(i)
            net = s.space.build(d["genotype"])
            d["naswot_score"] = naswot_score(net, probe)
            d["params"] = sum(p.numel() for p in net.parameters())
        sup = [d["supernet_accuracy"] for d in done]
        standalone = [d["standalone_accuracy"] for d in done]
        tau, p = kendalltau(sup, standalone)
        rho, _ = spearmanr(sup, standalone)
        others = {f"{key}_kendall_tau": float(kendalltau([d[key] for d in done], standalone)[0])
                  for key in ("naswot_score", "params", "latency_ms")}
        out[space] = {"architectures": len(done), "kendall_tau": tau, "kendall_p": p, "spearman": rho, **others,
                      "supernet_epochs": args.rank_supernet_epochs, "standalone_epochs": args.rank_epochs,
                      "archs": done}
    return out


SCORE_KEYS = ("naswot_score", "synflow_score", "params")  # every registered zero-cost score, as stored
RANK_SUMS = ("naswot+params", "synflow+params", "naswot+synflow+params")  # rank sums within the cells judged


def _score_key(name: str) -> str:
    """Where a store entry keeps a zero-cost score (``params`` under its own name)."""
    return "params" if name == "params" else f"{name}_score"


def _agreement(rows: list[dict], key: str, truth: str, apart_by: float) -> dict | None:
    """How well ``key`` ranks ``rows`` by ``truth``: Kendall tau and p over the rows where it is
    finite, and the share of row pairs more than ``apart_by`` apart in ``truth`` that it orders;
    None under 3 rows."""
    import itertools

    import numpy as np
    from scipy.stats import kendalltau

    have = [r for r in rows if key in r and np.isfinite(r[key])]
    if len(have) < 3:
        return None
    tau, p = kendalltau([r[key] for r in have], [r[truth] for r in have])
    apart = [(a, b) for a, b in itertools.combinations(have, 2) if abs(a[truth] - b[truth]) > apart_by]
    agree = sum((a[key] - b[key]) * (a[truth] - b[truth]) > 0 for a, b in apart)
    return {"kendall_tau": float(tau), "p": float(p), "cells": len(have), "pairs_2_points_apart": len(apart),
            "share_of_them_ordered": round(agree / len(apart), 3) if apart else None}


def _zero_cost_scores(space, genotype: str, probe, d: dict, seed: int) -> None:
    """Every registered zero-cost score of one cell into ``d`` (kept: a store entry is scored once),
    on a network built from torch seed ``seed``, as the zero-cost search builds its pool's."""
    import torch

    from codesign.search.zero_cost import ZC_SCORES

    for name in ZC_SCORES.names():
        key = _score_key(name)
        if key not in d:
            torch.manual_seed(seed)
            d[key] = float(ZC_SCORES.get(name)(space.build(genotype), probe))


def _rank_sums(rows: list[dict]) -> None:
    """``RANK_SUMS`` of each row (the zero-cost search's combination: each score's rank among the
    rows, summed; -inf where a score is not finite)."""
    from codesign.search.zero_cost import combine_scores

    for combo in RANK_SUMS:
        names = combo.split("+")
        entries = [{"scores": {n: r[_score_key(n)] for n in names}} for r in rows]
        for r, v in zip(rows, combine_scores(entries, names)):
            r[combo] = v


def part_public(args, work: Path) -> dict:
    """Which cheap signal picks NB201 cells that are good on CIFAR-10 after full training? Over
    ``--public-cells`` connected cells drawn uniformly among those under the latency budget (NB201 at
    the benchmark's size): Kendall tau against the public table's 200-epoch accuracy (``--nb201-table``)
    of the NASWOT score (one CIFAR batch), parameter count and predicted latency, and of the
    validation accuracy after one epoch on the search's split (what random search ranks its
    candidates by; the first ``--public-trained`` cells) and the test accuracy after the final
    protocol (``--train-epochs`` on the whole training set; the first ``--public-final`` cells). Then
    the expected public accuracy and percentile of the cell each selection rule picks, over 4,000
    simulated draws from the cells measured: best of k by one-epoch accuracy (random search's rule at
    the compare part's compute), top NASWOT score of a pool (naswot's preselection)."""
    import random as pyrandom

    import numpy as np
    import torch

    from codesign.search.train import evaluate, train_network

    s, costs, split_fn = _setup_costs("nb201", args)
    cfg = _config("nb201", 0, args)
    table, budget = costs.table, costs.budgets[0].limit
    space = s.space
    feasible = nb201_public.feasible_cells(space, table, budget)
    cells = pyrandom.Random(1).sample(feasible, min(args.public_cells, len(feasible)))
    split = split_fn(s.dataset, cfg.val_fraction, cfg.seed)
    gen = torch.Generator().manual_seed(0)
    probe = split.x_train[torch.randperm(len(split.x_train), generator=gen)[:cfg.batch_size]]
    store = work / "public-nb201.json"  # resumable: one entry per cell and signal, written as it finishes
    done = json.loads(store.read_text()) if store.exists() else {}
    rows = []
    for i, c in enumerate(cells):
        g = space.format(c)
        d = done.setdefault(g, {})
        _zero_cost_scores(space, g, probe, d, seed=i)
        if i < args.public_trained and "one_epoch_val_accuracy" not in d:
            torch.manual_seed(1000 + i)
            net = space.build(g)
            train_network(net, split.x_train, split.y_train, 1, 1000 + i, cfg.batch_size, cfg.lr, cfg.weight_decay,
                          s.dataset.augment)
            d["one_epoch_val_accuracy"] = evaluate(net, split.x_val, split.y_val)["accuracy"]
            store.write_text(json.dumps(done, indent=1))
        final_key = f"final_test_accuracy_{args.train_epochs}_epochs"  # kept per protocol length
        if i < args.public_final and final_key not in d:
            torch.manual_seed(0)
            net = space.build(g)
            train_network(net, s.dataset.x_train, s.dataset.y_train, args.train_epochs, 0, args.batch_size, 0.05,
                          3e-4, s.dataset.augment)
            d[final_key] = evaluate(net, s.dataset.x_test, s.dataset.y_test)["accuracy"]
            store.write_text(json.dumps(done, indent=1))
        row = {"genotype": g, "latency_ms": table.of(c, "latency_ms"),
               **{k: v for k, v in d.items() if not k.startswith("final_test_accuracy")},
               "public_test_accuracy": args.public_table[g]}
        if final_key in d:
            row["final_test_accuracy"] = d[final_key]
        rows.append(row)
    store.write_text(json.dumps(done, indent=1))
    ranked = np.sort([r["public_test_accuracy"] for r in rows])

    def pct(acc):
        return float(100.0 * np.searchsorted(ranked, acc, side="right") / len(ranked))

    signals = {}
    _rank_sums(rows)
    for key in (*SCORE_KEYS, *RANK_SUMS, "latency_ms", "one_epoch_val_accuracy", "final_test_accuracy"):
        # with the pairs whose public accuracies differ by more than 2 points: does the signal order them?
        agreement = _agreement(rows, key, "public_test_accuracy", 2.0)
        if agreement is not None:
            signals[key] = agreement
    if "final_test_accuracy" in signals:
        signals["final_test_accuracy"]["epochs"] = args.train_epochs
    rng = pyrandom.Random(0)
    trained = [r for r in rows if "one_epoch_val_accuracy" in r]

    rules = {}
    per_candidate = -(-len(split.y_train) // cfg.batch_size)
    for k in (1, 4, 7, 14):  # 14: what random trains at the compare part's compute
        if len(trained) >= 2 * k:
            accs = [max(rng.sample(trained, k), key=lambda r: r["one_epoch_val_accuracy"])["public_test_accuracy"]
                    for _ in range(4000)]
            rules[f"best_of_{k}_by_one_epoch"] = {"mean_public_test_accuracy": float(np.mean(accs)),
                                                 "mean_public_percentile": float(np.mean([pct(a) for a in accs]))}
    for key in (*SCORE_KEYS, *RANK_SUMS):  # the pool of a zero-cost search, by each score
        name = key.removesuffix("_score")
        for pool in (20, 50, 100, 500, 1000, 1500):  # 1,500: what a zero-cost search scores at 546 passes
            if len(rows) >= 2 * pool:
                accs = [max(rng.sample(rows, pool), key=lambda r: r[key])["public_test_accuracy"]
                        for _ in range(4000)]
                rules[f"top_{name}_of_{pool}"] = {"mean_public_test_accuracy": float(np.mean(accs)),
                                                  "mean_public_percentile": float(np.mean([pct(a) for a in accs])),
                                                  "passes": round(pool / 3, 1)}
    return {"budget_latency_ms": budget, "feasible_cells": len(feasible), "cells": len(rows),
            "passes_per_one_epoch_candidate": per_candidate, "signals": signals, "selection_rules": rules,
            "public_accuracy_of_cells": {"mean": float(ranked.mean()), "median": float(np.median(ranked)),
                                         "max": float(ranked.max())}}


def part_scores(args, work: Path) -> dict:
    """Which training-free score ranks a space's cells under the budget by their accuracy after the
    final protocol? For spaces without a public table (DARTS). The cells: the first
    ``--scores-cells`` candidates of each random-search run of the compare part in ``--work``
    (``{space}-random-s{seed}``, seeds ``--seeds``): random search's draws, uniform among the
    designs under the budget by the table and whole, so the set carries no strategy's preference.
    Each is trained by the final protocol (``--train-epochs`` on the whole training set, seed 0,
    test accuracy; resumable store ``scores-{space}.json``), and every zero-cost score (on the
    first batch of seed 0's training split, network built from torch seed 0), the rank sums, the
    parameter count and the one-epoch validation accuracy random search ranked them by (from the
    run's log) are set against it: Kendall tau, p, and the share of cell pairs more than 2 points
    apart that each orders."""

    import numpy as np
    import torch

    from codesign.data import load_dataset
    from codesign.pipeline.phases import split_train_val
    from codesign.search.train import evaluate, train_network
    from codesign.spaces import create_space

    ds = load_dataset("cifar10", args.data_dir)
    split = split_train_val(ds, 0.5, 0)
    gen = torch.Generator().manual_seed(0)
    probe = split.x_train[torch.randperm(len(split.x_train), generator=gen)[:args.batch_size]]
    final_key = f"final_test_accuracy_{args.train_epochs}_epochs"
    out = {}
    for space_name in args.spaces:
        space = create_space(space_name, **SPACE_ARGS[space_name])
        cells = []
        for seed in args.seeds:
            log = work / f"{space_name}-random-s{seed}" / "log.jsonl"
            if not log.is_file():
                sys.exit(f"benchmarks/search.py: --part scores reads random search's candidates from {log}; run "
                         f"--part compare --spaces {space_name} --seeds {seed} --work {work} first")
            recs = [json.loads(line) for line in log.read_text().splitlines() if '"candidate"' in line]
            cells += [(seed, r) for r in recs[:args.scores_cells]]
        store = work / f"scores-{space_name}.json"
        done = json.loads(store.read_text()) if store.exists() else {}
        rows = []
        for i, (seed, rec) in enumerate(cells):
            g = rec["genotype"]
            d = done.setdefault(g, {})
            d.update(seed=seed, candidate=rec["candidate"], one_epoch_val_accuracy=rec["val_accuracy"])
            if final_key not in d:
                t0 = time.perf_counter()
                torch.manual_seed(0)
                net = space.build(g)
                train_network(net, ds.x_train, ds.y_train, args.train_epochs, 0, args.batch_size, 0.05, 3e-4, ds.augment)
                d[final_key] = evaluate(net, ds.x_test, ds.y_test)["accuracy"]
                d[f"train_seconds_{args.train_epochs}_epochs"] = time.perf_counter() - t0
                print(f"scores: {space_name} cell {i + 1}/{len(cells)}: {d[final_key]:.3f}", file=sys.stderr, flush=True)
            _zero_cost_scores(space, g, probe, d, seed=0)
            store.write_text(json.dumps(done, indent=1))
            rows.append({"genotype": g, **{k: v for k, v in d.items() if not k.startswith("final_test_accuracy")},
                         "final": d[final_key]})
        _rank_sums(rows)
        signals = {key: _agreement(rows, key, "final", 0.02)  # accuracies as fractions: 2 points
                   for key in (*SCORE_KEYS, *RANK_SUMS, "one_epoch_val_accuracy")}
        finals = [r["final"] for r in rows]
        out[space_name] = {"cells": len(rows), "final_training_epochs": args.train_epochs, "signals": signals,
                           "final_test_accuracy": {"mean": float(np.mean(finals)), "min": float(min(finals)),
                                                   "max": float(max(finals))},
                           "rows": [{k: r[k] for k in ("genotype", "seed", "candidate", "final", *SCORE_KEYS,
                                                       "one_epoch_val_accuracy")} for r in rows]}
    return out


def part_default(args, work: Path) -> dict:
    """The genotype the default `codesign search` (digits) finds, trained on the CIFAR-10 subset
    beside random cells under the same latency budget, by one protocol (nb201, the benchmark's size)."""
    import random as pyrandom

    import torch

    from codesign.pipeline import SearchConfig
    from codesign.search.budgets import satisfied
    from codesign.search.strategies import SearchContext, sample_feasible
    from codesign.search.train import evaluate, train_network

    found = _run(SearchConfig(db=args.db), work / "default-digits")
    s, costs, _ = _setup_costs("nb201", args)
    from codesign.search.costs import whole_cost_of

    # random cells as the default search keeps them: under the budget by the table and whole
    ctx = SearchContext(s.space, None, None, None, None, costs.table, costs.budgets, None,
                        whole_cost=whole_cost_of(s.space, costs.table, s.source))
    rng = pyrandom.Random(2_024)
    genotypes = [("default", found["genotype"])] + [
        (f"random-{i}", s.space.format(sample_feasible(ctx, rng))) for i in range(args.random_cells)]
    store = work / "default-cifar.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    for name, g in genotypes:
        if name in done:
            continue
        torch.manual_seed(0)
        net = s.space.build(g)
        train_network(net, s.dataset.x_train, s.dataset.y_train, args.train_epochs, 0, args.batch_size, 0.05, 3e-4,
                      s.dataset.augment)
        choices = s.space.parse(g)
        done[name] = {"genotype": g, "test_accuracy": evaluate(net, s.dataset.x_test, s.dataset.y_test)["accuracy"],
                      "latency_ms": costs.table.of(choices, "latency_ms"),
                      "under_budget": satisfied(costs.table, choices, costs.budgets)}
        store.write_text(json.dumps(done, indent=1))
    rand = [v["test_accuracy"] for k, v in done.items() if k != "default"]
    mine = done["default"]["test_accuracy"]
    digits_run = {"genotype": found["genotype"], "test_accuracy_digits": found["test_accuracy"],
                  "strategy": found["strategy"], "run_dir": found["run_dir"]}
    if args.public_table is not None:  # judged by the public table, under each table's budget
        from codesign.search.costs import CostTable

        here = nb201_public.feasible_accuracies(args.public_table, args.public_space, costs.table,
                                                costs.budgets[0].limit)
        for v in done.values():
            v.update(nb201_public.judge(args.public_table, here, v["genotype"]))
        own = nb201_public.feasible_accuracies(args.public_table, args.public_space,
                                               CostTable.load(Path(found["run_dir"]) / "costs.json"),
                                               found["budgets"][0]["limit"])
        digits_run.update(nb201_public.judge(args.public_table, own, found["genotype"]))
    if "remeasure" in args.part or "all" in args.part:  # the default job's network, interleaved as remeasure does
        from codesign.pipeline.phases import costs_phase, setup

        spec = found["budgets"][0]["spec"]  # the default budget: a fraction of the costliest network
        job = setup(SearchConfig(db=args.db), quiet=True)
        digits_run["measured_interleaved"] = time_interleaved(
            job, costs_phase(job, None), {"default": Path(found["run_dir"])}, work / "default-digits-costliest.onnx",
            float(spec[:-1]), args)
    return {"digits_run": digits_run,
            "budget_latency_ms": costs.budgets[0].limit, "cells": done,
            "random_cells_mean": _mean_std(rand) if rand else None,
            "random_cells_beaten": sum(mine > a for a in rand), "random_cells": len(rand)}


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
    ap.add_argument("--spaces", nargs="+", default=["nb201", "darts"], choices=sorted(SPACE_ARGS))
    ap.add_argument("--work", default="/tmp/codesign-bench-search", help="run directories (resumed)")
    ap.add_argument("--db", default=None, help="profile database (default: the user cache)")
    ap.add_argument("--part", nargs="+", choices=("supernet", "remedies", "compare", "remeasure", "ranking", "default",
                                                  "public", "scores", "l2o", "all"),
                    default=["all"], help="one or more parts (remeasure times the networks of the others given)")
    ap.add_argument("--latency", default="0.5x", help="latency budget (default 0.5x of the costliest network)")
    ap.add_argument("--epochs", type=int, default=10, help="search epochs of the gradient strategies")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-epochs", type=int, default=20,
                    help="final training of every derived network (default 20: on NB201 it orders 83 %% of cell "
                         "pairs whose public accuracies differ by > 2 points, 4 epochs 72 %%; docs/search.md)")
    ap.add_argument("--candidate-epochs", type=int, default=1, help="random: epochs per candidate")
    ap.add_argument("--ws-candidates", type=int, default=50)
    ap.add_argument("--against", nargs="+", default=["random", "rsws"],
                    help="compare: the strategies the default is compared with (default: random rsws; random is "
                         "always among them)")
    ap.add_argument("--passes", type=float, default=None,
                    help="compare: the compute of every strategy, in passes (default: that of gdas+tunas at "
                         "--epochs, which is then run and reported beside them)")
    ap.add_argument("--also", nargs="*", default=[], help="compare: further strategies run at the same compute "
                                                          "(e.g. naswot)")
    ap.add_argument("--nb201-table", default=None,
                    help="compare/default/public: a CSV of the public NB201 CIFAR-10 accuracies of every cell "
                         "(see benchmarks/nb201_public.py); judges the NB201 cells by it too")
    ap.add_argument("--scores-cells", type=int, default=8,
                    help="scores: candidates of each random-search run trained by the final protocol (default 8)")
    ap.add_argument("--public-cells", type=int, default=300, help="public: cells under the budget scored")
    ap.add_argument("--public-trained", type=int, default=160, help="public: of them, trained one epoch")
    ap.add_argument("--public-final", type=int, default=0, help="public: of them, trained by the final protocol")
    ap.add_argument("--ws-eval-batches", type=int, default=2)
    ap.add_argument("--remeasure-rounds", type=int, default=10, help="remeasure: interleaved timing rounds")
    ap.add_argument("--remeasure-repeats", type=int, default=3, help="remeasure: timed runs per network per round")
    ap.add_argument("--rank-archs", type=int, default=20, help="ranking: sampled architectures")
    ap.add_argument("--rank-epochs", type=int, default=2, help="ranking: stand-alone training epochs")
    ap.add_argument("--rank-supernet-epochs", type=int, default=10, help="ranking: supernet training epochs")
    ap.add_argument("--random-cells", type=int, default=5, help="default: random cells trained for reference")
    ap.add_argument("--remedy-variants", nargs="+", default=None, help="remedies: only these (e.g. gdas+tunas)")
    ap.add_argument("--schedule", default=None,
                    help="profile/measure policy of every run (default: the device's default, tuned on a CPU)")
    ap.add_argument("--no-measure", action="store_true", help="skip the TVM measurement of the final networks")
    ap.add_argument("--quick", action="store_true", help="fewer steps and epochs (smoke test)")
    ap.add_argument("--rounds", type=int, default=2, help="supernet: rounds of all variants, alternated (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="supernet: OMP threads per variant process (default 1)")
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=None,
                    help="supernet: variants to run (default: all; --quick: reference and fused)")
    args = ap.parse_args()

    def want(*parts):
        return any(p in args.part for p in parts)

    if args.quick:
        args.epochs, args.warmup, args.train_epochs = 3, 1, 1
    args.public_table = args.public_space = None
    if "random" not in args.against:
        args.against = ["random", *args.against]
    if args.passes is not None and args.passes <= 0:
        print(f"benchmarks/search.py: --passes must be positive, got {args.passes}", file=sys.stderr)
        sys.exit(2)
    if want("public") and args.nb201_table is None:
        print("benchmarks/search.py: --part public needs --nb201-table", file=sys.stderr)
        sys.exit(2)
    if args.nb201_table is not None:
        from codesign.spaces import create_space

        args.public_space = create_space("nb201", **SPACE_ARGS["nb201"])
        try:
            args.public_table = nb201_public.read_table(args.nb201_table, args.public_space)
        except nb201_public.TableError as e:
            print(f"benchmarks/search.py: {e}", file=sys.stderr)
            sys.exit(2)
    needs_data = want("remedies", "compare", "remeasure", "ranking", "default", "public", "scores", "all")
    if needs_data and not Path(args.data_dir).exists():
        sys.exit(f"benchmarks/search.py: no CIFAR-10 folder at {args.data_dir}; pass --data-dir")
    work = Path(args.work)  # made once every input has been checked
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = {"benchmark": "search", "hardware": hardware(), "load_average_start": os.getloadavg(),
           "settings": {k: v for k, v in vars(args).items() if k not in ("work", "public_table", "public_space")},
           "space_args": {k: SPACE_ARGS[k] for k in args.spaces}}
    if want("supernet", "all"):
        variants = args.variants or (["reference", "fused"] if args.quick else list(VARIANTS))
        if "reference" not in variants:
            variants = ["reference", *variants]
        out["supernet_settings"] = {"threads": args.threads, "rounds": args.rounds, "variants": variants,
                                    "steps_per_round": 2 if args.quick else 4}
        out["supernet"] = part_supernet(args.quick, args.rounds, args.threads, variants)
    args.remedy_rows = None
    if want("remedies", "all"):
        out["remedies"] = part_remedies(args, work)
        args.remedy_rows = out["remedies"]["runs"]
    if want("compare", "all"):
        out["compare"] = part_compare(args, work)
    if want("remeasure", "all"):
        out["remeasure"] = part_remeasure(args, work, out.get("compare"))
    if want("ranking", "all"):
        out["ranking"] = part_ranking(args, work)
    if want("default", "all"):
        out["default"] = part_default(args, work)
    if want("public") or (want("all") and args.public_table is not None):
        out["public"] = part_public(args, work)
    if want("scores"):
        out["scores"] = part_scores(args, work)
    if want("l2o", "all"):
        out["l2o_arch_optimizer"] = part_l2o(args.seeds, work, args.quick)
    out["load_average_end"] = os.getloadavg()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
