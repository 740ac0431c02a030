"""Hardware-aware architecture search: strategies, budgets, cost tables and derivation. The run
pipeline that drives them (profile -> search -> train -> export -> measure) is ``codesign.pipeline``.

See docs/search.md.
"""

from .budgets import Budget, Multipliers, parse_budget, repair, resolve
from .costs import CostTable, build_cost_table, network_cost
from .derive import derive
from .regularizers import REGULARIZERS, list_regularizers, register_regularizer
from .strategies import (
    STRATEGIES,
    SearchContext,
    create_strategy,
    list_strategies,
    register_strategy,
)
from .weight_sharing import RandomSearchWeightSharing  # registers rsws
from .zero_cost import ZeroCostSearch, naswot_score  # registers naswot

__all__ = [
    "REGULARIZERS", "STRATEGIES", "Budget", "CostTable", "Multipliers", "RandomSearchWeightSharing", "SearchContext",
    "ZeroCostSearch", "build_cost_table", "create_strategy", "derive", "list_regularizers", "list_strategies",
    "naswot_score", "network_cost", "parse_budget", "register_regularizer", "register_strategy", "repair", "resolve",
]
