"""Co-search of network and accelerator against the hardware team's sequential design and random search.

    python benchmarks/cosearch.py [--data-dir ../shared/data/cifar10-mini] [--spaces nb201 mobilenet]
                                  [--seeds 0 1 2] [--hw-space eyeriss-sweep] [--quick] [--work DIR]

For each (space, seed), on the CIFAR-10 subset and the shipped hardware space (144 accelerator
configs around eyeriss-like), under one latency budget and one area budget:

- joint: ``codesign search --hw-space`` (darts over network options and hardware parameters,
  energy-delay product minimised inside the budgets), with ``--compare sequential``, which also runs
- sequential: the same strategy and compute searching the network on the base accelerator, then
  the best config of the hardware space for that network by exhaustive sweep;
- random: random search over (network, accelerator) pairs under the budgets with the same compute
  in network passes (the joint search's), derived the same way.

Every final network is trained by one protocol (same epochs, seed, data). Latency, energy and area
come from codesign's accelerator model on the exported network. Prints JSON: every design, EDP ratios
sequential/joint and random/joint, accuracy differences, the Pareto points (accuracy vs EDP), the
hardware and load. Each run directory is kept under --work, so a killed benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import hardware  # noqa: E402
from _common import run_or_resume as _run  # noqa: E402

SPACE_ARGS = {"nb201": {"c": 8, "cells": 1}, "mobilenet": {}}


def _design(label: str, acc: float, measured: dict | None, predicted: dict, accel: dict | None, genotype: str,
            passes: float) -> dict:
    m = measured or predicted
    lat, en = m.get("latency_ms"), m.get("energy_mj")
    return {"method": label, "test_accuracy": acc, "latency_ms": lat, "energy_mj": en,
            "edp_mj_ms": lat * en if lat is not None and en is not None else None,
            "area_mm2": (accel or {}).get("area_mm2"), "accelerator": (accel or {}).get("name"),
            "genotype": genotype, "search_passes": passes}


def one(space: str, seed: int, args, work: Path) -> dict:
    from codesign.pipeline import SearchConfig

    common = dict(space=space, space_args=SPACE_ARGS[space], data="cifar10", data_dir=args.data_dir,
                  hw_space=args.hw_space, latency_ms=args.latency, area_mm2=args.area, seed=seed,
                  epochs=args.epochs, warmup_epochs=args.warmup, train_epochs=args.train_epochs,
                  batch_size=args.batch_size, objective="edp")
    joint = _run(SearchConfig(strategy="darts", compare="sequential", **common), work / f"{space}-joint-s{seed}")
    seq = joint["compare"]
    # random search over (network, accelerator) with the joint search's compute in passes
    per = args.candidate_epochs * math.ceil(2500 / args.batch_size)
    candidates = max(1, round(joint["search_passes"] / per))
    rnd = _run(SearchConfig(strategy="random", candidates=candidates, candidate_epochs=args.candidate_epochs,
                            **common), work / f"{space}-random-s{seed}")
    designs = [
        _design("joint", joint["test_accuracy"], joint["measured"], joint["predicted"], joint.get("accelerator"),
                joint["genotype"], joint["search_passes"]),
        _design("random", rnd["test_accuracy"], rnd["measured"], rnd["predicted"], rnd.get("accelerator"),
                rnd["genotype"], rnd["search_passes"]),
    ]
    if seq.get("feasible"):
        designs.append(_design("sequential", seq["test_accuracy"], seq["measured"], seq["predicted"],
                               seq.get("accelerator"), seq["genotype"], seq["search_passes"]))
    budgets = {b["metric"]: b["limit"] for b in joint["budgets"]}
    by = {d["method"]: d for d in designs}
    row = {"space": space, "seed": seed, "budgets": budgets, "designs": designs,
           "sequential_feasible": bool(seq.get("feasible"))}
    for other in ("sequential", "random"):
        if other in by and by["joint"]["edp_mj_ms"]:
            row[f"edp_{other}_over_joint"] = by[other]["edp_mj_ms"] / by["joint"]["edp_mj_ms"]
            row[f"accuracy_joint_minus_{other}_pp"] = 100 * (by["joint"]["test_accuracy"] - by[other]["test_accuracy"])
    row["within_budgets"] = {d["method"]: all((d.get(k) or 0) <= v * (1 + 1e-9) for k, v in budgets.items())
                             for d in designs}
    return row


def pareto(points: list[dict]) -> list[dict]:
    """Designs no other design beats in both accuracy (higher) and EDP (lower)."""
    out = []
    for p in points:
        if p["edp_mj_ms"] is None:
            continue
        if not any(q is not p and q["edp_mj_ms"] is not None and q["test_accuracy"] >= p["test_accuracy"]
                   and q["edp_mj_ms"] <= p["edp_mj_ms"] and (q["test_accuracy"] > p["test_accuracy"]
                                                            or q["edp_mj_ms"] < p["edp_mj_ms"]) for q in points):
            out.append(p)
    return sorted(out, key=lambda p: p["edp_mj_ms"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "cifar10-mini"))
    ap.add_argument("--spaces", nargs="+", default=["nb201", "mobilenet"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--hw-space", default="eyeriss-sweep")
    ap.add_argument("--latency", default="0.3x",
                    help="latency budget (default 0.3x of the costliest design: it binds on the base accelerator; "
                    "at 0.5x it bound nowhere, at 0.15x only parameter-free cells fit and every method scored chance)")
    ap.add_argument("--area", default="8", help="area budget in mm2 (default 8)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--train-epochs", type=int, default=10)
    ap.add_argument("--candidate-epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--work", default="/tmp/codesign-bench-cosearch")
    ap.add_argument("--quick", action="store_true", help="3 search epochs, 2 training epochs: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.warmup, args.train_epochs, args.candidate_epochs = 3, 1, 2, 1
    if not (Path(args.data_dir) / "cifar-10-batches-py").is_dir() and not (Path(args.data_dir) / "data_batch_1").exists():
        sys.exit(f"benchmarks/cosearch.py: no CIFAR-10 folder at {args.data_dir}; pass --data-dir")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    load_before = os.getloadavg()
    rows = [one(space, seed, args, work) for space in args.spaces for seed in args.seeds]
    summary = {}
    for space in args.spaces:
        rs = [r for r in rows if r["space"] == space]
        s = {}
        for other in ("sequential", "random"):
            ratios = [r[f"edp_{other}_over_joint"] for r in rs if f"edp_{other}_over_joint" in r]
            accs = [r[f"accuracy_joint_minus_{other}_pp"] for r in rs if f"accuracy_joint_minus_{other}_pp" in r]
            if ratios:
                s[other] = {"edp_over_joint_geomean": math.exp(statistics.mean(math.log(x) for x in ratios)),
                            "edp_over_joint": ratios, "accuracy_joint_minus_other_pp_mean": statistics.mean(accs),
                            "joint_at_least_1_5x_lower_edp_within_0_5pp": sum(
                                x >= 1.5 and a >= -0.5 for x, a in zip(ratios, accs))}
        s["pareto"] = pareto([d | {"seed": r["seed"]} for r in rs for d in r["designs"]])
        summary[space] = s
    print(json.dumps({"benchmark": "cosearch", "hardware": hardware(), "load_average_before": load_before,
                      "load_average_after": os.getloadavg(), "seconds": round(time.time() - t0, 1),
                      "settings": {k: v for k, v in vars(args).items() if k != "work"}, "runs": rows,
                      "summary": summary}, indent=2, default=str))


if __name__ == "__main__":
    main()
