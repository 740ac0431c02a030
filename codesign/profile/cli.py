"""``codesign profile`` and ``codesign devices``."""

from __future__ import annotations

import importlib
import sys

from ..errors import CodesignError


def register(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="profile kernels on a device with TVM into the profile database",
        description="Build, compile and time kernels with TVM on a device, storing one row per "
        "kernel in a SQLite profile database. Already measured kernels are skipped, so a killed "
        "run resumes where it stopped.",
    )
    src = p.add_argument_group("what to profile (one or more)")
    src.add_argument("--space", help="every kernel the supernet of this search space runs")
    src.add_argument("--space-arg", action="append", default=[], metavar="KEY=INT",
                     help="a constructor argument of the space, e.g. c=16 or layers=8 (repeatable)")
    src.add_argument("--input-shape", default=None,
                     help="input shape N,C,H,W for --space (default: the space's own)")
    src.add_argument("--onnx", nargs="+", metavar="MODEL", default=[],
                     help="every kernel of these ONNX networks (deduplicated)")
    src.add_argument("--grid", nargs="+", metavar="OP", default=[],
                     help="a documented sampling of shapes per op (see docs/profile.md); 'all' for every op")
    src.add_argument("--grid-samples", type=int, default=50, help="kernels drawn per --grid op (default 50)")
    src.add_argument("--seed", type=int, default=0, help="seed of the grid sampling (default 0)")
    p.add_argument("--device", default="cpu-local", help="device name or YAML file (default cpu-local)")
    p.add_argument("--db", default=None, help="profile database (default: user cache dir, or $CODESIGN_DB)")
    p.add_argument("--schedule", default=None,
                   help="untuned (no schedule: quick, 10-30x slower than tuned for dense convs; CPU "
                        "only), dlight (TVM's rule-based schedules) or metaschedule (tuned; see "
                        "--tune-trials, default 64 trials). Default: untuned on a CPU, dlight on a GPU")
    p.add_argument("--tune-trials", type=int, default=None,
                   help="MetaSchedule trials per kernel; implies --schedule metaschedule")
    p.add_argument("--tuning-dir", default=None,
                   help="MetaSchedule database kept and reused across runs (default beside --db)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per kernel (default 10)")
    p.add_argument("--min-repeat-ms", type=float, default=50.0,
                   help="minimum duration of one timed repeat in ms (default 50)")
    p.add_argument("--reference", choices=["torch"], default=None,
                   help="also time each kernel in eager PyTorch (schedule 'torch-eager')")
    p.add_argument("--retry-failed", action="store_true", help="measure kernels that failed before again")
    p.add_argument("--status", action="store_true", help="show what the database holds and exit")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_profile)

    d = sub.add_parser("devices", help="list the declared devices")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(func=_devices)


def _db_path(args):
    from .db import default_db_path

    return args.db or default_db_path()


def _status(args) -> int:
    from ..cli import print_json
    from .db import ProfileDB

    path = _db_path(args)
    from pathlib import Path

    if not Path(path).exists():
        raise CodesignError(f"no profile database at {path}; run `codesign profile` first or pass --db")
    with ProfileDB(path) as db:
        rows = db.status()
    if args.json:
        print_json({"db": str(path), "groups": rows})
        return 0
    print(f"profile database: {path}")
    if not rows:
        print("  (empty)")
    for r in rows:
        mean = f"{r['mean_latency_ms']:.4f} ms" if r["mean_latency_ms"] is not None else "-"
        print(f"  {r['device']:14s} {r['schedule']:18s} {r['op']:18s} {r['rows']:6d} kernels  "
              f"{r['failed']:4d} failed  mean {mean}")
    return 0


def collect_specs(args) -> list:
    """KernelSpecs named by --space, --onnx and --grid."""
    from ..kernelspec import OPS
    from .grid import grid_specs

    specs = []
    if args.space:
        try:
            spaces = importlib.import_module("codesign.spaces")
        except ModuleNotFoundError as exc:
            raise CodesignError("--space needs codesign.spaces, which this installation lacks") from exc
        kwargs = {}
        for item in args.space_arg:
            key, _, value = item.partition("=")
            if not key or not value.lstrip("-").isdigit():
                raise CodesignError(f"--space-arg must be KEY=INT, got {item!r}")
            kwargs[key] = int(value)
        try:
            space = spaces.create_space(args.space, **kwargs)
        except TypeError as exc:
            raise CodesignError(f"--space-arg: {exc}") from exc
        shape = None
        if args.input_shape:
            try:
                shape = tuple(int(v) for v in args.input_shape.split(","))
            except ValueError as exc:
                raise CodesignError(f"--input-shape must be N,C,H,W integers, got {args.input_shape!r}") from exc
        specs += list(space.kernels(shape) if shape else space.kernels())
    for path in args.onnx:
        try:
            graph = importlib.import_module("codesign.predict.graph")
        except ModuleNotFoundError as exc:
            raise CodesignError("--onnx needs codesign.predict.graph, which this installation lacks") from exc
        specs += graph.onnx_kernels(path)
    ops = sorted(OPS) if args.grid == ["all"] else args.grid
    for op in ops:
        specs += grid_specs(op, args.grid_samples, args.seed)
    return specs


def _profile(args) -> int:
    from ..cli import print_json
    from .db import ProfileDB
    from .devices import get_device
    from .profiler import profile_kernels

    if args.status:
        return _status(args)
    schedule = args.schedule
    if args.tune_trials is not None:
        if args.tune_trials < 1:
            raise CodesignError(f"--tune-trials must be >= 1, got {args.tune_trials}")
        schedule = f"metaschedule:{args.tune_trials}"
    elif schedule == "metaschedule":
        schedule = "metaschedule:64"
    if args.repeats < 1:
        raise CodesignError(f"--repeats must be >= 1, got {args.repeats}")
    if not (args.space or args.onnx or args.grid):
        raise CodesignError("nothing to profile: give --space, --onnx or --grid (or --status)")
    device = get_device(args.device)
    specs = collect_specs(args)
    path = _db_path(args)
    from .db import tuning_dir_for

    tuning_dir = args.tuning_dir or str(tuning_dir_for(path))
    with ProfileDB(path) as db:
        report = profile_kernels(
            specs, device, db, schedule=schedule, repeats=args.repeats, min_repeat_ms=args.min_repeat_ms,
            reference=args.reference, retry_failed=args.retry_failed, tuning_dir=tuning_dir,
            progress=not args.no_progress and sys.stderr.isatty() or False,
        )
    if args.json:
        print_json({"db": str(path), **report.to_dict()})
        return 0
    print(f"{report.requested} kernels on {report.device} [{report.schedule}]: {report.measured} measured, "
          f"{report.skipped} already in the database, {report.failed} failed "
          f"({report.wall_s:.1f} s; compile {report.compile_s:.1f} s, timing {report.timing_s:.1f} s)")
    for err in report.errors[:5]:
        print(f"  failed: {err}")
    if len(report.errors) > 5:
        print(f"  ... {len(report.errors) - 5} more failures (see `codesign profile --status`)")
    print(f"database: {path}")
    return 0


def _devices(args) -> int:
    from ..cli import print_json
    from .devices import list_devices

    devices = list_devices()
    if args.json:
        print_json({n: {"target": d.target, "rpc": d.rpc, "threads": d.threads, "energy": d.energy,
                        "roofline": d.roofline, "source": d.source} for n, d in devices.items()})
        return 0
    for name, d in devices.items():
        where = f"rpc {d.rpc['host']}:{d.rpc['port']} key {d.rpc['key']}" if d.rpc else "local"
        print(f"{name:16s} {where:28s} threads {d.threads}  energy {d.energy:14s} target {d.target}")
        if d.description:
            print(f"{'':16s} {d.description}")
    return 0
