"""``codesign fit``, ``codesign predict``, ``codesign measure`` and ``codesign calibrate``."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..errors import CodesignError
from ..files import check_output, input_file
from ..predict.api import fit_from_profiles
from ..predict.calibrate import read_table, row_kernels
from .common import DB_HELP, add_device_flags, add_statistic_flag, add_tune_trials_flag, print_json


def _source_flags(p, what: str) -> None:
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument("--schedule", default=None,
                   help=f"schedule policy of the profiles {what} (tuned, untuned, dlight or metaschedule:<trials>; "
                   "default: the device's own, tuned on CPUs; with a saved --model, the policy the model must be of)")
    p.add_argument("--kind", default=None, help="cost model kind when fitting from profiles (default gbdt; "
                   "see `codesign fit --list`)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model fit (default 0)")


def register(sub) -> None:
    f = sub.add_parser(
        "fit", help="fit a latency/energy cost model on profiled kernels",
        description="Fit a cost model on the profile database's kernels of one device and schedule "
        "policy, report its accuracy on held-out kernels and save it as JSON or npz.",
    )
    f.add_argument("--device", default="cpu-local", help="device whose profiles to fit (default cpu-local)")
    _source_flags(f, "to fit")
    f.add_argument("--networks", default=None, metavar="CSV",
                   help="whole networks measured on the device (`codesign measure --append` writes the table; "
                        "columns as `codesign calibrate --table`): fit the per-network and per-kernel overhead "
                        "added to kernel sums")
    f.add_argument("--network-fit", choices=("auto", "overhead", "family-scale"), default="auto",
                   help="with --networks, what is fitted: overhead (a per-network constant and a per-kernel "
                        "overhead), family-scale (how much longer each op family's kernels run inside a network, "
                        "plus the per-kernel overhead; >= 4 networks); auto (default): family-scale for kernel-type "
                        "models given >= 4 networks (it predicted never-profiled networks better; docs/predict.md), "
                        "else overhead")
    f.add_argument("--out", default=None, help="where to save the model (.json or .npz; default <device>.json)")
    f.add_argument("--eval", action="store_true",
                   help="report accuracy on held-out kernels (k-fold: RMSPE, share within ±5%% and ±10%%, "
                        "Kendall tau, overall and per op family)")
    f.add_argument("--cv", type=int, default=None, metavar="K",
                   help="folds of the held-out evaluation (default 5; giving it implies --eval; 0: none)")
    f.add_argument("--list", action="store_true", help="list the cost model kinds and exit")
    a = f.add_argument_group("adaptive sampling (nn-Meter's method; see docs/predict.md)")
    a.add_argument("--adaptive", action="store_true",
                   help="sample, profile and fit kernel-type predictors in rounds, profiling more kernels where "
                        "the held-out error is worst, until --target or --budget-kernels; resumable "
                        "(implies --kind kernel-type unless --kind is given)")
    a.add_argument("--budget-kernels", type=int, default=None, metavar="N",
                   help="kernels adaptive sampling profiles in all, held-out ones included (required with --adaptive)")
    a.add_argument("--target", type=float, default=0.9,
                   help="per kernel type, the held-out share within ±10%% that ends sampling (default 0.9)")
    a.add_argument("--state", default=None,
                   help="adaptive sampling state (JSON; default <db>.adaptive-<device>-<schedule>.json); an "
                        "existing one is resumed")
    a.add_argument("--prior-onnx", nargs="+", default=[], metavar="MODEL",
                   help="networks whose kernel shapes the prior also samples around")
    a.add_argument("--exclude-onnx", nargs="+", default=[], metavar="MODEL",
                   help="networks none of whose kernels may be sampled (to evaluate on them unseen)")
    a.add_argument("--no-real-shapes", action="store_true",
                   help="do not draw around the kernels of the real networks shipped with codesign (torchvision and "
                        "timm classification networks; by default 40%% of the first draws perturb one of them)")
    a.add_argument("--kernel-types", default=None, metavar="T,T,...",
                   help="sample only these kernel types (default all; see docs/predict.md)")
    a.add_argument("--repeats", type=int, default=10, help="timed repeats per sampled kernel (default 10)")
    a.add_argument("--min-repeat-ms", type=float, default=50.0, help="minimum duration of one repeat (default 50)")
    a.add_argument("--no-progress", action="store_true",
                   help="no progress of the kernels being profiled (a bar on a terminal, a line every 10 s in a log)")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(func=_fit)

    p = sub.add_parser(
        "predict", help="predict the latency/energy of networks or kernels",
        description="Split ONNX networks into the kernels TVM runs and sum a cost model's predictions. "
        "Give a saved model (--model) or a device (--device) whose profiles are fitted on the spot.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL.onnx|TABLE.csv",
                   help="ONNX networks with static input shapes, or CSV tables listing them in an onnx_path "
                        "(or model) column, relative to the table")
    p.add_argument("--kernel", action="append", default=[], metavar="KEY", help="a kernel key to predict (repeatable)")
    p.add_argument("--model", default=None, help="saved cost model (.json/.npz from fit or calibrate)")
    p.add_argument("--device", default=None,
                   help="fit a model from this device's profiles; with --model, the device the model must be of")
    _source_flags(p, "to fit with --device")
    p.add_argument("--no-measured", action="store_true",
                   help="always use the regression, even for kernels the model has measured")
    p.add_argument("--partial", action="store_true", help="skip ONNX ops without a kernel builder (partial total)")
    p.add_argument("--per-kernel", action="store_true",
                   help="list every kernel's prediction (the default for a single network; in --json, add "
                        "kernel_keys and per_kernel_latency_ms to every item)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar for many networks")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_predict)

    m = sub.add_parser(
        "measure", help="compile and time whole ONNX networks with TVM (and onnxruntime)",
        description="Import ONNX networks into Relax, compile them with TVM for a device under a "
        "schedule policy and time them end to end; onnxruntime is timed beside on local devices.",
    )
    m.add_argument("models", nargs="+", metavar="MODEL.onnx", help="ONNX networks with static input shapes")
    add_device_flags(m, db=False)
    m.add_argument("--tuning-dir", default=None, help="MetaSchedule database kept and reused across runs "
                   "(default: the one beside the default profile database, shared with `codesign profile`)")
    add_tune_trials_flag(m)
    m.add_argument("--tuning-seed", type=int, default=0, metavar="N",
                   help="seed of MetaSchedule's search for kernels without a record (default 0); another seed "
                        "into a fresh --tuning-dir shows how much of a tuned latency is the search's luck")
    m.add_argument("--repeats", type=int, default=10, help="timed repeats (default 10)")
    m.add_argument("--min-repeat-ms", type=float, default=50.0, help="minimum duration of one repeat in ms (default 50)")
    m.add_argument("--no-onnxruntime", action="store_true", help="do not time onnxruntime beside TVM")
    add_statistic_flag(m)
    m.add_argument("--predict-with", default=None, metavar="COSTMODEL",
                   help="also print this saved cost model's prediction and its error")
    m.add_argument("--append", default=None, metavar="CSV",
                   help="append one row per network to this CSV (a calibration table); networks already "
                        "in it for this device and schedule are skipped, so a killed run resumes")
    m.add_argument("--json", action="store_true", help="print JSON")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(func=_measure)

    c = sub.add_parser(
        "calibrate", help="carry a cost model to a new device from a few measurements",
        description="Make a cost model of a device that cannot be profiled from a CSV table of networks "
        "measured on it (columns latency_ms and one of model/onnx_path, genotype (with a space column or "
        "--space) or kernel_key; `codesign measure --append` writes one). --method meta (the default without "
        "--from) adapts a prior meta-learned across many devices to the new one from its latencies on the reference "
        "networks "
        "(`--reference-set DIR` writes them, in the order to measure and list them); --method scale fits "
        "per-op-family scales and a per-kernel overhead onto a known device's model (--from; the default with it).",
    )
    c.add_argument("--method", choices=("meta", "scale"), default=None,
                   help="meta: meta-learned few-shot transfer from the reference networks (the default without "
                        "--from); scale: per-family scaling of the --from model (the default with --from)")
    c.add_argument("--reference-set", default=None, metavar="DIR",
                   help="write the reference networks (ONNX), their list and a table to fill in to DIR, and exit")
    c.add_argument("--from", dest="base", default=None,
                   help="--method scale: base, a saved cost model file or a device name whose profiles are fitted now")
    c.add_argument("--bank", default=None, metavar="SQLITE",
                   help="--method meta: meta-train the prior on this latency bank (benchmarks/fewshot.py builds "
                        "one) and the modelled accelerators, instead of the prior shipped with codesign")
    c.add_argument("--table", default=None, help="CSV of measurements on the new device")
    c.add_argument("--as", dest="new_device", default=None, help="name of the new device")
    c.add_argument("--space", default=None,
                   help="search space of genotype rows that have no space column (see `codesign spaces`)")
    c.add_argument("--rows", type=int, default=None, help="use only the first N rows (default all)")
    c.add_argument("--prior", type=float, default=0.05,
                   help="--method scale: strength of the pull of every family's scale towards the common one "
                        "(default 0.05)")
    c.add_argument("--eval-table", default=None, help="CSV of further measurements to report accuracy on")
    _source_flags(c, "when --from names a device")
    c.add_argument("--out", default=None, help="where to save the model (.json or .npz; default <new device>.json)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=_calibrate)


def _fit(args) -> int:
    from ..predict.models import list_cost_models

    if args.list:
        print("\n".join(list_cost_models()))
        return 0
    folds = 5 if args.cv is None else args.cv
    if folds == 1 or folds < 0:
        raise CodesignError("--cv must be 0 (none) or at least 2 folds")
    evaluate = folds > 0 and (args.eval or args.cv is not None)
    args.kind = args.kind or ("kernel-type" if args.adaptive else "gbdt")
    if not args.adaptive and (args.budget_kernels is not None or args.state or args.prior_onnx or args.exclude_onnx
                              or args.no_real_shapes):
        raise CodesignError("--budget-kernels, --state, --prior-onnx, --exclude-onnx and --no-real-shapes go with "
                            "--adaptive")
    out = model_path(args.out, args.device, "--device")
    rows = read_table(args.networks) if args.networks else None
    if rows is None and args.network_fit != "auto":
        raise CodesignError("--network-fit goes with --networks (the measured networks it fits on)")
    network_kernels = None
    if rows is not None:
        # Checked before any kernel is profiled or fitted: a bad table loses no work.
        if args.network_fit == "auto":
            args.network_fit = "family-scale" if args.kind == "kernel-type" and len(rows) >= 4 else "overhead"
        need = 4 if args.network_fit == "family-scale" else 2
        if len(rows) < need:
            raise CodesignError(f"{args.networks}: --network-fit {args.network_fit} needs at least {need} measured "
                                f"networks; the table has {len(rows)}")
        network_kernels = [row_kernels(r) for r in rows]
    if args.adaptive:
        _fit_adaptive(args)
    model, records = fit_from_profiles(args.device, args.db, args.schedule, args.kind, args.seed)
    report = {"device": model.device, "schedule": model.schedule, "kind": model.kind, "kernels": model.n_train,
              "energy": model.energy_source}
    if args.adaptive:
        report["adaptive"] = args.adaptive_report
    if rows is not None:
        model.fit_overhead(network_kernels, [r["latency_ms"] for r in rows],
                           per_family=args.network_fit == "family-scale")
        report.update(networks=len(rows), network_fit=args.network_fit, overhead_ms=model.overhead_ms,
                      per_kernel_overhead_ms=model.per_kernel_overhead_ms, family_scales=model.family_scales,
                      network_log_interval=model.network_log_interval)
    if evaluate:
        from ..predict.evaluate import cross_validate

        if len(records) < 2 * folds:
            raise CodesignError(f"{len(records)} measured kernels are too few for {folds}-fold evaluation; "
                                "profile more kernels or pass a smaller --cv")
        report["cross_validation"] = cross_validate(args.kind, records, folds=folds, seed=args.seed)
    out = model.save(out)
    report["saved"] = str(out)
    if args.json:
        print_json(report)
        return 0
    print(f"fitted {model.kind} on {model.n_train} kernels of {model.device} [{model.schedule}]"
          f"; energy: {model.energy_source or 'none in the profiles'}")
    if args.networks and model.family_scales is not None:
        scales = ", ".join(f"{f} {w:.3g}" for f, w in model.family_scales.items())
        print(f"in-network scale per op family from {report['networks']} measured networks: {scales}; "
              f"+ {model.per_kernel_overhead_ms:.4g} ms per kernel")
    elif args.networks:
        print(f"network overhead from {report['networks']} measured networks: {model.overhead_ms:.4g} ms + "
              f"{model.per_kernel_overhead_ms:.4g} ms per kernel")
    if args.networks:
        from ..predict.models import conformal_min_networks

        level = model.interval_level()
        if model.network_log_interval is not None:
            lo, hi = (math.exp(v) for v in model.network_log_interval)
            print(f"a network's {level:.0%} interval: x{lo:.3g} to x{hi:.3g} of its prediction (each measured "
                  "network predicted from the others)")
        else:
            print(f"a network's interval: its kernels' bounds added ({conformal_min_networks(level)} measured "
                  f"networks or more give one from the networks themselves)")
    if args.adaptive:
        ad = report["adaptive"]
        print(f"adaptive sampling: {ad['profiled']} of {ad['budget_kernels']} kernels sampled in {ad['rounds']} rounds; "
              f"held-out target ±10% for {ad['target_within_10pct']:.0%} of kernels "
              f"{'met' if ad['met'] else 'not met'} (state {ad['state']})")
        print(f"  {'kernel type':16s} {'n':>5s} {'RMSPE':>7s} {'±10%':>5s}")
        for t, acc in ad["by_type"].items():
            print(f"  {t:16s} {acc['n']:5d} {acc['rmspe']:7.1%} {acc['within_10pct']:5.0%}")
    if evaluate:
        cv = report["cross_validation"]
        print(f"held-out kernels ({folds}-fold, their measurements unseen):")
        print(f"  {'family':16s} {'n':>5s} {'RMSPE':>7s} {'±5%':>5s} {'±10%':>5s} {'tau':>6s}")
        for name, acc in [("all", cv["overall"])] + sorted(cv["by_family"].items()):
            print(f"  {name:16s} {acc['n']:5d} {acc['rmspe']:7.1%} {acc['within_5pct']:5.0%} "
                  f"{acc['within_10pct']:5.0%} {acc['kendall_tau']:6.3f}")
    print(f"saved {out}")
    return 0


def model_path(out: str | None, name: str, flag: str) -> Path:
    """Where a fitted or calibrated model goes: ``--out``, else ``<name>.json`` here; checked before
    the work (``name`` must then be a plain device name, not a path)."""
    from ..profile.devices import check_device_name

    if out is None:
        out = f"{check_device_name(name, flag)}.json"
    path = check_output(out, "--out")
    if path.suffix not in (".json", ".npz"):
        raise CodesignError(f"cost model path {path} must end in .json or .npz")
    return path


def _fit_adaptive(args) -> None:
    """Adaptive sampling into the database; the fit that follows reads what it profiled."""
    from ..graph import onnx_kernels
    from ..predict.adaptive import (
        SAMPLE_TYPES,
        adaptive_sample,
        real_network_kernels,
        reference_kernels,
    )
    from ..predict.models import list_cost_models
    from ..profile.db import ProfileDB, default_db_path
    from ..profile.devices import get_device
    from ..profile.profiler import profile_kernels
    from ..profile.schedules import check_schedule_for_target, default_schedule, parse_schedule

    if args.budget_kernels is None:
        raise CodesignError("--adaptive needs --budget-kernels N (kernels to profile in all)")
    if args.kind not in list_cost_models():
        raise CodesignError(f"unknown cost model {args.kind!r}; known: {', '.join(list_cost_models())}")
    if args.repeats < 1 or args.min_repeat_ms < 0:
        raise CodesignError("--repeats must be >= 1 and --min-repeat-ms >= 0")
    for p in args.prior_onnx + args.exclude_onnx:
        if not Path(p).exists():
            raise CodesignError(f"no ONNX file at {p}")
    types = [t.strip() for t in args.kernel_types.split(",") if t.strip()] if args.kernel_types else list(SAMPLE_TYPES)
    unknown = sorted(set(types) - set(SAMPLE_TYPES))
    if unknown:
        raise CodesignError(f"unknown kernel type(s) {', '.join(unknown)}; known: {', '.join(SAMPLE_TYPES)}")
    device = get_device(args.device)
    schedule = args.schedule or default_schedule(device.target)
    parse_schedule(schedule)
    check_schedule_for_target(schedule, device.target, device.name)
    exclude = {s.key() for p in args.exclude_onnx for s in onnx_kernels(p)}
    references = reference_kernels(args.prior_onnx)
    real = [] if args.no_real_shapes else real_network_kernels()
    path = Path(args.db) if args.db else default_db_path()
    state = args.state or f"{path}.adaptive-{device.name}-{schedule.replace(':', '-')}.json"
    tuning_dir = str(path) + ".tuning"
    with ProfileDB(path) as db:
        def profile(specs):
            # Tuned samples get the same trials each, as `codesign measure` tunes the kernels of a
            # network it has no records of: the networks this predictor is for.
            profile_kernels(specs, device, db, schedule=schedule, repeats=args.repeats,
                            min_repeat_ms=args.min_repeat_ms, tuning_dir=tuning_dir,
                            progress=not args.no_progress, trial_split="flat")

        def measured():
            return {m.kernel_key: m for m in db.query(device=device.name, schedule=schedule)}

        _, report = adaptive_sample(
            profile, measured, args.budget_kernels, state, identity={"device": device.name, "schedule": schedule},
            seed=args.seed, target_within_10pct=args.target, references=references, exclude_keys=exclude, types=types,
            real=real, kind=args.kind, log=lambda line: print(line, file=sys.stderr, flush=True))
    args.schedule = schedule
    args.adaptive_report = report.to_dict()
    args.adaptive_report["state"] = str(state)


def _load_or_fit(args):
    from ..predict.models import load_cost_model

    if args.model:
        return load_cost_model(args.model, device=args.device, schedule=args.schedule)
    if args.device:
        return fit_from_profiles(args.device, args.db, args.schedule, args.kind, args.seed)[0]
    raise CodesignError("give a saved cost model (--model PATH) or a profiled device (--device NAME)")


def _networks(args) -> list[Path]:
    from ..predict.api import read_model_table

    out: list[Path] = []
    for item in args.models:
        out += read_model_table(item) if str(item).lower().endswith(".csv") else [Path(item)]
    return out


def _predict(args) -> int:
    from ..kernelspec import KernelSpec
    from ..predict.api import predict_networks

    if not args.models and not args.kernel:
        raise CodesignError("nothing to predict: give ONNX files, CSV tables of them and/or --kernel KEY")
    networks = [input_file(path, "ONNX file") for path in _networks(args)]
    model = _load_or_fit(args)
    items = predict_networks(model, networks, allow_partial=args.partial, use_measured=not args.no_measured,
                             progress=not args.no_progress and not args.json)
    for key in args.kernel:
        spec = KernelSpec.from_key(key)
        res = model.predict_network([spec], use_measured=not args.no_measured)
        res.update(name=key, skipped_ops=[], kernel_keys=[key])
        items.append(res)
    per_kernel = args.per_kernel or len(items) == 1
    if args.json:
        if not per_kernel:
            items = [{k: v for k, v in it.items() if k not in ("kernel_keys", "per_kernel_latency_ms")} for it in items]
        print_json({"device": model.device, "schedule": model.schedule, "model_kind": model.kind, "items": items})
        return 0
    print(f"# {model.kind} cost model of {model.device} [{model.schedule}]")
    if per_kernel:
        for it in items:
            print(f"{it['name']}:")
            print(f"  {'latency_ms':>10s}  kernel")
            for key, v in zip(it["kernel_keys"], it["per_kernel_latency_ms"]):
                print(f"  {v:10.4f}  {key}")
            overhead = it["latency_ms"] - sum(it["per_kernel_latency_ms"])
            if overhead:
                # the fitted network terms: overheads, and what in-network scales add (or take off)
                print(f"  {overhead:10.4f}  (network terms: overhead and in-network scaling)")
            energy = f", {it['energy_mj']:.4g} mJ" if it["energy_mj"] is not None else ""
            interval = it.get("latency_interval_ms")
            span = f" [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else ""
            print(f"  total {it['latency_ms']:.4g} ms{span}{energy} ({it['kernels']} kernels, {it['measured_kernels']} "
                  "measured)" + (f"; skipped ops: {', '.join(it['skipped_ops'])}" if it["skipped_ops"] else ""))
            for flag in it.get("out_of_range", []):
                print(f"  outside the sampled range: {flag['kernel']} ({'; '.join(flag['reasons'])})")
        return 0
    width = max(len("network"), *(len(it["name"]) for it in items))
    print(f"{'network':{width}s}  {'latency_ms':>10s}  {'interval_ms':>19s}  {'energy_mj':>10s}  {'kernels':>7s}  "
          f"{'measured':>8s}  {'outside':>7s}  skipped")
    for it in items:
        energy = f"{it['energy_mj']:10.4g}" if it["energy_mj"] is not None else f"{'-':>10s}"
        iv = it.get("latency_interval_ms")
        span = f"{iv[0]:9.4g}-{iv[1]:<9.4g}" if iv else f"{'-':>19s}"
        print(f"{it['name']:{width}s}  {it['latency_ms']:10.4g}  {span}  {energy}  {it['kernels']:7d}  "
              f"{it['measured_kernels']:8d}  {len(it.get('out_of_range', [])):7d}  {','.join(it['skipped_ops']) or '-'}")
    if any(it.get("out_of_range") for it in items):
        print("# outside: kernels outside the sampled range of the model (its regression extrapolates); "
              "--per-kernel lists them")
    return 0


def _measure(args) -> int:
    from ..graph import load_model, onnx_kernels
    from ..predict.models import load_cost_model
    from ..profile.devices import get_device
    from ..profile.measure import MeasureTable, measure_network
    from ..profile.profiler import check_settings

    device = get_device(args.device)
    args.schedule = check_settings(device, args.schedule, args.repeats, args.min_repeat_ms, statistic=args.statistic,
                                   tune_trials=args.tune_trials)
    if not 0 <= args.tuning_seed < 2**31:
        raise CodesignError(f"--tuning-seed must be an integer in [0, 2^31), got {args.tuning_seed}")
    for path in args.models:
        load_model(input_file(path, "ONNX file"))  # every network is readable before the first is compiled
    cost_model = (load_cost_model(args.predict_with, device=device.name, schedule=args.schedule)
                  if args.predict_with else None)
    table = MeasureTable(args.append, device.name, args.schedule, args.statistic) if args.append else None
    if args.tuning_dir:
        check_output(args.tuning_dir, "--tuning-dir", folder=True)
    from .. import progress

    # Compiling and timing one network takes seconds to minutes: a line per network in a log.
    bar = progress.bar(len(args.models), f"measure {device.name} [{args.schedule}]", unit="net",
                       enabled=not args.no_progress and len(args.models) > 1)
    done = table.done if table is not None else {}
    results = []
    for path in args.models:
        if path in done:
            results.append(done[path])
            bar.update(1)
            continue
        r = measure_network(path, device, args.schedule, args.repeats, args.min_repeat_ms, args.tuning_dir,
                            onnxruntime=not args.no_onnxruntime, statistic=args.statistic,
                            tune_trials=args.tune_trials, progress=not args.no_progress,
                            tuning_seed=args.tuning_seed).to_dict()
        r["model"] = path
        results.append(r)
        if table is not None:
            table.append(r)
        bar.update(1)
    bar.close()
    if cost_model is not None:
        for path, r in zip(args.models, results):
            pred = cost_model.predict_network(onnx_kernels(path))["latency_ms"]
            r["predicted_latency_ms"] = pred
            r["predicted_over_measured"] = pred / r["latency_ms"]
    if args.json:
        print_json(results)
        return 0
    for r in results:
        line = f"{r['model']}: {r['latency_ms']:.4g} ms ±{r['latency_std_ms']:.2g} on {r['device']} [{r['schedule']}]"
        if r.get("onnxruntime_latency_ms") is not None:
            line += f"; onnxruntime {r['onnxruntime_latency_ms']:.4g} ms (TVM/ORT {r['tvm_over_onnxruntime']:.2f}x)"
        if "predicted_latency_ms" in r:
            line += f"; predicted {r['predicted_latency_ms']:.4g} ms ({r['predicted_over_measured']:.2f}x)"
        print(line)
    return 0


def _calibrate(args) -> int:
    from ..predict.calibrate import calibrate, check_new_device, check_prior
    from ..predict.evaluate import accuracy
    from ..predict.features import FAMILIES
    from ..predict.models import load_cost_model

    if args.reference_set is not None:
        return _reference_set(args)
    if args.table is None or args.new_device is None:
        raise CodesignError("calibrate needs --table CSV and --as NEW_DEVICE (or --reference-set DIR)")
    if args.method is None:  # --from names a base, which only the scale method has
        args.method = "scale" if args.base is not None else "meta"
    if args.method == "meta":
        return _calibrate_meta(args)
    if args.base is None:
        raise CodesignError("--method scale needs --from (a saved cost model or a profiled device)")
    if args.bank is not None:
        raise CodesignError("--bank goes with --method meta")
    check_prior(args.prior)
    if args.rows is not None and args.rows < 1:
        raise CodesignError("--rows must be >= 1")
    base_path = Path(args.base)
    out = model_path(args.out, args.new_device, "--as")
    if base_path.exists() and out.exists() and out.resolve() == base_path.resolve():
        raise CodesignError(f"the calibrated model would overwrite its base {base_path}; pass --out or another --as")
    from_file = base_path.suffix in (".json", ".npz") or base_path.exists()
    base = load_cost_model(base_path) if from_file else None
    rows = read_table(args.table, space=args.space)[: args.rows]
    ev = read_table(args.eval_table, space=args.space) if args.eval_table else None
    check_new_device(args.new_device, base.device if base is not None else args.base)
    if base is None:  # fitting the base is work: after every input is checked
        base = fit_from_profiles(args.base, args.db, args.schedule, args.kind, args.seed)[0]
    model = calibrate(base, rows, args.new_device, prior=args.prior)
    out = model.save(out)
    report = {"base_device": base.device, "device": args.new_device, "rows": len(rows), "saved": str(out),
              "per_kernel_overhead_ms": model.per_kernel_overhead_ms,
              "weights": dict(zip(FAMILIES, [float(w) for w in model.heads["latency_ms"]["weights"]]))}
    if ev is not None:
        kernels = [row_kernels(r) for r in ev]
        meas = [r["latency_ms"] for r in ev]
        report["eval"] = {
            "calibrated": accuracy([model.predict_network(k)["latency_ms"] for k in kernels], meas),
            "base_uncalibrated": accuracy([base.predict_network(k)["latency_ms"] for k in kernels], meas),
        }
    if args.json:
        print_json(report)
        return 0
    print(f"calibrated {base.device} -> {args.new_device} on {len(rows)} rows; per-kernel overhead "
          f"{model.per_kernel_overhead_ms:.4g} ms; saved {out}")
    if "eval" in report:
        for name, acc in report["eval"].items():
            print(f"  {name} on {acc['n']} eval rows: Kendall tau {acc['kendall_tau']:.3f}, within ±10% "
                  f"{acc['within_10pct']:.0%}, median error {acc['median_ape']:.1%}")
    return 0


def _reference_source(args):
    """(reference entries, space, bank data or None, prior or None): from --bank or the shipped prior."""
    from ..predict.fewshot import PRIOR_PATH, Prior, read_bank

    if args.bank is not None:
        data = read_bank(input_file(args.bank, "latency bank"))
        return data.entries, data.space, data, None
    prior = Prior.load(PRIOR_PATH)
    return prior.reference, prior.space, None, prior


def _reference_set(args) -> int:
    from ..predict.fewshot import write_reference_set

    if args.table or args.new_device or args.base:
        raise CodesignError("--reference-set DIR writes the reference networks and exits: drop --table, --as and --from")
    out = check_output(args.reference_set, "--reference-set", folder=True)
    reference, space, _, _ = _reference_source(args)
    report = write_reference_set(out, reference, space)
    if args.json:
        print_json(report)
        return 0
    print(f"wrote {len(report['networks'])} reference networks to {out}: time them on the new device in this order "
          f"(at least the first {report['min_rows']}), fill latency_ms in {report['table']} and run "
          f"`codesign calibrate --table {report['table']} --as NAME`")
    return 0


def _calibrate_meta(args) -> int:
    from ..predict.calibrate import check_new_device
    from ..predict.evaluate import accuracy
    from ..predict.fewshot import (
        MIN_SELECT_ROWS,
        calibrate_meta,
        check_row_count,
        check_rows,
        meta_train_bank,
    )

    if args.base is not None:
        raise CodesignError("--from is the base of --method scale; --method meta needs none (drop --from or "
                            "--method meta)")
    if args.rows is not None and args.rows < 1:
        raise CodesignError("--rows must be >= 1")
    out = model_path(args.out, args.new_device, "--as")
    check_new_device(args.new_device, "")
    rows = read_table(args.table, space=args.space)[: args.rows]
    ev = read_table(args.eval_table, space=args.space) if args.eval_table else None
    check_row_count(len(rows))
    for where, table in (("--table", rows), ("--eval-table", ev or [])):
        if any("kernel_key" in r for r in table):
            raise CodesignError(f"{where}: --method meta needs whole networks (model/onnx_path or genotype rows), "
                                "not kernel_key rows")
    reference, _, bank, prior = _reference_source(args)
    kernels = [row_kernels(r) for r in rows]
    own = check_rows(rows, kernels, reference)
    if bank is not None:  # meta-training is work: after every input is checked
        prior = meta_train_bank(bank)
    measured = [r["latency_ms"] for r in rows]
    model = calibrate_meta(prior, kernels, measured, args.new_device,
                           [] if own else [e["genotype"] for e in prior.reference])
    out = model.save(out)
    report = {"method": "meta", "device": args.new_device, "rows": len(rows),
              "networks": "own" if own else "reference set", "saved": str(out),
              "prior_sources": len(prior.sources), "prior": args.bank or "shipped", "adaptation": model.adaptation}
    if ev is not None:
        ev_kernels = [row_kernels(r) for r in ev]
        report["eval"] = {"meta": accuracy([model.predict_network(k)["latency_ms"] for k in ev_kernels],
                                           [r["latency_ms"] for r in ev])}
    if args.json:
        print_json(report)
        return 0
    print(f"adapted the meta-learned prior ({len(prior.sources)} source devices) to {args.new_device} on "
          f"{len(rows)} {'of your own networks' if own else 'reference networks'}; saved {out}")
    a = model.adaptation
    how = "chosen on these rows, leaving one out" if a["chosen_on_rows"] else \
        f"the prior's own: {MIN_SELECT_ROWS} rows or more choose them"
    print(f"  adaptation: noise {a['noise']}, shrinkage {a['shrink']}, temperature {a['temperature']} ({how})")
    if "eval" in report:
        acc = report["eval"]["meta"]
        print(f"  on {acc['n']} eval rows: Kendall tau {acc['kendall_tau']:.3f}, within ±10% "
              f"{acc['within_10pct']:.0%}, median error {acc['median_ape']:.1%}")
    return 0
