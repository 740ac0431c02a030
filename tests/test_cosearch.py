"""Co-search of network and accelerator: accelerator cost sources, cost tables with a hardware axis,
budgets on energy and area, strategies with hardware choices, derivation, the pipeline and its CLI."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
import torch
from codesign.hw_models import HardwareSpace

from codesign.cli import main as cli_main
from codesign.costs import AcceleratorSource, HardwareSpaceSource
from codesign.data import load_digits
from codesign.errors import CodesignError
from codesign.pipeline import SearchConfig, run_search, split_train_val
from codesign.search.budgets import implied_budgets, parse_budget, resolve, satisfied
from codesign.search.costs import CostTable, build_cost_table
from codesign.search.derive import derive
from codesign.search.strategies import SearchContext, create_strategy
from codesign.spaces import create_space

SMALL_HW = {"pe_rows": [6, 12], "glb_kib": [54, 216], "dataflow": ["ws", "rs"]}


@pytest.fixture(scope="module")
def space():
    return create_space("nb201", input_shape=(1, 1, 8, 8), c=4, cells=1)


@pytest.fixture(scope="module")
def hw_source():
    return HardwareSpaceSource(HardwareSpace("eyeriss-like", SMALL_HW))


@pytest.fixture(scope="module")
def hw_table(space, hw_source):
    return build_cost_table(space, hw_source)


@pytest.fixture(scope="module")
def accel_table(space):
    return build_cost_table(space, AcceleratorSource("eyeriss-like"))


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def cfg(strategy="darts", **kw):
    base = dict(space="nb201", strategy=strategy, epochs=3, warmup_epochs=1, batch_size=32, candidates=3,
                candidate_epochs=1, population=2, seed=0, objective="edp")
    base.update(kw)
    return SearchConfig(**base)


def context(space, digits, costs, budgets, c, stem=None, log=None, n=128):
    s = split_train_val(digits, 0.5, c.seed)
    return SearchContext(space, s.x_train[:n], s.y_train[:n], s.x_val[:n], s.y_val[:n], costs, budgets, c, stem,
                         log or (lambda rec: None))


# --- cost tables with a hardware axis -------------------------------------------------------------

def test_hardware_table_matches_the_mapper_on_whole_networks(space, hw_source, hw_table):
    """The additive table is exact at its calibration anchors on every config and ranks other
    whole exported networks on every config as the accelerator model does (the additive model
    cannot see fusion across option boundaries, so single networks may differ)."""
    from scipy.stats import kendalltau

    assert hw_table.hardware.n_configs == 8 and hw_table.metrics() == ["latency_ms", "energy_mj", "area_mm2"]
    mean = [t.mean(axis=1) for t in hw_table.table["latency_ms"]]
    for net in (space.cheapest(mean), space.costliest(mean)):
        whole = hw_source.network_cost(space.network_kernels(space.format(net)))
        for c in range(8):
            hw = hw_table.hardware.choices_of(c)
            assert hw_table.hardware.index(hw) == c
            for m in ("latency_ms", "energy_mj", "area_mm2"):
                assert hw_table.of(net + hw, m) == pytest.approx(whole[m][c], rel=1e-9)
    rng = random.Random(0)
    table, model = {"latency_ms": [], "energy_mj": []}, {"latency_ms": [], "energy_mj": []}
    for _ in range(12):
        net = space.random_choices(rng)
        whole = hw_source.network_cost(space.network_kernels(space.format(net)))
        for c in range(8):
            for m in table:
                table[m].append(hw_table.of(net + hw_table.hardware.choices_of(c), m))
                model[m].append(whole[m][c])
    for m in table:
        assert kendalltau(table[m], model[m]).statistic > 0.7


def test_expected_cost_couples_both_distributions_exactly(space, hw_table):
    """E[cost] under independent network and hardware distributions equals the brute-force sum over
    every (network, config) pair, and is differentiable in both (gradcheck, float64)."""
    torch.manual_seed(0)
    sizes = [len(d.options) for d in space.decisions()] + hw_table.hw_sizes()
    logits = [torch.randn(n, dtype=torch.float64, requires_grad=True) for n in sizes]
    probs = [torch.softmax(x, 0) for x in logits]
    for metric in ("latency_ms", "energy_mj", "area_mm2"):
        brute = 0.0
        for point in itertools.product(*[range(n) for n in sizes]):
            p = float(np.prod([probs[i][k].item() for i, k in enumerate(point)]))
            brute += p * hw_table.of(list(point), metric)
        assert float(hw_table.expected(probs, metric).detach()) == pytest.approx(brute, rel=1e-9)

    def f(*xs):
        return hw_table.expected([torch.softmax(x, 0) for x in xs], "energy_mj")

    assert torch.autograd.gradcheck(f, tuple(logits))


def test_cost_table_with_hardware_round_trips(tmp_path, hw_table):
    hw_table.save(tmp_path / "c.json")
    back = CostTable.load(tmp_path / "c.json")
    choices = [1] * len(back.table["latency_ms"]) + [1, 0, 1]
    assert back.all_of(choices) == pytest.approx(hw_table.all_of(choices))
    assert back.hardware.params([1, 0, 1]) == {"pe_rows": 12, "glb_kib": 54, "dataflow": "rs"}


def test_infeasible_pairs_are_never_chosen(space):
    """A config on which a layer cannot map costs inf in the table, so repair and derive avoid it."""
    src = HardwareSpaceSource(HardwareSpace("eyeriss-like", {"rf_words": [4, 260]}))
    table = build_cost_table(space, src)
    # a 4-word register file holds no tile of a 3x3 conv or pool: those options (and the 3x3 stem)
    # cannot map on config 0
    assert all(t[3, 0] and t[4, 0] and not t[2, 0] and not t[:, 1].any() for t in table.infeasible)
    net = [3] * len(space.decisions())  # 3x3 convs everywhere
    assert not np.isfinite(table.of(net + [0], "latency_ms")) and np.isfinite(table.of(net + [1], "latency_ms"))
    budgets = resolve([parse_budget("latency_ms", "0.9x")], table, space)
    found = {"choices": net + [0], "probs": [np.eye(len(d.options))[3] for d in space.decisions()] + [np.eye(2)[0]]}
    d = derive(space, table, src, found, budgets, "edp")
    assert d["hw_choices"] == [1] and d["meets_budgets"]


def test_a_layer_that_maps_on_no_config_is_named(space):
    src = HardwareSpaceSource(HardwareSpace("eyeriss-like", {"rf_words": [3, 4]}))
    with pytest.raises(CodesignError, match=r"layer conv2d\|.* maps on no accelerator config"):
        build_cost_table(space, src)


# --- budgets -----------------------------------------------------------------------------------

def test_infeasible_area_budget_names_the_smallest_area(space, hw_table):
    smallest = float(hw_table.hardware.area_mm2.min())
    with pytest.raises(CodesignError, match=f"below the smallest accelerator .*: {smallest:.4g} mm2"):
        resolve([parse_budget("area_mm2", str(smallest * 0.9))], hw_table, space)
    (b,) = resolve([parse_budget("area_mm2", "0.5x")], hw_table, space)
    assert b.limit == pytest.approx(0.5 * hw_table.hardware.area_mm2.max())


def test_area_budget_needs_an_accelerator_target(space):
    from test_search import table_for

    with pytest.raises(CodesignError, match="area_mm2 budget needs an accelerator target"):
        resolve([parse_budget("area_mm2", "5")], table_for(space), space)


def test_energy_and_latency_differ_across_accelerators(hw_source):
    """On the accelerator model energy is counted from data movement and MACs, not from time: for
    one network of compute-bound convs (32x32 inputs), a larger array cuts latency far more than
    energy, so their ratio changes across the configs of a hardware space (on a CPU roofline it is
    one constant). Tiny memory-bound networks move both with DRAM traffic alike."""
    space32 = create_space("nb201", c=8, cells=1)
    table = build_cost_table(space32, hw_source)
    net = [3] * len(space32.decisions())
    ratio = [table.of(net + table.hardware.choices_of(c), "energy_mj")
             / table.of(net + table.hardware.choices_of(c), "latency_ms") for c in range(8)]
    assert max(ratio) / min(ratio) > 1.5


def test_an_energy_budget_implied_by_the_latency_budget_is_reported(space):
    from test_search import table_for

    table = table_for(space)
    table.base["energy_mj"] = 3 * table.base["latency_ms"]  # energy = 3 x latency, as a CPU roofline makes it
    budgets = resolve([parse_budget("latency_ms", "0.5x"), parse_budget("energy_mj", "0.9x")], table, space)
    (note,) = implied_budgets(budgets, table)
    assert "energy budget" in note and "implied by the latency budget" in note
    budgets = resolve([parse_budget("latency_ms", "0.9x"), parse_budget("energy_mj", "0.5x")], table, space)
    assert "latency budget" in implied_budgets(budgets, table)[0]


@pytest.mark.parametrize("binding", ["energy_mj", "latency_ms"])
def test_the_binding_budget_is_met_and_the_loose_one_does_not_drive(binding, space, accel_table, digits):
    """On one accelerator, a tight energy budget with a loose latency budget (and the reverse):
    the searched and derived design meets both, and the tight one is the one that binds."""
    src = AcceleratorSource("eyeriss-like")
    tight, loose = ("0.35x", "0.95x")
    specs = {binding: tight, ("latency_ms" if binding == "energy_mj" else "energy_mj"): loose}
    budgets = resolve([parse_budget(m, v) for m, v in specs.items()], accel_table, space)
    c = cfg("darts", epochs=3, lagrange_lr=2.0, objective="none")
    ctx = context(space, digits, accel_table, budgets, c)
    found = create_strategy("darts", ctx).run()
    d = derive(space, accel_table, src, found, budgets)
    ratio = {b.metric: d["predicted"][b.metric] / b.limit for b in budgets}
    assert d["meets_budgets"] and all(r <= 1.0 for r in ratio.values())
    other = "latency_ms" if binding == "energy_mj" else "energy_mj"
    assert ratio[binding] > ratio[other]


# --- strategies with hardware choices --------------------------------------------------------

@pytest.mark.parametrize("strategy", ["darts", "gdas", "random", "evolution"])
def test_every_strategy_returns_a_design_under_every_budget(strategy, space, hw_table, digits):
    budgets = resolve([parse_budget("latency_ms", "0.6x"), parse_budget("area_mm2", "0.6x")], hw_table, space)
    found = create_strategy(strategy, context(space, digits, hw_table, budgets, cfg(strategy))).run()
    assert len(found["choices"]) == len(space.decisions()) + 3
    assert len(found["probs"]) == len(found["choices"])
    d = derive(space, hw_table, HardwareSpaceSource(HardwareSpace("eyeriss-like", SMALL_HW)), found, budgets, "edp")
    assert d["meets_budgets"] and satisfied(hw_table, space.parse(d["genotype"]) + d["hw_choices"], budgets)
    assert set(d["hardware"]) == set(SMALL_HW)


def test_gdas_samples_one_config_per_step_with_a_straight_through_gradient(space, hw_table, digits):
    ctx = context(space, digits, hw_table, [], cfg("gdas"))
    s = create_strategy("gdas", ctx)
    samples = s.sample_hardware(seed=3)
    assert [len(x) for x in samples] == hw_table.hw_sizes()
    assert all(float(x.detach().sum()) == pytest.approx(1.0) and int((x == 1).sum()) == 1 for x in samples)
    cost = hw_table.expected(s.probs()[:s.n_net] + samples, "latency_ms")
    cost.backward()
    assert all(a.grad is not None and torch.isfinite(a.grad).all() for a in s.alphas[s.n_net:])


def test_cosearch_resume_after_a_kill_gives_the_same_network_and_accelerator(space, hw_table, digits, tmp_path):
    budgets = resolve([parse_budget("energy_mj", "0.6x")], hw_table, space)
    c = cfg("darts", epochs=4)
    full = create_strategy("darts", context(space, digits, hw_table, budgets, c, tmp_path / "a")).run()

    class Killed(Exception):
        pass

    seen = []

    def dies(rec):
        seen.append(rec)
        if len(seen) == 2:
            raise Killed

    with pytest.raises(Killed):
        create_strategy("darts", context(space, digits, hw_table, budgets, c, tmp_path / "b", log=dies)).run()
    torch.manual_seed(4321)
    resumed = create_strategy("darts", context(space, digits, hw_table, budgets, c, tmp_path / "b")).run()
    assert resumed["choices"] == full["choices"]
    np.testing.assert_allclose(np.concatenate(resumed["probs"]), np.concatenate(full["probs"]), rtol=1e-5)


# --- the pipeline and the CLI ----------------------------------------------------------------

@pytest.fixture(scope="module")
def cosearch_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cosearch")
    c = SearchConfig(space="nb201", space_args={"c": 4, "cells": 1}, strategy="darts", epochs=2, warmup_epochs=1,
                     train_epochs=1, batch_size=64, hw_space="eyeriss-sweep", latency_ms="0.6x", area_mm2="8",
                     compare="sequential")
    return run_search(c, run_dir=root / "run", quiet=True), root / "run"


def test_cosearch_pipeline_writes_the_accelerator_and_the_sequential_baseline(cosearch_run, capsys):
    results, path = cosearch_run
    assert results["objective"] == "edp" and results["budgets_met_predicted"] and results["budgets_met_measured"]
    acc = results["accelerator"]
    assert acc["area_mm2"] <= 8 and set(results["hardware"]) == {"pe_rows", "pe_cols", "glb_kib", "dataflow"}
    measured = json.loads((path / "measure.json").read_text())
    assert measured["source"] == "model:hw_models" and measured["layers"]
    assert {"pe_utilization", "energy_by_level_mj"} <= set(measured["layers"][0])
    # accelerator.yaml is what `codesign hw eval --accel` reads
    assert cli_main(["hw", "eval", "--accel", str(path / "accelerator.yaml"), "--onnx", str(path / "model.onnx"),
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["latency_ms"] == pytest.approx(measured["latency_ms"])
    seq = results["compare"]
    assert seq["strategy"] == "sequential"
    if seq["feasible"]:
        assert seq["accelerator"]["area_mm2"] <= 8 and seq["search_passes"] == pytest.approx(results["search_passes"])


def test_cosearch_resume_of_a_finished_run_redoes_nothing(cosearch_run):
    results, path = cosearch_run
    again = run_search(run_dir=path, resume=True, quiet=True)
    assert again["genotype"] == results["genotype"] and again["hardware"] == results["hardware"]


@pytest.mark.parametrize("yaml_text, message", [
    ("format_version: 1\nkind: hardware-space\nname: x\nbase: eyeriss-like\nchoices: {pe_depth: [1, 2]}\n",
     "unknown hardware parameter 'pe_depth'"),
    ("format_version: 1\nkind: hardware-space\nname: x\nbase: eyeriss-like\nchoices: {pe_rows: []}\n",
     "choices of pe_rows must be a non-empty list"),
    ("format_version: 1\nkind: hardware-space\nname: x\nbase: eyeriss-like\nchoices: {pe_rows: [8, -4]}\n",
     "pe_rows must be a positive integer"),
    ("format_version: 1\nkind: hardware-space\nname: x\nbase: eyeriss-like\nchoices: {dataflow: [ws, xs]}\n",
     "unknown dataflow 'xs'"),
    ("format_version: 2\nkind: hardware-space\nname: x\nbase: eyeriss-like\nchoices: {pe_rows: [8]}\n",
     "format_version 2"),
    ("kind: accelerator\n", "not a hardware space file"),
])
def test_bad_hardware_space_files_are_one_line(yaml_text, message, tmp_path, capsys):
    f = tmp_path / "hw.yaml"
    f.write_text(yaml_text)
    assert cli_main(["search", "--hw-space", str(f), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["--hw-space", "eyeriss-sweep", "--area-mm2", "1"], "below the smallest accelerator of hw-space:eyeriss-sweep: 2.465 mm2"),
    (["--area-mm2", "5"], "area_mm2 budget needs an accelerator target"),
    (["--device", "accel:tpu9"], "unknown accelerator 'tpu9'"),
    (["--hw-space", "eyeriss-sweep", "--device", "cpu-local-2t"], "drop --device"),
    (["--compare", "sequential"], "needs --hw-space"),
    (["--objective", "speed"], "--objective takes none, latency, energy, edp"),
])
def test_cosearch_usage_errors_are_one_line(argv, message, tmp_path, capsys):
    base = ["search", "--space-arg", "c=4", "--space-arg", "cells=1", "--epochs", "2", "--warmup-epochs", "1",
            "--run-dir", str(tmp_path / "r")]
    assert cli_main(base + argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "search.json").exists()
