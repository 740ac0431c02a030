"""Hardware-aware architecture search: strategies, budgets, cost tables, the run pipeline.

    from codesign.search import SearchConfig, run_search
    results = run_search(SearchConfig(space="nb201", strategy="gdas", latency_ms="0.5x"))

See docs/search.md.
"""

from .budgets import Budget, Multipliers, parse_budget, repair, resolve
from .costs import CostTable, build_cost_table, network_cost
from .run import SearchConfig, derive, run_search
from .strategies import SearchContext, create_strategy, list_strategies, register_strategy

__all__ = [
    "Budget", "CostTable", "Multipliers", "SearchConfig", "SearchContext", "build_cost_table", "create_strategy",
    "derive", "list_strategies", "network_cost", "parse_budget", "register_strategy", "repair", "resolve",
    "run_search",
]
