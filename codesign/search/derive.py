"""From a search's result to one network that meets every budget."""

from __future__ import annotations

import math

import numpy as np

from .budgets import Budget, repair, satisfied
from .costs import CostTable, network_cost


def derive(space, costs: CostTable, source, found: dict, budgets: list[Budget]) -> dict:
    """The found choices repaired until both the additive table and the cost source's whole-network
    cost meet every budget.

    Args:
        space: the search space.
        costs: its cost table.
        source: the ``codesign.costs.CostSource`` the table was built from.
        found: a strategy's result (``choices`` and per-decision ``probs``).
        budgets: resolved budgets.

    Returns:
        {"genotype", "argmax_genotype", "repair_changes", "additive", "predicted", "meets_budgets"}.
    """
    probs = [np.asarray(p, np.float64) for p in found["probs"]]
    choices = list(found["choices"])
    argmax = space.format(choices)
    margin, changes = 1.0, 0
    for _ in range(8):
        choices, n = repair(space, costs, choices, probs, budgets, margin)
        changes += n
        whole = network_cost(space, space.format(choices), source)
        worst = max((whole.get(b.metric, 0.0) / b.limit for b in budgets), default=0.0)
        if worst <= 1.0:
            break
        margin *= min(0.98, 1.0 / worst)  # the graph costs more than the table: aim lower
    return {"genotype": space.format(choices), "argmax_genotype": argmax, "repair_changes": changes,
            "additive": costs.all_of(choices), "predicted": whole,
            "meets_budgets": all(whole.get(b.metric, math.inf) <= b.limit for b in budgets)
            and satisfied(costs, choices, budgets)}
