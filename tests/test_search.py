"""Search: budgets, cost tables, strategies, checkpoints/resume, the run pipeline and its CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from codesign.cli import main as cli_main
from codesign.data import load_digits
from codesign.errors import CodesignError
from codesign.pipeline import SearchConfig, run_search, split_train_val
from codesign.search import checkpoint as ckpt
from codesign.search.budgets import Multipliers, parse_budget, repair, resolve, satisfied
from codesign.search.costs import CostTable
from codesign.search.strategies import SearchContext, create_strategy, list_strategies
from codesign.spaces import create_space

TINY = {"c": 2, "cells": 1}


def table_for(space, seed=0) -> CostTable:
    """A cost table with made-up positive costs: unit tests of the code around the cost model."""
    rng = np.random.default_rng(seed)
    lat = [np.sort(rng.uniform(0.1, 1.0, len(d.options))) for d in space.decisions()]
    for row, d in zip(lat, space.decisions()):
        for k, o in enumerate(d.options):
            if o in ("none", "skip_connect", "skip"):
                row[k] = 0.0
    en = [3 * r for r in lat]
    return CostTable(space.name, "test", "untuned", {"latency_ms": lat, "energy_mj": en},
                     {"latency_ms": 0.5, "energy_mj": 1.0}, [1.0] * len(lat))


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def context(space, digits, costs, budgets, cfg, stem=None, n=160, log=None):
    split = split_train_val(digits, 0.5, cfg.seed)
    xt, yt, xv, yv = split.x_train, split.y_train, split.x_val, split.y_val
    return SearchContext(space, xt[:n], yt[:n], xv[:n], yv[:n], costs, budgets, cfg, stem,
                         log or (lambda rec: None))


# --- budgets --------------------------------------------------------------------------------

def test_budget_parsing_and_errors():
    assert parse_budget("latency_ms", "2.5").spec == "2.5"
    assert parse_budget("energy_mj", "0.5x").spec == "0.5x"
    for bad, msg in [("0", "must be > 0"), ("-1x", "must be > 0"), ("fast", "a fraction of the costliest"),
                     ("nan", "must be > 0")]:
        with pytest.raises(CodesignError, match=msg):
            parse_budget("latency_ms", bad)


def test_relative_budget_and_infeasible_budget_names_the_minimum():
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    top = costs.of(space.costliest(costs.table["latency_ms"]))
    (b,) = resolve([parse_budget("latency_ms", "0.5x")], costs, space)
    assert b.limit == pytest.approx(0.5 * top)
    low = costs.of(space.cheapest(costs.table["latency_ms"]))
    with pytest.raises(CodesignError, match=f"minimum achievable is {low:.4g}"):
        resolve([parse_budget("latency_ms", str(low * 0.9))], costs, space)


def test_expected_cost_is_differentiable_and_exact_for_one_hot():
    space = create_space("mobilenet", input_shape=(1, 3, 8, 8))
    costs = table_for(space)
    choices = space.random_choices(random.Random(0))
    onehot = [torch.nn.functional.one_hot(torch.tensor(k), len(d.options)).double()
              for k, d in zip(choices, space.decisions())]
    assert float(costs.expected(onehot)) == pytest.approx(costs.of(choices))
    logits = [torch.zeros(len(d.options), requires_grad=True) for d in space.decisions()]
    costs.expected([torch.softmax(a, 0) for a in logits], "energy_mj").backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in logits)


def test_multipliers_rise_over_budget_and_stay_non_negative():
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    (b,) = resolve([parse_budget("latency_ms", "0.3x")], costs, space)
    m = Multipliers([b], lr=1.0)
    uniform = [torch.full((5,), 0.2) for _ in space.decisions()]
    _, expected = m.penalty(costs, uniform)
    m.update(expected)
    assert m.values[0] > 0
    m.update({"latency_ms": 0.0})
    m.update({"latency_ms": 0.0})
    assert m.values[0] >= 0.0


@pytest.mark.parametrize("name", ["nb201", "darts", "mobilenet"])
def test_repair_meets_the_budget_and_keeps_valid_networks(name):
    kw = {"nb201": TINY, "darts": {"c": 2, "layers": 3}, "mobilenet": {}}[name]
    space = create_space(name, input_shape=(1, 3, 8, 8), **kw)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.45x"), parse_budget("energy_mj", "0.5x")], costs, space)
    rng = random.Random(0)
    for _ in range(5):
        start = space.costliest(costs.table["latency_ms"])
        probs = [rng.random() + np.eye(len(d.options))[k] for d, k in zip(space.decisions(), start)]
        fixed, changes = repair(space, costs, start, probs, budgets)
        assert space.valid(fixed) and satisfied(costs, fixed, budgets) and changes > 0


# --- checkpoints ------------------------------------------------------------------------------

def test_checkpoint_round_trip_and_version_check(tmp_path):
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters())
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    ckpt.save(tmp_path / "c", {"m": m.state_dict(), "o": opt.state_dict(), "h": [{"a": 1.5}], "t": (1, "x")}, {"e": 1})
    state, meta = ckpt.load(tmp_path / "c")
    assert meta == {"e": 1} and state["h"] == [{"a": 1.5}] and state["t"] == (1, "x")
    torch.testing.assert_close(state["m"]["weight"], m.weight.detach())
    opt2 = torch.optim.Adam(m.parameters())
    opt2.load_state_dict(state["o"])
    doc = json.loads((tmp_path / "c.json").read_text())
    doc["format_version"] = 99
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(CodesignError, match="format version 99"):
        ckpt.load(tmp_path / "c")
    assert not list(tmp_path.glob("*.tmp*"))


# --- strategies ---------------------------------------------------------------------------------

def small_cfg(strategy, **kw):
    base = dict(strategy=strategy, epochs=3, warmup_epochs=1, batch_size=32, candidates=3, candidate_epochs=1,
                population=2, tournament=2, seed=1)
    return SearchConfig(**{**base, **kw})


@pytest.mark.parametrize("strategy", ["darts", "darts2", "gdas", "random", "evolution"])
def test_every_strategy_returns_a_network_under_the_budget(strategy, digits):
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.6x")], costs, space)
    logs = []
    found = create_strategy(strategy, context(space, digits, costs, budgets, small_cfg(strategy),
                                              log=logs.append)).run()
    assert space.valid(found["choices"]) and len(found["probs"]) == 6
    assert logs and found["search_seconds"] > 0
    if strategy in ("random", "evolution"):
        assert found["candidates"] == 3 and all(satisfied(costs, r["choices"], budgets) for r in logs)
    else:
        assert set(logs[-1]) >= {"train_loss", "val_accuracy", "expected", "multipliers", "arch_probs", "tau"}


def test_gradient_search_moves_toward_the_budget(digits):
    """With a tight latency budget the multiplier grows and the expected latency falls."""
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.15x")], costs, space)
    logs = []
    create_strategy("darts", context(space, digits, costs, budgets,
                                     small_cfg("darts", epochs=6, arch_lr=0.1, lagrange_lr=2.0),
                                     log=logs.append)).run()
    assert logs[-1]["multipliers"]["latency_ms"] > 0
    assert logs[-1]["expected"]["latency_ms"] < logs[0]["expected"]["latency_ms"]


class Killed(Exception):
    pass


@pytest.mark.parametrize("strategy, arch_optimizer", [("gdas", "adam"), ("evolution", "adam"),
                                                     ("darts", "l2o:supernet")])
def test_resume_after_a_kill_gives_the_same_result(strategy, arch_optimizer, digits, tmp_path):
    from codesign.pipeline import optimizer_factory as _optimizer_factory

    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.6x")], costs, space)
    cfg = small_cfg(strategy, epochs=4, candidates=4, arch_optimizer=arch_optimizer)

    def context(*a, **kw):  # the learned optimizer (if any) updates the architecture weights
        ctx = globals()["context"](*a, **kw)
        ctx.arch_optimizer_factory = _optimizer_factory(arch_optimizer)
        return ctx

    full = create_strategy(strategy, context(space, digits, costs, budgets, cfg, tmp_path / "a")).run()

    seen = []

    def dies_on_third(rec):
        seen.append(rec)
        if len(seen) == 3:
            raise Killed  # after two checkpoints, before the third

    with pytest.raises(Killed):
        create_strategy(strategy, context(space, digits, costs, budgets, cfg, tmp_path / "b", log=dies_on_third)).run()
    torch.manual_seed(12345)  # whatever the process did since, the checkpoint restores it
    random.seed(999)
    resumed = create_strategy(strategy, context(space, digits, costs, budgets, cfg, tmp_path / "b")).run()
    assert resumed["choices"] == full["choices"]
    np.testing.assert_allclose(np.concatenate(resumed["probs"]), np.concatenate(full["probs"]), rtol=1e-5)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(digits, tmp_path):
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.6x")], costs, space)
    cfg = small_cfg("darts", epochs=3, lr=1e30)
    with pytest.raises(CodesignError, match="loss became (nan|inf).*--resume"):
        create_strategy("darts", context(space, digits, costs, budgets, cfg, tmp_path / "c")).run()


def test_fused_and_reference_supernets_agree(digits):
    """The supernet on codesign's fused ops computes what the plain reference ops compute."""
    from codesign import use_backend

    space = create_space("darts", c=2, layers=3, input_shape=(1, 1, 8, 8))
    torch.manual_seed(0)
    net = space.supernet().double()
    x = digits.x_train[:4].double()
    w = [torch.softmax(torch.randn(8, dtype=torch.float64), 0) for _ in space.decisions()]
    out = net(x, w)
    with use_backend("reference"):
        ref = net(x, w)
    torch.testing.assert_close(out, ref)


def test_strategy_registry():
    assert list_strategies() == ["darts", "darts2", "evolution", "gdas", "random"]
    with pytest.raises(CodesignError, match="unknown strategy 'enas'"):
        create_strategy("enas", None)


# --- the pipeline (real profiling, cost model, TVM measurement) ------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    # The quick policy: the tuned default's profiling and whole-network tuning are tested in
    # test_tuned.py and take minutes here.
    cfg = SearchConfig(space_args={"c": 4, "cells": 1}, epochs=3, warmup_epochs=1, train_epochs=2,
                       db=str(root / "p.sqlite"), latency_ms="0.6x", energy_mj="0.9x", profile_repeats=1,
                       profile_min_repeat_ms=1.0, schedule="untuned")
    return run_search(cfg, run_dir=root / "run", quiet=True), root


def test_pipeline_produces_a_measured_checked_network(finished_run):
    r, root = finished_run
    run = root / "run"
    for f in ("config.json", "costs.json", "cost_model.json", "search.json", "derived.json", "train.json",
              "weights.npz", "model.onnx", "export.json", "measure.json", "results.json", "log.jsonl"):
        assert (run / f).exists(), f
    assert r["budgets_met_predicted"] and r["derived"]["meets_budgets"]
    assert all(r["predicted"][b["metric"]] <= b["limit"] for b in r["budgets"])
    assert r["measured"]["latency_ms"] > 0 and r["measured"]["onnxruntime_latency_ms"] > 0
    assert 0.0 <= r["test_accuracy"] <= 1.0
    assert json.loads((run / "export.json").read_text())["checker"] == "ok"
    lines = (run / "log.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "arch_probs" in json.loads(lines[-1])


def test_resume_of_a_finished_run_redoes_nothing_and_refuses_another_config(finished_run):
    r, root = finished_run
    again = run_search(run_dir=root / "run", resume=True, quiet=True)
    assert again["genotype"] == r["genotype"] and again["measured"] == r["measured"]
    with pytest.raises(CodesignError, match="made with seed=0, not 3"):
        run_search(run_dir=root / "run", resume=True, overrides={"seed": 3}, quiet=True)


def test_train_and_export_commands(finished_run, tmp_path, capsys):
    r, root = finished_run
    assert cli_main(["export", str(root / "run"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "onnx.checker ok" in capsys.readouterr().out
    g = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
    assert cli_main(["train", g, "--space-arg", "c=4", "--space-arg", "cells=1", "--epochs", "1",
                     "--out", str(tmp_path / "w"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["test_accuracy"] > 0.1 and (tmp_path / "w.npz").exists()
    assert cli_main(["export", g, "--space-arg", "c=4", "--space-arg", "cells=1", "--weights", str(tmp_path / "w"),
                     "--out", str(tmp_path / "t.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trained"] is True


@pytest.mark.parametrize("argv, message", [
    (["search", "--space", "nasnet"], "unknown search space 'nasnet'"),
    (["search", "--strategy", "enas"], "unknown strategy 'enas'"),
    (["search", "--data", "mnist"], "unknown dataset 'mnist'"),
    (["search", "--data", "cifar10"], "--data cifar10 needs --data-dir"),
    (["search", "--data", "cifar10", "--data-dir", "/nonexistent"], "does not exist"),
    (["search", "--latency-ms", "0"], "must be > 0"),
    (["search", "--energy-mj=-2x"], "must be > 0"),
    (["search", "--epochs", "0"], "--epochs must be >= 1"),
    (["search", "--resume", "/nonexistent"], "not a codesign run directory"),
    (["search", "--arch-optimizer", "lbfgs"], "use adam, sgd or l2o"),
    (["export", "|bad|", "--out", "x.onnx"], "nb201 genotype"),
    (["train", "/tmp", "--epochs", "1"], "not a finished search run"),
])
def test_cli_usage_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_infeasible_budget_fails_at_once_naming_the_minimum(finished_run, tmp_path, capsys):
    _, root = finished_run
    code = cli_main(["search", "--space-arg", "c=4", "--space-arg", "cells=1", "--latency-ms", "0.0001",
                     "--db", str(root / "p.sqlite"), "--run-dir", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "minimum achievable is" in err


def test_search_help_lists_every_flag():
    out = subprocess.run([sys.executable, "-m", "codesign.cli", "search", "--help"], capture_output=True, text=True)
    for flag in ("--latency-ms", "--energy-mj", "--compare", "--resume", "--arch-optimizer", "--data-dir"):
        assert flag in out.stdout


@pytest.mark.slow
def test_sigkill_mid_search_then_resume_matches_an_uninterrupted_run(finished_run, tmp_path):
    """A real `codesign search` process killed with SIGKILL after its second checkpoint, then
    resumed, ends with the genotype and architecture weights of an uninterrupted run."""
    import signal
    import time

    _, root = finished_run
    args = [sys.executable, "-m", "codesign.cli", "search", "--space-arg", "c=4", "--space-arg", "cells=1",
            "--epochs", "6", "--warmup-epochs", "1", "--train-epochs", "1", "--no-measure", "--quiet",
            "--db", str(root / "p.sqlite"), "--latency-ms", "0.6x"]
    subprocess.run(args + ["--run-dir", str(tmp_path / "full")], check=True, timeout=900)
    proc = subprocess.Popen(args + ["--run-dir", str(tmp_path / "killed")], start_new_session=True)
    ck = tmp_path / "killed" / "checkpoint.json"
    deadline = time.time() + 600
    while time.time() < deadline:
        if ck.exists() and json.loads(ck.read_text())["meta"]["epoch"] >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "search.json").exists(), "the search finished before the kill"
    subprocess.run([sys.executable, "-m", "codesign.cli", "search", "--resume", str(tmp_path / "killed"), "--quiet"],
                   check=True, timeout=900)
    full = json.loads((tmp_path / "full" / "search.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "search.json").read_text())
    assert resumed["choices"] == full["choices"]
    np.testing.assert_allclose(np.concatenate(resumed["probs"]), np.concatenate(full["probs"]), rtol=1e-5)


def test_random_baseline_gets_the_same_compute_in_passes(digits):
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.6x")], costs, space)
    cfg = small_cfg("gdas", epochs=4, candidate_epochs=1)
    found = create_strategy("gdas", context(space, digits, costs, budgets, cfg)).run()
    per_step = 160 // 32
    assert found["search_passes"] == per_step * (1 + 2 * 3)  # 1 warm-up epoch, then arch + weight steps
    ctx = context(space, digits, costs, budgets, cfg)
    ctx.max_passes = found["search_passes"]
    rand = create_strategy("random", ctx).run()
    assert abs(rand["search_passes"] - found["search_passes"]) <= per_step / 2


def test_cost_table_matches_whole_graph_predictions_at_both_ends(finished_run):
    """The additive table is anchored on the cost model's whole-graph predictions of the cheapest
    and the costliest network; the cheapest network costs more than nothing."""
    from codesign.costs import ModelCostSource
    from codesign.predict import load_cost_model
    from codesign.search.costs import network_cost

    _, root = finished_run
    costs = CostTable.load(root / "run" / "costs.json")
    model = load_cost_model(root / "run" / "cost_model.json")
    space = create_space("nb201", input_shape=(1, 1, 8, 8), c=4, cells=1)
    for pick in (space.cheapest, space.costliest):
        choices = pick(costs.table["latency_ms"])
        whole = network_cost(space, space.format(choices), ModelCostSource(model))
        for m in costs.metrics():
            assert costs.of(choices, m) == pytest.approx(whole[m], rel=1e-6)
    assert costs.of(space.cheapest(costs.table["latency_ms"])) > 0
