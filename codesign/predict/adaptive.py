"""Adaptive kernel sampling: profile where the predictor is wrong (nn-Meter's method, on codesign's kernels).

A cost model fitted on one search space's kernels predicts other networks badly: untuned TVM
latency is irregular in the shapes. nn-Meter's answer, followed here: one predictor per kernel
type (``features.KERNEL_TYPES``; the ``kernel-type`` cost model), and the kernels to profile
chosen per type, in rounds:

1. **prior**: configurations drawn from the shape distribution of real networks and of the
   search spaces: channels that grow as the resolution shrinks, the kernels, strides, groups and
   fused epilogues (bias, activation, residual) CNNs use (``prior_spec``), perturbed copies of
   reference kernels (every registered search space's kernels, and the kernels of any networks
   the user passes), and (``REAL_SHARE`` of the draws) perturbed copies of the kernels of real
   networks shipped with codesign (``real_network_kernels``: torchvision and timm classification
   networks, mostly at 32-64 px inputs);
2. a **held-out set** per type drawn the same way, profiled once and never trained on: the error
   the rounds are judged by;
3. **initial samples** per type, profiled and fitted;
4. **rounds**: for every type whose held-out share within ±10 % is under the target, the
   held-out configurations it predicts worst are taken and kernels *around* them are profiled
   (fine-grained: channels within ±25 %, the neighbouring resolution, the same kernel, stride and
   groups), then the model is refitted. It stops when every type meets the target or the budget
   of profiled kernels is spent.

Everything profiled goes into the ProfileDB; the sampling is seeded and its state (the keys of
every set, the per-round errors) is written after every step to a JSON file, so a killed run
resumes where it stopped (and a larger ``--budget-kernels`` continues a finished one). Kernels
listed in ``exclude_keys`` are never sampled: the benchmark excludes every kernel of the
networks it evaluates, so that they are predicted from kernels never profiled.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CodesignError
from ..kernelspec import KernelSpec, kernel_flops
from .features import kernel_type

STATE_VERSION = 1

# The kernel types sampled, and each one's share of the budget (convolutions dominate a CNN's
# latency and vary the most).
TYPE_WEIGHTS = {
    "conv": 4.0, "conv_pointwise": 4.0, "conv_depthwise": 3.0, "conv_grouped": 2.0, "dense": 1.5,
    "max_pool": 1.0, "avg_pool": 1.0, "global_pool": 0.7, "batch_norm": 0.7, "add": 1.0, "mul": 1.0,
    "activation": 1.0, "softmax": 0.5, "layer_norm": 0.5, "matmul": 0.7, "lrn": 0.3,
}
SAMPLE_TYPES = tuple(TYPE_WEIGHTS)

# Kernels above this many FLOPs are not sampled: untuned, they run for seconds, and the
# torchvision networks at 64x64 (ResNet-50, DenseNet-121, GoogLeNet...) have none above ~2e7.
MAX_FLOPS = 4e7

# Real CNNs at 32-64 px inputs: stage resolutions, and base widths that double per stage.
_INPUT_SIZES = (32, 64)
_BASE_WIDTHS = (4, 8, 12, 16, 24, 32, 48, 64)
_ACTIVATIONS = ("none", "relu", "relu", "relu", "relu6", "hardswish", "silu", "sigmoid")

# The share of the held-out and initial draws that perturb a kernel of a shipped real network
# (where the type has any). 600 kernels drawn that way, added to 1,600 from the prior, predicted
# never-profiled networks better than 600 more from the prior (docs/predict.md, "Samples around
# real networks' kernels"); 0.4 of the draws is about the share those 600 were of 2,200.
REAL_SHARE = 0.4
REAL_KERNELS_FILE = Path(__file__).parent / "data" / "real-kernels.json"
REAL_KERNELS_VERSION = 1


def _round_channels(c: float, multiple: int = 8) -> int:
    m = multiple if c >= 2 * multiple else 4 if c >= 8 else 1
    return max(m, int(round(c / m)) * m)


def _stage(rng: random.Random) -> tuple[int, int]:
    """(resolution, channels) of a random stage of a random real-network-like CNN."""
    size = rng.choice(_INPUT_SIZES)
    depth = rng.choice((0, 1, 1, 2, 2, 3, 3, 4, 5))
    res = max(1, size >> depth)
    if rng.random() < 0.15 and res > 2:
        res -= 1  # odd sizes: valid padding and ceil-mode pools (31, 15, 7, 3)
    # Narrow networks (search-space cells, small CNNs) keep narrow channels deep down; wide
    # ones double per stage.
    width = rng.choice(_BASE_WIDTHS) * 2 ** (depth if rng.random() < 0.5 else rng.randint(0, depth))
    if rng.random() < 0.4:  # the exact widths most networks use (64, 128, 256...): powers of two
        return res, min(2048, width)
    return res, _round_channels(min(2048, width * math.exp(rng.uniform(-0.3, 0.3))))


def prior_spec(ktype: str, rng: random.Random) -> KernelSpec:
    """One kernel of type ``ktype`` drawn from the real-network prior (may raise CodesignError
    for a geometry that does not exist; callers draw again)."""
    res, c = _stage(rng)
    shape = (1, c, res, res)
    act = rng.choice(_ACTIVATIONS)
    make = KernelSpec.make
    if ktype in ("conv", "conv_pointwise", "conv_depthwise", "conv_grouped"):
        stride = 2 if rng.random() < 0.25 and res > 1 else 1
        extra = {"bias": rng.random() < 0.85, "activation": act, "residual": rng.random() < 0.15 and stride == 1}
        if ktype == "conv_pointwise":
            co = _round_channels(c * rng.choice((0.25, 0.5, 1, 1, 2, 4, 6)))
            return make("conv2d", shape, out_channels=co, kernel=1, stride=stride, padding=0, **extra)
        k = rng.choice((3, 3, 3, 5, 7)) if ktype != "conv_grouped" else rng.choice((3, 3, 3, 5))
        pad = k // 2 if rng.random() < 0.9 else 0
        if ktype == "conv_depthwise":
            c = _round_channels(c * rng.choice((1, 3, 4, 6)))
            return make("conv2d", (1, c, res, res), out_channels=c, kernel=k, stride=stride, padding=pad, groups=c,
                        **extra)
        if ktype == "conv_grouped":
            width = rng.choice((4, 8, 16, 24, 32, 64))
            groups = max(2, c // width)
            c = groups * width
            co = c * rng.choice((1, 1, 2))
            return make("conv2d", (1, c, res, res), out_channels=co, kernel=k, stride=stride, padding=pad,
                        groups=groups, **extra)
        if rng.random() < 0.12:  # a stem: 3 input channels at the input resolution
            size = rng.choice(_INPUT_SIZES)
            k = rng.choice((3, 3, 5, 7, 11))
            return make("conv2d", (1, 3, size, size), out_channels=_round_channels(rng.choice(_BASE_WIDTHS) *
                        rng.choice((1, 2))), kernel=k, stride=rng.choice((1, 2, 2, 4)) if k > 3 else rng.choice((1, 2)),
                        padding=k // 2, **extra)
        co = _round_channels(c * rng.choice((0.5, 1, 1, 1, 2)))
        if rng.random() < 0.06:  # a learned upsampling by 2 (decoders): a transposed conv
            k, pad, opad = rng.choice(((2, 0, 0), (4, 1, 0), (3, 1, 1)))
            return make("conv2d_transpose", shape, out_channels=_round_channels(c * rng.choice((0.5, 1))), kernel=k,
                        stride=2, padding=pad, output_padding=opad, bias=extra["bias"], activation=act)
        return make("conv2d", shape, out_channels=co, kernel=k, stride=stride, padding=pad, **extra)
    if ktype in ("max_pool", "avg_pool"):
        k = rng.choice((2, 3, 3))
        s = rng.choice((1, 2, 2)) if k == 3 else 2
        pad = rng.choice((0, 1)) if k == 3 else 0
        extra = {"count_include_pad": rng.random() < 0.5} if ktype == "avg_pool" else {}
        op = "max_pool2d" if ktype == "max_pool" else "avg_pool2d"
        return make(op, shape, kernel=k, stride=s, padding=pad, ceil_mode=rng.random() < 0.3, **extra)
    if ktype == "global_pool":
        return make("global_avg_pool2d", shape)
    if ktype == "batch_norm":
        return make("batch_norm", shape, activation=rng.choice(("none", "relu", "relu")))
    if ktype == "add":
        return make("add", shape, activation=rng.choice(("none", "none", "relu")))
    if ktype == "mul":
        return make("mul", shape, broadcast=rng.random() < 0.7)
    if ktype == "activation":
        from ..kernelspec import ELEMENTWISE

        if rng.random() < 0.15:  # an upsampling by 2 or 4 (HRNet's fusion, feature pyramids): a stream too
            f = rng.choice((2, 2, 4))
            return make("resize2d", shape, out_h=shape[2] * f, out_w=shape[3] * f,
                        method=rng.choice(("nearest", "linear", "linear")))
        return make(rng.choice(ELEMENTWISE), shape)
    tokens = rng.choice((5, 17, 50, 65, 197, 257)) if rng.random() < 0.6 else res * res
    dim = _round_channels(rng.choice((64, 96, 128, 192, 256, 384, 512, 768)) * math.exp(rng.uniform(-0.2, 0.2)))
    if ktype == "dense":
        rows = 1 if rng.random() < 0.6 else tokens
        f = c if rows == 1 else dim
        if rows == 1 and rng.random() < 0.3:  # a classifier head's hidden layer: 576 -> 1024, 960 -> 1280
            f = rng.choice((384, 512, 576, 768, 960, 1024, 1280, 1536, 2048))
        out = rng.choice((10, 100, 1000, 1000, f, 2 * f, 4 * f, max(8, f // 4), 512, 1024, 1280, 2048))
        return make("dense", (rows, f), out_features=out, bias=rng.random() < 0.9,
                    activation=rng.choice(("none", "none", "relu", "gelu")), residual=rows > 1 and rng.random() < 0.3,
                    weight_kn=True)
    if ktype == "softmax":
        heads = rng.choice((1, 3, 4, 6, 8, 12))
        return make("softmax", (heads * tokens, tokens))
    if ktype == "layer_norm":
        return make("layer_norm", (tokens, dim))
    if ktype == "matmul":
        heads = rng.choice((1, 3, 4, 6, 8, 12))
        head_dim = rng.choice((16, 32, 48, 64))
        if rng.random() < 0.5:
            return make("batch_matmul", (heads, tokens, head_dim), n=tokens)
        return make("batch_matmul", (heads, tokens, tokens), n=head_dim)
    if ktype == "lrn":
        return make("lrn", shape, size=rng.choice((3, 5)))
    raise CodesignError(f"no prior for kernel type {ktype!r}; known: {', '.join(SAMPLE_TYPES)}")


def perturb(spec: KernelSpec, rng: random.Random, scale: float = 0.25) -> KernelSpec:
    """A kernel near ``spec`` of the same type: channels within ±``scale``, the same or a
    neighbouring resolution, the same kernel, stride, groups structure and epilogue (may raise
    CodesignError; callers draw again)."""
    d = spec.to_dict()
    shape = list(spec.input_shape)
    attrs = dict(d["attrs"])

    def jitter(c: int) -> int:
        if c <= 4:
            return c
        return _round_channels(c * math.exp(rng.uniform(-scale, scale)), 4 if c < 64 else 8)

    if len(shape) == 4:
        if rng.random() < 0.5 and shape[2] > 2:
            shape[2] = shape[3] = max(1, shape[2] + rng.choice((-2, -1, 1, 2)))
        c = shape[1]
        if spec.op == "conv2d":
            g = spec.attr("groups")
            co = spec.attr("out_channels")
            if g == c and co == c:  # depthwise
                c = jitter(c)
                attrs.update(groups=c, out_channels=c)
            elif g > 1:  # grouped: the group width stays, the group count moves
                width, out_per = c // g, co // g
                g = max(2, int(round(jitter(c) / width)))
                c = g * width
                attrs.update(groups=g, out_channels=g * out_per)
            else:
                c = jitter(c)
                attrs["out_channels"] = jitter(co)
        else:
            c = jitter(c)
        shape[1] = c
    elif len(shape) == 3:
        shape = [shape[0], jitter(shape[1]), jitter(shape[2])]
        if "n" in attrs:
            attrs["n"] = jitter(attrs["n"])
    else:
        shape = [jitter(shape[0]) if shape[0] > 1 else 1, jitter(shape[1])]
        if "out_features" in attrs and attrs["out_features"] > 16:
            attrs["out_features"] = jitter(attrs["out_features"])
    return KernelSpec.make(spec.op, shape, **attrs)


def reference_kernels(networks: Iterable = (), spaces: bool = True) -> list[KernelSpec]:
    """Kernels whose shapes the prior also draws around: every registered search space's
    kernels (at its default input) and the kernels of ``networks`` (ONNX paths or ModelProtos)."""
    from ..graph import onnx_kernels

    out: list[KernelSpec] = []
    if spaces:
        from ..spaces import create_space, list_spaces

        for name in list_spaces():
            out += list(create_space(name).kernels())
    for net in networks:
        out += onnx_kernels(net)
    return list(dict.fromkeys(out))


def real_network_kernels(path: str | Path = REAL_KERNELS_FILE) -> list[KernelSpec]:
    """The kernels of the real networks shipped with codesign (``REAL_KERNELS_FILE``, written by
    ``benchmarks/real_shapes.py``): the shapes adaptive sampling draws around, beside the prior."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format_version") != REAL_KERNELS_VERSION:
            raise ValueError(f"format_version {data.get('format_version') if isinstance(data, dict) else None!r}, "
                             f"not {REAL_KERNELS_VERSION}")
        return [KernelSpec.from_key(k) for k in data["kernels"]]
    except (OSError, ValueError, KeyError, TypeError, CodesignError) as exc:
        raise CodesignError(f"{path} is not a real-network kernel set ({exc})") from None


def draw(ktype: str, n: int, rng: random.Random, references: list[KernelSpec], taken: set[str],
         max_flops: float = MAX_FLOPS, real: list[KernelSpec] = (), real_share: float = REAL_SHARE
         ) -> list[KernelSpec]:
    """``n`` new kernels of type ``ktype``: ``real_share`` of them (where ``real`` has kernels of
    the type) perturbed real-network kernels, the rest from the prior or (a third of those, where
    there are references of the type) perturbed reference kernels; none in ``taken`` (updated)."""
    refs = [r for r in references if kernel_type(r) == ktype]
    reals = [r for r in real if kernel_type(r) == ktype]
    out: list[KernelSpec] = []
    for _ in range(200 * max(n, 1)):
        if len(out) >= n:
            break
        try:
            if reals and real_share > 0 and rng.random() < real_share:
                spec = perturb(rng.choice(reals), rng)
            elif refs and rng.random() < 1 / 3:
                spec = perturb(rng.choice(refs), rng)
            else:
                spec = prior_spec(ktype, rng)
        except CodesignError:
            continue
        if kernel_type(spec) != ktype or spec.key() in taken or kernel_flops(spec) > max_flops:
            continue
        taken.add(spec.key())
        out.append(spec)
    return out


def around(specs: list[KernelSpec], per_spec: int, rng: random.Random, taken: set[str],
           max_flops: float = MAX_FLOPS) -> list[KernelSpec]:
    """``per_spec`` new kernels near each of ``specs`` (fine-grained sampling), none in ``taken``."""
    out = []
    for spec in specs:
        got = 0
        for _ in range(50 * per_spec):
            if got >= per_spec:
                break
            try:
                new = perturb(spec, rng, scale=0.25)
            except CodesignError:
                continue
            if new.key() in taken or kernel_type(new) != kernel_type(spec) or kernel_flops(new) > max_flops:
                continue
            taken.add(new.key())
            out.append(new)
            got += 1
    return out


@dataclass
class AdaptiveReport:
    """What an adaptive run did: kernels profiled, rounds, and the held-out error per type."""

    profiled: int
    budget_kernels: int
    rounds: int
    target_within_10pct: float
    met: bool
    by_type: dict[str, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _load_state(path: Path, identity: dict) -> dict | None:
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CodesignError(f"{path} is not an adaptive sampling state ({exc}); remove it or pass another --state") from None
    if not isinstance(state, dict) or state.get("format_version") is None or "train" not in state:
        raise CodesignError(f"{path} is not an adaptive sampling state; remove it or pass another --state")
    if state["format_version"] > STATE_VERSION:
        raise CodesignError(f"{path} has format version {state['format_version']}, newer than this codesign reads")
    for k, v in identity.items():
        if state.get(k) != v:
            raise CodesignError(
                f"{path} belongs to another adaptive run ({k} {state.get(k)!r}, not {v!r}); pass another --state"
            )
    return state


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(path)


def held_out_errors(model, val: dict[str, list[str]], measured: dict[str, float]) -> dict[str, dict]:
    """Per type: the held-out kernels' share within ±10 %, RMSPE and median error, and the
    log errors of each key (for choosing where to sample)."""
    from .evaluate import accuracy

    out = {}
    for t, keys in val.items():
        keys = [k for k in keys if k in measured]
        if len(keys) < 2:
            continue
        specs = [KernelSpec.from_key(k) for k in keys]
        pred = model.predict(specs, use_measured=False)
        meas = np.array([measured[k] for k in keys])
        acc = accuracy(pred, meas)
        out[t] = {"n": acc["n"], "within_10pct": acc["within_10pct"], "rmspe": acc["rmspe"],
                  "median_ape": acc["median_ape"], "errors": dict(zip(keys, np.log(pred / meas).tolist()))}
    return out


def adaptive_sample(
    profile: Callable[[list[KernelSpec]], None],
    measured: Callable[[], dict],
    budget_kernels: int,
    state_path: str | Path,
    identity: dict,
    seed: int = 0,
    target_within_10pct: float = 0.9,
    references: Iterable[KernelSpec] = (),
    exclude_keys: Iterable[str] = (),
    types: Iterable[str] = SAMPLE_TYPES,
    real: Iterable[KernelSpec] = (),
    real_share: float = REAL_SHARE,
    kind: str = "kernel-type",
    model_kwargs: dict | None = None,
    held_out_share: float = 0.2,
    initial_share: float = 0.45,
    neighbours: int = 3,
    worst: int = 4,
    log: Callable[[str], None] | None = None,
):
    """Sample, profile and fit kernel-type predictors until the held-out target or the budget.

    Args:
        profile: profiles kernels into the database (``codesign fit --adaptive`` passes
            ``profile_kernels``; already stored kernels must be skipped).
        measured: returns {kernel key: Measurement} of what the database holds for the device
            and schedule (failed kernels included: they are not profiled again).
        budget_kernels: kernels this sampling profiles in all (held-out ones included), across resumes.
        state_path: JSON state, written after every step; an existing one is resumed.
        identity: what the state must match to be resumed (device, schedule, ...).
        target_within_10pct: per type, the held-out share within ±10 % at which sampling stops.
        references: kernels the prior also perturbs (``reference_kernels``).
        exclude_keys: kernels never to sample.
        real, real_share: real networks' kernels (``real_network_kernels``) that ``real_share`` of
            the held-out and initial draws perturb; they only shape a new run's first draws, so a
            run resumes whatever they are.
        kind, model_kwargs: the cost model fitted each round (``create_cost_model(kind, **model_kwargs)``).
        held_out_share, initial_share: of the budget; the rest goes to the rounds.
        neighbours, worst: per round and type, ``worst`` held-out configurations get ``neighbours``
            new kernels each.
        log: called with one progress line per step.

    Returns:
        (the model fitted on every sampled kernel, AdaptiveReport).

    Raises:
        CodesignError: a budget too small for one held-out and one training kernel per type, a
            state of another run, nothing measurable.
    """
    from .models import create_cost_model

    log = log or (lambda line: None)
    types = [t for t in types]
    unknown = set(types) - set(SAMPLE_TYPES)
    if unknown:
        raise CodesignError(f"unknown kernel type(s) {', '.join(sorted(unknown))}; known: {', '.join(SAMPLE_TYPES)}")
    if budget_kernels < 6 * len(types):
        raise CodesignError(f"--budget-kernels {budget_kernels} is too small: at least {6 * len(types)} "
                            f"(3 held-out and 3 training kernels per kernel type, {len(types)} types)")
    if not 0 < target_within_10pct <= 1:
        raise CodesignError(f"the held-out target must be in (0, 1], got {target_within_10pct}")
    if not 0 <= real_share <= 1:
        raise CodesignError(f"the share of draws around real networks' kernels must be in [0, 1], got {real_share}")
    path = Path(state_path)
    identity = dict(identity, seed=int(seed), types=types)
    state = _load_state(path, identity)
    weights = np.array([TYPE_WEIGHTS[t] for t in types])
    share = weights / weights.sum()
    if state is None:
        rng = random.Random(seed)
        taken = set(exclude_keys)
        references, real = list(references), list(real)
        val, train = {}, {}
        for t, s in zip(types, share):
            val[t] = [k.key() for k in draw(t, max(3, int(budget_kernels * held_out_share * s)), rng, references, taken,
                                            real=real, real_share=real_share)]
        for t, s in zip(types, share):
            train[t] = [k.key() for k in draw(t, max(3, int(budget_kernels * initial_share * s)), rng, references,
                                                taken, real=real, real_share=real_share)]
        state = dict(identity, format_version=STATE_VERSION, validation=val, train=train, rounds=[],
                     target_within_10pct=target_within_10pct, excluded=len(set(exclude_keys)),
                     real_kernels=len(real), real_share=real_share if real else 0.0)
        _save_state(path, state)
    state["budget_kernels"] = int(budget_kernels)
    excluded = set(exclude_keys)

    def all_keys() -> list[str]:
        return [k for d in (state["validation"], state["train"]) for keys in d.values() for k in keys]

    def profile_missing() -> dict:
        have = measured()
        todo = [k for k in all_keys() if k not in have]
        if todo:
            log(f"profiling {len(todo)} kernels ({len(all_keys())} of {budget_kernels} sampled)")
            profile([KernelSpec.from_key(k) for k in todo])
            have = measured()
        return have

    def fit(have):
        rows = [have[k] for keys in state["train"].values() for k in keys if k in have and have[k].ok]
        if not rows:
            raise CodesignError("no sampled kernel could be profiled; see `codesign profile --status`")
        return create_cost_model(kind, seed=seed, **(model_kwargs or {})).fit(rows)

    have = profile_missing()
    while True:
        model = fit(have)
        errs = held_out_errors(model, state["validation"], {k: m.latency_ms for k, m in have.items() if m.ok})
        summary = {t: {k: v for k, v in e.items() if k != "errors"} for t, e in errs.items()}
        short = [t for t in types if t in errs and errs[t]["within_10pct"] < target_within_10pct]
        n_round = len(state["rounds"])
        if not state["rounds"] or state["rounds"][-1].get("sampled") != len(all_keys()):
            state["rounds"].append({"round": n_round, "sampled": len(all_keys()), "by_type": summary})
            _save_state(path, state)
        log(f"round {len(state['rounds']) - 1}: {len(all_keys())}/{budget_kernels} kernels; held-out within ±10%: "
            + ", ".join(f"{t} {summary[t]['within_10pct']:.0%}" for t in types if t in summary))
        room = budget_kernels - len(all_keys())
        if not short or room <= 0:
            break
        rng = random.Random(seed * 1_000_003 + len(all_keys()))
        taken = set(all_keys()) | excluded
        per_type = max(1, room // max(1, len(short)))
        added = 0
        for t in short:
            order = sorted(errs[t]["errors"].items(), key=lambda kv: -abs(kv[1]))
            centres = [KernelSpec.from_key(k) for k, _ in order[:worst]]
            new = around(centres, neighbours, rng, taken)[:min(per_type, room - added)]
            state["train"][t] += [s.key() for s in new]
            added += len(new)
        if added == 0:
            log("no new kernel could be drawn around the worst configurations; stopping")
            break
        _save_state(path, state)
        have = profile_missing()
    # The returned model learns from every sampled kernel, held-out ones included.
    rows = [have[k] for k in all_keys() if k in have and have[k].ok]
    final = create_cost_model(kind, seed=seed, **(model_kwargs or {})).fit(rows)
    met = all(summary.get(t, {}).get("within_10pct", 0.0) >= target_within_10pct for t in types if t in summary)
    state["done"] = True
    _save_state(path, state)
    report = AdaptiveReport(profiled=len(all_keys()), budget_kernels=budget_kernels, rounds=len(state["rounds"]),
                            target_within_10pct=target_within_10pct, met=met, by_type=summary,
                            history=[{"sampled": r["sampled"], "by_type": {t: v["within_10pct"] for t, v in
                                                                           r["by_type"].items()}}
                                     for r in state["rounds"]])
    return final, report
