"""Cost models, features, evaluation, calibration and the fit/predict/calibrate commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_module import load_benchmark

from codesign.errors import CodesignError
from codesign.kernelspec import KernelSpec, kernel_bytes, kernel_flops
from codesign.predict import (
    calibrate,
    create_cost_model,
    list_cost_models,
    load_cost_model,
    read_table,
)
from codesign.predict.calibrate import fit_weights
from codesign.predict.evaluate import accuracy, cross_validate
from codesign.predict.features import FAMILIES, FEATURE_NAMES, family, feature_matrix
from codesign.profile import Measurement, ProfileDB
from codesign.profile.grid import grid_specs

K = KernelSpec.make


def _law_ms(spec: KernelSpec) -> float:
    """A roofline-like latency law (2 GFLOP/s, 10 GB/s, 2 us launch), depthwise 4x less efficient."""
    eff = 0.25 if family(spec) == "conv_depthwise" else 1.0
    return max(kernel_flops(spec) / (2e9 * eff), kernel_bytes(spec) / 1e10) * 1e3 + 0.002


def _records(specs, device="dev", schedule="untuned", energy=True):
    return [Measurement(kernel_key=s.key(), device=device, schedule=schedule, latency_ms=_law_ms(s),
                        energy_mj=_law_ms(s) * 20.0 if energy else None,
                        energy_source="model:test" if energy else None) for s in specs]


@pytest.fixture(scope="module")
def specs():
    out = grid_specs("conv2d", 300, seed=3)
    for op in ("max_pool2d", "global_avg_pool2d", "dense", "add", "relu"):
        out += grid_specs(op, 30, seed=3)
    return out


def test_features_and_families():
    dw = K("conv2d", (1, 16, 8, 8), out_channels=16, kernel=3, groups=16)
    grouped = K("conv2d", (1, 16, 8, 8), out_channels=32, kernel=3, groups=4)
    pw = K("conv2d", (1, 16, 8, 8), out_channels=32, kernel=1, padding=0)
    assert [family(s) for s in (dw, grouped, pw, K("dense", (1, 8), out_features=4))] == [
        "conv_depthwise", "conv_grouped", "conv_pointwise", "dense"]
    x = feature_matrix([dw, pw])
    assert x.shape == (2, len(FEATURE_NAMES))
    assert x[0, FAMILIES.index("conv_depthwise")] == 1 and x[0, :len(FAMILIES)].sum() == 1
    assert x[1, FEATURE_NAMES.index("log_flops")] == pytest.approx(np.log(kernel_flops(pw)))


def test_op_codes_cover_every_op_and_never_move():
    """Fitted kernel-type models store the op_code feature: every op has one, and the ops of
    earlier versions keep theirs (a new op is appended)."""
    from codesign.kernelspec import OPS
    from codesign.predict.features import _OP_CODES, TYPE_FEATURE_NAMES, type_features

    assert set(_OP_CODES) == set(OPS) and len(_OP_CODES) == len(OPS)
    first = ("add", "avg_pool2d", "batch_matmul", "batch_norm", "conv2d", "dense", "gelu", "global_avg_pool2d",
             "hardsigmoid", "hardswish", "layer_norm", "lrn", "max_pool2d", "mul", "relu", "relu6", "sigmoid",
             "silu", "softmax")
    assert _OP_CODES[: len(first)] == first
    col = TYPE_FEATURE_NAMES.index("op_code")
    assert type_features(K("softmax", (4, 8)))[col] == first.index("softmax")
    # A rectangular window reads as the square of the same area; its reduction is kh * kw * channels.
    wide = type_features(K("conv2d", (1, 16, 8, 8), out_channels=16, kernel=1, kernel_w=7))
    assert wide[TYPE_FEATURE_NAMES.index("kernel")] == pytest.approx(7 ** 0.5)
    assert wide[TYPE_FEATURE_NAMES.index("log_reduction")] == pytest.approx(np.log(16 * 7))
    assert family(K("conv2d", (1, 16, 8, 8), out_channels=16, kernel=1, kernel_w=7)) == "conv"


def test_registry_lists_and_rejects_unknown():
    assert {"loglinear", "gbdt"} <= set(list_cost_models())
    assert "calibrated" not in list_cost_models()
    with pytest.raises(CodesignError, match=r"unknown cost model 'xgb'; known: .*gbdt"):
        create_cost_model("xgb")


@pytest.mark.parametrize("kind", list_cost_models())
def test_every_model_learns_held_out_kernels_and_round_trips(kind, specs, tmp_path):
    train, test = specs[::2], specs[1::2]
    model = create_cost_model(kind, seed=0).fit(_records(train))
    truth = np.array([_law_ms(s) for s in test])
    pred = model.predict(test, use_measured=False)
    acc = accuracy(pred, truth)
    assert acc["kendall_tau"] > 0.85, acc
    assert acc["median_ape"] < 0.35, acc
    # Measured kernels come back exactly from the table.
    np.testing.assert_allclose(model.predict(train[:5]), [_law_ms(s) for s in train[:5]])
    assert model.predict_energy(train[:1])[0] == pytest.approx(_law_ms(train[0]) * 20.0)
    for suffix in (".json", ".npz"):
        path = model.save(tmp_path / f"m{suffix}")
        loaded = load_cost_model(path)
        assert (loaded.kind, loaded.device, loaded.schedule, loaded.n_train) == (kind, "dev", "untuned", len(train))
        np.testing.assert_allclose(loaded.predict(test, use_measured=False), pred, rtol=1e-12)
        np.testing.assert_allclose(loaded.predict_energy(test), model.predict_energy(test), rtol=1e-12)


def test_gbdt_arrays_predict_what_scikit_learn_predicts(specs):
    from sklearn.ensemble import GradientBoostingRegressor

    model = create_cost_model("gbdt", seed=0, n_estimators=50).fit(_records(specs))
    x = feature_matrix(specs)
    y = np.log([_law_ms(s) for s in specs])
    ref = GradientBoostingRegressor(init="zero", random_state=0, n_estimators=50, max_depth=4, learning_rate=0.05,
                                    subsample=0.8).fit(x, y - y.mean())
    np.testing.assert_allclose(np.log(model.predict(specs, use_measured=False)), ref.predict(x) + y.mean(), atol=1e-9)


def test_network_sum_and_overheads(specs):
    model = create_cost_model("loglinear").fit(_records(specs))
    model.overhead_ms, model.per_kernel_overhead_ms = 0.5, 0.01
    net = model.predict_network(specs[:4])
    assert net["latency_ms"] == pytest.approx(sum(_law_ms(s) for s in specs[:4]) + 0.5 + 0.04)
    assert (net["kernels"], net["measured_kernels"]) == (4, 4)


def test_fit_errors(specs, tmp_path):
    with pytest.raises(CodesignError, match=r"mix devices/schedules a\[untuned\], b\[untuned\]"):
        create_cost_model("gbdt").fit(_records(specs[:5], "a") + _records(specs[5:10], "b"))
    with pytest.raises(CodesignError, match="no measured kernels .* run `codesign profile` first"):
        create_cost_model("gbdt").fit([])
    model = create_cost_model("loglinear").fit(_records(specs[:40], energy=False))
    with pytest.raises(CodesignError, match="no energy_mj"):
        model.predict_energy(specs[:1])
    with pytest.raises(CodesignError, match="not fitted"):
        create_cost_model("gbdt").predict(specs[:1])
    with pytest.raises(CodesignError, match="must end in .json or .npz"):
        model.save(tmp_path / "m.pkl")


def test_load_errors(specs, tmp_path):
    with pytest.raises(CodesignError, match="no cost model at .*codesign fit"):
        load_cost_model(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CodesignError, match="is not a codesign cost model"):
        load_cost_model(bad)
    path = create_cost_model("loglinear").fit(_records(specs[:40])).save(tmp_path / "m.json")
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(CodesignError, match="format version 99, newer than this codesign reads"):
        load_cost_model(path)


def test_accuracy_metrics_against_scipy():
    from scipy.stats import kendalltau

    meas = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    pred = np.array([1.05, 2.4, 2.9, 5.2, 4.8])
    acc = accuracy(pred, meas)
    assert acc["within_10pct"] == pytest.approx(3 / 5)
    assert acc["within_25pct"] == pytest.approx(4 / 5)
    assert acc["kendall_tau"] == pytest.approx(kendalltau(pred, meas)[0])
    rel = pred / meas - 1
    assert acc["within_5pct"] == pytest.approx(np.mean(np.abs(rel) <= 0.05)) == pytest.approx(2 / 5)
    assert acc["rmspe"] == pytest.approx(np.sqrt(np.mean(rel**2)))
    with pytest.raises(CodesignError, match="equal length"):
        accuracy([1.0], [1.0, 2.0])


def test_cross_validation_reports_families(specs):
    res = cross_validate("loglinear", _records(specs), folds=3)
    assert res["overall"]["n"] == len(specs)
    assert res["overall"]["kendall_tau"] > 0.85
    assert "conv_depthwise" in res["by_family"]


def test_calibration_recovers_family_scales(specs, tmp_path):
    base = create_cost_model("loglinear").fit(_records(specs))
    # The "new device": depthwise 3x slower, every other kernel 0.5x, plus 5 us per kernel.
    scale = {f: 0.5 for f in FAMILIES} | {"conv_depthwise": 1.5}
    keys = [s.key() for s in specs]
    new_ms = [_law_ms(s) * scale[family(s)] + 0.005 for s in specs]
    table = tmp_path / "t.csv"
    table.write_text("kernel_key,latency_ms\n" + "".join(f"\"{k.replace(chr(34), chr(34) * 2)}\",{v}\n"
                                                        for k, v in zip(keys, new_ms)))
    rows = read_table(table)
    assert rows[0]["kernel_key"] == keys[0]
    model = calibrate(base, rows[:60], "newdev")
    w = dict(zip(FAMILIES, model.heads["latency_ms"]["weights"]))
    assert w["conv"] == pytest.approx(0.5, rel=0.1)
    assert model.per_kernel_overhead_ms == pytest.approx(0.005, rel=0.3)
    rest = specs[60:]
    pred = [model.predict_network([s], use_measured=False)["latency_ms"] for s in rest]
    assert accuracy(pred, new_ms[60:])["kendall_tau"] > 0.9
    loaded = load_cost_model(model.save(tmp_path / "new.npz"))
    assert (loaded.kind, loaded.device, loaded.base_device) == ("calibrated", "newdev", "dev")
    np.testing.assert_allclose(loaded.predict(rest, use_measured=False), model.predict(rest, use_measured=False))


def test_fit_weights_keeps_the_common_scale_for_unseen_families():
    sums = np.zeros((5, len(FAMILIES) + 1))
    sums[:, FAMILIES.index("conv")] = [1.0, 2.0, 3.0, 4.0, 5.0]
    sums[:, -1] = 1
    w, c = fit_weights(sums, 2.0 * sums[:, FAMILIES.index("conv")])
    assert w[FAMILIES.index("conv")] == pytest.approx(2.0, rel=0.05)
    assert w[FAMILIES.index("pool")] == pytest.approx(2.0, rel=0.05)  # pulled to the median ratio


def test_fit_weights_signed_per_kernel_term_takes_off_what_kernels_alone_cost_more():
    """Networks that run 2 us per kernel faster than their kernels timed alone: the signed fit finds
    -0.002 ms per kernel and the conv scale; the default holds the term at 0."""
    rng = np.random.default_rng(0)
    sums = np.zeros((12, len(FAMILIES) + 1))
    sums[:, FAMILIES.index("conv")] = rng.uniform(0.05, 0.5, 12)
    sums[:, -1] = rng.integers(5, 40, 12)
    meas = 1.2 * sums[:, FAMILIES.index("conv")] - 0.002 * sums[:, -1]
    w, c = fit_weights(sums, meas, prior=1e-6, signed_per_kernel=True)
    assert c == pytest.approx(-0.002, rel=0.05) and w[FAMILIES.index("conv")] == pytest.approx(1.2, rel=0.05)
    assert (w >= 0).all()
    assert fit_weights(sums, meas, prior=1e-6)[1] == 0.0


def test_table_errors(tmp_path):
    t = tmp_path / "t.csv"
    t.write_text("name,ms\nx,1\n")
    with pytest.raises(CodesignError, match="needs a latency_ms column and a model, onnx_path, genotype or kernel_key column"):
        read_table(t)
    t.write_text("model,latency_ms\nnet.onnx,fast\n")
    with pytest.raises(CodesignError, match=r"t.csv:2: latency_ms 'fast' is not a number"):
        read_table(t)
    with pytest.raises(CodesignError, match="no table at"):
        read_table(tmp_path / "none.csv")


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _cli(*argv):
    """Run the codesign command in this process (as the entry point does), capturing its output."""
    import contextlib
    import io

    from codesign.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return _Result(code, out.getvalue(), err.getvalue())


def test_fit_predict_calibrate_commands(specs, tmp_path):
    db = tmp_path / "p.sqlite"
    with ProfileDB(db) as pdb:
        for m in _records(specs, device="cpu-local"):
            pdb.add(m)
    out = _cli("fit", "--db", str(db), "--kind", "loglinear", "--cv", "3", "--out", str(tmp_path / "m.json"))
    assert out.returncode == 0, out.stderr
    assert "fitted loglinear on" in out.stdout and "held-out kernels (3-fold" in out.stdout
    key = K("conv2d", (1, 16, 16, 16), out_channels=32, kernel=3).key()
    out = _cli("predict", "--model", str(tmp_path / "m.json"), "--kernel", key, "--json")
    assert out.returncode == 0, out.stderr
    item = json.loads(out.stdout)["items"][0]
    assert item["latency_ms"] > 0 and item["energy_mj"] > 0
    table = tmp_path / "t.csv"
    table.write_text("kernel_key,latency_ms\n" + "".join(f"\"{s.key().replace(chr(34), chr(34) * 2)}\",{_law_ms(s) * 3}\n"
                                                        for s in specs[:20]))
    out = _cli("calibrate", "--from", "cpu-local", "--db", str(db), "--kind", "loglinear", "--table", str(table),
               "--as", "slow", "--out", str(tmp_path / "slow.json"), "--eval-table", str(table), "--json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["eval"]["calibrated"]["within_10pct"] == 1.0
    assert rep["eval"]["base_uncalibrated"]["within_10pct"] == 0.0


def test_command_errors_are_one_line(tmp_path):
    cases = [
        (("predict", "--kernel", "conv2d|1x3x8x8|kernel=3,out_channels=4"), "give a saved cost model"),
        (("predict", "--model", str(tmp_path / "none.json"), "--kernel", "x"), "no cost model at"),
        (("fit", "--db", str(tmp_path / "none.sqlite")), "no profile database at"),
        (("calibrate", "--from", str(tmp_path / "m.json"), "--table", "t.csv", "--as", "x"), "no cost model at"),
        (("measure", str(tmp_path / "none.onnx")), "no ONNX file at"),
    ]
    for argv, message in cases:
        out = _cli(*argv)
        assert out.returncode == 2, (argv, out.stderr)
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def _onnx_files(tmp_path, count=3):
    import onnx
    import torch
    import torch.nn as nn

    from codesign.graph import export_onnx

    torch.manual_seed(0)
    paths, nets = [], []
    for i in range(count):
        w = 4 * (i + 1)
        net = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                            nn.Conv2d(w, w, 3, padding=1, groups=w), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(w, 10))
        path = tmp_path / f"net{i}.onnx"
        onnx.save(export_onnx(net, (1, 3, 16, 16)), str(path))
        paths.append(path)
        nets.append(net)
    return paths, nets


def _saved_model(specs, tmp_path, device="cpu-local"):
    return create_cost_model("loglinear").fit(_records(specs, device=device)).save(tmp_path / "m.json")


def test_fit_eval_reports_rmspe_shares_and_tau(specs, tmp_path):
    db = tmp_path / "p.sqlite"
    with ProfileDB(db) as pdb:
        for m in _records(specs, device="cpu-local"):
            pdb.add(m)
    out = _cli("fit", "--db", str(db), "--kind", "loglinear", "--eval", "--out", str(tmp_path / "m.json"))
    assert out.returncode == 0, out.stderr
    assert "held-out kernels (5-fold" in out.stdout and "RMSPE" in out.stdout and "±5%" in out.stdout
    assert "conv_depthwise" in out.stdout
    out = _cli("fit", "--db", str(db), "--kind", "loglinear", "--eval", "--json", "--out", str(tmp_path / "m.json"))
    rep = json.loads(out.stdout)["cross_validation"]
    ref = cross_validate("loglinear", _records(specs, device="cpu-local"), folds=5)
    assert rep["overall"] == pytest.approx(ref["overall"])
    assert 0 < rep["overall"]["rmspe"] < 1 and rep["overall"]["within_5pct"] <= rep["overall"]["within_10pct"]
    # Measured networks give the overhead added to kernel sums.
    paths, _ = _onnx_files(tmp_path, 3)
    from codesign.graph import onnx_kernels

    law = [sum(_law_ms(k) for k in onnx_kernels(p)) + 0.2 + 0.01 * len(onnx_kernels(p)) for p in paths]
    (tmp_path / "nets.csv").write_text("model,latency_ms\n" + "".join(f"{p.name},{v}\n" for p, v in zip(paths, law)))
    out = _cli("fit", "--db", str(db), "--kind", "loglinear", "--networks", str(tmp_path / "nets.csv"),
               "--out", str(tmp_path / "o.json"))
    assert out.returncode == 0 and "network overhead from 3 measured networks" in out.stdout, out.stderr
    fitted = load_cost_model(tmp_path / "o.json")
    assert fitted.overhead_ms + fitted.per_kernel_overhead_ms > 0 and fitted.family_scales is None
    # Four networks or more can fit a scale per op family instead (kernel-type models' default).
    paths, _ = _onnx_files(tmp_path, 4)
    law = [sum(_law_ms(k) for k in onnx_kernels(p)) * 1.3 for p in paths]
    (tmp_path / "nets4.csv").write_text("model,latency_ms\n" + "".join(f"{p.name},{v}\n" for p, v in zip(paths, law)))
    out = _cli("fit", "--db", str(db), "--kind", "loglinear", "--networks", str(tmp_path / "nets4.csv"),
               "--network-fit", "family-scale", "--json", "--out", str(tmp_path / "f.json"))
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["network_fit"] == "family-scale" and set(rep["family_scales"]) == set(FAMILIES)
    fitted = load_cost_model(tmp_path / "f.json")
    assert fitted.family_scales == pytest.approx(rep["family_scales"])
    pred = [fitted.predict_network(onnx_kernels(p))["latency_ms"] for p in paths]
    assert pred == pytest.approx(law, rel=0.15)
    # Without --eval (or --cv) no cross-validation runs.
    out = _cli("fit", "--db", str(db), "--kind", "loglinear", "--json", "--out", str(tmp_path / "m.json"))
    assert "cross_validation" not in json.loads(out.stdout)


def test_predict_many_networks_paths_and_tables(specs, tmp_path):
    from codesign.graph import onnx_kernels
    from codesign.predict import predict_network

    paths, _ = _onnx_files(tmp_path)
    model = _saved_model(specs, tmp_path)
    (tmp_path / "sub").mkdir()
    table = tmp_path / "sub" / "cands.csv"
    table.write_text("genotype,onnx_path\n" + "".join(f"g{i},../{p.name}\n" for i, p in enumerate(paths)))
    out = _cli("predict", "--model", str(model), str(table), str(paths[0]), "--json")
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)["items"]
    assert len(items) == 4 and "per_kernel_latency_ms" not in items[0]
    loaded = load_cost_model(model)
    for it, p in zip(items, paths + paths[:1]):
        assert Path(it["name"]).resolve() == p.resolve()
        assert it["latency_ms"] == pytest.approx(loaded.predict(onnx_kernels(p)).sum())
        assert it["latency_ms"] == pytest.approx(predict_network(loaded, p)["latency_ms"])
    out = _cli("predict", "--model", str(model), *map(str, paths), "--no-progress")
    rows = [ln for ln in out.stdout.splitlines() if ln.endswith(".onnx") or ".onnx " in ln]
    assert out.returncode == 0 and len(rows) == 3, out.stdout
    out = _cli("predict", "--model", str(model), str(paths[1]))  # one network: a per-kernel table
    assert "total" in out.stdout and "conv2d|" in out.stdout


def test_python_api_predicts_a_torch_module(specs, tmp_path):
    from codesign.graph import module_kernels
    from codesign.predict import predict_network, predict_networks

    _, nets = _onnx_files(tmp_path, 2)
    model = create_cost_model("gbdt", seed=0).fit(_records(specs))
    model.overhead_ms = 0.25
    res = predict_network(model, nets[1], input_shape=(1, 3, 16, 16))
    kernels = module_kernels(nets[1], (1, 3, 16, 16))
    assert res["kernels"] == len(kernels) == 5
    assert res["latency_ms"] == pytest.approx(model.predict(kernels).sum() + 0.25)
    assert res["energy_mj"] == pytest.approx(model.predict_energy(kernels).sum())
    both = predict_networks(model, nets, input_shape=(1, 3, 16, 16))
    assert both[1]["latency_ms"] == pytest.approx(res["latency_ms"]) and both[0]["latency_ms"] < res["latency_ms"]
    with pytest.raises(CodesignError, match="needs its input_shape"):
        predict_network(model, nets[0])
    with pytest.raises(CodesignError, match="cannot predict a int"):
        predict_network(model, 3)


def test_network_overhead_is_fitted_on_measured_networks(specs):
    model = create_cost_model("loglinear").fit(_records(specs))
    nets = [specs[i: i + n] for i, n in zip(range(0, 200, 20), (2, 5, 9, 14, 3, 7, 11, 4, 6, 16))]
    truth = [sum(_law_ms(s) for s in k) + 0.3 + 0.02 * len(k) for k in nets]
    model.fit_overhead(nets, truth)
    assert (model.overhead_ms, model.per_kernel_overhead_ms) == (pytest.approx(0.3), pytest.approx(0.02))
    assert [model.predict_network(k)["latency_ms"] for k in nets] == pytest.approx(truth)
    with pytest.raises(CodesignError, match="3 networks but 2 measured"):
        model.fit_overhead(nets[:3], truth[:2])


def test_network_scale_is_fitted_beside_the_overheads_and_saved(specs, tmp_path):
    model = create_cost_model("loglinear").fit(_records(specs))
    nets = [specs[i: i + n] for i, n in zip(range(0, 200, 20), (2, 5, 9, 14, 3, 7, 11, 4, 6, 16))]
    sums = [float(model.predict(k).sum()) for k in nets]
    truth = [1.4 * t + 0.05 + 0.003 * len(k) for t, k in zip(sums, nets)]
    model.fit_overhead(nets, truth, scale=True)
    assert (model.network_scale, model.overhead_ms, model.per_kernel_overhead_ms) == (
        pytest.approx(1.4, rel=1e-6), pytest.approx(0.05, rel=1e-6), pytest.approx(0.003, rel=1e-6))
    res = model.predict_network(nets[3])
    assert res["latency_ms"] == pytest.approx(truth[3])
    loaded = load_cost_model(model.save(tmp_path / "m.json"))
    assert loaded.network_scale == pytest.approx(1.4, rel=1e-6)
    assert loaded.predict_network(nets[3])["latency_ms"] == pytest.approx(truth[3])
    # without scale the old two-term fit, and the scale back at 1
    model.fit_overhead(nets, truth)
    assert model.network_scale == 1.0
    with pytest.raises(CodesignError, match="overhead and scale needs at least 4"):
        model.fit_overhead(nets[:3], truth[:3], scale=True)
    # a file saved before the scale existed reads as scale 1; a damaged scale is refused
    d = json.loads((tmp_path / "m.json").read_text())
    del d["network_scale"]
    (tmp_path / "old.json").write_text(json.dumps(d))
    assert load_cost_model(tmp_path / "old.json").network_scale == 1.0
    d["network_scale"] = -1.0
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(CodesignError, match="network_scale is -1.0"):
        load_cost_model(tmp_path / "bad.json")


def test_family_scales_are_fitted_on_networks_saved_and_checked(specs, tmp_path):
    model = create_cost_model("loglinear").fit(_records(specs))
    rng = np.random.default_rng(0)
    nets = [[specs[j] for j in rng.choice(len(specs), size=int(rng.integers(4, 14)), replace=False)]
            for _ in range(40)]
    true_scale = {f: 1.1 for f in FAMILIES} | {"conv": 1.0, "conv_pointwise": 1.3, "conv_depthwise": 2.0}
    present = {family(s) for k in nets for s in k}
    assert {"conv", "conv_pointwise", "conv_depthwise"} <= present

    def truth(k):
        return sum(true_scale[family(s)] * v for s, v in zip(k, model.predict(k))) + 0.004 * len(k)

    meas = [truth(k) for k in nets[:30]]
    model.fit_overhead(nets[:30], meas, per_family=True)
    fs = model.family_scales
    assert set(fs) == set(FAMILIES) and model.overhead_ms == 0.0 and model.network_scale == 1.0
    assert fs["conv_depthwise"] > fs["conv_pointwise"] > fs["conv"]
    assert fs["conv_depthwise"] == pytest.approx(2.0, rel=0.1)
    # networks the fit never saw, predicted through predict_network (and its interval)
    for k in nets[30:]:
        res = model.predict_network(k)
        assert res["latency_ms"] == pytest.approx(truth(k), rel=0.05)
    # the search's per-kernel costs inside a network add up to the same network latency
    k = nets[31]
    assert float((model.predict(k) * model.in_network_scales(k) + model.per_kernel_overhead_ms).sum()) == \
        pytest.approx(model.predict_network(k)["latency_ms"])
    # a constant overhead alone misses them by far more
    flat = create_cost_model("loglinear").fit(_records(specs)).fit_overhead(nets[:30], meas)
    err = [abs(flat.predict_network(k)["latency_ms"] / truth(k) - 1) for k in nets[30:]]
    assert max(err) > 0.05
    # saved as format 2 (older codesign refuses it rather than ignore the scales); read back the same
    for name in ("m.json", "m.npz"):
        loaded = load_cost_model(model.save(tmp_path / name))
        assert loaded.family_scales == pytest.approx(fs)
        assert loaded.predict_network(nets[35])["latency_ms"] == pytest.approx(model.predict_network(nets[35])["latency_ms"])
    d = json.loads((tmp_path / "m.json").read_text())
    assert d["format_version"] == 2
    # refitting without per_family drops the scales; on fewer networks than an interval needs,
    # the file is format 1 again
    model.fit_overhead(nets[:10], meas[:10])
    assert model.family_scales is None and model.network_log_interval is None
    assert json.loads(model.save(tmp_path / "plain.json").read_text())["format_version"] == 1
    with pytest.raises(CodesignError, match="per-family scales needs at least 4"):
        model.fit_overhead(nets[:3], meas[:3], per_family=True)
    with pytest.raises(CodesignError, match="not both"):
        model.fit_overhead(nets[:30], meas, scale=True, per_family=True)
    for bad in ({"conv": 1.0}, {**fs, "conv": -1.0}, {**fs, "conv": float("nan")}, [1.0] * len(FAMILIES)):
        d["family_scales"] = bad
        (tmp_path / "bad.json").write_text(json.dumps(d))
        with pytest.raises(CodesignError, match="family_scales must map each op family"):
            load_cost_model(tmp_path / "bad.json")


def test_networks_give_a_conformal_interval_that_covers_new_networks(specs, tmp_path):
    from codesign.predict.models import conformal_bounds, conformal_min_networks

    assert conformal_min_networks(0.9) == 19 and conformal_min_networks(0.8) == 9
    assert conformal_bounds(np.arange(19.0), 0.9) == [0.0, 18.0]
    with pytest.raises(CodesignError, match="18 residuals are too few for a 90% interval"):
        conformal_bounds(np.arange(18.0), 0.9)
    model = create_cost_model("loglinear").fit(_records(specs))
    rng = np.random.default_rng(1)
    nets = [[specs[j] for j in rng.choice(len(specs), size=int(rng.integers(4, 14)), replace=False)]
            for _ in range(400)]
    truth = np.array([1.2 * model.predict(k).sum() * np.exp(rng.normal(0, 0.1)) for k in nets])
    model.fit_overhead(nets[:19], truth[:19], per_family=True)
    lo, hi = model.network_log_interval
    assert lo < 0 < hi
    inside = []
    for k, t in zip(nets[19:], truth[19:]):
        res = model.predict_network(k)
        a, b = res["latency_interval_ms"]
        assert a == pytest.approx(res["latency_ms"] * np.exp(lo)) and b == pytest.approx(res["latency_ms"] * np.exp(hi))
        inside.append(a <= t <= b)
    # noise of sd 0.1 in log: about 90 % of new networks inside (19 networks: the bound is loose)
    assert 0.75 <= np.mean(inside) <= 1.0
    loaded = load_cost_model(model.save(tmp_path / "m.json"))
    assert loaded.network_log_interval == pytest.approx([lo, hi])
    d = json.loads((tmp_path / "m.json").read_text())
    for bad in ([0.1, -0.1], [0.1], [float("nan"), 0.1], "0.1"):
        d["network_log_interval"] = bad
        (tmp_path / "bad.json").write_text(json.dumps(d))
        with pytest.raises(CodesignError, match="network_log_interval must be"):
            load_cost_model(tmp_path / "bad.json")
    # 18 networks: no network interval, the kernels' bounds (none for loglinear) remain
    model.fit_overhead(nets[:18], truth[:18], per_family=True)
    assert model.network_log_interval is None


def test_the_reports_kernel_breakdown_shows_kernels_as_they_run_in_the_network(specs, tmp_path):
    import onnx

    from codesign.graph import onnx_kernels
    from codesign.report.rundata import RunData, kernel_costs

    paths, _ = _onnx_files(tmp_path, 4)
    model = create_cost_model("loglinear").fit(_records(specs, device="cpu-local"))
    kernels = [onnx_kernels(p) for p in paths]
    model.fit_overhead(kernels, [1.5 * model.predict(k).sum() + 0.01 * len(k) for k in kernels], per_family=True)
    run = tmp_path / "run"
    run.mkdir()
    onnx.save(onnx.load(str(paths[2])), str(run / "model.onnx"))
    model.save(run / "cost_model.json")
    got = kernel_costs(RunData(path=run, config={}, codesign_version="test", command=None))
    total = model.predict_network(kernels[2])["latency_ms"]
    # the bars and the overhead add up to the network's prediction; the overhead is never negative
    assert sum(got["latency_ms"]) + got["overhead_ms"] == pytest.approx(total)
    assert got["overhead_ms"] == pytest.approx(model.per_kernel_overhead_ms * len(kernels[2])) and got["overhead_ms"] >= 0


def test_a_model_of_another_device_or_schedule_is_refused(specs, tmp_path):
    from codesign.predict import check_model

    path = _saved_model(specs, tmp_path)
    assert load_cost_model(path, device="cpu-local", schedule="untuned").device == "cpu-local"
    with pytest.raises(CodesignError, match="predicts device cpu-local .untuned., not gpu0; fit one with `codesign "
                                            "fit --device gpu0`"):
        load_cost_model(path, device="gpu0")
    with pytest.raises(CodesignError, match="schedule policy untuned, not dlight"):
        check_model(load_cost_model(path), schedule="dlight")


def _check_supernet_kernels(kind, specs, kernels):
    import time

    model = create_cost_model(kind, seed=0).fit(_records(specs))
    ops = {k.op for k in kernels}
    assert {"conv2d", "max_pool2d", "avg_pool2d", "add", "relu", "dense", "global_avg_pool2d"} <= ops
    assert any((k.attr("dilation") or 1) > 1 for k in kernels) and any((k.attr("groups") or 1) > 1 for k in kernels)
    many = (kernels * (3000 // len(kernels) + 1))[:3000]
    t0 = time.perf_counter()
    lat, en = model.predict(many), model.predict_energy(many)
    elapsed = time.perf_counter() - t0
    assert lat.shape == en.shape == (3000,) and np.isfinite(lat).all() and (lat > 0).all() and (en > 0).all()
    # The law's ordering survives: a dilated or grouped conv costs what its work says.
    truth = np.array([_law_ms(k) for k in kernels])
    assert accuracy(model.predict(kernels), truth)["kendall_tau"] > 0.8
    assert elapsed < 10.0, elapsed  # ~1 s for both on two shared cores; the search calls it once per run


@pytest.mark.parametrize("kind", ["gbdt", "loglinear"])
def test_supernet_kernel_kinds_are_predicted_fast(kind, specs):
    from codesign.spaces import create_space

    # The DARTS supernet's kernels (listed in a fraction of a second) and the fused variants the
    # other spaces add: relu6 and residual convs, grouped 1x1, batch_norm + relu, add + relu.
    kernels = create_space("darts").kernels() + [
        K("conv2d", (1, 16, 16, 16), out_channels=96, kernel=1, activation="relu6"),
        K("conv2d", (1, 96, 16, 16), out_channels=96, kernel=5, groups=96, activation="relu6"),
        K("conv2d", (1, 96, 16, 16), out_channels=16, kernel=1, residual=True),
        K("conv2d", (1, 16, 16, 16), out_channels=32, kernel=1, groups=2),
        K("batch_norm", (1, 16, 32, 32), activation="relu"),
        K("add", (1, 16, 32, 32), activation="relu"),
    ]
    _check_supernet_kernels(kind, specs, kernels)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gbdt", "loglinear"])
def test_every_registered_space_kernel_is_predicted_fast(kind, specs):
    from codesign.spaces import create_space, list_spaces

    # Slow only because listing the nb201 and mobilenet kernels takes ~30 s each.
    _check_supernet_kernels(kind, specs, [k for name in list_spaces() for k in create_space(name).kernels()])


def test_bad_input_commands_are_one_line(specs, tmp_path):
    import torch

    from codesign.graph import export_onnx

    model = _saved_model(specs, tmp_path)
    erf = tmp_path / "erf.onnx"
    import onnx

    class ReluLSTM(torch.nn.Module):  # an op codesign has no kernel for: LSTM
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(4, 4)

        def forward(self, x):
            return self.lstm(torch.relu(x))[0]

    onnx.save(export_onnx(ReluLSTM(), (2, 1, 4)), str(erf))
    empty_db = tmp_path / "empty.sqlite"
    with ProfileDB(empty_db):
        pass
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not a zip")
    bad_table = tmp_path / "bad.csv"
    bad_table.write_text("name\nx\n")
    cases = [
        (("predict", "--model", str(model), str(erf)), "ONNX op LSTM"),
        (("predict", "--model", str(model), "--device", "other", str(erf)), "predicts device cpu-local"),
        (("predict", "--model", str(model), "--schedule", "dlight", str(erf)), "schedule policy untuned, not dlight"),
        (("predict", "--model", str(corrupt), str(erf)), "is not a codesign cost model"),
        (("predict", "--device", "cpu-local", "--db", str(empty_db), str(erf)), "holds no measured kernels"),
        (("fit", "--db", str(empty_db)), "holds no measured kernels of device cpu-local"),
        (("predict", "--model", str(model), str(bad_table)), "needs an onnx_path (or model) column"),
        (("fit", "--db", str(empty_db), "--cv", "1"), "--cv must be 0"),
    ]
    for argv, message in cases:
        out = _cli(*argv)
        assert out.returncode == 2, (argv, out.stdout, out.stderr)
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, (argv, out.stderr)
    # A partial total only on request: the Relu is costed, the LSTM named as skipped.
    out = _cli("predict", "--model", str(model), str(erf), "--partial", "--json")
    item = json.loads(out.stdout)["items"][0]
    assert out.returncode == 0 and item["skipped_ops"] == ["LSTM"] and item["kernels"] == 1


def test_calibration_table_of_genotypes(specs, tmp_path):
    import random

    from codesign.predict.calibrate import row_kernels
    from codesign.spaces import create_space

    space = create_space("nb201")
    rng = random.Random(0)
    genotypes = [space.sample(rng) for _ in range(5)]
    base = create_cost_model("loglinear").fit(_records(specs, device="cpu-local"))
    rows = [{"genotype": g, "space": "nb201"} for g in genotypes]
    # The "new device" is 3x slower than the law, plus 0.01 ms per kernel.
    kernels = [row_kernels(r) for r in rows]
    truth = [3 * sum(_law_ms(k) for k in ks) + 0.01 * len(ks) for ks in kernels]
    table = tmp_path / "g.csv"
    table.write_text("genotype,latency_ms\n" + "".join(f"{g},{t}\n" for g, t in zip(genotypes, truth)))
    with pytest.raises(CodesignError, match="g.csv:2: a genotype row needs its search space"):
        read_table(table)
    read = read_table(table, space="nb201")
    assert [r["genotype"] for r in read] == genotypes
    model = calibrate(base, read, "slow")
    pred = [model.predict_network(ks)["latency_ms"] for ks in kernels]
    assert accuracy(pred, truth)["median_ape"] < 0.05


# --- kernel-type predictors, intervals, sampled ranges, adaptive sampling -------------------------
def _irregular_ms(spec: KernelSpec) -> float:
    """The roofline law with untuned-code irregularities: slower when the width is not a multiple
    of 8, and a per-type constant."""
    from codesign.predict.features import kernel_type

    w = spec.output_shape()[-1]
    return _law_ms(spec) * (1.6 if w % 8 else 1.0) * (1 + 0.1 * len(kernel_type(spec)) % 3)


def test_kernel_type_model_intervals_cover_and_ranges_flag(tmp_path):
    import random

    from codesign.predict.adaptive import draw
    from codesign.predict.features import kernel_type

    rng, taken = random.Random(0), set()
    train, test = [], []
    for t in ("conv", "conv_depthwise", "add", "global_pool"):
        train += draw(t, 60, rng, [], taken)
        test += draw(t, 20, rng, [], taken)
    rows = [Measurement(kernel_key=s.key(), device="d", schedule="untuned", latency_ms=_irregular_ms(s)) for s in train]
    model = create_cost_model("kernel-type", seed=0, n_estimators=32).fit(rows)
    lo, hi = model.predict_interval(test, use_measured=False)
    pred = model.predict(test, use_measured=False)
    meas = np.array([_irregular_ms(s) for s in test])
    assert (lo <= pred).all() and (pred <= hi).all()
    assert np.mean((lo <= meas) & (meas <= hi)) >= 0.7  # a 90 % interval, on new kernels
    assert accuracy(pred, meas)["kendall_tau"] > 0.9
    # A measured kernel's interval is its measurement.
    mlo, mhi = model.predict_interval(train[:3])
    np.testing.assert_allclose(mlo, [_irregular_ms(s) for s in train[:3]])
    np.testing.assert_allclose(mhi, mlo)
    # Sampled ranges: a type never profiled, and channels beyond the sampled ones, are flagged.
    far = K("conv2d", (1, 4096, 2, 2), out_channels=64, kernel=3)
    flags = model.out_of_range([far, K("max_pool2d", (1, 8, 8, 8), kernel=3), test[0]])
    assert any("in_channels 4096 outside" in r for r in flags[0])
    assert flags[1] == ["no max_pool kernel was profiled"]
    res = model.predict_network([far, test[0]], use_measured=False)
    assert res["latency_interval_ms"][0] <= res["latency_ms"] <= res["latency_interval_ms"][1]
    assert [f["kernel"] for f in res["out_of_range"]] == [far.key()]
    # An activation never fitted for the type is flagged even inside the sampled shapes.
    seen = model.ranges["conv"]["activations"]
    inside = next(s for s in train if kernel_type(s) == "conv")
    other = sorted({"none", "relu", "relu6", "hardswish", "silu", "sigmoid", "gelu", "tanh"} - set(seen))[0]
    moved = KernelSpec.from_dict({**inside.to_dict(), "attrs": {**inside.to_dict()["attrs"], "activation": other}})
    assert model.out_of_range([inside]) == [[]]
    assert model.out_of_range([moved]) == [[f"activation {other!r} never sampled for conv (sampled: {', '.join(seen)})"]]
    assert "activations" not in model.ranges["global_pool"]  # no fused activation there
    meta = json.loads(model.save(tmp_path / "acts.json").read_text())
    for r in meta["ranges"].values():
        r.pop("activations", None)  # as written before the activations were kept
    (tmp_path / "acts.json").write_text(json.dumps(meta))
    assert load_cost_model(tmp_path / "acts.json").out_of_range([moved]) == [[]]


def test_kernel_type_models_fitted_before_the_power_of_two_features_still_predict(tmp_path, monkeypatch):
    """A model saved before ``in/out_channels_pow2`` were appended reads the first 25 features,
    as it was fitted; a new model uses them, and a power-of-two width it learned is told apart."""
    import random

    from codesign.predict import features
    from codesign.predict.adaptive import draw
    from codesign.predict.models import load_cost_model

    rng, taken = random.Random(1), set()
    train = draw("dense", 80, rng, [], taken)
    slow = lambda s: _law_ms(s) * (4.0 if s.attr("out_features") % 256 == 0 else 1.0)  # noqa: E731
    rows = [Measurement(kernel_key=s.key(), device="d", schedule="untuned", latency_ms=slow(s)) for s in train]
    probe = [K("dense", (1, 576), out_features=1024, weight_kn=True), K("dense", (1, 576), out_features=1000,
                                                                          weight_kn=True)]
    full = features.type_feature_matrix
    monkeypatch.setattr(features, "type_feature_matrix", lambda specs: full(specs)[:, :features.LEGACY_TYPE_FEATURES])
    legacy = create_cost_model("kernel-type", seed=0, n_estimators=16).fit(rows)
    want = legacy.predict(probe, use_measured=False)
    path = legacy.save(tmp_path / "legacy.json")
    meta = json.loads(path.read_text())
    for head in meta["heads"].values():
        del head["type_features"]  # as written before the key existed
    path.write_text(json.dumps(meta))
    monkeypatch.setattr(features, "type_feature_matrix", full)
    np.testing.assert_allclose(load_cost_model(path).predict(probe, use_measured=False), want)
    new = create_cost_model("kernel-type", seed=0, n_estimators=16).fit(rows)
    ratio = new.predict(probe, use_measured=False)
    assert ratio[0] / ratio[1] > 2.0  # 1024 outputs: the slow power-of-two row stride


def test_models_without_ranges_or_intervals(specs, tmp_path):
    model = create_cost_model("gbdt", n_estimators=20).fit(_records(specs))
    assert model.predict_interval(specs[:2]) is None
    path = model.save(tmp_path / "m.json")
    meta = json.loads(path.read_text())
    del meta["ranges"]  # an artifact written before sampled ranges existed
    path.write_text(json.dumps(meta))
    old = load_cost_model(path)
    assert old.out_of_range([K("conv2d", (1, 4096, 2, 2), out_channels=64, kernel=3)]) == [[]]
    assert old.predict_network(specs[:3])["latency_interval_ms"] is None


def _synthetic_profiler(db, law=_irregular_ms):
    def profile(specs):
        for s in specs:
            db.add(Measurement(kernel_key=s.key(), device="d", schedule="untuned", latency_ms=law(s)))

    def measured():
        return {m.kernel_key: m for m in db.query(device="d", schedule="untuned")}

    return profile, measured


def test_adaptive_sampling_spends_the_budget_where_errors_are_and_resumes(tmp_path):
    """The sampler with a deterministic latency law standing in for the profiler."""
    from codesign.predict.adaptive import adaptive_sample

    types = ["conv", "add"]
    calls = []
    with ProfileDB(tmp_path / "p.sqlite") as db:
        profile, measured = _synthetic_profiler(db)

        def counting(specs):
            calls.append(len(specs))
            profile(specs)

        excluded = {K("add", (1, 16, 8, 8)).key()}
        kw = dict(identity={"device": "d", "schedule": "untuned"}, types=types, seed=1, target_within_10pct=1.0,
                  exclude_keys=excluded, model_kwargs={"n_estimators": 16})
        model, rep = adaptive_sample(counting, measured, 60, tmp_path / "s.json", **kw)
        assert rep.profiled == 60 and len(db.query()) == 60 and rep.rounds >= 2
        assert rep.met is False  # a target of 100 % is not met on this law: the budget ends it
        assert not excluded & set(measured())
        state = json.loads((tmp_path / "s.json").read_text())
        assert all(state["validation"][t] for t in types) and set(rep.by_type) == set(types)
        # Rounds add kernels near the worst held-out ones: the train set grew after the first round.
        assert state["rounds"][-1]["sampled"] > state["rounds"][0]["sampled"]
        assert model.kind == "kernel-type" and model.n_train == 60
        # Resuming the finished run profiles nothing; a larger budget continues it.
        n = len(calls)
        adaptive_sample(counting, measured, 60, tmp_path / "s.json", **kw)
        assert len(calls) == n
        _, rep2 = adaptive_sample(counting, measured, 72, tmp_path / "s.json", **kw)
        assert rep2.profiled == 72 and len(db.query()) == 72
        # Another run's state is refused.
        with pytest.raises(CodesignError, match="belongs to another adaptive run"):
            adaptive_sample(counting, measured, 72, tmp_path / "s.json", **dict(kw, seed=2))
        with pytest.raises(CodesignError, match="too small"):
            adaptive_sample(counting, measured, 11, tmp_path / "t.json", **kw)


def test_adaptive_sampling_stops_at_the_target(tmp_path):
    from codesign.predict.adaptive import adaptive_sample

    with ProfileDB(tmp_path / "p.sqlite") as db:
        profile, measured = _synthetic_profiler(db, law=lambda s: 0.5)  # constant: learnt at once
        _, rep = adaptive_sample(profile, measured, 200, tmp_path / "s.json", identity={"device": "d"},
                                 types=["add", "mul"], target_within_10pct=0.9, model_kwargs={"n_estimators": 8})
    assert rep.met and rep.rounds == 1 and rep.profiled < 200


def test_prior_and_neighbours_keep_the_kernel_type():
    import random

    from codesign.kernelspec import kernel_flops
    from codesign.predict.adaptive import MAX_FLOPS, SAMPLE_TYPES, around, draw
    from codesign.predict.features import kernel_type

    rng, taken = random.Random(3), set()
    for t in SAMPLE_TYPES:
        got = draw(t, 10, rng, [], taken)
        assert len(got) == 10 and all(kernel_type(s) == t and kernel_flops(s) <= MAX_FLOPS for s in got)
        near = around(got[:2], 3, rng, taken)
        assert near and all(kernel_type(s) == t for s in near)
    assert len(taken) == len(set(taken))


def test_shipped_real_network_kernels_read_and_draws_land_around_them(tmp_path):
    import random

    from codesign.kernelspec import kernel_flops
    from codesign.predict.adaptive import MAX_FLOPS, SAMPLE_TYPES, draw, real_network_kernels
    from codesign.predict.features import kernel_type

    real = real_network_kernels()
    types = {kernel_type(s) for s in real}
    assert len(real) > 1000 and types <= set(SAMPLE_TYPES) and {"conv", "conv_pointwise", "conv_depthwise"} <= types
    assert all(kernel_flops(s) <= MAX_FLOPS for s in real)
    # With every draw around a real kernel, a depthwise draw keeps a real kernel's window and
    # stride and has channels within the perturbation's ±25 % (and rounding) of one of them.
    one = [s for s in real if kernel_type(s) == "conv_depthwise" and s.input_shape[1] >= 64][:1]
    got = draw("conv_depthwise", 20, random.Random(0), [], set(), real=one, real_share=1.0)
    c = one[0].input_shape[1]
    assert len(got) == 20 and all(s.kernel_hw() == one[0].kernel_hw() and s.attr("stride") == one[0].attr("stride")
                                  and 0.7 * c <= s.input_shape[1] <= 1.4 * c for s in got)
    # Without real kernels (or a share of 0) the draws are those of the prior alone, as before.
    plain = draw("conv", 15, random.Random(4), [], set())
    assert draw("conv", 15, random.Random(4), [], set(), real=real, real_share=0.0) == plain
    assert draw("conv", 15, random.Random(4), [], set(), real=(), real_share=1.0) == plain
    # A damaged or foreign file is refused in one line.
    for text in ("{", json.dumps({"format_version": 99, "kernels": []}), json.dumps({"format_version": 1}),
                 json.dumps({"format_version": 1, "kernels": ["not a key"]})):
        (tmp_path / "r.json").write_text(text)
        with pytest.raises(CodesignError, match="is not a real-network kernel set") as exc:
            real_network_kernels(tmp_path / "r.json")
        assert "\n" not in str(exc.value)


def test_adaptive_sampling_draws_its_first_kernels_around_real_networks_too(tmp_path):
    from codesign.predict.adaptive import adaptive_sample

    real = [K("conv2d", (1, 96, 14, 14), out_channels=96, kernel=5, groups=96, stride=1, padding=2)]
    with ProfileDB(tmp_path / "p.sqlite") as db:
        profile, measured = _synthetic_profiler(db)
        kw = dict(identity={"device": "d"}, types=["conv_depthwise"], target_within_10pct=1.0,
                  model_kwargs={"n_estimators": 8})
        adaptive_sample(profile, measured, 40, tmp_path / "s.json", real=real, real_share=1.0, **kw)
        state = json.loads((tmp_path / "s.json").read_text())
        first = [KernelSpec.from_key(k) for k in state["validation"]["conv_depthwise"]]
        assert state["real_kernels"] == 1 and state["real_share"] == 1.0
        assert all(s.kernel_hw() == (5, 5) for s in first)  # the prior draws 3x3 and 7x7 too
        # The real kernels only shape a new run's first draws: a run resumes without them.
        adaptive_sample(profile, measured, 44, tmp_path / "s.json", **kw)
        with pytest.raises(CodesignError, match="share of draws around real networks"):
            adaptive_sample(profile, measured, 44, tmp_path / "t.json", real=real, real_share=1.5, **kw)


@pytest.mark.slow
def test_fit_adaptive_command(tmp_path):
    """`codesign fit --adaptive` profiles with TVM for real (cheap kernel types only)."""
    import subprocess
    import sys

    db = tmp_path / "p.sqlite"
    cmd = [sys.executable, "-m", "codesign.cli", "fit", "--adaptive", "--budget-kernels", "12", "--kernel-types",
           "add,global_pool", "--repeats", "2", "--min-repeat-ms", "1", "--db", str(db), "--out",
           str(tmp_path / "m.json"), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["kind"] == "kernel-type" and rep["adaptive"]["profiled"] == 12
    assert set(rep["adaptive"]["by_type"]) <= {"add", "global_pool"}
    assert "round 0" in out.stderr
    # Progress reaches a log too (stderr is a pipe here): plain lines, not a bar's redraws.
    assert "profile cpu-local [untuned]: " in out.stderr and "\r" not in out.stderr
    with ProfileDB(db) as pdb:  # the device's own policy (tuned); untuned rows price the tuning trials
        assert len(pdb.query(schedule="tuned", ok_only=True)) == 12
    quiet = [c if c != str(db) else str(tmp_path / "q.sqlite") for c in cmd] + ["--no-progress"]
    q = subprocess.run(quiet, capture_output=True, text=True, timeout=900)
    assert q.returncode == 0 and "round 0" in q.stderr and "profile cpu-local" not in q.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)  # resumes: nothing new
    assert again.returncode == 0 and "profiling" not in again.stderr
    bad = subprocess.run(cmd[:5] + ["--db", str(db)], capture_output=True, text=True, timeout=300)  # no budget
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--budget-kernels" in bad.stderr
    bad = subprocess.run(cmd[:-1] + ["--kernel-types", "nope"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown kernel type" in bad.stderr


# --- benchmarks/predictor.py's bookkeeping (no timing) --------------------------------------------

def test_predictor_benchmark_reports_how_well_the_host_repeats_itself(tmp_path):
    bench = load_benchmark("predictor")
    rep = bench.pass_agreement({"a": [1.0, 1.04], "b": [2.0, 1.8], "c": [3.0, 3.9], "d": [5.0], "e": [4.0, 1.5]})
    assert rep["items"] == 4  # "d" has one pass
    assert rep["within_5pct"] == 0.25 and rep["within_10pct"] == 0.5
    assert rep["median_change"] == pytest.approx(0.2)
    assert rep["kendall_tau"] == pytest.approx(1 / 3)  # "e" falls below "b" and "c" in the second pass
    assert bench.pass_agreement({"a": [1.0]})["items"] == 0
    # Caches are replaced whole: no reader sees half a file, and no temporary file is left behind.
    cache = tmp_path / "measured.json"
    assert bench.cached(cache, "k", lambda: {"latency_ms": 1.5}) == {"latency_ms": 1.5}
    assert bench.cached(cache, "k", lambda: pytest.fail("cached value timed again")) == {"latency_ms": 1.5}
    assert json.loads(cache.read_text()) == {"k": {"latency_ms": 1.5}}
    assert [p.name for p in tmp_path.iterdir()] == ["measured.json"]


def test_predictor_benchmark_keeps_tuned_caches_apart_from_untuned_ones(tmp_path, monkeypatch):
    bench = load_benchmark("predictor")
    untuned = {"repeats": 10, "min_repeat_ms": 50.0, "statistic": "median", "schedule": "untuned"}
    # The untuned names are those of the runs before the policy was a setting: their caches still apply.
    assert bench.timing_tag(untuned) == "median-r10-m50" == bench.timing_tag({k: v for k, v in untuned.items()
                                                                               if k != "schedule"})
    tuned = dict(untuned, schedule="tuned")
    assert bench.timing_tag(tuned) == "median-r10-m50-tuned"
    assert bench.adaptive_state_path(tmp_path, untuned).name == "adaptive-state.json"
    # Tuned samples get the same trials each: apart from the runs that shared trials by cost.
    assert bench.adaptive_state_path(tmp_path, tuned).name == "adaptive-state-tuned-flat.json"
    assert bench.adaptive_db_path(tmp_path, untuned).name == "adaptive-median-r10-m50.sqlite"
    assert bench.adaptive_db_path(tmp_path, tuned).name == "adaptive-median-r10-m50-tuned-flat.sqlite"
    # A profiling call passes the policy once, as `schedule`, and the trial split.
    seen = {}
    monkeypatch.setattr(bench, "profile_kernels", lambda specs, device, db, **kw: seen.update(kw))
    bench.time_kernels([], None, None, tuned, trial_split="flat")
    assert seen["schedule"] == "tuned" and seen["repeats"] == 10 and "progress" in seen
    assert seen["trial_split"] == "flat"


def test_predictor_benchmark_tells_the_tuners_luck_from_a_retest(tmp_path):
    """tuning_luck: seed 0 tuned again is compared but is no other draw; the ceiling is the judged
    measurement against the geometric mean of the other seeds; --judge-seed N leaves N's file out."""
    bench = load_benchmark("predictor")
    rows = [{"name": n, "measured_ms": m} for n, m in (("a", 1.0), ("b", 2.0), ("c", 4.0))]
    for seed, vals in ((0, (1.02, 2.0, 4.0)), (1, (1.21, 2.42, 3.9)), (2, (0.81, 1.62, 4.1))):
        (tmp_path / bench.seed_cache(seed)).write_text(json.dumps(
            {f"tvm0:median-r10-m50-tuned:{n}": {"latency_ms": v} for n, v in zip("abc", vals)} |
            {"tvm0:median-r10-m50-tuned:d": {"error": "no import"}} |
            {f"tvm0:median-r10-m50-metaschedule32:{n}": {"latency_ms": 9.0} for n in "abc"}))  # another policy
    tag = "median-r10-m50-tuned"
    assert bench.tuning_luck(tmp_path / "none", rows, [1, 2, 4], None, tag) is None
    luck = bench.tuning_luck(tmp_path, rows, [1.0, 2.0, 4.0], None, tag)
    assert luck["judged_seed"] == 0 and luck["seeds"] == [0, 1, 2] and luck["networks"] == 3
    assert luck["seed_pairs"]["judged (seed 0) vs seed 0 again"]["within_5pct"] == 1.0
    assert luck["seed_pairs"]["seed 1 vs seed 2"]["within_10pct"] == pytest.approx(1 / 3)
    # a and b: 1.21 * 0.81 = 0.98 (geometric mean 0.99 of 1.0), c: the mean of 3.9 and 4.1
    assert luck["measured_near_seed_mean"]["within_5pct"] == 1.0
    assert luck["max_over_min_median"] == pytest.approx(1.21 / 0.81)
    judged1 = bench.tuning_luck(tmp_path, [dict(r, measured_ms=v) for r, v in zip(rows, (1.21, 2.42, 3.9))],
                                [1.0, 2.0, 4.0], 1, tag)
    assert judged1["seeds"] == [0, 2] and "judged (seed 1) vs seed 0" in judged1["seed_pairs"]
    assert judged1["predicted_against_judged"]["within_10pct"] == pytest.approx(1 / 3)
    # The seeds against each other (--stage tuning-luck), per policy.
    assert bench.seed_runs(tmp_path, "median-r10-m50-metaschedule32") == {n: {0: 9.0, 1: 9.0, 2: 9.0} for n in "abc"}
    agree = bench.seed_agreement(bench.seed_runs(tmp_path, tag))
    assert agree["networks"] == 3 and agree["seed_pairs"]["seed 1 vs seed 2"]["within_10pct"] == pytest.approx(1 / 3)
    assert "seed_pairs" not in bench.seed_agreement({"a": {1: 1.0}})
    # A measuring process's cache is named after its torchvision networks, within the file-name limit.
    assert bench.tv_subset_cache(["resnet18", "googlenet"]) == "measured-torchvision-resnet18-googlenet.json"
    many = bench.tv_subset_cache(list(bench.TORCHVISION_NETS)[::-1])
    assert len(many) < 100 and many != bench.tv_subset_cache(list(bench.TORCHVISION_NETS)[1:])


def test_predictor_benchmark_keeps_timm_networks_by_kernel_type_and_flops(tmp_path, monkeypatch):
    from codesign.graph import onnx_kernels
    from codesign.kernelspec import kernel_flops

    bench = load_benchmark("predictor")
    paths, _ = _onnx_files(tmp_path, count=2)
    (tmp_path / "bad_64.onnx").write_bytes(b"not onnx")
    models = {f"n{i}_64": {"model": f"n{i}", "size": 64, "file": p.name} for i, p in enumerate(paths)}
    models["bad_64"] = {"model": "bad", "size": 64, "file": "bad_64.onnx"}
    models["n0_224"] = {"model": "n0", "size": 224, "file": paths[0].name}  # another size: not considered
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "models": models}))
    monkeypatch.setenv("CODESIGN_TIMM_ONNX", str(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    flops = [sum(kernel_flops(k) for k in onnx_kernels(p)) for p in paths]
    every = {"conv", "conv_depthwise", "max_pool", "global_pool", "dense"}
    kept, left = bench.timm_networks(work, every, max(flops))
    assert [n for n, _ in kept] == ["timm_n0_64", "timm_n1_64"] and list(left) == ["timm_bad_64"]
    assert left["timm_bad_64"].startswith("not read")
    kept, left = bench.timm_networks(work, every, (flops[0] + flops[1]) / 2)
    assert [n for n, _ in kept] == ["timm_n0_64"] and "GFLOPs, above" in left["timm_n1_64"]
    kept, left = bench.timm_networks(work, every - {"dense"}, max(flops))
    assert not kept and left["timm_n0_64"] == "kernel types not sampled: dense"


def test_composition_benchmark_profiles_measures_and_scores_a_saved_model(specs, tmp_path):
    import subprocess
    import sys

    bench = load_benchmark("composition")
    s = bench.scores([1.05, 2.5, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["within_10pct"] == 0.5 and s["within_25pct"] == 0.75
    assert s["median_abs_error"] == pytest.approx(0.15)
    assert s["kendall_tau"] == pytest.approx(1 / 3)  # the last network is ranked below two it is above

    paths, _ = _onnx_files(tmp_path, count=3)
    model = _saved_model(specs, tmp_path)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "composition.py"
    out = tmp_path / "out.json"

    def run(*extra):
        return subprocess.run([sys.executable, str(script), *map(str, paths), "--db", str(tmp_path / "c.sqlite"),
                               "--repeats", "2", "--min-repeat-ms", "1", *map(str, extra)],
                              capture_output=True, text=True, timeout=600)

    bad = run("--model", tmp_path / "nope.json")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope.json" in bad.stderr
    assert not (tmp_path / "c.sqlite").exists()  # refused before any work
    done = run("--model", model, "--out", out)
    assert done.returncode == 0, done.stderr
    res = json.loads(out.read_text())
    assert res["summary"]["networks"] == 3 and res["summary"]["failed"] == 0
    for row in res["rows"]:
        assert row["unprofiled_kernels"] == 0 and row["kernel_sum_ms"] > 0 and row["measured_ms"] > 0
        assert row["sum_over_measured"] == pytest.approx(row["kernel_sum_ms"] / row["measured_ms"])
        assert row["predicted_ms"] > 0 and row["flops"] > 0
    npf = res["never_profiled"]
    assert npf["networks"] == 3 and npf["predict_failed"] == 0
    assert npf["model_scores"]["n"] == 3 and npf["flops_proxy_scores"]["n"] == 3
