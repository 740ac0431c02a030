"""Where independent tasks run: in this process, or as Ray tasks on a local Ray or a cluster.

A task is a pure function of picklable arguments that returns a small picklable result: it writes
no shared file and keeps no global state, so the serial path and a Ray worker compute the same
thing (the driver alone owns run directories, checkpoints and databases). Both executors answer
the same three calls:

    ex = make_executor(workers=2)          # None: serial; workers/address: Ray (an optional extra)
    data = ex.share(big_object)            # once per run: Ray puts it in the object store
    fut = ex.submit(fn, data, job)         # a concurrent.futures.Future of fn(data, job)
    ex.close()

``slots`` is how many tasks are worth keeping in flight (1 serially; the CPUs Ray offers,
divided by the CPUs each task takes). A Ray task that loses its worker (a killed process, a lost
node) is run again by Ray up to ``max_retries`` times; an exception raised by the task itself is
not retried and reaches the driver with its own type (a ``CodesignError`` stays one).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from .errors import CodesignError

RAY_HINT = "pip install 'codesign[ray]'"
_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+)$")


class Executor(Protocol):
    slots: int

    def share(self, obj: Any) -> Any: ...

    def submit(self, fn: Callable, *args) -> Future: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Runs each task at once in this process (the default path, no Ray)."""

    slots = 1
    name = "serial"

    def share(self, obj):
        return obj

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # handed to the caller by fut.result(), as Ray does
            fut.set_exception(exc)
        return fut

    def close(self) -> None:
        pass


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def check_workers(workers: int | None, address: str | None, flags: str = "--workers/--ray") -> None:
    """Validate --workers and --ray before any work: numbers, address form, Ray installed.

    Raises:
        CodesignError: workers below 1, a malformed address, or Ray not installed (with the hint).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise CodesignError(f"--workers must be an integer >= 1, got {workers!r}")
    if address is not None and not _ADDRESS.match(address):
        raise CodesignError(f"--ray takes auto or a cluster address HOST:PORT (ray://HOST:PORT for a Ray "
                            f"client), got {address!r}")
    if (workers is not None or address is not None) and not ray_available():
        raise CodesignError(f"{flags} run tasks on Ray, which is not installed: {RAY_HINT}")


def make_executor(workers: int | None = None, address: str | None = None, cpus_per_task: int = 1,
                  preload: tuple[str, ...] = ()):
    """The executor for --workers/--ray: None when neither is given (callers run serially)."""
    check_workers(workers, address)
    if workers is None and address is None:
        return None
    return RayExecutor(workers=workers, address=address, cpus_per_task=cpus_per_task, preload=preload)


def _import(names: tuple[str, ...]) -> int:
    for name in names:
        importlib.import_module(name)
    return os.getpid()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a cluster address nothing listens at (Ray itself retries for a minute)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise CodesignError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start its head "
                            "with `ray start --head` or check the address") from None


def _pinned(threads: int, fn: Callable, *args):
    """Run ``fn`` with its math libraries on the task's own CPUs (Ray reserves them per task)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch and OpenMP when first imported
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import sys

    if "torch" in sys.modules:  # imported by an earlier task of this worker
        sys.modules["torch"].set_num_threads(threads)
    return fn(*args)


class RayExecutor:
    """Tasks as Ray tasks: on a local Ray of ``workers`` CPUs started here, or (``address``) on a
    running cluster (``ray start --head`` on one machine, ``ray start --address`` on the others).

    Ray starts on the first ``start``/``share``/``submit``. With an address, ``workers`` caps the
    tasks in flight (default: every CPU of the cluster). ``preload`` names modules every worker
    imports at start-up."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, cpus_per_task: int = 1,
                 max_retries: int = 3, object_store_bytes: int | None = None, preload: tuple[str, ...] = ()):
        check_workers(workers, address)
        if workers is None and address is None:
            raise CodesignError("a Ray executor needs --workers N or --ray ADDRESS")
        self.workers, self.address = workers, address
        self.cpus_per_task = cpus_per_task
        self.max_retries = max_retries
        self.object_store_bytes = object_store_bytes
        self.preload = tuple(preload)
        self._ray = None
        self._started_here = False
        self._remote = None
        self.slots = workers or 1

    def start(self) -> RayExecutor:
        if self._ray is not None:
            return self
        import ray

        kw: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address is None:
            kw.update(num_cpus=self.workers or os.cpu_count() or 1)
            if self.object_store_bytes:
                kw["object_store_memory"] = self.object_store_bytes
        else:
            kw = {"address": self.address, "log_to_driver": False, "configure_logging": False}
            if self.address != "auto":
                _check_reachable(self.address)
        # A driver already connected (a notebook, a test) keeps its Ray; we only leave ours.
        if not ray.is_initialized():
            try:
                ray.init(**kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = "a local Ray" if self.address is None else f"the Ray cluster at {self.address}"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CodesignError(f"cannot start or join {where}: {first[:300]}") from None
            self._started_here = True
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < self.cpus_per_task:
            raise CodesignError(f"the Ray cluster offers {cpus} CPUs; each task needs {self.cpus_per_task}")
        available = cpus // self.cpus_per_task
        self.slots = min(self.workers, available) if self.workers else available
        self._remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=self.max_retries,
                                  retry_exceptions=False)(_pinned).options(name="codesign-task")
        self._ray = ray
        if self.preload:
            # The modules tasks need (torch, TVM: seconds each) imported by every worker now, at
            # start-up, rather than inside the first task of each.
            ray.get([self._remote.remote(self.cpus_per_task, _import, self.preload) for _ in range(self.slots)])
        return self

    def share(self, obj):
        self.start()
        return self._ray.put(obj)

    def submit(self, fn, *args) -> Future:
        self.start()
        ref = self._remote.remote(self.cpus_per_task, fn, *args)
        return _RayFuture(self._ray, ref)

    def close(self) -> None:
        if self._ray is not None and self._started_here:
            self._ray.shutdown()
        self._ray, self._remote, self._started_here = None, None, False


class _RayFuture(Future):
    """A Future whose result is ``ray.get`` of the task's object: a task's own exception comes back
    with its own type; a worker lost more often than the retries allow becomes a CodesignError."""

    def __init__(self, ray, ref):
        super().__init__()
        self._ray_mod, self.ref = ray, ref
        ref.future().add_done_callback(self._settle)

    def _settle(self, inner: Future) -> None:
        ray = self._ray_mod
        try:
            value = inner.result()
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            self.set_exception(cause)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as exc:
            self.set_exception(CodesignError(
                f"a Ray task lost its worker more often than its retries allow ({type(exc).__name__}); "
                "see the Ray logs (/tmp/ray/session_latest/logs)"))
        except BaseException as exc:
            self.set_exception(exc)
        else:
            self.set_result(value)
