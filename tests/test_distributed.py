"""Distributed runs on Ray: the flags' checks (with and without Ray installed), and, on a real local
Ray of 2 CPUs started here, serial and 2-worker searches giving the same candidates, a worker
killed mid-candidate being retried, a driver stopped mid-batch resuming without retraining, and
profiling with compilation on Ray workers."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from test_search import TINY, context, small_cfg, table_for

from codesign.cli import main as cli_main
from codesign.data import load_digits
from codesign.distributed import RayExecutor, SerialExecutor, check_workers
from codesign.errors import CodesignError
from codesign.search.budgets import parse_budget, resolve
from codesign.search.strategies import create_strategy
from codesign.spaces import create_space

# --- the flags, before anything runs -----------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["search", "--strategy", "random", "--workers", "2"],
    ["search", "--strategy", "random", "--ray", "auto"],
    ["profile", "--grid", "dense", "--grid-samples", "2", "--workers", "2"],
])
def test_without_ray_the_flags_fail_in_one_line_with_the_install_hint(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("codesign.distributed.ray_available", lambda: False)
    run_dir = tmp_path / "run"
    db = tmp_path / "p.sqlite"
    extra = ["--run-dir", str(run_dir)] if argv[0] == "search" else ["--db", str(db)]
    assert cli_main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'codesign[ray]'" in err
    assert not run_dir.exists() and not db.exists()


@pytest.mark.parametrize("workers, address, message", [
    (0, None, "--workers must be an integer >= 1"),
    (-3, None, "--workers must be an integer >= 1"),
    (None, "http://head", "--ray takes auto or a cluster address"),
    (None, "head:port", "--ray takes auto or a cluster address"),
])
def test_bad_worker_flags_are_refused(workers, address, message):
    with pytest.raises(CodesignError, match=message):
        check_workers(workers, address)


def test_an_unreachable_cluster_fails_in_one_line_before_the_run_directory(tmp_path, capsys):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    argv = ["search", "--strategy", "random", "--device", "accel:eyeriss-like", "--space-arg", "c=2",
            "--space-arg", "cells=1", "--ray", f"127.0.0.1:{port}", "--run-dir", str(run_dir), "--quiet"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err[0]
    assert not run_dir.exists()


def test_serial_executor_returns_results_and_raises_the_tasks_own_error():
    ex = SerialExecutor()

    def fails(x):
        raise CodesignError(f"bad {x}")

    assert ex.submit(pow, ex.share(2), 5).result() == 32
    with pytest.raises(CodesignError, match="bad 3"):
        ex.submit(fails, 3).result()


# --- a real local Ray -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # Start-up under load can take a minute: Ray's own timeouts, never a sleep here.
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def problem():
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.6x")], costs, space)
    return space, load_digits(), costs, budgets


def _search(problem, cfg, executor=None, stem=None, log=None):
    import torch

    space, digits, costs, budgets = problem
    logs = []
    ctx = context(space, digits, costs, budgets, cfg, stem, log=log or logs.append)
    ctx.executor = executor
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task does: the same float reductions, bit for bit
    try:
        return create_strategy(cfg.strategy, ctx).run(), logs
    finally:
        torch.set_num_threads(threads)


def _by_candidate(logs):
    keys = ("candidate", "genotype", "choices", "val_accuracy", "train_accuracy", "passes", "cost")
    return sorted(({k: r[k] for k in keys} for r in logs), key=lambda r: r["candidate"])


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_two_workers_train_the_same_candidates_as_the_serial_run(strategy, local_ray, problem):
    cfg = small_cfg(strategy, candidates=5, candidate_epochs=1, population=3)
    serial, serial_logs = _search(problem, cfg)
    executor = RayExecutor(workers=2)
    found, logs = _search(problem, cfg, executor)
    assert executor.slots == 2
    assert _by_candidate(logs) == _by_candidate(serial_logs)
    assert found["choices"] == serial["choices"] and found["candidates"] == 5
    assert found["search_passes"] == serial["search_passes"]


def _ray_tasks():
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].startswith("ray::codesign-task"):
            out.append(p.pid)
    return out


def test_a_worker_killed_mid_candidate_is_retried_and_the_answer_is_unchanged(local_ray, problem):
    """SIGKILL of a Ray worker process while it trains a candidate: Ray runs the task again on a
    new worker, and the search ends with the candidates of the serial run."""
    cfg = small_cfg("random", candidates=3, candidate_epochs=12)
    serial, serial_logs = _search(problem, cfg)
    killed: list[int] = []
    result: dict = {}

    def search():
        try:
            result["found"], result["logs"] = _search(problem, cfg, RayExecutor(workers=2))
        except BaseException as exc:  # reported by the assertion below
            result["error"] = exc

    th = threading.Thread(target=search)
    th.start()
    deadline = time.time() + 600
    while not killed and th.is_alive() and time.time() < deadline:
        tasks = _ray_tasks()
        if tasks:
            os.kill(tasks[0], signal.SIGKILL)
            killed.append(tasks[0])
        time.sleep(0.02)
    th.join(timeout=900)
    assert killed, "no candidate was seen running on a Ray worker"
    assert "error" not in result, result.get("error")
    assert _by_candidate(result["logs"]) == _by_candidate(serial_logs)
    assert result["found"]["choices"] == serial["choices"]


class DriverStopped(Exception):
    pass


def test_a_driver_stopped_mid_batch_resumes_without_retraining_finished_candidates(local_ray, problem, tmp_path):
    cfg = small_cfg("random", candidates=4, candidate_epochs=2)
    serial, serial_logs = _search(problem, cfg)
    first: list[dict] = []

    def stops_at_second_result(rec):
        first.append(rec)
        if len(first) == 2:
            raise DriverStopped  # one candidate recorded (in the history or ahead of it), one lost

    with pytest.raises(DriverStopped):
        _search(problem, cfg, RayExecutor(workers=2), tmp_path / "ck", log=stops_at_second_result)
    resumed_logs: list[dict] = []
    found, _ = _search(problem, cfg, RayExecutor(workers=2), tmp_path / "ck", log=resumed_logs.append)
    kept = first[0]["candidate"]
    assert kept not in {r["candidate"] for r in resumed_logs}, "a finished candidate was trained again"
    assert len(resumed_logs) == 3
    assert _by_candidate([first[0]] + resumed_logs) == _by_candidate(serial_logs)
    assert found["choices"] == serial["choices"]


# --- profiling: compilation on Ray workers, timing here -----------------------------------------

def _kernels():
    from codesign.kernelspec import KernelSpec

    K = KernelSpec.make

    return [K("conv2d", (1, 8, 8, 8), out_channels=8, kernel=3, activation="relu"),
            K("max_pool2d", (1, 8, 8, 8), kernel=3, stride=2, padding=1),
            K("dense", (1, 64), out_features=10),
            K("conv2d", (1, 8, 8, 8), out_channels=8, kernel=3, groups=8)]


def test_profiling_compiles_on_workers_and_stores_every_kernel_once(local_ray, tmp_path):
    from codesign.profile import ProfileDB, get_device, profile_kernels

    dev = get_device("cpu-local")
    reports, rows = [], []
    for name, executor in (("serial", None), ("ray", RayExecutor(workers=2))):
        with ProfileDB(tmp_path / f"{name}.sqlite") as db:
            # untuned: the device's default (tuned) spends minutes in MetaSchedule; tuning on the
            # workers is the slow test below
            reports.append(profile_kernels(_kernels(), dev, db, schedule="untuned", repeats=2, min_repeat_ms=1,
                                           progress=False, executor=executor))
            rows.append({r.kernel_key: r for r in db.query(device="cpu-local")})
    serial, ray_report = reports
    assert ray_report.measured == serial.measured == 4 and ray_report.failed == 0, ray_report.errors
    assert set(rows[0]) == set(rows[1]) == {k.key() for k in _kernels()}
    for key, row in rows[1].items():
        assert row.latency_ms > 0 and row.compile_s > 0 and row.error is None, key


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["metaschedule:4", "tuned"])
def test_tuning_on_workers_lands_in_the_shared_tuning_directory(local_ray, tmp_path, schedule):
    """MetaSchedule tunes on the workers into private databases (under ``tuned`` with the trials
    the driver shared out); their records reach the shared tuning directory."""
    from codesign.profile import ProfileDB, get_device, profile_kernels
    from codesign.profile.tuning import has_record

    dev = get_device("cpu-local")
    specs = _kernels()[:2]
    tuning = tmp_path / "tuning"
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels(specs, dev, db, schedule=schedule, repeats=2, min_repeat_ms=1, tune_trials=2,
                              tuning_dir=str(tuning), progress=False, executor=RayExecutor(workers=2))
    assert rep.measured == 2, rep.errors
    assert (rep.tune_trials is not None) == (schedule == "tuned")
    from codesign.profile.profiler import _built

    target = dev.tvm_target()
    # The function the profiler tuned: the one a network's compile asks the database for.
    assert all(has_record(_built(s, target, "tuned")[0].func, target, str(tuning)) for s in specs)


def test_a_candidate_finished_far_ahead_is_kept_until_its_turn_on_resume(problem, tmp_path):
    """A checkpoint holding candidates 0-1 and candidate 3 (finished ahead on a larger cluster),
    resumed serially: candidate 2 is trained, 3 is not, and the history is the serial run's."""
    from codesign.search import checkpoint as ckpt

    full, full_logs = _search(problem, small_cfg("random", candidates=5, candidate_epochs=1))
    stem = tmp_path / "ck"
    _search(problem, small_cfg("random", candidates=2, candidate_epochs=1), stem=stem)
    state, meta = ckpt.load(stem)
    state["ahead"] = [next(r for r in full_logs if r["candidate"] == 3)]
    ckpt.save(stem, state, meta)
    found, logs = _search(problem, small_cfg("random", candidates=5, candidate_epochs=1), stem=stem)
    assert [r["candidate"] for r in logs] == [2, 4]
    assert found["choices"] == full["choices"] and found["candidates"] == 5


class _ThreadExecutor:
    """Two slots on threads of this process: the Executor protocol without Ray."""

    slots = 2

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=2)

    def share(self, obj):
        return obj

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def close(self):
        self.pool.shutdown()


def test_a_free_slot_takes_the_next_candidate_without_waiting_for_a_slow_one(problem, monkeypatch):
    """Candidate 0 holds its slot until candidate 3 has started: the other slot must run 1, 2 and 3
    meanwhile (a search that waits for the slowest candidate of each pair never starts 3, and the
    wait times out). The answer is still the serial run's."""
    import codesign.search.strategies as strategies

    cfg = small_cfg("random", candidates=5, candidate_epochs=1)
    serial, _ = _search(problem, cfg)
    train = strategies.train_candidate
    third_started = threading.Event()
    waited: list[bool] = []

    def slow_first(data, job):
        if job["candidate"] == 3:
            third_started.set()
        if job["candidate"] == 0:
            waited.append(third_started.wait(timeout=60))
        return train(data, job)

    monkeypatch.setattr(strategies, "train_candidate", slow_first)
    executor = _ThreadExecutor()
    try:
        found, logs = _search(problem, cfg, executor)
    finally:
        executor.close()
    assert waited == [True], "candidate 3 did not start while candidate 0 was still training"
    order = [r["candidate"] for r in logs]
    assert sorted(order) == [0, 1, 2, 3, 4] and order.index(0) > order.index(2)
    assert found["choices"] == serial["choices"] and found["candidates"] == 5
