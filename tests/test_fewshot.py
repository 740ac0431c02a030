"""Few-shot transfer: reference set, table checks, the meta-learned prior, the bank, the CLI."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from benchmark_module import load_benchmark
from scipy.stats import kendalltau

from codesign.errors import CodesignError
from codesign.kernelspec import KernelSpec
from codesign.predict import fewshot as fs

K = len(fs.design_names())


@pytest.fixture
def run_cli(capsys, monkeypatch, tmp_path):
    """``codesign ARGS`` in-process (run in tmp_path): returncode, stdout, stderr."""
    from types import SimpleNamespace

    from codesign.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*argv):
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def _net(width: int, depth: int) -> list[KernelSpec]:
    """A small chain of pointwise convs: distinct (width, depth) give distinct networks."""
    return [KernelSpec.make("conv2d", (1, width, 8, 8), out_channels=width, kernel=1) for _ in range(depth)]


def _reference(nets):
    return [{"genotype": f"g{i}", "signature": fs.network_signature(n)} for i, n in enumerate(nets)]


def test_reference_set_is_fixed_distinct_and_valid():
    space = fs.create_reference_space()
    a = fs.reference_genotypes(space)
    assert a == fs.reference_genotypes(space)
    assert len(a) == fs.REFERENCE_SIZE == len(set(a))
    for g in a:
        space.parse(g)  # every one is a network of the space
    assert fs.random_genotypes(space, 5, seed=1, exclude=set(a)) != a[:5]
    assert not set(fs.random_genotypes(space, 30, seed=1, exclude=set(a))) & set(a)


def test_network_signature_depends_on_kernels_and_order():
    a, b = _net(8, 2) + _net(16, 1), _net(16, 1) + _net(8, 2)
    assert fs.network_signature(a) == fs.network_signature(list(a))
    assert fs.network_signature(a) != fs.network_signature(b)


def test_check_rows_refuses_bad_tables_with_one_line():
    nets = [_net(8 * (i + 1), 2) for i in range(8)]
    ref = _reference(nets)
    rows = [{"latency_ms": 1.0 + i} for i in range(6)]
    fs.check_rows(rows, nets[:6], ref)  # the first six in order: accepted
    with pytest.raises(CodesignError, match=r"needs at least 5 measured reference networks; the table has 4"):
        fs.check_rows(rows[:4], nets[:4], ref)
    with pytest.raises(CodesignError, match=r"rows 2 and 5 of the table are the same network"):
        fs.check_rows(rows[:5], [nets[0], nets[1], nets[2], nets[3], nets[1]], ref)
    with pytest.raises(CodesignError, match=r"row 1 of the table is reference network 2, expected 1"):
        fs.check_rows(rows[:5], [nets[1], nets[0], nets[2], nets[3], nets[4]], ref)
    with pytest.raises(CodesignError, match=r"row 5 of the table is reference network 6, expected 5"):
        fs.check_rows(rows[:5], nets[:4] + [nets[5]], ref)  # one skipped
    with pytest.raises(CodesignError, match=r"row 3 of the table is not a network of the reference set"):
        fs.check_rows(rows[:5], nets[:2] + [_net(3, 3)] + nets[3:5], ref)
    assert fs.check_rows(rows, nets[:6], ref) is False
    # none of them a reference network: the user's own networks, as many as they have
    own = [_net(3 + i, 1) for i in range(10)]
    assert fs.check_rows([{"latency_ms": 1.0 + i} for i in range(10)], own, ref) is True
    with pytest.raises(CodesignError, match=r"rows 1 and 3 of the table are the same network"):
        fs.check_rows(rows[:5], [own[0], own[1], own[0], own[2], own[3]], ref)


def test_network_features_count_and_sum():
    a = fs.network_features(_net(8, 2))
    b = fs.network_features(_net(8, 4))
    names = list(fs.FEATURE_NAMES)
    assert a.shape == (len(names),)
    assert np.isclose(np.expm1(b[names.index("log_kernels")]), 4)
    assert np.isclose(np.expm1(b[names.index("log_flops")]), 2 * np.expm1(a[names.index("log_flops")]))
    with pytest.raises(CodesignError, match="without kernels"):
        fs.network_features([])


def _synthetic_sources(rng, devices=12, nets=60, dims=K):
    """Devices whose log latency is linear in the features with weights around a common mean."""
    x = rng.normal(size=(nets, dims))
    mean_w = rng.normal(size=dims) * 0.3
    out = {}
    for d in range(devices):
        w = mean_w + rng.normal(size=dims) * 0.05
        out[f"dev{d}"] = (x, np.exp(x @ w + rng.normal() + rng.normal(size=nets) * 0.01), 20)
    return out, x, mean_w


def test_posterior_is_least_squares_when_the_prior_is_flat():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 4))
    y = 0.5 + z @ np.array([1.0, -2.0, 0.3, 0.0])
    prior = {"mean": np.zeros(5), "cov": 1e8 * np.eye(5)}
    assert np.allclose(fs.posterior_weights(prior, z, y, noise=1.0), [0.5, 1.0, -2.0, 0.3, 0.0], atol=1e-5)
    # A tight prior keeps the prior mean whatever the rows say.
    tight = {"mean": np.arange(5.0), "cov": 1e-10 * np.eye(5)}
    assert np.allclose(fs.posterior_weights(tight, z, y, noise=1.0), np.arange(5.0), atol=1e-4)


def test_meta_trained_prior_adapts_to_a_new_device_from_few_rows():
    rng = np.random.default_rng(1)
    sources, x, mean_w = _synthetic_sources(rng)
    ref = [{"genotype": f"g{i}", "signature": f"s{i}"} for i in range(20)]
    prior = fs.meta_train(sources, ref)
    assert prior.noise in fs.NOISE_GRID and sorted(prior.sources) == sorted(sources)
    w_new = mean_w + rng.normal(size=K) * 0.05
    y_new = np.exp(x @ w_new + 3.0)
    design = np.hstack([np.ones((len(x), 1)), prior.z(x)])

    def tau(w):
        return kendalltau((design @ w)[20:], np.log(y_new[20:]))[0]

    taus = [tau(prior.adapt(x[:n], y_new[:n], select=False)) for n in (5, 10, 20)]  # the meta-trained values
    scratch = fs._ridge_weights(prior.z(x)[:10], np.log(y_new[:10]), 1.0)  # no prior: ridge on 10 rows
    assert taus[1] > max(tau(prior.weights.mean(axis=0)), tau(scratch)) and taus[2] > taus[0] > 0.8
    with pytest.raises(CodesignError, match="at least 3 source devices"):
        fs.meta_train(dict(list(sources.items())[:2]), ref)


def test_a_device_unlike_the_sources_chooses_its_own_adaptation():
    """A new device far from every source: a prior meta-trained as tight as the grid allows keeps
    it near the sources; choosing shrinkage, temperature and noise on its own rows (leave one row
    out) loosens the prior and ranks its other networks better. Below MIN_SELECT_ROWS rows the
    meta-trained values stay."""
    rng = np.random.default_rng(3)
    sources, x, mean_w = _synthetic_sources(rng, nets=80)
    prior = fs.meta_train(sources, [{"genotype": f"g{i}", "signature": f"s{i}"} for i in range(20)])
    prior.shrink, prior.temperature, prior.noise = 0.003, 0.003, 1.0  # the tightest prior on offer
    w_new = mean_w + rng.normal(size=K) * 0.6
    y_new = np.exp(x @ w_new + 1.0 + rng.normal(size=len(x)) * 0.01)
    design = np.hstack([np.ones((len(x), 1)), prior.z(x)])

    def tau(w):
        return kendalltau((design @ w)[12:], np.log(y_new[12:]))[0]

    fixed = tau(prior.adapt(x[:12], y_new[:12], select=False))
    assert prior.chosen == {"shrink": 0.003, "temperature": 0.003, "noise": 1.0}
    chosen = tau(prior.adapt(x[:12], y_new[:12]))
    assert (prior.chosen["shrink"], prior.chosen["temperature"], prior.chosen["noise"]) in fs.ADAPT_GRID
    assert prior.chosen != {"shrink": 0.003, "temperature": 0.003, "noise": 1.0}
    assert chosen > fixed + 0.05, (chosen, fixed)
    prior.adapt(x[:fs.MIN_SELECT_ROWS - 1], y_new[:fs.MIN_SELECT_ROWS - 1])
    assert prior.chosen == {"shrink": 0.003, "temperature": 0.003, "noise": 1.0}


def test_devices_of_a_saved_prior_join_another_prior_as_sources():
    """A source known only by its fitted weights (from another prior, with its own feature
    standardisation) keeps its linear function in the new prior, joins the pool a new device's
    local prior is drawn from, and cannot share a name with a measured source."""
    rng = np.random.default_rng(4)
    sources, x, mean_w = _synthetic_sources(rng, devices=4)
    ref = [{"genotype": f"g{i}", "signature": f"s{i}"} for i in range(20)]
    old = fs.meta_train(sources, ref)
    shifted = {k: (v[0] * 1.5 + 0.2, v[1], v[2]) for k, v in list(sources.items())[:3]}  # other features' scale
    extra = {f"old-{k}": v for k, v in fs.prior_source_weights(old, ["dev0", "dev1"]).items()}
    new = fs.meta_train(shifted, ref, extra=extra)
    assert sorted(new.sources) == sorted(list(shifted) + ["old-dev0", "old-dev1"])
    for name in ("dev0", "dev1"):  # the same predictions on raw features, whatever the standardisation
        w_old = old.weights[old.sources.index(name)]
        w_new = new.weights[new.sources.index(f"old-{name}")]
        np.testing.assert_allclose(np.hstack([np.ones((len(x), 1)), new.z(x)]) @ w_new,
                                   np.hstack([np.ones((len(x), 1)), old.z(x)]) @ w_old, rtol=1e-9)
    # A device like dev0 is told apart from the shifted sources only through the extra one.
    w_like = old.weights[old.sources.index("dev0")]
    y = np.exp(np.hstack([np.ones((len(x), 1)), old.z(x)]) @ w_like)
    def tau(prior):
        post = prior.adapt(x[:10], y[:10], select=False)
        return kendalltau(np.hstack([np.ones((len(x), 1)), prior.z(x)])[10:] @ post, np.log(y[10:]))[0]

    assert tau(new) > 0.93 > tau(fs.meta_train(shifted, ref))  # 0.97 against 0.88 without the extra sources
    with pytest.raises(CodesignError, match="both measured here and given as a fitted model"):
        fs.meta_train(sources, ref, extra={"dev0": extra["old-dev0"]})


def test_prior_round_trip_and_refusals(tmp_path):
    rng = np.random.default_rng(2)
    sources, x, _ = _synthetic_sources(rng, devices=4)
    prior = fs.meta_train(sources, [{"genotype": "g", "signature": "s"}])
    path = prior.save(tmp_path / "prior.json")
    back = fs.Prior.load(path)
    assert np.allclose(back.adapt(x[:10], sources["dev0"][1][:10]), prior.adapt(x[:10], sources["dev0"][1][:10]))
    d = json.loads(path.read_text())
    for change, message in [({"format_version": 99}, "newer than this codesign reads"),
                            ({"kind": "other"}, "not a few-shot prior"),
                            ({"features": ["x"]}, "other features or basis accelerators"),
                            ({"noise": -1.0}, "damaged"),
                            ({"weights": [[1.0, 2.0]]}, "damaged"),
                            ({"temperature": 0.0}, "damaged")]:
        (tmp_path / "bad.json").write_text(json.dumps({**d, **change}))
        with pytest.raises(CodesignError, match=message):
            fs.Prior.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(CodesignError, match="not a few-shot prior"):
        fs.Prior.load(tmp_path / "junk.json")
    with pytest.raises(CodesignError, match="no few-shot prior"):
        fs.Prior.load(tmp_path / "missing.json")


def test_bank_is_versioned_resumable_and_refuses_foreign_files(tmp_path):
    path = tmp_path / "bank.sqlite"
    with fs.Bank(path) as bank:
        bank.add_networks(["a", "b"], "reference")
        bank.add_networks(["c", "a"], "pool")  # a is already a reference network
        bank.add("a", "dev", 1.5, 0.1, {"threads": 1})
        bank.add("a", "dev", 1.25, 0.1, {"threads": 1})  # a rerun replaces
        with pytest.raises(CodesignError, match="finite positive"):
            bank.add("b", "dev", 0.0, 0.0, {})
        bank.set_kernels("a", _net(8, 2))
    with fs.Bank(path, create=False) as bank:
        assert bank.networks("reference") == ["a", "b"] and bank.networks("pool") == ["c"]
        assert bank.latencies("dev") == {"a": 1.25} and bank.settings("dev") == {"threads": 1}
        assert bank.kernels()["a"] == _net(8, 2)
    with pytest.raises(CodesignError, match="no latency bank"):
        fs.Bank(tmp_path / "none.sqlite", create=False)
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(str(foreign)).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    with pytest.raises(CodesignError, match="not a codesign latency bank"):
        fs.Bank(foreign, create=False)
    con = sqlite3.connect(str(path))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(CodesignError, match="schema '99'"):
        fs.Bank(path, create=False)
    (tmp_path / "text.sqlite").write_text("hello, not a database at all" * 10)
    with pytest.raises(CodesignError, match="not a codesign latency bank"):
        fs.Bank(tmp_path / "text.sqlite", create=False)


def test_fewshot_model_round_trip_and_kernel_shares(tmp_path):
    from codesign.predict.models import load_cost_model

    nets = [_net(8 * (i % 4 + 1), 1 + i // 4) for i in range(12)]
    x = fs.design_matrix(nets)
    lat = np.exp(0.8 * x[:, fs.FEATURE_NAMES.index("log_flops")] - 9.0)
    rng = np.random.default_rng(3)
    sources = {f"d{i}": (x, lat * np.exp(rng.normal(size=len(lat)) * 0.05), 6) for i in range(4)}
    prior = fs.meta_train(sources, _reference(nets[:6]), shots=(5,))
    model = fs.calibrate_meta(prior, nets[:6], lat[:6], "phone", [f"g{i}" for i in range(6)])
    path = model.save(tmp_path / "phone.json")
    back = load_cost_model(path)
    assert back.kind == "fewshot" and back.device == "phone"
    # 6 rows: fewer than MIN_SELECT_ROWS, so the prior's own settings, recorded in the model
    assert back.adaptation == {"shrink": prior.shrink, "noise": prior.noise, "chosen_on_rows": False,
                               "temperature": prior.temperature if np.isfinite(prior.temperature) else "inf"}
    for net in nets:
        total = back.predict_network(net)["latency_ms"]
        assert np.isclose(total, model.predict_network(net)["latency_ms"])
        assert np.isclose(sum(back.predict_network(net)["per_kernel_latency_ms"]), total)
        assert np.allclose(back.predict(net[:1] + net), np.concatenate([back.predict(net[:1]), back.predict(net)]))
    with pytest.raises(CodesignError, match="not fitted"):
        back.fit([])
    d = json.loads(path.read_text())
    d["heads"]["latency_ms"]["share_basis"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(CodesignError, match="share_basis"):
        load_cost_model(tmp_path / "bad.json")


def test_layers_a_basis_config_cannot_fit_are_costed_from_one_it_fits():
    """A 16x16 global pool (EfficientNet at 32x32 px) or ViT's 16x16 patch embedding needs more
    register file than the smallest row-stationary basis config has: it is costed there from the
    next row-stationary config, scaled by the two configs' ratio on fixed probe layers, whatever
    it is costed with; transformer and SiLU layers map."""
    from codesign.hw_models import evaluate_grid, mapper

    cfgs = fs.basis_configs()
    pool = KernelSpec.make("global_avg_pool2d", (1, 32, 16, 16))
    patch = KernelSpec.make("conv2d", (1, 3, 32, 32), out_channels=64, kernel=16, stride=16, padding=0)
    raw = evaluate_grid([pool, patch], cfgs)[:, :, mapper.R["latency_ms"]]
    unfit = [j for j in range(len(cfgs)) if not np.isfinite(raw[0, j])]
    assert unfit and all(cfgs[j].dataflow == "rs" for j in unfit)
    got = fs.mapped_ms([pool, patch], cfgs)
    assert np.isfinite(got).all() and (got > 0).all()
    ratio = fs._probe_ratios(cfgs)
    for j in unfit:
        k = next(k for k in range(len(cfgs)) if cfgs[k].dataflow == "rs" and np.isfinite(raw[0, k]))
        assert got[0, j] == pytest.approx(raw[0, k] * ratio[j, k])
    assert np.allclose(fs.mapped_ms([pool], cfgs), got[:1]) and np.allclose(got[np.isfinite(raw)], raw[np.isfinite(raw)])
    vit = [patch, KernelSpec.make("layer_norm", (4, 64)), KernelSpec.make("batch_matmul", (4, 4, 16), n=4),
           KernelSpec.make("softmax", (16, 4)), KernelSpec.make("dense", (4, 64), out_features=256, activation="gelu"),
           KernelSpec.make("silu", (1, 32, 16, 16)), pool]
    assert np.isfinite(fs.design_matrix([vit])).all()


def _table(tmp_path, latencies, name="t.csv"):
    """A table naming the reference networks' files (not written: these tables fail before)."""
    path = tmp_path / name
    path.write_text("model,latency_ms\n" + "".join(f"ref-{i + 1:02d}.onnx,{v}\n" for i, v in enumerate(latencies)))
    return path


def test_cli_refuses_bad_tables_in_one_line(tmp_path, run_cli):
    few = _table(tmp_path, [1.0, 2.0, 3.0])
    r = run_cli("calibrate", "--table", str(few), "--as", "phone")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "needs at least 5 measured reference networks; the table has 3" in r.stderr
    zero = _table(tmp_path, [1.0, 2.0, 0.0, 1.0, 1.0], "zero.csv")
    r = run_cli("calibrate", "--table", str(zero), "--as", "phone")
    assert r.returncode == 2 and "latency_ms must be a finite positive number" in r.stderr
    neg = _table(tmp_path, [1.0, 2.0, 3.0, 1.0, -1.0], "neg.csv")
    r = run_cli("calibrate", "--table", str(neg), "--as", "phone")
    assert r.returncode == 2 and "latency_ms must be a finite positive number" in r.stderr
    ok = _table(tmp_path, [1.0, 2.0, 3.0, 4.0, 5.0], "ok.csv")
    r = run_cli("calibrate", "--table", str(ok), "--as", "phone", "--from", "cpu-local", "--method", "meta")
    assert r.returncode == 2 and "--from is the base of --method scale" in r.stderr
    r = run_cli("calibrate", "--table", str(ok), "--as", "phone", "--from", str(tmp_path / "none.json"))
    assert r.returncode == 2 and "no cost model" in r.stderr  # --from alone still means the scale method
    r = run_cli("calibrate", "--table", str(ok))
    assert r.returncode == 2 and "needs --table CSV and --as NEW_DEVICE" in r.stderr
    r = run_cli("calibrate", "--table", str(ok), "--as", "phone", "--method", "scale")
    assert r.returncode == 2 and "--method scale needs --from" in r.stderr
    kern = tmp_path / "k.csv"
    kern.write_text("kernel_key,latency_ms\n" + "".join(f'"{s.key()}",1.0\n' for s in _net(8, 1) * 5))
    r = run_cli("calibrate", "--table", str(kern), "--as", "phone")
    assert r.returncode == 2 and "needs whole networks" in r.stderr
    assert not (tmp_path / "phone.json").exists()


def test_the_shipped_prior_knows_the_reference_networks_as_they_read_now():
    """`calibrate --reference-set` refuses a prior whose reference signatures are not the kernels
    the reference networks read into today: any change to how a network is read (a kernel
    attribute, a fusion rule) must ship the prior's signatures again, or calibration stops working."""
    prior = fs.Prior.load(fs.PRIOR_PATH)
    assert prior.reference == fs.reference_entries(n=len(prior.reference))


@pytest.mark.slow
def test_cli_reference_set_then_calibrate_on_a_modelled_device(tmp_path, run_cli):
    """End to end: write the reference set, time it on an accelerator the mapper models, calibrate,
    and rank other networks better than the reference rows' FLOPs do."""
    from codesign.hw_models import get_accelerator

    from codesign.graph import module_kernels

    r = run_cli("calibrate", "--reference-set", str(tmp_path / "ref"))
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "ref" / "table.csv").read_text().splitlines()
    assert lines[0] == "model,genotype,latency_ms" and len(lines) == fs.REFERENCE_SIZE + 1
    manifest = json.loads((tmp_path / "ref" / "reference.json").read_text())
    assert manifest["format_version"] == fs.REFERENCE_FORMAT_VERSION
    accel = get_accelerator("os-8x8")
    space = fs.create_reference_space()
    kernels = {g: module_kernels(space.build(g), tuple(space.input_shape))
               for g in [e["genotype"] for e in manifest["networks"]][:10]}
    lat = fs.accel_latencies_ms(list(kernels.values()), [accel])[:, 0]
    table = tmp_path / "ref" / "measured.csv"
    table.write_text("model,latency_ms\n" + "".join(
        f"{e['model']},{v}\n" for e, v in zip(manifest["networks"], lat)))
    swapped = tmp_path / "ref" / "swapped.csv"
    rows = table.read_text().splitlines()
    swapped.write_text("\n".join([rows[0], rows[2], rows[1]] + rows[3:]) + "\n")
    r = run_cli("calibrate", "--table", str(swapped), "--as", "os8")
    assert r.returncode == 2 and "row 1 of the table is reference network 2, expected 1" in r.stderr
    r = run_cli("calibrate", "--table", str(table), "--as", "os8", "--out", str(tmp_path / "os8.json"))
    assert r.returncode == 0, r.stderr
    assert "(chosen on these rows, leaving one out)" in r.stdout  # 10 rows: the device's own settings
    from codesign.predict.models import load_cost_model

    model = load_cost_model(tmp_path / "os8.json")
    assert model.adaptation["chosen_on_rows"] is True
    others = [module_kernels(space.build(g), tuple(space.input_shape))
              for g in fs.random_genotypes(space, 12, seed=5, exclude=set(kernels))]
    truth = fs.accel_latencies_ms(others, [accel])[:, 0]
    pred = [model.predict_network(k)["latency_ms"] for k in others]
    flops = fs.design_matrix(others)[:, 0]
    assert kendalltau(pred, truth)[0] > kendalltau(flops, truth)[0]


# --- benchmarks/fewshot.py's timing passes (the runners replaced by counters) ----------------------

def _fewshot_bench():
    return load_benchmark("fewshot")


def test_timing_passes_keep_each_pass_resume_and_take_the_fastest(tmp_path, monkeypatch):
    from types import SimpleNamespace

    bench = _fewshot_bench()
    # A host with a slow spell: pass 2 of 4 is twice as slow for every network. Runs are counted.
    clock = {"pass": 0}
    monkeypatch.setattr(bench, "_time_pass", lambda fn, threads, runs: fn() * (2.0 if clock["pass"] == 1 else 1.0))
    calls = []

    def runner(g, ms):
        def fn():
            calls.append(g)
            return ms
        return {"genotype": g, "device": "ort-1t", "fn": fn, "threads": 1, "settings": {"passes": 4}, "mins": []}

    args = SimpleNamespace(passes=4, repeats=8)
    real_print = print

    def tick(*a, **k):  # each pass prints once: the host's spell moves on
        clock["pass"] += 1
        real_print(*a, **k)

    monkeypatch.setattr("builtins.print", tick)
    path = tmp_path / "bank.sqlite"
    with fs.Bank(path) as bank:
        rs = [runner("a", 1.0), runner("b", 3.0)]
        args.passes = 2  # a build killed after two passes ...
        bench._timing_passes(args, bank, rs, 0.0)
        assert bench._pass_state(bank, "ort-1t") == {"a": [1.0, 2.0], "b": [3.0, 6.0]}
        assert bank.latencies("ort-1t") == {"a": 1.0, "b": 3.0}
        # ... resumes at its third pass with the stored minimums, and times nothing twice
        args.passes = 4
        calls.clear()
        state = bench._pass_state(bank, "ort-1t")
        rs = [dict(runner(g, ms), mins=list(state[g])) for g, ms in (("a", 1.0), ("b", 3.0))]
        bench._timing_passes(args, bank, rs, 0.0)
        assert sorted(calls) == ["a", "a", "b", "b"]
        assert bank.latencies("ort-1t") == {"a": 1.0, "b": 3.0}
        row = json.loads(bank.conn.execute("SELECT settings FROM latencies WHERE genotype = 'a'").fetchone()[0])
        assert row["pass_min_ms"] == [1.0, 2.0, 1.0, 1.0] and row["passes"] == 4
        # a row written before timing passes counts as done; it is never timed again
        bank.add("c", "ort-1t", 5.0, 0.0, {"repeats": 20})
        assert bench._pass_state(bank, "ort-1t")["c"] is None


def test_timing_passes_move_the_cost_of_a_position_off_any_one_network(tmp_path, monkeypatch):
    from types import SimpleNamespace

    bench = _fewshot_bench()
    # A host where the first network a device times after another runtime ran reads twice as slow
    # (another runtime's threads still spinning). Each pass must wait for that to pass and time
    # the networks in its own order, so no network carries it in most passes.
    state = {"last": None}
    sleeps = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: sleeps.append(s))

    def fake_time_pass(fn, threads, runs):
        device = fn()
        slow = state["last"] != device
        state["last"] = device
        return 2.0 if slow else 1.0

    monkeypatch.setattr(bench, "_time_pass", fake_time_pass)
    nets, devices, passes = [f"n{i}" for i in range(6)], ("ort-1t", "torch-2t"), 12
    rs = [{"genotype": g, "device": d, "fn": (lambda d=d: d), "threads": 1, "settings": {}, "mins": []}
          for d in devices for g in nets]
    args = SimpleNamespace(passes=passes, repeats=3 * passes)
    monkeypatch.setattr("builtins.print", lambda *a, **k: None)
    with fs.Bank(tmp_path / "bank.sqlite") as bank:
        bench._timing_passes(args, bank, rs, 0.0)
        for d in devices:
            mins = bench._pass_state(bank, d)
            slow_passes = {g: sum(m == 2.0 for m in mins[g]) for g in nets}
            assert sum(slow_passes.values()) == passes  # one slow reading per pass and device
            assert max(slow_passes.values()) < passes / 2  # ... never on one network most of the time
            assert sum(v > 0 for v in slow_passes.values()) >= 3
            assert all(np.median(mins[g]) == 1.0 for g in nets)
    assert sleeps == [bench.SETTLE_S] * (passes * len(devices))


def test_fewshot_build_refuses_more_passes_than_runs(tmp_path):
    bench = _fewshot_bench()
    with pytest.raises(SystemExit, match="--passes must be at least 1 and at most --repeats"):
        bench.main(["build", "--bank", str(tmp_path / "b.sqlite"), "--passes", "30", "--repeats", "24"])
    assert not (tmp_path / "b.sqlite").exists()


def test_attainable_tau_matches_a_simulated_perfect_predictor():
    bench = _fewshot_bench()
    rng = np.random.default_rng(0)
    truth = rng.normal(size=3000)
    for noise in (0.3, 0.7, 1.5):
        half_a, half_b = truth + noise * rng.normal(size=3000), truth + noise * rng.normal(size=3000)
        split = kendalltau(half_a, half_b)[0]
        perfect = kendalltau(truth, (half_a + half_b) / 2)[0]  # the whole timing: both halves
        assert abs(bench._attainable_tau(split) - perfect) < 0.03
    assert bench._attainable_tau(1.0) == pytest.approx(1.0) and bench._attainable_tau(-0.2) == 0.0


def test_statistic_of_the_passes_follows_the_hosts_noise(tmp_path):
    """A host that only slows runs down keeps the fastest pass; one with fast spells that reach
    some networks of a pass and not others (the tuned-TVM case) gets the median, and ``_settle``
    writes it into the bank and split-half reads it."""
    bench = _fewshot_bench()
    rng = np.random.default_rng(1)
    truth = np.exp(rng.normal(0.0, 0.05, size=60))  # networks 5 % apart: a narrow space
    slow_only = truth[:, None] * (1 + rng.exponential(0.1, size=(60, 16)))
    q, score = bench._choose_statistic(slow_only)
    assert q == 0 and score["min"] > score["median"]
    fast_spells = truth[:, None] * np.exp(rng.normal(0.0, 0.02, size=(60, 16)))
    for p in range(0, 16, 3):  # a fast spell over a random half of the pass
        fast_spells[rng.random(60) < 0.5, p] *= 0.7
    q, score = bench._choose_statistic(fast_spells)
    assert q == 50 and score["median"] > score["min"] + 0.2
    with fs.Bank(tmp_path / "bank.sqlite") as bank:
        for i, p in enumerate(fast_spells):
            bank.add(f"g{i}", "tvm-tuned-1t", float(p.min()), 0.0, {"statistic": "min", "pass_min_ms": p.tolist()},
                     commit=False)
        assert bench._settle(bank, "tvm-tuned-1t")["statistic"] == "median"
        lat = bank.latencies("tvm-tuned-1t")
        assert lat["g3"] == pytest.approx(float(np.median(fast_spells[3])))
        assert bank.settings("tvm-tuned-1t")["statistic"] == "median"
        half = bench._split_half({"tvm-tuned-1t": bench._pass_state(bank, "tvm-tuned-1t")},
                                 {"tvm-tuned-1t": bank.settings("tvm-tuned-1t")})["tvm-tuned-1t"]
        assert half["statistic"] == "median" and half["kendall_tau"] > 0.5
        # too few networks to choose from: the rows stay the fastest pass
        bank.add("x", "ort-1t", 1.0, 0.0, {"pass_min_ms": [1.0, 2.0, 3.0, 4.0]})
        assert bench._settle(bank, "ort-1t") is None and bank.latencies("ort-1t") == {"x": 1.0}


def test_a_retest_keeps_the_statistic_of_the_device_it_times_again(tmp_path):
    bench = _fewshot_bench()
    rng = np.random.default_rng(2)
    truth = np.exp(rng.normal(0.0, 0.3, size=20))
    with fs.Bank(tmp_path / "bank.sqlite") as bank:
        for i, t in enumerate(truth):
            p = (t * (1 + rng.exponential(0.05, size=8))).tolist()
            bank.add(f"g{i}", "ort-1t", min(p), 0.0, {"statistic": "median", "pass_min_ms": p}, commit=False)
            bank.add(f"g{i}", bench.RETEST + "ort-1t", min(p), 0.0, {"pass_min_ms": p}, commit=False)
        out = bench._settle(bank, bench.RETEST + "ort-1t")
        assert out["statistic"] == "median" and out["split_tau"]["min"] >= out["split_tau"]["median"]
        assert bank.latencies(bench.RETEST + "ort-1t")["g0"] == pytest.approx(float(np.median(
            json.loads(bank.conn.execute("SELECT settings FROM latencies WHERE genotype = 'g0' AND device = 'ort-1t'")
                       .fetchone()[0])["pass_min_ms"])))


def test_cli_calibrates_on_networks_of_ones_own(tmp_path, run_cli):
    """A table of networks outside the reference set adapts the prior on them, and says so."""
    from codesign.hw_models import get_accelerator

    from codesign.graph import export_onnx, module_kernels

    space = fs.create_reference_space()
    genotypes = fs.random_genotypes(space, 6, seed=11, exclude=set(fs.reference_genotypes(space)))
    kernels = [module_kernels(space.build(g), tuple(space.input_shape)) for g in genotypes]
    lat = fs.accel_latencies_ms(kernels, [get_accelerator("os-8x8")])[:, 0]
    lines = ["model,latency_ms"]
    for i, (g, v) in enumerate(zip(genotypes, lat)):
        path = tmp_path / f"own{i}.onnx"
        path.write_bytes(export_onnx(space.build(g).eval(), space.input_shape).SerializeToString())
        lines.append(f"{path},{v}")
    (tmp_path / "own.csv").write_text("\n".join(lines) + "\n")
    r = run_cli("calibrate", "--table", str(tmp_path / "own.csv"), "--as", "own8", "--out", str(tmp_path / "o.json"),
                "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["networks"] == "own" and report["rows"] == 6
    from codesign.predict.models import load_cost_model

    model = load_cost_model(tmp_path / "o.json")
    assert model.reference == []
    assert np.isfinite(model.predict_network(kernels[0])["latency_ms"])
