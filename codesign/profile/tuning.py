"""MetaSchedule tuning of one kernel, with a tuning database kept and reused across runs.

Made practical on CPU hosts by three measures (each seen to matter on a 2-core x86 host):
- placeholder modules for ``tvm.s_tir.tensor_intrin.{cuda,rocm,hexagon,metal}`` before
  MetaSchedule is imported: registering those GPU intrinsics takes ~26 s and, in every builder
  worker, ran into the builder's timeout;
- an in-process builder (``PyBuilder``): ~0.2 s per candidate instead of ~1 s for a worker, and an
  in-process runner (``PyRunner``): TVM's ``LocalRunner`` starts a worker process per tuning call,
  which imports TVM again (seconds, and far more on a loaded host);
- replay-trace search with the random cost model by default, ``evolutionary`` + XGBoost where
  ``CODESIGN_MS_STRATEGY=evolutionary`` asks for it (better schedules, 5-10x the time).

A kernel already in the database is compiled from its best record without tuning again, where
that record was tuned for the same target: TVM's databases look records up by workload alone and
would hand a kernel tuned for another CPU (or core count) to this one, so codesign reads a tuning
directory through ``target_records``, which keeps only this target's records. For a
GPU target the placeholder of that target's own intrinsics is left out (its tensor-core rules
need them); GPU tuning runs the same code path but is not exercised on the CPU-only hosts
codesign is tested on.
apache-tvm-ffi must be 0.1.14.x: with 0.1.15 serialising IR with dtypes crashes MetaSchedule.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import types

from ..errors import CodesignError
from .schedules import tuning_strategy

_GPU_INTRINSICS = ("cuda", "rocm", "hexagon", "metal")


class NoValidSchedule(CodesignError):
    """Every MetaSchedule candidate of a kernel failed to build or run."""


def meta_schedule(target_kind: str = "llvm"):
    """TVM's MetaSchedule module, importable in seconds on a CPU target (see DESIGN.md: the other
    targets' tensor intrinsics are left unregistered)."""
    # A GPU target keeps its own intrinsics (tensor-core rules need them): pay the registration.
    for name in _GPU_INTRINSICS:
        if name == target_kind:
            continue
        full = f"tvm.s_tir.tensor_intrin.{name}"
        sys.modules.setdefault(full, types.ModuleType(full))
    from tvm.s_tir import meta_schedule as ms

    _leave_pools_to_the_default_rules()
    return ms


# TOPI's pools carry a ``schedule_rule`` annotation naming a custom rule that TVM registers for no
# CPU target: MetaSchedule then warns on every pool block ("Unknown schedule rule") and leaves the
# block as it is. Registering rules that leave it as it is does the same without the warning.
_POOL_RULES = ("pool_avg", "pool_max", "adaptive_pool_avg", "adaptive_pool_max")


@functools.cache  # once per process: meta_schedule() is called for every kernel tuned
def _leave_pools_to_the_default_rules() -> None:
    import tvm

    for rule in _POOL_RULES:
        name = f"s_tir.meta_schedule.cpu.meta_schedule.{rule}"
        if tvm.get_global_func(name, allow_missing=True) is None:
            tvm.register_global_func(name, lambda sch, block: [sch])


def in_process_builder(ms):
    """A MetaSchedule builder compiling candidates in this process (0.2 s each, not ~1 s)."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    # As TVM's own builder: a candidate that rewrites a weight's layout is built without the
    # rewrite, taking the weight in its new layout (the runner allocates it so); in a network the
    # rewrite of a constant weight happens once, at compile time.
    drop_rewrite = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        """Builds candidates in this process (no worker start-up, no intrinsic registration)."""

        def build(self, build_inputs):
            results = []
            for inp in build_inputs:
                try:
                    rt = tvm.compile(drop_rewrite(inp.mod), target=inp.target)
                    # One directory per candidate: the runner deletes it after timing.
                    path = os.path.join(tempfile.mkdtemp(prefix="codesign-ms-"), "cand.so")
                    rt.export_library(path)
                    results.append(ms.builder.BuilderResult(path, None))
                except Exception as exc:  # a failing candidate is reported, not raised
                    results.append(ms.builder.BuilderResult(None, f"{type(exc).__name__}: {exc}"))
            return results

    return InProcessBuilder()


def in_process_runner(ms, min_repeat_ms: int = 20):
    """A MetaSchedule runner timing candidates in this process (no worker process to start).

    Candidates are timed as ``LocalRunner`` times them (TVM's own argument allocation and
    ``time_evaluator``), one after the other; a candidate that fails to load or run is reported
    with its error. MetaSchedule itself deletes each candidate's build directory once it is timed.
    On the CPU at one thread, each candidate's cost is scaled by the share of a core the timing
    thread held (``runners.own_core_repeats``): on a shared core the wall clock ranks candidates by
    when another job ran, and tuning keeps a schedule that is not the fastest.
    """
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import local_runner

    from .runners import with_core_share

    config = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=min_repeat_ms)

    @derived_object
    class InProcessRunner(ms.runner.PyRunner):
        """Times candidates in this process."""

        def run(self, runner_inputs):
            futures = []
            for inp in runner_inputs:
                try:
                    rt_mod = tvm.runtime.load_module(inp.artifact_path)
                    device = tvm.runtime.device(inp.device_type, 0)
                    args = local_runner.default_alloc_argument(device, [a.as_json() for a in inp.args_info], 1)
                    own_core = device.dlpack_device_type() == 1 and os.environ.get("TVM_NUM_THREADS") == "1"  # kDLCPU
                    costs, share = with_core_share(
                        lambda: local_runner.default_run_evaluator(rt_mod, device, config, args))  # noqa: B023
                    if own_core:
                        costs = [c * share for c in costs]
                    futures.append(local_runner.LocalRunnerFuture(res=costs))
                except Exception as exc:  # a failing candidate is reported, not raised
                    futures.append(local_runner.LocalRunnerFuture(error_message=f"{type(exc).__name__}: {exc}"))
            return futures

    return InProcessRunner()


def target_key(target) -> str:
    """A target's attributes as canonical JSON: a record read back from a JSON database prints its
    target's attributes in another order than the target it was tuned for."""
    import json

    return json.dumps(json.loads(str(target)), sort_keys=True)


def target_records(ms, database, target, mods):
    """The records of ``database`` for the workloads ``mods`` (normalised IRModules) tuned for
    ``target``, as an in-memory database to query and apply.

    A tuning directory kept across runs may hold records of several devices (the profile's default
    ``<db>.tuning`` serves every device of a profile database); ``Database.query_tuning_record``
    and ``MetaScheduleApplyDatabase`` ignore the target and take the fastest record of a workload,
    whatever CPU it ran on.
    """
    key = target_key(target)
    mine = ms.database.MemoryDatabase(module_equality="structural")
    for mod in mods:
        if not database.has_workload(mod):
            continue
        records = [r for r in database.get_top_k(database.commit_workload(mod), len(database))
                   if r.target is not None and target_key(r.target) == key]
        if records:
            mine.commit_workload(mod)  # a query looks for the workload before its records
            for record in records:
                mine.commit_tuning_record(record)
    return mine


@contextlib.contextmanager
def locked(work_dir: str):
    """Hold the tuning directory for this process while it reads, tunes and writes records.

    A JSON database numbers its workloads by their line in one file and its records refer to those
    numbers: two processes appending to one directory (profilers sharing a profile database, a
    search beside a ``codesign measure``) would corrupt it, so each takes this lock first.
    """
    import fcntl

    with open(os.path.join(work_dir, "codesign.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def runner_for(ms, target):
    """The in-process runner on a CPU; TVM's worker-based one elsewhere (a GPU's context is per process)."""
    return in_process_runner(ms) if str(target.kind.name) == "llvm" else "local"


def tune_and_compile(func, target, trials: int, work_dir: str | None, aliases=()):
    """Tune ``func`` for ``target`` with ``trials`` MetaSchedule trials (records kept in
    ``work_dir``) and compile the best schedule; returns a TVM Executable.

    ``aliases``: IRModules of other workloads computing the same thing with the same blocks (a
    residual add's other operand order, ``workloads.alias_workloads``); each without a record of
    its own gets the best schedule of ``func``, so that a network of either form compiles from it.
    """

    ms = meta_schedule(str(target.kind.name))
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    if work_dir is None:
        raise CodesignError("MetaSchedule tuning needs a tuning directory (--tuning-dir)")
    os.makedirs(work_dir, exist_ok=True)
    with locked(work_dir):
        return _tune_and_compile(ms, func, target, trials, work_dir, aliases)


def _share_schedule(ms, database, target, mod, aliases) -> None:
    """Commit the best record of ``mod`` as a record of each alias that has none of its own."""
    import tvm

    best = target_records(ms, database, target, [mod])
    if not best.has_workload(mod):
        return
    record = best.get_top_k(best.commit_workload(mod), 1)
    if not record:
        return
    record = record[0]
    for alias in aliases:
        if target_records(ms, database, target, [alias]).has_workload(alias):
            continue
        try:  # replay the schedule on the alias: its blocks carry the same names
            sch = tvm.s_tir.Schedule(alias)
            record.trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception:  # a trace that does not replay leaves the alias to tune on its own
            continue
        database.commit_tuning_record(ms.database.TuningRecord(
            record.trace, database.commit_workload(alias), record.run_secs, target,
            ms.arg_info.ArgInfo.from_prim_func(alias["main"])))


def _tune_and_compile(ms, func, target, trials: int, work_dir: str, aliases=()):
    import tvm

    mod = tvm.IRModule({"main": func})
    database = ms.database.JSONDatabase(work_dir=work_dir, module_equality="structural")
    sch = ms.tir_integration.compile_tir(target_records(ms, database, target, [mod]), mod, target)
    if sch is None:
        evolutionary = tuning_strategy() == "evolutionary"
        database = ms.tir_integration.tune_tir(
            mod, target, work_dir, max_trials_global=trials, num_trials_per_iter=min(trials, 16),
            builder=in_process_builder(ms), runner=runner_for(ms, target), database=database,
            cost_model="xgb" if evolutionary else "random",
            strategy="evolutionary" if evolutionary else "replay-trace",
            num_tuning_cores=1, seed=0,
        )
        sch = ms.tir_integration.compile_tir(target_records(ms, database, target, [mod]), mod, target)
    if sch is None:
        raise NoValidSchedule("MetaSchedule found no valid schedule for this kernel")
    if aliases:
        _share_schedule(ms, database, target, mod, aliases)
    return tvm.compile(sch.mod, target=target)


_DB_FILES = ("database_workload.json", "database_tuning_record.json")


def read_records(work_dir: str) -> dict[str, str]:
    """A tuning directory's two JSON-lines files as text: how a worker that tuned into a private
    directory hands its records back to the driver (``merge_records``)."""
    out = {}
    for name in _DB_FILES:
        path = os.path.join(work_dir, name)
        out[name] = open(path).read() if os.path.exists(path) else ""
    return out


def merge_records(records: dict[str, str], tuning_dir: str, target_kind: str = "llvm") -> None:
    """Commit the best record per workload of ``records`` (``read_records``' text) into the tuning
    database of ``tuning_dir``, through MetaSchedule (workload indices are the database's own)."""
    if not any(records.values()):
        return
    ms = meta_schedule(target_kind)
    os.makedirs(tuning_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="codesign-records-") as tmp:
        for name in _DB_FILES:
            with open(os.path.join(tmp, name), "w") as f:
                f.write(records.get(name, ""))
        theirs = ms.database.JSONDatabase(work_dir=tmp, module_equality="structural")
        theirs.dump_pruned(ms.database.JSONDatabase(work_dir=tuning_dir, module_equality="structural"))


def has_record(func, target, work_dir: str) -> bool:
    """Whether ``work_dir`` holds a record of ``func`` tuned for ``target`` (compiled without tuning)."""
    import tvm

    if not all(os.path.exists(os.path.join(work_dir, n)) for n in _DB_FILES):
        return False
    ms = meta_schedule(str(target.kind.name))
    mod = tvm.IRModule({"main": func})
    database = ms.database.JSONDatabase(work_dir=work_dir, module_equality="structural")
    return target_records(ms, database, target, [mod]).has_workload(mod)
