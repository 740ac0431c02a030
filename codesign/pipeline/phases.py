"""The phases of a run, each a function of typed inputs to a typed output that is also a file of
the run directory (``--resume`` reads the file instead of running the phase again).

    setup (config, data, space, cost source: all checked before the run directory exists)
      -> costs   (costs.json: the cost table, budgets resolved)
      -> search  (search.json; checkpoint.{npz,json} and log.jsonl while it runs)
      -> derive  (derived.json)
      -> final   (train.json + weights, export.json + model.onnx, measure.json)
      -> compare (compare.json, ``--compare random``: random search at equal compute, then final;
                  ``--compare sequential``: the network searched on the base accelerator, then the
                  best accelerator of the hardware space swept for it)

On an accelerator target the final phase also writes ``accelerator.yaml`` (the chosen config,
loadable by ``codesign hw eval --accel``), and the "measurement" is the accelerator model's
layer-by-layer evaluation of the exported network (``measure.json``, with every layer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .. import progress
from ..costs import CostSource, open_cost_source
from ..data import Dataset, load_dataset
from ..errors import CodesignError
from ..search import checkpoint as ckpt
from ..search.budgets import Budget, implied_budgets, parse_budget, resolve
from ..search.costs import (
    CostTable,
    anchor_table,
    build_cost_table,
    calibration_networks,
    network_cost,
    whole_cost_of,
)
from ..search.derive import derive
from ..search.device import resolve_train_device
from ..search.strategies import SearchContext, create_strategy
from ..search.train import evaluate, train_network
from ..spaces import create_space
from ..spaces.base import SearchSpace
from .config import SearchConfig
from .rundir import Run


def say(msg: str, quiet: bool) -> None:
    progress.say(msg, enabled=not quiet)


@dataclass
class Split:
    """The bilevel split of the training set: weights learn on train, the architecture on val."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@dataclass
class Setup:
    """What every phase reads: the config, its data, space and cost source."""

    cfg: SearchConfig
    dataset: Dataset
    space: SearchSpace
    source: CostSource
    quiet: bool = False
    measure: bool = False  # whether the final phase measures (decided once, up front)
    no_measure_reason: str = ""
    executor: object = None  # where random/evolution candidates train (codesign.distributed); None: here
    train_device: str = "cpu"  # where the supernet and the final network train (--train-device, resolved)


@dataclass
class Costs:
    table: CostTable
    budgets: list[Budget]


def split_train_val(dataset, fraction: float, seed: int, device: str = "cpu") -> Split:
    """The bilevel split, on the device the search trains on (the strategies train where it lives)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset.y_train), generator=gen)
    n_val = int(round(len(order) * fraction))
    val, tr = order[:n_val], order[n_val:]
    x, y = dataset.x_train.to(device), dataset.y_train.to(device)
    return Split(x[tr.to(device)], y[tr.to(device)], x[val.to(device)], y[val.to(device)])


def optimizer_factory(spec: str) -> Callable | None:
    """None for the strategy's default optimizer (adam, sgd), else a factory of the learned optimizer."""
    if spec in ("adam", "sgd"):
        return None
    from ..l2o import load_optimizer, resolve_optimizer_path

    path = resolve_optimizer_path(spec.split(":", 1)[1])
    return lambda params: load_optimizer(path, params)


def make_space(cfg: SearchConfig, dataset: Dataset) -> SearchSpace:
    return create_space(cfg.space, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                        **cfg.space_args)


def setup(cfg: SearchConfig, quiet: bool = False) -> Setup:
    """Check every input and open the data, the space and the cost source (nothing is written)."""
    cfg.validate()
    cfg.objective = cfg.resolved_objective()
    dataset = load_dataset(cfg.data, cfg.data_dir)
    check_batch_size(dataset, cfg)
    space = make_space(cfg, dataset)
    if cfg.hw_space or cfg.device.startswith("accel:"):
        source = open_cost_source(device=cfg.device, hw_space=cfg.hw_space)
    else:
        source = open_cost_source(cfg.cost_model, cfg.device, cfg.schedule if cfg.cost_model is None else None,
                                  cfg.db, repeats=cfg.profile_repeats, min_repeat_ms=cfg.profile_min_repeat_ms,
                                  statistic=cfg.profile_statistic, tune_trials=cfg.tune_trials)
    measure, why = source.can_measure() if cfg.measure else (False, "")
    return Setup(cfg, dataset, space, source, quiet, measure, why, train_device=resolve_train_device(cfg.train_device))


def check_batch_size(dataset: Dataset, cfg: SearchConfig) -> None:
    """Every split the search draws batches from holds at least one full batch."""
    n = len(dataset.y_train)
    n_val = int(round(n * cfg.val_fraction))
    if min(n - n_val, n_val) < cfg.batch_size:
        raise CodesignError(f"--batch-size {cfg.batch_size} is larger than the search's splits of the "
                            f"{n} training images ({n - n_val} train, {n_val} validation at --val-fraction "
                            f"{cfg.val_fraction}); lower --batch-size or use more data")


def costs_phase(s: Setup, run: Run | None) -> Costs:
    """Profile and fit (or load) the cost source, cost every option, resolve the budgets.

    A new run calls this before its run directory exists (``run`` None), so that an infeasible
    budget leaves nothing behind; ``save_costs`` then writes the table and the fitted model. A
    resumed run reads both from its directory."""
    cache = run.file("cost_model.json") if run is not None and not s.cfg.cost_model else None
    s.source.prepare(s.space.kernels, cache=cache, progress=not s.quiet)
    if getattr(s.source, "report", None) is not None:
        say(f"cost model: {s.source.model_kind} on {s.source.model.n_train} profiled kernels "
            f"({s.source.report.measured} new)", s.quiet)
    elif s.cfg.cost_model:
        say(f"cost model: {s.cfg.cost_model} ({s.source.device}, {s.source.schedule})", s.quiet)
    if run is not None and run.has("costs.json"):
        table = CostTable.load(run.file("costs.json"))
    else:
        table = build_cost_table(s.space, s.source)
        if s.cfg.calibrate_networks and s.cfg.measure and hasattr(s.source, "calibrate"):
            table = calibrate_table(s, table)
    budgets = resolve(s.cfg.budgets() or [parse_budget("latency_ms", "0.5x")], table, s.space)
    say("budgets: " + ", ".join(f"{b.metric} <= {b.limit:.4g} ({b.spec})" for b in budgets), s.quiet)
    if s.source.energy_note and s.source.energy_note.startswith("model:") and "energy_mj" in table.metrics() \
            and table.hardware is None:
        say(f"energy on {s.source.device} is modelled ({s.source.energy_note}), not measured", s.quiet)
    for note in implied_budgets(budgets, table):
        say(f"note: {note}", s.quiet)
    return Costs(table, budgets)


def calibrate_table(s: Setup, table: CostTable) -> CostTable:
    """Time ``--calibrate-networks`` whole networks of the space on the device, fit the cost model's
    network terms on them and build the table again from the fitted model (the fit and every
    network's measured and predicted latency recorded in the table's calibration)."""
    genotypes = calibration_networks(s.space, table, s.cfg.calibrate_networks)
    say(f"calibrating the cost table on {len(genotypes)} whole networks of the space (timed once, stored in "
        f"{s.source.db})", s.quiet)
    fit = s.source.calibrate(s.space, genotypes, progress=not s.quiet)
    table = build_cost_table(s.space, s.source)
    if table.hardware is None:
        # Relative budgets are fractions of the costliest network: anchor the table on the measured
        # latencies of the cheapest and the costliest network (the first two timed), so that the
        # fitted terms shape only what lies between them.
        low, top = fit["networks"][0], fit["networks"][1]
        anchor_table(table, s.space.parse(low["genotype"]), low["latency_ms"], s.space.parse(top["genotype"]),
                     top["latency_ms"])
    for row in fit["networks"]:
        row["table_ms"] = table.of(s.space.parse(row["genotype"]))
    table.calibration["networks"] = fit
    worst = max(abs(r - 1.0) for r in fit["fit_ratio"])
    say(f"network terms: {fit['network_scale']:.3g} x kernel sum + {fit['overhead_ms']:.3g} ms + "
        f"{1e3 * fit['per_kernel_overhead_ms']:.3g} us per kernel; the networks within {100 * worst:.0f} % "
        f"({fit['timed_now']} timed now)", s.quiet)
    return table


def save_costs(s: Setup, run: Run, costs: Costs) -> None:
    """The cost table (costs.json) and a fitted cost model (cost_model.json) into the run directory."""
    if not run.has("costs.json"):
        costs.table.save(run.file("costs.json"))
    model = getattr(s.source, "_model", None)
    if model is not None and not s.cfg.cost_model and not run.has("cost_model.json"):
        model.save(run.file("cost_model.json"))


def search_context(s: Setup, run: Run, costs: Costs, split: Split, checkpoint: str, max_passes=None,
                   log_stream: str = "log.jsonl") -> SearchContext:
    return SearchContext(s.space, split.x_train, split.y_train, split.x_val, split.y_val, costs.table, costs.budgets,
                         s.cfg, run.file(checkpoint), lambda rec: run.log(rec, log_stream), not s.quiet,
                         s.dataset.augment, max_passes, optimizer_factory(s.cfg.arch_optimizer),
                         optimizer_factory(s.cfg.weight_optimizer), executor=s.executor,
                         whole_cost=whole_cost_of(s.space, costs.table, s.source))


def run_strategy(name: str, ctx: SearchContext) -> dict:
    found = create_strategy(name, ctx).run()
    found["probs"] = [np.asarray(p).tolist() for p in found["probs"]]
    return found


def search_phase(s: Setup, run: Run, costs: Costs, split: Split) -> dict:
    if run.has("search.json"):
        return run.read("search.json")
    say(f"searching {s.cfg.space} with {s.cfg.strategy} on {s.cfg.data} ({len(split.y_train)} train / "
        f"{len(split.y_val)} val) on {s.train_device}", s.quiet)
    found = run_strategy(s.cfg.strategy, search_context(s, run, costs, split, "checkpoint", s.cfg.max_passes))
    run.write("search.json", found)
    return found


def derive_phase(s: Setup, run: Run, costs: Costs, found: dict, name: str = "derived.json") -> dict:
    if run.has(name):
        return run.read(name)
    derived = verify_latency(s, costs, found, derive(s.space, costs.table, s.source, found, costs.budgets,
                                                     s.cfg.objective))
    run.write(name, derived)
    return derived


# A first timing under the budget but above this share of it is confirmed by two more (median of
# three): interleaved timings of one small network move by 2-4 % between runs on a shared 2-core host
# (docs/search.md), so a network within 5 % of the line can read either side of it.
VERIFY_NEAR = 0.95


def verify_latency(s: Setup, costs: Costs, found: dict, derived: dict, tries: int = 4) -> dict:
    """Check the derived network against the latency budgets by timing it on the device beside
    the costliest network the table was calibrated on, in interleaved rounds: its measured
    share of the costliest, times the costliest's calibrated latency, is what is compared with
    each budget (a load that moves during the run cancels out). While a budget is exceeded,
    derive again with the table aiming lower, up to ``tries`` networks. A network over a budget is
    timed a second time first: over both times, it is over (by the lesser share); under the second
    time, a third timing decides, by the median of the three shares. (The lesser of two shares
    alone would favour a timing in which a burst of load slowed the costliest network, and pass
    networks a little over the budget.) A network under the budget by less than the timings' own
    spread (above ``VERIFY_NEAR`` of it) is timed three times and judged by the median too: one
    lucky timing must not pass a network that sits on the line. The timings are recorded in
    ``derived["verified"]``."""
    budgets = [b for b in costs.budgets if b.metric == "latency_ms"]
    if not budgets or "networks" not in costs.table.calibration:  # nothing to check, or no device timed
        return derived
    top = costs.table.calibration["networks"]["networks"][1]
    top_ms = costs.table.of(s.space.parse(top["genotype"]))
    record, margin = [], 1.0
    for attempt in range(tries):
        say(f"timing {derived['genotype']} beside the costliest network to check the latency budget", s.quiet)
        raw: list[float] = []  # this network's share of the costliest in each timing
        near = False  # under by the first timing, but within its spread of the budget
        for timing in range(3):  # over once: timed again; the two timings disagree: a third decides
            timed = s.source.time_networks(s.space, [top["genotype"], derived["genotype"]])
            raw.append(timed[derived["genotype"]] / timed[top["genotype"]])
            # a burst of load that one timing's rounds did not escape must not change the network,
            # nor one that slowed the costliest network pass it
            share = raw[0] if timing == 0 else min(raw) if timing == 1 else float(np.median(raw))
            estimate = share * top_ms
            worst = max(estimate / b.limit for b in budgets)
            record.append({"genotype": derived["genotype"], "latency_ms": timed[derived["genotype"]],
                           "costliest_ms": timed[top["genotype"]], "share_of_costliest": share,
                           "latency_estimate_ms": estimate, "meets_budgets": worst <= 1.0, "timing": timing + 1})
            say(f"measured {share:.3f} of the costliest network: {estimate:.4g} ms against "
                f"{min(b.limit for b in budgets):.4g} ms", s.quiet)
            if timing == 0:
                near = VERIFY_NEAR < worst <= 1.0
                if worst <= 1.0 and not near:
                    break  # under the first time, clear of the line
            elif timing == 1 and worst > 1.0 and not near:
                break  # over twice (the lesser share over)
            elif timing == 2:
                break  # by the median of three
        if worst <= 1.0 or attempt == tries - 1:
            break
        # Aim below where the table puts this network, by the measured excess (a network the
        # table already put under the budget would otherwise be derived unchanged).
        table_share = max(costs.table.of(s.space.parse(derived["genotype"]), b.metric) / b.limit for b in budgets)
        margin = min(margin, table_share) * 0.98 / worst
        try:
            cheaper = derive(s.space, costs.table, s.source, found, costs.budgets, s.cfg.objective, margin=margin)
        except CodesignError as exc:  # nothing the table puts lower meets the other budgets too
            note = (f"measured over the latency budget; no network meets every budget with the table aiming at "
                    f"{100 * margin:.0f} % of it ({exc}), so this one is kept")
            say(note, s.quiet)
            derived["verified"] = {"tries": record, "meets_budgets": False, "note": note}
            return derived
        derived = cheaper
        say(f"over the budget as measured: derived again with the table aiming at {100 * margin:.0f} % of it",
            s.quiet)
    derived["verified"] = {"tries": record, "meets_budgets": record[-1]["meets_budgets"]}
    return derived


def final_phase(s: Setup, run: Run, genotype: str, prefix: str = "", hw_choices=None) -> dict:
    """Train from scratch, export, measure one genotype (files prefixed with ``prefix``); on a
    hardware target, on the accelerator config of ``hw_choices``."""
    cfg, space, dataset = s.cfg, s.space, s.dataset
    out: dict = {"genotype": genotype}
    axis = getattr(s.source, "axis", None)
    if axis is not None:
        accel = axis.config(list(hw_choices or []))
        out["accelerator"] = {"name": accel.name, "file": str(run.file(f"{prefix}accelerator.yaml")),
                              "area_mm2": accel.area_mm2(), "parameters": axis.params(list(hw_choices or []))}
        if not run.has(f"{prefix}accelerator.yaml"):
            import yaml

            run.file(f"{prefix}accelerator.yaml").write_text(yaml.safe_dump(accel.to_yaml_dict(), sort_keys=False))
    net = None
    if run.has(f"{prefix}train.json"):
        out["train"] = run.read(f"{prefix}train.json")
    else:
        say(f"training {genotype} from scratch for {cfg.train_epochs} epochs on {s.train_device}", s.quiet)
        torch.manual_seed(cfg.seed)
        dev = s.train_device
        net = space.build(genotype).to(dev)
        with progress.bar(cfg.train_epochs, f"train {prefix.replace('-', ' ')}network", unit="epoch", enabled=not s.quiet,
                          leave=False) as bar:
            fit = train_network(net, dataset.x_train.to(dev), dataset.y_train.to(dev), cfg.train_epochs, cfg.seed, cfg.batch_size,
                                cfg.lr, cfg.weight_decay, dataset.augment, optimizer_factory(cfg.weight_optimizer),
                                progress=lambda _epoch, last: bar.update(1, loss=f"{last['loss']:.3f}",
                                                                         acc=f"{last['accuracy']:.3f}"))
        test = evaluate(net, dataset.x_test.to(dev), dataset.y_test.to(dev))
        net = net.cpu()  # exported and checked against onnxruntime on the CPU
        ckpt.save(run.file(f"{prefix}weights"), {"net": net.state_dict()},
                  {"genotype": genotype, "space": cfg.space, "space_args": cfg.space_args,
                   "input_shape": list(space.input_shape), "num_classes": space.num_classes})
        out["train"] = {**fit, "test_accuracy": test["accuracy"], "test_loss": test["loss"]}
        run.write(f"{prefix}train.json", out["train"])
    if run.has(f"{prefix}export.json"):
        out["export"] = run.read(f"{prefix}export.json")
    else:
        from ..export import export_checked

        if net is None:  # trained in an earlier session of this run
            net = space.build(genotype)
            net.load_state_dict(ckpt.load(run.file(f"{prefix}weights"))[0]["net"])
        out["export"] = export_checked(net, space.input_shape, run.file(f"{prefix}model.onnx"))
        run.write(f"{prefix}export.json", out["export"])
    out["predicted"] = network_cost(space, genotype, s.source, hw_choices)
    if s.measure:
        if run.has(f"{prefix}measure.json"):
            out["measured"] = run.read(f"{prefix}measure.json")
        else:
            say(f"measuring {run.file(prefix + 'model.onnx')} on {out.get('accelerator', {}).get('name') or s.source.device}",
                s.quiet)
            t0 = time.perf_counter()
            out["measured"] = s.source.measure(run.file(f"{prefix}model.onnx"), progress=not s.quiet,
                                               hw_choices=tuple(hw_choices or ()))
            run.write(f"{prefix}measure.json", out["measured"])
            m = out["measured"] or {}
            ort = m.get("onnxruntime_latency_ms")
            say(f"measured {m.get('latency_ms', float('nan')):.4g} ms" + (f" (onnxruntime {ort:.4g} ms)" if ort else "")
                + f" in {time.perf_counter() - t0:.0f} s", s.quiet)
    return out


def summary(final: dict) -> dict:
    m = final.get("measured") or {}
    out = {"test_accuracy": final["train"]["test_accuracy"], "predicted": final["predicted"],
           "measured": {"latency_ms": m.get("latency_ms"), "latency_min_ms": m.get("latency_min_ms"),
                        "statistic": m.get("statistic"), "onnxruntime_latency_ms": m.get("onnxruntime_latency_ms"),
                        "energy_mj": m.get("energy_mj"), "source": m.get("source", "tvm")} if m else None,
           "onnx": final["export"]["onnx"], "train_seconds": final["train"]["seconds"]}
    if "accelerator" in final:
        out["accelerator"] = final["accelerator"]
        lat, en = (m or final["predicted"]).get("latency_ms"), (m or final["predicted"]).get("energy_mj")
        out["edp_mj_ms"] = lat * en if lat is not None and en is not None else None
    return out


def compare_phase(s: Setup, run: Run, costs: Costs, split: Split, found: dict) -> dict | None:
    """``--compare random``: random search with the strategy's compute, then phases derive-final;
    ``--compare sequential``: see ``sequential_phase``."""
    if s.cfg.compare == "sequential":
        return sequential_phase(s, run, costs, split)
    if s.cfg.compare != "random":
        return None
    if run.has("compare.json"):
        return run.read("compare.json")
    say(f"random search with the same compute ({found['search_passes']:.0f} passes)", s.quiet)
    sub = run_strategy("random", search_context(s, run, costs, split, "compare-checkpoint", found["search_passes"],
                                                "compare-log.jsonl"))
    d2 = verify_latency(s, costs, sub, derive(s.space, costs.table, s.source, sub, costs.budgets, s.cfg.objective))
    fin2 = final_phase(s, run, d2["genotype"], "compare-", d2.get("hw_choices"))
    compare = {"strategy": "random", "candidates": sub["candidates"], "search_passes": sub["search_passes"],
               "search_seconds": sub["search_seconds"], "derived": d2, **summary(fin2)}
    run.write("compare.json", compare)
    return compare


def check_measurable(s: Setup) -> None:
    """Say once, before any work, when no measurement will check the predictions (``setup``
    decided it)."""
    if s.cfg.measure and not s.measure:
        say(f"no measurement: {s.no_measure_reason}", s.quiet)


def sequential_phase(s: Setup, run: Run, costs: Costs, split: Split) -> dict:
    """The baseline a hardware team would use: (a) search the network on the hardware space's base
    accelerator with the same strategy, settings, budgets and objective; (b) with that network
    fixed, sweep every config of the hardware space (the accelerator model on the whole exported
    network) and keep the one that meets every budget with the least objective."""
    import dataclasses

    from ..costs import AcceleratorSource
    from ..search.budgets import Budget

    if run.has("compare.json"):
        return run.read("compare.json")
    axis = s.source.axis
    base_source = AcceleratorSource(s.source.base)
    # (a) is a hardware-aware network search on a fixed chip: accuracy within the budgets; the
    # objective is (b)'s to minimise, as in the co-search, where it steers only the hardware.
    base = dataclasses.replace(s, source=base_source, cfg=dataclasses.replace(s.cfg, objective="none"))
    if run.has("sequential-costs.json"):
        table = CostTable.load(run.file("sequential-costs.json"))
    else:
        table = build_cost_table(s.space, base_source)
        table.save(run.file("sequential-costs.json"))
    # The same absolute budgets; area is the sweep's to meet (the base chip's area is fixed).
    budgets = [Budget(b.metric, b.spec, b.limit) for b in costs.budgets if b.metric != "area_mm2"]
    base_costs = Costs(table, budgets)
    say(f"sequential baseline (a): {s.cfg.strategy} on the base accelerator {base_source.device}", s.quiet)
    if run.has("sequential-search.json"):
        found = run.read("sequential-search.json")
    else:
        found = run_strategy(s.cfg.strategy, search_context(base, run, base_costs, split, "sequential-checkpoint",
                                                            log_stream="sequential-log.jsonl"))
        run.write("sequential-search.json", found)
    derived_a = derive_phase(base, run, base_costs, found, "sequential-derived-base.json")
    genotype = derived_a["genotype"]
    # (b) every config of the hardware space for the fixed network
    whole = s.source.network_cost(s.space.network_kernels(genotype))
    say(f"sequential baseline (b): sweeping {axis.n_configs} accelerator configs for {genotype}", s.quiet)
    best, best_value, n_ok = None, None, 0
    for c in range(axis.n_configs):
        if not whole["feasible"][c]:
            continue
        lat, en, area = float(whole["latency_ms"][c]), float(whole["energy_mj"][c]), float(whole["area_mm2"][c])
        values = {"latency_ms": lat, "energy_mj": en, "area_mm2": area}
        if any(values[b.metric] > b.limit for b in costs.budgets):
            continue
        n_ok += 1
        value = {"edp": lat * en, "latency": lat, "energy": en, "none": lat * en}[s.cfg.objective]
        if best is None or value < best_value:
            best, best_value = c, value
    if best is None:
        out = {"strategy": "sequential", "feasible": False, "genotype": genotype, "derived_base": derived_a,
               "reason": "no accelerator config of the space meets every budget with the network found on the "
                         "base accelerator"}
        run.write("compare.json", out)
        return out
    hw = axis.choices_of(best)
    fin = final_phase(s, run, genotype, "sequential-", hw)
    out = {"strategy": "sequential", "feasible": True, "genotype": genotype, "derived_base": derived_a,
           "hardware": axis.params(hw), "hw_choices": hw, "configs_meeting_budgets": n_ok,
           "search_passes": found["search_passes"], "search_seconds": found["search_seconds"], **summary(fin)}
    run.write("compare.json", out)
    return out
