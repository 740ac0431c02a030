"""``codesign profile`` and ``codesign devices``."""

from __future__ import annotations

from ..errors import CodesignError
from ..files import check_output
from .common import (
    add_device_flags,
    add_ray_flags,
    add_space_flags,
    add_statistic_flag,
    add_tune_trials_flag,
    key_values,
    parse_shape,
    print_json,
)


def register(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="profile kernels on a device with TVM into the profile database",
        description="Build, compile and time kernels with TVM on a device, storing one row per "
        "kernel in a SQLite profile database. Already measured kernels are skipped, so a killed "
        "run resumes where it stopped.",
    )
    src = p.add_argument_group("what to profile (one or more)")
    add_space_flags(src, space_help="every kernel the supernet of this search space runs",
                    input_shape_help="input shape N,C,H,W for --space (default: the space's own)")
    src.add_argument("--onnx", nargs="+", metavar="MODEL", default=[],
                     help="every kernel of these ONNX networks (deduplicated)")
    src.add_argument("--grid", nargs="+", metavar="OP", default=[],
                     help="a documented sampling of shapes per op (see docs/profile.md); 'all' for every op")
    src.add_argument("--grid-samples", type=int, default=50, help="kernels drawn per --grid op (default 50)")
    src.add_argument("--seed", type=int, default=0, help="seed of the grid sampling (default 0)")
    add_device_flags(p)
    add_tune_trials_flag(p)
    p.add_argument("--tuning-dir", default=None,
                   help="MetaSchedule database kept and reused across runs (default beside --db)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per kernel (default 10)")
    p.add_argument("--min-repeat-ms", type=float, default=50.0,
                   help="minimum duration of one timed repeat in ms (default 50)")
    add_statistic_flag(p)
    p.add_argument("--reference", choices=["torch"], default=None,
                   help="also time each kernel in eager PyTorch (schedule 'torch-eager')")
    p.add_argument("--retry-failed", action="store_true", help="measure kernels that failed before again")
    p.add_argument("--status", action="store_true", help="show what the database holds and exit")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_flags(p, "compile (and tune) the kernels; timing stays in this process, one kernel at a time,")
    p.set_defaults(func=_profile)

    d = sub.add_parser("devices", help="list the declared devices (TVM targets) and the modelled accelerators",
                       description="List the devices codesign profiles with TVM (shipped and user YAML files) and "
                       "the accelerators it models (`--device accel:NAME` in search; see `codesign hw list`).")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(func=_devices)


def _db_path(args):
    from ..profile.db import default_db_path

    return args.db or default_db_path()


def _status(args) -> int:
    from ..profile.db import ProfileDB

    path = _db_path(args)
    from pathlib import Path

    if not Path(path).exists():
        raise CodesignError(f"no profile database at {path}; run `codesign profile` first or pass --db")
    with ProfileDB(path, readonly=True) as db:
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
    from ..graph import onnx_kernels
    from ..profile.grid import grid_ops, grid_specs
    from ..spaces import create_space

    specs = []
    if args.space:
        space = create_space(args.space, **key_values(args.space_arg))
        shape = parse_shape(args.input_shape) if args.input_shape else None
        specs += list(space.kernels(shape) if shape else space.kernels())
    for path in args.onnx:
        specs += onnx_kernels(path)
    ops = grid_ops() if args.grid == ["all"] else args.grid
    for op in ops:
        specs += grid_specs(op, args.grid_samples, args.seed)
    return specs


def _profile(args) -> int:
    from ..distributed import check_workers, make_executor
    from ..profile.db import ProfileDB
    from ..profile.devices import get_device
    from ..profile.profiler import check_settings, profile_kernels
    from ..profile.schedules import is_tuned

    if args.status:
        return _status(args)
    check_workers(args.workers, args.ray)
    schedule = args.schedule
    if args.repeats < 1:
        raise CodesignError(f"--repeats must be >= 1, got {args.repeats}")
    if not (args.space or args.onnx or args.grid):
        raise CodesignError("nothing to profile: give --space, --onnx or --grid (or --status)")
    device = get_device(args.device)
    schedule = check_settings(device, schedule, args.repeats, args.min_repeat_ms, args.reference, args.statistic,
                              args.tune_trials)
    specs = collect_specs(args)
    if not specs:
        raise CodesignError("nothing to profile: the given --space, --onnx and --grid name no kernel")
    path = _db_path(args)
    from ..profile.db import tuning_dir_for

    tuning_dir = args.tuning_dir or str(tuning_dir_for(path))
    if args.tuning_dir or is_tuned(schedule):
        check_output(tuning_dir, "--tuning-dir", folder=True)
    executor = make_executor(args.workers, args.ray, preload=("tvm", "codesign.profile.profiler"))
    try:
        if executor is not None:
            executor.start()  # before the database exists: an unreachable cluster leaves nothing
        with ProfileDB(path) as db:
            report = profile_kernels(
                specs, device, db, schedule=schedule, repeats=args.repeats, min_repeat_ms=args.min_repeat_ms,
                reference=args.reference, retry_failed=args.retry_failed, tuning_dir=tuning_dir,
                progress=not args.no_progress, statistic=args.statistic,
                tune_trials=args.tune_trials, executor=executor,
            )
    finally:
        if executor is not None:
            executor.close()
    if args.json:
        print_json({"db": str(path), **report.to_dict()})
        return 0
    print(f"{report.requested} kernels on {report.device} [{report.schedule}]: {report.measured} measured, "
          f"{report.skipped} already in the database, {report.failed} failed "
          f"({report.wall_s:.1f} s; compile {report.compile_s:.1f} s, timing {report.timing_s:.1f} s)")
    if report.retimed:
        print(f"  {report.retimed} kernels timed while another compiled were timed again after the last compile")
    for err in report.errors[:5]:
        print(f"  failed: {err}")
    if len(report.errors) > 5:
        print(f"  ... {len(report.errors) - 5} more failures (see `codesign profile --status`)")
    print(f"database: {path}")
    return 0


def _devices(args) -> int:
    from ..hw_models import list_accelerators
    from ..profile.devices import list_devices

    devices = list_devices()
    accels = list_accelerators()
    if args.json:
        out = {n: {"kind": "tvm", "target": d.target, "rpc": d.rpc, "threads": d.threads, "energy": d.energy,
                   "roofline": d.roofline, "source": d.source} for n, d in devices.items()}
        out.update({f"accel:{n}": {"kind": "modelled", "accelerator": a.to_dict(),
                                   "energy": "model:hw_models"} for n, a in accels.items()})
        print_json(out)
        return 0
    for name, d in devices.items():
        where = f"rpc {d.rpc['host']}:{d.rpc['port']} key {d.rpc['key']}" if d.rpc else "local"
        print(f"{name:16s} {where:28s} threads {d.threads}  energy {d.energy:14s} target {d.target}")
        if d.description:
            print(f"{'':16s} {d.description}")
    for name, a in accels.items():
        print(f"{'accel:' + name:16s} {'modelled (codesign hw)':28s} {a.pe_rows}x{a.pe_cols} PEs, {a.dataflow}, "
              f"{a.glb_kib:g} KiB GLB, {a.area_mm2():.3g} mm2")
    return 0
