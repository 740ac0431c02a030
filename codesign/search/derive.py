"""From a search's result to one design (a network, and on hardware an accelerator config) that
meets every budget."""

from __future__ import annotations

import math

import numpy as np

from .budgets import Budget, objective_of, repair, satisfied
from .costs import CostTable, network_cost


def polish_hardware(costs: CostTable, choices: list[int], budgets: list[Budget], objective: str) -> list[int]:
    """With the network fixed, the accelerator config that meets every budget with the least
    ``objective`` by the table (every config is looked at: a hardware space has hundreds, not
    millions). Returns ``choices`` unchanged where no other config is better or none applies."""
    if costs.hardware is None or not costs.hardware.names or objective == "none":
        return list(choices)
    net, _ = costs.split(choices)
    best, best_value = list(choices), objective_of(costs, choices, objective)
    if not satisfied(costs, best, budgets):
        best_value = math.inf
    for c in range(costs.hardware.n_configs):
        cand = net + costs.hardware.choices_of(c)
        if not satisfied(costs, cand, budgets):
            continue
        value = objective_of(costs, cand, objective)
        if value < best_value - 1e-15:
            best, best_value = cand, value
    return best


def derive(space, costs: CostTable, source, found: dict, budgets: list[Budget], objective: str = "none",
           margin: float = 1.0) -> dict:
    """The found choices repaired until both the additive table and the cost source's whole-network
    cost meet every budget; on a hardware space, the accelerator config then polished for the
    objective with the network fixed (``polish_hardware``).

    Args:
        space: the search space.
        costs: its cost table.
        source: the ``codesign.costs.CostSource`` the table was built from.
        found: a strategy's result (``choices`` and per-decision ``probs``; network decisions first,
            then hardware parameters).
        budgets: resolved budgets.
        objective: what to minimise inside the budgets (none, latency, energy, edp).
        margin: the share of each budget the table aims at to begin with (below 1 after a
            measurement found an earlier derivation over a budget).

    Returns:
        {"genotype", "argmax_genotype", "repair_changes", "additive", "predicted", "meets_budgets"},
        and on hardware "hardware" (parameter -> value), "hw_choices", "argmax_hardware".
    """
    probs = [np.asarray(p, np.float64) for p in found["probs"]]
    choices = list(found["choices"])
    n = costs.n_network
    argmax = space.format(choices[:n])
    changes = 0
    whole: dict = {}
    for _ in range(16):  # the graph's cost is not additive: each round aims the table lower
        choices, k = repair(space, costs, choices, probs, budgets, margin)
        changes += k
        choices = polish_hardware(costs, choices, budgets, objective)
        whole = network_cost(space, space.format(choices[:n]), source, choices[n:])
        worst = max((whole.get(b.metric, 0.0) / b.limit for b in budgets), default=0.0)
        if worst <= 1.0:
            break
        margin *= min(0.97, 1.0 / worst)  # the graph costs more than the table: aim lower
    out = {"genotype": space.format(choices[:n]), "argmax_genotype": argmax, "repair_changes": changes,
           "additive": costs.all_of(choices), "predicted": whole,
           "meets_budgets": all(whole.get(b.metric, math.inf) <= b.limit for b in budgets)
           and satisfied(costs, choices, budgets)}
    if costs.hardware is not None:
        out.update(hardware=costs.hardware.params(choices[n:]), hw_choices=list(choices[n:]),
                   argmax_hardware=costs.hardware.params(list(found["choices"])[n:]))
        if objective != "none":
            out["objective"] = {"name": objective, "value": objective_of(costs, choices, objective)}
    return out
