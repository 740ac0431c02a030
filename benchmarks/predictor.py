"""Accuracy of codesign's latency prediction against whole networks measured with TVM, and of
few-shot calibration to a new device.

    python benchmarks/predictor.py [--work DIR] [--repeats R] [--min-repeat-ms MS] [--statistic median|min]
                                   [--net-rounds K] [--rounds K] [--grid-samples N] [--per-space S] [--stage STAGE]
                                   [--adaptive-budget N] [--workers W] [--tv-nets NAME...] [--tv-sizes S...]
                                   [--tv-rounds K] [--held-out GROUP] [--schedule untuned|tuned]
                                   [--zoo-nets NAME...] [--no-real-shapes]

torchvision and timm networks come from the folders ``export_torchvision.py`` and ``export_timm.py``
write (``$CODESIGN_TORCHVISION_ONNX``, ``$CODESIGN_TIMM_ONNX``); either set is left out, with a
line saying so, when its folder is absent.

Networks: ResNet-, MobileNetV2-, VGG-, SqueezeNet- and ShuffleNet-like CNNs written here at
32x32 inputs and several widths/depths, plain CNNs with 5x5/7x7 kernels, and S architectures
sampled from every registered search space (``codesign.spaces.list_spaces()``: ``sample`` then
``build``); 40 more random small CNNs for calibration only.

What is compared, on the same networks, in the same run (cpu-local, schedule ``untuned``):

- ``profiled``: the network's kernels profiled first (``time_kernels``: the profiler itself),
  predictions from their measurements: what ``codesign profile --onnx`` then ``codesign predict``
  give a user; checks the graph splitting and fusion rules. The per-network overhead
  (``CostModel.fit_overhead``) of each network is fitted on the *other* networks (leave one out);
  the bare kernel sums are reported too;
- ``model_only``: a gbdt cost model fitted on the shape grids only (no kernel of any benchmark
  network), every kernel predicted by regression: the case of an unseen network during search;
- ``flops_proxy``: the obvious alternative, latency proportional to FLOPs (one scale: the median
  ratio), against which the ratios are given.

"Never profiled" (``--stage never-profiled``, after ``--stage adaptive`` and ``--stage
measure-torchvision``; ``--stage all`` runs everything): kernel-type predictors
(``codesign.predict.adaptive``, nn-Meter's method) sampled adaptively into ``adaptive.sqlite``
with every kernel of every evaluated network excluded (sampling skips them, and the fit drops any
that a draw hit anyway), then the 42 networks and torchvision networks at 32x32 and 64x64
(exported by ``export_torchvision.py``; absent when it has not run) and timm networks at 64x64
(``export_timm.py``, one per family, those whose kernel types are sampled; ``--stage measure-timm``)
predicted from them, beside a gbdt fitted on the same samples and the FLOPs proxy. Each network's
in-network correction is fitted on the other networks (leave one out), three ways
(``in_network_correction``): a constant and per-kernel overhead, one common scale, and a scale per op
family (``fit_overhead(per_family=True)``, the reported one); and for one group (``--held-out``, the
timm networks by default), fitted on the others only. The networks' own kernels, profiled for the
profiled mode, give the per-kernel-type error table; the coverage of the 90 % intervals and the
networks flagged as outside the sampled range are reported. Writes ``never_profiled.json``.
Adaptive sampling draws around the kernels of the real networks shipped with codesign
(``real_shapes.py``; none of them is a network evaluated here) as ``codesign fit --adaptive``
does; ``--no-real-shapes`` leaves them out.

``--schedule tuned`` runs the never-profiled stages under the tuned policy (MetaSchedule, as
``codesign profile`` and ``codesign measure`` tune on a CPU): adaptive samples are tuned into
their own database's tuning folder with the same trials each (as ``codesign measure`` tunes the
kernels of a network it holds no records of; ``-flat`` in the file names), networks (``--stage
measure-zoo [--zoo-nets ...]``, ``measure-torchvision``, ``measure-timm``) into
``networks-<timing>-tuned.tuning``, both apart from the untuned caches; ``--stage network-kernels``
then tunes and times each measured network's kernels alone, as the samples are (the kernel-level
table's truth); the report is ``never_profiled-tuned.json``. ``--stage measure-zoo --tuning-seed N``
tunes the zoo again with MetaSchedule seed N into a fresh folder; the report's ``tuning_luck``
then says how alike the seeds' tunings are, and ``--judge-seed N`` judges the predictions by
that seed's tuning (``never_profiled-tuned-judged-seedN.json``).

Calibration: the "new device" is onnxruntime (1 thread) on this CPU; the base is the profiled
cpu-local model. For N in 5, 10, 20, 50 random networks (10 draws each), ``calibrate`` is fitted on
N and the Kendall tau / ±10 % share reported on the remaining networks, beside the uncalibrated base.

Timing is what a user gets: kernels through ``codesign.profile.profile_kernels`` (``codesign
profile``), networks through ``codesign.profile.measure.measure_network`` (``codesign measure``),
onnxruntime through ``time_onnxruntime``, all with the commands' default repeats and the product's
timing statistic (``--statistic``: median by default; ``--statistic min`` runs the same benchmark
on the fastest repeats, in caches of its own). --rounds/--net-rounds K time everything K times
and combine the passes with the same statistic.

Prints JSON (hardware and load average included) and writes ``predictor_scatter.png`` in --work
when matplotlib is installed. Resumable: profile databases and network measurements are cached in
--work, under names that carry the timing settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from _common import hardware, write_json  # noqa: E402

from codesign.errors import CodesignError  # noqa: E402
from codesign.graph import export_onnx, onnx_kernels  # noqa: E402
from codesign.kernelspec import KernelSpec, kernel_flops  # noqa: E402
from codesign.predict.calibrate import calibrate, family_sums, fit_weights  # noqa: E402
from codesign.predict.evaluate import accuracy  # noqa: E402
from codesign.predict.features import FAMILIES  # noqa: E402
from codesign.predict.models import (  # noqa: E402
    apply_network_terms,
    conformal_bounds,
    create_cost_model,
    fit_network_terms,
    network_log_interval,
)
from codesign.profile import Measurement, ProfileDB, get_device, profile_kernels  # noqa: E402
from codesign.profile.grid import grid_specs  # noqa: E402
from codesign.profile.measure import measure_network, time_onnxruntime  # noqa: E402
from codesign.profile.runners import STATISTICS  # noqa: E402

SHAPE = (1, 3, 32, 32)


# --- network zoo (32x32 inputs, 10 classes) ------------------------------------------------------
def cbr(ci, co, k=3, s=1, groups=1, act=True):
    layers = [nn.Conv2d(ci, co, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(co)]
    return nn.Sequential(*layers, nn.ReLU()) if act else nn.Sequential(*layers)


def head(c):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def vgg(widths, convs_per_stage=1):
    layers, ci = [], 3
    for w in widths:
        for _ in range(convs_per_stage):
            layers.append(cbr(ci, w))
            ci = w
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers, head(ci))


class Basic(nn.Module):
    def __init__(self, ci, co, s):
        super().__init__()
        self.a, self.b = cbr(ci, co, 3, s), cbr(co, co, 3, 1, act=False)
        self.short = None if s == 1 and ci == co else cbr(ci, co, 1, s, act=False)

    def forward(self, x):  # (N, ci, H, W) -> (N, co, H/s, W/s)
        return torch.relu(self.b(self.a(x)) + (x if self.short is None else self.short(x)))


def resnet(width, blocks):
    layers, ci = [cbr(3, width)], width
    for stage in range(3):
        co = width * 2**stage
        for i in range(blocks):
            layers.append(Basic(ci, co, 2 if i == 0 and stage > 0 else 1))
            ci = co
    return nn.Sequential(*layers, head(ci))


class Inverted(nn.Module):
    def __init__(self, ci, co, s, e):
        super().__init__()
        h = ci * e
        self.body = nn.Sequential(cbr(ci, h, 1), cbr(h, h, 3, s, groups=h), cbr(h, co, 1, act=False))
        self.res = s == 1 and ci == co

    def forward(self, x):
        y = self.body(x)
        return x + y if self.res else y


def mobilenet_v2(width, expansion, depth=1):
    layers, ci = [cbr(3, width, 3, 1)], width
    for stage, s in enumerate((1, 2, 2)):
        co = width * (stage + 1)
        for i in range(depth):
            layers.append(Inverted(ci, co, s if i == 0 else 1, expansion))
            ci = co
    return nn.Sequential(*layers, cbr(ci, 4 * width, 1), head(4 * width))


class Fire(nn.Module):
    def __init__(self, ci, sq, ex):
        super().__init__()
        self.sq = nn.Sequential(nn.Conv2d(ci, sq, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(sq, ex, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(sq, ex, 3, padding=1), nn.ReLU())

    def forward(self, x):
        s = self.sq(x)
        return torch.cat((self.e1(s), self.e3(s)), 1)


def squeezenet(width, fires):
    layers, ci = [nn.Conv2d(3, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2)], 2 * width
    for i in range(fires):
        layers.append(Fire(ci, width // 2 + 4 * i, width + 8 * i))
        ci = 2 * (width + 8 * i)
        if i == fires // 2:
            layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers, nn.Conv2d(ci, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class ShuffleUnit(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(cbr(h, h, 1), cbr(h, h, 3, groups=h, act=False), cbr(h, h, 1))

    def forward(self, x):  # channel split, branch, concat, channel shuffle
        a, b = x.chunk(2, dim=1)
        x = torch.cat((a, self.branch(b)), 1)
        n, c, hh, ww = x.shape
        return x.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)


def shufflenet(width, units):
    layers = [cbr(3, width), nn.MaxPool2d(3, 2, 1)]
    for stage in range(2):
        c = width * 2**stage
        if stage:
            layers.append(cbr(c // 2, c, 3, 2))
        layers += [ShuffleUnit(c) for _ in range(units)]
    return nn.Sequential(*layers, head(width * 2))


def plain(widths, k, strides):
    layers, ci = [], 3
    for w, s in zip(widths, strides):
        layers.append(cbr(ci, w, k, s))
        ci = w
    return nn.Sequential(*layers, nn.AvgPool2d(3, 1, 1), head(ci))


# Smaller settings for spaces whose defaults make networks of hundreds of kernels (untuned TVM
# compiles those for minutes); every other registered space is sampled as created by default.
SPACE_KWARGS = {"darts": {"c": 8, "layers": 5}}


def space_nets(per_space, seed):
    """``per_space`` architectures sampled from every registered search space.

    Returns (name, module, input_shape, genotype) tuples."""
    from codesign.spaces import create_space, list_spaces

    nets = []
    for space_name in list_spaces():
        space = create_space(space_name, **SPACE_KWARGS.get(space_name, {}))
        rng = random.Random(seed)
        for i in range(per_space):
            genotype = space.sample(rng)
            nets.append((f"{space_name}_{i}", space.build(genotype), tuple(space.input_shape), genotype))
    return nets


def accuracy_zoo(per_space: int = 4):
    nets = []
    nets += [(f"vgg_{'_'.join(map(str, w))}x{d}", vgg(w, d)) for w, d in
             (((8, 16, 32), 1), ((16, 32, 64), 1), ((8, 16, 32, 64), 1), ((8, 16, 32), 2))]
    # Widths up to 16: untuned, a w24 ResNet runs ~100 ms, longer than any time slice this shared
    # machine grants, so no run of it is undisturbed.
    nets += [(f"resnet_w{w}_b{b}", resnet(w, b)) for w in (8, 12, 16) for b in (1, 2)]
    nets += [(f"mbv2_w{w}_e{e}", mobilenet_v2(w, e)) for w in (8, 16) for e in (2, 4, 6)]
    nets += [(f"squeeze_w{w}_f{f}", squeezenet(w, f)) for w in (8, 16) for f in (2, 4)]
    nets += [(f"shuffle_w{w}_u{u}", shufflenet(w, u)) for w in (8, 16) for u in (1, 2)]
    nets += [(f"plain_k{k}_{'_'.join(map(str, w))}", plain(w, k, s)) for k, w, s in (
        (5, (16, 32), (2, 2)), (7, (8, 16), (2, 2)), (5, (8, 16, 32), (1, 2, 2)),
        (3, (32, 32, 32), (2, 1, 1)), (7, (16, 16), (1, 2)), (1, (16, 32, 64), (2, 2, 2)))]
    nets = [(name, net, SHAPE, None) for name, net in nets]
    return nets + space_nets(per_space, seed=0)


def random_net(rng: random.Random):
    layers, ci, h = [cbr(3, rng.choice((8, 16)))], None, 32
    ci = layers[0][0].out_channels
    for _ in range(rng.randint(2, 6)):
        kind = rng.choice(("conv", "dwsep", "inverted", "pool", "fire"))
        co = rng.choice((8, 16, 24, 32, 48))
        s = 2 if h > 4 and rng.random() < 0.35 else 1
        if kind == "conv":
            layers.append(cbr(ci, co, rng.choice((1, 3, 5)), s))
        elif kind == "dwsep":
            layers += [cbr(ci, ci, 3, s, groups=ci), cbr(ci, co, 1)]
        elif kind == "inverted":
            layers.append(Inverted(ci, co, s, rng.choice((2, 4, 6))))
        elif kind == "pool":
            layers.append(rng.choice((nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(3, 2, 1))))
            co, s = ci, 2
        else:
            layers.append(Fire(ci, max(4, co // 4), co // 2))
        ci = co
        h = (h - 1) // s + 1
    return nn.Sequential(*layers, head(ci))


# --- the benchmark -----------------------------------------------------------------------------
def export_all(nets, onnx_dir: Path) -> dict[str, Path]:
    import onnx

    onnx_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, net, shape, _ in nets:
        path = onnx_dir / f"{name}.onnx"
        if not path.exists():
            onnx.save(export_onnx(net, shape), str(path))
        paths[name] = path
    return paths


def network_kernels(path: Path, work: Path) -> list[KernelSpec]:
    """``onnx_kernels(path)``, cached in work/kernels-cache.json by file content and graph.py source
    (reading a network folds its constants with onnx's reference evaluator: seconds each)."""
    import hashlib

    import codesign.graph as graph_mod

    key = hashlib.sha256(Path(path).read_bytes() + Path(graph_mod.__file__).read_bytes()).hexdigest()
    cache = work / "kernels-cache.json"
    data = json.loads(cache.read_text()) if cache.exists() else {}
    if key not in data:
        data[key] = [s.key() for s in onnx_kernels(path)]
        latest = json.loads(cache.read_text()) if cache.exists() else {}
        latest.update(data)
        write_json(cache, latest)
    return [KernelSpec.from_key(k) for k in data[key]]


def cached(path: Path, key: str, fn):
    data = json.loads(path.read_text()) if path.exists() else {}
    if key not in data:
        data[key] = fn()
        write_json(path, data, indent=1)  # one network at a time: a kill loses one
    return data[key]


def bench_schedule(text: str) -> str:
    """``--schedule``: untuned, tuned or metaschedule:N (N >= 1 trials per kernel)."""
    from codesign.profile.schedules import parse_schedule

    try:
        kind, trials = parse_schedule(text)
    except CodesignError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if kind not in ("untuned", "tuned", "metaschedule"):
        raise argparse.ArgumentTypeError(f"{text!r}: untuned, tuned or metaschedule:N")
    return text


def timing_of(args) -> dict:
    """The timing settings of profiles and measurements (``codesign profile``/``measure``'s)."""
    return {"repeats": args.repeats, "min_repeat_ms": args.min_repeat_ms, "statistic": args.statistic,
            "schedule": getattr(args, "schedule", "untuned")}


def schedule_suffix(timing: dict) -> str:
    """What a file name of a tuned run carries ("-tuned"); none for untuned, the names of runs
    from before the policy was a setting."""
    sched = timing.get("schedule", "untuned")
    return "" if sched == "untuned" else f"-{sched.replace(':', '')}"


def timing_tag(timing: dict) -> str:
    """Names caches and databases after the timing, so that runs with other settings never mix."""
    return f"{timing['statistic']}-r{timing['repeats']}-m{timing['min_repeat_ms']:g}" + schedule_suffix(timing)


def adaptive_state_path(work: Path, timing: dict) -> Path:
    return work / f"adaptive-state{schedule_suffix(timing)}{split_suffix(timing)}.json"


def split_suffix(timing: dict) -> str:
    """Tuned samples are tuned as ``codesign measure`` tunes a network's kernels, the same trials
    each (``trial_split="flat"``); their files say so, apart from the runs that shared trials by cost."""
    return "" if timing.get("schedule", "untuned") == "untuned" else "-flat"


def adaptive_db_path(work: Path, timing: dict) -> Path:
    return work / f"adaptive-{timing_tag(timing)}{split_suffix(timing)}.sqlite"


def combine(values, statistic: str) -> float:
    """Several passes' latencies of one kernel or network, combined as the product combines repeats."""
    return float(STATISTICS[statistic](list(values)))


def time_kernels(specs, device, db, timing: dict, trial_split: str = "cost") -> None:
    """Kernels not yet in ``db``, profiled as ``codesign profile`` profiles them (``timing``'s schedule
    policy; tuned kernels are tuned into ``<db>.tuning``, their trials shared out by ``trial_split``)."""
    profile_kernels(specs, device, db, schedule=timing.get("schedule", "untuned"), progress=True,
                    trial_split=trial_split, **{k: v for k, v in timing.items() if k != "schedule"})


def copy_ops(path: Path) -> int:
    """Concat/Slice/Split nodes left after constant folding: copies no kernel in the list covers."""
    from codesign.graph import load_model

    return sum(1 for n in load_model(path).graph.node if n.op_type in ("Concat", "Slice", "Split"))


def leave_one_out_overhead(model, kernel_lists, meas, use_measured):
    """Each network predicted with the overhead fitted on all the *other* networks."""
    out = np.empty(len(meas))
    for i in range(len(meas)):
        rest = [j for j in range(len(meas)) if j != i]
        model.fit_overhead([kernel_lists[j] for j in rest], meas[rest], use_measured)
        out[i] = model.predict_network(kernel_lists[i], use_measured)["latency_ms"]
    model.overhead_ms = model.per_kernel_overhead_ms = 0.0
    return out


IN_NETWORK_FITS = ("overhead", "common_scale", "family_scale", "family_scale_signed")


def mean_abs_log_error(pred, meas) -> float:
    return float(np.mean(np.abs(np.log(np.asarray(pred) / np.asarray(meas)))))


def in_network_fits(sums, meas, train, test) -> dict[str, np.ndarray]:
    """The networks ``test`` predicted with the in-network correction fitted on the networks
    ``train``, each of the ways ``CostModel.fit_overhead`` can fit it (``sums``: every network's
    ``family_sums`` under the model): the constant and per-kernel overhead (the default), one
    common scale besides (``scale=True``), a scale per op family (``per_family=True``), and the
    same with a per-kernel term of either sign (not a ``fit_overhead`` setting: compared here)."""
    return {key: apply_network_terms(fit_network_terms(sums[train], meas[train], mode), sums[test])
            for key, mode in zip(IN_NETWORK_FITS, ("overhead", "scale", "family", "family_signed"))}


# --- "never profiled": kernel-type predictors from adaptive sampling, on networks none of whose
# kernels is in the database -----------------------------------------------------------------------
# torchvision classification networks predicted and measured at 32x32 and 64x64 (the smaller half
# of the zoo: untuned TVM runs the larger ones for seconds, longer than this shared machine gives
# an undisturbed run).
TORCHVISION_NETS = ("resnet18", "resnet34", "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_small",
                    "mobilenet_v3_large", "mnasnet0_5", "mnasnet1_0", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
                    "squeezenet1_0", "squeezenet1_1", "efficientnet_b0", "regnet_x_400mf", "regnet_y_400mf",
                    "googlenet", "densenet121")


TV_CACHE = "measured-torchvision.json"


def tv_subset_cache(names) -> str:
    """The cache of a measuring process given a subset of the torchvision networks: named after them,
    or after a digest of them where the names would make too long a file name."""
    joined = "-".join(names)
    if len(joined) > 150:
        import hashlib

        joined = f"{len(names)}nets-{hashlib.sha256(joined.encode()).hexdigest()[:12]}"
    return f"measured-torchvision-{joined}.json"

# timm networks (benchmarks/export_timm.py: one per family, exported at 64x64), a set that shaped
# none of the choices above: kept when every kernel is of a type the adaptive sampling covers and
# their FLOPs are at most the largest evaluated torchvision network's (untuned TVM runs the larger
# ones for seconds).
TIMM_CACHE = "measured-timm.json"
TIMM_SIZE = 64


def timm_networks(work: Path, types: set[str], max_flops: float) -> tuple[list[tuple[str, Path]], dict]:
    """(name, ONNX path) of the timm networks kept, and why the others were left out."""
    from export_timm import default_dir

    from codesign.predict.features import kernel_type

    folder = default_dir()
    manifest = folder / "manifest.json"
    if not manifest.exists():
        print(f"no timm export at {folder} (run benchmarks/export_timm.py with timm); timm networks left out",
              file=sys.stderr)
        return [], {}
    out, left_out = [], {}
    for entry in (e for _, e in sorted(json.loads(manifest.read_text())["models"].items())):
        if entry.get("size") != TIMM_SIZE or "file" not in entry or not (folder / entry["file"]).exists():
            continue
        name = f"timm_{entry['model']}_{TIMM_SIZE}"
        try:
            specs = network_kernels(folder / entry["file"], work)
        except CodesignError as exc:
            left_out[name] = f"not read: {str(exc)[:120]}"
            continue
        other = sorted({kernel_type(s) for s in specs} - types)
        flops = sum(kernel_flops(s) for s in specs)
        if other:
            left_out[name] = f"kernel types not sampled: {', '.join(other)}"
        elif flops > max_flops:
            left_out[name] = f"{flops / 1e9:.2f} GFLOPs, above the torchvision networks' {max_flops / 1e9:.2f}"
        else:
            out.append((name, folder / entry["file"]))
    return out, left_out


def torchvision_networks(sizes=(32, 64), names=TORCHVISION_NETS) -> list[tuple[str, Path]]:
    """(name, ONNX path) of the torchvision networks that ``export_torchvision.py`` exported."""
    from export_torchvision import default_dir

    folder = default_dir()
    manifest = folder / "manifest.json"
    if not manifest.exists():
        print(f"no torchvision export at {folder} (run benchmarks/export_torchvision.py with a torchvision); "
              "torchvision networks left out", file=sys.stderr)
        return []
    models = json.loads(manifest.read_text())["models"]
    out, missing = [], []
    for name in names:
        for size in sizes:
            entry = models.get(f"{name}_{size}", {})
            if "file" in entry and (folder / entry["file"]).exists():
                out.append((f"tv_{name}_{size}", folder / entry["file"]))
            else:
                missing.append(f"{name}_{size}")
    if missing:
        # Said, so that a partial export folder never passes for the whole set of networks.
        print(f"{len(missing)} torchvision networks not in {folder}, left out: {', '.join(missing)} "
              "(export them with benchmarks/export_torchvision.py --models ...)", file=sys.stderr)
    return out


def stage_adaptive(args, work: Path, exclude: set[str]) -> dict:
    """Adaptive sampling into work/adaptive-<timing>.sqlite, timed as the other kernels (tuned: the
    same trials for every kernel, as ``codesign fit --adaptive``)."""
    from codesign.predict.adaptive import adaptive_sample, real_network_kernels, reference_kernels

    timing = timing_of(args)
    with ProfileDB(adaptive_db_path(work, timing)) as db:
        def profile(specs):
            # --workers processes time slices into the same database (claiming each kernel in it):
            # on a machine many jobs share, each process gets its own slice of the CPUs.
            import subprocess
            import tempfile

            keys = [s.key() for s in specs]
            procs = []
            for i in range(args.workers):
                part = keys[i::args.workers]
                if not part:
                    continue
                f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=work)
                json.dump(part, f)
                f.close()
                procs.append((subprocess.Popen([sys.executable, __file__, "--work", str(work), "--stage", "time-keys",
                                                "--keys", f.name, "--repeats", str(args.repeats), "--schedule", timing["schedule"],
                                                "--min-repeat-ms", str(args.min_repeat_ms),
                                                "--statistic", args.statistic]), f.name))
            for proc, name in procs:
                proc.wait()
                os.unlink(name)

        def measured():
            return {m.kernel_key: m for m in db.query(device="cpu-local", schedule=timing["schedule"])}

        _, report = adaptive_sample(
            profile, measured, args.adaptive_budget, adaptive_state_path(work, timing),
            identity={"device": "cpu-local", "schedule": timing["schedule"], "timing": timing_tag(timing)},
            seed=0, references=reference_kernels(), exclude_keys=exclude, types=args.adaptive_types.split(","),
            real=[] if args.no_real_shapes else real_network_kernels(),
            log=lambda line: print(line, file=sys.stderr, flush=True))
    return report.to_dict()


def seed_cache(seed: int) -> str:
    """The cache of the networks tuned with MetaSchedule seed ``seed`` into a fresh folder (``--tuning-seed``)."""
    return f"measured-seed{seed}.json"


def stage_measure(names_paths, work: Path, timing: dict, net_rounds: int,
                  cache_name: str = "measured.json", tuning_seed: int | None = None) -> dict[str, list[dict]]:
    """Whole-network measurements as ``codesign measure`` takes them (cached in work/<cache_name>;
    a failure is cached as its error). With ``tuning_seed``, tuned into a folder of that seed's
    own (``networks-<timing>-seed<N>.tuning``), cached in ``seed_cache(N)``."""
    device = get_device("cpu-local")
    tuning_dir = work / f"networks-{timing_tag(timing)}.tuning"
    if tuning_seed is not None:
        tuning_dir = work / f"networks-{timing_tag(timing)}-seed{tuning_seed}.tuning"
        cache_name = seed_cache(tuning_seed)
    cache = work / cache_name
    out = {}
    for name, path in names_paths:
        runs = []
        for rnd in range(net_rounds):
            def run(path=path, name=name):
                try:
                    # Tuned: the network's own kernels are tuned into a folder of the benchmark's, apart
                    # from the sampled kernels' tuning records.
                    return measure_network(path, device, timing["schedule"], timing["repeats"],
                                           timing["min_repeat_ms"], name=name, statistic=timing["statistic"],
                                           tuning_dir=str(tuning_dir), tuning_seed=tuning_seed or 0,
                                           progress=timing["schedule"] != "untuned").to_dict()
                except Exception as exc:  # an op TVM cannot import: recorded, left out
                    return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            runs.append(cached(cache, f"tvm{rnd}:{timing_tag(timing)}:{name}", run))
            print(f"{name}: {runs[-1].get('latency_ms', runs[-1].get('error'))}", file=sys.stderr, flush=True)
        out[name] = runs
    return out


def stage_network_kernels(names_paths, work: Path, timing: dict) -> None:
    """The kernels of the networks ``names_paths`` (those measured), timed alone into
    work/kernels-<timing>-0.sqlite: the truth of the never-profiled report's per-type kernel table.
    Tuned, each kernel is tuned as the samples are (the same trials each) into the networks' tuning
    folder: a kernel alone is another workload than the fused function the network ran (other
    names and attributes), so the network's own records rarely apply to it."""
    tag = timing_tag(timing)
    specs = [s for _, path in names_paths for s in network_kernels(path, work)]
    print(f"timing the {len({s.key() for s in specs})} kernels of {len(names_paths)} measured networks", file=sys.stderr)
    with ProfileDB(work / f"kernels-{tag}-0.sqlite") as db:
        profile_kernels(specs, get_device("cpu-local"), db, schedule=timing["schedule"], progress=True,
                        repeats=timing["repeats"], min_repeat_ms=timing["min_repeat_ms"], statistic=timing["statistic"],
                        tuning_dir=str(work / f"networks-{tag}.tuning"), trial_split="flat")


def cached_runs(cache: Path, names, timing: dict, rounds: int) -> dict[str, list[dict]]:
    """The measurements ``stage_measure`` cached (networks not measured yet get none)."""
    data = json.loads(cache.read_text()) if cache.exists() else {}
    tag = timing_tag(timing)
    return {name: [data[k] for k in (f"tvm{r}:{tag}:{name}" for r in range(rounds)) if k in data] for name in names}


def cached_measurements(work: Path, acc_nets, tv_nets, timm_nets, timing: dict, args) -> dict[str, list[dict]]:
    """Every network's runs that the measuring stages have cached so far (networks without any left out)."""
    zoo_cache = work / ("measured.json" if args.judge_seed is None else seed_cache(args.judge_seed))
    measured = {k: v for k, v in cached_runs(zoo_cache, [name for name, *_ in acc_nets], timing,
                                              args.net_rounds).items() if v}
    for cache in sorted(work.glob("measured-torchvision*.json")):
        for name, runs in cached_runs(cache, [name for name, _ in tv_nets], timing, args.tv_rounds).items():
            if runs:
                measured[name] = runs
    measured.update({k: v for k, v in cached_runs(work / TIMM_CACHE, [n for n, _ in timm_nets], timing,
                                                  args.tv_rounds).items() if v})
    return measured


def pass_agreement(passes: dict[str, list[float]]) -> dict:
    """How far each item's second pass lies from its first (items with fewer passes are left out):
    the share within ±5 % and ±10 % of the first, the median relative change, and how alike the
    two passes rank the items (Kendall τ)."""
    from scipy.stats import kendalltau

    pairs = np.array([v[:2] for v in passes.values() if len(v) >= 2 and v[0] > 0])
    if not len(pairs):
        return {"items": 0, "note": "one pass only (--net-rounds / --rounds 2 time a second)"}
    change = np.abs(pairs[:, 1] / pairs[:, 0] - 1)
    return {"items": int(len(change)), "within_5pct": float(np.mean(change <= 0.05)),
            "within_10pct": float(np.mean(change <= 0.10)), "median_change": float(np.median(change)),
            "kendall_tau": float(kendalltau(pairs[:, 0], pairs[:, 1])[0]) if len(pairs) > 1 else None}


def seed_runs(work: Path, tag: str, leave_out: int | None = None) -> dict[str, dict[int, float]]:
    """{network: {seed: latency_ms}} of the networks tuned with ``--tuning-seed`` under timing ``tag``."""
    runs: dict[str, dict[int, float]] = {}
    for path in sorted(work.glob(seed_cache("*"))):
        seed = int(path.stem.removeprefix("measured-seed"))
        if seed == leave_out:
            continue
        for key, r in json.loads(path.read_text()).items():
            if key.split(":")[1] == tag and "error" not in r:
                runs.setdefault(key.rsplit(":", 1)[1], {})[seed] = r["latency_ms"]
    return runs


def column_pairs(columns: np.ndarray, names: list[str]) -> dict[str, dict]:
    """``pass_agreement`` of every pair of columns (one tuning each) of a networks × tunings array."""
    return {f"{names[a]} vs {names[b]}": pass_agreement({i: [columns[i, a], columns[i, b]] for i in range(len(columns))})
            for a in range(len(names)) for b in range(a + 1, len(names))}


def seed_agreement(runs: dict[str, dict[int, float]]) -> dict:
    """How alike the tunings of the same networks with different seeds are: every pair of seeds,
    the spread of each network, and how often one tuning lies within ±10 % of the geometric mean
    of the others (about the best a predictor that never tuned the network could do)."""
    seeds = sorted({s for v in runs.values() for s in v})
    names = sorted(n for n, v in runs.items() if all(s in v for s in seeds))
    if len(seeds) < 2 or not names:
        return {"seeds": seeds, "networks": len(names)}
    lat = np.array([[runs[n][s] for s in seeds] for n in names])
    pairs = column_pairs(lat, [f"seed {s}" for s in seeds])
    near = [accuracy(np.exp(np.log(np.delete(lat, c, axis=1)).mean(axis=1)), lat[:, c]) for c in range(len(seeds))]
    spread = lat.max(axis=1) / lat.min(axis=1)
    return {"seeds": seeds, "networks": len(names), "seed_pairs": pairs,
            "max_over_min_median": float(np.median(spread)), "max_over_min_p90": float(np.quantile(spread, 0.9)),
            "near_other_seeds_mean_within_10pct": {f"seed {s}": float(a["within_10pct"]) for s, a in zip(seeds, near)},
            "per_network_ms": {n: dict(zip(map(str, seeds), map(float, row))) for n, row in zip(names, lat)}}


def tuning_luck(work: Path, rows: list[dict], pred, judge_seed: int | None, tag: str) -> dict | None:
    """Under a tuned policy, how much of a network's latency is MetaSchedule's luck: the networks
    tuned with other seeds into fresh folders (``--stage measure-zoo --tuning-seed N``), against
    the measurement the predictions are judged by (``measured.json``, seed 0, or with
    ``--judge-seed N`` that seed's).

    ``seed_pairs``: how alike two tunings of the same networks are (within ±10 % of each other;
    seed 0 tuned again into a fresh folder is the first seed-0 tuning repeated).
    ``measured_near_seed_mean``: the share of networks whose judged measurement lies within
    ±10 % of the geometric mean of their tunings with the other seeds: about the best a predictor
    that knew a network's typical tuned latency exactly, but not the luck of the judged seed,
    could score. ``predicted_against_seed_mean``: the predictions judged against the geometric
    mean of the judged measurement and the other seeds' instead."""
    judged_seed = 0 if judge_seed is None else judge_seed
    runs = seed_runs(work, tag, leave_out=judge_seed)  # (the judged measurement itself left out)
    if not runs:
        return None
    seeds = sorted({s for v in runs.values() for s in v})
    idx = [i for i, r in enumerate(rows) if all(s in runs.get(r["name"], {}) for s in seeds)]
    if not idx:
        return {"seeds": seeds, "networks": 0}
    judged = np.array([rows[i]["measured_ms"] for i in idx])
    every = np.column_stack([judged] + [[runs[rows[i]["name"]][s] for i in idx] for s in seeds])
    names = [f"judged (seed {judged_seed})"] + [f"seed {s}" + (" again" if s == judged_seed else "") for s in seeds]
    out = {"judged_seed": judged_seed, "seeds": seeds, "networks": len(idx), "seed_pairs": column_pairs(every, names)}
    other = every[:, [1 + c for c, s in enumerate(seeds) if s != judged_seed]]
    if other.shape[1]:
        draws = np.column_stack([judged, other])
        spread = draws.max(axis=1) / draws.min(axis=1)
        out.update(max_over_min_median=float(np.median(spread)), max_over_min_p90=float(np.quantile(spread, 0.9)),
                   measured_near_seed_mean=accuracy(np.exp(np.log(other).mean(axis=1)), judged),
                   predicted_against_seed_mean=accuracy(np.asarray(pred)[idx], np.exp(np.log(draws).mean(axis=1))),
                   predicted_against_judged=accuracy(np.asarray(pred)[idx], judged))
    return out


def never_profiled(args, work: Path, nets: list[tuple[str, Path, str]], measured: dict, bench_kernels_db: Path) -> dict:
    """Every network predicted by kernel-type predictors fitted on the adaptive samples minus
    every kernel of every evaluated network; overhead fitted leave-one-out as in profiled mode."""
    kernels = {name: network_kernels(path, work) for name, path, _ in nets}
    net_keys = {s.key() for ks in kernels.values() for s in ks}
    timing = timing_of(args)
    with ProfileDB(adaptive_db_path(work, timing)) as db:
        records = db.query(device="cpu-local", schedule=timing["schedule"], ok_only=True)
    train = [m for m in records if m.kernel_key not in net_keys]
    models = {kind: create_cost_model(kind, seed=0).fit(train) for kind in ("kernel-type", "gbdt")}
    rows = []
    for name, path, group in nets:
        runs = [r for r in measured.get(name, []) if "error" not in r]
        if not runs:
            continue
        specs = kernels[name]
        kt = models["kernel-type"].predict_network(specs, use_measured=False)
        rows.append({
            "name": name, "onnx": str(path), "group": group, "kernels": len(specs),
            "measured_ms": combine((r["latency_ms"] for r in runs), args.statistic),
            "kernel_sum_ms": kt["latency_ms"], "interval_ms": kt["latency_interval_ms"],
            "gbdt_kernel_sum_ms": models["gbdt"].predict_network(specs, use_measured=False)["latency_ms"],
            "out_of_range_kernels": len(kt["out_of_range"]),
            "flops": sum(kernel_flops(s) for s in specs),
        })
    meas = np.array([r["measured_ms"] for r in rows])
    kl = [kernels[r["name"]] for r in rows]
    # The in-network correction of each network fitted on all the other networks (leave one out),
    # three ways; family_scale (`codesign fit --networks`' default for kernel-type models) is the
    # figure reported as kernel_type and gbdt.
    in_network, loo, sums_of = {}, {}, {}
    for kind in ("kernel-type", "gbdt"):
        sums = sums_of[kind] = family_sums(models[kind], kl, use_measured=False)
        loo[kind] = {k: np.empty(len(rows)) for k in IN_NETWORK_FITS}
        for i in range(len(rows)):
            got = in_network_fits(sums, meas, np.delete(np.arange(len(rows)), i), [i])
            for k in IN_NETWORK_FITS:
                loo[kind][k][i] = got[k][0]
        in_network[kind] = {"leave_one_out": {k: {**accuracy(v, meas), "mean_abs_log_error": mean_abs_log_error(v, meas)}
                                              for k, v in loo[kind].items()}}
        # One group (--held-out; timm's networks by default: the set on which family_scale was
        # chosen over overhead, by a rule written down before they were measured) predicted with
        # the correction fitted on the other networks only.
        held = np.array([i for i, r in enumerate(rows) if r["group"] == args.held_out], dtype=int)
        if 1 < len(held) < len(rows) - 3:
            got = in_network_fits(sums, meas, np.setdiff1d(np.arange(len(rows)), held), held)
            in_network[kind][f"{args.held_out}_fitted_on_the_others"] = {
                k: {**accuracy(v, meas[held]), "mean_abs_log_error": mean_abs_log_error(v, meas[held])}
                for k, v in got.items()}
            if kind == "kernel-type":
                for k, v in got.items():
                    for i, p in zip(held, v):
                        rows[i][f"{k}_fitted_on_the_others_ms"] = float(p)
    for k in IN_NETWORK_FITS:
        for r, p in zip(rows, loo["kernel-type"][k]):
            r[f"{k}_ms"] = float(p)
    pred, pred_gbdt = loo["kernel-type"]["family_scale"], loo["gbdt"]["family_scale"]
    flops = np.array([r["flops"] for r in rows])
    flops_pred = np.array([flops[i] * np.median(np.delete(meas / flops, i)) for i in range(len(rows))])
    for r, p, q in zip(rows, pred, pred_gbdt):
        r["predicted_ms"], r["gbdt_predicted_ms"] = float(p), float(q)
        # The interval of the kernel sum, scaled as the prediction is.
        ratio = float(p) / r["kernel_sum_ms"]
        r["interval_ms"] = [r["interval_ms"][0] * ratio, r["interval_ms"][1] * ratio]
    inside = np.array([r["interval_ms"][0] <= r["measured_ms"] <= r["interval_ms"][1] for r in rows])
    # The network-level interval `codesign fit --networks` gives (19 networks or more): split
    # conformal on the fitted networks' leave-one-out errors. Over all networks, each network's
    # bounds come from the other networks' leave-one-out errors (jackknife+); for the --held-out
    # group, from the other networks', as `fit --networks` on them would store.
    level = models["kernel-type"].interval_level()
    resid = np.log(meas / pred)
    conformal = []
    for i in range(len(rows)):
        lo_i, hi_i = conformal_bounds(np.delete(resid, i), level)
        conformal.append((pred[i] * np.exp(lo_i), pred[i] * np.exp(hi_i)))
    conformal = np.array(conformal)

    def interval_score(bounds, idx):
        b = np.asarray(bounds)[idx]
        return {"networks": int(len(idx)), "coverage": float(np.mean((b[:, 0] <= meas[idx]) & (meas[idx] <= b[:, 1]))),
                "median_high_over_low": float(np.median(b[:, 1] / b[:, 0]))}

    every = np.arange(len(rows))
    kernel_bounds = [r["interval_ms"] for r in rows]
    intervals = {"level": level, "kernel_bounds_added": interval_score(kernel_bounds, every),
                 "network_conformal": interval_score(conformal, every)}
    if 1 < len(held) < len(rows) - 3:
        # what `fit --networks` (family scale) on the other networks stores, applied to the group
        fit_on, sums = np.setdiff1d(every, held), sums_of["kernel-type"]
        pred_held = apply_network_terms(fit_network_terms(sums[fit_on], meas[fit_on], "family"), sums[held])
        lo_h, hi_h = network_log_interval(sums[fit_on], meas[fit_on], "family", level)
        full = np.zeros((len(rows), 2))
        full[held] = np.stack([pred_held * np.exp(lo_h), pred_held * np.exp(hi_h)], axis=1)
        intervals[f"{args.held_out}_kernel_bounds_added"] = interval_score(kernel_bounds, held)
        intervals[f"{args.held_out}_network_conformal_fitted_on_the_others"] = interval_score(full, held)
    groups = {}
    for g in sorted({r["group"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["group"] == g]
        groups[g] = accuracy(pred[idx], meas[idx])
    flagged = np.array([r["out_of_range_kernels"] > 0 for r in rows])
    err = np.abs(pred / meas - 1)

    # Kernel level: the evaluated networks' own kernels, profiled for the profiled mode (same
    # timing), predicted by the never-profiled models: the per-type error table.
    from codesign.predict.features import kernel_type

    kmeas = {}
    if bench_kernels_db.exists():  # (tuned: --stage network-kernels writes it)
        with ProfileDB(bench_kernels_db) as db:
            kmeas = {m.kernel_key: m.latency_ms for m in db.query(device="cpu-local", schedule=timing["schedule"],
                                                                   ok_only=True) if m.kernel_key in net_keys}
    kspecs = [KernelSpec.from_key(k) for k in kmeas]
    kpred = models["kernel-type"].predict(kspecs, use_measured=False)
    kgbdt = models["gbdt"].predict(kspecs, use_measured=False)
    kvals = np.array(list(kmeas.values()))
    ktypes = np.array([kernel_type(s) for s in kspecs])
    lo, hi = models["kernel-type"].predict_interval(kspecs, use_measured=False)
    per_type = {}
    for t in sorted(set(ktypes)):
        idx = ktypes == t
        if idx.sum() >= 2:
            per_type[t] = {"kernel_type": accuracy(kpred[idx], kvals[idx]), "gbdt": accuracy(kgbdt[idx], kvals[idx]),
                           "interval_coverage": float(np.mean((lo[idx] <= kvals[idx]) & (kvals[idx] <= hi[idx]))),
                           "train_kernels": sum(1 for m in train if kernel_type(m.spec) == t)}
    # How well this host repeats its own timings: the ceiling of any "within ±10 %" figure above.
    ok_runs = {r["name"]: [x for x in measured[r["name"]] if "error" not in x] for r in rows}
    retest = {"networks": pass_agreement({k: [x["latency_ms"] for x in v] for k, v in ok_runs.items()}),
              # the fastest repeat of each pass: what a "--statistic min" measurement would read
              "networks_fastest_repeat": pass_agreement({k: [x["latency_min_ms"] for x in v if "latency_min_ms" in x]
                                                         for k, v in ok_runs.items()})}
    second = bench_kernels_db.with_name(bench_kernels_db.name.replace("-0.sqlite", "-1.sqlite"))
    if second.exists():
        with ProfileDB(second) as db:
            again = {m.kernel_key: m.latency_ms for m in db.query(device="cpu-local", schedule=timing["schedule"],
                                                                   ok_only=True)}
        retest["network_kernels"] = pass_agreement({k: [v, again[k]] for k, v in kmeas.items() if k in again})
    luck = tuning_luck(work, rows, pred, args.judge_seed, timing_tag(timing))
    return {
        "networks": len(rows), "train_kernels": len(train), "measurement_retest": retest, "tuning_luck": luck,
        "adaptive_kernels_dropped_as_network_kernels": len(records) - len(train),
        "accuracy": {"kernel_type": accuracy(pred, meas), "gbdt_same_samples": accuracy(pred_gbdt, meas),
                     "flops_proxy": accuracy(flops_pred, meas),
                     "kernel_type_no_overhead": accuracy([r["kernel_sum_ms"] for r in rows], meas),
                     "kernel_type_constant_overhead": accuracy(loo["kernel-type"]["overhead"], meas)},
        "in_network_correction": in_network,
        "by_group": groups,
        "interval_coverage": float(inside.mean()),
        "intervals": intervals,
        "interval_level": models["kernel-type"].heads["latency_ms"]["level"],
        "flagged_out_of_range": {"networks": int(flagged.sum()),
                                 "within_10pct_flagged": float(np.mean(err[flagged] <= 0.1)) if flagged.any() else None,
                                 "within_10pct_unflagged": float(np.mean(err[~flagged] <= 0.1)) if (~flagged).any()
                                 else None},
        "kernels_of_networks": {"n": len(kspecs), "kernel_type": accuracy(kpred, kvals) if len(kspecs) > 1 else None,
                                "gbdt": accuracy(kgbdt, kvals) if len(kspecs) > 1 else None,
                                "interval_coverage": float(np.mean((lo <= kvals) & (kvals <= hi))) if len(kspecs) else None},
        "per_type": per_type,
        "per_network": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="predictor-bench", help="work directory (ONNX files, caches, PNG)")
    ap.add_argument("--repeats", type=int, default=10,
                    help="timed repeats per kernel and network (default 10, as `codesign profile` and `measure`)")
    ap.add_argument("--min-repeat-ms", type=float, default=50.0,
                    help="minimum duration of one repeat (default 50, as `codesign profile` and `measure`)")
    ap.add_argument("--statistic", choices=sorted(STATISTICS), default="median",
                    help="how repeats (and passes) become one latency, for kernels, networks and onnxruntime "
                         "alike (default median, the product's)")
    ap.add_argument("--net-rounds", type=int, default=1,
                    help="separate passes over the networks (each compiled and timed again; default 1)")
    ap.add_argument("--rounds", type=int, default=1, help="separate kernel profiling passes (default 1)")
    ap.add_argument("--grid-samples", type=int, default=150, help="conv2d grid kernels profiled for the model-only fit")
    ap.add_argument("--per-space", type=int, default=4, help="architectures sampled from each search space")
    ap.add_argument("--stage", default="all", choices=["all", "profiled", "adaptive", "measure-torchvision",
                                                         "never-profiled", "measure-timm", "measure-zoo", "time-keys",
                                                         "network-kernels", "tuning-luck"],
                    help="run one part only (each resumes from the caches in --work): the profiled-mode "
                         "comparison; adaptive sampling; torchvision network measurements; the never-profiled "
                         "report; timm network measurements (benchmarks/export_timm.py's, at 64x64); the "
                         "measured networks' own kernels timed alone (tuned: tuned as the samples are), the "
                         "truth of the never-profiled report's per-type kernel table; how alike the zoo's "
                         "tunings with different --tuning-seed are")
    ap.add_argument("--adaptive-budget", type=int, default=2800,
                    help="kernels adaptive sampling profiles (default 2800; docs/predict.md, \"Samples around real "
                         "networks' kernels\", for what more kernels gave)")
    ap.add_argument("--schedule", default="untuned", type=bench_schedule,
                    help="schedule policy of the never-profiled stages (adaptive, measure-*, never-profiled): "
                         "untuned (default) or tuned (MetaSchedule, as `codesign profile`/`measure` tune on a CPU; "
                         "metaschedule:N, N trials per kernel, for --stage measure-zoo and tuning-luck only; "
                         "caches and databases of their own). The profiled-mode comparison is untuned only")
    ap.add_argument("--tuning-seed", type=int, default=None, metavar="N",
                    help="--stage measure-zoo --schedule tuned: tune the networks with MetaSchedule seed N into a "
                         "fresh folder of that seed's (the report's tuning_luck compares the seeds)")
    ap.add_argument("--kernels-of", choices=["all", "zoo"], default="all",
                    help="--stage network-kernels: the kernels of every measured network (default) or of the "
                         "zoo's only (the per-type table of the earlier runs)")
    ap.add_argument("--judge-seed", type=int, default=None, metavar="N",
                    help="--stage never-profiled --schedule tuned: judge the zoo's predictions by the networks "
                         "tuned with seed N into a fresh folder (--stage measure-zoo --tuning-seed N)")
    ap.add_argument("--zoo-nets", nargs="+", default=None, metavar="NAME",
                    help="--stage measure-zoo (and tuning-luck): only these of the networks written here (default all)")
    ap.add_argument("--no-real-shapes", action="store_true",
                    help="adaptive sampling without the shipped real networks' kernels (as `codesign fit --adaptive "
                         "--no-real-shapes`)")
    ap.add_argument("--adaptive-types", default="conv,conv_pointwise,conv_depthwise,conv_grouped,dense,max_pool,"
                    "avg_pool,global_pool,batch_norm,add,mul,activation",
                    help="kernel types sampled (default: those of CNNs; the networks here have no attention)")
    ap.add_argument("--workers", type=int, default=4, help="processes timing adaptive samples at once")
    ap.add_argument("--keys", default=None, help=argparse.SUPPRESS)  # --stage time-keys: a JSON list of kernel keys
    ap.add_argument("--tv-nets", nargs="+", default=list(TORCHVISION_NETS), help="torchvision networks evaluated")
    ap.add_argument("--tv-rounds", type=int, default=1, help="passes over the torchvision networks")
    ap.add_argument("--tv-sizes", type=int, nargs="+", default=[32, 64], help="torchvision input sizes")
    ap.add_argument("--held-out", default=f"timm{TIMM_SIZE}", metavar="GROUP",
                    help="never-profiled: the group of networks (zoo32, torchvisionS, timm64) also predicted with "
                         "the in-network correction fitted on all the other networks only (default timm64)")
    args = ap.parse_args()
    torch.manual_seed(0)
    work = Path(args.work)
    if args.schedule.startswith("metaschedule") and args.stage not in ("measure-zoo", "tuning-luck"):
        ap.error(f"--schedule {args.schedule} goes with --stage measure-zoo and tuning-luck")
    if args.tuning_seed is not None and (args.schedule == "untuned" or args.stage != "measure-zoo"):
        ap.error("--tuning-seed goes with --stage measure-zoo and a tuned --schedule")
    if args.judge_seed is not None and (args.schedule == "untuned" or args.stage != "never-profiled"):
        ap.error("--judge-seed goes with --stage never-profiled --schedule tuned")
    if args.tuning_seed is not None and not 0 <= args.tuning_seed < 2**31:
        ap.error(f"--tuning-seed must be in [0, 2^31), got {args.tuning_seed}")
    if args.schedule != "untuned" and args.stage in ("all", "profiled"):
        ap.error(f"--schedule {args.schedule} goes with the never-profiled stages (adaptive, measure-zoo, "
                 "measure-torchvision, measure-timm, never-profiled); the profiled-mode comparison is untuned")
    timing = timing_of(args)
    tag = timing_tag(timing)
    if args.stage == "time-keys":  # a worker of stage_adaptive
        with ProfileDB(adaptive_db_path(work, timing)) as db:
            time_kernels([KernelSpec.from_key(k) for k in json.loads(Path(args.keys).read_text())],
                         get_device("cpu-local"), db, timing, trial_split="flat")
        return
    work.mkdir(parents=True, exist_ok=True)
    device = get_device("cpu-local")
    t_start = time.perf_counter()
    loads = [os.getloadavg()]

    acc_nets = accuracy_zoo(args.per_space)
    rng = random.Random(1)
    cal_nets = [(f"random_{i}", random_net(rng), SHAPE, None) for i in range(40)]
    paths = export_all(acc_nets + cal_nets, work / "onnx")
    kernels = {name: network_kernels(p, work) for name, p in paths.items()}
    bench_keys = {s.key() for name in paths for s in kernels[name]}
    tv_nets = torchvision_networks(tuple(args.tv_sizes), tuple(args.tv_nets))
    tv_keys, readable = set(), []
    for name, path in tv_nets:
        try:
            tv_keys |= {s.key() for s in network_kernels(path, work)}
            readable.append((name, path))
        except CodesignError as exc:
            print(f"{name}: left out ({exc})", file=sys.stderr)
    tv_nets = readable
    timm_nets, timm_left_out = [], {}
    if args.stage in ("all", "adaptive", "measure-timm", "never-profiled"):
        tv64 = [sum(kernel_flops(s) for s in network_kernels(p, work)) for n, p in tv_nets if n.endswith("_64")]
        if tv64:
            timm_nets, timm_left_out = timm_networks(work, set(args.adaptive_types.split(",")), max(tv64))
    timm_keys = {s.key() for _, p in timm_nets for s in network_kernels(p, work)}
    if args.stage == "measure-zoo":
        names = [name for name, *_ in acc_nets]
        unknown = sorted(set(args.zoo_nets or ()) - set(names))
        if unknown:
            ap.error(f"--zoo-nets: unknown network(s) {', '.join(unknown)}; known: {', '.join(names)}")
        stage_measure([(n, paths[n]) for n in names if args.zoo_nets is None or n in args.zoo_nets], work, timing,
                      args.net_rounds, tuning_seed=args.tuning_seed)
        return
    if args.stage == "tuning-luck":
        keep = set(args.zoo_nets or (name for name, *_ in acc_nets))
        res = seed_agreement({n: v for n, v in seed_runs(work, tag).items() if n in keep})
        res.update(benchmark="predictor:tuning-luck", schedule=timing["schedule"], hardware=hardware(),
                   load_average_1_5_15=os.getloadavg())
        subset = f"-{len(keep)}nets" if args.zoo_nets else ""
        write_json(work / f"tuning_luck{schedule_suffix(timing)}{subset}.json", res, indent=2)
        print(json.dumps({k: v for k, v in res.items() if k != "per_network_ms"}, indent=2))
        return
    if args.stage == "network-kernels":
        measured = cached_measurements(work, acc_nets, tv_nets, timm_nets, timing, args)
        every = [(n, paths[n]) for n, *_ in acc_nets]
        if args.kernels_of == "all":
            every += list(tv_nets) + list(timm_nets)
        stage_network_kernels([(n, p) for n, p in every if any("error" not in r for r in measured.get(n, []))],
                              work, timing)
        return
    if args.stage == "measure-timm":
        print(f"{len(timm_nets)} timm networks to measure; {len(timm_left_out)} left out", file=sys.stderr)
        stage_measure(timm_nets, work, timing, args.tv_rounds, TIMM_CACHE)
        return
    if args.stage == "adaptive":
        print(json.dumps(stage_adaptive(args, work, bench_keys | tv_keys | timm_keys), indent=2))
        return
    if args.stage == "measure-torchvision":
        # One cache per set of networks, so that several measuring processes can run at once.
        stage_measure(tv_nets, work, timing, args.tv_rounds,
                      TV_CACHE if args.tv_nets == list(TORCHVISION_NETS) else tv_subset_cache(args.tv_nets))
        return
    if args.stage in ("all", "never-profiled"):
        if args.stage == "all":
            stage_adaptive(args, work, bench_keys | tv_keys | timm_keys)
            stage_measure(tv_nets, work, timing, args.tv_rounds, TV_CACHE)
            stage_measure(timm_nets, work, timing, args.tv_rounds, TIMM_CACHE)
        if args.stage == "all":
            measured = stage_measure([(name, paths[name]) for name, *_ in acc_nets], work, timing, args.net_rounds)
            measured.update(stage_measure(tv_nets, work, timing, args.tv_rounds, TV_CACHE))
            measured.update(stage_measure(timm_nets, work, timing, args.tv_rounds, TIMM_CACHE))
        else:  # the report alone: what the measuring stages have cached so far
            measured = cached_measurements(work, acc_nets, tv_nets, timm_nets, timing, args)
        nets = [(name, paths[name], "zoo32") for name, *_ in acc_nets]
        nets += [(name, path, f"torchvision{name.rsplit('_', 1)[1]}") for name, path in tv_nets]
        nets += [(name, path, f"timm{TIMM_SIZE}") for name, path in timm_nets]
        res = never_profiled(args, work, nets, measured, work / f"kernels-{tag}-0.sqlite")
        res.update(benchmark="predictor:never-profiled", hardware=hardware(), load_average_1_5_15=os.getloadavg(),
                   timing=f"kernels (codesign profile) and networks (codesign measure) alike: the {args.statistic} "
                          f"of {args.repeats} repeats of >= {args.min_repeat_ms:g} ms",
                   device="cpu-local", schedule=timing["schedule"], adaptive_budget=args.adaptive_budget,
                   timm_left_out=timm_left_out,
                   adaptive_state=(json.loads(adaptive_state_path(work, timing).read_text())["rounds"][-1]
                                   if adaptive_state_path(work, timing).exists() else None))
        judged = "" if args.judge_seed is None else f"-judged-seed{args.judge_seed}"
        res["zoo_judged_by"] = "measured.json" if args.judge_seed is None else seed_cache(args.judge_seed)
        (work / f"never_profiled{schedule_suffix(timing)}{judged}.json").write_text(json.dumps(res, indent=2))
        print(json.dumps({k: v for k, v in res.items() if k != "per_network"}, indent=2))
        if args.stage == "never-profiled":
            return

    # With --rounds R every kernel is profiled in R separate passes (separate profile databases)
    # and the passes combined with the timing statistic.
    grid = grid_specs("conv2d", args.grid_samples, 0)
    for op in ("max_pool2d", "avg_pool2d", "global_avg_pool2d", "dense", "add", "relu", "batch_norm"):
        grid += grid_specs(op, 20, 0)
    # Stems: 3 input channels, outside the conv grid's channel range.
    grid += [KernelSpec.make("conv2d", (1, 3, r, r), out_channels=co, kernel=k, stride=st, bias=True, activation=act)
             for r in (16, 32) for co in (8, 16, 32) for k in (3, 5) for st in (1, 2) for act in ("none", "relu")]
    acc_specs = [s for name, *_ in acc_nets for s in kernels[name]]
    cache = work / "measured.json"
    t0 = time.perf_counter()
    for rnd in range(args.rounds):
        with ProfileDB(work / f"kernels-{tag}-{rnd}.sqlite") as db:
            time_kernels(acc_specs, device, db, timing)
    profile_s = time.perf_counter() - t0
    loads.append(os.getloadavg())
    measured = {name: [cached(cache, f"tvm{rnd}:{tag}:{name}", lambda name=name: measure_network(
        paths[name], device, "untuned", args.repeats, args.min_repeat_ms, name=name,
        statistic=args.statistic).to_dict()) for rnd in range(args.net_rounds)] for name, *_ in acc_nets}
    loads.append(os.getloadavg())
    for rnd in range(args.rounds):
        with ProfileDB(work / f"kernels-{tag}-{rnd}.sqlite") as db:
            time_kernels(grid, device, db, timing)
    passes: dict[str, list[Measurement]] = {}
    for rnd in range(args.rounds):
        with ProfileDB(work / f"kernels-{tag}-{rnd}.sqlite") as db:
            for m in db.query(device="cpu-local", schedule="untuned", ok_only=True):
                passes.setdefault(m.kernel_key, []).append(m)
    best = {k: dataclasses.replace(ms[0], latency_ms=combine((m.latency_ms for m in ms), args.statistic))
            for k, ms in passes.items()}
    grid_records = [m for k, m in best.items() if k not in bench_keys]
    model_only = create_cost_model("gbdt", seed=0).fit(grid_records)
    profiled = create_cost_model("gbdt", seed=0).fit(list(best.values()))

    rows = []
    for name, _, _, genotype in acc_nets:
        runs = measured[name]
        specs = kernels[name]
        rows.append({
            "name": name, "genotype": genotype, "kernels": len(specs), "copy_ops": copy_ops(paths[name]),
            "measured_ms": combine((r["latency_ms"] for r in runs), args.statistic),
            "measured_per_pass_ms": [r["latency_ms"] for r in runs],
            "measured_fastest_repeat_ms": min(r["latency_min_ms"] for r in runs),
            "onnxruntime_ms": combine((r["onnxruntime_latency_ms"] for r in runs), args.statistic),
            "kernel_sum_profiled_ms": profiled.predict_network(specs)["latency_ms"],
            "kernel_sum_model_only_ms": model_only.predict_network(specs, use_measured=False)["latency_ms"],
            "flops": sum(kernel_flops(s) for s in specs),
        })
        print(f"{name}: measured {rows[-1]['measured_ms']:.3f} ms, kernel sum {rows[-1]['kernel_sum_profiled_ms']:.3f}, "
              f"model-only {rows[-1]['kernel_sum_model_only_ms']:.3f}", file=sys.stderr)
    meas = np.array([r["measured_ms"] for r in rows])
    flops = np.array([r["flops"] for r in rows])
    kl = [kernels[r["name"]] for r in rows]
    # The network overhead of each network is fitted on the other networks only (leave one out).
    prof = leave_one_out_overhead(profiled, kl, meas, True)
    only = leave_one_out_overhead(model_only, kl, meas, False)
    for r, p, o in zip(rows, prof, only):
        r["profiled_ms"], r["model_only_ms"] = float(p), float(o)
    results = {
        "profiled": accuracy(prof, meas),
        "model_only": accuracy(only, meas),
        "kernel_sum_profiled_no_overhead": accuracy([r["kernel_sum_profiled_ms"] for r in rows], meas),
        "kernel_sum_model_only_no_overhead": accuracy([r["kernel_sum_model_only_ms"] for r in rows], meas),
        # FLOPs scaled by the other networks' median ms/FLOP (leave one out as well).
        "flops_proxy": accuracy([flops[i] * np.median(np.delete(meas / flops, i)) for i in range(len(rows))], meas),
    }
    profiled.fit_overhead(kl, meas)
    overhead_all = {"overhead_ms": profiled.overhead_ms, "per_kernel_overhead_ms": profiled.per_kernel_overhead_ms}
    by_source = {}
    for prefix in sorted({r["name"].split("_")[0] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["name"].split("_")[0] == prefix]
        by_source[prefix] = {"n": len(idx), "within_10pct": float(np.mean(np.abs(prof[idx] / meas[idx] - 1) <= 0.1)),
                             "median_ape": float(np.median(np.abs(prof[idx] / meas[idx] - 1)))}

    # --- calibration to onnxruntime on this CPU (the "new device") ---
    all_names = [name for name, *_ in acc_nets + cal_nets]
    ort_ms = np.array([combine((cached(cache, f"ort{rnd}:{tag}:{name}", lambda name=name: time_onnxruntime(
        paths[name], 1, args.repeats, args.min_repeat_ms, statistic=args.statistic)[0])
        for rnd in range(args.rounds)), args.statistic) for name in all_names])
    loads.append(os.getloadavg())
    sums = family_sums(profiled, [kernels[n] for n in all_names])
    base_pred = sums[:, :-1].sum(axis=1)
    calib = {}
    for n in (5, 10, 20, 50):
        taus, w10, base_taus = [], [], []
        for draw in range(10):
            perm = np.random.default_rng(100 + draw).permutation(len(all_names))
            tr, te = perm[:n], perm[n:]
            w, c = fit_weights(sums[tr], ort_ms[tr])
            pred = sums[te, :-1] @ w + c * sums[te, -1]
            a = accuracy(pred, ort_ms[te])
            taus.append(a["kendall_tau"])
            w10.append(a["within_10pct"])
            base_taus.append(accuracy(base_pred[te], ort_ms[te])["kendall_tau"])
        calib[str(n)] = {"eval_networks": len(all_names) - n, "kendall_tau": float(np.mean(taus)),
                         "kendall_tau_min": float(np.min(taus)), "within_10pct": float(np.mean(w10)),
                         "base_uncalibrated_kendall_tau": float(np.mean(base_taus))}
    # The same through the public API / CLI table format, for the record.
    table = work / "ort_table.csv"
    with open(table, "w") as f:
        f.write("model,latency_ms\n")
        for name, v in zip(all_names, ort_ms):
            f.write(f"onnx/{name}.onnx,{v}\n")
    from codesign.predict.calibrate import read_table

    api_model = calibrate(profiled, read_table(table)[:20], "onnxruntime-cpu")

    out = {
        "benchmark": "predictor",
        "hardware": hardware(),
        "load_average_1_5_15": {"start": loads[0], "after_network_kernels": loads[1], "after_tvm_networks": loads[2],
                                "end": loads[3]},
        "rounds": args.rounds, "net_rounds": args.net_rounds, **timing,
        "timing": f"kernels (codesign profile), networks (codesign measure) and onnxruntime alike: the "
                  f"{args.statistic} of {args.repeats} repeats of >= {args.min_repeat_ms:g} ms, passes combined "
                  "the same way",
        "device": "cpu-local", "schedule": "untuned",
        "networks": len(rows), "calibration_networks": len(all_names),
        "grid_kernels_for_model_only": len(grid_records),
        "profiled_kernels": len(best),
        "profile_s": round(profile_s, 1),
        "accuracy": results,
        "profiled_by_source": by_source,
        "overhead_fitted_on_all_networks": overhead_all,
        "ratios_vs_flops_proxy": {
            k: {"kendall_tau": results[k]["kendall_tau"] / results["flops_proxy"]["kendall_tau"],
                "within_10pct": (results[k]["within_10pct"] / results["flops_proxy"]["within_10pct"]
                                 if results["flops_proxy"]["within_10pct"] else None)}
            for k in ("profiled", "model_only")
        },
        "tvm_untuned_over_onnxruntime_median": float(np.median([r["measured_ms"] / r["onnxruntime_ms"] for r in rows])),
        "calibration_to_onnxruntime": calib,
        "calibrated_model_weights_n20": dict(zip(
            FAMILIES, [round(float(x), 4) for x in api_model.heads["latency_ms"]["weights"]])),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "per_network": rows,
    }
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 5))
        for key, mark in (("profiled_ms", "o"), ("model_only_ms", "x")):
            ax.scatter(meas, [r[key] for r in rows], marker=mark, label=key.replace("_ms", ""))
        lo, hi = meas.min() / 2, meas.max() * 2
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.85")
        ax.set(xscale="log", yscale="log", xlabel="measured latency (ms, TVM untuned)", ylabel="predicted (ms)",
               title=f"{len(rows)} networks, cpu-local")
        ax.legend()
        fig.savefig(work / "predictor_scatter.png", dpi=120, bbox_inches="tight")
        out["scatter_png"] = str(work / "predictor_scatter.png")
    except ImportError:
        out["scatter_png"] = "matplotlib is not installed: no scatter plot"
    (work / "predictor.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
