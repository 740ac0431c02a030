"""The main job as a pipeline of phases over a run directory: setup (every input checked) ->
costs -> search -> derive -> train -> export -> measure -> compare. It sits above ``search``
(strategies, budgets, cost tables, derivation) and ``costs`` (where the numbers come from).

    from codesign.pipeline import SearchConfig, run_search
    results = run_search(SearchConfig(space="nb201", strategy="gdas", latency_ms="0.5x"))

See docs/search.md and docs/architecture.md.
"""

from .config import SearchConfig
from .phases import optimizer_factory, split_train_val
from .run import run_search
from .rundir import Run, open_run, read_config

__all__ = ["Run", "SearchConfig", "open_run", "optimizer_factory", "read_config", "run_search", "split_train_val"]
