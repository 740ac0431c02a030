"""Profiling: TVM builders against PyTorch, the profile loop, ProfileDB, RPC, energy, CLI."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codesign.errors import CodesignError
from codesign.kernelspec import KernelSpec
from codesign.profile import Device, ProfileDB, get_device, profile_kernels
from codesign.profile import db as dbmod
from codesign.profile.builders import build, random_args
from codesign.profile.devices import load_device_file
from codesign.profile.energy import ModelSource, NvmlSource, RaplSource, energy_source_for
from codesign.profile.grid import grid_specs
from codesign.profile.schedules import apply_dlight, parse_schedule

K = KernelSpec.make

# Each kernel with the PyTorch expression of what it computes, on the builder's argument list.
CASES = [
    (K("conv2d", (1, 8, 9, 9), out_channels=16, kernel=3, activation="relu"),
     lambda a: F.relu(F.conv2d(a[0], a[1], padding=1))),
    (K("conv2d", (1, 8, 10, 10), out_channels=8, kernel=5, stride=2, groups=8),
     lambda a: F.conv2d(a[0], a[1], stride=2, padding=2, groups=8)),
    (K("conv2d", (1, 8, 8, 8), out_channels=12, kernel=3, groups=4, bias=True, residual=True, activation="relu6"),
     lambda a: F.relu6(F.conv2d(a[0], a[1], a[2], padding=1, groups=4) + a[3])),
    (K("conv2d", (1, 4, 11, 11), out_channels=6, kernel=3, dilation=2, activation="hardswish"),
     lambda a: F.hardswish(F.conv2d(a[0], a[1], padding=2, dilation=2))),
    (K("conv2d", (2, 6, 7, 7), out_channels=3, kernel=1, activation="sigmoid"),
     lambda a: torch.sigmoid(F.conv2d(a[0], a[1]))),
    (K("avg_pool2d", (1, 3, 7, 7), kernel=3, stride=2, padding=1),
     lambda a: F.avg_pool2d(a[0], 3, 2, 1, count_include_pad=False)),
    (K("max_pool2d", (1, 3, 8, 8), kernel=3, stride=1, padding=1), lambda a: F.max_pool2d(a[0], 3, 1, 1)),
    (K("global_avg_pool2d", (1, 5, 6, 6)), lambda a: F.adaptive_avg_pool2d(a[0], 1)),
    (K("batch_norm", (1, 4, 5, 5), activation="relu"),
     lambda a: F.relu(a[0] * a[1][:, None, None] + a[2][:, None, None])),
    (K("hardswish", (1, 2, 4, 4)), lambda a: F.hardswish(a[0])),
    (K("relu6", (1, 2, 4, 4)), lambda a: F.relu6(a[0])),
    (K("add", (1, 2, 4, 4), activation="relu"), lambda a: F.relu(a[0] + a[1])),
    (K("mul", (1, 2, 4, 4)), lambda a: a[0] * a[1]),
    (K("dense", (2, 32), out_features=10, activation="relu"), lambda a: F.relu(F.linear(a[0], a[1], a[2]))),
]


@pytest.fixture(scope="module")
def target():
    return get_device("cpu-local").tvm_target()


@pytest.mark.parametrize("spec, expr", CASES, ids=[c[0].op + str(i) for i, c in enumerate(CASES)])
def test_tvm_kernel_computes_what_the_spec_says(spec, expr, target):
    import tvm

    built = build(spec)
    mod = tvm.compile(built.func, target=target).jit()
    args = random_args(built.arg_shapes, seed=3)
    dev = tvm.cpu()
    tensors = [tvm.runtime.tensor(a, dev) for a in args]
    mod["main"](*tensors)
    want = expr([torch.from_numpy(a) for a in args[:-1]]).numpy()
    np.testing.assert_allclose(tensors[-1].numpy(), want, rtol=1e-4, atol=1e-4)


def _has_cuda_gpu() -> bool:
    import tvm

    return tvm.device("cuda", 0).exist


# dlight's CPU rules (GEMV, reduction) cover reductions: convs, dense, avg and global pools.
DLIGHT_APPLIES = {"conv2d0", "conv2d2", "conv2d3", "conv2d4", "avg_pool2d5", "global_avg_pool2d7", "dense13"}


@pytest.mark.parametrize("spec, expr", CASES, ids=[c[0].op + str(i) for i, c in enumerate(CASES)])
def test_dlight_schedule_computes_the_same_and_says_where_it_applies(spec, expr, target, request):
    import tvm

    built = build(spec)
    mod, applied = apply_dlight(built.func, target)
    assert applied == (request.node.callspec.id in DLIGHT_APPLIES)
    args = random_args(built.arg_shapes, seed=5)
    tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in args]
    tvm.compile(mod, target=target).jit()["main"](*tensors)
    want = expr([torch.from_numpy(a) for a in args[:-1]]).numpy()
    np.testing.assert_allclose(tensors[-1].numpy(), want, rtol=1e-4, atol=1e-4)


def test_schedule_policies_are_parsed_and_checked_against_the_target(tmp_path):
    assert parse_schedule("dlight") == ("dlight", 0)
    assert parse_schedule("metaschedule:8") == ("metaschedule", 8)
    for bad, message in [("metaschedule:0", "positive int"), ("fastest", "unknown schedule 'fastest'")]:
        with pytest.raises(CodesignError, match=message):
            parse_schedule(bad)
    gpu = Device(name="gpu", target={"kind": "cuda"}, energy="none")
    with ProfileDB(tmp_path / "g.sqlite") as db, pytest.raises(CodesignError, match="use --schedule dlight"):
        profile_kernels(_small_specs()[:1], gpu, db, schedule="untuned", progress=False)


@pytest.mark.skipif(_has_cuda_gpu(), reason="this host has a GPU")
def test_a_gpu_device_on_a_host_without_one_is_one_clear_error(tmp_path):
    with ProfileDB(tmp_path / "g.sqlite") as db, pytest.raises(CodesignError, match="no cuda device"):
        profile_kernels(_small_specs()[:1], get_device("cuda-local"), db, progress=False)


@pytest.mark.skipif(not _has_cuda_gpu(), reason="needs an NVIDIA GPU")
def test_profile_on_the_local_gpu_with_dlight(tmp_path):
    with ProfileDB(tmp_path / "g.sqlite") as db:
        rep = profile_kernels(_small_specs(), get_device("cuda-local"), db, repeats=3, min_repeat_ms=5,
                              progress=False)
        assert rep.schedule == "dlight" and rep.measured == 3, rep.errors
        assert all(r.ok and r.latency_ms > 0 for r in db.query(device="cuda-local"))


def _small_specs():
    return [
        K("conv2d", (1, 8, 8, 8), out_channels=8, kernel=3, activation="relu"),
        K("max_pool2d", (1, 8, 8, 8), kernel=3, stride=2, padding=1),
        K("dense", (1, 64), out_features=10),
    ]


def test_profile_stores_each_kernel_once_and_resumes(tmp_path):
    dev = get_device("cpu-local")
    specs = _small_specs()
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels(specs + specs[:1], dev, db, schedule="untuned", repeats=3, min_repeat_ms=1, progress=False,
                              reference="torch")
        assert (rep.requested, rep.measured, rep.failed) == (3, 3, 0)
        rows = db.query(device="cpu-local", schedule="untuned")
        assert len(rows) == 3 and all(r.ok and r.latency_ms > 0 for r in rows)
        assert all(r.energy_source in (None, "model:cpu-local", "measured:rapl") for r in rows)
        assert all(r.target["mcpu"] != "auto" and r.tvm_version for r in rows)
        assert len(db.query(schedule="torch-eager", ok_only=True)) == 3
        again = profile_kernels(specs, dev, db, schedule="untuned", repeats=3, min_repeat_ms=1, progress=False)
        assert (again.skipped, again.measured) == (3, 0)


def test_dlight_and_sequential_compilation_store_labelled_rows(tmp_path):
    dev = get_device("cpu-local")
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels(_small_specs(), dev, db, schedule="dlight", repeats=2, min_repeat_ms=1,
                              progress=False, overlap_compile=False)
        assert (rep.measured, rep.failed) == (3, 0)
        rows = db.query(schedule="dlight", ok_only=True)
        assert sorted(r.spec.op for r in rows) == ["conv2d", "dense", "max_pool2d"]
        assert db.query(schedule="untuned") == []


def test_kernels_timed_while_another_compiled_are_timed_again_and_keep_the_faster(tmp_path, monkeypatch):
    from codesign.profile import profiler, runners

    real_compile, real_time = profiler._compile, runners.LocalRunner.time
    timed: dict[str, int] = {}

    def slow_compile(spec, *a, **k):  # the next kernel is still compiling while one is timed
        time.sleep(0.4 if spec.op != "conv2d" else 0.0)
        return real_compile(spec, *a, **k)

    def contended_time(self, executable, shapes):  # first timing 2x slow, as under contention
        t = real_time(self, executable, shapes)
        n = timed[str(shapes)] = timed.get(str(shapes), 0) + 1
        return runners.Timing(latency_ms=2.0 if n == 1 else 1.0, latency_std_ms=0.0, repeats=t.repeats, run=t.run)

    monkeypatch.setattr(profiler, "_compile", slow_compile)
    monkeypatch.setattr(runners.LocalRunner, "time", contended_time)
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels(_small_specs(), get_device("cpu-local"), db, schedule="untuned", repeats=2,
                              min_repeat_ms=1, progress=False)
        assert (rep.measured, rep.retimed) == (3, 2)  # the last kernel was timed with nothing compiling
        lat = {r.spec.op: r.latency_ms for r in db.query(schedule="untuned")}
        assert lat == {"conv2d": 1.0, "max_pool2d": 1.0, "dense": 2.0}
        # a second, slower timing never replaces a faster one
        assert not db.lower_latency(_small_specs()[0].key(), "cpu-local", "untuned", 1.5, 0.0, 2)
    timed.clear()
    with ProfileDB(tmp_path / "q.sqlite") as db:
        rep = profile_kernels(_small_specs(), get_device("cpu-local"), db, schedule="untuned", repeats=2,
                              min_repeat_ms=1, progress=False, overlap_compile=False)
        assert rep.retimed == 0 and all(r.latency_ms == 2.0 for r in db.query(schedule="untuned"))


def test_a_failing_kernel_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    from codesign.profile import builders

    real = builders.build

    def flaky(spec):
        if spec.op == "max_pool2d":
            raise RuntimeError("simulated build failure")
        return real(spec)

    monkeypatch.setattr(builders, "build", flaky)
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels(_small_specs(), get_device("cpu-local"), db, schedule="untuned", repeats=2, min_repeat_ms=1, progress=False)
        assert (rep.measured, rep.failed) == (2, 1)
        failed = [m for m in db.query() if not m.ok]
        assert len(failed) == 1 and "simulated build failure" in failed[0].error
    monkeypatch.setattr(builders, "build", real)
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels(_small_specs(), get_device("cpu-local"), db, schedule="untuned", repeats=2, min_repeat_ms=1,
                              progress=False, retry_failed=True)
        assert rep.measured == 1 and all(m.ok for m in db.query())


_WORKER = """
import sys
from codesign.kernelspec import KernelSpec
from codesign.profile import ProfileDB, get_device, profile_kernels
from codesign.profile.grid import grid_specs
n = int(sys.argv[3])
specs = grid_specs("relu", n, seed=1) + grid_specs("add", n, seed=1)
with ProfileDB(sys.argv[1]) as db:
    profile_kernels(specs, get_device("cpu-local"), db, schedule="untuned", repeats=2, min_repeat_ms=int(sys.argv[2]), progress=False)
"""


def test_two_profilers_on_one_database_neither_corrupt_nor_duplicate(tmp_path):
    path = tmp_path / "shared.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(path), "1", "6"]) for _ in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    con = sqlite3.connect(path)
    total, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT kernel_key) FROM measurements").fetchone()
    assert total == distinct == 12
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_opening_a_new_database_waits_for_another_profilers_write_lock(tmp_path):
    # Another profiler holds the write lock of a new, empty file. Switching to WAL upgrades a read
    # lock to a write lock, which SQLite refuses at once (no busy handler) rather than risk a
    # deadlock; opening must wait for the lock instead of calling the file foreign.
    path = tmp_path / "new.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, holder.execute, ("COMMIT",))
    release.start()
    try:
        with ProfileDB(path, timeout_s=30) as db:
            assert db.query() == []
    finally:
        release.join()
        holder.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(dbmod.SCHEMA_VERSION)
    con.close()


def test_a_database_locked_past_the_timeout_is_called_locked_not_foreign(tmp_path):
    path = tmp_path / "busy.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(CodesignError, match="still locked by another process after 0.3 s") as err:
            ProfileDB(path, timeout_s=0.3)
        assert "not a codesign" not in str(err.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not an SQLite file at all, " * 100)
    with pytest.raises(CodesignError, match="is not a codesign profile database"):
        ProfileDB(garbage)


def test_a_killed_profiler_loses_at_most_the_kernel_in_flight(tmp_path):
    path = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(path), "20", "12"])
    # Wait for three stored rows, however long a loaded machine takes to start the profiler.
    deadline = time.time() + 600
    rows = 0
    while time.time() < deadline and rows < 3 and proc.poll() is None:
        time.sleep(0.2)
        if path.exists():
            try:
                rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
            except sqlite3.OperationalError:
                rows = 0
    early_exit = proc.poll()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert early_exit is None, f"the profiler exited by itself (code {early_exit}) before it was killed"
    assert 3 <= rows < 24
    with ProfileDB(path) as db:
        specs = grid_specs("relu", 12, seed=1) + grid_specs("add", 12, seed=1)
        rep = profile_kernels(specs, get_device("cpu-local"), db, schedule="untuned", repeats=2, min_repeat_ms=1, progress=False)
        assert rep.skipped >= rows and rep.skipped + rep.measured == 24
        assert len(db.query()) == 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(ready, proc: subprocess.Popen, what: str, timeout_s: float = 300.0) -> None:
    # Start-up of a fresh Python process that imports TVM takes seconds on an idle machine and
    # minutes on a loaded one: wait for the condition itself, not for a fixed time.
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not ready after {timeout_s:g} s")
        time.sleep(0.5)


def _tracker_queue(port: int) -> dict | None:
    """The tracker's queue (key -> free and pending servers), or None while it does not answer."""
    from tvm import rpc

    try:  # is it listening yet? (connect_tracker itself would retry for a minute)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        session = rpc.connect_tracker("127.0.0.1", port)
    except (OSError, RuntimeError):
        return None
    try:
        return session.summary()["queue_info"]
    except (OSError, RuntimeError):
        return None
    finally:
        session.close()


def test_profile_through_an_rpc_tracker_and_server(tmp_path):
    tport, sport = _free_port(), _free_port()
    env = dict(os.environ, TVM_NUM_THREADS="1")
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                "--port", str(tport), "--port-end", str(tport + 1)], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        _wait_until(lambda: _tracker_queue(tport) is not None, tracker, "the RPC tracker")
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                   "--port", str(sport), "--port-end", str(sport + 1), "--tracker", f"127.0.0.1:{tport}", "--key", "testdev"],
                                  env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_until(lambda: (_tracker_queue(tport) or {}).get("testdev", {}).get("free", 0) >= 1, server,
                    "the RPC server's registration with the tracker")
        local = get_device("cpu-local")
        dev = Device(name="rpc-test", target=local.resolved_target(),
                     rpc={"host": "127.0.0.1", "port": tport, "key": "testdev"}, energy="model:cpu-local")
        with ProfileDB(tmp_path / "rpc.sqlite") as db:
            rep = profile_kernels(_small_specs()[:2], dev, db, schedule="untuned", repeats=2, min_repeat_ms=1, progress=False)
            assert rep.measured == 2 and rep.failed == 0, rep.errors
            rows = db.query(device="rpc-test")
            assert all(r.ok and r.energy_source == "model:cpu-local" for r in rows)
    finally:
        for p in (server, tracker):
            if p is not None:
                os.killpg(p.pid, signal.SIGKILL)  # the popen_worker children too
                p.wait()


def test_unreachable_tracker_is_one_clear_error(tmp_path):
    dev = Device(name="far", target={"kind": "llvm"}, rpc={"host": "127.0.0.1", "port": _free_port(), "key": "x"},
                 energy="none")
    with ProfileDB(tmp_path / "x.sqlite") as db, pytest.raises(CodesignError, match="RPC tracker at 127.0.0.1"):
        profile_kernels(_small_specs()[:1], dev, db, schedule="untuned", progress=False)


def _fake_rapl(root: Path, value: int, max_range: int = 2**32) -> Path:
    dom = root / "intel-rapl:0"
    dom.mkdir(parents=True, exist_ok=True)
    (dom / "energy_uj").write_text(str(value))
    (dom / "max_energy_range_uj").write_text(str(max_range))
    sub = root / "intel-rapl:0:0"  # a sub-zone: must not be counted twice
    sub.mkdir(exist_ok=True)
    (sub / "energy_uj").write_text("0")
    return dom


def test_rapl_reader_on_a_fake_sysfs_tree(tmp_path):
    dom = _fake_rapl(tmp_path, 1_000_000)
    src = RaplSource(tmp_path, min_seconds=0.01)
    assert src.available() == (True, None)
    calls_seen = []

    def run(calls):  # the package burns 50 uJ per call
        calls_seen.append(calls)
        (dom / "energy_uj").write_text(str(1_000_000 + 50 * calls))

    energy = src.measure(K("relu", (1, 1, 2, 2)), run, latency_ms=0.1)
    assert calls_seen == [100]
    assert energy == pytest.approx(0.05)  # mJ per call


def test_rapl_counter_wraparound(tmp_path):
    dom = _fake_rapl(tmp_path, 999_990, max_range=1_000_000)
    src = RaplSource(tmp_path, min_seconds=0.001)
    energy = src.measure(K("relu", (1, 1, 2, 2)), lambda calls: (dom / "energy_uj").write_text("30"), latency_ms=1.0)
    assert energy == pytest.approx(0.04)  # 40 uJ over the wrap, 1 call


class _FakeNvml:
    """pynvml's calls codesign uses; the counter gains 7 mJ per kernel call."""

    def __init__(self):
        self.total_mj = 5_000

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self.total_mj


def test_nvml_reader_with_a_fake_library(monkeypatch):
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    src = NvmlSource(min_seconds=0.01)
    assert src.available() == (True, None)

    def run(calls):
        fake.total_mj += 7 * calls

    assert src.measure(K("relu", (1, 1, 2, 2)), run, latency_ms=0.5) == pytest.approx(7.0)


@pytest.mark.skipif(not _has_cuda_gpu(), reason="needs an NVIDIA GPU")
def test_nvml_reads_the_real_gpu_counter():
    pytest.importorskip("pynvml")
    ok, reason = NvmlSource().available()
    assert ok, reason


def test_model_energy_source_reports_a_missing_roofline():
    ok, reason = ModelSource("no-such-roofline").available()
    assert not ok and "no-such-roofline" in reason


def test_energy_sources_are_labelled_and_never_invented(tmp_path):
    dev = Device(name="d", target={"kind": "llvm"}, energy="auto", roofline=None)
    src = energy_source_for(dev, rapl_root=tmp_path / "none")
    assert src.label == "none" and src.measure(None, None, 1.0) is None
    dev = Device(name="d", target={"kind": "llvm"}, energy="auto", roofline="cpu-local")
    src = energy_source_for(dev, rapl_root=tmp_path / "none")
    assert isinstance(src, ModelSource) and src.label == "model:cpu-local"
    assert src.measure(K("relu", (1, 8, 8, 8)), None, 0.01) > 0
    with pytest.raises(CodesignError, match="energy source rapl unavailable"):
        energy_source_for(Device(name="d", target={"kind": "llvm"}, energy="rapl"), rapl_root=tmp_path / "none")


def test_database_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    ProfileDB(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(dbmod.SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(CodesignError, match="newer than this codesign reads"):
        ProfileDB(path)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(CodesignError, match="SQLite file of another program"):
        ProfileDB(other)


@pytest.mark.parametrize("text, message", [
    ("format_version: 2\nname: a\ntarget: {kind: llvm}\n", "format_version 2"),
    ("format_version: 1\nname: a\n", "lacks 'target'"),
    ("format_version: 1\nname: a\ntarget: llvm\n", "target must be a dict"),
    ("format_version: 1\nname: a\ntarget: {kind: llvm}\nenergy: solar\n", "energy must be"),
    ("format_version: 1\nname: a\ntarget: {kind: llvm}\nrpc: {host: x}\n", "rpc needs host, port and key"),
])
def test_device_files_are_validated(tmp_path, text, message):
    f = tmp_path / "dev.yaml"
    f.write_text(text)
    with pytest.raises(CodesignError, match=message):
        load_device_file(f)


def test_target_tvm_cannot_build_for(tmp_path):
    dev = Device(name="bad", target={"kind": "no-such-backend"})
    with pytest.raises(CodesignError, match="TVM cannot build for target"):
        dev.tvm_target()


def test_grid_is_reproducible_and_validated():
    a, b = grid_specs("conv2d", 20, seed=4), grid_specs("conv2d", 20, seed=4)
    assert a == b and len(set(a)) == 20
    assert all(s.op == "conv2d" for s in a)
    with pytest.raises(CodesignError, match=r"no --grid for op 'convolution'; choose from .*\bconv2d\b"):
        grid_specs("convolution")


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "codesign.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_profile_status_and_errors(tmp_path, capsys):
    from codesign.cli import main

    db = str(tmp_path / "cli.sqlite")
    out = _cli("profile", "--grid", "relu", "--grid-samples", "2", "--schedule", "untuned", "--repeats", "2",
               "--min-repeat-ms", "1",
               "--db", db)  # the installed entry point, end to end
    assert out.returncode == 0, out.stderr
    assert "2 kernels on cpu-local [untuned]: 2 measured" in out.stdout
    capsys.readouterr()
    assert main(["profile", "--status", "--db", db]) == 0
    status = capsys.readouterr().out
    assert "relu" in status and "2 kernels" in status
    for args, message in [
        (("profile", "--grid", "relu", "--device", "nope", "--db", db), "unknown device 'nope'"),
        (("profile", "--db", db), "nothing to profile"),
        (("profile", "--grid", "relu", "--schedule", "fast", "--db", db), "unknown schedule 'fast'"),
        (("profile", "--grid", "conv", "--db", db), "no --grid for op 'conv'; choose from add, avg_pool2d"),
        # an op whose shapes a grid of channels x resolution cannot give (its output size is an attribute)
        (("profile", "--grid", "resize2d", "--db", db), "no --grid for op 'resize2d'"),
        (("profile", "--grid", "relu", "--tune-trials", "0", "--db", db), "--tune-trials must be >= 1"),
        (("profile", "--status", "--db", str(tmp_path / "missing.sqlite")), "no profile database"),
    ]:
        assert main(list(args)) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_cli_devices_lists_cpu_local(capsys):
    from codesign.cli import main

    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "cpu-local" in out and "cuda-local" in out


@pytest.mark.slow  # 12 s on an idle 2-core host, 20 s while others compile
def test_metaschedule_tuning_beats_untuned_and_reuses_its_database(tmp_path):
    spec = K("conv2d", (1, 16, 16, 16), out_channels=16, kernel=3)
    dev = get_device("cpu-local")
    with ProfileDB(tmp_path / "t.sqlite") as db:
        profile_kernels([spec], dev, db, schedule="untuned", repeats=5, min_repeat_ms=5, progress=False)
        rep = profile_kernels([spec], dev, db, schedule="metaschedule:16", repeats=5, min_repeat_ms=5,
                              tuning_dir=str(tmp_path / "tune"), progress=False)
        assert rep.measured == 1, rep.errors
        untuned = db.query(schedule="untuned")[0].latency_ms
        tuned = db.query(schedule="metaschedule:16")[0].latency_ms
        assert tuned < untuned
    with ProfileDB(tmp_path / "t2.sqlite") as db:
        t0 = time.perf_counter()
        profile_kernels([spec], dev, db, schedule="metaschedule:16", repeats=2, min_repeat_ms=1,
                        tuning_dir=str(tmp_path / "tune"), progress=False)
        assert time.perf_counter() - t0 < 10  # compiled from the stored record, not tuned again


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity")
def test_setting_tvm_threads_keeps_the_process_cpu_set():
    # TVM's thread-pool reconfiguration pins the caller to one core; the compile thread would
    # inherit the pin and share the core with timing, doubling every latency.
    import tvm  # noqa: F401  (the pool reconfiguration path runs only once TVM is loaded)

    from codesign.profile.runners import set_threads

    before = os.sched_getaffinity(0)
    old = os.environ.get("TVM_NUM_THREADS")
    try:
        set_threads(1)
        assert os.sched_getaffinity(0) == before
    finally:
        if old is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = old


# --- timing on a shared core ---------------------------------------------------------------------
class _Clocks:
    """Fake wall and thread-CPU clocks: each evaluation advances wall by run_s / share."""

    def __init__(self, shares):
        self.shares, self.wall_s, self.cpu_s, self.i = list(shares), 0.0, 0.0, 0

    def evaluate(self, run_s=1e-3):
        share = self.shares[self.i % len(self.shares)]
        self.i += 1
        self.cpu_s += run_s
        self.wall_s += run_s / share
        return run_s / share  # what a wall-clock evaluator reports


def test_own_core_repeats_takes_out_the_time_another_job_held_the_core():
    from codesign.profile.runners import own_core_repeats

    clocks = _Clocks([1.0, 0.5, 0.25])
    samples, least = own_core_repeats(clocks.evaluate, 3, wall=lambda: clocks.wall_s, cpu=lambda: clocks.cpu_s)
    assert samples == pytest.approx([1.0, 1.0, 1.0])  # ms: the run time on a free core, every repeat
    assert least == pytest.approx(0.25)


def test_own_core_repeats_never_scales_up():
    from codesign.profile.runners import own_core_repeats

    # a CPU clock that reads ahead of the wall clock (coarse ticks) must not inflate a timing
    t = {"wall": 0.0, "cpu": 0.0}

    def evaluate():
        t["wall"] += 1e-3
        t["cpu"] += 1.2e-3
        return 1e-3

    samples, least = own_core_repeats(evaluate, 2, wall=lambda: t["wall"], cpu=lambda: t["cpu"])
    assert samples == pytest.approx([1.0, 1.0]) and least == 1.0


def test_own_core_repeats_with_the_runs_of_a_call_ignore_waits_outside_the_timed_runs():
    """TVM's evaluator makes one warm-up run, then the timed ones; a wait before it returns (the
    GIL taken back from another Python thread) stretches the call's wall time but not the timed
    mean. Scaling the mean by the call's core share read such a repeat fast; the CPU time per run
    (at most the timed mean) does not, and a wait inside the timed runs is still taken out."""
    from codesign.profile.runners import own_core_repeats

    t = {"wall": 0.0, "cpu": 0.0}
    calls, run_s = 4, 1e-3

    def outside_wait():  # 4 timed runs + 1 warm-up on the core, then 5 ms waiting for the GIL
        t["cpu"] += (calls + 1) * run_s
        t["wall"] += (calls + 1) * run_s + 5e-3
        return run_s

    def inside_wait():  # another job holds the core half the time during the timed runs
        t["cpu"] += (calls + 1) * run_s
        t["wall"] += run_s + calls * run_s * 2
        return run_s * 2

    for evaluate in (outside_wait, inside_wait):
        samples, _ = own_core_repeats(evaluate, 2, wall=lambda: t["wall"], cpu=lambda: t["cpu"], runs=calls + 1)
        assert samples == pytest.approx([1.0, 1.0]), evaluate.__name__
    scaled, _ = own_core_repeats(outside_wait, 1, wall=lambda: t["wall"], cpu=lambda: t["cpu"])
    assert scaled[0] == pytest.approx(0.5)  # the share of the whole call: half the true time


def test_kernels_profiled_beside_a_busy_python_thread_do_not_read_fast(tmp_path):
    """Profiling overlaps compiling on a second thread; a thread that holds the GIL while a kernel
    is timed must not make the kernel read faster than it runs (it read 17-22 % fast)."""
    import itertools

    from busy_thread import alone_and_beside_a_busy_thread

    from codesign.profile import ProfileDB, get_device, profile_kernels

    specs = [KernelSpec.make("conv2d", (1, 16, 16, 16), out_channels=16, kernel=3, activation="relu")]
    runs = itertools.count()
    dev = get_device("cpu-local")

    def profiled(name: str) -> float:
        with ProfileDB(tmp_path / f"{name}.sqlite") as db:
            profile_kernels(specs, dev, db, schedule="untuned", repeats=5, min_repeat_ms=10, progress=False,
                            overlap_compile=False)
            return db.query(device="cpu-local")[0].latency_ms

    alone, beside = alone_and_beside_a_busy_thread(lambda: profiled(f"t{next(runs)}"))
    assert beside >= 0.92 * alone, (beside, alone)


def test_calls_for_fills_the_minimum_repeat_time():
    from codesign.profile.runners import calls_for

    assert calls_for(lambda: 1e-4, 50.0) == 500
    assert calls_for(lambda: 0.2, 50.0) == 1
    assert calls_for(lambda: 1e-4, 0.0) == 1


def test_only_local_one_thread_cpu_timing_counts_core_share(monkeypatch):
    from codesign.profile.runners import LocalRunner, RPCRunner

    assert LocalRunner(threads=1).own_core()
    assert not LocalRunner(threads=2).own_core()
    assert not LocalRunner(target_kind="cuda", threads=1).own_core()
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    assert LocalRunner().own_core()  # as set_threads left it
    monkeypatch.setenv("TVM_NUM_THREADS", "2")
    assert not LocalRunner().own_core()
    remote = RPCRunner.__new__(RPCRunner)  # no tracker needed to ask
    assert not remote.own_core()


def test_a_kernel_timed_on_its_own_core_matches_the_evaluator():
    """On the real runner, a 1-thread CPU timing is the time_evaluator's within the noise of this
    machine, and reports the core share it saw."""
    import tvm

    from codesign.profile.runners import LocalRunner, set_threads

    set_threads(1)
    spec = KernelSpec.make("conv2d", (1, 16, 16, 16), out_channels=16, kernel=3)
    built = build(spec)
    ex = tvm.compile(built.func, target="llvm")
    runner = LocalRunner(repeats=5, min_repeat_ms=5, threads=1)
    timing = runner.time(ex, built.arg_shapes)
    assert timing.repeats == 5 and timing.latency_ms > 0
    assert 0 < runner.least_share <= 1.0
    mod = ex.jit()
    args = [tvm.runtime.tensor(a, tvm.cpu(0)) for a in random_args(built.arg_shapes)]
    plain = min(mod.time_evaluator("main", tvm.cpu(0), number=1, repeat=5, min_repeat_ms=5)(*args).results) * 1e3
    assert timing.latency_ms <= 3 * plain and plain <= 3 * timing.latency_ms


def test_with_core_share_reports_the_time_on_a_core():
    from codesign.profile.runners import with_core_share

    t = {"wall": 0.0, "cpu": 0.0}

    def work():
        t["wall"] += 4.0
        t["cpu"] += 1.0
        return "done"

    assert with_core_share(work, wall=lambda: t["wall"], cpu=lambda: t["cpu"]) == ("done", 0.25)
    assert with_core_share(lambda: None, wall=lambda: 0.0, cpu=lambda: 0.0) == (None, 1.0)  # no clock tick


def test_whole_network_latencies_are_stored_beside_the_profiles(tmp_path):
    path = tmp_path / "p.sqlite"
    with ProfileDB(path) as db:
        assert db.network_latency("darts/g/abc", "cpu-local", "untuned", "median") is None  # no table yet
        db.add_network("darts/g/abc", "cpu-local", "untuned", 0.42, 0.01, "median", "0.27")
        db.add_network("darts/g/abc", "cpu-local", "untuned", 0.40, 0.02, "median", "0.27")  # timed again
        with pytest.raises(CodesignError, match="finite positive number"):
            db.add_network("darts/g/abc", "cpu-local", "untuned", float("nan"), None, "median")
    with ProfileDB(path, readonly=True) as db:
        assert db.network_latency("darts/g/abc", "cpu-local", "untuned", "median") == pytest.approx(0.40)
        assert db.network_latency("darts/g/abc", "cpu-local", "untuned", "min") is None
        assert db.network_latency("darts/g/abc", "cpu-local", "tuned", "median") is None
    # the file is still a profile database to this codesign (and its kernel rows untouched)
    assert dbmod._schema_problem(path) is None


def test_grid_all_draws_every_op_that_has_a_grid():
    """``--grid all`` once failed on the first op whose shape is not (N, C, H, W) (batch_matmul)."""
    from codesign.commands.profile import collect_specs
    from codesign.profile.grid import grid_ops

    args = type("Args", (), {"space": None, "onnx": [], "grid": ["all"], "grid_samples": 1, "seed": 0})()
    specs = collect_specs(args)
    assert sorted({s.op for s in specs}) == grid_ops() and len(specs) == len(grid_ops())
