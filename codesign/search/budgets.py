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
    metric: str  # latency_ms | energy_mj | area_mm2
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
        raise CodesignError(f"--{metric.replace('_', '-')} must be > 0 and finite, got {s!r}")
    return Budget(metric, s)


def resolve(budgets: list[Budget], costs: CostTable, space) -> list[Budget]:
    """Turn relative budgets into absolute ones and refuse infeasible ones, naming the minimum."""
    out = []
    for b in budgets:
        if b.metric not in costs.metrics():
            if b.metric == "area_mm2":
                raise CodesignError("an area_mm2 budget needs an accelerator target (--device accel:NAME or "
                                    "--hw-space NAME); a TVM device has a fixed area")
            raise CodesignError(f"a {b.metric} budget needs a cost model that predicts {b.metric}; "
                                f"this one predicts {', '.join(costs.metrics())}")
        _, top = costs.extreme(space, b.metric, "max")
        _, low = costs.extreme(space, b.metric, "min")
        limit = float(b.spec[:-1]) * top if b.spec.endswith("x") else float(b.spec)
        unit = b.metric.split("_")[1]
        if limit < low:
            if b.metric == "area_mm2":
                raise CodesignError(f"area budget {b.spec} ({limit:.4g} mm2) is below the smallest accelerator of "
                                    f"{costs.device}: {low:.4g} mm2 (the largest is {top:.4g} mm2)")
            raise CodesignError(
                f"{b.metric} budget {b.spec} ({limit:.4g}) is below the cheapest network of the {space.name} "
                f"space on {costs.device}: the minimum achievable is {low:.4g} {unit} "
                f"({low / top:.3f}x); the costliest is {top:.4g}")
        out.append(Budget(b.metric, b.spec, limit))
    if costs.hardware is not None and len(out) > 1:
        _check_together(out, costs, space)
    return out


def _check_together(budgets: list[Budget], costs: CostTable, space) -> None:
    """On hardware, some config must meet every budget at once (each with its cheapest network)."""
    for c in range(costs.hardware.n_configs):
        hw = costs.hardware.choices_of(c)
        if all(costs.of(space.cheapest(costs.network_table("latency_ms" if b.metric == "area_mm2" else b.metric, c))
                        + hw, b.metric) <= b.limit for b in budgets):
            return
    raise CodesignError("no accelerator config of " + costs.device + " meets every budget together ("
                        + ", ".join(f"{b.metric} <= {b.limit:.4g}" for b in budgets)
                        + "): a smaller area makes the network slower; relax one of them")


def implied_budgets(budgets: list[Budget], costs: CostTable, tolerance: float = 0.1) -> list[str]:
    """Notes on budgets that another budget already implies: where the table's energy is
    proportional to its latency (energy modelled from latency, as the CPU rooflines do), an energy
    budget and a latency budget are one budget in two units, and only the tighter one binds."""
    by = {b.metric: b for b in budgets}
    if "latency_ms" not in by or "energy_mj" not in by or "energy_mj" not in costs.table:
        return []
    lat = np.concatenate([np.ravel(t) for t in costs.table["latency_ms"]] + [np.ravel(costs.base["latency_ms"])])
    en = np.concatenate([np.ravel(t) for t in costs.table["energy_mj"]] + [np.ravel(costs.base["energy_mj"])])
    keep = lat > 1e-12
    if keep.sum() < 2:
        return []
    ratio = en[keep] / lat[keep]
    r = float(np.median(ratio))
    if not (r > 0 and np.all(np.abs(ratio / r - 1.0) <= tolerance)):
        return []
    lb, eb = by["latency_ms"], by["energy_mj"]
    if eb.limit / r >= lb.limit:
        return [f"the energy budget ({eb.limit:.4g} mJ) is implied by the latency budget: energy here is "
                f"{r:.3g} mJ per ms of latency (within {tolerance:.0%}), so {lb.limit:.4g} ms means at most "
                f"{lb.limit * r:.4g} mJ; only the latency budget binds"]
    return [f"the latency budget ({lb.limit:.4g} ms) is implied by the energy budget: energy here is "
            f"{r:.3g} mJ per ms of latency (within {tolerance:.0%}), so {eb.limit:.4g} mJ means at most "
            f"{eb.limit / r:.4g} ms; only the energy budget binds"]


OBJECTIVES = ("none", "latency", "energy", "edp")


def expected_objective(costs: CostTable, probs: list[torch.Tensor], objective: str) -> torch.Tensor | None:
    """The expected quantity to minimise inside the budgets (differentiable), or None.

    ``latency`` and ``energy`` are the expected ``latency_ms`` / ``energy_mj``; ``edp`` the expected
    energy-delay product (mJ x ms), on hardware ``sum_c q(c) latency_c * energy_c``."""
    if objective == "none":
        return None
    if objective == "latency":
        return costs.expected(probs, "latency_ms")
    if objective == "energy":
        return costs.expected(probs, "energy_mj")
    if objective == "edp":
        if costs.hardware is None:
            return costs.expected(probs, "latency_ms") * costs.expected(probs, "energy_mj")
        q = costs.hardware.joint(list(probs[costs.n_network:])).to(probs[0].dtype)
        return q @ (costs.per_config(probs, "latency_ms") * costs.per_config(probs, "energy_mj"))
    raise CodesignError(f"unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}")


def objective_of(costs: CostTable, choices: list[int], objective: str) -> float:
    """The objective of one design by the additive table (0 for ``none``)."""
    if objective == "none":
        return 0.0
    if objective == "edp":
        return costs.of(choices, "latency_ms") * costs.of(choices, "energy_mj")
    return costs.of(choices, "latency_ms" if objective == "latency" else "energy_mj")


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
    """Greedy repair: while a budget is exceeded, make the valid single change (of a network option
    or, on hardware, of a hardware parameter) that loses the least architecture log-probability per
    unit of normalised cost saved. A design that is not a network of the space (an NB201 cell
    whose output ignores its input) first makes the valid single change that loses the least
    log-probability. Returns (choices, changes)."""
    cur, steps = list(choices), 0
    if not space.valid(costs.split(cur)[0]):
        options = [c for c in _neighbours(space, costs, cur) if space.valid(costs.split(c)[0])]
        if options:
            cur, steps = min(options, key=lambda cand: _logprob_lost(probs, cur, cand)), 1
        else:
            cur, steps = costs.extreme(space, budgets[0].metric if budgets else "latency_ms", "min")[0], 1
    while not satisfied(costs, cur, budgets, margin):
        if steps >= max_steps:
            break
        now = {b.metric: costs.of(cur, b.metric) for b in budgets}
        over = [b for b in budgets if now[b.metric] > b.limit * margin]
        best, best_score = None, -math.inf
        for cand in _neighbours(space, costs, cur):
            after = {b.metric: costs.of(cand, b.metric) for b in budgets}
            if not all(math.isfinite(v) for v in after.values()):
                continue  # an infeasible layer/config pair never wins
            saved = sum((min(now[b.metric], 1e30) - after[b.metric]) / b.limit for b in over)
            if saved <= 1e-12:
                continue
            score = saved / (max(_logprob_lost(probs, cur, cand), 0.0) + 1e-6)
            if score > best_score:
                best, best_score = cand, score
        if best is None:
            break
        cur, steps = best, steps + 1
    if not satisfied(costs, cur, budgets, margin):
        for b in budgets:  # the cheapest design in each budget's metric, if it meets them all
            cheapest, _ = costs.extreme(space, b.metric, "min")
            if satisfied(costs, cheapest, budgets, margin):
                return cheapest, steps + 1
        raise CodesignError("no network of the space meets every budget together; relax one of them")
    return cur, steps


def _logprob_lost(probs: list[np.ndarray], cur: list[int], cand: list[int]) -> float:
    """The architecture log-probability a change from ``cur`` to ``cand`` gives up."""
    return sum(math.log(max(probs[d][cur[d]], 1e-12)) - math.log(max(probs[d][cand[d]], 1e-12))
               for d in range(len(cur)) if cand[d] != cur[d])


def _neighbours(space, costs: CostTable, choices: list[int]):
    net, hw = costs.split(choices)
    decisions = space.decisions()
    for d, dec in enumerate(decisions):
        for k in range(len(dec.options)):
            if k != net[d]:
                cand = list(net)
                cand[d] = k
                if space.valid(cand):
                    yield cand + hw
    # spaces with coupled decisions (DARTS: two inputs per node) also move an edge
    if hasattr(space, "neighbours"):
        for cand in space.neighbours(net):
            yield list(cand) + hw
    for i, n in enumerate(costs.hw_sizes()):
        for k in range(n):
            if k != hw[i]:
                h = list(hw)
                h[i] = k
                yield net + h
