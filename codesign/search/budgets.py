"""Latency and energy budgets: parsing, feasibility, Lagrange multipliers, greedy repair.

A budget is absolute (``--latency-ms 2.5``) or relative to the costliest network of the space
(``--latency-ms 0.5x``). During search each budget b adds ``lambda_b * (E[cost_b] / limit_b - 1)``
to the architecture loss, and ``lambda_b`` follows dual ascent:
``lambda_b <- max(0, lambda_b + lr * (E[cost_b] / limit_b - 1))`` after every architecture step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CodesignError
from .costs import CostTable


@dataclass
class Budget:
    metric: str  # latency_ms | energy_mj
    spec: str  # as given: "2.5" or "0.5x"
    limit: float = math.nan  # resolved, in the metric's unit

    def to_dict(self) -> dict:
        return {"metric": self.metric, "spec": self.spec, "limit": self.limit}


def parse_budget(metric: str, text) -> Budget:
    s = str(text).strip()
    rel = s.endswith("x")
    try:
        v = float(s[:-1] if rel else s)
    except ValueError:
        raise CodesignError(f"--{metric.replace('_', '-')} must be a number ({metric.split('_')[1]}) or a "
                            f"fraction of the costliest network like 0.5x, got {s!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise CodesignError(f"--{metric.replace('_', '-')} must be > 0, got {s!r}")
    return Budget(metric, s)


def resolve(budgets: list[Budget], costs: CostTable, space) -> list[Budget]:
    """Turn relative budgets into absolute ones and refuse infeasible ones, naming the minimum."""
    out = []
    for b in budgets:
        if b.metric not in costs.metrics():
            raise CodesignError(f"a {b.metric} budget needs a cost model that predicts {b.metric}; "
                                f"this one predicts {', '.join(costs.metrics())}")
        table = costs.table[b.metric]
        top = costs.of(space.costliest(table), b.metric)
        low = costs.of(space.cheapest(table), b.metric)
        limit = float(b.spec[:-1]) * top if b.spec.endswith("x") else float(b.spec)
        if limit < low:
            raise CodesignError(
                f"{b.metric} budget {b.spec} ({limit:.4g}) is below the cheapest network of the {space.name} "
                f"space on {costs.device}: the minimum achievable is {low:.4g} {b.metric.split('_')[1]} "
                f"({low / top:.3f}x); the costliest is {top:.4g}")
        out.append(Budget(b.metric, b.spec, limit))
    return out


class Multipliers:
    """Lagrange multipliers of the budgets, updated by projected dual ascent."""

    def __init__(self, budgets: list[Budget], lr: float = 0.5, values: list[float] | None = None):
        self.budgets, self.lr = budgets, lr
        self.values = list(values) if values is not None else [0.0] * len(budgets)

    def penalty(self, costs: CostTable, probs: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        total = probs[0].new_zeros(())
        expected = {}
        for lam, b in zip(self.values, self.budgets):
            e = costs.expected(probs, b.metric)
            expected[b.metric] = float(e.detach())
            total = total + lam * (e / b.limit - 1.0)
        return total, expected

    def update(self, expected: dict[str, float]) -> None:
        for i, b in enumerate(self.budgets):
            self.values[i] = max(0.0, self.values[i] + self.lr * (expected[b.metric] / b.limit - 1.0))


def satisfied(costs: CostTable, choices: list[int], budgets: list[Budget], margin: float = 1.0) -> bool:
    return all(costs.of(choices, b.metric) <= b.limit * margin for b in budgets)


def repair(space, costs: CostTable, choices: list[int], probs: list[np.ndarray], budgets: list[Budget],
           margin: float = 1.0, max_steps: int = 1000) -> tuple[list[int], int]:
    """Greedy repair: while a budget is exceeded, make the valid single change that loses the least
    architecture log-probability per unit of normalised cost saved. Returns (choices, changes)."""
    cur, steps = list(choices), 0
    while not satisfied(costs, cur, budgets, margin):
        if steps >= max_steps:
            break
        over = [b for b in budgets if costs.of(cur, b.metric) > b.limit * margin]
        best, best_score = None, -math.inf
        for cand in _neighbours(space, cur):
            saved = sum((costs.of(cur, b.metric) - costs.of(cand, b.metric)) / b.limit for b in over)
            if saved <= 1e-12:
                continue
            loss = sum(math.log(max(probs[d][cur[d]], 1e-12)) - math.log(max(probs[d][cand[d]], 1e-12))
                       for d in range(len(cur)) if cand[d] != cur[d])
            score = saved / (max(loss, 0.0) + 1e-6)
            if score > best_score:
                best, best_score = cand, score
        if best is None:
            break
        cur, steps = best, steps + 1
    if not satisfied(costs, cur, budgets, margin):
        cheapest = space.cheapest(costs.table[budgets[0].metric])
        if satisfied(costs, cheapest, budgets, margin):
            return cheapest, steps + 1
        raise CodesignError("no network of the space meets every budget together; relax one of them")
    return cur, steps


def _neighbours(space, choices: list[int]):
    decisions = space.decisions()
    for d, dec in enumerate(decisions):
        for k in range(len(dec.options)):
            if k != choices[d]:
                cand = list(choices)
                cand[d] = k
                if space.valid(cand):
                    yield cand
    # spaces with coupled decisions (DARTS: two inputs per node) also move an edge
    if hasattr(space, "neighbours"):
        yield from space.neighbours(choices)
