"""Cost models, features, evaluation, calibration and the fit/predict/calibrate commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

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


def test_table_errors(tmp_path):
    t = tmp_path / "t.csv"
    t.write_text("name,ms\nx,1\n")
    with pytest.raises(CodesignError, match="needs a latency_ms column and a model or kernel_key column"):
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
    assert "fitted loglinear on" in out.stdout and "held-out kernels (3-fold)" in out.stdout
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
