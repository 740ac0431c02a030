"""How well an untuned network's kernels, timed alone, add up to the network, in the two forms
codesign can build a kernel in; and how much a network's own timing drifts on this host.

    python benchmarks/kernel_forms.py forms NET.onnx ... [--rounds 3] [--out forms.json]
    python benchmarks/kernel_forms.py drift NET.onnx ... [--minutes 19] [--every-s 20] [--out drift.json]
    python benchmarks/kernel_forms.py count NET.onnx ... [--predictions never_profiled.json] [--out count.json]

``forms``: each network's kernels (``codesign.graph.onnx_kernels``) built from their TE description
(``profile.builders.build``: what ``untuned`` profiles time) and in the network's form
(``profile.workloads.network_workload``: the function Relax fuses for them, what the tuned
policies profile; a kernel without one keeps its TE timing), and the network itself, all
compiled once and then timed interleaved in ``--rounds`` rounds, so that a change in the host's
speed lands on all three. Per network and round: each form's kernel sum over the network.
The obvious alternative to the network form is the TE form, so the ratio of interest is each
form's mean absolute log error of the sum against the network.

``drift``: each network compiled once and timed every ``--every-s`` seconds for ``--minutes``,
with the thread's CPU time per run beside the wall-clock figure (if both move, the work itself
slowed; if only the wall clock does, the thread waited).

``count``: no timing; each network's kernels as codesign reads them against the fused functions
TVM runs for it (``profile.measure.tvm_kernels``, data movement left out on both sides), with a
tally of each side's kernel kinds where the counts differ. With ``--predictions`` (the
``never_profiled.json`` of ``benchmarks/predictor.py``), the share of networks predicted within
±10 % among those whose counts match and those whose counts differ.

Every timing is the fastest of 5 repeats of >= 50 ms (untuned, cpu-local, one thread). Prints JSON
with the hardware and load average; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from _common import hardware  # noqa: E402

REPEATS, MIN_REPEAT_MS = 5, 50.0


def _timer(time_evaluator, dev, args):
    """() -> (fastest of REPEATS in ms, the calling thread's CPU time per run in ms)."""
    def run():
        once = time_evaluator("main", dev, number=1, repeat=1, min_repeat_ms=int(MIN_REPEAT_MS))(*args).mean
        n = max(1, int(MIN_REPEAT_MS / 1e3 / once))
        ev = time_evaluator("main", dev, number=n, repeat=REPEATS)
        c0 = time.thread_time()
        fastest = min(ev(*args).results) * 1e3
        return fastest, (time.thread_time() - c0) / (REPEATS * n + 1) * 1e3  # + the evaluator's warm-up run
    return run


def _setup():
    import tvm

    from codesign.profile import get_device
    from codesign.profile.runners import set_threads

    device = get_device("cpu-local")
    set_threads(1)
    return device.tvm_target(), tvm.cpu(0)


def kernel_timer(built, target, dev):
    import tvm

    from codesign.profile.runners import LocalRunner

    mod, _ = LocalRunner()._module(tvm.compile(built.func, target=target))
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.random(shape, dtype=np.float32), dev) for shape in built.arg_shapes]
    return _timer(mod.time_evaluator, dev, args)


def network_timer(path, target, dev):
    import tvm
    from tvm import relax

    from codesign.profile.measure import compile_network, input_shapes, random_inputs, relax_module

    mod, proto = relax_module(path)
    vm = relax.VirtualMachine(compile_network(mod, target, "untuned")[0], dev)
    feeds = random_inputs(proto, 0)
    return _timer(vm.time_evaluator, dev, [tvm.runtime.tensor(feeds[k], dev) for k in input_shapes(proto)])


def forms(paths: list[Path], rounds: int) -> dict:
    import onnx

    from codesign.graph import onnx_kernels
    from codesign.profile.builders import build
    from codesign.profile.workloads import network_workload

    target, dev = _setup()
    timers = {}
    for path in paths:
        specs = onnx_kernels(onnx.load(str(path)))
        te = [kernel_timer(build(s), target, dev) for s in specs]
        net_form = [network_workload(s, target) for s in specs]
        wl = [kernel_timer(b, target, dev) if b is not None else None for b in net_form]
        timers[path.stem] = (te, wl, network_timer(path, target, dev), sum(b is None for b in net_form))
        print(f"built {path.stem}: {len(specs)} kernels", file=sys.stderr, flush=True)
    out = {k: {"kernels": len(te), "without_network_form": none, "te_sum_ms": [], "network_form_sum_ms": [],
               "network_ms": []} for k, (te, _, _, none) in timers.items()}
    for r in range(rounds):
        for k, (te, wl, net, _) in timers.items():
            a = [t()[0] for t in te]
            b = [w()[0] if w is not None else x for w, x in zip(wl, a)]
            out[k]["te_sum_ms"].append(sum(a))
            out[k]["network_form_sum_ms"].append(sum(b))
            out[k]["network_ms"].append(net()[0])
        print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)

    def score(key):
        ratio = np.array([np.mean(np.array(v[key]) / np.array(v["network_ms"])) for v in out.values()])
        return {"mean_abs_log_error": float(np.mean(np.abs(np.log(ratio)))),
                "within_5pct": float(np.mean(np.abs(ratio - 1) <= 0.05)),
                "within_10pct": float(np.mean(np.abs(ratio - 1) <= 0.10)), "median_ratio": float(np.median(ratio))}

    te, wl = score("te_sum_ms"), score("network_form_sum_ms")
    return {"rounds": rounds, "te": te, "network_form": wl,
            "network_form_over_te_abs_log_error": wl["mean_abs_log_error"] / te["mean_abs_log_error"],
            "per_network": out}


def drift(paths: list[Path], minutes: float, every_s: float) -> dict:
    target, dev = _setup()
    timers = {p.stem: network_timer(p, target, dev) for p in paths}
    rows, t0 = [], time.time()
    while time.time() - t0 < minutes * 60:
        row = {"t_s": round(time.time() - t0, 1), "load_average_1": os.getloadavg()[0]}
        for k, t in timers.items():
            row[k], row[f"{k}:cpu_per_run"] = t()
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        time.sleep(every_s)
    summary = {}
    for k in timers:
        v = np.array([r[k] for r in rows])
        c = np.array([r[f"{k}:cpu_per_run"] for r in rows])
        summary[k] = {"min_ms": float(v.min()), "median_ms": float(np.median(v)), "max_ms": float(v.max()),
                      "max_over_min": float(v.max() / v.min()),
                      "within_10pct_of_median": float(np.mean(np.abs(v / np.median(v) - 1) <= 0.10)),
                      "cpu_per_run_min_ms": float(c.min()), "cpu_per_run_max_ms": float(c.max())}
    return {"minutes": minutes, "every_s": every_s, "timings": len(rows), "summary": summary, "rows": rows}


def count(paths: list[Path], predictions: Path | None) -> dict:
    import re
    from collections import Counter

    from codesign.graph import onnx_kernels
    from codesign.profile.measure import tvm_kernels

    ratio = {}  # by the network's resolved path
    if predictions is not None:
        for r in json.loads(predictions.read_text())["per_network"]:
            if "onnx" in r:
                ratio[str(Path(r["onnx"]).resolve())] = r["predicted_ms"] / r["measured_ms"]
    rows = []
    for path in paths:
        tvm, ours = tvm_kernels(path), onnx_kernels(path)
        row = {"network": str(path), "tvm_kernels": len(tvm), "codesign_kernels": len(ours)}
        if len(tvm) != len(ours):
            row["tvm_kinds"] = dict(Counter(re.sub(r"\d+", "", t) for t in tvm).most_common())
            row["codesign_kinds"] = dict(Counter(f"{k.op}:{k.attr('activation', '-')}" for k in ours).most_common())
        if str(path.resolve()) in ratio:
            row["predicted_over_measured"] = ratio[str(path.resolve())]
        rows.append(row)
        print(f"{path.name}: TVM {len(tvm)}, codesign {len(ours)}", file=sys.stderr, flush=True)
    differ = [r for r in rows if r["tvm_kernels"] != r["codesign_kernels"]]
    summary = {"networks": len(rows), "counts_differ": len(differ)}
    for key, group in (("counts_match", [r for r in rows if r not in differ]), ("counts_differ", differ)):
        got = [abs(r["predicted_over_measured"] - 1) <= 0.10 for r in group if "predicted_over_measured" in r]
        if got:
            summary[f"within_10pct_where_{key}"] = {"networks": len(got), "share": float(np.mean(got))}
    return {"summary": summary, "rows": rows}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["forms", "drift", "count"])
    ap.add_argument("networks", nargs="+", type=Path, help="ONNX files with static input shapes")
    ap.add_argument("--rounds", type=int, default=3, help="forms: interleaved rounds (default 3)")
    ap.add_argument("--minutes", type=float, default=19.0, help="drift: how long (default 19)")
    ap.add_argument("--every-s", type=float, default=20.0, help="drift: pause between timings (default 20)")
    ap.add_argument("--predictions", type=Path, help="count: a never_profiled.json of benchmarks/predictor.py")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.networks + ([args.predictions] if args.predictions else []) if not p.is_file()]
    if missing or args.rounds < 1 or args.minutes <= 0 or args.every_s < 0:
        ap.error(f"no such file: {missing[0]}" if missing else "--rounds >= 1, --minutes > 0, --every-s >= 0")
    load = os.getloadavg()
    if args.part == "forms":
        res = forms(args.networks, args.rounds)
    elif args.part == "drift":
        res = drift(args.networks, args.minutes, args.every_s)
    else:
        res = count(args.networks, args.predictions)
    res = {"benchmark": f"kernel_forms:{args.part}", "hardware": hardware(), "load_average_start": load,
           "load_average_end": os.getloadavg(), **({} if args.part == "count" else {
               "timing": f"fastest of {REPEATS} repeats of >= {MIN_REPEAT_MS:g} ms, untuned, cpu-local, one thread"}),
           **res}
    text = json.dumps(res, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    return res


if __name__ == "__main__":
    main()
