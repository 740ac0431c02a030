"""Runners: time a compiled kernel on the local CPU or on a remote device through TVM's RPC tracker.

Timing is TVM's time_evaluator: ``number=1``, ``repeat`` runs of at least ``min_repeat_ms`` each;
a statistic of the repeats is the latency (``STATISTICS``: the median by default, robust to the
odd repeat another job disturbs; ``min``, the least disturbed repeat), the standard deviation
its spread. On the local CPU at one thread, where TVM runs the kernel on the calling thread,
each repeat is scaled by the share of its wall time that thread was on a core
(``own_core_repeats``): a job that shares the core would otherwise double the timing (measured
here: 28 % of 60 kernels profiled beside two other jobs read 2x their time on a free core).
Kernels are compiled here (cross-
compiled for a remote target) and, for RPC, exported as a shared library, uploaded and loaded on
the device under its tracker key.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import CodesignError
from .builders import random_args
from .db import DEFAULT_STATISTIC

# How the timed repeats of a kernel or a network become its latency. Profiles, whole-network
# measurements and their comparison all use one of these, recorded beside each number.
STATISTICS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min}


def check_statistic(name: str) -> str:
    """``name`` if it is a statistic of ``STATISTICS``, else a CodesignError listing them."""
    if name not in STATISTICS:
        raise CodesignError(f"unknown timing statistic {name!r}; choose from {', '.join(STATISTICS)}")
    return name


def summarise(samples_ms: list[float], statistic: str = DEFAULT_STATISTIC) -> tuple[float, float]:
    """(latency, standard deviation) of timed repeats in ms under ``statistic``."""
    return (STATISTICS[check_statistic(statistic)](samples_ms),
            statistics.pstdev(samples_ms) if len(samples_ms) > 1 else 0.0)


@dataclass
class Timing:
    latency_ms: float
    latency_std_ms: float
    repeats: int
    run: Callable[[int], None]  # runs the kernel n times (for energy counters)


def own_core_repeats(evaluate: Callable[[], float], repeats: int, wall: Callable[[], float] = time.perf_counter,
                     cpu: Callable[[], float] = time.thread_time, runs: int | None = None) -> tuple[list[float], float]:
    """``repeats`` timings in ms of ``evaluate`` (one timed repeat: its mean run time in s), each
    scaled by the share of its wall time the calling thread spent on a core.

    With the core to itself the share is 1 and nothing changes; where another job shares the
    core, the wall time of the repeat stretches by the time the thread waited, and the share
    takes that back out. Only for work that runs on the calling thread (TVM at one thread).

    ``runs``: how many runs one ``evaluate`` call makes on this thread, the untimed ones included
    (TVM's evaluator makes one warm-up run before its timed ones). Given, a repeat is the thread's
    CPU time per run, at most its timed mean: a wait outside the timed runs (the warm-up, taking
    the GIL back from another Python thread) then cannot make it read faster than the work runs,
    as the share of the whole call's wall time did (17-22 % fast beside a busy Python thread).

    Returns:
        (samples in ms, the smallest share seen).
    """
    samples, least = [], 1.0
    for _ in range(repeats):
        c0 = cpu()
        per_run_s, share = with_core_share(evaluate, wall, cpu)
        dc = cpu() - c0
        least = min(least, share)
        if runs is not None and dc > 0:
            samples.append(min(per_run_s, dc / runs) * 1e3)
        else:
            samples.append(per_run_s * 1e3 * share)
    return samples, least


def with_core_share(fn: Callable[[], Any], wall: Callable[[], float] = time.perf_counter,
                    cpu: Callable[[], float] = time.thread_time) -> tuple[Any, float]:
    """(``fn()``, the share of its wall time the calling thread spent on a core, at most 1)."""
    w0, c0 = wall(), cpu()
    out = fn()
    dw, dc = wall() - w0, cpu() - c0
    return out, (min(1.0, dc / dw) if dw > 0 and dc > 0 else 1.0)


def calls_for(evaluate_once: Callable[[], float], min_repeat_ms: float) -> int:
    """Runs per timed repeat so that a repeat lasts at least ``min_repeat_ms``, from one timing of
    ``evaluate_once`` (mean run time in s, itself timed for at least ``min_repeat_ms``)."""
    per_run_ms = max(evaluate_once() * 1e3, 1e-6)
    return max(1, int(math.ceil(min_repeat_ms / per_run_ms)))


def time_on_own_core(time_evaluator, dev, args, repeats: int, min_repeat_ms: float) -> tuple[list[float], float]:
    """``repeats`` timings in ms of ``main`` of a TVM module or VM (its ``time_evaluator``) run on
    this thread: calls per repeat from one timing of at least ``min_repeat_ms``, then each repeat
    scaled by its core share (``own_core_repeats``).

    Returns:
        (samples in ms, the smallest share seen).
    """
    once = time_evaluator("main", dev, number=1, repeat=1, min_repeat_ms=int(round(min_repeat_ms)))
    calls = calls_for(lambda: once(*args).mean, min_repeat_ms)
    evaluator = time_evaluator("main", dev, number=calls, repeat=1)
    return own_core_repeats(lambda: evaluator(*args).mean, repeats, runs=calls + 1)  # + its warm-up run


def set_threads(n: int) -> None:
    """TVM's thread count for kernels timed in this process (the device's ``threads``)."""
    # TVM reads TVM_NUM_THREADS when its thread pool starts; reconfigure one that already runs.
    os.environ["TVM_NUM_THREADS"] = str(n)
    if "tvm" in sys.modules:
        import tvm

        fn = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
        if fn is not None:
            # Reconfiguring pins the calling thread to one core, and the compile thread started
            # later inherits that pin: compilation and timing then share a core and timings
            # double. Restore the process's CPU set.
            cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
            fn(1, n)
            if cpus is not None:
                os.sched_setaffinity(0, cpus)


def runtime_device_type(target_kind: str) -> str:
    """TVM's runtime device type for a target kind: llvm and c run on the ``cpu``."""
    return "cpu" if target_kind in ("llvm", "c") else target_kind


class LocalRunner:
    """Times kernels on this machine: its CPU, or its first GPU for a GPU target kind."""

    def __init__(self, repeats: int = 10, min_repeat_ms: float = 50.0, target_kind: str = "llvm",
                 statistic: str = DEFAULT_STATISTIC, threads: int | None = None):
        self.repeats = repeats
        self.min_repeat_ms = min_repeat_ms
        self.device_type = runtime_device_type(target_kind)
        self.statistic = check_statistic(statistic)
        self.threads = threads  # None: TVM_NUM_THREADS as set_threads left it
        self.least_share = 1.0  # the smallest core share of the last timing (``own_core_repeats``)

    def check(self) -> None:
        """Raises CodesignError where this host has no such device (e.g. a GPU target, no GPU)."""
        import tvm

        if self.device_type != "cpu" and not tvm.device(self.device_type, 0).exist:
            raise CodesignError(
                f"this host has no {self.device_type} device to time kernels on; run on the machine "
                "that has it, or give the device an rpc tracker in its YAML"
            )

    def _module(self, executable):
        import tvm

        return executable.jit(), tvm.device(self.device_type, 0)

    def own_core(self) -> bool:
        """Whether kernels run on the calling thread: this machine's CPU, TVM at one thread."""
        threads = self.threads if self.threads is not None else os.environ.get("TVM_NUM_THREADS")
        return self.device_type == "cpu" and str(threads) == "1"

    def time(self, executable, arg_shapes) -> Timing:
        import tvm

        mod, dev = self._module(executable)
        args = [tvm.runtime.tensor(a, dev) for a in random_args(arg_shapes)]
        if self.own_core():
            samples_ms, self.least_share = time_on_own_core(mod.time_evaluator, dev, args, self.repeats,
                                                            self.min_repeat_ms)
        else:
            evaluator = mod.time_evaluator("main", dev, number=1, repeat=self.repeats,
                                           min_repeat_ms=int(round(self.min_repeat_ms)))
            samples_ms = [r * 1e3 for r in evaluator(*args).results]
            self.least_share = 1.0  # not measured: the wall clock is all there is

        def run(calls: int) -> None:
            mod.time_evaluator("main", dev, number=calls, repeat=1)(*args)

        latency_ms, std_ms = summarise(samples_ms, self.statistic)
        return Timing(latency_ms=latency_ms, latency_std_ms=std_ms, repeats=len(samples_ms), run=run)

    def close(self) -> None:
        pass


class RPCRunner(LocalRunner):
    """Times kernels on the device behind a TVM RPC tracker (host, port, key)."""

    def __init__(self, host: str, port: int, key: str, repeats: int = 10, min_repeat_ms: float = 50.0,
                 session_timeout_s: int = 600, target_kind: str = "llvm", statistic: str = DEFAULT_STATISTIC):
        super().__init__(repeats, min_repeat_ms, target_kind, statistic)
        from tvm import rpc
        from tvm.support.utils import tempdir

        hint = "start `python -m tvm.exec.rpc_tracker` and a server registered under that key"
        try:  # fail fast: TVM's own client retries for a minute before giving up
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as exc:
            raise CodesignError(f"cannot reach the RPC tracker at {host}:{port} ({exc}); {hint}") from exc
        try:
            tracker = rpc.connect_tracker(host, int(port))
            self.remote = tracker.request(key, priority=1, session_timeout=session_timeout_s, max_retry=3)
        except Exception as exc:  # TVM raises TVMError/RuntimeError/OSError here
            raise CodesignError(
                f"cannot get a device with key {key!r} from the RPC tracker at {host}:{port} ({exc}); {hint}"
            ) from exc
        self._tmp = tempdir()
        self._count = 0

    def own_core(self) -> bool:
        return False  # the kernel runs on another machine: its wall time is all this side sees

    def _module(self, executable):
        self._count += 1
        name = f"kernel{self._count}.so"
        path = self._tmp.relpath(name)
        executable.export_library(path)
        self.remote.upload(path)
        return self.remote.load_module(name), self.remote.device(self.device_type, 0)

    def check(self) -> None:
        pass  # the tracker hands out a device registered under the key; a missing one fails per kernel
