"""Cost models: kernel latency (and energy) on one device under one schedule policy.

A cost model is fitted on profile measurements (``codesign.profile.ProfileDB`` rows) of one device
and one schedule policy, and predicts ``latency_ms`` (and ``energy_mj`` where the profiles hold
energy) of any KernelSpec. Kernels measured during fitting are kept in a table and, by default,
their measurement is returned instead of a regression (``use_measured``): profiling a network's
kernels and then predicting it is the most accurate path; the regression covers the rest.

Kinds (``list_cost_models()``):

- ``loglinear``: ridge regression of log latency on the log work terms, one per op family
  (``codesign.predict.features.FAMILIES``), a global one for families without data. Small,
  smooth, extrapolates in size.
- ``gbdt``: gradient-boosted trees (scikit-learn) on all features, exported to plain arrays so
  that artifacts load without scikit-learn or pickle. Most accurate inside the profiled range.

Artifacts are one JSON file (``.json``) or one NumPy archive (``.npz``, the metadata as a JSON
string in ``__meta__``), both with ``format_version``, the device, schedule policy, TVM target
and version, and never pickle.
"""

from __future__ import annotations

import json
import time
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CodesignError
from ..kernelspec import KernelSpec
from ..registry import Registry
from .features import FAMILIES, FEATURE_NAMES, family, feature_matrix

# 2: ``family_scales`` and ``network_log_interval`` (written as 2 only by models that have one of
# them, so others stay readable by codesign that reads 1).
FORMAT_VERSION = 2
# The ridge pull of every family's scale towards the common ratio (``fit_weights``).
DEFAULT_PRIOR = 0.05
TARGETS = ("latency_ms", "energy_mj")

COST_MODELS = Registry("cost model", attribute="kind")  # every kind a saved model may have
FITTABLE = Registry("cost model", attribute="kind")  # the kinds ``codesign fit --model`` makes


def register_cost_model(name: str, fittable: bool = True):
    """Class decorator adding a cost model kind to the registry under ``name``.

    ``fittable=False`` registers a kind that can be loaded but is made by other means (the
    calibrated models of ``codesign calibrate``).
    """

    def deco(cls):
        COST_MODELS.register(name)(cls)
        if fittable:
            FITTABLE.register(name)(cls)
        return cls

    return deco


def list_cost_models() -> list[str]:
    """The kinds ``create_cost_model`` and ``codesign fit --model`` accept."""
    return FITTABLE.names()


def create_cost_model(name: str, **kwargs) -> CostModel:
    """A new, unfitted cost model of kind ``name``.

    Raises:
        CodesignError: an unknown kind (the message lists the known ones).
    """
    return FITTABLE.create(name, **kwargs)


def _record_fields(r) -> tuple[str, str, str, float | None, float | None, dict, str | None, str | None]:
    get = r.get if isinstance(r, dict) else (lambda k, d=None: getattr(r, k, d))
    if get("error") is not None:
        return get("kernel_key"), get("device", ""), get("schedule", ""), None, None, {}, None, None
    return (get("kernel_key"), get("device", "") or "", get("schedule", "") or "", get("latency_ms"),
            get("energy_mj"), get("target") or {}, get("tvm_version"), get("energy_source"))


class CostModel:
    """Base class: measured table, feature regression per target, save/load, network sums."""

    kind = "base"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.device = ""
        self.schedule = ""
        self.target: dict = {}
        self.tvm_version: str | None = None
        self.energy_source: str | None = None
        self.n_train = 0
        self.created_at = 0.0
        # A per-network constant and a per-kernel cost the kernel sums miss (VM calls, buffer
        # allocation, the copies of concat/reshape); 0 until fitted on measured networks.
        self.overhead_ms = 0.0
        self.per_kernel_overhead_ms = 0.0
        # How much longer the kernels run inside a network than profiled one by one (cold caches
        # between kernels); 1 until fitted on measured networks (``fit_overhead(scale=True)``).
        self.network_scale = 1.0
        # Or, per op family (features.FAMILIES), how much longer that family's kernels run inside a
        # network (``fit_overhead(per_family=True)``); None until fitted that way.
        self.family_scales: dict[str, float] | None = None
        # [low, high] of log(measured / predicted) over networks at interval_level(), from the
        # networks ``fit_overhead`` was given (None: fewer than conformal_min_networks of them;
        # a network's interval is then its kernels' bounds added).
        self.network_log_interval: list[float] | None = None
        self.table: dict[str, dict[str, float]] = {}
        self.heads: dict[str, dict[str, Any]] = {}
        # Per kernel type, the [min, max] of each of features.RANGE_DIMS over the fitted kernels:
        # what ``out_of_range`` checks (None for artifacts written before it existed).
        self.ranges: dict[str, dict[str, list[float]]] | None = None

    # --- what subclasses implement -------------------------------------------------------
    def _fit_head(self, specs: list[KernelSpec], x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """Fit log(target) ~ features; returns the head's state (JSON-able scalars and arrays)."""
        raise NotImplementedError

    def _predict_head(self, head: dict[str, Any], specs: list[KernelSpec], x: np.ndarray) -> np.ndarray:
        """Predicted log(target) of each row."""
        raise NotImplementedError

    def _check_head(self, target: str, head: dict[str, Any]) -> str | None:
        """What is wrong with a loaded head beyond non-finite numbers (None: nothing)."""
        return None

    def _check_loaded(self, where: str) -> None:
        """Refuse a loaded model whose numbers cannot be right, before it predicts anything: a
        measured latency or energy that is not a finite positive number, a NaN or infinite
        parameter, negative overheads, a head that does not fit the features."""
        for key, row in self.table.items():
            for target, v in (row.items() if isinstance(row, dict) else [("row", row)]):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
                    raise CodesignError(f"{where} is damaged: its measured {target} of {key} is {v!r}, not a "
                                        "finite positive number")
        for name in ("overhead_ms", "per_kernel_overhead_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise CodesignError(f"{where} is damaged: {name} is {v!r}, not a finite number >= 0")
        v = self.network_scale
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
            raise CodesignError(f"{where} is damaged: network_scale is {v!r}, not a finite number > 0")
        if self.family_scales is not None:
            fs = self.family_scales
            if (not isinstance(fs, dict) or set(fs) != set(FAMILIES)
                    or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x) or x < 0
                           for x in fs.values())):
                raise CodesignError(f"{where} is damaged: family_scales must map each op family "
                                    f"({', '.join(FAMILIES)}) to a finite number >= 0")
        iv = self.network_log_interval
        if iv is not None and (not isinstance(iv, list) or len(iv) != 2
                               or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x)
                                      for x in iv) or iv[0] > iv[1]):
            raise CodesignError(f"{where} is damaged: network_log_interval must be [low, high], two finite "
                                "numbers with low <= high")
        for target, head in self.heads.items():
            for k, v in head.items():
                arr = np.asarray(v)
                if arr.dtype.kind in "fiub" and not np.isfinite(arr.astype(np.float64)).all():
                    raise CodesignError(f"{where} is damaged: {target} parameter {k} holds NaN or infinite values")
            problem = self._check_head(target, head)
            if problem:
                raise CodesignError(f"{where} is damaged: {target} {problem}")

    # --- fitting and prediction -------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return "latency_ms" in self.heads

    def fit(self, records: Iterable, device: str | None = None, schedule: str | None = None) -> CostModel:
        """Fit on profile measurements of one device and schedule policy.

        Args:
            records: ``Measurement`` objects (or dicts with the same fields); failed rows are skipped.
            device, schedule: keep only these rows (required when the records mix several).

        Returns:
            self.

        Raises:
            CodesignError: no usable rows, or rows of several devices/schedules without a filter.
        """
        rows = [_record_fields(r) for r in records]
        rows = [r for r in rows if (device is None or r[1] == device) and (schedule is None or r[2] == schedule)]
        ok = [r for r in rows if r[3] is not None and 0 < r[3] < np.inf]  # NaN and inf are no latencies
        if not ok:
            raise CodesignError(
                f"no measured kernels for device {device or '(any)'} and schedule {schedule or '(any)'}; "
                "run `codesign profile` first (see `codesign profile --status`)"
            )
        pairs = sorted({(r[1], r[2]) for r in ok})
        if len(pairs) > 1:
            raise CodesignError(
                "the records mix devices/schedules " + ", ".join(f"{d}[{s}]" for d, s in pairs)
                + "; pick one with --device and --schedule"
            )
        self.device, self.schedule = pairs[0]
        self.target = ok[-1][5]
        self.tvm_version = ok[-1][6]
        specs = [KernelSpec.from_key(r[0]) for r in ok]
        x = feature_matrix(specs)
        lat = np.array([r[3] for r in ok], dtype=np.float64)
        self.heads = {"latency_ms": self._fit_head(specs, x, np.log(lat))}
        self.table = {r[0]: {"latency_ms": float(r[3])} for r in ok}
        with_energy = [i for i, r in enumerate(ok) if r[4] is not None and 0 < r[4] < np.inf]
        self.energy_source = None
        if len(with_energy) >= 2:
            en = np.array([ok[i][4] for i in with_energy], dtype=np.float64)
            self.heads["energy_mj"] = self._fit_head([specs[i] for i in with_energy], x[with_energy], np.log(en))
            for i in with_energy:
                self.table[ok[i][0]]["energy_mj"] = float(ok[i][4])
            sources = sorted({ok[i][7] for i in with_energy if ok[i][7]})
            self.energy_source = ",".join(sources) or None
        self.n_train = len(ok)
        self.created_at = time.time()
        self.ranges = sampled_ranges(specs)
        return self

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise CodesignError(f"the {self.kind} cost model is not fitted; call fit() or load a saved model")

    def _predict(self, target: str, specs: list[KernelSpec], use_measured: bool) -> np.ndarray:
        self._check_fitted()
        if target not in self.heads:
            raise CodesignError(
                f"this cost model has no {target}: its profiles of {self.device} held none "
                "(profile with an energy source, see `codesign devices`)"
            )
        specs = list(specs)
        out = np.empty(len(specs))
        todo = []
        for i, s in enumerate(specs):
            row = self.table.get(s.key()) if use_measured else None
            if row is not None and target in row:
                out[i] = row[target]
            else:
                todo.append(i)
        if todo:
            sub = [specs[i] for i in todo]
            out[todo] = np.exp(self._predict_head(self.heads[target], sub, feature_matrix(sub)))
        return out

    def predict_interval(self, specs: Iterable[KernelSpec], use_measured: bool = True,
                         target: str = "latency_ms") -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) of each kernel's prediction at the model's interval level, or None for a
        kind without uncertainty (only ``kernel-type`` has it)."""
        return None

    def out_of_range(self, specs: Iterable[KernelSpec]) -> list[list[str]]:
        """For each kernel, why it lies outside what the model was fitted on (empty: inside).

        A kernel is outside when no kernel of its type was fitted, when one of its channels
        in/out, input resolution, kernel, stride or FLOPs lies outside the range of the fitted
        kernels of its type (the regression extrapolates there), or when its fused activation
        was never fitted for its type (a dense layer with a hardswish epilogue, say, runs at
        another speed than one with none; models fitted before the activations were kept do
        not check it).
        """
        from .features import kernel_dims, kernel_type

        out = []
        for s in specs:
            if self.ranges is None or s.key() in self.table:
                out.append([])
                continue
            t = kernel_type(s)
            r = self.ranges.get(t)
            if r is None:
                out.append([f"no {t} kernel was profiled"])
                continue
            reasons = []
            for dim, v in kernel_dims(s).items():
                lo, hi = r[dim]
                if v < lo or v > hi:
                    reasons.append(f"{dim} {v:g} outside the sampled {lo:g}..{hi:g}")
            act = s.attr("activation")
            seen = r.get(ACTIVATIONS_KEY)
            if act is not None and isinstance(seen, list) and act not in seen:
                reasons.append(f"activation {act!r} never sampled for {t} (sampled: {', '.join(seen)})")
            out.append(reasons)
        return out

    def predict(self, specs: Iterable[KernelSpec], use_measured: bool = True) -> np.ndarray:
        """Latency in ms of each kernel (measured value where profiled and ``use_measured``)."""
        return self._predict("latency_ms", list(specs), use_measured)

    def predict_energy(self, specs: Iterable[KernelSpec], use_measured: bool = True) -> np.ndarray:
        """Energy in mJ of each kernel; CodesignError if the profiles held no energy."""
        return self._predict("energy_mj", list(specs), use_measured)

    def predict_network(self, specs: Iterable[KernelSpec], use_measured: bool = True) -> dict[str, Any]:
        """End-to-end estimate of a network given its kernels (``graph.onnx_kernels``).

        Returns:
            dict with latency_ms (``network_scale`` x kernel sum + overheads), energy_mj (or None), kernels,
            measured_kernels (how many came from the profile table), per_kernel_latency_ms.
        """
        specs = list(specs)
        lat = self.predict(specs, use_measured)
        energy = None
        if "energy_mj" in self.heads:
            energy = float(self.predict_energy(specs, use_measured).sum())
        measured = sum(1 for s in specs if s.key() in self.table) if use_measured else 0
        overhead = self.network_overhead_ms(specs, lat)
        res = {
            "latency_ms": float(lat.sum() + overhead),
            "energy_mj": energy,
            "kernels": len(specs),
            "measured_kernels": measured,
            "per_kernel_latency_ms": [float(v) for v in lat],
            "latency_interval_ms": None,
            "out_of_range": [],
        }
        if self.network_log_interval is not None and specs:
            lo, hi = self.network_log_interval
            res["latency_interval_ms"] = [res["latency_ms"] * float(np.exp(lo)), res["latency_ms"] * float(np.exp(hi))]
        elif (interval := self.predict_interval(specs, use_measured) if specs else None) is not None:
            # Kernel errors of one network are correlated (one device, one code generator): the
            # network's interval adds the kernels' bounds, the conservative sum.
            res["latency_interval_ms"] = [float(b.sum() + self.network_overhead_ms(specs, b)) for b in interval]
        res["out_of_range"] = [{"kernel": s.key(), "reasons": r} for s, r in zip(specs, self.out_of_range(specs)) if r]
        return res

    def network_overhead_ms(self, specs: list[KernelSpec], kernel_ms: np.ndarray) -> float:
        """What a network whose kernels are ``specs`` (each predicted ``kernel_ms``) costs beyond
        their sum: the fitted constant, per-kernel overhead and the in-network scales' excess."""
        kernel_ms = np.asarray(kernel_ms, np.float64)
        return float(self.overhead_ms + self.per_kernel_overhead_ms * len(specs)
                     + ((self.in_network_scales(specs) - 1.0) * kernel_ms).sum())

    def in_network_scales(self, specs: list[KernelSpec]) -> np.ndarray:
        """How much longer each kernel runs inside a network than profiled alone: its op family's
        fitted scale, else the common ``network_scale``."""
        if self.family_scales is not None:
            return np.array([self.family_scales[family(s)] for s in specs], np.float64)
        return np.full(len(specs), self.network_scale, np.float64)

    def fit_overhead(self, networks: list[list[KernelSpec]], measured_ms, use_measured: bool = True,
                     scale: bool = False, per_family: bool = False) -> CostModel:
        """Fit the per-network constant and per-kernel overhead on measured whole networks.

        The kernel sums leave out what a network costs beyond its kernels: the VM's calls and
        allocations, and copies (concat, slices) that fusion does not absorb. ``overhead_ms`` and
        ``per_kernel_overhead_ms`` (both >= 0) minimise the squared relative error of
        ``network_scale * kernel sum + overhead_ms + per_kernel_overhead_ms * kernels`` over the
        networks. ``network_scale`` stays 1 unless ``scale``: then it is fitted too (>= 4 networks),
        for devices where kernels timed one by one in a hot loop run faster than inside a network
        (small kernels whose data a network's neighbours evict).

        ``per_family`` (>= 4 networks) fits a scale per op family instead (``family_scales``,
        ``fit_weights``: ridge-pulled towards the common ratio) and the per-kernel overhead,
        with no constant: kernels of different families lose differently inside a network
        (depthwise and pointwise kernels, memory-bound, more than dense convolutions). On
        never-profiled networks it was the better fit (docs/predict.md).

        Given at least ``conformal_min_networks`` networks (19 at the default 90 %), each network is
        also predicted with the terms fitted on the others, and the spread of those errors becomes
        every network's interval (``network_log_interval``, split conformal); with fewer, a
        network's interval stays its kernels' bounds added.

        Args:
            networks: each network's kernels (``graph.onnx_kernels`` / ``graph.module_kernels``).
            measured_ms: each network's measured end-to-end latency (``codesign measure``).
            scale: fit ``network_scale`` as well.
            per_family: fit ``family_scales`` and the per-kernel overhead (not with ``scale``).

        Returns:
            self.

        Raises:
            CodesignError: an unfitted model, fewer than 2 networks (4 with ``scale`` or
                ``per_family``), lengths that differ, latencies that are not positive.
        """

        self._check_fitted()
        if scale and per_family:
            raise CodesignError("fit one network scale or one per op family, not both")
        meas = np.asarray(measured_ms, dtype=np.float64)
        if meas.ndim != 1 or len(meas) != len(networks):
            raise CodesignError(f"{len(networks)} networks but {meas.size} measured latencies")
        need = 4 if scale or per_family else 2
        if len(meas) < need:
            what = " and scale" if scale else " and per-family scales" if per_family else ""
            raise CodesignError(f"fitting the network overhead{what} needs at least {need} measured networks")
        if not np.isfinite(meas).all() or not (meas > 0).all():
            raise CodesignError("measured latencies must be positive")
        mode = "family" if per_family else "scale" if scale else "overhead"
        sums = family_sums(self, networks, use_measured)
        terms = fit_network_terms(sums, meas, mode)
        fs = terms["family_scales"]
        self.family_scales = None if fs is None else {f: float(w) for f, w in zip(FAMILIES, fs)}
        self.overhead_ms, self.per_kernel_overhead_ms = terms["overhead_ms"], terms["per_kernel_overhead_ms"]
        self.network_scale = terms["network_scale"]
        self.network_log_interval = network_log_interval(sums, meas, mode, self.interval_level())
        return self

    def interval_level(self) -> float:
        """The two-sided level of the model's intervals (its kernel heads', else 0.9)."""
        return float(self.heads.get("latency_ms", {}).get("level", 0.9))

    # --- artifacts -------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {
            "format_version": 1 if self.family_scales is None and self.network_log_interval is None else FORMAT_VERSION,
            "kind": self.kind, "seed": self.seed, "device": self.device,
            "schedule": self.schedule, "target": self.target, "tvm_version": self.tvm_version,
            "energy_source": self.energy_source, "n_train": self.n_train, "created_at": self.created_at,
            "overhead_ms": self.overhead_ms, "per_kernel_overhead_ms": self.per_kernel_overhead_ms,
            "network_scale": self.network_scale, "features": list(FEATURE_NAMES), "table": self.table, "ranges": self.ranges,
            **({} if self.family_scales is None else {"family_scales": self.family_scales}),
            **({} if self.network_log_interval is None else {"network_log_interval": self.network_log_interval}),
        }

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        for k in ("seed", "device", "schedule", "target", "tvm_version", "energy_source", "n_train", "created_at",
                  "overhead_ms", "per_kernel_overhead_ms", "table"):
            setattr(self, k, meta[k])
        self.network_scale = meta.get("network_scale", 1.0)  # absent from models saved before it existed
        self.family_scales = meta.get("family_scales")
        self.network_log_interval = meta.get("network_log_interval")
        self.ranges = meta.get("ranges")

    def save(self, path: str | Path) -> Path:
        """Write the model to ``path`` (.json or .npz); returns the path."""
        self._check_fitted()
        path = Path(path)
        if path.suffix not in (".json", ".npz"):
            raise CodesignError(f"cost model path {path} must end in .json or .npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            arrays: dict[str, np.ndarray] = {}
            meta = model_to_dict(self, arrays)
            blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            with open(path, "wb") as f:
                np.savez_compressed(f, __meta__=blob, **arrays)
        else:
            path.write_text(json.dumps(model_to_dict(self), indent=1, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        """Load a saved model of any kind (the kind is read from the file)."""
        return load_cost_model(path)


def family_sums(model: CostModel, kernels: list[list[KernelSpec]], use_measured: bool = True) -> np.ndarray:
    """(rows, len(FAMILIES) + 1): base-predicted latency per family, then the kernel count."""
    out = np.zeros((len(kernels), len(FAMILIES) + 1))
    for i, specs in enumerate(kernels):
        lat = model.predict(specs, use_measured)
        for s, v in zip(specs, lat):
            out[i, FAMILIES.index(family(s))] += v
        out[i, -1] = len(specs)
    return out


def fit_weights(sums: np.ndarray, measured: np.ndarray, prior: float = DEFAULT_PRIOR,
                signed_per_kernel: bool = False) -> tuple[np.ndarray, float]:
    """Per-family weights w >= 0 and per-kernel overhead c >= 0 (any sign with
    ``signed_per_kernel``: kernels timed alone that cost more than inside a network) of
    ``latency = sum over families f of w[f] * sums[:, f] + c * sums[:, -1]`` (``sums``: ``family_sums``),
    minimising the squared relative error over the rows, with a ridge pull (``prior``) of every w
    towards the rows' median ratio of measured to summed latency, and of c towards 0: a family the
    rows barely exercise keeps the common scale. Used by ``calibrate`` (one device carried to
    another) and ``CostModel.fit_overhead(per_family=True)`` (kernels inside a network)."""
    from scipy.optimize import nnls

    measured = np.asarray(measured, dtype=np.float64)
    base_total = sums[:, :-1].sum(axis=1)
    scale = float(np.median(measured / np.maximum(base_total, 1e-12)))
    nf = len(FAMILIES)
    a = sums / measured[:, None]  # relative error rows
    b = np.ones(len(measured))
    # The prior is in the same relative units, per family and for the overhead (towards 0).
    reg = np.sqrt(prior) * np.eye(nf + 1)
    reg[:, :nf] /= max(scale, 1e-12)
    a_full = np.vstack([a, reg])
    b_full = np.concatenate([b, np.sqrt(prior) * np.ones(nf), [0.0]])
    if signed_per_kernel:
        from scipy.optimize import lsq_linear

        lower = np.r_[np.zeros(nf), -np.inf]
        sol = lsq_linear(a_full, b_full, bounds=(lower, np.full(nf + 1, np.inf))).x
        return np.maximum(sol[:nf], 0.0), float(sol[nf])
    sol, _ = nnls(a_full, b_full)
    return sol[:nf], float(sol[nf])


def fit_network_terms(sums: np.ndarray, meas: np.ndarray, mode: str) -> dict[str, Any]:
    """What ``fit_overhead`` fits, from ``family_sums`` rows and measured latencies; ``mode``:
    overhead, scale or family (see there), or family_signed (family with a per-kernel term of
    either sign; compared in benchmarks/predictor.py)."""
    from scipy.optimize import nnls

    if mode in ("family", "family_signed"):
        weights, per_kernel = fit_weights(sums, meas, signed_per_kernel=mode == "family_signed")
        return {"family_scales": weights, "overhead_ms": 0.0, "per_kernel_overhead_ms": per_kernel,
                "network_scale": 1.0}
    total, counts = sums[:, :-1].sum(axis=1), sums[:, -1]
    a = np.stack([1.0 / meas, counts / meas], axis=1)
    if mode == "scale":
        sol, _ = nnls(np.concatenate([a, (total / meas)[:, None]], axis=1), np.ones_like(meas))
        if sol[2] > 0:
            return {"family_scales": None, "overhead_ms": float(sol[0]), "per_kernel_overhead_ms": float(sol[1]),
                    "network_scale": float(sol[2])}
        # the kernel sums explain nothing of these networks: keep them at face value
    sol, _ = nnls(a, 1.0 - total / meas)
    return {"family_scales": None, "overhead_ms": float(sol[0]), "per_kernel_overhead_ms": float(sol[1]),
            "network_scale": 1.0}


def apply_network_terms(terms: dict[str, Any], sums: np.ndarray) -> np.ndarray:
    """The network latencies ``terms`` (``fit_network_terms``) give ``family_sums`` rows."""
    if terms["family_scales"] is not None:
        return sums[:, :-1] @ terms["family_scales"] + terms["per_kernel_overhead_ms"] * sums[:, -1]
    return (terms["network_scale"] * sums[:, :-1].sum(axis=1) + terms["overhead_ms"]
            + terms["per_kernel_overhead_ms"] * sums[:, -1])


def network_log_interval(sums: np.ndarray, meas: np.ndarray, mode: str, level: float) -> list[float] | None:
    """[low, high] of log(measured / predicted) for a new network, from networks' ``family_sums``
    rows and measured latencies: each network predicted with the ``mode`` terms fitted on the
    others, the split-conformal bounds of those errors at ``level``. None with fewer than
    ``conformal_min_networks`` networks, or when one is predicted at 0 (no kernels, no overhead:
    no log error)."""
    if len(meas) < conformal_min_networks(level):
        return None
    loo = np.array([apply_network_terms(fit_network_terms(np.delete(sums, i, 0), np.delete(meas, i), mode),
                                        sums[i:i + 1])[0] for i in range(len(meas))])
    return conformal_bounds(np.log(meas / loo), level) if (loo > 0).all() else None


def conformal_min_networks(level: float) -> int:
    """The fewest residuals whose split-conformal bounds at two-sided ``level`` are finite."""
    return int(np.ceil(2.0 / (1.0 - level) - 1.0 - 1e-9))


def conformal_bounds(residuals, level: float) -> list[float]:
    """[low, high] of a split-conformal interval at two-sided ``level`` from residuals: the
    floor((n + 1) a/2)-th and ceil((n + 1)(1 - a/2))-th smallest, a = 1 - level (a new residual of
    the same kind falls between them with probability >= level)."""
    r = np.sort(np.asarray(residuals, np.float64))
    n, a = len(r), 1.0 - level
    k_lo, k_hi = int(np.floor((n + 1) * a / 2 + 1e-9)), int(np.ceil((n + 1) * (1 - a / 2) - 1e-9))
    if k_lo < 1 or k_hi > n:
        raise CodesignError(f"{n} residuals are too few for a {level:.0%} interval (need "
                            f"{conformal_min_networks(level)})")
    return [float(r[k_lo - 1]), float(r[k_hi - 1])]


# The key of a type's sampled ranges that lists the fused activations fitted (sorted names).
ACTIVATIONS_KEY = "activations"


def sampled_ranges(specs: Iterable[KernelSpec]) -> dict[str, dict[str, list]]:
    """Per kernel type, [min, max] of each ``features.RANGE_DIMS`` over ``specs``, and under
    ``ACTIVATIONS_KEY`` the fused activations seen (types whose ops fuse one)."""
    from .features import kernel_dims, kernel_type

    out: dict[str, dict[str, list]] = {}
    acts: dict[str, set[str]] = {}
    for s in specs:
        t = kernel_type(s)
        r = out.setdefault(t, {})
        for dim, v in kernel_dims(s).items():
            lo, hi = r.get(dim, [v, v])
            r[dim] = [min(lo, v), max(hi, v)]
        if s.attr("activation") is not None:
            acts.setdefault(t, set()).add(s.attr("activation"))
    for t, seen in acts.items():
        out[t][ACTIVATIONS_KEY] = sorted(seen)
    return out


def model_to_dict(model: CostModel, arrays: dict[str, np.ndarray] | None = None, prefix: str = "") -> dict:
    """A JSON-able form of a fitted model. Arrays go into ``arrays`` (by reference) when given,
    else inline as lists."""
    meta = model._meta()
    heads: dict[str, dict[str, Any]] = {}
    for target, head in model.heads.items():
        heads[target] = {}
        for k, v in head.items():
            if isinstance(v, np.ndarray):
                if arrays is None:
                    heads[target][k] = {"__array__": v.tolist(), "dtype": str(v.dtype)}
                else:
                    ref = f"{prefix}{target}/{k}"
                    arrays[ref] = v
                    heads[target][k] = {"__array__": ref, "dtype": str(v.dtype)}
            else:
                heads[target][k] = v
    meta["heads"] = heads
    return meta


def model_from_dict(meta: dict, arrays: dict[str, np.ndarray] | None = None, where: str = "cost model") -> CostModel:
    """Inverse of ``model_to_dict``.

    Raises:
        CodesignError: newer format version, unknown kind, missing fields.
    """
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise CodesignError(f"{where} is not a codesign cost model (no format_version)")
    if isinstance(meta["format_version"], bool) or not isinstance(meta["format_version"], int):
        raise CodesignError(f"{where} has format_version {meta['format_version']!r}, not an integer; "
                            "it was not written by codesign")
    if meta["format_version"] > FORMAT_VERSION:
        raise CodesignError(
            f"{where} has format version {meta['format_version']}, newer than this codesign reads "
            f"({FORMAT_VERSION}); upgrade codesign"
        )
    kind = meta.get("kind")
    if kind not in COST_MODELS:
        raise CodesignError(f"{where}: unknown cost model kind {kind!r}; known: {', '.join(COST_MODELS.names())}")
    model = COST_MODELS.create(kind, seed=meta.get("seed", 0))
    try:
        model._restore(meta, arrays)
        heads = {}
        for target, head in meta["heads"].items():
            heads[target] = {}
            for k, v in head.items():
                if isinstance(v, dict) and "__array__" in v:
                    ref = v["__array__"]
                    heads[target][k] = arrays[ref] if isinstance(ref, str) else np.asarray(ref, dtype=v["dtype"])
                else:
                    heads[target][k] = v
    except (KeyError, TypeError, ValueError) as exc:
        raise CodesignError(f"{where} is damaged or incomplete ({type(exc).__name__}: {exc})") from exc
    model.heads = heads
    model._check_loaded(where)
    return model


def check_model(model: CostModel, device: str | None = None, schedule: str | None = None,
                where: str = "the cost model") -> CostModel:
    """``model`` itself if it belongs to ``device`` and ``schedule`` (None: any).

    Raises:
        CodesignError: a model of another device or schedule policy (saying how to get the right one).
    """
    if device is not None and model.device != device:
        raise CodesignError(
            f"{where} predicts device {model.device} [{model.schedule}], not {device}; fit one with "
            f"`codesign fit --device {device}` or carry it over with `codesign calibrate --as {device}`"
        )
    if schedule is not None and model.schedule != schedule:
        raise CodesignError(
            f"{where} was fitted on {model.device} profiles of schedule policy {model.schedule}, not {schedule}; "
            f"fit one with `codesign fit --device {model.device} --schedule {schedule}`"
        )
    return model


def load_cost_model(path: str | Path, device: str | None = None, schedule: str | None = None) -> CostModel:
    """Load a model written by ``CostModel.save``.

    Args:
        path: the .json or .npz artifact.
        device, schedule: when given, the model must belong to them (see ``check_model``).

    Raises:
        CodesignError: missing or unreadable file, newer format version, unknown kind, a model of
            another device or schedule policy.
    """
    path = Path(path)
    if not path.exists():
        raise CodesignError(f"no cost model at {path}; create one with `codesign fit`")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["__meta__"]).decode())
                arrays = {k: z[k] for k in z.files if k != "__meta__"}
        else:
            meta = json.loads(path.read_text())
            arrays = {}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CodesignError(f"{path} is not a codesign cost model ({exc})") from exc
    return check_model(model_from_dict(meta, arrays, where=str(path)), device, schedule, where=str(path))


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge on standardised columns with an unpenalised intercept; returns (coef, mean, scale)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    a = np.hstack([np.ones((len(z), 1)), z])
    penalty = lam * np.eye(a.shape[1])
    penalty[0, 0] = 0.0
    coef = np.linalg.solve(a.T @ a + penalty, a.T @ y)
    return coef, mean, scale


_NUMERIC = [i for i, n in enumerate(FEATURE_NAMES) if not n.startswith("is_")]


@register_cost_model("loglinear")
class LogLinearModel(CostModel):
    """Per-family ridge regression of log latency on log work terms."""

    def __init__(self, seed: int = 0, alpha: float = 1.0, min_family_rows: int = 8):
        super().__init__(seed)
        self.alpha = float(alpha)
        self.min_family_rows = int(min_family_rows)

    def _fit_head(self, specs, x, y):
        fams = np.array([FAMILIES.index(family(s)) for s in specs])
        coef, mean, scale = _ridge(x, y, self.alpha)
        nf, nn = len(FAMILIES), len(_NUMERIC)
        fam_coef = np.zeros((nf, nn + 1))
        fam_mean = np.zeros((nf, nn))
        fam_scale = np.ones((nf, nn))
        has = np.zeros(nf, dtype=np.int64)
        for f in range(nf):
            rows = fams == f
            if rows.sum() >= self.min_family_rows:
                fam_coef[f], fam_mean[f], fam_scale[f] = _ridge(x[rows][:, _NUMERIC], y[rows], self.alpha)
                has[f] = 1
        return {"alpha": self.alpha, "global_coef": coef, "global_mean": mean, "global_scale": scale,
                "family_coef": fam_coef, "family_mean": fam_mean, "family_scale": fam_scale, "family_fitted": has}

    def _check_head(self, target, head):
        nf, nn, n = len(FAMILIES), len(_NUMERIC), len(FEATURE_NAMES)
        shapes = {"global_coef": (n + 1,), "global_mean": (n,), "global_scale": (n,), "family_coef": (nf, nn + 1),
                  "family_mean": (nf, nn), "family_scale": (nf, nn), "family_fitted": (nf,)}
        for k, shape in shapes.items():
            if np.shape(head.get(k)) != shape:
                return f"parameter {k} has shape {np.shape(head.get(k))}, not {shape}"
        if (np.asarray(head["global_scale"]) == 0).any() or (np.asarray(head["family_scale"]) == 0).any():
            return "has a zero feature scale"
        return None

    def _predict_head(self, head, specs, x):
        out = np.hstack([np.ones((len(x), 1)), (x - head["global_mean"]) / head["global_scale"]]) @ head["global_coef"]
        for i, s in enumerate(specs):
            f = FAMILIES.index(family(s))
            if head["family_fitted"][f]:
                z = (x[i, _NUMERIC] - head["family_mean"][f]) / head["family_scale"][f]
                out[i] = head["family_coef"][f][0] + z @ head["family_coef"][f][1:]
        return out


@register_cost_model("gbdt")
class GBDTModel(CostModel):
    """Gradient-boosted regression trees on all features (fitted with scikit-learn, stored as arrays)."""

    def __init__(self, seed: int = 0, n_estimators: int = 400, max_depth: int = 4, learning_rate: float = 0.05,
                 subsample: float = 0.8):
        super().__init__(seed)
        self.params = {"n_estimators": int(n_estimators), "max_depth": int(max_depth),
                       "learning_rate": float(learning_rate), "subsample": float(subsample)}

    def _fit_head(self, specs, x, y):
        from sklearn.ensemble import GradientBoostingRegressor

        base = float(y.mean())
        gbr = GradientBoostingRegressor(init="zero", random_state=self.seed, **self.params)
        gbr.fit(x, y - base)
        return {"base": base, "learning_rate": self.params["learning_rate"],
                **trees_to_arrays([est[0].tree_ for est in gbr.estimators_])}

    def _check_head(self, target, head):
        return tree_problem(head, "", len(FEATURE_NAMES))

    def _predict_head(self, head, specs, x):
        return head["base"] + head["learning_rate"] * tree_values(head, x).sum(axis=1)


def trees_to_arrays(trees, prefix: str = "") -> dict[str, np.ndarray]:
    """scikit-learn ``tree_`` objects as flat arrays (node indices offset per tree): what
    ``tree_values`` evaluates, storable in JSON/npz without scikit-learn or pickle."""
    offsets = np.cumsum([0] + [t.node_count for t in trees])[:-1]
    left = np.concatenate([np.where(t.children_left >= 0, t.children_left + o, -1) for t, o in zip(trees, offsets)])
    right = np.concatenate([np.where(t.children_right >= 0, t.children_right + o, -1) for t, o in zip(trees, offsets)])
    return {
        f"{prefix}roots": offsets.astype(np.int64), f"{prefix}left": left.astype(np.int64),
        f"{prefix}right": right.astype(np.int64),
        f"{prefix}feature": np.concatenate([t.feature for t in trees]).astype(np.int64),
        f"{prefix}threshold": np.concatenate([t.threshold for t in trees]).astype(np.float64),
        f"{prefix}value": np.concatenate([t.value[:, 0, 0] for t in trees]).astype(np.float64),
    }


def tree_values(head: dict, x: np.ndarray, prefix: str = "") -> np.ndarray:
    """The leaf value every tree of ``trees_to_arrays`` gives every row of ``x``: (rows, trees)."""
    roots, left, right = head[f"{prefix}roots"], head[f"{prefix}left"], head[f"{prefix}right"]
    feature, threshold = head[f"{prefix}feature"], head[f"{prefix}threshold"]
    # scikit-learn compares float32 features with float64 thresholds: do the same, so that
    # stored models predict exactly what the fitted ones did.
    x32 = x.astype(np.float32).astype(np.float64)
    node = np.broadcast_to(roots, (len(x), len(roots))).copy()
    rows = np.arange(len(x))[:, None]
    for _ in range(len(left) + 1):  # no walk is longer than the nodes (bounds a damaged tree)
        leaf = left[node] < 0
        if leaf.all():
            break
        feat = np.where(leaf, 0, feature[node])
        go_left = x32[rows, feat] <= threshold[node]
        node = np.where(leaf, node, np.where(go_left, left[node], right[node]))
    else:
        raise CodesignError("a cost model tree walk did not end: the model's trees are damaged")
    return head[f"{prefix}value"][node]


def tree_problem(head: dict, prefix: str, n_features: int) -> str | None:
    """What is wrong with the ``trees_to_arrays`` trees under ``prefix`` of a loaded head (None:
    nothing): arrays of different lengths, roots or children out of range, a child that does not
    follow its parent (a walk that could loop), a split on a feature that does not exist."""
    try:
        roots, left, right, feature = (np.asarray(head[f"{prefix}{k}"]) for k in ("roots", "left", "right", "feature"))
        threshold, value = np.asarray(head[f"{prefix}threshold"]), np.asarray(head[f"{prefix}value"])
    except KeyError as exc:
        return f"trees lack {exc}"
    n = len(left)
    for k, arr in (("right", right), ("feature", feature), ("threshold", threshold), ("value", value)):
        if arr.shape != (n,):
            return f"tree array {prefix}{k} has {arr.size} entries, not {n}"
    if any(arr.dtype.kind not in "iu" for arr in (roots, left, right, feature)):
        return "tree node indices are not integers"
    if roots.ndim != 1 or ((roots < 0) | (roots >= n)).any():
        return f"tree roots lie outside the {n} nodes"
    inner = np.flatnonzero(left >= 0)
    # A child always follows its parent (as scikit-learn numbers them): every walk ends.
    if ((left[inner] <= inner) | (left[inner] >= n) | (right[inner] <= inner) | (right[inner] >= n)).any():
        return "trees refer to nodes out of range or back to themselves"
    if ((feature[inner] < 0) | (feature[inner] >= n_features)).any():
        return f"trees split on features outside the {n_features} known"
    return None


@register_cost_model("kernel-type")
class KernelTypeModel(CostModel):
    """nn-Meter's kernel predictors on codesign's kernels: one random forest per kernel type.

    Each kernel type (``features.KERNEL_TYPES``: dense kxk conv, pointwise, depthwise, grouped,
    dense layer, max/avg pool, global pool, batch norm, add, mul, activation, ...) gets its own
    forest on ``features.TYPE_FEATURE_NAMES`` (shapes, FLOPs, bytes, arithmetic intensity, loop
    details) regressing log latency; types with fewer than ``min_type_rows`` profiled kernels fall
    back to one forest over all types. Meant to be fitted on kernels sampled per type, as
    ``codesign fit --adaptive`` does (``codesign.predict.adaptive``).

    Uncertainty: the spread of the trees' predictions, scaled per type so that the interval
    covers ``level`` of the out-of-bag residuals of the fit (a split-conformal calibration on the
    kernels each tree did not see): ``predict_interval`` returns it in ms.
    """

    def __init__(self, seed: int = 0, n_estimators: int = 64, min_samples_leaf: int = 1, max_features: float = 0.7,
                 min_type_rows: int = 10, level: float = 0.9):
        super().__init__(seed)
        self.params = {"n_estimators": int(n_estimators), "min_samples_leaf": int(min_samples_leaf),
                       "max_features": float(max_features)}
        self.min_type_rows = int(min_type_rows)
        self.level = float(level)

    def _forest(self, x: np.ndarray, y: np.ndarray, prefix: str, head: dict) -> None:
        from sklearn.ensemble import RandomForestRegressor

        # Trees cannot extrapolate: a kernel smaller or larger than every sampled one would get
        # the nearest leaf's latency. A ridge line in the log work terms carries the trend in
        # size, and the forest learns what it misses (the irregularities of the generated code).
        coef, mean, scale = _ridge(x[:, _TREND], y, 1.0)
        trend = np.hstack([np.ones((len(x), 1)), (x[:, _TREND] - mean) / scale]) @ coef
        head.update({f"{prefix}trend_coef": coef, f"{prefix}trend_mean": mean, f"{prefix}trend_scale": scale})
        rf = RandomForestRegressor(bootstrap=True, oob_score=len(y) >= 4, random_state=self.seed, n_jobs=1,
                                   **self.params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Some inputs do not have OOB scores"
            rf.fit(x, y - trend)
        y = y - trend
        head.update(trees_to_arrays([est.tree_ for est in rf.estimators_], prefix))
        spread = np.maximum(tree_values(head, x, prefix).std(axis=1), _MIN_SPREAD)
        q = 3.0  # few rows: a wide default
        if len(y) >= 4:
            oob = getattr(rf, "oob_prediction_", None)
            ok = np.isfinite(oob) if oob is not None else np.zeros(len(y), bool)
            if ok.sum() >= 4:
                q = float(np.quantile(np.abs(y[ok] - oob[ok]) / spread[ok], self.level))
        head["q"][prefix] = q

    def _fit_head(self, specs, x, y):
        from .features import KERNEL_TYPES, kernel_type, type_feature_matrix

        types = np.array([kernel_type(s) for s in specs])
        tx = type_feature_matrix(specs)
        head: dict[str, Any] = {"types": [], "q": {}, "level": self.level, "type_features": tx.shape[1]}
        onehot = (types[:, None] == np.array(KERNEL_TYPES)[None, :]).astype(np.float64)
        self._forest(np.hstack([tx, onehot]), y, "global:", head)
        for t in KERNEL_TYPES:
            rows = types == t
            if rows.sum() >= self.min_type_rows:
                self._forest(tx[rows], y[rows], f"{t}:", head)
                head["types"].append(t)
        return head

    def _log_trees(self, head, specs) -> np.ndarray:
        """Per-tree log predictions (rows, trees) and each row's interval scale."""
        from .features import KERNEL_TYPES, kernel_type, type_feature_matrix

        types = np.array([kernel_type(s) for s in specs])
        tx = type_feature_matrix(specs)[:, :_type_features(head)]  # a model fitted on fewer knows fewer
        n_trees = len(head["global:roots"])
        out = np.empty((len(specs), n_trees))
        q = np.empty(len(specs))
        fallback = ~np.isin(types, head["types"])
        if fallback.any():
            onehot = (types[fallback, None] == np.array(KERNEL_TYPES)[None, :]).astype(np.float64)
            out[fallback] = _trend_and_trees(head, np.hstack([tx[fallback], onehot]), "global:")
            q[fallback] = head["q"]["global:"]
        for t in set(types[~fallback]):
            rows = types == t
            out[rows] = _trend_and_trees(head, tx[rows], f"{t}:")
            q[rows] = head["q"][f"{t}:"]
        return out, q

    def _predict_head(self, head, specs, x):
        return self._log_trees(head, specs)[0].mean(axis=1)

    def _check_head(self, target, head):
        from .features import KERNEL_TYPES, LEGACY_TYPE_FEATURES, TYPE_FEATURE_NAMES

        if not isinstance(head.get("types"), list) or not isinstance(head.get("q"), dict):
            return "lacks its kernel types"
        n_type = head.get("type_features", LEGACY_TYPE_FEATURES)
        if isinstance(n_type, bool) or not isinstance(n_type, int) or not LEGACY_TYPE_FEATURES <= n_type <= len(
                TYPE_FEATURE_NAMES):
            return f"type_features must be an int from {LEGACY_TYPE_FEATURES} to {len(TYPE_FEATURE_NAMES)}"
        for prefix in ["global:"] + [f"{t}:" for t in head["types"]]:
            n = n_type + (len(KERNEL_TYPES) if prefix == "global:" else 0)
            problem = tree_problem(head, prefix, n)
            if problem:
                return problem
        return None

    def predict_interval(self, specs, use_measured: bool = True, target: str = "latency_ms"):
        self._check_fitted()
        specs = list(specs)
        lo, hi = np.empty(len(specs)), np.empty(len(specs))
        todo = []
        for i, s in enumerate(specs):
            row = self.table.get(s.key()) if use_measured else None
            if row is not None and target in row:
                lo[i] = hi[i] = row[target]
            else:
                todo.append(i)
        if todo:
            trees, q = self._log_trees(self.heads[target], [specs[i] for i in todo])
            mean, spread = trees.mean(axis=1), np.maximum(trees.std(axis=1), _MIN_SPREAD)
            lo[todo], hi[todo] = np.exp(mean - q * spread), np.exp(mean + q * spread)
        return lo, hi

    def _meta(self):
        meta = super()._meta()
        meta.update(params=self.params, min_type_rows=self.min_type_rows, level=self.level)
        return meta

    def _restore(self, meta, arrays=None):
        super()._restore(meta, arrays)
        self.params, self.min_type_rows, self.level = meta["params"], meta["min_type_rows"], meta["level"]


# Smallest spread of the trees' log predictions an interval is scaled from (1 %).
_MIN_SPREAD = 0.01


def _type_features(head: dict) -> int:
    from .features import LEGACY_TYPE_FEATURES

    return int(head.get("type_features", LEGACY_TYPE_FEATURES))


def _trend_columns() -> list[int]:
    from .features import TYPE_FEATURE_NAMES

    return [TYPE_FEATURE_NAMES.index(n) for n in ("log_flops", "log_bytes", "log_out_elements", "log_reduction")]


_TREND = _trend_columns()


def _trend_and_trees(head: dict, x: np.ndarray, prefix: str) -> np.ndarray:
    """Per-tree log predictions: the ridge trend plus each tree's residual."""
    z = (x[:, _TREND] - head[f"{prefix}trend_mean"]) / head[f"{prefix}trend_scale"]
    trend = np.hstack([np.ones((len(x), 1)), z]) @ head[f"{prefix}trend_coef"]
    return trend[:, None] + tree_values(head, x, prefix)
