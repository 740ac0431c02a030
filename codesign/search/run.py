"""The search pipeline end to end, in a run directory that survives kills.

Phases (each writes its file; ``--resume`` skips the phases whose file exists and continues the
search from its last checkpoint):

1. ``costs.json``: profile the space's kernels on the device (cached in the profile database),
   fit a cost model (``cost_model.json``), cost every (decision, option): the cost table.
2. ``search.json``: the strategy's result (``checkpoint.{npz,json}`` while it runs, ``log.jsonl``
   one line per epoch or candidate).
3. ``derived.json``: the genotype, repaired greedily until the predictor says it meets every
   budget (whole exported graph, not only the additive table).
4. ``train.json`` + ``weights.npz``: the derived network trained from scratch on train + val,
   test accuracy.
5. ``export.json`` + ``model.onnx``: ONNX, onnx.checker, onnxruntime vs torch.
6. ``measure.json``: TVM compiles and times the ONNX file on the device (onnxruntime beside).
7. ``compare.json`` (``--compare random``): random search with the same compute (counted in
   network passes, see ``strategies``), phases 3-6 for its network too.

``results.json`` gathers them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from ..errors import CodesignError
from . import checkpoint as ckpt
from .budgets import Budget, parse_budget, repair, resolve, satisfied
from .costs import CostTable, build_cost_table, network_cost
from .strategies import SearchContext, create_strategy, list_strategies
from .train import evaluate, train_network

RESULTS_FORMAT = "codesign-search-results"
RESULTS_VERSION = 1


@dataclass
class SearchConfig:
    """Everything a run depends on (saved as config.json; --resume checks it)."""

    space: str = "nb201"
    space_args: dict = field(default_factory=dict)
    strategy: str = "darts"
    data: str = "digits"
    data_dir: str | None = None
    val_fraction: float = 0.5
    device: str = "cpu-local"
    schedule: str = "untuned"
    db: str | None = None
    cost_model: str | None = None
    latency_ms: str | None = None
    energy_mj: str | None = None
    epochs: int = 30
    warmup_epochs: int = 2
    batch_size: int = 64
    lr: float = 0.05
    arch_lr: float = 0.01
    weight_decay: float = 3e-4
    lagrange_lr: float = 0.5
    tau_max: float = 5.0
    tau_min: float = 0.5
    candidates: int = 8
    candidate_epochs: int = 4
    population: int = 4
    tournament: int = 2
    train_epochs: int = 30
    seed: int = 0
    measure: bool = True
    compare: str | None = None
    arch_optimizer: str = "adam"
    weight_optimizer: str = "sgd"
    profile_repeats: int = 5
    profile_min_repeat_ms: float = 10.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CodesignError(f"unknown search setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def validate(self) -> None:
        from ..data import DATASETS
        from ..spaces import list_spaces

        if self.space not in list_spaces():
            raise CodesignError(f"unknown search space {self.space!r}; known: {', '.join(list_spaces())}")
        if self.strategy not in list_strategies():
            raise CodesignError(f"unknown strategy {self.strategy!r}; choose from {', '.join(list_strategies())}")
        if self.data not in DATASETS:
            raise CodesignError(f"unknown dataset {self.data!r}; choose from {', '.join(DATASETS)}")
        if self.compare not in (None, "random"):
            raise CodesignError(f"--compare takes random, got {self.compare!r}")
        for name in ("epochs", "batch_size", "candidates", "candidate_epochs", "population", "tournament",
                     "profile_repeats"):
            if getattr(self, name) < 1:
                raise CodesignError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "train_epochs"):
            if getattr(self, name) < 0:
                raise CodesignError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "arch_lr", "tau_max", "tau_min"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise CodesignError(f"--{name.replace('_', '-')} must be a positive number, got {v!r}")
        if self.warmup_epochs >= self.epochs and self.strategy in ("darts", "darts2", "gdas"):
            raise CodesignError(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        if not 0 < self.val_fraction < 1:
            raise CodesignError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        for spec in (self.arch_optimizer, self.weight_optimizer):
            if spec not in ("adam", "sgd") and not spec.startswith("l2o:"):
                raise CodesignError(f"optimizer {spec!r}: use adam, sgd or l2o:<name or file>")
            if spec.startswith("l2o:"):
                from ..l2o import resolve_optimizer_path

                resolve_optimizer_path(spec.split(":", 1)[1])  # a clear error now, not after profiling
        self.budgets()

    def budgets(self) -> list[Budget]:
        out = []
        if self.latency_ms is not None:
            out.append(parse_budget("latency_ms", self.latency_ms))
        if self.energy_mj is not None:
            out.append(parse_budget("energy_mj", self.energy_mj))
        return out


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


class Run:
    """A run directory: config, log, phase files."""

    def __init__(self, path: Path):
        self.path = path

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return self.file(name).exists()

    def read(self, name: str) -> dict:
        return json.loads(self.file(name).read_text())

    def write(self, name: str, obj) -> Path:
        p = self.file(name)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=_jsonable))
        tmp.replace(p)
        return p

    def log(self, rec: dict, stream: str = "log.jsonl") -> None:
        with open(self.file(stream), "a") as f:
            f.write(json.dumps({"time": time.time(), **rec}, default=_jsonable) + "\n")


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)


def new_run_dir(cfg: SearchConfig, root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{cfg.space}-{cfg.strategy}-s{cfg.seed}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def open_run(cfg: SearchConfig | None, run_dir: str | Path | None, resume: bool,
             overrides: dict | None = None) -> tuple[Run, SearchConfig]:
    """Create a run directory (or reopen one with --resume, refusing a different config)."""
    if resume:
        path = Path(run_dir)
        if not (path / "config.json").is_file():
            raise CodesignError(f"--resume {path}: not a codesign run directory (no config.json)")
        saved = SearchConfig.from_dict(json.loads((path / "config.json").read_text())["config"])
        for k, v in (overrides or {}).items():
            if getattr(saved, k) != v:
                raise CodesignError(f"--resume {path}: the run was made with {k}={getattr(saved, k)!r}, not {v!r}; "
                                    "drop the flag or start a new run")
        return Run(path), saved
    assert cfg is not None
    cfg.validate()
    path = Path(run_dir) if run_dir else new_run_dir(cfg)
    if (path / "config.json").exists():
        raise CodesignError(f"{path} already holds a run; use --resume {path} or another --run-dir")
    path.mkdir(parents=True, exist_ok=True)
    import codesign

    Run(path).write("config.json", {"format": "codesign-search-config", "format_version": 1,
                                    "codesign_version": codesign.__version__, "config": cfg.to_dict()})
    return Run(path), cfg


def _optimizer_factory(spec: str):
    """None for the strategy's default optimizer, else a factory of the learned optimizer."""
    if spec in ("adam", "sgd"):
        return None
    from ..l2o import load_optimizer, resolve_optimizer_path

    path = resolve_optimizer_path(spec.split(":", 1)[1])
    return lambda params: load_optimizer(path, params)


def make_space(cfg: SearchConfig, dataset):
    from ..spaces import create_space

    try:
        return create_space(cfg.space, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                            **cfg.space_args)
    except TypeError as exc:
        raise CodesignError(f"--space-arg for {cfg.space}: {exc}") from None


def split_train_val(dataset, fraction: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset.y_train), generator=gen)
    n_val = int(round(len(order) * fraction))
    val, tr = order[:n_val], order[n_val:]
    return dataset.x_train[tr], dataset.y_train[tr], dataset.x_train[val], dataset.y_train[val]


def get_cost_model(cfg: SearchConfig, space, run: Run, quiet: bool):
    from ..predict import create_cost_model, load_cost_model

    if cfg.cost_model:
        model = load_cost_model(cfg.cost_model)
        _say(f"cost model: {cfg.cost_model} ({model.device}, {model.schedule})", quiet)
        return model
    from ..profile import ProfileDB, get_device, profile_kernels
    from ..profile.db import default_db_path

    device = get_device(cfg.device)
    db_path = Path(cfg.db) if cfg.db else default_db_path()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    specs = space.kernels()
    with ProfileDB(db_path) as db:
        _say(f"profiling {len(specs)} kernels of the {cfg.space} space on {device.name} [{cfg.schedule}] "
             f"(cached in {db_path})", quiet)
        report = profile_kernels(specs, device, db, schedule=cfg.schedule, repeats=cfg.profile_repeats,
                                 min_repeat_ms=cfg.profile_min_repeat_ms, progress=not quiet)
        records = db.query(device=device.name, schedule=cfg.schedule, ok_only=True)
    if not records:
        raise CodesignError(f"no usable profiles of {device.name} [{cfg.schedule}] in {db_path}")
    model = create_cost_model("gbdt", seed=0).fit(records)
    model.save(run.file("cost_model.json"))
    _say(f"cost model: gbdt on {len(records)} profiled kernels ({report.measured} new)", quiet)
    return model


def _final(space, genotype: str, dataset, cfg: SearchConfig, run: Run, prefix: str, quiet: bool,
           model, device_name: str) -> dict:
    """Train from scratch, export, measure: phases 4-6 for one genotype (files prefixed)."""
    out = {"genotype": genotype}
    net = None
    if run.has(f"{prefix}train.json"):
        out["train"] = run.read(f"{prefix}train.json")
    else:
        _say(f"training {genotype} from scratch for {cfg.train_epochs} epochs", quiet)
        torch.manual_seed(cfg.seed)
        net = space.build(genotype)
        fit = train_network(net, dataset.x_train, dataset.y_train, cfg.train_epochs, cfg.seed, cfg.batch_size,
                            cfg.lr, cfg.weight_decay, dataset.augment,
                            _optimizer_factory(cfg.weight_optimizer))
        test = evaluate(net, dataset.x_test, dataset.y_test)
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
    out["predicted"] = network_cost(space, genotype, model)
    if cfg.measure:
        if run.has(f"{prefix}measure.json"):
            out["measured"] = run.read(f"{prefix}measure.json")
        else:
            from ..predict.measure import measure_network
            from ..profile import get_device
            from ..profile.db import default_db_path, tuning_dir_for

            _say(f"measuring {run.file(prefix + 'model.onnx')} with TVM on {device_name}", quiet)
            device = get_device(device_name)
            # metaschedule:* keeps its records beside the profile database, as profiling does
            tuning_dir = tuning_dir_for(Path(cfg.db) if cfg.db else default_db_path())
            m = measure_network(str(run.file(f"{prefix}model.onnx")), device, cfg.schedule, repeats=10,
                                min_repeat_ms=20.0, tuning_dir=str(tuning_dir))
            out["measured"] = {**m.to_dict(), "energy_mj": None,
                               "energy_note": "no energy counter measures whole networks on this device"}
            run.write(f"{prefix}measure.json", out["measured"])
    return out


def run_search(cfg: SearchConfig | None = None, run_dir: str | Path | None = None, resume: bool = False,
               overrides: dict | None = None, quiet: bool = False) -> dict:
    """Run (or resume) a search and everything after it; returns results.json's content."""
    from ..data import load_dataset

    t_start = time.perf_counter()
    if not resume:  # bad input fails before a run directory exists
        cfg.validate()
        dataset = load_dataset(cfg.data, cfg.data_dir)
        space = make_space(cfg, dataset)
    run, cfg = open_run(cfg, run_dir, resume, overrides)
    _say(f"run directory: {run.path}", quiet)
    if resume:
        dataset = load_dataset(cfg.data, cfg.data_dir)
        space = make_space(cfg, dataset)
    x_tr, y_tr, x_val, y_val = split_train_val(dataset, cfg.val_fraction, cfg.seed)

    # 1. costs
    if cfg.cost_model is None and run.has("cost_model.json"):
        from ..predict import load_cost_model

        model = load_cost_model(run.file("cost_model.json"))
    else:
        model = get_cost_model(cfg, space, run, quiet)
    device_name = cfg.device if cfg.cost_model is None else model.device
    if run.has("costs.json"):
        costs = CostTable.load(run.file("costs.json"))
    else:
        costs = build_cost_table(space, model)
        costs.save(run.file("costs.json"))
    budgets = cfg.budgets() or [parse_budget("latency_ms", "0.5x")]
    budgets = resolve(budgets, costs, space)
    _say("budgets: " + ", ".join(f"{b.metric} <= {b.limit:.4g} ({b.spec})" for b in budgets), quiet)

    # 2. search
    def context(stem, max_passes=None, log_stream="log.jsonl"):
        return SearchContext(space, x_tr, y_tr, x_val, y_val, costs, budgets, cfg, stem,
                             lambda rec: run.log(rec, log_stream), not quiet, dataset.augment, max_passes,
                             _optimizer_factory(cfg.arch_optimizer),
                             _optimizer_factory(cfg.weight_optimizer))

    if run.has("search.json"):
        found = run.read("search.json")
    else:
        _say(f"searching {cfg.space} with {cfg.strategy} on {cfg.data} ({len(y_tr)} train / {len(y_val)} val)", quiet)
        found = create_strategy(cfg.strategy, context(run.file("checkpoint"))).run()
        found["probs"] = [np.asarray(p).tolist() for p in found["probs"]]
        run.write("search.json", found)

    # 3. derive + repair
    if run.has("derived.json"):
        derived = run.read("derived.json")
    else:
        derived = derive(space, costs, model, found, budgets)
        run.write("derived.json", derived)
    _say(f"genotype: {derived['genotype']}", quiet)

    # 4-6
    final = _final(space, derived["genotype"], dataset, cfg, run, "", quiet, model, device_name)

    # 7. compare
    compare = None
    if cfg.compare == "random":
        if run.has("compare.json"):
            compare = run.read("compare.json")
        else:
            _say(f"random search with the same compute ({found['search_passes']:.0f} passes)", quiet)
            sub = create_strategy("random", context(run.file("compare-checkpoint"), found["search_passes"],
                                                    "compare-log.jsonl")).run()
            sub["probs"] = [np.asarray(p).tolist() for p in sub["probs"]]
            d2 = derive(space, costs, model, sub, budgets)
            fin2 = _final(space, d2["genotype"], dataset, cfg, run, "compare-", quiet, model, device_name)
            compare = {"strategy": "random", "candidates": sub["candidates"], "search_passes": sub["search_passes"],
                       "search_seconds": sub["search_seconds"], "derived": d2, **_summary(fin2)}
            run.write("compare.json", compare)

    results = {
        "format": RESULTS_FORMAT, "format_version": RESULTS_VERSION, "run_dir": str(run.path),
        "space": cfg.space, "strategy": cfg.strategy, "dataset": dataset.describe(), "device": device_name,
        "schedule": cfg.schedule, "seed": cfg.seed, "genotype": derived["genotype"],
        "budgets": [b.to_dict() for b in budgets], "derived": derived,
        "search_seconds": found["search_seconds"], "search_passes": found["search_passes"], **_summary(final),
        "budgets_met_predicted": all(final["predicted"].get(b.metric, math.inf) <= b.limit for b in budgets),
        "compare": compare, "wall_seconds_this_session": time.perf_counter() - t_start,
    }
    run.write("results.json", results)
    return results


def _summary(final: dict) -> dict:
    m = final.get("measured") or {}
    return {"test_accuracy": final["train"]["test_accuracy"], "predicted": final["predicted"],
            "measured": {"latency_ms": m.get("latency_ms"), "onnxruntime_latency_ms": m.get("onnxruntime_latency_ms"),
                         "energy_mj": m.get("energy_mj")} if m else None,
            "onnx": final["export"]["onnx"], "train_seconds": final["train"]["seconds"]}


def derive(space, costs: CostTable, model, found: dict, budgets: list[Budget]) -> dict:
    """The found choices repaired until both the additive table and the whole-graph prediction
    meet every budget."""
    probs = [np.asarray(p, np.float64) for p in found["probs"]]
    choices = list(found["choices"])
    argmax = space.format(choices)
    margin, changes = 1.0, 0
    for _ in range(8):
        choices, n = repair(space, costs, choices, probs, budgets, margin)
        changes += n
        whole = network_cost(space, space.format(choices), model)
        worst = max((whole.get(b.metric, 0.0) / b.limit for b in budgets), default=0.0)
        if worst <= 1.0:
            break
        margin *= min(0.98, 1.0 / worst)  # the graph costs more than the table: aim lower
    return {"genotype": space.format(choices), "argmax_genotype": argmax, "repair_changes": changes,
            "additive": costs.all_of(choices), "predicted": whole,
            "meets_budgets": all(whole.get(b.metric, math.inf) <= b.limit for b in budgets)
            and satisfied(costs, choices, budgets)}
