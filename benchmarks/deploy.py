"""Deployment latency: TVM untuned and tuned against onnxruntime and torch, and what tuning does to
the search's cost ranking.

For each network at 1x3x32x32 (random samples of the nb201, darts and mobilenet spaces and
hand-written ResNet- and MobileNet-like networks): the latency under TVM ``untuned``, TVM ``tuned``
(MetaSchedule, the default CPU policy), onnxruntime and eager torch, all on the device's thread
count, as ratios to onnxruntime; and the cost model's prediction under ``tuned`` (fitted on the
tuned kernel profiles, which the run makes) against the measured tuned latency. Then the Kendall
tau between the untuned and the tuned per-option cost tables of nb201 (each option's kernels
summed from the profiles): 1 means tuning leaves the ranking of options as it was.

    python benchmarks/deploy.py                          # short: 3 networks, 4 trials per kernel
    python benchmarks/deploy.py --networks 12 --tune-trials 8 --net-rounds 2   # the full run
    python benchmarks/deploy.py --sweep-trials 8,32,128 --sweep-network resnet8   # speed against trials

Everything it profiles and tunes stays in ``--work`` (default: codesign's cache directory), so a
rerun is warm; ``--fresh`` starts from an empty one. Prints JSON (hardware, load average, settings,
one row per network, the medians and the tau).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import hardware  # noqa: E402

INPUT = (1, 3, 32, 32)


def _resnet(blocks: int, width: int = 16):
    """A CIFAR ResNet (He et al. 2016, section 4.2): 3 stages of ``blocks`` basic blocks."""
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
            self.short = (nn.Identity() if stride == 1 and c_in == c_out else
                          nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.body(x) + self.short(x))

    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    c = width
    for stage in range(3):
        for b in range(blocks):
            out = width * 2 ** stage
            layers.append(Block(c, out, 2 if stage and not b else 1))
            c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    return nn.Sequential(*layers)


def _mobilenet(width: int = 16, expand: int = 4):
    """A MobileNetV2-like network (Sandler et al. 2018): inverted residuals, ReLU6, 3 stages."""
    import torch.nn as nn

    class Inverted(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            h = c_in * expand
            self.body = nn.Sequential(
                nn.Conv2d(c_in, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                nn.Conv2d(h, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
            self.residual = stride == 1 and c_in == c_out

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6()]
    c = width
    for stage, stride in enumerate((1, 2, 2)):
        out = width * 2 ** stage
        layers += [Inverted(c, out, stride), Inverted(out, out, 1)]
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    return nn.Sequential(*layers)


def _space_sample(name: str, index: int, **space_args):
    from codesign.spaces import create_space

    space = create_space(name, input_shape=INPUT, num_classes=10, **space_args)
    genotype = space.format(space.random_choices(random.Random(1000 + index)))
    return space.build(genotype).eval(), genotype


def _makers() -> list:
    """(name, maker) of the 12 networks, in an order that mixes the kinds."""
    return [
        ("nb201-s0", lambda: _space_sample("nb201", 0)),
        ("resnet8", lambda: (_resnet(1), "CIFAR ResNet, 1 block per stage")),
        ("mobilenetv2-w16", lambda: (_mobilenet(16), "MobileNetV2-like, width 16, expansion 4")),
        ("darts-s0", lambda: _space_sample("darts", 0, c=8, layers=3)),
        ("mobilenet-s0", lambda: _space_sample("mobilenet", 0)),
        ("nb201-s1", lambda: _space_sample("nb201", 1)),
        ("resnet14", lambda: (_resnet(2), "CIFAR ResNet, 2 blocks per stage")),
        ("mobilenetv2-w24", lambda: (_mobilenet(24, 6), "MobileNetV2-like, width 24, expansion 6")),
        ("darts-s1", lambda: _space_sample("darts", 1, c=8, layers=3)),
        ("mobilenet-s1", lambda: _space_sample("mobilenet", 1)),
        ("nb201-s2", lambda: _space_sample("nb201", 2)),
        ("resnet8-w32", lambda: (_resnet(1, 32), "CIFAR ResNet, 1 block per stage, width 32")),
    ]


def networks(count: int) -> list[tuple[str, object, str]]:
    """The first ``count`` (name, module, description), so that a short run still sees a space
    sample and a hand-written network."""
    out = []
    for name, make in _makers()[:count]:
        module, what = make()
        out.append((name, module.eval(), what))
    return out


def sweep_trials(name: str, trials: list[int], device_name: str, repeats: int, min_repeat_ms: float) -> dict:
    """TVM tuned against onnxruntime for one network as MetaSchedule's trial budget grows, each
    count tuned into a fresh tuning directory (what more tuning time buys)."""
    import tempfile

    from codesign.graph import export_onnx
    from codesign.profile import get_device
    from codesign.profile.measure import measure_network, time_onnxruntime
    from codesign.profile.schedules import tuning_strategy

    device = get_device(device_name)
    module = dict(_makers())[name]()[0].eval()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        path = str(Path(work) / f"{name}.onnx")
        Path(path).write_bytes(export_onnx(module, INPUT).SerializeToString())
        ort_ms, _ = time_onnxruntime(path, device.threads, repeats, min_repeat_ms)
        for n in trials:
            t0 = time.perf_counter()
            m = measure_network(path, device, "tuned", tuning_dir=str(Path(work) / f"tuning-{n}"), tune_trials=n,
                                onnxruntime=False, repeats=repeats, min_repeat_ms=min_repeat_ms)
            rows.append({"trials_per_kernel": n, "tuned_ms": m.latency_ms, "tuned_over_onnxruntime": m.latency_ms / ort_ms,
                         "tune_and_compile_s": time.perf_counter() - t0, "load_average": os.getloadavg()[0]})
            print(f"{name}, {n} trials per kernel: {m.latency_ms / ort_ms:.2f}x onnxruntime", file=sys.stderr, flush=True)
    return {"benchmark": "deploy-trials", "hardware": hardware(), "device": device.name, "network": name,
            "strategy": tuning_strategy(), "onnxruntime_ms": ort_ms, "rows": rows}


def time_torch(module, threads: int, repeats: int, min_repeat_ms: float) -> float:
    """Median ms of eager torch inference, timed like TVM's time_evaluator."""
    import torch

    torch.set_num_threads(threads)
    x = torch.randn(INPUT, generator=torch.Generator().manual_seed(0))
    samples = []
    with torch.inference_mode():
        for _ in range(3):
            module(x)
        for _ in range(repeats):
            n, t0 = 0, time.perf_counter()
            while n == 0 or (time.perf_counter() - t0) * 1e3 < min_repeat_ms:
                module(x)
                n += 1
            samples.append((time.perf_counter() - t0) * 1e3 / n)
    return statistics.median(samples)


def option_costs(space, db, device: str, schedule: str) -> list[float]:
    """Every (decision, option)'s summed kernel latency under ``schedule`` from the profiles."""
    from codesign.profile import ProfileDB

    with ProfileDB(db, readonly=True) as pdb:
        lat = {m.kernel_key: m.latency_ms for m in pdb.query(device=device, schedule=schedule, ok_only=True)}
    out = []
    for row in space.option_kernels():
        for kernels in row:
            out.append(sum(lat[k.key()] for k in kernels))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", type=int, default=3, help="networks to measure, at most 12 (default 3; full: 12; "
                   "0: only the nb201 ranking)")
    p.add_argument("--tune-trials", type=int, default=4, help="mean MetaSchedule trials per kernel (default 4; "
                   "the search's default is 8)")
    p.add_argument("--device", default="cpu-local")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--min-repeat-ms", type=float, default=20.0)
    p.add_argument("--tau-shape", default="1,1,8,8", help="input shape of the nb201 cost tables compared "
                   "(default: the default search's, digits 1x1x8x8)")
    p.add_argument("--no-tau", action="store_true", help="skip the nb201 ranking comparison")
    p.add_argument("--tau-db", default=None, help="read nb201's untuned and tuned kernel profiles from this "
                   "profile database (e.g. the one a default `codesign search` filled) instead of profiling them")
    p.add_argument("--net-rounds", type=int, default=1,
                   help="passes timing each network's tuned TVM and onnxruntime; the fastest counts (default 1)")
    p.add_argument("--work", default=None, help="profile database and tuning records (default: cache dir)")
    p.add_argument("--fresh", action="store_true", help="empty --work first")
    p.add_argument("--sweep-trials", default=None, help="instead: TVM tuned over onnxruntime for one network "
                   "(--sweep-network) at each of these trials per kernel (e.g. 8,32,128), each tuned afresh")
    p.add_argument("--sweep-network", default="resnet8", help="the network --sweep-trials tunes (a name of the 12)")
    args = p.parse_args(argv)
    if not 0 <= args.networks <= 12:
        p.error("--networks takes 0 to 12")
    if args.net_rounds < 1:
        p.error("--net-rounds takes an int >= 1")
    if args.sweep_trials is not None:
        try:
            trials = [int(t) for t in args.sweep_trials.split(",")]
        except ValueError:
            p.error(f"--sweep-trials takes comma-separated ints, got {args.sweep_trials!r}")
        names = [n for n, _ in _makers()]
        if args.sweep_network not in names or min(trials) < 1:
            p.error(f"--sweep-network takes one of {', '.join(names)}; --sweep-trials ints >= 1")
        from codesign.errors import CodesignError
        from codesign.profile.schedules import tuning_strategy

        try:
            tuning_strategy()
        except CodesignError as exc:
            p.error(str(exc))
        return sweep_trials(args.sweep_network, trials, args.device, args.repeats, args.min_repeat_ms)

    from codesign.graph import export_onnx, onnx_kernels
    from codesign.paths import cache_dir
    from codesign.predict.api import fit_from_profiles
    from codesign.profile import ProfileDB, get_device, profile_kernels
    from codesign.profile.db import tuning_dir_for
    from codesign.profile.measure import measure_network, time_onnxruntime
    from codesign.spaces import create_space

    work = Path(args.work) if args.work else cache_dir("bench-deploy")
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "profiles.sqlite"
    tuning = str(tuning_dir_for(db_path))
    device = get_device(args.device)
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    timing = dict(repeats=args.repeats, min_repeat_ms=args.min_repeat_ms)
    rows = []
    nets = networks(args.networks)
    for name, module, what in nets:
        path = work / f"{name}.onnx"
        export = export_onnx(module, INPUT)
        path.write_bytes(export.SerializeToString())
        specs = onnx_kernels(str(path))
        t0 = time.perf_counter()
        with ProfileDB(db_path) as db:
            report = profile_kernels(specs, device, db, schedule="tuned", tune_trials=args.tune_trials,
                                     tuning_dir=tuning, progress=False, **timing)
        profile_s = time.perf_counter() - t0
        untuned = measure_network(str(path), device, "untuned", onnxruntime=False, **timing)
        tuned = measure_network(str(path), device, "tuned", tuning_dir=tuning, tune_trials=args.tune_trials,
                                onnxruntime=False, **timing)
        ort_ms, _ = time_onnxruntime(str(path), device.threads, args.repeats, args.min_repeat_ms)
        torch_ms = time_torch(module, device.threads, args.repeats, args.min_repeat_ms)
        rows.append({
            "network": name, "what": what, "kernels": len(specs), "tvm_untuned_ms": untuned.latency_ms,
            "tvm_tuned_ms": tuned.latency_ms, "onnxruntime_ms": ort_ms, "torch_ms": torch_ms,
            "untuned_over_onnxruntime": untuned.latency_ms / ort_ms, "tuned_over_onnxruntime": tuned.latency_ms / ort_ms,
            "torch_over_onnxruntime": torch_ms / ort_ms, "tuned_kernels": tuned.tuned_kernels,
            "fused_kernels": tuned.fused_kernels, "kernel_profile_s": profile_s,
            "kernel_tune_trials": report.tune_trials, "network_compile_s": tuned.compile_s,
        })
        print(f"{name}: tuned {tuned.latency_ms:.4g} ms, untuned {untuned.latency_ms:.4g}, onnxruntime {ort_ms:.4g}, "
              f"torch {torch_ms:.4g}", file=sys.stderr, flush=True)
    # More passes over the networks, tuned TVM and onnxruntime timed again from the same records:
    # each keeps its fastest pass. A shared host slows a whole stretch of minutes now and then (two
    # networks read 22-28 % slow in one run and not in a rerun), which one pass cannot tell apart
    # from a slow network.
    for rnd in range(1, args.net_rounds):
        for row, (name, _, _) in zip(rows, nets):
            path = str(work / f"{name}.onnx")
            again = measure_network(path, device, "tuned", tuning_dir=tuning, tune_trials=args.tune_trials,
                                    onnxruntime=False, **timing)
            ort_again, _ = time_onnxruntime(path, device.threads, args.repeats, args.min_repeat_ms)
            row.setdefault("tvm_tuned_ms_passes", [row["tvm_tuned_ms"]]).append(again.latency_ms)
            row.setdefault("onnxruntime_ms_passes", [row["onnxruntime_ms"]]).append(ort_again)
            row["tvm_tuned_ms"] = min(row["tvm_tuned_ms_passes"])
            row["onnxruntime_ms"] = min(row["onnxruntime_ms_passes"])
            row["tuned_over_onnxruntime"] = row["tvm_tuned_ms"] / row["onnxruntime_ms"]
            row["untuned_over_onnxruntime"] = row["tvm_untuned_ms"] / row["onnxruntime_ms"]
            row["torch_over_onnxruntime"] = row["torch_ms"] / row["onnxruntime_ms"]
            print(f"{name} pass {rnd + 1}: tuned {again.latency_ms:.4g} ms, onnxruntime {ort_again:.4g}",
                  file=sys.stderr, flush=True)
    # Predictions from one model fitted on every tuned kernel profile the run made.
    model = fit_from_profiles(device.name, db_path, "tuned")[0] if rows else None
    kernels = [onnx_kernels(str(work / f"{row['network']}.onnx")) for row in rows]
    for row, specs in zip(rows, kernels):
        pred = model.predict_network(specs)["latency_ms"]
        row["predicted_tuned_ms"] = float(pred)
        row["predicted_over_measured"] = float(pred) / row["tvm_tuned_ms"]
    if len(rows) >= 3:
        # The network overhead (`codesign fit --networks`) fitted on the other networks' measured
        # latencies, none on the network predicted: what a user who measured a few networks gets.
        for i, row in enumerate(rows):
            others = [j for j in range(len(rows)) if j != i]
            model.fit_overhead([kernels[j] for j in others], [rows[j]["tvm_tuned_ms"] for j in others])
            pred = model.predict_network(kernels[i])["latency_ms"]
            row["predicted_with_overhead_ms"] = float(pred)
            row["predicted_with_overhead_over_measured"] = float(pred) / row["tvm_tuned_ms"]
    out = {
        "benchmark": "deploy", "hardware": hardware(), "device": device.name, "threads": device.threads,
        "settings": {"networks": args.networks, "tune_trials": args.tune_trials, "net_rounds": args.net_rounds, **timing, "input": list(INPUT),
                     "work": str(work), "fresh": args.fresh},
        "networks": rows,
    }
    if rows:
        out.update(
            median_tuned_over_onnxruntime=statistics.median(r["tuned_over_onnxruntime"] for r in rows),
            median_untuned_over_onnxruntime=statistics.median(r["untuned_over_onnxruntime"] for r in rows),
            median_torch_over_onnxruntime=statistics.median(r["torch_over_onnxruntime"] for r in rows),
            share_predicted_within_10pct=sum(abs(r["predicted_over_measured"] - 1) <= 0.10 for r in rows) / len(rows),
        )
    if len(rows) >= 3:
        out["share_predicted_with_overhead_within_10pct"] = sum(
            abs(r["predicted_with_overhead_over_measured"] - 1) <= 0.10 for r in rows) / len(rows)
    if not args.no_tau:
        from scipy.stats import kendalltau

        shape = tuple(int(v) for v in args.tau_shape.split(","))
        space = create_space("nb201", input_shape=shape, num_classes=10)
        tau_db = Path(args.tau_db) if args.tau_db else db_path
        if not args.tau_db:
            with ProfileDB(db_path) as db:
                profile_kernels(space.kernels(), device, db, schedule="tuned", tune_trials=args.tune_trials,
                                tuning_dir=tuning, progress=False, **timing)
        untuned = option_costs(space, tau_db, device.name, "untuned")
        tuned = option_costs(space, tau_db, device.name, "tuned")
        tau = kendalltau(untuned, tuned)
        per_decision, i = [], 0
        for row in space.option_kernels():
            a, b = untuned[i:i + len(row)], tuned[i:i + len(row)]
            per_decision.append(float(kendalltau(a, b).statistic))
            i += len(row)
        out["nb201_ranking"] = {
            "input": list(shape), "profiles": str(tau_db), "options": len(untuned), "kendall_tau": float(tau.statistic),
            "kendall_tau_mean_per_decision": statistics.fmean(t for t in per_decision if t == t),
            "conv3x3_over_conv1x1_untuned": _ratio(space, untuned, "nor_conv_3x3", "nor_conv_1x1"),
            "conv3x3_over_conv1x1_tuned": _ratio(space, tuned, "nor_conv_3x3", "nor_conv_1x1"),
        }
    out["wall_s"] = time.perf_counter() - t_start
    out["loadavg_start"], out["loadavg_end"] = list(load_start), list(os.getloadavg())
    return out


def _ratio(space, costs, a: str, b: str) -> float | None:
    """Mean over decisions of cost(option a) / cost(option b)."""
    ratios, i = [], 0
    for d in space.decisions():
        opts = list(d.options)
        if a in opts and b in opts and costs[i + opts.index(b)] > 0:
            ratios.append(costs[i + opts.index(a)] / costs[i + opts.index(b)])
        i += len(opts)
    return statistics.fmean(ratios) if ratios else None


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
