"""Run optimizers on held-out tasks: the learned rule against Adam, RMSprop and SGD+momentum, each
baseline's learning rate tuned on a small grid (on tuning seeds, never on the test seeds)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..errors import CodesignError
from .optim import LearnedOptimizer
from .rules import UpdateRule
from .tasks import create_task
from .train import HELD_OUT_SEED_BASE

LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
BASELINES = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "sgd_momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
}
TUNING_SEEDS = (HELD_OUT_SEED_BASE - 1, HELD_OUT_SEED_BASE - 2)  # below the test seeds, never tested on


def held_out_seeds(n: int) -> list[int]:
    """Test seeds, disjoint from every seed meta-training draws (those are below 2**31)."""
    return [HELD_OUT_SEED_BASE + i for i in range(n)]


def run(task_name: str, seed: int, make_optimizer, steps: int) -> dict:
    """Optimise one task for ``steps`` steps.

    Returns:
        ``curve``: the minibatch loss at every step; ``final_loss``: the task's full-data loss at
        the end (inf if the run diverged).
    """
    task = create_task(task_name, seed)
    params = [p.clone().requires_grad_() for p in task.init_params()]
    opt = make_optimizer(params)
    curve = []
    for _ in range(steps):
        opt.zero_grad()
        loss = task.loss(params)
        value = float(loss.detach())
        curve.append(value)
        if not math.isfinite(value):
            break
        loss.backward()
        opt.step()
    final = task.eval_loss(params) if math.isfinite(curve[-1]) else math.inf
    return {"curve": curve, "final_loss": final if math.isfinite(final) else math.inf}


def tune_lr(task_name: str, baseline: str, steps: int, grid=LR_GRID, seeds=TUNING_SEEDS) -> tuple[float, dict]:
    """The grid learning rate with the lowest mean final loss over the tuning seeds (a diverged
    run counts as inf). Two seeds, because on flat problems (a supernet's alphas) one seed's
    ranking of the rates is mostly noise."""
    scores = {}
    for lr in grid:
        finals = [run(task_name, s, lambda p, lr=lr: BASELINES[baseline](p, lr), steps)["final_loss"] for s in seeds]
        scores[lr] = float(np.mean(finals))
    best = min(scores, key=lambda lr: scores[lr])
    return best, scores


def _downsample(curves: list[list[float]], points: int) -> list[float]:
    """Mean curve over seeds at ``points`` evenly spaced steps (diverged runs count as inf)."""
    n = max(len(c) for c in curves)
    idx = np.unique(np.linspace(0, n - 1, points).round().astype(int))
    out = []
    for i in idx:
        vals = [c[i] if i < len(c) else math.inf for c in curves]
        out.append(float(np.mean(vals)))
    return out


def compare(learned: dict[str, UpdateRule], task_name: str, steps: int, seeds: int = 5,
            tune_steps: int | None = None, lrs: dict[str, float] | None = None, progress: bool = True) -> dict:
    """Final loss and loss curve of learned rules and the tuned baselines on held-out seeds.

    Args:
        learned: ``{label: trained rule}``, e.g. ``{"l2o_general": load_rule("l2o:general")}``.
        task_name: task family.
        steps: optimisation steps per run.
        seeds: held-out seeds to average over.
        tune_steps: horizon of the baselines' learning-rate tuning (default ``steps``).
        lrs: ``{baseline: lr}`` to use instead of tuning (e.g. the rates tuned at a shorter
            horizon, to ask how both kinds of optimizer carry over to a longer one).

    Returns:
        ``optimizers``: ``{label: {final_loss_mean, final_loss_per_seed, curve, lr, seconds}}``
        (``curve``: mean minibatch loss over seeds at 21 evenly spaced steps; ``lr``: the tuned
        learning rate, None for learned rules); ``best_baseline``; ``learned_vs_best_baseline``:
        ``{label: learned final loss / best baseline's}`` (< 1 is a win); ``winner``; the steps
        and seeds used.

    Raises:
        CodesignError: no learned rule, steps or seeds < 1.
    """
    from .. import progress as _progress

    if not isinstance(learned, dict) or not learned:
        raise CodesignError("compare needs at least one learned rule as {label: rule}")
    if steps < 1 or seeds < 1:
        raise CodesignError(f"steps and seeds must be >= 1, got {steps} and {seeds}")
    test = held_out_seeds(seeds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: see train.train
    try:
        results = {}
        contenders = [(label, rule, None) for label, rule in learned.items()] + [(b, None, b) for b in BASELINES]
        bar = _progress.bar(len(contenders), f"eval {task_name} {steps} steps", unit="optimizer", enabled=progress)
        for label, rule, baseline in contenders:
            t0 = time.perf_counter()
            if baseline is None:
                lr = None
                def make(p, rule=rule):
                    return LearnedOptimizer(p, rule)
            elif lrs and baseline in lrs:
                lr = float(lrs[baseline])
                def make(p, b=baseline, lr=lr):
                    return BASELINES[b](p, lr)
            else:
                lr, _ = tune_lr(task_name, baseline, tune_steps or steps)
                def make(p, b=baseline, lr=lr):
                    return BASELINES[b](p, lr)
            runs = [run(task_name, s, make, steps) for s in test]
            finals = [r["final_loss"] for r in runs]
            results[label] = {
                "final_loss_mean": float(np.mean(finals)),
                "final_loss_per_seed": finals,
                "curve": _downsample([r["curve"] for r in runs], 21),
                "lr": lr,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            bar.update(1, last=label)
        bar.close()
    finally:
        torch.set_num_threads(threads)
    best_base = min(BASELINES, key=lambda b: results[b]["final_loss_mean"])
    base = results[best_base]["final_loss_mean"]
    ratios = {}
    for label in learned:
        mine = results[label]["final_loss_mean"]
        ratios[label] = mine / base if base > 0 and math.isfinite(mine) else math.inf
    winner = min(results, key=lambda k: results[k]["final_loss_mean"])
    return {
        "task": task_name,
        "steps": steps,
        "test_seeds": test,
        "optimizers": results,
        "best_baseline": best_base,
        "learned_vs_best_baseline": ratios,
        "winner": winner,
    }
