"""Run optimizers on held-out tasks: the learned rule against Adam, RMSprop and SGD+momentum, each
baseline's learning rate tuned on a small grid (on a tuning seed, never on the test seeds)."""

from __future__ import annotations

import math
import sys

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
TUNING_SEED = HELD_OUT_SEED_BASE - 1  # outside both the training draws and the test seeds


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


def tune_lr(task_name: str, baseline: str, steps: int, grid=LR_GRID) -> tuple[float, dict]:
    """The grid learning rate with the lowest final loss on the tuning seed."""
    scores = {}
    for lr in grid:
        r = run(task_name, TUNING_SEED, lambda p, lr=lr: BASELINES[baseline](p, lr), steps)
        scores[lr] = r["final_loss"]
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


def compare(rule: UpdateRule, name: str, task_name: str, steps: int, seeds: int = 5,
            tune_steps: int | None = None, progress: bool = True) -> dict:
    """Final loss and loss curve of the learned rule and the tuned baselines on held-out seeds.

    Args:
        rule: the trained update rule.
        name: its label in the result (e.g. "l2o_rnnprop").
        task_name: task family.
        steps: optimisation steps per run.
        seeds: held-out seeds to average over.
        tune_steps: horizon of the baselines' learning-rate tuning (default ``steps``).

    Returns:
        ``{optimizer: {final_loss_mean, final_loss_per_seed, curve, lr}}`` plus ``winner``,
        ``learned_vs_best_baseline`` (learned final loss / best baseline's; < 1 means a win) and
        the steps and seeds used.
    """
    from tqdm import tqdm

    if steps < 1 or seeds < 1:
        raise CodesignError(f"steps and seeds must be >= 1, got {steps} and {seeds}")
    test = held_out_seeds(seeds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: see train.train
    try:
        results = {}
        contenders = [(name, None)] + [(b, b) for b in BASELINES]
        bar = tqdm(contenders, file=sys.stderr, disable=not progress, desc=f"eval {task_name}")
        for label, baseline in bar:
            if baseline is None:
                lr = None
                def make(p):
                    return LearnedOptimizer(p, rule)
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
            }
    finally:
        torch.set_num_threads(threads)
    best_base = min(BASELINES, key=lambda b: results[b]["final_loss_mean"])
    learned, base = results[name]["final_loss_mean"], results[best_base]["final_loss_mean"]
    return {
        "task": task_name,
        "steps": steps,
        "test_seeds": test,
        "optimizers": results,
        "best_baseline": best_base,
        "learned_vs_best_baseline": learned / base if base > 0 and math.isfinite(learned) else math.inf,
        "winner": name if learned < base else best_base,
    }
