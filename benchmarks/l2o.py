"""Benchmark of codesign's shipped learned optimizers against Adam, RMSprop and SGD with momentum.

Prints JSON: for every task family, on held-out tasks (seeds never drawn during meta-training),
the final full-data loss (mean and per seed) and the mean loss curve of each shipped learned
optimizer and of each baseline, whose learning rate is tuned on a grid (1e-3 .. 1) on a separate
pair of tuning seeds at the trained horizon. Each family runs at the horizon the optimizers were trained for
(100 steps) and at twice that (baselines keep the rates tuned at 100 steps), and ``mlp_relu`` (ReLU instead of the sigmoid of the training
MLPs) measures transfer to another activation: the two known failure modes of learned optimizers.
A ``step_ms`` section times one optimizer.step() of the learned rule against Adam's on the same
parameters (median of repeats, so shared-machine noise shows as spread, not bias).

    python benchmarks/l2o.py [--quick] [--seeds N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import hardware, time_ms  # noqa: E402

from codesign.l2o import load_optimizer, load_rule, read_training  # noqa: E402
from codesign.l2o.evaluate import compare  # noqa: E402

# family -> shipped optimizers to evaluate on it (supernet: its own and the general one)
PLAN = {
    "quadratic": ("general", "general_lstm"),
    "mlp": ("general", "general_lstm"),
    "convnet": ("general", "general_lstm"),
    "mlp_relu": ("general", "general_lstm"),
    "supernet": ("supernet", "general"),
}


def step_overhead(n_params: int, repeats: int) -> dict:
    """Wall time of one step() on a flat parameter of n_params coordinates: learned vs Adam."""
    out = {"coordinates": n_params}
    for label, make in (("l2o_general", lambda p: load_optimizer("l2o:general", p)),
                        ("adam", lambda p: torch.optim.Adam(p, lr=1e-3))):
        w = torch.zeros(n_params, requires_grad=True)
        w.grad = torch.randn(n_params)
        opt = make([w])
        out[label] = time_ms(opt.step, repeats=repeats)
    out["l2o_over_adam"] = out["l2o_general"]["median_ms"] / out["adam"]["median_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, trained horizon only, no supernet")
    parser.add_argument("--seeds", type=int, default=None, help="held-out tasks per family (default 5)")
    args = parser.parse_args()
    seeds = args.seeds or (2 if args.quick else 5)
    t0 = time.perf_counter()
    rules = {name: load_rule(f"l2o:{name}") for name in {n for names in PLAN.values() for n in names}}
    trained = {name: read_training(f"l2o:{name}") for name in rules}
    results, wins, losses = [], [], []
    for family, names in PLAN.items():
        if args.quick and family == "supernet":
            continue
        horizon = trained[names[0]]["horizon"]
        tuned = None
        for steps in ((horizon,) if args.quick else (horizon, 2 * horizon)):
            # at twice the horizon the baselines keep the rates tuned at the trained horizon: both
            # kinds of optimizer were fitted to 100 steps and are asked to carry over to 200
            res = compare({f"l2o_{n}": rules[n] for n in names}, family, steps, seeds=seeds, lrs=tuned,
                          progress=True)
            tuned = {b: r["lr"] for b, r in res["optimizers"].items() if r["lr"] is not None}
            res["lr_tuned_at_steps"] = horizon
            res["horizon_vs_trained"] = steps / horizon
            res["trained_on"] = {f"l2o_{n}": trained[n]["config"]["tasks"] for n in names}
            results.append(res)
            base_seeds = res["optimizers"][res["best_baseline"]]["final_loss_per_seed"]
            for label, ratio in res["learned_vs_best_baseline"].items():
                mine = res["optimizers"][label]["final_loss_per_seed"]
                # paired by seed: how often the learned optimizer ends lower on the same task
                row = {"task": family, "steps": steps, "optimizer": label, "vs": res["best_baseline"],
                       "ratio": ratio if math.isfinite(ratio) else None,
                       "seeds_won": sum(m < b for m, b in zip(mine, base_seeds)), "seeds": len(mine)}
                (wins if ratio < 1 else losses).append(row)
            print(json.dumps({"task": family, "steps": steps, "ratios": res["learned_vs_best_baseline"],
                              "best_baseline": res["best_baseline"]}), file=sys.stderr)
    torch.set_num_threads(1)
    out = {
        "benchmark": "l2o",
        "hardware": hardware(),
        "held_out_seeds_per_family": seeds,
        "lr_grid": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
        "metric": "final full-data loss (training set for quadratic/mlp/convnet, validation for supernet); "
                  "ratio = learned / best tuned baseline, < 1 is a win",
        "pretrained": {n: {"tasks": trained[n]["config"]["tasks"], "rule": rules[n].kind,
                           "episodes": trained[n]["episodes"], "horizon": trained[n]["horizon"]} for n in rules},
        "wins": wins,
        "losses": losses,
        "step_ms": step_overhead(100_000, repeats=5 if args.quick else 15),
        "results": results,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
