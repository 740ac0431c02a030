"""Hardware-aware architecture search: strategies, budgets, cost tables and derivation. The run
pipeline that drives them (profile -> search -> train -> export -> measure) is ``codesign.pipeline``.

See docs/search.md.
"""

from .budgets import Budget, Multipliers, parse_budget, repair, resolve
from .costs import CostTable, build_cost_table, network_cost
from .derive import derive
from .strategies import (
    STRATEGIES,
    SearchContext,
    create_strategy,
    list_strategies,
    register_strategy,
)

__all__ = [
    "STRATEGIES", "Budget", "CostTable", "Multipliers", "SearchContext", "build_cost_table", "create_strategy",
    "derive", "list_strategies", "network_cost", "parse_budget", "register_strategy", "repair", "resolve",
]
