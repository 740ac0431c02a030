"""Cost sources backed by a fitted cost model: a saved/calibrated model (``model``), or a TVM device
whose kernels are profiled into the profile database and fitted on the spot (``tvm``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..errors import CodesignError
from ..files import check_output
from ..kernelspec import KernelSpec
from .base import CostSource, register_cost_source


@register_cost_source("model")
class ModelCostSource(CostSource):
    """Costs from a fitted ``codesign.predict`` cost model (per-kernel predictions, whole networks
    with the model's fitted network/kernel overheads, as ``codesign predict`` gives them)."""

    def __init__(self, model=None, path: str | Path | None = None, statistic: str = "median"):
        self.statistic = statistic  # of the whole-network measurement
        if model is None and path is not None:
            from ..predict import load_cost_model

            model = load_cost_model(path)
        self.path = str(path) if path is not None else None
        self._model = None
        if model is not None:
            self._set_model(model)

    def _set_model(self, model) -> None:
        self._model = model
        self.device, self.schedule = model.device, model.schedule
        self.metrics = ("latency_ms", "energy_mj") if "energy_mj" in model.heads else ("latency_ms",)
        self.energy_note = model.energy_source

    @property
    def model(self):
        if self._model is None:
            raise CodesignError(f"the {self.kind} cost source of {self.device} is not prepared")
        return self._model

    def kernel_costs(self, specs: list[KernelSpec]) -> dict[str, np.ndarray]:
        specs = list(specs)
        if not specs:
            return {m: np.zeros(0) for m in self.metrics}
        out = {"latency_ms": np.asarray(self.model.predict(specs), np.float64)}
        if "energy_mj" in self.metrics:
            out["energy_mj"] = np.asarray(self.model.predict_energy(specs), np.float64)
        return out

    def kernel_costs_in_network(self, specs: list[KernelSpec]) -> dict[str, np.ndarray]:
        """The kernels' latencies scaled as inside a network, plus the per-kernel overhead (the
        model's fitted network terms; energy as ``kernel_costs``)."""
        out = self.kernel_costs(specs)
        m = self.model
        out["latency_ms"] = out["latency_ms"] * m.in_network_scales(specs) + m.per_kernel_overhead_ms
        return out

    def network_cost(self, specs: list[KernelSpec]) -> dict[str, float]:
        res = self.model.predict_network(list(specs))
        out = {"latency_ms": float(res["latency_ms"])}
        if res.get("energy_mj") is not None and np.isfinite(res["energy_mj"]):
            out["energy_mj"] = float(res["energy_mj"])
        return out

    def can_measure(self) -> tuple[bool, str]:
        from ..profile import get_device

        try:
            dev = get_device(self.device)
        except CodesignError:
            return False, (f"the cost model's device {self.device} is not a declared TVM device here, so no "
                           "measurement checks the prediction (declare it with a device YAML to measure)")
        try:
            _check_timeable(dev, self.schedule)
        except CodesignError as exc:
            return False, f"the cost model's device {self.device} cannot be measured from here: {exc}"
        return True, ""

    def measure(self, onnx_path, progress: bool = False, hw_choices=()) -> dict | None:
        ok, _ = self.can_measure()
        if not ok:
            return None
        from ..profile import get_device
        from ..profile.db import default_db_path, tuning_dir_for
        from ..profile.measure import measure_network

        m = measure_network(str(onnx_path), get_device(self.device), self.schedule, repeats=10, min_repeat_ms=20.0,
                            tuning_dir=str(tuning_dir_for(default_db_path())), statistic=self.statistic)
        return {**m.to_dict(), "energy_mj": None,
                "energy_note": "no energy counter measures whole networks on this device"}

    def describe(self) -> dict:
        out = super().describe()
        if self._model is not None:
            out.update(model_kind=self._model.kind, model_path=self.path, profiled_kernels=self._model.n_train)
        return out


# How the interleaved timings of whole networks (calibration, the budget check) summarise their
# repeats: the fastest. On a shared host a neighbour's load slows some repeats, never speeds one;
# ten rounds of three repeats then give ratios between networks that hold to about 1 % from one
# process to the next, where medians moved by 15 % (docs/search.md).
NETWORK_STATISTIC = "min"
# Part of every stored network's key: how its repeats were timed. Rows of earlier versions (keys
# without it) scaled each repeat by the thread's core share, which can read a network several
# times faster than it runs (``profile.measure.scales_by_core_share``); they are never reused.
NETWORK_TIMING = "unscaled"


@register_cost_source("tvm")
class TVMDeviceSource(ModelCostSource):
    """A device TVM can build for and time: its kernels are profiled into the profile database
    (resumable, shared across runs), then a cost model is fitted on every profile of the device
    and schedule policy there."""

    def __init__(self, device: str = "cpu-local", schedule: str | None = None, db: str | Path | None = None,
                 model_kind: str = "gbdt", repeats: int = 5, min_repeat_ms: float = 10.0,
                 tuning_dir: str | Path | None = None, statistic: str = "median", tune_trials: int | None = None):
        from ..predict.models import FITTABLE
        from ..profile import ProfileDB, get_device
        from ..profile.db import default_db_path, tuning_dir_for
        from ..profile.profiler import check_same_cpu, check_settings
        from ..profile.schedules import DEFAULT_TUNE_TRIALS

        super().__init__(statistic=statistic)
        self.tune_trials = DEFAULT_TUNE_TRIALS if tune_trials is None else tune_trials
        # An unknown device, a schedule or target it cannot use, a device this host cannot time
        # (a GPU it lacks, an unreachable tracker) and an unusable database fail here, before any work.
        self.dev = get_device(device)
        _check_timeable(self.dev, schedule)
        self.schedule = check_settings(self.dev, schedule, repeats, min_repeat_ms, statistic=statistic,
                                       tune_trials=self.tune_trials)
        self.device = self.dev.name
        self.db = Path(db) if db else default_db_path()
        if self.db.exists():
            with ProfileDB(self.db) as db:  # opened to write, as profiling will: a read-only file fails here
                check_same_cpu(db, self.dev)
        else:
            check_output(self.db, "profile database")
        self.model_kind = FITTABLE.check(model_kind)
        self.repeats, self.min_repeat_ms = repeats, min_repeat_ms
        # metaschedule:* keeps its records beside the profile database unless told otherwise
        self.tuning_dir = Path(tuning_dir) if tuning_dir else tuning_dir_for(self.db)
        self.report = None

    def prepare(self, specs: Iterable[KernelSpec] | Callable[[], Iterable[KernelSpec]], cache=None,
                progress: bool = False) -> TVMDeviceSource:
        from ..predict import load_cost_model
        from ..predict.api import fit_from_profiles
        from ..profile import ProfileDB, profile_kernels

        if cache is not None and Path(cache).exists():
            self._set_model(load_cost_model(cache))
            return self
        specs = list(specs() if callable(specs) else specs)
        self.db.parent.mkdir(parents=True, exist_ok=True)
        with ProfileDB(self.db) as db:
            if progress:
                import sys

                print(f"profiling {len(specs)} kernels on {self.device} [{self.schedule}] (cached in {self.db})",
                      file=sys.stderr, flush=True)
            self.report = profile_kernels(specs, self.dev, db, schedule=self.schedule, repeats=self.repeats,
                                          min_repeat_ms=self.min_repeat_ms, progress=progress,
                                          tuning_dir=str(self.tuning_dir), statistic=self.statistic,
                                          tune_trials=self.tune_trials)
        model, _ = fit_from_profiles(self.device, self.db, self.schedule, self.model_kind, seed=0)
        if cache is not None:
            model.save(cache)
        self._set_model(model)
        return self

    def can_measure(self) -> tuple[bool, str]:
        return True, ""

    def calibrate(self, space, genotypes: list[str], progress: bool = False) -> dict:
        """Time the whole networks of ``genotypes`` (untrained, in interleaved rounds on a local
        device; stored in the profile database, so that a later run on this device and schedule
        reuses them) and fit the cost model's network terms on them: the per-network and
        per-kernel overhead and, from 4 networks, how much slower kernels run inside a network
        than one by one (``CostModel.fit_overhead``).

        Returns:
            {"networks": [{"genotype", "latency_ms", "kernel_sum_ms", "kernels", "timed_now"}], "timed_now",
            "statistic" (of each network's timed runs), "overhead_ms", "per_kernel_overhead_ms",
            "network_scale", "fit_ratio": [predicted / measured of each network after the fit]}
        """
        import hashlib
        import sys

        from ..profile import ProfileDB

        keyed = []
        for genotype in genotypes:
            kernels = space.network_kernels(genotype)
            digest = hashlib.sha256("\n".join(k.key() for k in kernels).encode()).hexdigest()[:16]
            keyed.append((genotype, kernels, f"{space.name}/{space.canonical(genotype)}/{digest}/{NETWORK_TIMING}"))
        with ProfileDB(self.db) as db:
            stored = {key: db.network_latency(key, self.device, self.schedule, NETWORK_STATISTIC)
                      for _, _, key in keyed}
        todo = [(g, key) for g, _, key in keyed if stored[key] is None]
        if todo:
            if progress:
                print(f"  compiling and timing {len(todo)} networks of the {space.name} space (interleaved rounds)",
                      file=sys.stderr, flush=True)
            timed = self.time_networks(space, [g for g, _ in todo])
            import tvm

            with ProfileDB(self.db) as db:
                for genotype, key in todo:
                    db.add_network(key, self.device, self.schedule, timed[genotype], None, NETWORK_STATISTIC,
                                   tvm.__version__)
                    stored[key] = timed[genotype]
        rows = [{"genotype": g, "latency_ms": float(stored[key]), "kernels": len(kernels),
                 "kernel_sum_ms": float(np.sum(self.model.predict(kernels))),
                 "timed_now": any(key == k for _, k in todo), "_kernels": kernels} for g, kernels, key in keyed]
        new = len(todo)
        model = self.model
        model.fit_overhead([r["_kernels"] for r in rows], [r["latency_ms"] for r in rows], scale=len(rows) >= 4)
        ratio = [model.predict_network(r.pop("_kernels"))["latency_ms"] / r["latency_ms"] for r in rows]
        return {"networks": rows, "timed_now": new, "statistic": NETWORK_STATISTIC, "overhead_ms": model.overhead_ms,
                "per_kernel_overhead_ms": model.per_kernel_overhead_ms, "network_scale": model.network_scale,
                "fit_ratio": ratio}

    def time_networks(self, space, genotypes: list[str], rounds: int = 10) -> dict[str, float]:
        """Latency in ms of untrained networks of ``space`` timed together in interleaved rounds
        on a local device (``NETWORK_STATISTIC`` of each one's repeats), so that their ratios hold
        on a host whose load moves; through an RPC tracker, one by one."""
        import torch

        from ..graph import export_onnx
        from ..profile.measure import measure_network, time_networks_interleaved

        protos = {}
        for g in dict.fromkeys(genotypes):
            with torch.random.fork_rng():
                torch.manual_seed(0)
                protos[g] = export_onnx(space.build(g).eval(), tuple(space.input_shape))
        if self.dev.rpc is None:
            timed = time_networks_interleaved(protos, self.dev, self.schedule, str(self.tuning_dir), self.tune_trials,
                                              rounds=rounds, statistic=NETWORK_STATISTIC)
            return {g: float(v[0]) for g, v in timed.items()}
        return {g: measure_network(p, self.dev, self.schedule, repeats=10, min_repeat_ms=20.0,
                                   tuning_dir=str(self.tuning_dir), onnxruntime=False, statistic=NETWORK_STATISTIC,
                                   tune_trials=self.tune_trials).latency_ms for g, p in protos.items()}

    def measure(self, onnx_path, progress: bool = False, hw_choices=()) -> dict | None:
        from ..profile.measure import measure_network

        m = measure_network(str(onnx_path), self.dev, self.schedule, repeats=10, min_repeat_ms=20.0,
                            tuning_dir=str(self.tuning_dir), statistic=self.statistic,
                            tune_trials=self.tune_trials, progress=progress)
        note = (m.energy_source if m.energy_mj is not None else
                "no energy counter measures whole networks on this device")
        return {**m.to_dict(), "energy_note": note}

    def describe(self) -> dict:
        out = super().describe()
        out.update(db=str(self.db), profiled_now=self.report.measured if self.report else None)
        if self.schedule == "tuned":
            out.update(tune_trials=self.tune_trials, tuning_dir=str(self.tuning_dir),
                       tuned_now_trials=self.report.tune_trials if self.report else None)
        return out


def _check_timeable(dev, schedule: str) -> None:
    """Raises CodesignError where ``dev`` cannot be timed from this host under ``schedule``: a
    target TVM cannot build, a GPU this host lacks, an RPC tracker that does not answer."""
    from ..profile.profiler import check_settings
    from ..profile.runners import LocalRunner

    if dev.rpc is None:
        # Before the target is built: TVM warns on stderr when it builds a CUDA target without a GPU.
        LocalRunner(target_kind=str(dev.target.get("kind"))).check()
    check_settings(dev, schedule)
    if dev.rpc is not None:
        import socket

        host, port = dev.rpc["host"], dev.rpc["port"]
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as exc:
            raise CodesignError(f"the RPC tracker of {dev.name} at {host}:{port} does not answer ({exc})") from None


def open_cost_source(cost_model: str | Path | None = None, device: str = "cpu-local", schedule: str | None = None,
                     db: str | Path | None = None, hw_space: str | Path | None = None, **kwargs) -> CostSource:
    """The cost source a search asks for, checked before any work: a hardware space to co-search
    (``hw_space``), a modelled accelerator (``device="accel:NAME|PATH"``), a saved cost model
    (``cost_model``), else the TVM device ``device`` (profiled on ``prepare``)."""
    if hw_space is not None:
        from .accelerator import HardwareSpaceSource

        return HardwareSpaceSource(hw_space)
    if device.startswith("accel:"):
        from .accelerator import AcceleratorSource

        return AcceleratorSource(device.split(":", 1)[1])
    if cost_model is not None:
        source = ModelCostSource(path=cost_model, statistic=kwargs.get("statistic", "median"))
        if schedule is not None and source.schedule != schedule:
            raise CodesignError(f"{cost_model} was fitted under schedule {source.schedule}, not {schedule}")
        return source
    return TVMDeviceSource(device, schedule, db, **kwargs)
