"""The profiling loop: build, compile, time and store every kernel not yet in the database.

Compilation of the next kernel overlaps with the timing of the current one (a one-worker thread
pool: TVM's compiler runs in C++ and leaves the timing thread alone on a second core). Each result
is committed as soon as it exists, so a killed run loses at most the kernel in flight and a rerun
resumes where it stopped. A compile in flight competes with the timing for cores and memory
bandwidth wherever the machine has no core to spare (two cores and any other job: every kernel
read 1.6-1.8x slow): on a local device the kernels timed while a compile ran are timed again once
the last compile is done, and keep the faster of their two timings (contention only ever slows a
kernel down). A kernel that fails to build or run is recorded with its error and the
run goes on.

With an executor (``codesign profile --workers N`` / ``--ray``, see ``codesign.distributed``) the
kernels compile (and tune) as Ray tasks, as many at a time as the executor has slots, and come back
as compiled libraries; timing stays in this process, one kernel after the other, so that no two
measurements of a device overlap.

Several profilers may share one database: each claims a kernel in it before building it
(``ProfileDB.claim``), skips the kernels another process stored meanwhile, and leaves the ones
another live profiler holds to the end, then waits for them (or takes over a dead profiler's).
"""

from __future__ import annotations

import math
import socket
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field

from ..errors import CodesignError
from ..kernelspec import KernelSpec
from .db import DEFAULT_STATISTIC, Measurement, ProfileDB, tuning_dir_for
from .devices import Device
from .runners import check_statistic, set_threads
from .schedules import (
    DEFAULT_TUNE_TRIALS,
    GPU_KINDS,
    allocate_trials,
    base_schedule,
    check_schedule_for_target,
    check_tune_trials,
    default_schedule,
    is_tuned,
    parse_schedule,
    tuning_strategy,
)

TORCH_SCHEDULE = "torch-eager"


@dataclass
class ProfileReport:
    device: str
    schedule: str
    requested: int = 0
    skipped: int = 0  # already in the database, or stored by another profiler meanwhile
    measured: int = 0
    failed: int = 0
    compile_s: float = 0.0
    timing_s: float = 0.0
    wall_s: float = 0.0
    # Under ``tuned``: the MetaSchedule trials given to the kernels tuned in this run (kernels whose
    # workload the tuning database already held compile from their record and spend none of them).
    tune_trials: int | None = None
    # Kernels timed while another compiled, timed again when no compile ran (local devices).
    retimed: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _built(spec: KernelSpec, target, kind: str):
    """The kernel's PrimFunc and the aliases its tuned schedule also serves: under the tuned
    policies the function a network's compile asks the tuning database for (``workloads``), so
    that the network is built from the very schedule profiled; else its TE description."""
    from .builders import build

    if kind in ("tuned", "metaschedule"):
        from .workloads import alias_workloads, network_workload

        built = network_workload(spec, target)
        if built is not None:
            return built, alias_workloads(spec, target)
    return build(spec), []


def _compile(spec: KernelSpec, target, schedule: str, tuning_dir: str | None, trials_for: dict | None = None):
    import tvm

    t0 = time.perf_counter()
    kind, trials = parse_schedule(schedule)
    built, aliases = _built(spec, target, kind)
    if kind == "tuned":
        from .tuning import NoValidSchedule, tune_and_compile

        try:
            executable = tune_and_compile(built.func, target, trials_for[spec.key()], tuning_dir, aliases)
            return executable, built.arg_shapes, time.perf_counter() - t0
        except NoValidSchedule:
            # As in a tuned network, a kernel without a valid record runs the base policy's code.
            kind = "dlight" if str(target.kind.name) in GPU_KINDS else "untuned"
            built, aliases = _built(spec, target, kind)
    if kind == "metaschedule":
        from .tuning import tune_and_compile

        executable = tune_and_compile(built.func, target, trials, tuning_dir, aliases)
    elif kind == "dlight":
        from .schedules import apply_dlight

        executable = tvm.compile(apply_dlight(built.func, target)[0], target=target)
    else:
        executable = tvm.compile(built.func, target=target)
    return executable, built.arg_shapes, time.perf_counter() - t0


def compile_library(spec: KernelSpec, target_dict: dict, schedule: str, tuning_dir: str | None,
                    trials_for: dict | None = None):
    """``_compile`` as a pure task (a Ray worker's): the target from its dict, the result as the
    bytes of a shared library, loaded by ``Library`` on the driver.

    MetaSchedule tunes into a private database (a worker never writes the shared tuning directory;
    ``tuning_dir`` is None there) whose records come back to the driver (``tuning.merge_records``).
    """
    import os
    import tempfile

    import tvm

    from .tuning import read_records

    with tempfile.TemporaryDirectory(prefix="codesign-compile-") as tmp:
        work = tuning_dir or os.path.join(tmp, "tuning")
        executable, shapes, compile_s = _compile(spec, tvm.target.Target(target_dict), schedule, work, trials_for)
        path = os.path.join(tmp, "kernel.so")
        executable.export_library(path)
        with open(path, "rb") as f:
            lib = f.read()
        records = read_records(work) if tuning_dir is None and os.path.isdir(work) else None
    return lib, shapes, compile_s, records


class Library:
    """A kernel compiled elsewhere, loaded from its shared library: what runners time, like an
    Executable (``jit()`` for a local runner, ``export_library`` for an RPC one)."""

    def __init__(self, lib: bytes, folder: str):
        import os
        import tempfile

        import tvm

        # A fresh name for every library: rewriting a file the process has loaded (a reused
        # name) would change the code under a mapped library and crash it.
        fd, self.path = tempfile.mkstemp(suffix=".so", prefix="kernel-", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(lib)
        self.module = tvm.runtime.load_module(self.path)

    def jit(self):
        return self.module

    def export_library(self, path: str) -> None:
        import shutil

        shutil.copyfile(self.path, path)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from .. import progress

    # In a log: a line every 10 s at most (profiling runs hundreds of kernels of ~0.1-100 s each).
    return progress.bar(total, desc, unit="kernel", every_s=10.0)


def check_same_cpu(db: ProfileDB, device: Device) -> None:
    """Refuse a profile database whose timings of ``device`` were taken on another CPU.

    A local device (``mcpu: auto``) means whatever CPU runs codesign, and a database in a home
    folder that several machines share, or copied to a new machine, would otherwise price this
    CPU's kernels with another's timings, mixed with its own. The stored targets name the CPU.

    Raises:
        CodesignError: the database holds the device's timings from a CPU other than the target's.
    """
    if device.target.get("kind") != "llvm":
        return
    mine = device.resolved_target().get("mcpu")
    other = db.cpus(device.name) - {str(mine)} if mine else set()
    if other:
        raise CodesignError(f"{db.path} holds {device.name} timings taken on another CPU ({', '.join(sorted(other))}; "
                            f"this one is {mine}): they would be mixed with this CPU's; use another --db here")


def check_settings(device: Device, schedule: str | None = None, repeats: int = 10, min_repeat_ms: float = 50.0,
                   reference: str | None = None, statistic: str = DEFAULT_STATISTIC,
                   tune_trials: int = DEFAULT_TUNE_TRIALS) -> str:
    """Check a profiling request before anything is built or stored; returns the schedule policy
    (the device's default for None).

    Raises:
        CodesignError: an unknown schedule or statistic, a policy the target cannot use, bad timing
            settings or trial budget, a target kind TVM lacks or a CPU name LLVM does not know, a
            torch reference on an RPC device.
    """
    check_statistic(statistic)
    check_tune_trials(tune_trials)
    if schedule is None:
        schedule = default_schedule(device.target)
    parse_schedule(schedule)
    check_schedule_for_target(schedule, device.target, device.name)
    if is_tuned(schedule):
        tuning_strategy()
    if reference not in (None, "torch"):
        raise CodesignError(f"--reference must be torch, got {reference!r}")
    if reference == "torch" and device.rpc is not None:
        raise CodesignError("--reference torch times on this host; it cannot run on an RPC device")
    if not (isinstance(repeats, int) and repeats >= 1):
        raise CodesignError(f"repeats must be an integer >= 1, got {repeats!r}")
    if not (isinstance(min_repeat_ms, (int, float)) and math.isfinite(min_repeat_ms) and min_repeat_ms >= 0):
        raise CodesignError(f"min_repeat_ms must be a finite number >= 0, got {min_repeat_ms!r}")
    device.tvm_target()  # an unknown target kind or CPU name fails here
    return schedule


def profile_kernels(
    specs: list[KernelSpec],
    device: Device,
    db: ProfileDB,
    schedule: str | None = None,
    repeats: int = 10,
    min_repeat_ms: float = 50.0,
    reference: str | None = None,
    retry_failed: bool = False,
    tuning_dir: str | None = None,
    progress: bool = True,
    overlap_compile: bool = True,
    statistic: str = DEFAULT_STATISTIC,
    poll_s: float = 0.5,
    executor=None,
    tune_trials: int = DEFAULT_TUNE_TRIALS,
    trial_split: str = "cost",
) -> ProfileReport:
    """Profile every kernel of ``specs`` not yet in ``db`` for ``device`` and ``schedule``.

    Args:
        specs: kernels to profile (duplicates are measured once).
        device: target device; an ``rpc`` device is timed through its tracker.
        db: the ProfileDB receiving one row per kernel.
        schedule: "tuned" (MetaSchedule, ``tune_trials`` per kernel on average, spread by each
            kernel's share of the base policy's cost, which is profiled first and kept under its
            own name), "untuned" (no schedule; a quick, labelled policy, CPU only), "dlight"
            (TVM's rule-based schedules) or "metaschedule:<trials>" (the same trials for every
            kernel). Tuning records go to ``tuning_dir``, by default ``<db>.tuning`` beside the
            profile database. None: tuned on a CPU, dlight on a GPU.
        repeats, min_repeat_ms: time_evaluator settings.
        reference: "torch" also times each kernel in eager PyTorch (schedule "torch-eager").
        retry_failed: measure kernels that failed before again.
        progress: a progress bar with ETA on stderr.
        overlap_compile: compile the next kernel while the current one is timed (False: one
            after the other, the baseline of benchmarks/profiling.py).
        statistic: how the repeats become latency_ms (``runners.STATISTICS``); a database holds
            one statistic per device and schedule.
        poll_s: how often to look again at kernels another profiler is building.
        executor: compile (and tune) on this ``codesign.distributed`` executor, as many kernels at
            a time as it has slots (None: a thread of this process, overlapped with timing).
        tune_trials: under ``tuned``, the mean MetaSchedule trials per kernel.
        trial_split: under ``tuned``, how the trials are shared out: "cost" (by each kernel's
            share of the base policy's cost, the default: a space's profile spends its trials
            where the time is) or "flat" (``tune_trials`` for every kernel, as ``codesign
            measure`` tunes the kernels of a network without records: the policy of the samples
            that predict such networks, ``codesign fit --adaptive``).

    Returns:
        A ProfileReport: counts, compile and timing seconds, the errors of failed kernels.

    Raises:
        CodesignError for an unknown schedule or statistic, a database holding another statistic's
        timings of the device or timings of it from another CPU, an unbuildable target, an
        unreachable tracker.
    """
    schedule = check_settings(device, schedule, repeats, min_repeat_ms, reference, statistic, tune_trials)
    if trial_split not in TRIAL_SPLITS:
        raise CodesignError(f"unknown trial split {trial_split!r}; known: {', '.join(TRIAL_SPLITS)}")
    check_same_cpu(db, device)
    for sched in (schedule, TORCH_SCHEDULE) if reference else (schedule,):
        other = db.statistics(device.name, sched) - {statistic}
        if other:
            raise CodesignError(f"{db.path} holds {', '.join(sorted(other))} timings of {device.name} [{sched}]; "
                                f"timing with {statistic} would mix statistics: use another --db or "
                                f"--statistic {sorted(other)[0]}")
    if is_tuned(schedule) and tuning_dir is None:
        tuning_dir = str(tuning_dir_for(db.path))
    report = ProfileReport(device=device.name, schedule=schedule)
    keys = list(dict.fromkeys(s.key() for s in specs))
    report.requested = len(keys)
    if retry_failed:
        db.delete_errors(device.name, schedule)
    todo = [KernelSpec.from_key(k) for k in db.missing(keys, device.name, schedule)]
    report.skipped = len(keys) - len(todo)
    t_start = time.perf_counter()
    trials_for = None
    if todo and parse_schedule(schedule)[0] == "tuned":
        trials_for = (dict.fromkeys((s.key() for s in todo), tune_trials) if trial_split == "flat" else
                      _trial_budget(todo, device, db, repeats, min_repeat_ms, progress, statistic, tune_trials,
                                    tuning_dir, executor))
        report.tune_trials = sum(trials_for.values())
    if todo:
        _profile_tvm(todo, device, db, schedule, repeats, min_repeat_ms, tuning_dir, progress, report,
                     overlap_compile, statistic, poll_s, executor, trials_for)
    if reference == "torch":
        _profile_torch(db.missing(keys, device.name, TORCH_SCHEDULE), device, db, repeats, progress, statistic)
    report.wall_s = time.perf_counter() - t_start
    return report


# How ``profile_kernels`` shares the trials of the tuned policy among kernels.
TRIAL_SPLITS = ("cost", "flat")


def _trial_budget(todo, device, db, repeats, min_repeat_ms, progress, statistic, tune_trials, tuning_dir,
                  executor=None):
    """The trials of each kernel to tune: the base policy's costs (profiled now where the database
    lacks them, and kept there) share out ``tune_trials`` per kernel on average."""
    base = base_schedule(device.target)
    profile_kernels(todo, device, db, schedule=base, repeats=repeats, min_repeat_ms=min_repeat_ms,
                    progress=progress, statistic=statistic, executor=executor)
    rows = {m.kernel_key: m.latency_ms for m in db.query(device=device.name, schedule=base)}
    trials_for = allocate_trials({s.key(): rows.get(s.key()) for s in todo}, tune_trials)
    if progress:
        top = sorted(trials_for.items(), key=lambda kv: -kv[1])[:3]
        print(f"tuning {len(todo)} kernels on {device.name}: {sum(trials_for.values())} MetaSchedule trials "
              f"({tune_trials} per kernel on average, by share of the {base} cost; most: "
              + ", ".join(f"{t} for {k}" for k, t in top) + f"); records in {tuning_dir}",
              file=sys.stderr, flush=True)
    return trials_for


class _Claims:
    """Hands out the kernels of a list that this process claims in the database, in order.

    Kernels another process stored meanwhile are counted as skipped; those another live profiler
    holds are set aside and handed out last, once that profiler has stored them (skipped) or died
    (claimed). ``next(wait=False)`` never waits, so that a profiler stores the kernel it holds
    before it waits for another's (two profilers waiting for each other's kernel would wait forever).
    """

    def __init__(self, todo, db: ProfileDB, device: str, schedule: str, report: ProfileReport, poll_s: float,
                 on_skip):
        self.queue, self.held = list(reversed(todo)), []
        self.db, self.device, self.schedule, self.report = db, device, schedule, report
        self.poll_s, self.on_skip = poll_s, on_skip

    def next(self, wait: bool) -> KernelSpec | None:
        while True:
            while self.queue:
                spec = self.queue.pop()
                state = self.db.claim(spec.key(), self.device, self.schedule)
                if state == "claimed":
                    return spec
                if state == "stored":
                    self.report.skipped += 1
                    self.on_skip()
                else:
                    self.held.append(spec)
            if not self.held or not wait:
                return None
            time.sleep(self.poll_s)  # each was held a moment ago
            self.queue, self.held = list(reversed(self.held)), []


def _profile_tvm(todo, device, db, schedule, repeats, min_repeat_ms, tuning_dir, progress, report,
                 overlap_compile=True, statistic=DEFAULT_STATISTIC, poll_s=0.5, executor=None,
                 trials_for=None):
    if device.rpc is None:
        set_threads(device.threads)
    import tempfile

    import tvm

    from ..distributed import SerialExecutor
    from .energy import energy_source_for
    from .runners import LocalRunner, RPCRunner
    from .tuning import has_record, merge_records

    target_dict = device.resolved_target()
    kind = str(target_dict["kind"])
    if device.rpc is None:
        # Before the target: TVM probes the GPU while it builds a CUDA target and warns if none.
        runner = LocalRunner(repeats, min_repeat_ms, target_kind=kind, statistic=statistic, threads=device.threads)
        runner.check()
    target = device.tvm_target()
    energy = energy_source_for(device)
    if device.rpc is not None:
        runner = RPCRunner(device.rpc["host"], device.rpc["port"], device.rpc["key"], repeats, min_repeat_ms,
                           target_kind=kind, statistic=statistic)
    bar = _progress(len(todo), f"profile {device.name} [{schedule}]", progress)
    host = socket.gethostname()
    claims = _Claims(todo, db, device.name, schedule, report, poll_s,
                     lambda: bar.update(1) if bar is not None else None)
    libs = tempfile.TemporaryDirectory(prefix="codesign-libs-")
    if executor is None:
        pool = ThreadPoolExecutor(max_workers=1)
        depth = 1  # the kernel compiling while the previous one is timed

        def submit(spec):
            return pool.submit(_compile, spec, target, schedule, tuning_dir, trials_for)

        def result(fut):
            return fut.result()
    else:
        # Kernels are timed in the order claimed, but they compile (and tune: trials differ per
        # kernel) in very different times: compiled kernels may wait in a window of a few per
        # slot, so that a worker that finishes goes on with the next kernel while the driver waits
        # for a slow one at the head of the queue; never more than ``slots`` compile at once.
        pool, depth = None, 4 * executor.slots

        tuned = is_tuned(schedule)

        def submit(spec):
            if tuned and has_record(_built(spec, target, "tuned")[0].func, target, tuning_dir):
                # tuned before: compiled here from the shared records, no worker needed
                return SerialExecutor().submit(compile_library, spec, target_dict, schedule, tuning_dir,
                                                trials_for)
            return executor.submit(compile_library, spec, target_dict, schedule, None,
                                   None if trials_for is None else {spec.key(): trials_for[spec.key()]})

        def result(fut):
            lib, shapes, compile_s, records = fut.result()
            if records:  # the worker's tuning, kept in the shared tuning directory by this process
                merge_records(records, tuning_dir, kind)
            return Library(lib, libs.name), shapes, compile_s

    spent = 0  # trials of the kernels done (under ``tuned``)
    queue: deque = deque()  # (kernel, its compilation) in the order claimed
    contended: list = []  # (kernel, executable, shapes, latency_ms) timed while a compile ran

    slots = 1 if executor is None else executor.slots

    def fill(wait: bool) -> None:
        # Waits for kernels other profilers hold only with nothing of ours in flight: a profiler
        # stores what it holds before it waits for another's.
        while len(queue) < depth and sum(not f.done() for _, f in queue) < slots:
            spec = claims.next(wait=wait and not queue)
            if spec is None:
                return
            queue.append((spec, submit(spec)))

    try:
        fill(wait=True)
        while queue:
            spec, pending = queue[0]
            if executor is not None:
                while not pending.done():  # keep the other slots busy meanwhile
                    futures_wait([f for _, f in queue if not f.done()], return_when=FIRST_COMPLETED)
                    fill(wait=False)
            queue.popleft()
            try:
                executable, shapes, compile_s = result(pending)
                error = None
            except Exception as exc:  # one failing kernel never stops the run
                executable, shapes, compile_s, error = None, None, 0.0, f"build: {type(exc).__name__}: {exc}"
            if overlap_compile or executor is not None:
                fill(wait=False)
            latency = std = energy_mj = None
            n_rep = None
            if error is None:
                t0 = time.perf_counter()
                compiling = any(not f.done() for _, f in queue)
                try:
                    timing = runner.time(executable, shapes)
                    latency, std, n_rep = timing.latency_ms, timing.latency_std_ms, timing.repeats
                    energy_mj = energy.measure(spec, timing.run, latency)
                    if device.rpc is None and (compiling or any(not f.done() for _, f in queue)):
                        contended.append((spec, executable, shapes, latency))
                except Exception as exc:
                    error = f"run: {type(exc).__name__}: {exc}"
                report.timing_s += time.perf_counter() - t0
            report.compile_s += compile_s
            db.add(Measurement(
                kernel_key=spec.key(), device=device.name, schedule=schedule, latency_ms=latency,
                latency_std_ms=std, repeats=n_rep, energy_mj=energy_mj,
                energy_source=energy.label if energy_mj is not None else None, target=target_dict,
                compile_s=compile_s, tvm_version=tvm.__version__, host=host, error=error, statistic=statistic,
            ))
            db.release(spec.key(), device.name, schedule)
            if error:
                report.failed += 1
                report.errors.append(f"{spec.key()}: {error}")
            else:
                report.measured += 1
            fill(wait=True)  # only kernels other profilers hold may be left: wait for them
            if trials_for is not None:
                spent += trials_for[spec.key()]
            if bar is not None:
                if trials_for is not None:
                    bar.update(1, trials=f"{spent}/{report.tune_trials}", failed=report.failed)
                else:
                    bar.update(1, failed=report.failed)
        if bar is not None:
            bar.close()
            bar = None
        _retime(contended, runner, db, device.name, schedule, progress, report)
    finally:
        if pool is not None:
            pool.shutdown()
        libs.cleanup()
    runner.close()
    if bar is not None:
        bar.close()


def _retime(contended, runner, db, device: str, schedule: str, progress: bool, report: ProfileReport) -> None:
    """Time again, with no compile in flight, the kernels timed while one ran; each keeps the
    faster of its two timings (``ProfileDB.lower_latency``)."""
    if not contended:
        return
    bar = _progress(len(contended), f"re-time {device} [{schedule}] (timed while compiling)", progress)
    t0 = time.perf_counter()
    for spec, executable, shapes, first_ms in contended:
        try:
            timing = runner.time(executable, shapes)
        except Exception:  # it ran once: keep that timing
            timing = None
        if timing is not None and timing.latency_ms < first_ms:
            db.lower_latency(spec.key(), device, schedule, timing.latency_ms, timing.latency_std_ms, timing.repeats)
        report.retimed += 1
        if bar is not None:
            bar.update(1)
    report.timing_s += time.perf_counter() - t0
    if bar is not None:
        bar.close()


def _profile_torch(keys, device, db, repeats, progress, statistic=DEFAULT_STATISTIC):
    import torch

    from .builders import torch_callable
    from .runners import summarise
    from .schedules import is_gpu

    torch_device = "cpu"
    if is_gpu(device.target):
        if device.target.get("kind") != "cuda" or not torch.cuda.is_available():
            raise CodesignError(f"--reference torch on {device.name}: this torch has no {device.target['kind']} device")
        torch_device = "cuda"
    sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)
    bar = _progress(len(keys), f"profile {device.name} [torch]", progress and bool(keys))
    torch.set_num_threads(device.threads)
    n_rep = max(repeats, 3)
    for key in keys:
        spec = KernelSpec.from_key(key)
        error = latency = std = None
        try:
            fn = torch_callable(spec, torch_device)
            with torch.inference_mode():
                for _ in range(3):
                    fn()
                samples = []
                for _ in range(n_rep):
                    # Like time_evaluator's min_repeat_ms: loop long enough for the clock to resolve.
                    sync()
                    t0 = time.perf_counter()
                    n = 0
                    while time.perf_counter() - t0 < 0.02 or n == 0:
                        fn()
                        n += 1
                    sync()
                    samples.append((time.perf_counter() - t0) * 1e3 / n)
            latency, std = summarise(samples, statistic)
        except Exception as exc:
            error = f"torch: {type(exc).__name__}: {exc}"
        db.add(Measurement(kernel_key=key, device=device.name, schedule=TORCH_SCHEDULE, latency_ms=latency,
                           latency_std_ms=std, repeats=n_rep if error is None else None,
                           target={"kind": "torch", "device": torch_device, "version": torch.__version__},
                           host=socket.gethostname(), error=error, statistic=statistic))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
