"""``codesign hw``: the analytical accelerator model and device rooflines.

    codesign hw list                                    accelerators and rooflines codesign ships
    codesign hw show eyeriss-like [--set k=v]           one config, its energy and area tables
    codesign hw eval --accel eyeriss-like --onnx m.onnx per-layer and total latency/energy/area
    codesign hw roofline-check --db p.sqlite --device cpu-local
    codesign hw validate                                AlexNet CONV layers against Eyeriss's figures
"""

from __future__ import annotations

import math
import sys

import yaml

from ..errors import CodesignError
from .common import add_device_flags, print_json


def register(sub) -> None:
    hw = sub.add_parser(
        "hw", help="analytical accelerator model (Eyeriss-style template) and device rooflines",
        description="Latency, energy and area of networks on an accelerator template (PE array, register "
        "files, global buffer, DRAM; weight-, output- or row-stationary dataflow), device rooflines, and "
        "the model's validation. See docs/hw_models.md.",
    )
    hsub = hw.add_subparsers(dest="hw_command", metavar="SUBCOMMAND")
    hw.set_defaults(func=lambda args: (hw.print_help(), 0)[1])

    ls = hsub.add_parser("list", help="list the accelerator configs and rooflines codesign ships",
                         description="List the accelerator configs (hw_models/configs/accel-*.yaml) and device "
                         "rooflines (roofline-*.yaml) codesign ships.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)

    sh = hsub.add_parser("show", help="show one accelerator config with its energy and area tables",
                         description="Print an accelerator config (shipped name or YAML file) after --set "
                         "overrides, with its energy table (pJ per action) and area (mm2).")
    sh.add_argument("accel", help="shipped accelerator name or YAML file")
    _set_flag(sh)
    sh.add_argument("--yaml", action="store_true", help="print the resolved config as a YAML file (format 1)")
    sh.add_argument("--json", action="store_true", help="print JSON")
    sh.set_defaults(func=_show)

    ev = hsub.add_parser(
        "eval", help="latency, energy and area of a network or kernels on an accelerator",
        description="Split a network into kernels, map every kernel on the accelerator (best loop tiling by "
        "energy-delay product) and print each layer's cycles, latency, energy by level and PE utilisation, "
        "with the totals. Layers that cannot map are reported as infeasible.",
    )
    ev.add_argument("--accel", required=True, help="shipped accelerator name (see `codesign hw list`) or YAML file")
    ev.add_argument("--onnx", default=None, metavar="MODEL.onnx", help="ONNX network with static input shapes")
    ev.add_argument("--kernel", action="append", default=[], metavar="KEY",
                    help="a kernel key (as in profile databases) to evaluate; repeatable")
    _set_flag(ev)
    ev.add_argument("--python", action="store_true", help="use the plain-Python reference instead of numba")
    ev.add_argument("--json", action="store_true", help="print JSON (totals and every layer)")
    ev.set_defaults(func=_eval)

    rc = hsub.add_parser(
        "roofline-check", help="check that no measured kernel beats its device's roofline",
        description="Compare every measured kernel of a device in a profile database with the roofline "
        "bound (per-kernel overhead + max(FLOPs / peak, bytes / bandwidth)). Exit status 1 if any kernel "
        "ran faster than the bound (a wrong roofline or a wrong measurement).",
    )
    add_device_flags(rc, device_help="device whose kernels to check (default cpu-local)", db=False,
                     schedule_help="only this schedule policy (default: every one)")
    rc.add_argument("--db", required=True, help="profile database (from `codesign profile`)")
    rc.add_argument("--roofline", default=None, help="roofline name or YAML (default: the device's own)")
    rc.add_argument("--json", action="store_true", help="print JSON")
    rc.set_defaults(func=_roofline_check)

    va = hsub.add_parser(
        "validate", help="compare the model with the Eyeriss papers' AlexNet figures",
        description="Run AlexNet's CONV layers through the model: the dataflow ranking and energy ratios "
        "at equal area (Eyeriss, ISCA 2016) and the eyeriss-like chip's throughput, DRAM accesses per MAC "
        "and power (Eyeriss, JSSC 2017).",
    )
    va.add_argument("--json", action="store_true", help="print JSON")
    va.set_defaults(func=_validate)


def _set_flag(p) -> None:
    p.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                   help="override a config parameter (pe_rows, pe_cols, rf_words, glb_kib, dram_bandwidth_gbs, "
                        "clock_mhz, dataflow, word_bits); repeatable")


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise CodesignError(f"--set takes PARAM=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if k.strip() in ("energy", "area", "name", "description"):
            raise CodesignError(f"--set {k}: tables and names are set in a YAML file, not with --set")
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as exc:
            raise CodesignError(f"--set {item!r}: cannot read the value") from exc
    return out


def _list(args) -> int:

    from ..hw_models.accelerator import DATAFLOW_NAMES, list_accelerators
    from ..hw_models.roofline import list_rooflines

    accs, roofs = list_accelerators(), list_rooflines()
    if args.json:
        print_json({"accelerators": {k: v.to_dict() for k, v in accs.items()},
                    "rooflines": {k: vars(v) for k, v in roofs.items()}})
        return 0
    print("accelerators:")
    for name, a in accs.items():
        print(f"  {name:14s} {a.pe_rows}x{a.pe_cols} {DATAFLOW_NAMES[a.dataflow]:18s} RF {a.rf_words} words, "
              f"GLB {a.glb_kib:g} KiB, {a.clock_mhz:g} MHz, {a.area_mm2():.2f} mm2")
    print("rooflines:")
    for name, r in roofs.items():
        print(f"  {name:14s} {r.peak_gflops:g} GFLOP/s, {r.mem_bandwidth_gbs:g} GB/s, "
              f"overhead {r.kernel_overhead_ms:g} ms")
    return 0


def _show(args) -> int:

    from ..hw_models.accelerator import get_accelerator

    cfg = get_accelerator(args.accel, **_overrides(args.set))
    if args.yaml:
        print(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False), end="")
    elif args.json:
        print_json(cfg.to_dict())
    else:
        for k, v in cfg.to_dict().items():
            if isinstance(v, dict):
                print(f"{k}:")
                for kk, vv in v.items():
                    print(f"  {kk}: {vv:g}")
            else:
                print(f"{k}: {v}")
    return 0


def _fmt(x: float, spec: str) -> str:
    return "inf" if math.isinf(x) else format(x, spec)


def _eval(args) -> int:
    from ..hw_models.accelerator import get_accelerator
    from ..hw_models.evaluate import evaluate_network
    from ..kernelspec import KernelSpec

    if bool(args.onnx) == bool(args.kernel):
        raise CodesignError("give either --onnx MODEL.onnx or one or more --kernel KEY")
    cfg = get_accelerator(args.accel, **_overrides(args.set))
    network = args.onnx if args.onnx else [KernelSpec.from_key(k) for k in args.kernel]
    res = evaluate_network(network, cfg, jit=not args.python)
    if args.json:
        print_json(res.to_dict())
        return 0
    print(f"{cfg.name}: {cfg.pe_rows}x{cfg.pe_cols} {cfg.dataflow}, RF {cfg.rf_words} words, GLB {cfg.glb_kib:g} KiB, "
          f"{cfg.clock_mhz:g} MHz, {res.area_mm2:.2f} mm2")
    print(f"{'#':>3} {'kernel':58s} {'latency_ms':>11} {'energy_mj':>10} {'util':>5} {'dram%':>6}")
    for i, layer in enumerate(res.layers):
        if not layer.feasible:
            print(f"{i:3d} {layer.kernel_key[:58]:58s} infeasible: {layer.reason}")
            continue
        dram = layer.energy_by_level_mj["dram"] / layer.energy_mj * 100 if layer.energy_mj else 0.0
        print(f"{i:3d} {layer.kernel_key[:58]:58s} {layer.latency_ms:11.4f} {layer.energy_mj:10.4f} "
              f"{layer.pe_utilization:5.2f} {dram:6.1f}")
    levels = ", ".join(f"{k} {_fmt(v, '.4f')}" for k, v in res.energy_by_level_mj.items())
    print(f"total: latency {_fmt(res.latency_ms, '.4f')} ms, energy {_fmt(res.energy_mj, '.4f')} mJ ({levels}), "
          f"area {res.area_mm2:.2f} mm2")
    if not res.feasible:
        print(f"{len(res.infeasible)} layer(s) cannot map on {cfg.name}: the totals are infinite", file=sys.stderr)
    return 0


def _roofline_check(args) -> int:

    from ..profile.rooflines import check_profile_db

    out = check_profile_db(args.db, args.device, roofline=args.roofline, schedule=args.schedule)
    if args.json:
        print_json(out)
    else:
        print(f"{out['device']} against roofline {out['roofline']} ({out['database']}):")
        for sched, r in out["schedules"].items():
            print(f"  {sched:16s} {r['kernels']:5d} kernels, measured/bound min {r['min_ratio']:.2f}, "
                  f"median {r['median_ratio']:.2f}, max {r['max_ratio']:.1f}, {len(r['violations'])} faster than the bound")
            for v in r["violations"][:10]:
                print(f"    {v['kernel_key']}: {v['latency_ms']:.4g} ms < bound {v['bound_ms']:.4g} ms")
    return 1 if out["violations"] else 0


def _validate(args) -> int:

    from ..hw_models.validation import dataflow_comparison, eyeriss_chip

    cmp_, chip = dataflow_comparison(), eyeriss_chip()
    if args.json:
        print_json({"dataflow_comparison": cmp_, "eyeriss_chip": chip})
        return 0
    lo, hi = cmp_["published_rs_advantage_range"]
    print(f"AlexNet CONV1-5, batch {cmp_['batch']}, {cmp_['pes']} PEs, equal area (Eyeriss ISCA 2016 setup):")
    print(f"  {'dataflow':8s} {'RF words':>8} {'GLB KiB':>8} {'energy/MAC':>10} {'vs rs':>6}   share mac/rf/noc/glb/dram")
    for df in cmp_["ranking"]:
        d = cmp_["dataflows"][df]
        share = "/".join(f"{d['share'][k] * 100:.0f}" for k in ("mac", "rf", "noc", "glb", "dram"))
        print(f"  {df:8s} {d['rf_words']:8d} {d['glb_kib']:8.1f} {d['energy_per_mac_x_mac']:10.2f} "
              f"{cmp_['ratio_to_rs'][df]:6.2f}   {share}")
    print(f"  published: rs most efficient, others {lo}x-{hi}x its energy")
    print(f"eyeriss-like, batch {chip['batch']} (Eyeriss JSSC 2017 chip):")
    print(f"  frames/s {chip['fps']:.1f} (published {chip['published_fps']:g}); DRAM accesses/MAC "
          f"{chip['dram_accesses_per_mac']:.4f} (published {chip['published_dram_accesses_per_mac']:g}, compressed); "
          f"on-chip power {chip['on_chip_power_mw']:.0f} mW (published {chip['published_power_mw']:g} mW at 65 nm)")
    return 0
