"""``codesign search``, ``codesign train``, ``codesign export`` and ``codesign spaces``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import CodesignError
from ..files import check_output
from .common import add_ray_flags, add_space_flags, key_values, parse_shape, print_json

S = argparse.SUPPRESS

# flag -> (config field, type, help)
_FLAGS = {
    "--space": ("space", str, "search space: nb201 (default), darts, mobilenet; see `codesign spaces`"),
    "--strategy": ("strategy", str, "zero-cost (default: a training-free score, --zc-score; gdas with "
                                    "--hw-space), naswot, gdas, darts, darts2, rsws (random search with weight "
                                    "sharing), random, evolution"),
    "--data": ("data", str, "digits (default, offline), cifar10, imagefolder"),
    "--data-dir": ("data_dir", str, "folder of --data cifar10 (the CIFAR-10 python folder) or imagefolder"),
    "--device": ("device", str, "device to profile and measure on (default cpu-local; `codesign devices`), or "
                                "accel:NAME|FILE.yaml: a modelled accelerator (`codesign hw list`), no TVM"),
    "--hw-space": ("hw_space", str, "co-search: a hardware space (shipped name, e.g. eyeriss-sweep, or YAML) whose "
                                    "accelerator configs are searched together with the network"),
    "--schedule": ("schedule", str, "schedule policy of profiles and measurement: tuned (default on CPUs: "
                                    "MetaSchedule, records kept in <db>.tuning and reused), untuned (quick, 10-30x "
                                    "slower dense convs), dlight (default on GPUs) or metaschedule:N"),
    "--tune-trials": ("tune_trials", int, "mean MetaSchedule trials per kernel under the tuned policy, spread by "
                                          "each kernel's share of the space's untuned cost (default 8)"),
    "--train-device": ("train_device", str, "where the supernet and the final network train: auto (default: "
                                            "cuda when torch sees a GPU, else cpu), cpu or cuda"),
    "--db": ("db", str, "profile database (default: user cache dir or $CODESIGN_DB)"),
    "--cost-model": ("cost_model", str, "a saved cost model (from `codesign fit` or `codesign calibrate`) "
                                        "instead of profiling --device"),
    "--latency-ms": ("latency_ms", str, "latency budget: milliseconds, or a fraction of the costliest network "
                                        "like 0.5x (default 0.5x when no budget is given)"),
    "--energy-mj": ("energy_mj", str, "energy budget: millijoules, or a fraction like 0.5x"),
    "--area-mm2": ("area_mm2", str, "area budget of the accelerator (accel: devices and --hw-space): mm2, or a "
                                    "fraction of the largest config like 0.5x"),
    "--objective": ("objective", str, "what to minimise inside the budgets: none, latency, energy or edp "
                                      "(energy-delay product; the default with --hw-space, else none)"),
    "--objective-weight": ("objective_weight", float, "weight of log(objective) in the architecture loss "
                                                      "(default 0.1)"),
    "--epochs": ("epochs", int, "search epochs of gradient strategies (default 30)"),
    "--warmup-epochs": ("warmup_epochs", int, "epochs training weights only before architecture steps (default 2)"),
    "--batch-size": ("batch_size", int, "batch size (default 64)"),
    "--lr": ("lr", float, "weight learning rate, cosine schedule (default 0.05)"),
    "--arch-lr": ("arch_lr", float, "architecture learning rate, Adam (default 0.01)"),
    "--lagrange-lr": ("lagrange_lr", float, "step of the budgets' multipliers (dual ascent, default 0.5)"),
    "--tau-max": ("tau_max", float, "gdas: initial Gumbel temperature (default 10, as GDAS)"),
    "--tau-min": ("tau_min", float, "gdas: final Gumbel temperature (default 0.1, as GDAS)"),
    "--regularizer": ("regularizer", str, "darts/darts2/gdas: remedies against collapse to parameter-free cells, "
                                          "comma-separated: beta-darts, drnas, darts-minus, shrink, tunas, or none "
                                          "(default: the strategy's; see docs/search.md)"),
    "--arch-batch-size": ("arch_batch_size", int, "batch size of the architecture step (default: --batch-size)"),
    "--max-passes": ("max_passes", float, "random/evolution/naswot/zero-cost/rsws: stop after this compute, in network passes"),
    "--ws-candidates": ("ws_candidates", int, "rsws: architectures ranked with the shared weights (default 100)"),
    "--ws-eval-batches": ("ws_eval_batches", int, "rsws: validation batches of the first ranking (default 4)"),
    "--zc-score": ("zc_score", str, "zero-cost: the training-free score, or scores joined by '+' whose ranks are "
                                    "summed: naswot, synflow, params (default: synflow; docs/search.md)"),
    "--zc-pool": ("zc_pool", int, "naswot/zero-cost: designs under the budgets scored without training (default 100; with "
                                    "--max-passes and --zc-select score, as many as the compute pays for)"),
    "--zc-select": ("zc_select", str, "naswot/zero-cost: score (default: the best-scored design wins; it alone is trained "
                                      "briefly, as a check) or val (the best-scored are trained like random's "
                                      "candidates, best validation accuracy wins)"),
    "--candidates": ("candidates", int, "random/evolution/naswot/zero-cost: networks to train (default 8)"),
    "--candidate-epochs": ("candidate_epochs", int, "random/evolution/naswot/zero-cost: epochs per candidate (default 4)"),
    "--population": ("population", int, "evolution: population size (default 4)"),
    "--tournament": ("tournament", int, "evolution: tournament size (default 2)"),
    "--train-epochs": ("train_epochs", int, "epochs training the derived network from scratch (default 30)"),
    "--seed": ("seed", int, "seed of everything (default 0)"),
    "--calibrate-networks": ("calibrate_networks", int, "on a TVM device, whole networks of the space timed "
                                                        "before the search (cached in the profile database) to "
                                                        "fit the overheads the kernel sums miss; 0: off "
                                                        "(default 6, also off with --no-measure)"),
    "--compare": ("compare", str, "random: also run random search with the same compute and report both; "
                                  "sequential (with --hw-space): also design the hardware team's way, network "
                                  "on the base accelerator, then the best accelerator for it"),
    "--arch-optimizer": ("arch_optimizer", str, "adam (default) or l2o:<name or file> (a learned optimizer)"),
    "--weight-optimizer": ("weight_optimizer", str, "sgd (default) or l2o:<name or file>"),
    "--val-fraction": ("val_fraction", float, "share of the training set used as the architecture's "
                                              "validation split (default 0.5, as DARTS)"),
    "--statistic": ("profile_statistic", str, "how timed repeats become latencies, in the kernel profiles and "
                                              "the final measurement: median (default) or min"),
}


def register(sub) -> None:
    s = sub.add_parser(
        "search", help="search a network under latency/energy budgets (the main job)",
        description="Profile the space's kernels on the device (cached), fit a cost model, search the "
        "space on the dataset under the budgets, repair the result until the predictor says it meets them, "
        "train it from scratch, export ONNX, measure it with TVM, and print accuracy, predicted and "
        "measured latency and the run directory. With no flags: nb201 on digits, darts, latency <= 0.5x.",
    )
    for flag, (_field, typ, help_) in _FLAGS.items():
        s.add_argument(flag, type=typ, default=S, help=help_)
    s.add_argument("--space-arg", action="append", default=S, metavar="KEY=VALUE",
                   help="space constructor argument, e.g. c=16, cells=2, config=fbnet (repeatable)")
    s.add_argument("--regularizer-arg", action="append", default=S, metavar="NAME.KEY=VALUE",
                   help="a regularizer's setting, e.g. beta-darts.weight=2 (repeatable)")
    s.add_argument("--no-measure", action="store_true", default=S, help="skip the TVM measurement")
    s.add_argument("--run-dir", default=None, help="run directory (default runs/<time>-<space>-<strategy>-s<seed>)")
    s.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a killed run")
    s.add_argument("--json", action="store_true", help="print results.json")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    add_ray_flags(s, "train the candidates of random and evolution search (and of --compare random)")
    s.set_defaults(func=_search)

    t = sub.add_parser(
        "train", help="train a genotype (or a run's result) from scratch",
        description="Build a genotype of a space as a plain network and train it from scratch; report test "
        "accuracy and save the weights (npz + json).",
    )
    t.add_argument("genotype", help="a genotype string of --space, or a run directory (its genotype and space)")
    add_space_flags(t, space_help="search space of the genotype (default: the run's, else nb201)")
    t.add_argument("--data", default=None, help="digits (default), cifar10, imagefolder")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="weights file stem (default trained-<seed>)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_train)

    e = sub.add_parser(
        "export", help="write a genotype's network as ONNX (checked)",
        description="Export a genotype's network (with trained weights from --weights or a run directory) to "
        "ONNX opset 17, run onnx.checker and compare onnxruntime's output with PyTorch's.",
    )
    e.add_argument("genotype", help="a genotype string of --space, or a run directory")
    add_space_flags(e, space_help="search space of the genotype (default: the run's, else nb201)",
                    input_shape_help="N,C,H,W (default: the run's dataset, else 1,3,32,32)")
    e.add_argument("--num-classes", type=int, default=None)
    e.add_argument("--weights", default=None, help="weights from `codesign train --out` (stem or .npz)")
    e.add_argument("--out", required=True, help="output .onnx path")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_export)

    sp = sub.add_parser("spaces", help="list the search spaces", description="List search spaces and their size.")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_spaces)


def _search(args) -> int:
    from ..pipeline import SearchConfig, run_search

    explicit = {f: getattr(args, flag.lstrip("-").replace("-", "_"))
                for flag, (f, _t, _h) in _FLAGS.items() if hasattr(args, flag.lstrip("-").replace("-", "_"))}
    if hasattr(args, "space_arg"):
        explicit["space_args"] = key_values(args.space_arg)
    if hasattr(args, "regularizer_arg"):
        explicit["regularizer_args"] = key_values(args.regularizer_arg, "--regularizer-arg")
    if hasattr(args, "no_measure"):
        explicit["measure"] = False
    if args.resume:
        if args.run_dir and Path(args.run_dir).resolve() != Path(args.resume).resolve():
            raise CodesignError(f"--resume {args.resume} continues the run in its own directory; drop --run-dir "
                                f"{args.run_dir}")
        results = run_search(run_dir=args.resume, resume=True, overrides=explicit, quiet=args.quiet,
                             workers=args.workers, ray=args.ray)
    else:
        cfg = SearchConfig(**explicit)
        results = run_search(cfg, run_dir=args.run_dir, quiet=args.quiet, workers=args.workers, ray=args.ray)
    if args.json:
        print_json(results)
        return 0
    _print_results(results)
    return 0


def _fmt(v, unit=""):
    return "-" if v is None else f"{v:.4g}{unit}"


def _print_results(r: dict) -> None:
    p, m = r["predicted"], r.get("measured") or {}
    print(f"genotype:        {r['genotype']}")
    print(f"test accuracy:   {r['test_accuracy']:.4f} ({r['dataset']['dataset']}, {r['dataset']['test']} images)")
    for b in r["budgets"]:
        print(f"budget:          {b['metric']} <= {b['limit']:.4g} ({b['spec']})")
    if r.get("accelerator"):
        print(f"latency_ms:      predicted {_fmt(p.get('latency_ms'))}, accelerator model on the exported ONNX "
              f"{_fmt(m.get('latency_ms'))}")
        print(f"energy_mj:       predicted {_fmt(p.get('energy_mj'))}, accelerator model on the exported ONNX "
              f"{_fmt(m.get('energy_mj'))}")
    else:
        print(f"latency_ms:      predicted {_fmt(p.get('latency_ms'))}, measured TVM {_fmt(m.get('latency_ms'))} "
              f"[{r['device']}, {r['schedule']}], onnxruntime {_fmt(m.get('onnxruntime_latency_ms'))}")
        print(f"energy_mj:       predicted {_fmt(p.get('energy_mj'))}, measured {_fmt(m.get('energy_mj'))}")
    if r.get("accelerator"):
        a = r["accelerator"]
        print(f"accelerator:     {a['name']}, {a['area_mm2']:.4g} mm2, EDP {_fmt(r.get('edp_mj_ms'))} mJ*ms "
              f"(latency and energy from the accelerator model); {a['file']}")
    measured_met = r.get("budgets_met_measured")
    by_min = (r.get("budgets_measured_by") or {}).get("latency_ms") == "min"
    print(f"budgets met:     {'yes' if r['budgets_met_predicted'] else 'NO'} by the predictor"
          + ("" if measured_met is None else f", {'yes' if measured_met else 'NO'} by the measurement"
             + (" (latency by its fastest run, as the budget's anchors were timed)" if by_min else "")))
    c = r.get("compare")
    if c and c.get("strategy") == "sequential":
        if not c.get("feasible"):
            print(f"sequential:      {c['reason']}")
        else:
            print(f"sequential:      test accuracy {c['test_accuracy']:.4f}, EDP {_fmt(c.get('edp_mj_ms'))} mJ*ms, "
                  f"{c['accelerator']['name']}, {c['accelerator']['area_mm2']:.4g} mm2 ({c['genotype']})")
    elif c:
        cm = c.get("measured") or {}
        print(f"random search, same compute ({c['candidates']} networks, {c['search_passes']:.0f} passes vs "
              f"{r['search_passes']:.0f}): "
              f"test accuracy {c['test_accuracy']:.4f}, predicted {_fmt(c['predicted'].get('latency_ms'))} ms, "
              f"measured {_fmt(cm.get('latency_ms'))} ms")
    print(f"run directory:   {r['run_dir']}")
    if r.get("report"):
        print(f"report:          {r['report']}")
    elif r.get("report_error"):
        print(f"report:          not written ({r['report_error']}); try `codesign report {r['run_dir']}`")


def _genotype_source(args):
    """(space name, space args, genotype, run config or None) from a genotype string or run dir."""
    from ..pipeline.rundir import read_finished_run

    path = Path(args.genotype)
    if path.is_dir():
        cfg, genotype = read_finished_run(path)
        return (args.space or cfg.space, {**cfg.space_args, **key_values(args.space_arg)}, genotype,
                {"data": cfg.data, "data_dir": cfg.data_dir})
    return args.space or "nb201", key_values(args.space_arg), args.genotype, None


def _train(args) -> int:
    import torch

    from ..data import load_dataset
    from ..search import checkpoint as ckpt
    from ..search.train import evaluate, train_network
    from ..spaces import create_space

    for flag, v in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if v < (0 if flag == "--epochs" else 1):
            raise CodesignError(f"{flag} must be >= {0 if flag == '--epochs' else 1}, got {v}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise CodesignError(f"--lr must be a positive number, got {args.lr}")
    if args.seed < 0:
        raise CodesignError(f"--seed must be >= 0, got {args.seed}")
    stem = weights_stem(args.out or f"trained-{args.seed}", "--out")
    space_name, space_args, genotype, cfg = _genotype_source(args)
    data = args.data or (cfg["data"] if cfg else "digits")
    data_dir = args.data_dir or (cfg["data_dir"] if cfg else None)
    dataset = load_dataset(data, data_dir)
    space = create_space(space_name, input_shape=dataset.input_shape, num_classes=dataset.num_classes, **space_args)
    genotype = space.canonical(genotype)
    torch.manual_seed(args.seed)
    net = space.build(genotype)

    from .. import progress

    with progress.bar(args.epochs, "train", unit="epoch") as bar:
        fit = train_network(net, dataset.x_train, dataset.y_train, args.epochs, args.seed, args.batch_size, args.lr,
                            augment=dataset.augment,
                            progress=lambda _epoch, last: bar.update(1, loss=f"{last['loss']:.4f}",
                                                                     accuracy=f"{last['accuracy']:.4f}"))
    test = evaluate(net, dataset.x_test, dataset.y_test)
    stem.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save(stem, {"net": net.state_dict()}, {"genotype": genotype, "space": space_name, "space_args": space_args,
                                                "input_shape": list(dataset.input_shape),
                                                "num_classes": dataset.num_classes})
    report = {"genotype": genotype, "space": space_name, "dataset": dataset.describe(), **fit,
              "test_accuracy": test["accuracy"], "weights": str(stem.with_suffix(".npz"))}
    if args.json:
        print_json(report)
    else:
        print(f"test accuracy {test['accuracy']:.4f} after {args.epochs} epochs ({fit['seconds']:.1f} s); "
              f"weights {stem.with_suffix('.npz')}")
    return 0


def _export(args) -> int:
    from ..export import export_checked
    from ..search import checkpoint as ckpt
    from ..spaces import create_space

    if args.num_classes is not None and args.num_classes < 1:
        raise CodesignError(f"--num-classes must be >= 1, got {args.num_classes}")
    out = check_output(args.out, "--out")
    if out.suffix != ".onnx":
        raise CodesignError(f"--out {out} must end in .onnx")
    space_name, space_args, genotype, cfg = _genotype_source(args)
    meta, state = {}, None
    weights = args.weights
    if weights is None and cfg is not None:
        weights = str(Path(args.genotype) / "weights")
    if weights:
        stem = Path(weights)
        stem = stem.with_suffix("") if stem.suffix in (".npz", ".json") else stem
        if not ckpt.exists(stem):
            raise CodesignError(f"no weights at {stem}.npz/.json")
        state, meta = ckpt.load(stem)
        if not isinstance(state, dict) or not isinstance(state.get("net"), dict) or not isinstance(meta, dict):
            raise CodesignError(f"{stem} holds no network weights (not written by `codesign train` or a search)")
    if args.input_shape:
        shape = parse_shape(args.input_shape)
    elif meta.get("input_shape"):
        shape = tuple(meta["input_shape"])
    elif cfg is not None:
        from ..data import load_dataset

        shape = load_dataset(cfg["data"], cfg["data_dir"]).input_shape
    else:
        shape = (1, 3, 32, 32)
    num_classes = args.num_classes if args.num_classes is not None else meta.get("num_classes") or (
        len(state["net"]["classifier.bias"]) if state and "classifier.bias" in state["net"] else 10)
    space = create_space(space_name, input_shape=shape, num_classes=num_classes, **space_args)
    net = space.build(space.canonical(genotype))
    if state is not None:
        try:
            net.load_state_dict(state["net"])
        except (RuntimeError, TypeError, KeyError, AttributeError) as exc:
            detail = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()] or [str(exc)]
            raise CodesignError(f"weights do not fit the genotype's network ({detail[0][:200]})") from None
    report = export_checked(net, space.input_shape, out)
    report.update({"genotype": space.canonical(genotype), "space": space_name, "trained": state is not None})
    if args.json:
        print_json(report)
    else:
        print(f"wrote {report['onnx']} ({report['bytes']} bytes): onnx.checker ok, onnxruntime vs torch max abs "
              f"error {report['onnxruntime_max_abs_err']:.2g}")
    return 0


def weights_stem(out: str, flag: str) -> Path:
    """The stem of a weights file pair (``<stem>.npz`` + ``.json``), checked before the training."""
    stem = Path(out)
    stem = stem.with_suffix("") if stem.suffix in (".npz", ".json") else stem
    for suffix in (".npz", ".json"):
        check_output(stem.with_suffix(suffix), flag)
    return stem


def _spaces(args) -> int:
    from ..spaces import create_space, list_spaces

    rows = [create_space(n).describe() for n in list_spaces()]
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        print(f"{r['space']:<10} {r['decisions']:>3} decisions, {r['size']:.3g} networks; options: "
              f"{', '.join(r['options'])}")
    return 0
