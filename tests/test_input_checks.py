"""Bad input is refused before any work and nothing is lost (the failures tests/test_bad_input.py
sweeps, from the library's side): settings checked before a run directory exists, profilers
sharing a database split its kernels, damaged numbers never used, measurement decided up front,
one timing statistic from profile to measurement."""

from __future__ import annotations

import json
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from codesign.errors import CodesignError
from codesign.kernelspec import KernelSpec, kernel_flops
from codesign.pipeline import SearchConfig, run_search
from codesign.profile import Measurement, ProfileDB, get_device
from codesign.profile.grid import grid_specs

SMALL = {"c": 4, "cells": 1}


def _records(device="cpu-local", n=40):
    specs = grid_specs("conv2d", n, seed=2) + grid_specs("relu", 8, seed=2) + grid_specs("add", 8, seed=2)
    specs += grid_specs("global_avg_pool2d", 8, seed=2) + grid_specs("dense", 8, seed=2)
    return [Measurement(kernel_key=s.key(), device=device, schedule="untuned",
                        latency_ms=kernel_flops(s) / 2e6 + 0.002) for s in specs]


def _model(path: Path, device="cpu-local") -> Path:
    from codesign.predict import create_cost_model

    return create_cost_model("loglinear").fit(_records(device)).save(path)


def _images(root: Path, per_class: int) -> Path:
    from PIL import Image

    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / c / f"{i}.png")
    return root


# --- work lost: every setting is checked before the run directory exists ---------------------

def _bad_l2o(tmp_path: Path) -> str:
    from codesign.l2o.io import PRETRAINED_DIR

    meta = json.loads((PRETRAINED_DIR / "general.json").read_text())
    (tmp_path / "opt.json").write_text(json.dumps({**meta, "weights": "opt.npz"}))
    (tmp_path / "opt.npz").write_bytes((PRETRAINED_DIR / meta["weights"]).read_bytes()[:300])
    return f"l2o:{tmp_path / 'opt.json'}"


@pytest.mark.parametrize("setting, message", [
    (lambda t: {"device": "cpu-locl"}, "unknown device 'cpu-locl'"),
    (lambda t: {"schedule": "metaschedule:x"}, "schedule"),
    (lambda t: {"db": str(t / "folder")}, "is a folder"),
    (lambda t: {"cost_model": str(t / "none.json")}, "no cost model"),
    (lambda t: {"arch_optimizer": _bad_l2o(t)}, "truncated"),
    (lambda t: {"batch_size": 2000}, "--batch-size 2000 is larger than"),
    (lambda t: {"data": "imagefolder", "data_dir": str(_images(t / "img", 5)), "batch_size": 8}, "--batch-size 8"),
    (lambda t: {"data": "imagefolder", "data_dir": str(_images(t / "one", 1))}, "0 training and 2 test images"),
], ids=["device", "schedule", "db", "cost-model", "l2o-file", "digits-batch", "images-batch", "no-train-images"])
def test_a_bad_setting_leaves_no_run_directory_behind(setting, message, tmp_path):
    (tmp_path / "folder").mkdir()
    cfg = SearchConfig(space_args=SMALL, strategy="gdas", epochs=2, warmup_epochs=1, train_epochs=1, **setting(tmp_path))
    with pytest.raises(CodesignError, match=message):
        run_search(cfg, run_dir=tmp_path / "R", quiet=True)
    assert not (tmp_path / "R").exists()


def test_a_run_directory_is_reused_only_while_no_phase_has_finished(tmp_path):
    from codesign.pipeline.rundir import open_run

    cfg = SearchConfig(seed=1)
    run, _ = open_run(cfg, tmp_path / "R", resume=False)
    # Nothing done yet (a run killed between its config and its cost table): a new run may take it.
    run, _ = open_run(SearchConfig(seed=2), tmp_path / "R", resume=False)
    assert json.loads((tmp_path / "R" / "config.json").read_text())["config"]["seed"] == 2
    run.write("costs.json", {})
    with pytest.raises(CodesignError, match="already holds a run"):
        open_run(SearchConfig(seed=3), tmp_path / "R", resume=False)


def test_profile_refuses_a_read_only_database_before_building_a_kernel(tmp_path, monkeypatch, capsys):
    from codesign.cli import main
    from codesign.profile import profiler

    db = tmp_path / "p.sqlite"
    with ProfileDB(db) as pdb:
        pdb.add(_records()[0])
    db.chmod(0o444)

    def no_build(*a, **k):
        raise AssertionError("a kernel was built")

    monkeypatch.setattr(profiler, "_compile", no_build)
    assert main(["profile", "--grid", "relu", "--grid-samples", "2", "--db", str(db)]) == 2
    assert "is read-only" in capsys.readouterr().err


def test_a_database_of_another_cpus_timings_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """cpu-local is whatever CPU runs codesign: a database shared between machines (a home folder
    on several hosts, a copy) must not price this CPU's kernels with another's timings."""
    import dataclasses

    from codesign.cli import main
    from codesign.costs.model import TVMDeviceSource
    from codesign.profile import profile_kernels, profiler

    dev = get_device("cpu-local")
    here = dev.resolved_target()["mcpu"]
    db = tmp_path / "p.sqlite"
    with ProfileDB(db) as pdb:
        for i, m in enumerate(_records()[:3]):
            pdb.add(dataclasses.replace(m, target={"kind": "llvm", "mcpu": "far-away-cpu" if i == 0 else here}))
        pdb.add(dataclasses.replace(_records()[3], schedule="torch", target={"kind": "torch", "device": "cpu"}))
        pdb.add(dataclasses.replace(_records()[4], device="cuda-local", target={"kind": "cuda"}))
        assert pdb.cpus("cpu-local") == {"far-away-cpu", here} and pdb.cpus("cuda-local") == set()

    def no_build(*a, **k):
        raise AssertionError("a kernel was built")

    monkeypatch.setattr(profiler, "_compile", no_build)
    with ProfileDB(db) as pdb, pytest.raises(CodesignError, match=f"another CPU \\(far-away-cpu; this one is {here}\\)"):
        profile_kernels(grid_specs("relu", 2, seed=9), dev, pdb, schedule="untuned", progress=False)
    with pytest.raises(CodesignError, match="another CPU"):
        TVMDeviceSource("cpu-local", db=db, schedule="untuned")
    assert main(["profile", "--grid", "relu", "--grid-samples", "2", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "far-away-cpu" in err and "use another --db" in err
    run = tmp_path / "run"
    assert main(["search", "--db", str(db), "--schedule", "untuned", "--run-dir", str(run)]) == 2
    assert "another CPU" in capsys.readouterr().err and not run.exists()
    # This CPU's timings alone are used as before.
    with ProfileDB(db) as pdb:
        pdb._conn.execute("DELETE FROM measurements WHERE target_json LIKE '%far-away-cpu%'")
        pdb._conn.commit()
        profiler.check_same_cpu(pdb, dev)
        assert pdb.cpus("cpu-local") == {here}


def test_train_writes_its_weights_into_a_folder_it_creates(tmp_path, capsys):
    from codesign.cli import main

    g = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
    out = tmp_path / "missing" / "dir" / "w"
    assert main(["train", g, "--space-arg", "c=4", "--space-arg", "cells=1", "--epochs", "1",
                 "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == str(out.with_suffix(".npz"))
    assert out.with_suffix(".npz").is_file() and out.with_suffix(".json").is_file()


# --- work lost: two profilers on one database build each kernel once --------------------------

_PROFILE_WORKER = textwrap.dedent("""
    import contextlib, io, json, sys, time
    from pathlib import Path
    import tvm  # imported before the start line, as the profile itself would
    from codesign.cli import main
    me, folder = sys.argv[1], Path(sys.argv[2])
    (folder / f"ready-{me}").touch()
    while len(list(folder.glob("ready-*"))) < 2:
        time.sleep(0.01)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(sys.argv[3:])
    print(json.dumps({"code": code, "report": json.loads(out.getvalue())}))
""")


def test_two_profile_commands_on_one_database_build_each_kernel_once(tmp_path):
    """Two `codesign profile` processes started together on one database: every kernel is
    compiled and timed by exactly one of them; the other counts it as already stored."""
    db = tmp_path / "shared.sqlite"
    argv = ["profile", "--grid", "relu", "add", "--grid-samples", "6", "--schedule", "untuned", "--repeats", "1",
            "--min-repeat-ms", "1",
            "--db", str(db), "--json", "--no-progress"]
    procs = [subprocess.Popen([sys.executable, "-c", _PROFILE_WORKER, str(i), str(tmp_path), *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    reports = [json.loads(o[0])["report"] for o in outs]
    requested = reports[0]["requested"]
    assert requested == 12
    built = [r["measured"] + r["failed"] for r in reports]
    assert sum(built) == requested, reports  # without claims each process built all 12
    assert all(b >= 1 for b in built), reports  # both worked on the set: they ran at the same time
    assert all(r["measured"] + r["failed"] + r["skipped"] == requested for r in reports)
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT kernel_key) FROM measurements").fetchone() == (12, 12)
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # every claim released


_HOLDER = textwrap.dedent("""
    import sys
    from codesign.profile import ProfileDB
    with ProfileDB(sys.argv[1]) as db:
        print(db.claim("relu|1x4x4x4|", "cpu-local", "untuned"), flush=True)
        sys.stdin.readline()  # holds the claim until told to exit
""")


def test_claims_are_held_by_live_profilers_and_taken_over_from_dead_ones(tmp_path):
    path = tmp_path / "p.sqlite"
    key = "relu|1x4x4x4|"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        with ProfileDB(path) as db:
            assert db.claim(key, "cpu-local", "untuned") == "held"
            assert db.claim(key, "cpu-local", "dlight") == "claimed"  # another schedule is another kernel
            assert db.claim(key, "cpu-local", "untuned", stale_after_s=0.0) == "claimed"  # a lapsed claim
            db.release(key, "cpu-local", "untuned")
    finally:
        holder.communicate("\n", timeout=60)
    with ProfileDB(path) as db:
        assert db.claim(key, "cpu-local", "untuned") == "claimed"  # its holder has exited: taken over
        db.add(Measurement(kernel_key=key, device="cpu-local", schedule="untuned", latency_ms=0.01))
        db.release(key, "cpu-local", "untuned")
        assert db.claim(key, "cpu-local", "untuned") == "stored"


# --- silent or wrong --------------------------------------------------------------------------

def test_a_tree_walk_of_a_damaged_model_ends(tmp_path):
    """A model whose trees refer back to themselves is refused at load; one built in memory
    stops after as many steps as it has nodes instead of looping."""
    from codesign.predict import create_cost_model, load_cost_model

    model = create_cost_model("gbdt", n_estimators=3).fit(_records())
    head = model.heads["latency_ms"]
    head["left"][head["roots"][0]] = head["roots"][0]
    head["right"][head["roots"][0]] = head["roots"][0]
    t0 = time.perf_counter()
    with pytest.raises(CodesignError, match="did not end"):
        model.predict([KernelSpec.make("relu", (1, 4, 4, 4))], use_measured=False)
    assert time.perf_counter() - t0 < 60
    path = tmp_path / "m.json"
    model.save(path)
    with pytest.raises(CodesignError, match="back to themselves"):
        load_cost_model(path)


def test_a_refused_sqlite_file_is_left_byte_for_byte_as_it_was(tmp_path):
    path = tmp_path / "music.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE songs (title TEXT)")
    con.commit()
    con.close()
    before = path.read_bytes()
    for readonly in (False, True):
        with pytest.raises(CodesignError, match="another program"):
            ProfileDB(path, readonly=readonly)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["music.sqlite"]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_valid_cpu_name_passes_and_an_unknown_one_is_named(tmp_path):
    from tvm.target import codegen

    from codesign.profile.devices import load_device_file

    cpu = codegen.llvm_get_system_cpu()
    (tmp_path / "ok.yaml").write_text(f"format_version: 1\nname: ok\ntarget: {{kind: llvm, mcpu: {cpu}}}\n")
    assert load_device_file(tmp_path / "ok.yaml").tvm_target().attrs["mcpu"] == cpu
    (tmp_path / "bad.yaml").write_text("format_version: 1\nname: bad\ntarget: {kind: llvm, mcpu: notacpu9000}\n")
    with pytest.raises(CodesignError, match="LLVM knows no CPU 'notacpu9000'"):
        load_device_file(tmp_path / "bad.yaml").tvm_target()


def test_calibrated_models_are_carried_only_from_finite_measurements(tmp_path):
    import csv

    from codesign.predict import calibrate, read_table
    from codesign.predict.models import load_cost_model

    base = load_cost_model(_model(tmp_path / "base.json"))

    def table(rows):
        with open(tmp_path / "t.csv", "w", newline="") as f:
            csv.writer(f).writerows([("kernel_key", "latency_ms"), *rows])
        return tmp_path / "t.csv"

    rows = [(r.kernel_key, r.latency_ms * 2) for r in _records()[:6]]
    with pytest.raises(CodesignError, match="t.csv:8: latency_ms must be a finite positive number, got inf"):
        read_table(table(rows + [("relu|1x4x4x4|", "inf")]))
    table(rows)
    model = calibrate(base, read_table(tmp_path / "t.csv"), "slow")
    spec = KernelSpec.make("conv2d", (1, 16, 16, 16), out_channels=16, kernel=3)
    assert model.predict([spec])[0] == pytest.approx(2 * base.predict([spec])[0], rel=0.3)
    with pytest.raises(CodesignError, match="not a device name"):
        calibrate(base, read_table(tmp_path / "t.csv"), "../slow")


def test_export_keeps_the_number_of_classes_it_is_given(tmp_path, capsys):
    import onnx

    from codesign.cli import main

    g = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
    assert main(["export", g, "--space-arg", "c=4", "--space-arg", "cells=1", "--input-shape", "1,3,8,8",
                 "--num-classes", "3", "--out", str(tmp_path / "m.onnx")]) == 0
    out = onnx.load(str(tmp_path / "m.onnx")).graph.output[0]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 3]


def test_an_append_table_accepts_its_own_rows_and_refuses_others(tmp_path):
    from codesign.profile.measure import MEASURE_COLUMNS, MeasureTable

    path = tmp_path / "t.csv"
    table = MeasureTable(path, "cpu-local", "untuned")
    row = {"model": "a.onnx", "device": "cpu-local", "schedule": "untuned", "latency_ms": 1.5, "statistic": "median"}
    table.append(row)
    again = MeasureTable(path, "cpu-local", "untuned")
    assert again.done["a.onnx"]["latency_ms"] == 1.5 and again.columns == MEASURE_COLUMNS
    with pytest.raises(CodesignError, match="timed with the median, not the min"):
        MeasureTable(path, "cpu-local", "untuned", statistic="min")
    # A table written before the statistic column holds medians: it takes more medians, as they are.
    old = tmp_path / "old.csv"
    old.write_text(",".join(MEASURE_COLUMNS[:-1]) + "\n")
    MeasureTable(old, "cpu-local", "untuned").append(row)
    assert old.read_text().splitlines()[1].startswith("a.onnx,cpu-local,untuned,1.5")
    with pytest.raises(CodesignError, match="no statistic column"):
        MeasureTable(old, "cpu-local", "untuned", statistic="min")


# --- measurement decided up front -------------------------------------------------------------

def test_a_cost_model_of_a_device_nothing_here_can_time_is_never_measured(tmp_path, capsys):
    """A calibrated model of an undeclared device, or of a declared GPU on a host without one: the
    search says once, before any work, that nothing will measure, and finishes without measuring."""
    from codesign.pipeline.phases import setup

    phone = _model(tmp_path / "phone.json", device="phone")
    s = setup(SearchConfig(space_args=SMALL, cost_model=str(phone)), quiet=True)
    assert not s.measure and "not a declared TVM device" in s.no_measure_reason
    import tvm

    if not tvm.cuda(0).exist:
        gpu = _model(tmp_path / "gpu.json", device="cuda-local")
        s = setup(SearchConfig(space_args=SMALL, cost_model=str(gpu)), quiet=True)
        assert not s.measure and "cannot be measured from here" in s.no_measure_reason
    cfg = SearchConfig(space_args=SMALL, cost_model=str(phone), strategy="gdas", epochs=2, warmup_epochs=1,
                       train_epochs=1, batch_size=128)
    r = run_search(cfg, run_dir=tmp_path / "run")
    err = capsys.readouterr().err
    assert err.count("no measurement:") == 1
    assert err.index("no measurement:") < err.index("run directory:")  # said before any work
    assert r["measured"] is None and r["budgets_met_measured"] is None
    assert not (tmp_path / "run" / "measure.json").exists() and (tmp_path / "run" / "model.onnx").exists()


# --- one timing statistic, recorded with every number ----------------------------------------

@pytest.mark.parametrize("samples", [[3.0, 1.0, 2.0], [5.0, 1.0, 1.2, 1.1, 9.0], [2.5]])
def test_summarise_gives_the_named_statistic(samples):
    from codesign.profile.runners import summarise

    assert summarise(samples, "median") == (statistics.median(samples), statistics.pstdev(samples))
    assert summarise(samples, "min")[0] == min(samples)
    with pytest.raises(CodesignError, match="unknown timing statistic 'mean'"):
        summarise(samples, "mean")


def test_profiles_and_measurements_record_their_statistic_and_never_mix(tmp_path):
    from codesign.graph import export_onnx
    from codesign.profile import profile_kernels
    from codesign.profile.measure import measure_network

    dev = get_device("cpu-local")
    specs = grid_specs("relu", 2, seed=4)
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels(specs, dev, db, schedule="untuned", repeats=3, min_repeat_ms=1, progress=False, statistic="min")
        assert rep.measured == 2
        assert {m.statistic for m in db.query(device="cpu-local")} == {"min"}
        with pytest.raises(CodesignError, match="holds min timings of cpu-local"):
            profile_kernels(grid_specs("add", 2, seed=4), dev, db, schedule="untuned", repeats=3, min_repeat_ms=1, progress=False)
    with ProfileDB(tmp_path / "p.sqlite", readonly=True) as db:
        assert db.statistics("cpu-local", "untuned") == {"min"}
    import onnx
    import torch.nn as nn

    onnx.save(export_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), (1, 3, 8, 8)), str(tmp_path / "n.onnx"))
    m = measure_network(tmp_path / "n.onnx", dev, "untuned", repeats=5, min_repeat_ms=0, onnxruntime=False, statistic="min")
    assert m.statistic == "min" and m.latency_ms == m.latency_min_ms
    m = measure_network(tmp_path / "n.onnx", dev, "untuned", repeats=5, min_repeat_ms=0, onnxruntime=False)
    assert m.statistic == "median" and m.latency_ms >= m.latency_min_ms


def test_a_database_written_before_the_statistic_column_reads_as_medians(tmp_path):
    path = tmp_path / "old.sqlite"
    with ProfileDB(path) as db:
        db.add(_records()[0])
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE measurements DROP COLUMN statistic")
    con.commit()
    con.close()
    with ProfileDB(path, readonly=True) as db:
        assert [m.statistic for m in db.query()] == ["median"] and db.statistics("cpu-local", "untuned") == {"median"}
    with ProfileDB(path) as db:  # a writer adds the column; old rows stay medians
        assert [m.statistic for m in db.query()] == ["median"]
    assert "statistic" in {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(measurements)")}


def test_non_finite_latencies_are_never_fitted():
    """A NaN or infinite profile row (a damaged database) is left out of the fit, never learned."""
    from codesign.predict import create_cost_model

    records = _records()
    records[0] = Measurement(kernel_key=records[0].kernel_key, device="cpu-local", schedule="untuned",
                             latency_ms=float("inf"))
    records[1] = Measurement(kernel_key=records[1].kernel_key, device="cpu-local", schedule="untuned",
                             latency_ms=float("nan"))
    model = create_cost_model("loglinear").fit(records)
    assert model.n_train == len(records) - 2
    assert np.isfinite(model.predict([KernelSpec.from_key(records[0].kernel_key)])).all()
