"""Whole-network measurement: ONNX -> Relax -> TVM compile -> timed end to end, onnxruntime beside it.

The network goes through the same schedule policy as the kernel profiles, so that measured and
predicted numbers answer the same question:

- ``untuned``: Relax's CPU pipeline with operator fusion (``LegalizeOps``, ``FuseOps``,
  ``FuseTIR``) and TVM's default, unscheduled loops. Quick to compile, but dense convolutions run
  10-30x slower than a tuned or vendor library would; depthwise convs and pools are close.
  ``tvm.compile``'s own default for CPU targets skips fusion, which would time a different set of
  kernels from the ones profiled, so codesign passes the fused CPU pipeline explicitly.
- ``dlight``: the fused kernels scheduled by TVM's rule-based dlight schedules (on a CPU only
  dense layers at batch 1 and reductions such as global pools change; the default on GPUs).
- ``tuned`` (the default on CPUs) and ``metaschedule:<trials>``: the fused module's kernels that
  the tuning directory (kept across runs, shared with the kernel profiles) holds no record of are
  tuned with MetaSchedule (``tune_trials`` each under ``tuned``); the best records of this target
  are applied to that same fused module (``MetaScheduleApplyDatabase``), which is then compiled.
  The count of kernels compiled from a record is part of the measurement, and a tuned policy that
  applies none is an error.

Before import the ONNX graph's shape arithmetic is folded (``graph.fold_constants``): exporters
emit ``Shape -> Gather -> Div -> Slice`` chains for ``chunk``/``split``, which TVM's importer turns
into slices of unknown shape, and a ``concat`` of those reaches VM codegen unlowered
("CodeGenVM cannot emit this Relax operator directly": every ShuffleNet-style channel split).
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CodesignError
from ..files import check_output, read_csv
from ..graph import load_model
from .db import DEFAULT_STATISTIC
from .runners import (
    check_statistic,
    own_core_repeats,
    runtime_device_type,
    set_threads,
    summarise,
    time_on_own_core,
)
from .schedules import DEFAULT_TUNE_TRIALS

_ORT_TYPES = {1: np.float32, 7: np.int64, 6: np.int32, 10: np.float16, 11: np.float64}


@dataclass
class NetworkMeasurement:
    """End-to-end latency of one network on one device under one schedule policy."""

    model: str
    device: str
    schedule: str
    latency_ms: float  # the ``statistic`` of the timed repeats, as the kernel profiles
    latency_std_ms: float
    repeats: int
    compile_s: float
    # The fastest repeat (with min_repeat_ms=0 each repeat is one run).
    latency_min_ms: float | None = None
    statistic: str = DEFAULT_STATISTIC
    onnxruntime_latency_ms: float | None = None
    tvm_over_onnxruntime: float | None = None
    # Under metaschedule:*, the network's distinct fused kernels (PrimFuncs: one called twice counts
    # once; copies such as concatenations included) and how many of them were compiled from a
    # tuning record (a kernel whose every candidate failed to build stays untuned).
    tuned_kernels: int | None = None
    fused_kernels: int | None = None
    # Under a tuned policy, the seed of MetaSchedule's search for the kernels it tuned in this run.
    tuning_seed: int | None = None
    # Energy per inference from a counter read around a loop of runs (RAPL on a CPU, NVML on an
    # NVIDIA GPU) where the device's energy source is such a counter and reads here; else None.
    energy_mj: float | None = None
    energy_source: str | None = None
    target: dict = field(default_factory=dict)
    tvm_version: str = ""
    host: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def input_shapes(model) -> dict[str, tuple[int, ...]]:
    """Name -> static shape of each graph input that is not an initializer.

    Raises:
        CodesignError: an input with a symbolic dimension.
    """
    inits = {t.name for t in model.graph.initializer}
    shapes = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            raise CodesignError(
                f"input {vi.name!r} has a symbolic shape; export the model with a fixed input shape (batch too)"
            )
        shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    if not shapes:
        raise CodesignError("the ONNX model has no inputs")
    return shapes


def _input_dtypes(model) -> dict[str, type]:
    out = {}
    for vi in model.graph.input:
        elem = vi.type.tensor_type.elem_type
        out[vi.name] = _ORT_TYPES.get(elem, np.float32)
    return out


def random_inputs(model, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random inputs for every graph input."""
    rng = np.random.default_rng(seed)
    dtypes = _input_dtypes(model)
    return {name: rng.standard_normal(shape).astype(dtypes[name]) for name, shape in input_shapes(model).items()}


def relax_module(model):
    """The ONNX model (path or ModelProto) as a Relax IRModule with its inputs, constants folded."""
    from tvm.relax.frontend.onnx import from_onnx

    model = load_model(model)
    shapes = input_shapes(model)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Renaming name input.1 to input_1"
            mod = from_onnx(model, shape_dict=shapes)
    except Exception as exc:  # the importer raises many types for an op it lacks
        raise CodesignError(f"TVM's ONNX importer failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    return mod, model


def _fused(mod, target):
    """Relax's CPU front half: inference decompositions, legalize, fuse (the kernels profiled)."""
    import tvm
    from tvm import relax

    with target:
        seq = tvm.transform.Sequential(
            [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings()]
            + list(relax.pipeline.library_dispatch_passes(target))
            + list(relax.pipeline.legalize_passes(target))
        )
        return seq(mod)


_COPY_OPS = {"concatenate", "strided_slice", "reshape", "transpose", "split", "squeeze", "expand_dims", "layout"}


def tvm_kernels(model, target=None) -> list[str]:
    """The fused kernels TVM runs for an ONNX model (path or ModelProto), in call order.

    Names are Relax's fused PrimFunc names (``fused_conv2d1_add1_relu1``, ``max_pool2d``); the
    ones that only move data (concatenate, slices, reshapes) are left out: ``graph.onnx_kernels``
    costs those as network overhead. The check of the fusion rules of ``graph``.
    """
    import re

    import tvm
    from tvm import relax

    mod, _ = relax_module(model)
    target = target or tvm.target.Target({"kind": "llvm", "num-cores": 1})
    fused = _fused(mod, target)
    calls: list[str] = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            calls.append(expr.args[0].name_hint)

    relax.analysis.post_order_visit(fused["main"].body, visit)
    ops = [set(re.sub(r"\d+$", "", t) for t in re.sub(r"^fused_", "", c).split("_") if t)
           for c in calls]
    return [c for c, o in zip(calls, ops) if not o <= _COPY_OPS | {"strided", "slice", "dims", "expand"}]


def _dlight(mod, target):
    """dlight's rule-based schedules on every fused kernel (as the profiles' ``dlight`` policy)."""
    from tvm.s_tir import dlight as dl

    from .schedules import GPU_KINDS

    if str(target.kind.name) in GPU_KINDS:
        rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    else:
        rules = [dl.cpu.GEMV(), dl.cpu.Reduction()]
    with target:
        return dl.ApplyDefaultSchedule(*rules)(mod)


def _finish(mod, target):
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    with target:
        seq = tvm.transform.Sequential(cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
        mod = seq(mod)
    return relax.build(mod, target=target, relax_pipeline=None)


def compile_network(mod, target, schedule: str = "untuned", tuning_dir: str | None = None,
                    tune_trials: int = DEFAULT_TUNE_TRIALS, progress: bool = False, tuning_seed: int = 0):
    """Compile a Relax module under a schedule policy.

    Args:
        tune_trials: under ``tuned``, MetaSchedule trials for each kernel without a record.
        tuning_seed: the seed of MetaSchedule's search for kernels without a record (the
            schedules it draws); a record already in ``tuning_dir`` is used whatever its seed.
        progress: under a tuned policy, say on stderr what is tuned.

    Returns:
        (TVM Executable, tuned) where ``tuned`` is (kernels compiled from a tuning record, fused
        kernels) under ``tuned`` and ``metaschedule:*`` and None under the other policies.

    Raises:
        CodesignError: an unknown schedule, a lowering failure (with the offending message), a
            tuned policy under which no tuning record applies.
    """
    from .schedules import parse_schedule

    kind, trials = parse_schedule(schedule)
    try:
        mod = _fused(mod, target)
        if kind in ("tuned", "metaschedule"):
            executable, tuned, fused = _tune(mod, target, trials if kind == "metaschedule" else tune_trials,
                                             tuning_dir, schedule, progress, tuning_seed)
            return executable, (tuned, fused)
        if kind == "dlight":
            mod = _dlight(mod, target)
        return _finish(mod, target), None
    except CodesignError:
        raise
    except Exception as exc:  # TVM's InternalError/TVMError carry multi-line traces
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        raise CodesignError(f"TVM could not compile the network: {lines[0] if lines else type(exc).__name__}") from exc


def _tune(mod, target, trials: int, tuning_dir: str | None, schedule: str, progress: bool = False,
          tuning_seed: int = 0):
    """Tune every fused kernel of ``mod`` (``trials`` each) and compile ``mod`` with the best records.

    The records are applied to the very module the tasks came from. ``compile_relax`` would fuse
    the fused module again, and its second ``AnnotateTIROpPattern`` adds an ``op_pattern``
    attribute to every fused PrimFunc: no workload then equals a tuned one, and the network is
    built from untuned loops without a word.

    Returns:
        (executable, kernels compiled from a tuning record, fused kernels).

    Raises:
        CodesignError: no tuning directory, or no record applies to any kernel.
    """
    from .tuning import locked

    if tuning_dir is None:
        raise CodesignError("MetaSchedule tuning needs a tuning directory (--tuning-dir)")
    os.makedirs(tuning_dir, exist_ok=True)
    with locked(tuning_dir):
        return _tune_locked(mod, target, trials, tuning_dir, schedule, progress, tuning_seed)


def _tune_locked(mod, target, trials: int, tuning_dir: str, schedule: str, progress: bool, tuning_seed: int):
    import logging

    import tvm
    from tvm import relax, tirx

    from .schedules import GPU_KINDS, tuning_strategy
    from .tuning import in_process_builder, meta_schedule, runner_for, target_records

    ms = meta_schedule(str(target.kind.name))
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    evolutionary = tuning_strategy() == "evolutionary"
    tasks = ms.relax_integration.extract_tasks(mod, target)
    database = ms.database.JSONDatabase(work_dir=tuning_dir, module_equality="structural")
    # Records of earlier runs on this target count: a kernel tuned before is not tuned again.
    workloads = [t.dispatched[0] for t in tasks]
    mine = target_records(ms, database, target, workloads)
    todo = [t for t in tasks if mine.query_tuning_record(t.dispatched[0], target, t.task_name) is None]
    if todo and progress:
        import sys

        print(f"tuning {len(todo)} of the network's {len(tasks)} kernels ({trials} MetaSchedule trials each; "
              f"the others compile from records in {tuning_dir})", file=sys.stderr, flush=True)
    if todo:
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            todo, tuning_dir, strategy="evolutionary" if evolutionary else "replay-trace", seed=tuning_seed)
        ms.tune.tune_tasks(
            tasks=contexts, task_weights=weights, work_dir=tuning_dir, max_trials_global=trials * len(todo),
            max_trials_per_task=trials, num_trials_per_iter=min(trials, 16), builder=in_process_builder(ms),
            runner=runner_for(ms, target),
            database=database, cost_model="xgb" if evolutionary else "random",
        )
        mine = target_records(ms, database, target, workloads)

    def scheduled(m):
        return {gv.name_hint for gv, f in m.functions.items()
                if isinstance(f, tirx.PrimFunc) and f.attrs is not None and bool(f.attrs.get("tirx.is_scheduled", False))}

    before = scheduled(mod)
    # The pass reads the target and the database from the context it is created in.
    with target, mine, tvm.transform.PassContext(opt_level=3):
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    fused = sum(isinstance(f, tirx.PrimFunc) for f in mod.functions.values())
    tuned = len(scheduled(mod) - before)
    if tuned == 0:
        raise CodesignError(
            f"{schedule}: no record in {tuning_dir} applies to any of the network's {fused} fused "
            f"kernels ({len(tasks)} tuning tasks); the network would run untuned code")
    if str(target.kind.name) in GPU_KINDS:
        mod = _dlight(mod, target)  # kernels without a record still need thread bindings
    return _finish(mod, target), tuned, fused


def _counter_energy(device, vm, dev, args, latency_ms: float) -> tuple[float | None, str | None]:
    """(mJ per inference, source) from the device's energy counter, or (None, None) where it has
    no counter that reads here (a modelled energy is a kernel-level estimate, not a measurement)."""
    from .energy import energy_source_for

    source = energy_source_for(device)
    if not source.label.startswith("measured:"):
        return None, None

    def run(calls: int) -> None:
        for _ in range(calls):
            vm["main"](*args)
        dev.sync()

    return source.measure(None, run, latency_ms), source.label


def time_onnxruntime(model, threads: int = 1, repeats: int = 10, min_repeat_ms: float = 50.0,
                     seed: int = 0, statistic: str = DEFAULT_STATISTIC) -> tuple[float, float]:
    """The ``statistic`` (median by default) and standard deviation (ms) of onnxruntime inference
    on this CPU, timed as TVM's time_evaluator times (``repeats`` runs of >= ``min_repeat_ms``; at one
    thread each scaled by its share of a core, ``runners.own_core_repeats``)."""
    import onnxruntime as ort

    model = load_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = random_inputs(model, seed)
    for _ in range(3):
        sess.run(None, feeds)

    def one_repeat() -> float:  # mean seconds per run over >= min_repeat_ms
        n, t0 = 0, time.perf_counter()
        while n == 0 or (time.perf_counter() - t0) * 1e3 < min_repeat_ms:
            sess.run(None, feeds)
            n += 1
        return (time.perf_counter() - t0) / n

    if threads == 1:  # one intra-op thread runs on the caller: time it as TVM is timed
        samples, _ = own_core_repeats(one_repeat, repeats)
    else:
        samples = [one_repeat() * 1e3 for _ in range(repeats)]
    return summarise(samples, statistic)


def measure_network(
    model, device, schedule: str | None = None, repeats: int = 10, min_repeat_ms: float = 50.0,
    tuning_dir: str | None = None, onnxruntime: bool = True, seed: int = 0, name: str | None = None,
    statistic: str = DEFAULT_STATISTIC, tune_trials: int = DEFAULT_TUNE_TRIALS, progress: bool = False,
    tuning_seed: int = 0,
) -> NetworkMeasurement:
    """Compile and time a whole network with TVM on ``device`` (and onnxruntime beside it).

    Args:
        model: path to an .onnx file or an onnx.ModelProto with static input shapes.
        device: a ``codesign.profile.Device``; one with ``rpc`` is timed through its tracker.
        schedule: ``tuned``, ``untuned``, ``dlight`` or ``metaschedule:<trials>`` (the profiles'
            policy names); None: the device's default (tuned on a CPU, dlight on a GPU).
        repeats, min_repeat_ms: timing settings (``repeats`` runs of >= min_repeat_ms each).
        statistic: how the repeats become latency_ms (``runners.STATISTICS``, median by default):
            the statistic of the kernel profiles, so that measured and predicted agree in kind.
        tuning_dir: MetaSchedule database of the tuned policies (kept and reused); None: the one
            beside the default profile database.
        tune_trials: under ``tuned``, MetaSchedule trials for each kernel without a record.
        tuning_seed: the seed of MetaSchedule's search for those kernels (0 by default; another
            seed, into another ``tuning_dir``, shows how much of the tuned latency is the search's luck).
        onnxruntime: also time onnxruntime on this host (local devices only).
        progress: say on stderr what is being tuned.

    Raises:
        CodesignError: unreadable model, symbolic shapes, an op TVM cannot import or lower,
            an unreachable tracker.
    """
    import tvm
    from tvm import relax

    if repeats < 1 or not (math.isfinite(min_repeat_ms) and min_repeat_ms >= 0):
        raise CodesignError("repeats must be >= 1 and min_repeat_ms a finite number >= 0")
    check_statistic(statistic)
    from .schedules import (
        check_schedule_for_target,
        check_tune_trials,
        default_schedule,
        is_tuned,
        tuning_strategy,
    )

    schedule = schedule or default_schedule(device.target)
    check_schedule_for_target(schedule, device.target, device.name)
    check_tune_trials(tune_trials)
    if is_tuned(schedule):
        tuning_strategy()
    if tuning_dir is None and is_tuned(schedule):
        from .db import default_db_path, tuning_dir_for

        tuning_dir = str(tuning_dir_for(default_db_path()))
    label = name or (str(model) if isinstance(model, (str, Path)) else (model.graph.name or "model"))
    if device.rpc is None:
        set_threads(device.threads)
    mod, proto = relax_module(model)
    target = device.tvm_target()
    t0 = time.perf_counter()
    executable, tuned = compile_network(mod, target, schedule, tuning_dir, tune_trials, progress, tuning_seed)
    compile_s = time.perf_counter() - t0
    feeds = random_inputs(proto, seed)
    if device.rpc is None:
        dev = tvm.device(runtime_device_type(str(target.kind.name)), 0)
        vm = relax.VirtualMachine(executable, dev)
    else:
        from tvm.support.utils import tempdir

        from .runners import RPCRunner

        runner = RPCRunner(device.rpc["host"], device.rpc["port"], device.rpc["key"], repeats, min_repeat_ms)
        tmp = tempdir()
        path = tmp.relpath("network.so")
        executable.export_library(path)
        runner.remote.upload(path)
        dev = runner.remote.device(runtime_device_type(str(target.kind.name)), 0)
        vm = relax.VirtualMachine(runner.remote.load_module("network.so"), dev)
    args = [tvm.runtime.tensor(feeds[k], dev) for k in input_shapes(proto)]
    if device.rpc is None and scales_by_core_share(device, target, statistic):
        # the VM runs the network on this thread: time it as the kernels are (runners.time_on_own_core)
        samples, _ = time_on_own_core(vm.time_evaluator, dev, args, repeats, min_repeat_ms)
    else:
        evaluator = vm.time_evaluator("main", dev, number=1, repeat=repeats, min_repeat_ms=int(round(min_repeat_ms)))
        samples = [r * 1e3 for r in evaluator(*args).results]
    latency_ms, std_ms = summarise(samples, statistic)
    result = NetworkMeasurement(
        model=label, device=device.name, schedule=schedule, latency_ms=latency_ms, latency_std_ms=std_ms,
        repeats=len(samples), compile_s=compile_s, latency_min_ms=min(samples), statistic=statistic,
        target=device.resolved_target(), tvm_version=tvm.__version__, host=socket.gethostname(),
    )
    if tuned is not None:
        result.tuned_kernels, result.fused_kernels = tuned
        result.tuning_seed = tuning_seed
    if device.rpc is None:
        result.energy_mj, result.energy_source = _counter_energy(device, vm, dev, args, latency_ms)
    if onnxruntime and device.rpc is None:
        ort_ms, _ = time_onnxruntime(proto, device.threads, repeats, min_repeat_ms, seed, statistic)
        result.onnxruntime_latency_ms = ort_ms
        result.tvm_over_onnxruntime = result.latency_ms / ort_ms if ort_ms > 0 else math.nan
    return result


def scales_by_core_share(device, target, statistic: str) -> bool:
    """Whether a network's timed repeats are scaled by the calling thread's share of a core
    (``runners.time_on_own_core``): at one thread on a CPU, under any statistic but the fastest.

    The share is read around TVM's whole evaluator call, so a wait outside its timed window (its
    warm-up run, taking the GIL back from another Python thread) lowers the share without slowing
    the timed runs, and that repeat reads faster than the network runs. A median shrugs off such a
    repeat; the fastest picks it (one calibration on a shared host read the cheapest network of a
    space at 0.08 ms where it runs in 1.1 ms). Unscaled repeats are only ever slowed by load, which
    the fastest of them removes."""
    return statistic != "min" and device.threads == 1 and runtime_device_type(str(target.kind.name)) == "cpu"


def time_networks_interleaved(models: dict, device, schedule: str, tuning_dir: str | None = None,
                              tune_trials: int = DEFAULT_TUNE_TRIALS, rounds: int = 5, repeats: int = 3,
                              min_repeat_ms: float = 20.0, statistic: str = DEFAULT_STATISTIC,
                              progress: bool = False) -> dict[str, tuple[float, float]]:
    """Compile every network of ``models`` (name -> .onnx path or ModelProto) for a local
    ``device``, then time them in ``rounds`` interleaved rounds (each round times every network
    ``repeats`` times): a burst of load on a shared host then lands on all of them rather than on
    one. Returns name -> (latency_ms under ``statistic`` over all repeats, standard deviation).

    Raises:
        CodesignError: a device reached through an RPC tracker (time those with ``measure_network``),
            a model TVM cannot import or compile.
    """
    import tvm
    from tvm import relax

    if device.rpc is not None:
        raise CodesignError(f"{device.name} is timed through its RPC tracker: measure its networks one by one")
    check_statistic(statistic)
    from .schedules import is_tuned, tuning_strategy

    if is_tuned(schedule):
        tuning_strategy()
    set_threads(device.threads)
    target = device.tvm_target()
    dev = tvm.device(runtime_device_type(str(target.kind.name)), 0)
    own_core = scales_by_core_share(device, target, statistic)
    timers = {}
    for name, model in models.items():
        mod, proto = relax_module(model)
        vm = relax.VirtualMachine(compile_network(mod, target, schedule, tuning_dir, tune_trials, progress)[0], dev)
        feeds = random_inputs(proto, 0)
        timers[name] = (vm, [tvm.runtime.tensor(feeds[k], dev) for k in input_shapes(proto)])
    samples: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, (vm, args) in timers.items():
            if own_core:
                samples[name] += time_on_own_core(vm.time_evaluator, dev, args, repeats, min_repeat_ms)[0]
            else:
                ev = vm.time_evaluator("main", dev, number=1, repeat=repeats, min_repeat_ms=int(round(min_repeat_ms)))
                samples[name] += [r * 1e3 for r in ev(*args).results]
    return {k: summarise(v, statistic) for k, v in samples.items()}


def check_outputs(model, device_threads: int = 1, seed: int = 0) -> float:
    """Largest absolute difference between TVM's (untuned) and onnxruntime's outputs."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    mod, proto = relax_module(model)
    target = tvm.target.Target({"kind": "llvm", "num-cores": device_threads})
    vm = relax.VirtualMachine(compile_network(mod, target)[0], tvm.cpu(0))
    feeds = random_inputs(proto, seed)
    out = vm["main"](*[tvm.runtime.tensor(feeds[k], tvm.cpu(0)) for k in input_shapes(proto)])
    out = out[0] if isinstance(out, (list, tuple)) or hasattr(out, "__len__") and not hasattr(out, "numpy") else out
    ref = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return float(np.abs(out.numpy() - ref).max())


# The columns of ``codesign measure --append`` tables (a calibration table, ``codesign calibrate
# --table``); tables written before the statistic column lack it and hold medians.
MEASURE_COLUMNS = ("model", "device", "schedule", "latency_ms", "latency_std_ms", "repeats", "compile_s",
                   "onnxruntime_latency_ms", "tvm_over_onnxruntime", "tvm_version", "host", "statistic")
_FLOAT_COLUMNS = ("latency_ms", "latency_std_ms", "compile_s", "onnxruntime_latency_ms", "tvm_over_onnxruntime")


class MeasureTable:
    """A CSV table that ``codesign measure --append`` extends by one row per measured network.

    Opening it checks it before anything is measured: a file with other columns, rows that are
    not numbers where numbers belong, or rows of this device and schedule under another timing
    statistic are refused; ``done`` holds the rows already measured for this device, schedule and
    statistic (a killed run resumes after them).
    """

    def __init__(self, path: str | Path, device: str, schedule: str, statistic: str = DEFAULT_STATISTIC):
        self.path = check_output(path, "--append table")
        self.columns: tuple[str, ...] = MEASURE_COLUMNS
        self.done: dict[str, dict] = {}
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        columns, rows = read_csv(self.path, "--append table")
        if tuple(columns) not in (MEASURE_COLUMNS, MEASURE_COLUMNS[:-1]):
            raise CodesignError(f"--append {self.path} has the columns {','.join(columns)}, not the ones "
                                f"`codesign measure` writes ({','.join(MEASURE_COLUMNS)}); append to a new file")
        self.columns = tuple(columns)
        if "statistic" not in self.columns and statistic != DEFAULT_STATISTIC:
            raise CodesignError(f"--append {self.path} has no statistic column (its rows are medians); "
                                f"append {statistic} timings to a new file")
        for line, r in rows:
            if r.get("device") != device or r.get("schedule") != schedule or not r.get("model"):
                continue
            row_statistic = r.get("statistic") or DEFAULT_STATISTIC
            if row_statistic != statistic:
                raise CodesignError(f"{self.path}:{line}: {r['model']} on {device} [{schedule}] was timed with "
                                    f"the {row_statistic}, not the {statistic}; append to a new file")
            row: dict = dict(r, statistic=row_statistic)
            for k in _FLOAT_COLUMNS:
                try:
                    row[k] = float(r[k]) if r.get(k) not in (None, "") else None
                except ValueError:
                    raise CodesignError(f"{self.path}:{line}: {k} {r[k]!r} is not a number") from None
            self.done[r["model"]] = row

    def append(self, r: dict) -> None:
        """Add one measurement (``NetworkMeasurement.to_dict()`` with ``model``) as a row."""
        import csv

        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: r.get(k) for k in self.columns})
        self.done[r["model"]] = r
