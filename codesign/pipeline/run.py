"""``run_search``: the main job end to end in a run directory that survives kills."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..distributed import check_workers, make_executor
from .config import SearchConfig
from .phases import (
    check_measurable,
    compare_phase,
    costs_phase,
    derive_phase,
    final_phase,
    save_costs,
    say,
    search_phase,
    setup,
    split_train_val,
    summary,
)
from .rundir import check_run_dir, open_run, read_config

RESULTS_FORMAT = "codesign-search-results"
RESULTS_VERSION = 1


def run_search(cfg: SearchConfig | None = None, run_dir: str | Path | None = None, resume: bool = False,
               overrides: dict | None = None, quiet: bool = False, workers: int | None = None,
               ray: str | None = None) -> dict:
    """Run (or resume) a search and everything after it; returns results.json's content.

    Every input is checked (run directory, config, data, space, device or cost model) before the
    run directory is created; ``resume`` reopens ``run_dir``, checks that every file in it is
    readable and refuses a config that differs from its own.

    ``workers`` (a local Ray of that many CPUs) or ``ray`` (``auto`` or a cluster address) train
    the candidates of random and evolution search and of the ``--compare random`` baseline as Ray
    tasks (docs/distributed.md); the results are those of the serial run, so a run may be resumed
    with another number of workers.
    """
    t_start = time.perf_counter()
    check_workers(workers, ray)
    check_run_dir(run_dir, resume)
    if resume:
        cfg = read_config(run_dir, overrides)
    s = setup(cfg, quiet)
    check_measurable(s)
    try:
        return _run(s, cfg, run_dir, resume, overrides, quiet, t_start, workers, ray)
    finally:
        if s.executor is not None:
            s.executor.close()


def start_executor(s, workers: int | None, ray: str | None):
    """A started Ray executor where the run has candidates to train in parallel (random or
    evolution, or the random baseline), else None; started before the run directory exists, so
    an unreachable cluster leaves nothing behind."""
    if workers is None and ray is None:
        return None
    sampled = {"random", "evolution"}
    if s.cfg.strategy not in sampled and s.cfg.compare != "random":
        say(f"note: --workers/--ray train the candidates of random and evolution search and of --compare "
            f"random; {s.cfg.strategy} runs in this process", s.quiet)
        return None
    executor = make_executor(workers, ray, preload=("codesign.search.strategies",)).start()
    say(f"ray: {executor.slots} candidate(s) at a time", s.quiet)
    return executor


def _run(s, cfg, run_dir, resume, overrides, quiet, t_start, workers, ray) -> dict:
    # A new run costs its space and resolves its budgets before its directory exists.
    costs = None if resume else costs_phase(s, None)
    s.executor = start_executor(s, workers, ray)  # after profiling: idle Ray workers never disturb timings
    run, cfg = open_run(cfg, run_dir, resume, overrides)
    say(f"run directory: {run.path}", quiet)
    if costs is None:
        costs = costs_phase(s, run)
    save_costs(s, run, costs)
    split = split_train_val(s.dataset, cfg.val_fraction, cfg.seed, s.train_device)

    found = search_phase(s, run, costs, split)
    derived = derive_phase(s, run, costs, found)
    say(f"genotype: {derived['genotype']}", quiet)
    final = final_phase(s, run, derived["genotype"], hw_choices=derived.get("hw_choices"))
    compare = compare_phase(s, run, costs, split, found)
    anchor = _anchor_statistic(costs.table)

    results = {
        "format": RESULTS_FORMAT, "format_version": RESULTS_VERSION, "run_dir": str(run.path),
        "space": cfg.space, "strategy": cfg.strategy, "dataset": s.dataset.describe(), "device": s.source.device,
        "schedule": s.source.schedule, "cost_source": s.source.describe(), "seed": cfg.seed,
        "train_device": s.train_device,
        "genotype": derived["genotype"], "budgets": [b.to_dict() for b in costs.budgets], "derived": derived,
        "search_seconds": found["search_seconds"], "search_passes": found["search_passes"], **summary(final),
        "budgets_met_predicted": all(final["predicted"].get(b.metric, math.inf) <= b.limit for b in costs.budgets),
        "budgets_met_measured": _met(final.get("measured"), costs.budgets, anchor),
        "budgets_measured_by": _measured_by(final.get("measured"), costs.budgets, anchor),
        "compare": compare, "wall_seconds_this_session": time.perf_counter() - t_start,
    }
    if "hardware" in derived:
        results.update(hardware=derived["hardware"], objective=cfg.objective)
    run.write("results.json", results)
    return report_phase(run, results, quiet)


def report_phase(run, results: dict, quiet: bool) -> dict:
    """report.html in the run directory. The results are already saved: a report that fails is
    said, recorded in results.json as ``report_error``, and loses nothing."""
    from ..report import write_report

    say("writing the report", quiet)
    try:
        report = write_report(run.path)
    except Exception as exc:  # the run's results stand without their report
        results.update(report=None, report_error=f"{type(exc).__name__}: {exc}")
        say(f"the report could not be written ({results['report_error']}); the results are in "
            f"{run.file('results.json')}", quiet)
    else:
        results.update(report=str(report.path), report_error="; ".join(report.problems) or None)
        for problem in report.problems:
            say(f"report: {problem}", quiet)
    run.write("results.json", results)
    return results


def _anchor_statistic(table) -> str | None:
    """How the whole networks that anchor ``table``'s relative latency budgets were timed ("min":
    each one's fastest run), or None where nothing anchors it (no calibration, a hardware axis, or
    a calibration recorded before codesign wrote its statistic)."""
    if table.hardware is not None:
        return None
    return (table.calibration.get("networks") or {}).get("statistic")


def _measured_value(measured: dict, budget, anchor_statistic: str | None) -> tuple[float | None, str | None]:
    """The measured value a budget is judged by, and its statistic. A relative latency budget
    ("0.5x") on an anchored table is a fraction of the costliest network's fastest run, so the
    network is judged by its fastest run too (``latency_min_ms``), like with like; every other
    budget by the measurement's own statistic."""
    if (budget.metric == "latency_ms" and budget.spec.endswith("x") and anchor_statistic == "min"
            and measured.get("latency_min_ms") is not None):
        return measured["latency_min_ms"], "min"
    value = measured.get(budget.metric)
    if value is None:
        return None, None
    return value, measured.get("statistic") if budget.metric == "latency_ms" else None


def _met(measured: dict | None, budgets, anchor_statistic: str | None = None) -> bool | None:
    """Whether the measured network meets every budget it has a measurement for (None: nothing
    measured); see ``_measured_value`` for which measurement."""
    if not measured:
        return None
    values = [(_measured_value(measured, b, anchor_statistic)[0], b.limit) for b in budgets]
    checked = [v <= limit for v, limit in values if v is not None]
    return all(checked) if checked else None


def _measured_by(measured: dict | None, budgets, anchor_statistic: str | None) -> dict | None:
    """{metric: statistic} of the measurements ``_met`` judged the latency budgets by."""
    if not measured:
        return None
    out = {b.metric: _measured_value(measured, b, anchor_statistic)[1] for b in budgets if b.metric == "latency_ms"}
    return {k: v for k, v in out.items() if v is not None} or None
