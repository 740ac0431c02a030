"""Every subcommand against broken inputs: one line on stderr, exit 2, no traceback, nothing written.

Each case runs ``codesign.cli.main`` in this process from an empty working directory, with the
profile database and user devices pointed at empty places, and checks:

- exit status 2 and exactly one line on stderr, naming the problem (the expected fragment);
- no traceback (the CLI lets anything but a CodesignError through, so a traceback would fail it);
- no file created in the working directory, and the broken inputs themselves left untouched
  (same names, sizes and modification times: no switch to WAL, no half-written output).

The inputs cover the ways a file or value goes wrong: missing, empty, truncated, of the wrong type
(binary, a folder, another format), of another version, NaN/inf/negative numbers, read-only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from codesign.cli import main

G = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
SMALL = ["--space-arg", "c=4", "--space-arg", "cells=1"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _read_only(path: Path) -> Path:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        p.chmod(p.stat().st_mode & ~0o222)
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """A folder of broken inputs (and a few good ones they are variations of)."""
    import onnx
    import torch
    import torch.nn as nn
    import yaml

    from codesign.graph import export_onnx
    from codesign.kernelspec import kernel_flops
    from codesign.predict import create_cost_model
    from codesign.profile import Measurement, ProfileDB
    from codesign.profile.grid import grid_specs
    from codesign.search import checkpoint as ckpt
    from codesign.spaces import create_space

    d = tmp_path_factory.mktemp("bad")
    (d / "folder").mkdir()
    (d / "wdir.npz").mkdir()  # where `train --out wdir` would write its weights
    (d / "empty").write_bytes(b"")
    (d / "binary").write_bytes(bytes(range(256)) * 4)
    (d / "text.txt").write_text("hello\n")

    # cost models
    specs = grid_specs("conv2d", 40, seed=1) + grid_specs("relu", 10, seed=1) + grid_specs("add", 10, seed=1)
    records = [Measurement(kernel_key=s.key(), device="cpu-local", schedule="untuned",
                           latency_ms=kernel_flops(s) / 2e6 + 0.002) for s in specs]
    create_cost_model("loglinear").fit(records).save(d / "good.json")
    create_cost_model("gbdt", n_estimators=5).fit(records).save(d / "gbdt.json")
    good, gbdt = json.loads((d / "good.json").read_text()), json.loads((d / "gbdt.json").read_text())

    def model(name, base, edit):
        m = json.loads(json.dumps(base))
        edit(m)
        (d / name).write_text(json.dumps(m))

    model("model-v99.json", good, lambda m: m.update(format_version=99))
    model("model-vstr.json", good, lambda m: m.update(format_version="1"))
    model("model-nan.json", gbdt, lambda m: m["heads"]["latency_ms"].update(base=float("nan")))
    key0 = next(iter(good["table"]))
    model("model-neg.json", good, lambda m: m["table"][key0].update(latency_ms=-1.0))
    model("model-inf-overhead.json", good, lambda m: m.update(overhead_ms=float("inf")))
    model("model-index.json", gbdt, lambda m: m["heads"]["latency_ms"]["left"]["__array__"].__setitem__(0, 10**6))

    def self_loop(m):
        h = m["heads"]["latency_ms"]
        h["left"]["__array__"][0] = h["right"]["__array__"][0] = 0

    model("model-loop.json", gbdt, self_loop)
    model("model-kind.json", good, lambda m: m.update(kind="nosuchkind"))
    (d / "model-trunc.json").write_text((d / "good.json").read_text()[:200])
    create_cost_model("loglinear").fit(records).save(d / "model-trunc.npz")
    _truncate(d / "model-trunc.npz")

    # profile databases
    with ProfileDB(d / "good.sqlite") as db:
        for r in records:
            db.add(r)
    (d / "db-trunc.sqlite").write_bytes((d / "good.sqlite").read_bytes()[:1000])
    for name, sql in (("db-newer.sqlite", "INSERT INTO meta VALUES ('schema_version', '99')"),
                      ("db-abc.sqlite", "INSERT INTO meta VALUES ('schema_version', 'abc')"),
                      ("db-nomeas.sqlite", "INSERT INTO meta VALUES ('schema_version', '1')")):
        c = sqlite3.connect(d / name)
        c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        c.execute(sql)
        if "newer" in name:
            c.execute("CREATE TABLE measurements (kernel_key TEXT)")
        c.commit()
        c.close()
    c = sqlite3.connect(d / "db-foreign.sqlite")
    c.execute("CREATE TABLE songs (title TEXT)")
    c.commit()
    c.close()
    (d / "db-ro.sqlite").write_bytes((d / "good.sqlite").read_bytes())
    _read_only(d / "db-ro.sqlite")
    (d / "ro-folder").mkdir()
    _read_only(d / "ro-folder")

    # ONNX
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    onnx.save(export_onnx(net, (1, 3, 8, 8)), str(d / "net.onnx"))
    (d / "net-trunc.onnx").write_bytes((d / "net.onnx").read_bytes()[:100])
    (d / "net-empty.onnx").write_bytes(b"")
    (d / "net-text.onnx").write_text("not onnx\n")
    (d / "net-dir.onnx").mkdir()

    # CSV tables
    (d / "table-binary.csv").write_bytes(bytes(range(256)) * 4)
    (d / "table-empty.csv").write_text("")
    (d / "table-header.csv").write_text("name,value\nx,1\n")
    (d / "table-dir.csv").mkdir()
    key = records[0].kernel_key.replace('"', '""')
    for name, value in (("nan", "nan"), ("inf", "inf"), ("neg", "-2"), ("word", "fast")):
        (d / f"table-{name}.csv").write_text(f'kernel_key,latency_ms\n"{key}",{value}\n')
    (d / "table-norows.csv").write_text("kernel_key,latency_ms\n")
    (d / "table-good.csv").write_text(f'kernel_key,latency_ms\n"{key}",0.5\n')
    (d / "append-other.csv").write_text("network,ms\nnet.onnx,1.0\n")
    (d / "append-ro.csv").write_text("")
    _read_only(d / "append-ro.csv")

    # device and accelerator files
    devices = {
        "dev-v99": "format_version: 99\nname: x\ntarget: {kind: llvm}\n",
        "dev-kind": "format_version: 1\nname: k\ntarget: {kind: nosuchkind}\n",
        "dev-port": "format_version: 1\nname: p\ntarget: {kind: llvm}\nrpc: {host: 127.0.0.1, port: notaport, key: x}\n",
        "dev-mcpu": "format_version: 1\nname: m\ntarget: {kind: llvm, mcpu: notacpu9000}\n",
        "dev-typo": "format_version: 1\nname: t\ntarget: {kind: llvm}\nthreds: 2\n",
        "dev-threads": "format_version: 1\nname: t\ntarget: {kind: llvm}\nthreads: -1\n",
        "dev-list": "- 1\n- 2\n",
        "dev-yaml": "format_version: 1\nname: [unclosed\n",
    }
    for name, text in devices.items():
        (d / f"{name}.yaml").write_text(text)
    (d / "dev-binary.yaml").write_bytes(bytes(range(256)))
    (d / "dev-empty.yaml").write_text("")
    (d / "baddevices").mkdir()
    (d / "baddevices" / "broken.yaml").write_text(devices["dev-v99"])
    accel = yaml.safe_load(main_output(["hw", "show", "eyeriss-like", "--yaml"]))
    (d / "accel-v99.yaml").write_text(yaml.safe_dump({**accel, "format_version": 99}))
    (d / "accel-neg.yaml").write_text(yaml.safe_dump({**accel, "pe_rows": -4}))
    (d / "accel-nan.yaml").write_text(yaml.safe_dump({**accel, "clock_mhz": float("nan")}))

    # run directories and weights
    from codesign.pipeline import SearchConfig

    cfg = SearchConfig(space_args={"c": 4, "cells": 1}, epochs=2, warmup_epochs=1, train_epochs=1,
                       cost_model=str(d / "good.json"))

    def run(name, weights=True, derived=True):
        r = d / name
        r.mkdir()
        (r / "config.json").write_text(json.dumps({"format": "codesign-search-config", "format_version": 1,
                                                   "config": cfg.to_dict()}))
        if derived:
            (r / "derived.json").write_text(json.dumps({"genotype": G}))
        if weights:
            sp = create_space("nb201", input_shape=(1, 1, 8, 8), num_classes=10, c=4, cells=1)
            ckpt.save(r / "weights", {"net": sp.build(G).state_dict()},
                      {"genotype": G, "space": "nb201", "space_args": {"c": 4, "cells": 1},
                       "input_shape": [1, 1, 8, 8], "num_classes": 10})
        return r

    run("run-good")
    _truncate(run("run-trunc-weights") / "weights.npz")
    (run("run-bad-config", weights=False) / "config.json").write_text("{not json")
    (run("run-no-config", weights=False) / "config.json").unlink()
    r = run("run-v99", weights=False)
    (r / "config.json").write_text(json.dumps({"format": "codesign-search-config", "format_version": 99,
                                               "config": cfg.to_dict()}))
    r = run("run-bad-setting", weights=False)
    (r / "config.json").write_text(json.dumps({"format": "codesign-search-config", "format_version": 1,
                                               "config": {**cfg.to_dict(), "epochs": "many"}}))
    r = run("run-trunc-ckpt", weights=False, derived=False)
    ckpt.save(r / "checkpoint", {"alphas": torch.zeros(3, 5)}, {"strategy": "darts", "epoch": 1})
    _truncate(r / "checkpoint.npz")
    (d / "run-empty").mkdir()
    (run("run-bad-results", weights=False) / "results.json").write_text('{"format": "codesign-search-res')
    (run("run-foreign-results", weights=False) / "results.json").write_text('{"format": "something-else"}')
    _read_only(run("run-ro", weights=False, derived=False))
    (d / "weights-trunc.json").write_text((d / "run-trunc-weights" / "weights.json").read_text())
    (d / "weights-trunc.npz").write_bytes((d / "run-trunc-weights" / "weights.npz").read_bytes())
    ckpt.save(d / "weights-other", {"something": torch.zeros(2)}, {})

    # learned-optimizer files
    from codesign.l2o.io import PRETRAINED_DIR

    shipped = json.loads((PRETRAINED_DIR / "general.json").read_text())

    def l2o(name, meta, weights=True):
        (d / f"{name}.json").write_text(json.dumps(meta))
        if weights:
            (d / f"{name}.npz").write_bytes((PRETRAINED_DIR / shipped["weights"]).read_bytes())

    l2o("l2o-v99", {**shipped, "format_version": 99, "weights": "l2o-v99.npz"})
    l2o("l2o-slash", {**shipped, "weights": "../sub/l2o.npz"})
    l2o("l2o-hidden", {**shipped, "config": {**shipped["config"], "hidden": -1}, "weights": "l2o-hidden.npz"})
    l2o("l2o-trunc", {**shipped, "weights": "l2o-trunc.npz"})
    _truncate(d / "l2o-trunc.npz")
    arrays = dict(np.load(PRETRAINED_DIR / shipped["weights"]))
    first = sorted(arrays)[0]
    arrays[first] = np.full_like(arrays[first], np.nan)
    l2o("l2o-nan", {**shipped, "weights": "l2o-nan.npz"}, weights=False)
    np.savez(d / "l2o-nan.npz", **arrays)
    (d / "l2o-truncjson.json").write_text(json.dumps(shipped)[:40])
    (d / "l2o-binary.json").write_bytes(bytes(range(256)))
    (d / "ckpt-out.ckpt.json").write_text('{"format": "codesign-l2o-checkpoint", "format_ver')
    import dataclasses

    from codesign.l2o.train import TrainConfig

    tc = TrainConfig(tasks=["quadratic"], episodes=1, unrolls=1, unroll_length=1)
    (d / "ckpt-npz.ckpt.json").write_text(json.dumps({
        "format": "codesign-l2o-checkpoint", "format_version": 1, "config": dataclasses.asdict(tc),
        "episode": 1, "history": {"meta_loss": [1.0], "tasks": ["quadratic"], "skipped": 0}}))
    (d / "ckpt-npz.ckpt.npz").write_bytes(b"PK\x03\x04 cut")

    # datasets
    from PIL import Image

    for split, classes in (("train", ("a", "b")), ("test", ("a",))):
        for c in classes:
            (d / "img-missing-class" / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(d / "img-missing-class" / split / c / "0.png")
    for c in ("a", "b"):
        (d / "img-corrupt" / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(d / "img-corrupt" / c / "0.png")
    (d / "img-corrupt" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 20)
    import pickle

    (d / "cifar").mkdir()
    for name in ("data_batch_1", "test_batch"):
        with open(d / "cifar" / name, "wb") as f:
            pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 3, 11, 2]}, f)
    (d / "cifar-trunc").mkdir()
    for name in ("data_batch_1", "test_batch"):
        (d / "cifar-trunc" / name).write_bytes((d / "cifar" / name).read_bytes()[:50])
    return d


def main_output(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), st.st_size if not p.is_dir() else 0, st.st_mtime_ns,
                                         st.st_mode)
    return out


# (id, argv; "{X}" is the bad-input folder's file X, expected fragment of the one-line error)
CASES = [
    # -- codesign backends, demo, devices, spaces: flags and the user's device folder
    ("backends-extra-argument", ["backends", "extra"], "unrecognized arguments"),
    ("demo-negative-seed", ["demo", "--seed", "-1"], "--seed must be >= 0"),
    ("demo-seed-not-a-number", ["demo", "--seed", "x"], "invalid int value"),
    ("devices-broken-user-device", ["devices"], "format_version 99"),
    ("spaces-extra-argument", ["spaces", "nb201"], "unrecognized arguments"),
    # -- codesign profile
    ("profile-db-truncated", ["profile", "--grid", "relu", "--db", "{db-trunc.sqlite}"], "not a codesign profile database"),
    ("profile-db-text", ["profile", "--grid", "relu", "--db", "{text.txt}"], "not a codesign profile database"),
    ("profile-db-folder", ["profile", "--grid", "relu", "--db", "{folder}"], "is a folder"),
    ("profile-db-newer", ["profile", "--grid", "relu", "--db", "{db-newer.sqlite}"], "schema version 99, newer"),
    ("profile-db-version-abc", ["profile", "--grid", "relu", "--db", "{db-abc.sqlite}"], "schema version 'abc'"),
    ("profile-db-no-measurements", ["profile", "--grid", "relu", "--db", "{db-nomeas.sqlite}"], "no measurements table"),
    ("profile-db-foreign", ["profile", "--grid", "relu", "--db", "{db-foreign.sqlite}"], "another program"),
    ("profile-db-read-only", ["profile", "--grid", "relu", "--db", "{db-ro.sqlite}"], "read-only"),
    ("profile-db-read-only-folder", ["profile", "--grid", "relu", "--db", "{ro-folder}/p.sqlite"], "read-only"),
    ("profile-db-under-a-file", ["profile", "--grid", "relu", "--db", "{text.txt}/p.sqlite"], "is a file"),
    ("profile-status-missing-db", ["profile", "--status", "--db", "{nothing.sqlite}"], "no profile database"),
    ("profile-status-empty-db", ["profile", "--status", "--db", "{empty}"], "empty"),
    ("profile-onnx-missing", ["profile", "--onnx", "{nothing.onnx}", "--db", "{new.sqlite}"], "no ONNX file"),
    ("profile-onnx-empty", ["profile", "--onnx", "{net-empty.onnx}", "--db", "{new.sqlite}"], "not an ONNX network"),
    ("profile-onnx-truncated", ["profile", "--onnx", "{net-trunc.onnx}", "--db", "{new.sqlite}"], "ONNX"),
    ("profile-onnx-text", ["profile", "--onnx", "{net-text.onnx}", "--db", "{new.sqlite}"], "ONNX"),
    ("profile-onnx-folder", ["profile", "--onnx", "{net-dir.onnx}", "--db", "{new.sqlite}"], "is a folder"),
    ("profile-device-v99", ["profile", "--grid", "relu", "--device", "{dev-v99.yaml}", "--db", "{new.sqlite}"], "format_version 99"),
    ("profile-device-kind", ["profile", "--grid", "relu", "--device", "{dev-kind.yaml}", "--db", "{new.sqlite}"], "nosuchkind"),
    ("profile-device-port", ["profile", "--grid", "relu", "--device", "{dev-port.yaml}", "--db", "{new.sqlite}"], "rpc port"),
    ("profile-device-mcpu", ["profile", "--grid", "relu", "--device", "{dev-mcpu.yaml}", "--db", "{new.sqlite}"], "notacpu9000"),
    ("profile-device-typo-key", ["profile", "--grid", "relu", "--device", "{dev-typo.yaml}", "--db", "{new.sqlite}"], "unknown key(s) threds"),
    ("profile-device-negative-threads", ["profile", "--grid", "relu", "--device", "{dev-threads.yaml}", "--db", "{new.sqlite}"], "threads"),
    ("profile-device-not-a-mapping", ["profile", "--grid", "relu", "--device", "{dev-list.yaml}", "--db", "{new.sqlite}"], "mapping"),
    ("profile-device-bad-yaml", ["profile", "--grid", "relu", "--device", "{dev-yaml.yaml}", "--db", "{new.sqlite}"], "not valid YAML"),
    ("profile-device-binary", ["profile", "--grid", "relu", "--device", "{dev-binary.yaml}", "--db", "{new.sqlite}"], "binary"),
    ("profile-device-empty", ["profile", "--grid", "relu", "--device", "{dev-empty.yaml}", "--db", "{new.sqlite}"], "mapping"),
    ("profile-device-folder", ["profile", "--grid", "relu", "--device", "{folder}/", "--db", "{new.sqlite}"], "folder"),
    ("profile-repeats-zero", ["profile", "--grid", "relu", "--repeats", "0", "--db", "{new.sqlite}"], "--repeats must be >= 1"),
    ("profile-min-repeat-nan", ["profile", "--grid", "relu", "--min-repeat-ms", "nan", "--db", "{new.sqlite}"], "min_repeat_ms"),
    ("profile-min-repeat-negative", ["profile", "--grid", "relu", "--min-repeat-ms", "-1", "--db", "{new.sqlite}"], "min_repeat_ms"),
    ("profile-grid-samples-negative", ["profile", "--grid", "relu", "--grid-samples", "-3", "--db", "{new.sqlite}"], "grid"),
    ("profile-tune-trials-zero", ["profile", "--grid", "relu", "--tune-trials", "0", "--db", "{new.sqlite}"], "--tune-trials"),
    ("profile-space-arg-type", ["profile", "--space", "nb201", "--space-arg", "c=abc", "--db", "{new.sqlite}"], "c must be an integer"),
    ("profile-input-shape", ["profile", "--space", "nb201", "--input-shape", "1,3,-2,8", "--db", "{new.sqlite}"], "--input-shape"),
    ("profile-statistic", ["profile", "--grid", "relu", "--statistic", "mean", "--db", "{new.sqlite}"], "invalid choice"),
    # -- codesign fit
    ("fit-db-missing", ["fit", "--db", "{nothing.sqlite}", "--out", "{out}/m.json"], "no profile database"),
    ("fit-db-empty", ["fit", "--db", "{empty}", "--out", "{out}/m.json"], "empty"),
    ("fit-db-truncated", ["fit", "--db", "{db-trunc.sqlite}", "--out", "{out}/m.json"], "not a codesign profile database"),
    ("fit-db-folder", ["fit", "--db", "{folder}", "--out", "{out}/m.json"], "is a folder"),
    ("fit-db-newer", ["fit", "--db", "{db-newer.sqlite}", "--out", "{out}/m.json"], "newer"),
    ("fit-db-foreign", ["fit", "--db", "{db-foreign.sqlite}", "--out", "{out}/m.json"], "another program"),
    ("fit-networks-binary", ["fit", "--db", "{good.sqlite}", "--networks", "{table-binary.csv}", "--out", "{out}/m.json"], "binary"),
    ("fit-networks-folder", ["fit", "--db", "{good.sqlite}", "--networks", "{table-dir.csv}", "--out", "{out}/m.json"], "is a folder"),
    ("fit-networks-nan", ["fit", "--db", "{good.sqlite}", "--networks", "{table-nan.csv}", "--out", "{out}/m.json"], "finite positive"),
    ("fit-networks-one-row", ["fit", "--db", "{good.sqlite}", "--networks", "{table-good.csv}", "--out", "{out}/m.json"], "needs at least 2 measured networks"),
    ("fit-network-fit-too-few", ["fit", "--db", "{good.sqlite}", "--networks", "{table-good.csv}", "--network-fit", "family-scale", "--out", "{out}/m.json"], "family-scale needs at least 4"),
    ("fit-network-fit-alone", ["fit", "--db", "{good.sqlite}", "--network-fit", "overhead", "--out", "{out}/m.json"], "--network-fit goes with --networks"),
    ("fit-out-folder", ["fit", "--db", "{good.sqlite}", "--out", "{folder}"], "is a folder"),
    ("fit-out-read-only", ["fit", "--db", "{good.sqlite}", "--out", "{ro-folder}/m.json"], "read-only"),
    ("fit-out-suffix", ["fit", "--db", "{good.sqlite}", "--out", "{out}/m.pkl"], "must end in .json or .npz"),
    ("fit-device-path", ["fit", "--db", "{good.sqlite}", "--device", "../x"], "not a device name"),
    ("fit-cv-one", ["fit", "--db", "{good.sqlite}", "--cv", "1", "--out", "{out}/m.json"], "--cv must be 0"),
    ("fit-kind", ["fit", "--db", "{good.sqlite}", "--kind", "forest", "--out", "{out}/m.json"], "unknown cost model"),
    ("fit-real-shapes-alone", ["fit", "--db", "{good.sqlite}", "--no-real-shapes", "--out", "{out}/m.json"], "go with --adaptive"),
    # -- codesign predict
    ("predict-model-missing", ["predict", "--model", "{nothing.json}", "{net.onnx}"], "no cost model"),
    ("predict-model-empty", ["predict", "--model", "{empty}", "{net.onnx}"], "not a codesign cost model"),
    ("predict-model-truncated", ["predict", "--model", "{model-trunc.json}", "{net.onnx}"], "not a codesign cost model"),
    ("predict-model-npz-truncated", ["predict", "--model", "{model-trunc.npz}", "{net.onnx}"], "not a codesign cost model"),
    ("predict-model-binary", ["predict", "--model", "{binary}", "{net.onnx}"], "not a codesign cost model"),
    ("predict-model-folder", ["predict", "--model", "{folder}", "{net.onnx}"], "not a codesign cost model"),
    ("predict-model-newer", ["predict", "--model", "{model-v99.json}", "{net.onnx}"], "format version 99"),
    ("predict-model-version-string", ["predict", "--model", "{model-vstr.json}", "{net.onnx}"], "not an integer"),
    ("predict-model-kind", ["predict", "--model", "{model-kind.json}", "{net.onnx}"], "unknown cost model kind"),
    ("predict-model-nan", ["predict", "--model", "{model-nan.json}", "{net.onnx}"], "NaN"),
    ("predict-model-negative-latency", ["predict", "--model", "{model-neg.json}", "{net.onnx}"], "finite positive"),
    ("predict-model-inf-overhead", ["predict", "--model", "{model-inf-overhead.json}", "{net.onnx}"], "overhead_ms"),
    ("predict-model-tree-index", ["predict", "--model", "{model-index.json}", "{net.onnx}"], "out of range"),
    ("predict-model-tree-loop", ["predict", "--model", "{model-loop.json}", "{net.onnx}"], "back to themselves"),
    ("predict-onnx-missing", ["predict", "--model", "{good.json}", "{nothing.onnx}"], "no ONNX file"),
    ("predict-onnx-empty", ["predict", "--model", "{good.json}", "{net-empty.onnx}"], "not an ONNX network"),
    ("predict-onnx-truncated", ["predict", "--model", "{good.json}", "{net-trunc.onnx}"], "ONNX"),
    ("predict-onnx-folder", ["predict", "--model", "{good.json}", "{net-dir.onnx}"], "is a folder"),
    ("predict-table-binary", ["predict", "--model", "{good.json}", "{table-binary.csv}"], "binary"),
    ("predict-table-empty", ["predict", "--model", "{good.json}", "{table-empty.csv}"], "empty"),
    ("predict-table-folder", ["predict", "--model", "{good.json}", "{table-dir.csv}"], "is a folder"),
    ("predict-table-header", ["predict", "--model", "{good.json}", "{table-header.csv}"], "onnx_path"),
    ("predict-db-newer", ["predict", "--device", "cpu-local", "--db", "{db-newer.sqlite}", "{net.onnx}"], "newer"),
    ("predict-kernel-key", ["predict", "--model", "{good.json}", "--kernel", "conv9d|1x2|"], "kernel"),
    # -- codesign measure
    ("measure-onnx-missing", ["measure", "{nothing.onnx}"], "no ONNX file"),
    ("measure-onnx-empty", ["measure", "{net-empty.onnx}"], "not an ONNX network"),
    ("measure-onnx-folder", ["measure", "{net-dir.onnx}"], "is a folder"),
    ("measure-device-kind", ["measure", "{net.onnx}", "--device", "{dev-kind.yaml}"], "nosuchkind"),
    ("measure-device-mcpu", ["measure", "{net.onnx}", "--device", "{dev-mcpu.yaml}"], "notacpu9000"),
    ("measure-repeats-zero", ["measure", "{net.onnx}", "--repeats", "0"], "repeats"),
    ("measure-min-repeat-inf", ["measure", "{net.onnx}", "--min-repeat-ms", "inf"], "min_repeat_ms"),
    ("measure-schedule", ["measure", "{net.onnx}", "--schedule", "fastest"], "schedule"),
    ("measure-append-other-header", ["measure", "{net.onnx}", "--append", "{append-other.csv}"], "append to a new file"),
    ("measure-append-binary", ["measure", "{net.onnx}", "--append", "{table-binary.csv}"], "binary"),
    ("measure-append-folder", ["measure", "{net.onnx}", "--append", "{folder}"], "is a folder"),
    ("measure-append-read-only", ["measure", "{net.onnx}", "--append", "{append-ro.csv}"], "read-only"),
    ("measure-predict-with-newer", ["measure", "{net.onnx}", "--predict-with", "{model-v99.json}"], "format version 99"),
    ("measure-tuning-dir-file", ["measure", "{net.onnx}", "--tuning-dir", "{text.txt}"], "is a file"),
    ("measure-tune-trials-zero", ["measure", "{net.onnx}", "--tune-trials", "0"], "--tune-trials must be >= 1"),
    ("measure-tuning-seed-negative", ["measure", "{net.onnx}", "--tuning-seed", "-1"], "--tuning-seed must be an integer"),
    # -- codesign calibrate
    ("calibrate-from-missing", ["calibrate", "--from", "{nothing.json}", "--table", "{table-neg.csv}", "--as", "x"], "no cost model"),
    ("calibrate-from-truncated", ["calibrate", "--from", "{model-trunc.json}", "--table", "{table-neg.csv}", "--as", "x"], "not a codesign cost model"),
    ("calibrate-table-missing", ["calibrate", "--from", "{good.json}", "--table", "{nothing.csv}", "--as", "x"], "no table"),
    ("calibrate-table-empty", ["calibrate", "--from", "{good.json}", "--table", "{table-empty.csv}", "--as", "x"], "empty"),
    ("calibrate-table-no-rows", ["calibrate", "--from", "{good.json}", "--table", "{table-norows.csv}", "--as", "x"], "no rows"),
    ("calibrate-table-binary", ["calibrate", "--from", "{good.json}", "--table", "{table-binary.csv}", "--as", "x"], "binary"),
    ("calibrate-table-folder", ["calibrate", "--from", "{good.json}", "--table", "{table-dir.csv}", "--as", "x"], "is a folder"),
    ("calibrate-table-header", ["calibrate", "--from", "{good.json}", "--table", "{table-header.csv}", "--as", "x"], "latency_ms column"),
    ("calibrate-latency-nan", ["calibrate", "--from", "{good.json}", "--table", "{table-nan.csv}", "--as", "x"], "finite positive"),
    ("calibrate-latency-inf", ["calibrate", "--from", "{good.json}", "--table", "{table-inf.csv}", "--as", "x"], "finite positive"),
    ("calibrate-latency-negative", ["calibrate", "--from", "{good.json}", "--table", "{table-neg.csv}", "--as", "x"], "finite positive"),
    ("calibrate-latency-word", ["calibrate", "--from", "{good.json}", "--table", "{table-word.csv}", "--as", "x"], "not a number"),
    ("calibrate-prior-negative", ["calibrate", "--from", "{good.json}", "--table", "{table-binary.csv}", "--as", "x", "--prior", "-1"], "--prior"),
    ("calibrate-prior-nan", ["calibrate", "--from", "{good.json}", "--table", "{table-binary.csv}", "--as", "x", "--prior", "nan"], "--prior"),
    ("calibrate-rows-zero", ["calibrate", "--from", "{good.json}", "--table", "{table-neg.csv}", "--as", "x", "--rows", "0"], "--rows"),
    ("calibrate-as-path", ["calibrate", "--from", "{good.json}", "--table", "{table-neg.csv}", "--as", "../x"], "not a device name"),
    ("calibrate-as-base-device", ["calibrate", "--from", "{good.json}", "--table", "{table-good.csv}", "--as", "cpu-local", "--out", "{out}/c.json"], "own device"),
    ("calibrate-as-overwrites-base", ["calibrate", "--from", "{good.json}", "--table", "{table-neg.csv}", "--as", "x", "--out", "{good.json}"], "overwrite its base"),
    ("calibrate-out-read-only", ["calibrate", "--from", "{good.json}", "--table", "{table-neg.csv}", "--as", "x", "--out", "{ro-folder}/x.json"], "read-only"),
    ("calibrate-eval-table-binary", ["calibrate", "--from", "{good.json}", "--table", "{table-good.csv}", "--as", "x", "--eval-table", "{table-binary.csv}"], "binary"),
    # -- codesign hw
    ("hw-show-unknown", ["hw", "show", "nosuchchip"], "unknown accelerator"),
    ("hw-show-newer", ["hw", "show", "{accel-v99.yaml}"], "format_version"),
    ("hw-show-negative", ["hw", "show", "{accel-neg.yaml}"], "pe_rows"),
    ("hw-show-nan", ["hw", "show", "{accel-nan.yaml}"], "clock_mhz"),
    ("hw-show-set-negative", ["hw", "show", "eyeriss-like", "--set", "glb_kib=-1"], "glb_kib"),
    ("hw-show-set-unknown", ["hw", "show", "eyeriss-like", "--set", "pe_count=4"], "unknown accelerator parameter"),
    ("hw-eval-onnx-empty", ["hw", "eval", "--accel", "eyeriss-like", "--onnx", "{net-empty.onnx}"], "not an ONNX network"),
    ("hw-eval-onnx-missing", ["hw", "eval", "--accel", "eyeriss-like", "--onnx", "{nothing.onnx}"], "no ONNX file"),
    ("hw-eval-accel-empty", ["hw", "eval", "--accel", "{dev-empty.yaml}", "--onnx", "{net.onnx}"], "accelerator"),
    ("hw-eval-kernel-key", ["hw", "eval", "--accel", "eyeriss-like", "--kernel", "nonsense"], "kernel"),
    ("hw-roofline-db-missing", ["hw", "roofline-check", "--db", "{nothing.sqlite}"], "no profile database"),
    ("hw-roofline-db-foreign", ["hw", "roofline-check", "--db", "{db-foreign.sqlite}"], "another program"),
    ("hw-roofline-db-empty", ["hw", "roofline-check", "--db", "{empty}"], "empty"),
    ("hw-roofline-unknown-roofline", ["hw", "roofline-check", "--db", "{good.sqlite}", "--roofline", "nosuch"], "roofline"),
    ("hw-validate-extra", ["hw", "validate", "--bogus"], "unrecognized arguments"),
    ("hw-list-extra", ["hw", "list", "x"], "unrecognized arguments"),
    # -- codesign search
    ("search-device-unknown", ["search", "--device", "cpu-locl", "--run-dir", "{out}/r"], "unknown device"),
    ("search-device-mcpu", ["search", "--device", "{dev-mcpu.yaml}", "--run-dir", "{out}/r"], "notacpu9000"),
    ("search-schedule", ["search", "--schedule", "fastest", "--run-dir", "{out}/r"], "schedule"),
    ("search-tune-trials-zero", ["search", "--tune-trials", "0", "--run-dir", "{out}/r"], "--tune-trials must be >= 1"),
    ("search-tune-trials-text", ["search", "--tune-trials", "many", "--run-dir", "{out}/r"], "invalid int value"),
    ("search-train-device-unknown", ["search", "--train-device", "gpu", "--run-dir", "{out}/r"], "--train-device takes auto, cpu, cuda"),
    ("search-db-foreign", ["search", "--db", "{db-foreign.sqlite}", "--run-dir", "{out}/r"], "another program"),
    ("search-db-read-only", ["search", "--db", "{db-ro.sqlite}", "--run-dir", "{out}/r"], "read-only"),
    ("search-db-folder", ["search", "--db", "{folder}", "--run-dir", "{out}/r"], "is a folder"),
    ("search-cost-model-missing", ["search", "--cost-model", "{nothing.json}", "--run-dir", "{out}/r"], "no cost model"),
    ("search-cost-model-nan", ["search", "--cost-model", "{model-nan.json}", "--run-dir", "{out}/r"], "NaN"),
    ("search-cost-model-newer", ["search", "--cost-model", "{model-v99.json}", "--run-dir", "{out}/r"], "format version 99"),
    ("search-l2o-truncated-weights", ["search", "--arch-optimizer", "l2o:{l2o-trunc.json}", "--run-dir", "{out}/r"], "truncated"),
    ("search-l2o-hidden", ["search", "--weight-optimizer", "l2o:{l2o-hidden.json}", "--run-dir", "{out}/r"], "hidden"),
    ("search-l2o-missing", ["search", "--arch-optimizer", "l2o:{nothing.json}", "--run-dir", "{out}/r"], "no optimizer file"),
    ("search-run-dir-is-a-file", ["search", "--run-dir", "{text.txt}"], "is a file"),
    ("search-run-dir-holds-a-run", ["search", "--run-dir", "{run-trunc-ckpt}"], "already holds a run"),
    ("search-run-dir-read-only", ["search", "--run-dir", "{ro-folder}/r"], "read-only"),
    ("search-resume-missing", ["search", "--resume", "{nothing}"], "not a codesign run directory"),
    ("search-resume-empty", ["search", "--resume", "{run-empty}"], "no config.json"),
    ("search-resume-a-file", ["search", "--resume", "{text.txt}"], "not a codesign run directory"),
    ("search-resume-bad-config", ["search", "--resume", "{run-bad-config}"], "not valid JSON"),
    ("search-resume-bad-setting", ["search", "--resume", "{run-bad-setting}"], "epochs"),
    ("search-resume-newer-config", ["search", "--resume", "{run-v99}"], "format version 99"),
    ("export-run-newer-config", ["export", "{run-v99}", "--out", "{out}/m.onnx"], "format version 99"),
    ("search-resume-truncated-checkpoint", ["search", "--resume", "{run-trunc-ckpt}"], "truncated"),
    ("search-resume-truncated-weights", ["search", "--resume", "{run-trunc-weights}"], "truncated"),
    ("search-resume-read-only", ["search", "--resume", "{run-ro}"], "read-only"),
    ("search-resume-and-run-dir", ["search", "--resume", "{run-good}", "--run-dir", "{out}/y"], "drop --run-dir"),
    ("search-resume-other-flag", ["search", "--resume", "{run-good}", "--seed", "3"], "made with seed=0"),
    ("search-batch-larger-than-data", ["search", "--batch-size", "2000", "--run-dir", "{out}/r"], "--batch-size 2000"),
    ("search-batch-zero", ["search", "--batch-size", "0", "--run-dir", "{out}/r"], "--batch-size must be >= 1"),
    ("search-lr-nan", ["search", "--lr", "nan", "--run-dir", "{out}/r"], "lr"),
    ("search-arch-lr-negative", ["search", "--arch-lr", "-0.1", "--run-dir", "{out}/r"], "--arch-lr"),
    ("search-lagrange-lr-nan", ["search", "--lagrange-lr", "nan", "--run-dir", "{out}/r"], "lagrange"),
    ("search-lagrange-lr-negative", ["search", "--lagrange-lr", "-1", "--run-dir", "{out}/r"], "--lagrange-lr"),
    ("search-tau-order", ["search", "--tau-min", "9", "--tau-max", "1", "--run-dir", "{out}/r"], "--tau-min"),
    ("search-tau-inf", ["search", "--tau-max", "inf", "--run-dir", "{out}/r"], "tau_max"),
    ("search-val-fraction", ["search", "--val-fraction", "1.5", "--run-dir", "{out}/r"], "--val-fraction"),
    ("search-val-fraction-nan", ["search", "--val-fraction", "nan", "--run-dir", "{out}/r"], "val_fraction"),
    ("search-objective-weight", ["search", "--objective-weight", "-1", "--run-dir", "{out}/r"], "--objective-weight"),
    ("search-latency-nan", ["search", "--latency-ms", "nan", "--run-dir", "{out}/r"], "--latency-ms"),
    ("search-energy-inf", ["search", "--energy-mj", "inf", "--run-dir", "{out}/r"], "--energy-mj"),
    ("search-latency-negative", ["search", "--latency-ms=-3", "--run-dir", "{out}/r"], "--latency-ms"),
    ("search-seed-negative", ["search", "--seed", "-1", "--run-dir", "{out}/r"], "--seed"),
    ("search-epochs-zero", ["search", "--epochs", "0", "--run-dir", "{out}/r"], "--epochs must be >= 1"),
    ("search-space-arg-type", ["search", "--space-arg", "c=abc", "--run-dir", "{out}/r"], "c must be an integer"),
    ("search-space-arg-unknown", ["search", "--space-arg", "width=3", "--run-dir", "{out}/r"], "no argument 'width'"),
    ("search-statistic", ["search", "--statistic", "mean", "--run-dir", "{out}/r"], "--statistic"),
    ("search-cifar-labels", ["search", "--data", "cifar10", "--data-dir", "{cifar}", "--run-dir", "{out}/r"], "labels"),
    ("search-cifar-truncated", ["search", "--data", "cifar10", "--data-dir", "{cifar-trunc}", "--run-dir", "{out}/r"], "not a CIFAR-10"),
    ("search-cifar-missing", ["search", "--data", "cifar10", "--data-dir", "{nothing}", "--run-dir", "{out}/r"], "does not exist"),
    ("search-images-corrupt", ["search", "--data", "imagefolder", "--data-dir", "{img-corrupt}", "--run-dir", "{out}/r"], "not a readable image"),
    ("search-images-class-missing", ["search", "--data", "imagefolder", "--data-dir", "{img-missing-class}", "--run-dir", "{out}/r"], "missing b"),
    ("search-images-empty", ["search", "--data", "imagefolder", "--data-dir", "{run-empty}", "--run-dir", "{out}/r"], "class"),
    ("search-hw-space-missing", ["search", "--hw-space", "{nothing.yaml}", "--run-dir", "{out}/r"], "hardware space"),
    ("search-accel-newer", ["search", "--device", "accel:{accel-v99.yaml}", "--run-dir", "{out}/r"], "format_version"),
    # -- codesign train
    ("train-run-missing-config", ["train", "{run-no-config}", "--out", "{out}/w"], "no config.json"),
    ("train-run-bad-config", ["train", "{run-bad-config}", "--out", "{out}/w"], "not valid JSON"),
    ("train-run-not-finished", ["train", "{run-trunc-ckpt}", "--out", "{out}/w"], "not a finished search run"),
    ("train-batch-zero", ["train", G, "--batch-size", "0", "--out", "{out}/w"], "--batch-size"),
    ("train-epochs-negative", ["train", G, "--epochs", "-1", "--out", "{out}/w"], "--epochs"),
    ("train-lr-nan", ["train", G, "--lr", "nan", "--out", "{out}/w"], "--lr"),
    ("train-space-arg-type", ["train", G, "--space-arg", "c=abc", "--out", "{out}/w"], "c must be an integer"),
    ("train-space-arg-unknown", ["train", G, "--space-arg", "nosuch=3", "--out", "{out}/w"], "no argument 'nosuch'"),
    ("train-genotype", ["train", "|bad|", "--out", "{out}/w"], "nb201 genotype"),
    ("train-out-folder", ["train", G, "--out", "{wdir}"], "is a folder"),
    ("train-out-read-only", ["train", G, "--out", "{ro-folder}/w"], "read-only"),
    ("train-out-under-a-file", ["train", G, "--out", "{text.txt}/w"], "is a file"),
    ("train-data-corrupt", ["train", G, "--data", "imagefolder", "--data-dir", "{img-corrupt}", "--out", "{out}/w"], "not a readable image"),
    # -- codesign export
    ("export-run-truncated-weights", ["export", "{run-trunc-weights}", "--out", "{out}/m.onnx"], "truncated"),
    ("export-run-bad-config", ["export", "{run-bad-config}", "--out", "{out}/m.onnx"], "not valid JSON"),
    ("export-run-missing-config", ["export", "{run-no-config}", "--out", "{out}/m.onnx"], "no config.json"),
    ("export-weights-truncated", ["export", G, *SMALL, "--weights", "{weights-trunc}", "--out", "{out}/m.onnx"], "truncated"),
    ("export-weights-missing", ["export", G, "--weights", "{nothing}", "--out", "{out}/m.onnx"], "no weights"),
    ("export-weights-not-a-network", ["export", G, "--weights", "{weights-other}", "--out", "{out}/m.onnx"], "no network weights"),
    ("export-weights-other-network", ["export", G, "--weights", "{run-good}/weights", "--out", "{out}/m.onnx"], "do not fit"),
    ("export-num-classes-zero", ["export", G, "--num-classes", "0", "--out", "{out}/m.onnx"], "--num-classes"),
    ("export-input-shape", ["export", G, "--input-shape", "1,3,nan,8", "--out", "{out}/m.onnx"], "--input-shape"),
    ("export-out-suffix", ["export", G, "--out", "{out}/m.txt"], "must end in .onnx"),
    ("export-out-folder", ["export", G, "--out", "{net-dir.onnx}"], "is a folder"),
    ("export-out-read-only", ["export", G, "--out", "{ro-folder}/m.onnx"], "read-only"),
    # -- codesign l2o
    ("l2o-info-missing", ["l2o", "info", "{nothing.json}"], "no optimizer file"),
    ("l2o-info-truncated-json", ["l2o", "info", "{l2o-truncjson.json}"], "not JSON"),
    ("l2o-info-binary", ["l2o", "info", "{l2o-binary.json}"], "binary"),
    ("l2o-info-newer", ["l2o", "info", "{l2o-v99.json}"], "format version 99"),
    ("l2o-info-truncated-weights", ["l2o", "info", "{l2o-trunc.json}"], "truncated"),
    ("l2o-info-weights-with-slash", ["l2o", "info", "{l2o-slash.json}"], "no folders"),
    ("l2o-info-hidden-negative", ["l2o", "info", "{l2o-hidden.json}"], "hidden must be a positive integer"),
    ("l2o-info-nan-weights", ["l2o", "info", "{l2o-nan.json}"], "NaN"),
    ("l2o-info-empty", ["l2o", "info", "{empty}"], "optimizer file"),
    ("l2o-eval-truncated-weights", ["l2o", "eval", "{l2o-trunc.json}", "--task", "quadratic"], "truncated"),
    ("l2o-eval-steps-zero", ["l2o", "eval", "general", "--task", "quadratic", "--steps", "0"], "--steps"),
    ("l2o-eval-task", ["l2o", "eval", "general", "--task", "sudoku"], "sudoku"),
    ("l2o-train-meta-lr-nan", ["l2o", "train", "--task", "quadratic", "--out", "{out}/o.json", "--meta-lr", "nan"], "--meta-lr"),
    ("l2o-train-clip-negative", ["l2o", "train", "--task", "quadratic", "--out", "{out}/o.json", "--clip", "-1"], "--clip"),
    ("l2o-train-episodes-zero", ["l2o", "train", "--task", "quadratic", "--out", "{out}/o.json", "--episodes", "0"], "--episodes"),
    ("l2o-train-out-suffix", ["l2o", "train", "--task", "quadratic", "--out", "{out}/o.npz"], "must end in .json"),
    ("l2o-train-out-read-only", ["l2o", "train", "--task", "quadratic", "--out", "{ro-folder}/o.json"], "read-only"),
    ("l2o-train-truncated-checkpoint", ["l2o", "train", "--task", "quadratic", "--out", "{ckpt-out.json}"], "pass --restart"),
    ("l2o-train-truncated-checkpoint-npz", ["l2o", "train", "--task", "quadratic", "--episodes", "1", "--unrolls",
                                            "1", "--unroll-length", "1", "--out", "{ckpt-npz.json}"], "truncated"),
    ("l2o-train-task", ["l2o", "train", "--task", "chess", "--out", "{out}/o.json"], "chess"),
    ("l2o-list-extra", ["l2o", "list", "x"], "unrecognized arguments"),
    ("report-missing", ["report", "{nothing}"], "no such run directory"),
    ("report-empty", ["report", "{run-empty}"], "no config.json"),
    ("report-a-file", ["report", "{text.txt}"], "not a codesign run directory"),
    ("report-bad-config", ["report", "{run-bad-config}"], "not valid JSON"),
    ("report-bad-setting", ["report", "{run-bad-setting}"], "epochs"),
    ("report-newer-config", ["report", "{run-v99}"], "format version 99"),
    ("report-truncated-results", ["report", "{run-bad-results}"], "damaged"),
    ("report-foreign-results", ["report", "{run-foreign-results}"], "not a codesign results file"),
    ("report-out-folder", ["report", "{run-good}", "--out", "{folder}"], "is a directory"),
    ("report-out-missing-folder", ["report", "{run-good}", "--out", "{out}/r.html"], "no directory"),
    ("report-read-only-run", ["report", "{run-ro}"], "read-only"),
    ("report-compare-one", ["report", "--compare", "{run-good}"], "at least two"),
    ("report-compare-twice", ["report", "--compare", "{run-good}", "{run-good}"], "given twice"),
    ("report-two-without-compare", ["report", "{run-good}", "{run-bad-results}"], "--compare"),
    ("doctor-extra", ["doctor", "x"], "unrecognized arguments"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, bad, tmp_path, monkeypatch, capsys):
    name, argv, fragment = case
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "out"  # never created: a command that fails first writes nothing there
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("CODESIGN_DB", str(tmp_path / "default.sqlite"))
    monkeypatch.setenv("CODESIGN_DEVICES_DIR", str(bad / ("baddevices" if name.startswith("devices") else "folder")))

    def resolve(arg: str) -> str:
        arg = arg.replace("{out}", str(out))
        while "{" in arg and "}" in arg and not arg.startswith("|"):
            a, b = arg.index("{"), arg.index("}")
            arg = arg[:a] + str(bad / arg[a + 1:b]) + arg[b + 1:]
        return arg

    args = [resolve(a) for a in argv]
    before = _snapshot(bad)
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (name, code, captured.err[-2000:])
    assert len(lines) == 1, (name, captured.err[-2000:])
    assert "Traceback" not in captured.err
    assert fragment in lines[0], (name, lines[0])
    assert not list(cwd.iterdir()), f"{name} left files in the working directory: {list(cwd.iterdir())}"
    assert not out.exists(), f"{name} created {out}"
    assert not (tmp_path / "default.sqlite").exists(), f"{name} created the default profile database"
    assert _snapshot(bad) == before, f"{name} changed its inputs"


def test_the_sweep_covers_every_subcommand():
    """Every subcommand `codesign --help` lists (and every hw and l2o action) has a case."""
    from codesign.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    covered = {c[1][0] for c in CASES}
    assert set(sub.choices) <= covered, set(sub.choices) - covered
    for group in ("hw", "l2o"):
        actions = next(a for a in sub.choices[group]._actions if getattr(a, "choices", None))
        assert set(actions.choices) <= {c[1][1] for c in CASES if c[1][0] == group}, group
    kinds = {"missing", "empty", "truncated", "binary", "folder", "newer", "nan", "inf", "negative", "read-only"}
    assert all(any(k in c[0] for c in CASES) for k in kinds)


@pytest.mark.parametrize("strategy, fragment", [
    ("bogus", "CODESIGN_MS_STRATEGY must be one of replay-trace, evolutionary, got 'bogus'"),
    pytest.param("evolutionary", "xgboost is not installed",
                 marks=pytest.mark.skipif(importlib.util.find_spec("xgboost") is not None, reason="xgboost installed")),
])
@pytest.mark.parametrize("argv", [
    ["search", "--run-dir", "{out}/r"],
    ["profile", "--grid", "relu", "--db", "{out}/p.sqlite"],
    ["measure", "{net.onnx}", "--schedule", "tuned"],
], ids=["search", "profile", "measure"])
def test_a_tuning_strategy_that_cannot_run_is_refused_before_any_work(strategy, fragment, argv, bad, tmp_path,
                                                                      monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CODESIGN_DB", str(tmp_path / "default.sqlite"))
    monkeypatch.setenv("CODESIGN_MS_STRATEGY", strategy)
    args = [a.replace("{out}", str(out)).replace("{net.onnx}", str(bad / "net.onnx")) for a in argv]
    capsys.readouterr()
    code = main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert not out.exists() and not (tmp_path / "default.sqlite").exists()
