"""Search: budgets, cost tables, strategies, checkpoints/resume, the run pipeline and its CLI."""

from __future__ import annotations

import json
import math
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



@pytest.mark.parametrize("killed", ["before_the_json", "after_the_json"])
def test_a_kill_inside_a_checkpoint_save_never_mixes_two_saves(tmp_path, monkeypatch, killed):
    """The second save of a checkpoint is killed before its JSON is committed (the first save is
    read back whole) or after it, before the arrays' final rename (the second save is read whole);
    the arrays of one save are never paired with the JSON of the other."""
    import os as _os

    ckpt.save(tmp_path / "c", {"w": torch.zeros(3), "epoch": 1}, {"epoch": 1})
    real_replace, calls = _os.replace, []

    def replace(src, dst):
        calls.append(str(dst))
        stop_at = 2 if killed == "before_the_json" else 3  # 1: arrays -> .next.npz, 2: JSON, 3: .npz
        if len(calls) == stop_at:
            raise KeyboardInterrupt  # the kill
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(tmp_path / "c", {"w": torch.ones(3), "epoch": 2}, {"epoch": 2})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert ckpt.exists(tmp_path / "c")
    state, meta = ckpt.load(tmp_path / "c")
    want = 1 if killed == "before_the_json" else 2
    assert meta == {"epoch": want} and state["epoch"] == want
    torch.testing.assert_close(state["w"], torch.full((3,), float(want - 1)))
    ckpt.save(tmp_path / "c", {"w": torch.full((3,), 5.0), "epoch": 3}, {"epoch": 3})  # saving goes on as usual
    assert ckpt.load(tmp_path / "c")[1] == {"epoch": 3} and not (tmp_path / "c.next.npz").exists()


def test_a_checkpoint_whose_files_come_from_different_saves_is_refused(tmp_path):
    ckpt.save(tmp_path / "a", {"w": torch.zeros(2)}, {"e": 1})
    ckpt.save(tmp_path / "b", {"w": torch.ones(2)}, {"e": 2})
    (tmp_path / "b.npz").replace(tmp_path / "a.npz")
    with pytest.raises(CodesignError, match="come from different saves"):
        ckpt.load(tmp_path / "a")


# --- strategies ---------------------------------------------------------------------------------

def small_cfg(strategy, **kw):
    base = dict(strategy=strategy, epochs=3, warmup_epochs=1, batch_size=32, candidates=3, candidate_epochs=1,
                population=2, tournament=2, seed=1)
    return SearchConfig(**{**base, **kw})


@pytest.mark.parametrize("strategy", ["darts", "darts2", "gdas", "rsws", "random", "evolution", "naswot", "zero-cost"])
def test_every_strategy_returns_a_network_under_the_budget(strategy, digits):
    """Sample-based strategies and rsws only ever pick networks under the budget; a gradient
    strategy's architecture distribution ends under it (the Lagrangian binds a budget that its
    first distribution exceeds) and its derived network, repaired as the pipeline does, meets it."""
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    uniform = float(costs.expected([torch.full((5,), 0.2) for _ in space.decisions()]))
    (budget,) = budgets = resolve([parse_budget("latency_ms", "0.3x")], costs, space)
    assert uniform > budget.limit  # the budget binds: the search has to move
    logs = []
    cfg = small_cfg(strategy, epochs=6, arch_lr=0.1, lagrange_lr=5.0, ws_candidates=6, ws_eval_batches=1)
    found = create_strategy(strategy, context(space, digits, costs, budgets, cfg, log=logs.append)).run()
    assert len(found["probs"]) == 6  # a gradient strategy's argmax may be a disconnected cell: derived below
    assert logs and found["search_seconds"] > 0
    if strategy in ("random", "evolution", "naswot", "zero-cost"):
        trained = [r for r in logs if "candidate" in r]
        # the zero-cost strategies' default (zc_select="score") trains only the best-scored design
        assert found["candidates"] == len(trained) == (1 if strategy in ("naswot", "zero-cost") else 3)
        assert all(satisfied(costs, r["choices"], budgets) for r in trained)
    if strategy in ("random", "evolution", "rsws", "naswot", "zero-cost"):
        assert space.valid(found["choices"]) and satisfied(costs, found["choices"], budgets)
    else:
        assert set(logs[-1]) >= {"train_loss", "val_accuracy", "expected", "multipliers", "arch_probs", "tau"}
        assert max(r["multipliers"]["latency_ms"] for r in logs) > 0  # the budget pushed back
        assert logs[-1]["expected"]["latency_ms"] <= budget.limit * 1.05
        derived, _ = repair(space, costs, found["choices"], found["probs"], budgets)
        assert space.valid(derived) and satisfied(costs, derived, budgets)


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


@pytest.mark.parametrize("strategy, arch_optimizer, regularizer", [
    ("gdas", "adam", None), ("evolution", "adam", None), ("darts", "l2o:supernet", None),
    ("gdas", "adam", "shrink,tunas"), ("darts", "adam", "drnas,darts-minus,beta-darts"), ("rsws", "adam", None),
    ("naswot", "adam", None)])
def test_resume_after_a_kill_gives_the_same_result(strategy, arch_optimizer, regularizer, digits, tmp_path):
    from codesign.pipeline import optimizer_factory as _optimizer_factory

    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.6x")], costs, space)
    cfg = small_cfg(strategy, epochs=4, candidates=4, arch_optimizer=arch_optimizer, regularizer=regularizer,
                    ws_candidates=5, ws_eval_batches=1, zc_pool=6, zc_select="val")  # val: several candidates

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


SUPERNETS = [("darts", {"c": 4, "layers": 3}), ("nb201", {"c": 4, "cells": 1}), ("mobilenet", {})]


def _supernet_step(space, net, x, weights, index=None):
    """Output, gradients of the architecture weights and of every parameter, and the state after
    one training forward/backward (running statistics included)."""
    out = net(x, weights, index)
    params = list(net.parameters())
    grads = torch.autograd.grad(out.square().sum(), list(weights) + params, allow_unused=True)
    grads = [torch.zeros_like(v) if g is None else g for g, v in zip(grads, list(weights) + params)]
    return out.detach(), grads, {k: v.clone() for k, v in net.state_dict().items()}


def _assert_steps_equal(a, b):
    torch.testing.assert_close(a[0], b[0])
    for ga, gb in zip(a[1], b[1]):
        torch.testing.assert_close(ga, gb)
    for k, v in b[2].items():
        torch.testing.assert_close(a[2][k], v, msg=k)


@pytest.mark.parametrize("name, args", SUPERNETS, ids=[n for n, _ in SUPERNETS])
@pytest.mark.parametrize("extra", [{}, {"checkpoint": 0}, {"partial_channels": 2}],
                         ids=["default", "stored", "partial2"])
def test_fused_and_reference_supernets_agree(name, args, extra):
    """The fused supernet (channels_last, fused op, shared ReLU, checkpointed candidates, codesign's
    conv/BN kernels) computes what the plain reference supernet computes, in float64: output,
    gradients of architecture weights and parameters, BN running statistics and batch counts."""
    from codesign import use_backend

    if name == "mobilenet" and "partial_channels" in extra:
        pytest.skip("the mobilenet space has no partial-channel edges")
    space = create_space(name, input_shape=(1, 3, 8, 8), **args, **extra)
    torch.manual_seed(0)
    net = space.supernet().double()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    w = [torch.softmax(torch.randn(len(d.options), dtype=torch.float64), 0).requires_grad_()
         for d in space.decisions()]
    fused = _supernet_step(space, net, x, w)
    net.load_state_dict(start)
    with use_backend("reference"):
        ref = _supernet_step(space, net, x, w)
    _assert_steps_equal(fused, ref)


@pytest.mark.parametrize("name, args", SUPERNETS[:2], ids=[n for n, _ in SUPERNETS[:2]])
def test_checkpointed_and_stored_candidates_agree(name, args):
    """Recomputing the candidates in backward changes nothing: not the gradients, not the running
    statistics (the recomputation must not update them a second time), and it keeps less."""
    from codesign.nn import MixedEdge

    results = []
    for checkpoint in (1, 0):
        space = create_space(name, input_shape=(1, 3, 8, 8), checkpoint=checkpoint, **args)
        torch.manual_seed(0)
        net = space.supernet().double()
        assert all(e.checkpoint == bool(checkpoint) for e in net.modules() if isinstance(e, MixedEdge))
        x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
        w = [torch.softmax(torch.randn(len(d.options), dtype=torch.float64), 0).requires_grad_()
             for d in space.decisions()]
        saved: list[int] = []

        def pack(t, saved=saved):
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            results.append(_supernet_step(space, net, x, w))
        results[-1] = (*results[-1], sum(saved))
    _assert_steps_equal(results[0], results[1])
    assert results[0][3] < results[1][3] / 2  # elements kept for backward


@pytest.mark.parametrize("weights_grad", [True, False], ids=["arch-step", "weight-step"])
def test_a_checkpointed_edge_recomputes_its_candidates_but_not_its_mix(monkeypatch, weights_grad):
    """In backward a checkpointed edge runs its candidates again but not the mixed op's kernel
    (the recomputation needs only the maps that the op saved), and the gradients still equal a
    stored edge's, with the mixing weights needing a gradient (an architecture step) or not (a
    weight step, where the op keeps fewer maps)."""
    import codesign.ops as ops
    from codesign.nn import MixedEdge

    calls = {"forward": 0}
    real = ops._cpp_mixed_forward

    def counting(*args):
        calls["forward"] += 1
        return real(*args)

    monkeypatch.setattr(ops, "_cpp_mixed_forward", counting)
    grads = []
    for checkpoint in (1, 0):
        space = create_space("nb201", input_shape=(1, 3, 8, 8), c=4, cells=1, checkpoint=checkpoint)
        torch.manual_seed(0)
        net = space.supernet()
        edges = sum(isinstance(e, MixedEdge) for e in net.modules())
        x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
        w = [torch.softmax(torch.randn(len(d.options)), 0).requires_grad_(weights_grad) for d in space.decisions()]
        calls["forward"] = 0
        loss = net(x, w).square().sum()
        assert calls["forward"] == edges
        grads.append(torch.autograd.grad(loss, (w if weights_grad else []) + list(net.parameters())))
        assert calls["forward"] == edges  # backward computed no mix again
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def _kept_bytes(fn):
    """Bytes of the distinct storages that autograd keeps for backward while fn() runs."""
    kept: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        kept[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(kept.values())


@pytest.mark.parametrize("name, args", SUPERNETS[:2], ids=[n for n, _ in SUPERNETS[:2]])
def test_supernet_memory_default_between_stored_and_checkpointed(name, args):
    """By default the first stage's edges (the largest maps) recompute their candidates in
    backward and every later edge stores them; stored edges keep neither the shared
    ReLU's map nor BN+ReLU maps nor BN inputs (recomputed or not needed), so even storing
    everything keeps less than half of what the reference keeps. Counted by a hook around the
    forward, which sees inside the edges too."""
    from codesign import use_backend
    from codesign.nn import MixedEdge, supernet_input

    kept = {}
    for label, extra, backend in (("reference", {"checkpoint": 0}, "reference"), ("stored", {"checkpoint": 0}, "auto"),
                                  ("default", {}, "auto"), ("checkpointed", {"checkpoint": 1}, "auto")):
        space = create_space(name, input_shape=(1, 3, 16, 16), **args, **extra)
        torch.manual_seed(0)
        net = space.supernet()
        if label == "default":
            edges = {c: [e.checkpoint for e in m.modules() if isinstance(e, MixedEdge)]
                     for c, m in enumerate(m for m in net.modules() if type(m).__name__ == "SuperCell")}
            flags = [f for c in sorted(edges) for f in edges[c]]
            assert flags[0] and not flags[-1], "first-stage edges recompute, the last cell's edges store"
        w = [torch.softmax(torch.randn(len(d.options)), 0).requires_grad_() for d in space.decisions()]
        x = torch.randn(8, 3, 16, 16)
        with use_backend(backend):
            out, kept[label] = _kept_bytes(lambda net=net, x=x, w=w: net(supernet_input(x), w))
        out.square().sum().backward()  # the outer hook's and the recipes' tensors unpack
        assert all(v.grad is not None for v in w)
    assert kept["stored"] < 0.5 * kept["reference"]
    assert kept["checkpointed"] < kept["default"] < kept["stored"]


def test_stored_edges_leak_nothing_and_compose_with_an_outer_checkpoint():
    """A graph that is never run backward in full (an architecture-only gradient, a forward
    alone) leaves no recipe book or recipe behind; under an outer non-reentrant checkpoint the
    stored edges keep no conv output alive after forward and give the reference's gradients."""
    import gc
    import weakref

    from torch.utils.checkpoint import checkpoint

    from codesign import use_backend
    from codesign.nn.mixed import Recomputed, _Recipe

    space = create_space("darts", input_shape=(1, 3, 8, 8), c=4, layers=3, checkpoint=0)
    torch.manual_seed(0)
    net = space.supernet().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w = [torch.softmax(torch.randn(len(d.options), dtype=torch.float64), 0).requires_grad_() for d in space.decisions()]

    def alive():
        gc.collect()
        return sum(type(o) in (Recomputed, _Recipe) for o in gc.get_objects())  # type(): dead weak proxies raise on isinstance

    torch.autograd.grad(net(x, w).square().sum(), w)  # the weights' part of the graph never runs
    net(x, w)  # a forward alone
    assert alive() == 0

    convs: list = []
    handles = [m.register_forward_hook(lambda m, i, o: convs.append(weakref.ref(o)))
               for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    out = checkpoint(lambda x, *w: net(x, list(w)), x, *w, use_reentrant=False)
    gc.collect()
    assert convs and not any(r() is not None for r in convs)
    for h in handles:
        h.remove()
    got = torch.autograd.grad(out.square().sum(), w)
    with use_backend("reference"):
        want = torch.autograd.grad(net(x, w).square().sum(), w)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_recomputed_maps_match_only_while_alive():
    """A recipe matches its map by memory and layout only while that map is alive: memory freed
    and viewed again by another tensor never gets the old recipe."""
    from codesign.nn.mixed import Recomputed

    memory = torch.randn(20)
    book = Recomputed()
    out = book.note(memory[:10], torch.relu, torch.randn(10))  # a map living in memory[:10]
    assert book._recipe(out) is not None
    assert book._recipe(memory[10:]) is None
    del out
    again = memory[:10]  # the same memory and layout, now another tensor's
    assert book._recipe(again) is None


def test_architecture_step_computes_no_weight_gradient():
    """weights_frozen: the architecture's gradients are those of a full backward, the weights
    get none (and require gradients again afterwards); on the reference backend (DARTS as
    written) nothing changes."""
    from codesign import use_backend
    from codesign.nn import weights_frozen

    space = create_space("nb201", input_shape=(1, 3, 8, 8), c=4, cells=1)
    torch.manual_seed(0)
    net = space.supernet().double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    w = [torch.softmax(torch.randn(len(d.options), dtype=torch.float64), 0).requires_grad_() for d in space.decisions()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    full = torch.autograd.grad(net(x, w).square().sum(), w)
    net.load_state_dict(state)
    with weights_frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
        net(x, w).square().sum().backward()
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    for a, b in zip(full, w):
        torch.testing.assert_close(b.grad, a)
    with use_backend("reference"), weights_frozen(net):
        assert all(p.requires_grad for p in net.parameters())


def test_single_path_scaling_passes_the_map_on():
    """A hard sample's weight is 1: the scaled map is the candidate's own memory and its gradient
    passes on unchanged; the weight's gradient is sum(grad * y); any other weight scales."""
    from codesign.nn.mixed import scaled

    for fmt in (torch.contiguous_format, torch.channels_last):
        y = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
        one = torch.ones(1, dtype=torch.float64, requires_grad=True)
        out = scaled(y, one)
        assert out.data_ptr() == y.data_ptr()
        g = torch.randn_like(out)
        gy, gw = torch.autograd.grad(out, [y, one], g)
        torch.testing.assert_close(gy, g)
        torch.testing.assert_close(gw, (g * y).sum().reshape(1))
        assert torch.autograd.gradcheck(scaled, (y, torch.tensor([0.3], dtype=torch.float64, requires_grad=True)))


def test_frozen_running_stats_restores_every_batch_norm():
    from codesign.nn import frozen_running_stats

    net = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2, momentum=None))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with frozen_running_stats(net):
        net(torch.randn(4, 2, 3, 3))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    assert net[1].momentum == 0.1 and net[2].momentum is None
    net(torch.randn(4, 2, 3, 3))
    assert int(net[1].num_batches_tracked) == 1


def test_partial_channel_edges_shapes_and_mix():
    """PC-DARTS: 1/K of the channels take the candidates (built at C/K channels), the rest bypass
    them (max-pooled at stride 2), then the channels are shuffled in K groups."""
    from codesign import use_backend
    from codesign.nn import MixedEdge, channel_shuffle

    space = create_space("darts", c=8, layers=3, input_shape=(1, 3, 8, 8), partial_channels=4)
    net = space.supernet()
    edges = [e for e in net.modules() if isinstance(e, MixedEdge)]
    assert all(e.partial == 4 for e in edges)
    assert net.cells[0].edges[0].ops["sep_conv_3x3"][0][1].in_channels == 2  # 8 // 4
    w = [torch.softmax(torch.randn(8), 0) for _ in space.decisions()]
    assert net(torch.randn(2, 3, 8, 8), w).shape == (2, 10)
    for stride in (1, 2):
        edge = MixedEdge(["none", "avg_pool_3x3", "skip_connect"] if stride == 1 else ["none", "avg_pool_3x3"],
                         {}, stride, partial_channels=4).double()
        x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
        wt = torch.softmax(torch.randn(len(edge.options), dtype=torch.float64), 0)
        out = edge(x, wt)
        ho = (5 - 1) // stride + 1
        assert out.shape == (2, 8, ho, ho)
        part = _free_mix(edge, x[:, :2], wt)
        rest = x[:, 2:] if stride == 1 else torch.nn.functional.max_pool2d(x[:, 2:], 2, 2, ceil_mode=True)
        torch.testing.assert_close(out, channel_shuffle(torch.cat([part, rest], 1), 4))
        with use_backend("reference"):
            torch.testing.assert_close(edge(x, wt), out)
    with pytest.raises(CodesignError, match="partial_channels=3 must divide c=8"):
        create_space("darts", c=8, layers=3, partial_channels=3)
    with pytest.raises(CodesignError, match="partial_channels must be an int >= 1"):
        create_space("nb201", partial_channels=0)
    with pytest.raises(CodesignError, match="checkpoint must be 0 or 1"):
        create_space("nb201", checkpoint=2)


def _free_mix(edge, x, wt):
    """sum_k w_k * op_k(x) of an edge of parameter-free options, by the reference ops."""
    from codesign import reference

    return sum(wt[k] * reference.free_op(edge.free[o], x, edge.stride) for k, o in enumerate(edge.options))


@pytest.mark.parametrize("name, args", SUPERNETS, ids=[n for n, _ in SUPERNETS])
def test_single_path_equals_one_hot_soft_mix(name, args):
    """One sampled candidate per edge (no other candidate runs, none does nothing) gives what the
    soft mix with one-hot weights gives, on the fused and the reference formulation alike."""
    from codesign import use_backend

    space = create_space(name, input_shape=(1, 3, 8, 8), **args)
    torch.manual_seed(0)
    net = space.supernet().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for seed in range(3):
        choices = space.random_choices(random.Random(seed))
        if name == "nb201" and seed == 0:
            choices = [0] * len(choices)  # every edge none: nodes are zero maps
        onehot = [torch.nn.functional.one_hot(torch.tensor(k), len(d.options)).double()
                  for k, d in zip(choices, space.decisions())]
        single = net(x, onehot, choices)
        torch.testing.assert_close(single, net(x, onehot))
        with use_backend("reference"):
            torch.testing.assert_close(net(x, onehot, choices), single)


def test_gdas_draws_every_decision_in_one_call(digits, monkeypatch):
    """GDAS samples all decisions with one gumbel_softmax call on -inf-masked logits, also where
    decisions have different option counts (the mobilenet space)."""
    import codesign.search.strategies as strategies

    calls = []
    real = strategies.gumbel_softmax

    def counting(logits, *a, **kw):
        calls.append(tuple(logits.shape))
        return real(logits, *a, **kw)

    monkeypatch.setattr(strategies, "gumbel_softmax", counting)
    space = create_space("mobilenet", input_shape=(1, 1, 8, 8))
    counts = [len(d.options) for d in space.decisions()]
    assert len(set(counts)) > 1
    cfg = small_cfg("gdas")
    s = create_strategy("gdas", context(space, digits, table_for(space), [], cfg))
    ws, idx = s.sample(3)
    assert calls == [(len(counts), max(counts))]
    assert [len(w) for w in ws] == counts and all(0 <= i < k for i, k in zip(idx, counts))
    assert all(float(w[i].detach()) == 1.0 and float(w.detach().sum()) == 1.0 for w, i in zip(ws, idx))
    grads = torch.autograd.grad(sum(w[i] for w, i in zip(ws, idx)), list(s.alphas))
    assert all(torch.isfinite(g).all() for g in grads)


def test_the_default_strategy_is_zero_cost_on_a_fixed_device_and_gdas_when_the_hardware_is_searched():
    assert SearchConfig().strategy == "zero-cost" and SearchConfig().zc_score == "synflow"
    assert SearchConfig(strategy="naswot").zc_score is None
    assert SearchConfig.from_dict({**SearchConfig().to_dict(), "zc_score": None}).zc_score == "synflow"
    assert "--zc-score" not in SearchConfig().command_line()
    assert "--zc-score naswot+params" in SearchConfig(zc_score="naswot+params").command_line()
    assert SearchConfig(hw_space="eyeriss-sweep").strategy == "gdas"
    assert SearchConfig(strategy="random", hw_space="eyeriss-sweep").strategy == "random"
    # the resolved default is written to config.json and read back as it was run
    assert SearchConfig.from_dict(SearchConfig().to_dict()).strategy == "zero-cost"
    assert SearchConfig.from_dict({**SearchConfig().to_dict(), "strategy": "gdas"}).strategy == "gdas"
    # the command that makes a config names the strategy only when it is not the default
    assert "--strategy" not in SearchConfig().command_line()
    assert "--strategy" not in SearchConfig(hw_space="eyeriss-sweep").command_line()
    assert "--strategy gdas" in SearchConfig(strategy="gdas").command_line()
    assert "--strategy naswot" in SearchConfig(strategy="naswot", hw_space="eyeriss-sweep").command_line()


def test_strategy_registry():
    assert list_strategies() == ["darts", "darts2", "evolution", "gdas", "naswot", "random", "rsws", "zero-cost"]
    with pytest.raises(CodesignError, match="unknown strategy 'enas'"):
        create_strategy("enas", None)


# --- the pipeline (real profiling, cost model, TVM measurement) ------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    # The quick policy: the tuned default's profiling and whole-network tuning are tested in
    # test_tuned.py and take minutes here.
    cfg = SearchConfig(space_args={"c": 4, "cells": 1}, strategy="gdas", epochs=3, warmup_epochs=1, train_epochs=2,
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
    # the relative latency budget is a fraction of the costliest network's fastest run (the table's
    # anchors): the found network is judged by its fastest run too, and the results say so
    assert json.loads((run / "costs.json").read_text())["calibration"]["networks"]["statistic"] == "min"
    assert 0 < r["measured"]["latency_min_ms"] <= r["measured"]["latency_ms"]
    assert r["budgets_measured_by"] == {"latency_ms": "min"}
    measure = json.loads((run / "measure.json").read_text())
    assert r["budgets_met_measured"] == all(
        (measure["latency_min_ms"] if b["metric"] == "latency_ms" else measure[b["metric"]]) <= b["limit"]
        for b in r["budgets"] if measure.get(b["metric"]) is not None)
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
    (["search", "--strategy", "gdas", "--regularizer", "fairdarts"], "unknown regularizer 'fairdarts'"),
    (["search", "--strategy", "gdas", "--regularizer", "drnas"], "regularizer drnas applies to darts, darts2, not gdas"),
    (["search", "--strategy", "random", "--regularizer", "tunas"], "random has none"),
    (["search", "--strategy", "gdas", "--regularizer", "tunas", "--regularizer-arg", "tunas.strength=2"], "unknown setting 'strength'"),
    (["search", "--strategy", "gdas", "--regularizer", "tunas", "--regularizer-arg", "shrink.stages=2"], "NAME.KEY=VALUE"),
    (["search", "--strategy", "gdas", "--regularizer", "beta-darts", "--regularizer-arg", "beta-darts.weight=-1"], "must be a number >= 0"),
    (["search", "--strategy", "gdas", "--regularizer", "tunas,tunas"], "names a remedy twice"),
    (["search", "--strategy", "gdas", "--max-passes", "100"], "gradient strategies run --epochs"),
    (["search", "--strategy", "rsws", "--max-passes", "0"], "--max-passes must be a positive number"),
    (["search", "--arch-batch-size", "0"], "--arch-batch-size must be an int >= 1"),
    (["search", "--strategy", "rsws", "--ws-candidates", "0"], "--ws-candidates must be >= 1"),
    (["search", "--strategy", "naswot", "--zc-pool", "0"], "--zc-pool must be >= 1"),
    (["search", "--zc-select", "best"], "--zc-select takes score or val"),
    (["search", "--strategy", "zero-cost", "--zc-score", "flops"], "unknown score 'flops'; known: naswot, params, synflow"),
    (["search", "--strategy", "zero-cost", "--zc-score", "synflow+synflow"], "names a score twice"),
    (["search", "--strategy", "zero-cost", "--zc-score", "synflow+"], "unknown score ''"),
    (["search", "--strategy", "naswot", "--zc-score", "synflow"], "use --strategy zero-cost"),
    (["search", "--strategy", "random", "--zc-score", "synflow"], "random scores none"),
    (["search", "--calibrate-networks", "1"], "--calibrate-networks must be 0 (off) or >= 2"),
    (["search", "--calibrate-networks", "-3"], "--calibrate-networks must be 0 (off) or >= 2"),
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
    # the finished run's policy: its profiles and calibrated networks are reused (the tuned default
    # would tune every kernel first, minutes here)
    code = cli_main(["search", "--space-arg", "c=4", "--space-arg", "cells=1", "--latency-ms", "0.0001",
                     "--schedule", "untuned", "--db", str(root / "p.sqlite"), "--run-dir", str(tmp_path / "r"),
                     "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "minimum achievable is" in err
    assert not (tmp_path / "r").exists()  # refused before the run directory is written


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
    args = [sys.executable, "-m", "codesign.cli", "search", "--strategy", "darts", "--space-arg", "c=4", "--space-arg", "cells=1",
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


def test_cost_table_matches_whole_graph_costs_at_both_ends(finished_run):
    """The additive table is anchored on whole-graph costs of the cheapest and the costliest
    network: their measured latencies (the calibration timed both), the cost model's predictions
    for energy; the cheapest network costs more than nothing."""
    from codesign.costs import ModelCostSource
    from codesign.predict import load_cost_model
    from codesign.search.costs import network_cost

    _, root = finished_run
    costs = CostTable.load(root / "run" / "costs.json")
    model = load_cost_model(root / "run" / "cost_model.json")
    space = create_space("nb201", input_shape=(1, 1, 8, 8), c=4, cells=1)
    timed = costs.calibration["networks"]["networks"]
    for pick, row in ((space.cheapest, timed[0]), (space.costliest, timed[1])):
        choices = pick(costs.table["energy_mj"])
        whole = network_cost(space, space.format(choices), ModelCostSource(model))
        assert costs.of(choices, "energy_mj") == pytest.approx(whole["energy_mj"], rel=1e-6)
        assert costs.of(space.parse(row["genotype"])) == pytest.approx(row["latency_ms"], rel=1e-6)
        assert row["table_ms"] == pytest.approx(row["latency_ms"], rel=1e-6)
    assert timed[0]["genotype"] == space.format(space.cheapest(costs.table["latency_ms"]))
    assert costs.of(space.cheapest(costs.table["latency_ms"])) > 0


def test_the_table_is_calibrated_on_whole_networks_timed_once(finished_run):
    """Six whole networks of the space are timed by TVM before the search; the cost model's network
    terms are fitted on them (and saved with it); a later run on the same database reuses them."""
    import dataclasses

    from codesign.pipeline.phases import costs_phase, setup
    from codesign.predict import load_cost_model

    r, root = finished_run
    costs = CostTable.load(root / "run" / "costs.json")
    fit = costs.calibration["networks"]
    assert len(fit["networks"]) == 6 and fit["timed_now"] == 6
    assert len({n["genotype"] for n in fit["networks"]}) == 6
    assert all(n["latency_ms"] > 0 and n["kernels"] > 0 for n in fit["networks"])
    model = load_cost_model(root / "run" / "cost_model.json")
    assert (model.overhead_ms, model.per_kernel_overhead_ms, model.network_scale) == (
        fit["overhead_ms"], fit["per_kernel_overhead_ms"], fit["network_scale"])
    # the fit is what it says: each network's prediction over its measurement
    space = create_space("nb201", input_shape=(1, 1, 8, 8), c=4, cells=1)
    for n, ratio in zip(fit["networks"], fit["fit_ratio"]):
        pred = model.predict_network(space.network_kernels(n["genotype"]))["latency_ms"]
        assert pred / n["latency_ms"] == pytest.approx(ratio, rel=1e-6)
    # the same space and device again: nothing is timed, the same terms are fitted
    cfg = SearchConfig.from_dict(json.loads((root / "run" / "config.json").read_text())["config"])
    again = costs_phase(setup(cfg, quiet=True), None).table.calibration["networks"]
    assert again["timed_now"] == 0
    assert [n["latency_ms"] for n in again["networks"]] == [n["latency_ms"] for n in fit["networks"]]
    off = costs_phase(setup(dataclasses.replace(cfg, calibrate_networks=0), quiet=True), None).table
    assert "networks" not in off.calibration


def test_the_derived_network_is_timed_against_the_budget_and_derived_again_while_over(finished_run):
    """The pipeline times the derived network beside the costliest calibrated one; a network
    measured over the budget is derived again with the table aiming lower."""
    from codesign.pipeline.phases import costs_phase, setup, verify_latency
    from codesign.search.derive import derive

    r, root = finished_run
    verified = r["derived"]["verified"]
    assert 1 <= len(verified["tries"]) <= 12
    limit = next(b["limit"] for b in r["budgets"] if b["metric"] == "latency_ms")
    raw = []
    for t in verified["tries"]:
        assert t["latency_ms"] > 0 and t["costliest_ms"] > 0
        raw = [] if t["timing"] == 1 else raw
        raw.append(t["latency_ms"] / t["costliest_ms"])
        # a second timing keeps the lesser of the two shares, a third the median of three
        expected = raw[0] if t["timing"] == 1 else min(raw) if t["timing"] == 2 else sorted(raw)[1]
        assert t["share_of_costliest"] == pytest.approx(expected)
        assert t["meets_budgets"] == (t["latency_estimate_ms"] <= limit)
    assert verified["tries"][-1]["genotype"] == r["genotype"]
    # a device that times the derived network over the budget twice, then the next one at 10 %
    cfg = SearchConfig.from_dict(json.loads((root / "run" / "config.json").read_text())["config"])
    s = setup(cfg, quiet=True)
    costs = costs_phase(s, None)
    top = costs.table.calibration["networks"]["networks"][1]["genotype"]
    found = json.loads((root / "run" / "search.json").read_text())
    derived = derive(s.space, costs.table, s.source, found, costs.budgets, cfg.objective)
    # over the budget by less than the table's slack below it: aiming lower than the budget alone
    # would leave the network as it is; it must aim lower than the network
    limit = next(b.limit for b in costs.budgets if b.metric == "latency_ms")
    slack = limit / costs.table.of(s.space.parse(derived["genotype"]))
    over = (1 + min(slack, 1.5)) / 2 if slack > 1.02 else 1.5
    top_ms = costs.table.of(s.space.parse(top))
    shares = iter([over * limit / top_ms, over * limit / top_ms, 0.1, 0.1])
    s.source.time_networks = lambda space, gs: {top: 1.0, **{g: next(shares) for g in gs if g != top}}
    out = verify_latency(s, costs, found, derived)
    tries = out["verified"]["tries"]
    # over twice (the second timing confirms it), then a cheaper network under the budget
    assert [(t["meets_budgets"], t["timing"]) for t in tries] == [(False, 1), (False, 2), (True, 1)]
    assert out["verified"]["meets_budgets"] and tries[0]["genotype"] == tries[1]["genotype"]
    assert tries[2]["genotype"] == out["genotype"] != tries[0]["genotype"]
    # over in one timing of three (a burst of load): the network stays
    shares = iter([over * limit / top_ms, 0.1, 0.1])
    kept = verify_latency(s, costs, found, derive(s.space, costs.table, s.source, found, costs.budgets, cfg.objective))
    assert [t["timing"] for t in kept["verified"]["tries"]] == [1, 2, 3] and kept["genotype"] == derived["genotype"]
    assert kept["verified"]["meets_budgets"]
    # under in one timing of three (a burst that slowed the costliest network): over by the median
    shares = iter([over * limit / top_ms, 0.1, over * limit / top_ms, 0.1])
    again = verify_latency(s, costs, found, derive(s.space, costs.table, s.source, found, costs.budgets, cfg.objective))
    assert [(t["meets_budgets"], t["timing"]) for t in again["verified"]["tries"]] == [
        (False, 1), (True, 2), (False, 3), (True, 1)]
    assert again["genotype"] != derived["genotype"] and again["verified"]["meets_budgets"]
    assert costs.table.of(s.space.parse(out["genotype"])) < costs.table.of(s.space.parse(tries[0]["genotype"]))
    # under by the first timing but within 5 % of the line: two more timings, the median decides
    shares = iter([0.98 * limit / top_ms, 1.03 * limit / top_ms, 1.04 * limit / top_ms, 0.1])
    near = verify_latency(s, costs, found, derive(s.space, costs.table, s.source, found, costs.budgets, cfg.objective))
    assert [(t["meets_budgets"], t["timing"]) for t in near["verified"]["tries"]] == [
        (True, 1), (True, 2), (False, 3), (True, 1)]
    assert near["genotype"] != derived["genotype"] and near["verified"]["meets_budgets"]
    shares = iter([0.98 * limit / top_ms, 1.03 * limit / top_ms, 0.97 * limit / top_ms])
    held = verify_latency(s, costs, found, derive(s.space, costs.table, s.source, found, costs.budgets, cfg.objective))
    assert [t["timing"] for t in held["verified"]["tries"]] == [1, 2, 3] and held["genotype"] == derived["genotype"]
    assert held["verified"]["tries"][-1]["share_of_costliest"] == pytest.approx(0.98 * limit / top_ms)
    shares = iter([0.9 * limit / top_ms])
    clear = verify_latency(s, costs, found, derive(s.space, costs.table, s.source, found, costs.budgets, cfg.objective))
    assert [t["timing"] for t in clear["verified"]["tries"]] == [1]


def test_a_network_over_the_budget_is_kept_when_nothing_cheaper_meets_every_budget(finished_run, monkeypatch):
    """The device check must not end a finished search: where the table aiming lower leaves no
    network meeting every budget (latency with energy), the network is kept and flagged."""
    from codesign.errors import CodesignError
    from codesign.pipeline import phases
    from codesign.search.derive import derive

    _, root = finished_run
    cfg = SearchConfig.from_dict(json.loads((root / "run" / "config.json").read_text())["config"])
    s = phases.setup(cfg, quiet=True)
    costs = phases.costs_phase(s, None)
    top = costs.table.calibration["networks"]["networks"][1]["genotype"]
    found = json.loads((root / "run" / "search.json").read_text())
    derived = derive(s.space, costs.table, s.source, found, costs.budgets, cfg.objective)
    assert derived["genotype"] != top
    s.source.time_networks = lambda space, gs: {top: 1.0, **{g: 0.99 for g in gs if g != top}}

    def nothing_cheaper(*args, **kwargs):
        raise CodesignError("no network of the space meets every budget together; relax one of them")

    monkeypatch.setattr(phases, "derive", nothing_cheaper)
    out = phases.verify_latency(s, costs, found, dict(derived))
    assert out["genotype"] == derived["genotype"] and out["verified"]["meets_budgets"] is False
    assert [t["timing"] for t in out["verified"]["tries"]] == [1, 2]
    assert "no network meets every budget" in out["verified"]["note"]


def test_a_relative_budget_on_an_anchored_table_is_judged_by_the_fastest_run():
    """Like with like: a "0.5x" budget whose anchors were timed by their fastest runs judges the
    network by its fastest run; an absolute budget, or a table nothing anchors, by the
    measurement's own statistic."""
    from codesign.pipeline.run import _measured_by, _met
    from codesign.search.budgets import Budget

    relative, absolute = [Budget("latency_ms", "0.5x", 0.30)], [Budget("latency_ms", "0.3", 0.30)]
    m = {"latency_ms": 0.31, "latency_min_ms": 0.26, "statistic": "median", "energy_mj": 1.0}
    assert _met(m, relative, "min") is True and _measured_by(m, relative, "min") == {"latency_ms": "min"}
    assert _met(m, relative, None) is False and _measured_by(m, relative, None) == {"latency_ms": "median"}
    assert _met(m, absolute, "min") is False and _measured_by(m, absolute, "min") == {"latency_ms": "median"}
    assert _met({"latency_ms": 0.31, "statistic": "median"}, relative, "min") is False  # no fastest run recorded
    energy = [Budget("energy_mj", "0.5x", 0.9)]
    assert _met(m, relative + energy, "min") is False and _met(m, [*relative, Budget("energy_mj", "2", 2.0)], "min")
    assert _met(None, relative, "min") is None and _measured_by(None, relative, "min") is None


def test_anchor_table_puts_two_measured_networks_on_their_latencies():
    from codesign.search.costs import anchor_table

    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    t = table_for(space)
    low, top = space.cheapest(t.table["latency_ms"]), space.costliest(t.table["latency_ms"])
    mid = space.parse(space.sample(random.Random(1)))
    before = [t.of(c) for c in (low, mid, top)]
    anchor_table(t, low, 0.8, top, 2.0)
    assert (t.of(low), t.of(top)) == (pytest.approx(0.8), pytest.approx(2.0))
    # what lies between keeps its place between the anchors
    frac = (before[1] - before[0]) / (before[2] - before[0])
    assert (t.of(mid) - 0.8) / 1.2 == pytest.approx(frac)
    assert t.calibration["latency_ms"]["measured_anchors"]["costliest_ms"] == 2.0
    np.testing.assert_allclose(np.concatenate(t.table["energy_mj"]), np.concatenate(table_for(space).table["energy_mj"]))


# --- darts2: DARTS eq. 8 against the exact hypergradient ----------------------------------------

def test_darts2_architecture_gradient_matches_the_exact_hypergradient(digits):
    """darts2's gradient (finite differences around w) agrees with the gradient of
    L_val(w - xi grad_w L_train(w, alpha), alpha) taken exactly by double backward, to first order
    in the finite-difference radius; the second-order term it adds is far larger than that agreement.
    (A tiny ReLU network is piecewise linear: radii large enough to cross a kink, here 1e-5 and up,
    measure a jump rather than the Hessian, so the check uses radii below that.)"""
    from codesign import use_backend

    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    cfg = small_cfg("darts2", warmup_epochs=0)
    torch.manual_seed(0)
    with use_backend("reference"):  # plain torch ops: differentiable twice
        s = create_strategy("darts2", context(space, digits, costs, [], cfg))
        s.net.double()
        with torch.no_grad():
            for a in s.alphas:
                a.data = torch.randn(a.shape, dtype=torch.float64)
        x = digits.x_train[:48].double()
        y = digits.y_train[:48]
        xt, yt, xv, yv = x[:24], y[:24], x[24:], y[24:]
        xi = 0.5  # a large virtual step, so that the second-order term is far above the tolerance
        names = [n for n, _ in s.net.named_parameters()]
        params = [p for _, p in s.net.named_parameters()]

        def exact():
            weights = [torch.softmax(a, 0) for a in s.alphas]
            loss_t = torch.nn.functional.cross_entropy(torch.func.functional_call(s.net, dict(zip(names, params)),
                                                                                   (xt, weights)), yt)
            g = torch.autograd.grad(loss_t, params, create_graph=True, allow_unused=True)
            virtual = {n: p if gi is None else p - xi * gi for n, p, gi in zip(names, params, g)}
            loss_v = torch.nn.functional.cross_entropy(torch.func.functional_call(s.net, virtual, (xv, weights)), yv)
            return torch.autograd.grad(loss_v, list(s.alphas))

        def first_order():
            weights = [torch.softmax(a, 0) for a in s.alphas]
            with torch.no_grad():
                w = [p.detach().clone() for p in params]
                loss_t = torch.nn.functional.cross_entropy(s.net(xt, weights), yt)
            g = torch.autograd.grad(torch.nn.functional.cross_entropy(s.net(xt, weights), yt), params,
                                    allow_unused=True)
            with torch.no_grad():
                for p, gi in zip(params, g):
                    if gi is not None:
                        p.sub_(xi * gi)
            out = torch.autograd.grad(torch.nn.functional.cross_entropy(s.net(xv, [torch.softmax(a, 0) for a in
                                                                                     s.alphas]), yv), list(s.alphas))
            with torch.no_grad():
                for p, b in zip(params, w):
                    p.copy_(b)
            del loss_t
            return out

        before = [p.detach().clone() for p in params]
        ref = torch.cat([g.flatten() for g in exact()])
        plain = torch.cat([g.flatten() for g in first_order()])
        errors = {}
        for radius in (1e-6, 1e-7):  # small enough that the perturbation crosses no ReLU kink of this net
            s.fd_radius = radius
            s._second_order(xv, yv, xt, yt, seed=3, xi=xi)
            got = torch.cat([a.grad.flatten() for a in s.alphas])
            errors[radius] = float((got - ref).norm() / ref.norm())
            for p, b in zip(params, before):  # the weights come back exactly
                assert torch.equal(p.detach(), b)
    second_order_term = float((plain - ref).norm() / ref.norm())
    assert max(errors.values()) < 1e-6, errors
    assert second_order_term > 1e4 * max(errors.values()), (second_order_term, errors)


# --- regularizers ---------------------------------------------------------------------------------

def _gradient_search(strategy, regularizer, digits, **kw):
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.6x")], costs, space)
    cfg = small_cfg(strategy, regularizer=regularizer, **kw)
    return create_strategy(strategy, context(space, digits, costs, budgets, cfg)), space, costs, budgets


def test_regularizer_registry_lists_every_remedy():
    from codesign.search import list_regularizers

    assert list_regularizers() == ["beta-darts", "darts-minus", "drnas", "shrink", "tunas"]


def test_beta_decay_grows_with_the_search_and_is_the_mean_logsumexp(digits):
    s, *_ = _gradient_search("darts", "beta-darts", digits, epochs=4, warmup_epochs=1,
                             regularizer_args={"beta-darts.weight": 2.0})
    alphas = [a.detach().clone().requires_grad_() for a in s.alphas]
    spe = s.steps_per_epoch
    s.gstep = spe * 1  # the first architecture step: nothing yet
    assert float(s.remedies.loss(alphas, s.probs())) == 0.0
    s.gstep = spe * 1 + (spe * 3) // 2  # half-way through the architecture steps
    want = 2.0 * s.arch_progress() * torch.stack([torch.logsumexp(a, 0) for a in alphas]).mean()
    torch.testing.assert_close(s.remedies.loss(alphas, s.probs()), want)


def test_drnas_mixes_dirichlet_samples_around_their_mean(digits):
    s, *_ = _gradient_search("darts", "drnas", digits)
    with torch.no_grad():
        s.alphas[0].copy_(torch.tensor([2.0, 0.0, -0.5, 1.0, 0.0]))
    beta = torch.nn.functional.elu(s.alphas[0].detach()) + 1
    torch.testing.assert_close(s.probs()[0], beta / beta.sum(), rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    draws = torch.stack([s.mixture()[0] for _ in range(2000)]).detach()
    assert torch.all(draws >= 0) and torch.allclose(draws.sum(1), torch.ones(2000))
    torch.testing.assert_close(draws.mean(0), beta / beta.sum(), atol=0.02, rtol=0)
    assert float(draws.std(0).min()) > 0.05  # samples, not the mean
    s.mixture()[0][0].backward()  # pathwise gradient to the concentration
    assert s.alphas[0].grad is not None and s.alphas[0].grad.abs().sum() > 0


def test_darts_minus_adds_a_decaying_skip_where_the_identity_is_free(digits):
    s, space, *_ = _gradient_search("darts", "darts-minus", digits, epochs=3, warmup_epochs=1)
    skip = space.decisions()[0].options.index("skip_connect")
    spe = s.steps_per_epoch
    for gstep, beta in ((spe, 1.0), (spe + spe, 0.5), (3 * spe, 0.0)):
        s.gstep = gstep
        for w, p in zip(s.mixture(), s.probs()):
            torch.testing.assert_close(w - p, beta * torch.nn.functional.one_hot(torch.tensor(skip), 5).float())
    darts = create_space("darts", c=2, layers=3, input_shape=(1, 1, 8, 8))
    ident = darts.identity_options()
    names = [d.name for d in darts.decisions()]
    assert [n for n, k in zip(names, ident) if k is None] == ["reduce/0->2", "reduce/1->2", "reduce/0->3",
                                                             "reduce/1->3", "reduce/0->4", "reduce/1->4",
                                                             "reduce/0->5", "reduce/1->5"]
    mobile = create_space("mobilenet", input_shape=(1, 3, 8, 8))
    assert all((k is None) == ("skip" not in d.options) for d, k in zip(mobile.decisions(), mobile.identity_options()))


def test_shrink_leaves_two_options_per_decision_and_gdas_samples_only_those(digits):
    s, *_ = _gradient_search("gdas", "shrink", digits, epochs=7, warmup_epochs=1)
    s.run()
    probs = [p.detach() for p in s.probs()]
    assert all(int((p > 1e-6).sum()) == 2 for p in probs)
    for seed in range(20):
        _, idx = s.sample(seed)
        assert all(float(p[k]) > 1e-6 for p, k in zip(probs, idx))
    assert s.remedies.items[0].keep(8, 1) == 5 and s.remedies.items[0].keep(8, 2) == 2  # P-DARTS's 8 -> 5 -> 2


def test_tunas_pulls_a_search_under_its_budget_up_toward_it(digits):
    s, space, costs, (budget,) = _gradient_search("darts", "tunas", digits, regularizer_args={"tunas.weight": 1.0})
    with torch.no_grad():  # every decision on its cheapest option: far under the budget
        for a, row in zip(s.alphas, costs.table["latency_ms"]):
            a.copy_(torch.tensor(-4.0 * (row - row.min()) / (row.max() - row.min() + 1e-9)))
    probs = s.probs()
    e = costs.expected(probs)
    assert float(e) < budget.limit
    loss = s.remedies.loss(list(s.alphas), probs)
    torch.testing.assert_close(loss, torch.abs(e / budget.limit - 1.0))
    loss.backward()
    with torch.no_grad():
        stepped = [torch.softmax(a - 0.1 * a.grad, 0) for a in s.alphas]
    assert float(costs.expected(stepped)) > float(e)


def test_rsws_scores_with_batch_statistics_and_leaves_the_running_ones(digits):
    from codesign.search.weight_sharing import supernet_accuracy

    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    net = space.supernet()
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bn:
        m.running_mean.fill_(3.0)
    before = [m.running_mean.clone() for m in bn]
    choices = [3, 3, 3, 3, 3, 3]
    acc = supernet_accuracy(net, space, choices, [(digits.x_train[:64], digits.y_train[:64])])
    assert 0.0 <= acc <= 1.0 and all(torch.equal(m.running_mean, b) for m, b in zip(bn, before))
    assert net.training


def test_rsws_spends_the_passes_it_is_given(digits):
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.6x")], costs, space)
    ctx = context(space, digits, costs, budgets, small_cfg("rsws", ws_candidates=4, ws_eval_batches=1))
    ctx.max_passes = 30.0
    found = create_strategy("rsws", ctx).run()
    assert abs(found["search_passes"] - 30.0) <= 0.5 and found["training_steps"] > 0


# --- naswot: a training-free preselection ----------------------------------------------------------

def test_naswot_scores_a_network_that_ignores_its_input_minus_infinity():
    from codesign.search import naswot_score

    x = torch.randn(16, 3, 8, 8)
    torch.manual_seed(0)
    live = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    dead = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    with torch.no_grad():
        dead[0].weight.zero_()  # every input gives the same code: K is singular
    a = naswot_score(live, x)
    assert math.isfinite(a) and a == naswot_score(live, x)  # deterministic; the net's mode is restored
    assert live.training and naswot_score(dead, x) == -math.inf
    live.eval()
    naswot_score(live, x)
    assert not live.training
    with pytest.raises(CodesignError, match="no ReLU-family activation"):
        naswot_score(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3)), x)


@pytest.mark.parametrize("name, kw", [("nb201", {"c": 4, "cells": 1}), ("darts", {"c": 4, "layers": 3}),
                                      ("mobilenet", {})])
def test_naswot_scores_the_networks_of_every_space(name, kw):
    """Every space's networks carry ReLU-family units (ReLU, ReLU6) that NASWOT reads; different
    networks score differently; so does SynFlow."""
    from codesign.search import naswot_score
    from codesign.search.zero_cost import synflow_score

    space = create_space(name, input_shape=(1, 3, 16, 16), **kw)
    rng = random.Random(0)
    x = torch.randn(16, 3, 16, 16)
    scores, flows = [], []
    for i in range(3):
        torch.manual_seed(i)
        net = space.build(space.format(space.random_choices(rng)))
        scores.append(naswot_score(net, x))
        flows.append(synflow_score(net, x))
    assert all(math.isfinite(v) for v in scores) and len(set(scores)) == 3
    assert all(math.isfinite(v) for v in flows) and len(set(flows)) == 3


def test_synflow_is_the_layer_count_times_the_output_of_the_absolute_network():
    """SynFlow's saliency is conserved layer by layer (Tanaka et al., 2020): for a bias-free linear
    chain of L layers with non-negative weights, every layer's sum of theta * dR/dtheta equals R, the
    summed output on an all-ones input, so the score is log(L * R); the network is left as it was."""
    from codesign.search.zero_cost import synflow_score

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5, bias=False), torch.nn.ReLU(),
                              torch.nn.Linear(5, 3, bias=False))
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(4, 3, 2, 2)
    w1, w2 = (net[1].weight.detach().double().abs(), net[3].weight.detach().double().abs())
    r = float((w2 @ w1 @ torch.ones(12, dtype=torch.float64)).sum())
    assert synflow_score(net, x) == pytest.approx(math.log(2 * r), rel=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters())) and net.training
    assert next(net.parameters()).dtype == torch.float32 and all(p.grad is None for p in net.parameters())
    dead = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3, bias=False))
    with torch.no_grad():
        dead[1].weight.zero_()
    assert synflow_score(dead, x) == -math.inf


def test_rank_sum_of_zero_cost_scores():
    """Several scores are combined by the sum of their ranks in the pool (ties share the mean
    rank); a design with a non-finite score cannot learn and gets -inf."""
    from codesign.search.zero_cost import combine_scores, parse_zc_score, score_passes

    pool = [{"scores": {"synflow": 5.0, "params": 100.0}}, {"scores": {"synflow": 7.0, "params": 10.0}},
            {"scores": {"synflow": 6.0, "params": 10.0}}, {"scores": {"synflow": -math.inf, "params": 1e6}}]
    assert combine_scores(pool, ["synflow", "params"]) == [1 + 3, 3 + 1.5, 2 + 1.5, -math.inf]
    assert combine_scores(pool, ["params"]) == [100.0, 10.0, 10.0, 1e6]
    assert parse_zc_score(" synflow + params ") == ["synflow", "params"]
    assert score_passes(["params"]) == pytest.approx(1 / 3) and score_passes(["naswot", "synflow"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("zc_score", ["synflow", "params", "naswot+synflow"])
def test_zero_cost_picks_the_best_design_by_its_score(zc_score, digits):
    """--strategy zero-cost ranks its pool by --zc-score and trains the best; its pool is paid for
    by the scores' passes; naswot is zero-cost with NASWOT's score, pool for pool."""
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.5x")], costs, space)
    logs = []
    ctx = context(space, digits, costs, budgets, small_cfg("zero-cost", zc_pool=20, zc_score=zc_score),
                  log=logs.append)
    strategy = create_strategy("zero-cost", ctx)
    found = strategy.run()
    names = zc_score.split("+")
    assert found["score"] == zc_score and logs[0]["score"] == zc_score
    assert all(set(p["scores"]) == set(names) for p in strategy.pool)
    assert found["choices"] == strategy.pool[0]["choices"] and found["candidates"] == 1
    assert strategy.pool[0]["score"] == max(p["score"] for p in strategy.pool)
    if zc_score == "params":  # the largest network of the pool under the budget
        assert strategy.pool[0]["scores"]["params"] == max(p["scores"]["params"] for p in strategy.pool)
    assert strategy.overhead_passes() == pytest.approx(20 * len(names) / 3)
    ref = create_strategy("naswot", context(space, digits, costs, budgets, small_cfg("naswot", zc_pool=20)))
    ref._score_pool()
    alt = create_strategy("zero-cost", context(space, digits, costs, budgets,
                                               small_cfg("zero-cost", zc_pool=20, zc_score="naswot")))
    alt._score_pool()
    assert [p["genotype"] for p in ref.pool] == [p["genotype"] for p in alt.pool]


def test_a_naswot_checkpoint_written_before_scores_were_named_resumes(digits):
    """A pool checkpointed by a codesign whose entries held only ``naswot_score`` is read as
    NASWOT's scores: the resumed run proposes the same designs in the same order."""
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.5x")], costs, space)
    first = create_strategy("naswot", context(space, digits, costs, budgets, small_cfg("naswot", zc_pool=12)))
    first._score_pool()
    old = first.state()
    old["pool"] = [{"index": p["index"], "choices": p["choices"], "genotype": p["genotype"],
                    "naswot_score": p["scores"]["naswot"]} for p in first.pool]
    resumed = create_strategy("naswot", context(space, digits, costs, budgets, small_cfg("naswot", zc_pool=12)))
    resumed.load(json.loads(json.dumps(old)))
    resumed.prepare()
    assert [p["score"] for p in resumed.pool] == [p["score"] for p in first.pool]
    assert resumed.propose() == first.pool[0]["choices"]


def test_naswot_picks_the_best_scored_design_and_trains_it_alone(digits):
    """By default the best NASWOT score wins: only that design is trained (as a check), and the
    search's compute is the pool's forward passes and that one candidate."""
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.3x")], costs, space)
    logs = []
    found = create_strategy("naswot", context(space, digits, costs, budgets, small_cfg("naswot", candidates=4, zc_pool=40),
                                              log=logs.append)).run()
    trained = [r for r in logs if "candidate" in r]
    assert logs[0]["pool"] == 40 and len(trained) == 1 == found["candidates"] and found["select"] == "score"
    assert trained[0]["genotype"] == logs[0]["best_genotype"] and found["choices"] == trained[0]["choices"]
    per = -(-160 // 32)
    assert found["search_passes"] == pytest.approx(40 / 3 + per)
    ctx = context(space, digits, costs, budgets, small_cfg("naswot", zc_pool=40))
    ctx.max_passes = 40 / 3 + 10 * per  # more compute does not make it train more: the score decides
    assert create_strategy("naswot", ctx).run()["choices"] == found["choices"]


def test_naswot_under_a_compute_limit_scores_as_many_designs_as_it_pays_for(digits):
    """Without --zc-pool, a compute limit sizes the pool: all of it but the one candidate trained
    goes to scoring, the search's passes stay within the limit, and the best score of the larger
    pool is at least that of a 30-design pool (same draws first). --zc-pool, or zc_select="val",
    keeps the pool as given / at the default."""
    from codesign.search.zero_cost import DEFAULT_POOL, pool_size

    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.3x")], costs, space)
    per = -(-160 // 32)  # candidate_epochs=1 over the context's 160 training images, batch 32
    ctx = context(space, digits, costs, budgets, small_cfg("naswot"))
    assert pool_size(ctx) == DEFAULT_POOL  # no limit
    ctx.max_passes = per + 30
    assert pool_size(ctx) == 90 and pool_size(ctx, "val") == DEFAULT_POOL
    assert pool_size(context(space, digits, costs, budgets, small_cfg("naswot", zc_pool=7))) == 7
    logs = []
    ctx = context(space, digits, costs, budgets, small_cfg("naswot"), log=logs.append)
    ctx.max_passes = per + 30
    found = create_strategy("naswot", ctx).run()
    assert logs[0]["pool"] == 90 and found["pool"] == 90 and found["candidates"] == 1
    assert found["search_passes"] == pytest.approx(30 + per) and found["search_passes"] <= ctx.max_passes
    small = create_strategy("naswot", context(space, digits, costs, budgets, small_cfg("naswot", zc_pool=30)))
    small._score_pool()
    assert logs[0]["best_score"] >= small.pool[0]["score"]
    with pytest.raises(CodesignError, match="--zc-pool must be >= 1"):
        SearchConfig(zc_pool=0).validate()


def test_naswot_val_trains_the_best_scored_designs_first(digits):
    """With zc_select="val", candidates are trained in the order of their scores and the best
    validation accuracy wins; the pool's forward passes are part of the search's compute, so at the
    same compute it trains fewer candidates than random search."""
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.3x")], costs, space)
    logs = []
    found = create_strategy("naswot", context(space, digits, costs, budgets,
                                              small_cfg("naswot", candidates=4, zc_pool=40, zc_select="val"),
                                              log=logs.append)).run()
    pool = logs[0]
    assert pool["pool"] == 40 and pool["scored_finite"] == 40  # (cells that ignore their input are not sampled)
    trained = [r for r in logs if "candidate" in r]
    assert len(trained) == 4 == found["candidates"]
    strategy = create_strategy("naswot", context(space, digits, costs, budgets, small_cfg("naswot", zc_pool=40)))
    strategy._score_pool()
    ranked = [p["genotype"] for p in strategy.pool]
    assert [r["genotype"] for r in trained] == ranked[:4]
    assert all(math.isfinite(p["score"]) for p in strategy.pool)
    scores = [p["score"] for p in strategy.pool]
    assert scores == sorted(scores, reverse=True)
    per = -(-160 // 32)  # candidate_epochs=1 over the context's 160 training images, batch 32
    assert found["search_passes"] == pytest.approx(40 / 3 + 4 * per)
    # at equal compute: random trains more candidates than naswot, which pays for its pool
    budget = 40 / 3 + 4 * per
    runs = {}
    for name in ("random", "naswot"):
        ctx = context(space, digits, costs, budgets, small_cfg(name, zc_pool=40, zc_select="val"))
        ctx.max_passes = budget
        runs[name] = create_strategy(name, ctx).run()
        assert runs[name]["search_passes"] <= budget + per / 2
    assert runs["naswot"]["candidates"] == 4 and runs["random"]["candidates"] > 4



@pytest.mark.parametrize("strategy", ["random", "evolution", "naswot", "rsws"])
def test_sampled_strategies_keep_only_designs_under_the_budget_whole(strategy, digits):
    """Derivation judges a design by the table and by the cost of the whole exported design; a
    sample-based strategy whose context can cost whole designs keeps only designs under both, so
    the design it chooses is the one delivered, not a repaired one. naswot looks at whole designs
    only when their turn comes (best score first), not at its whole pool."""
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.5x")], costs, space)
    calls = []

    def ok(choices):  # a made-up whole cost: designs whose first edge is not none or avg_pool are over
        return choices[0] in (0, 4)

    def whole_cost(choices):
        calls.append(list(choices))
        over = not ok(choices)
        return {"latency_ms": budgets[0].limit * (1.5 if over else 0.5)}

    logs = []
    cfg = small_cfg(strategy, candidates=4, population=2, zc_pool=40, zc_select="val" if strategy == "naswot" else "score",
                    ws_candidates=6, ws_eval_batches=1)
    ctx = context(space, digits, costs, budgets, cfg, log=logs.append)
    ctx.whole_cost = whole_cost
    strategy_obj = create_strategy(strategy, ctx)
    found = strategy_obj.run()
    assert ok(found["choices"]) and satisfied(costs, found["choices"], budgets)
    trained = [r for r in logs if "candidate" in r and "val_accuracy" in r]
    assert all(ok(r["choices"]) for r in trained)
    if strategy == "naswot":
        assert len(trained) == 4 and len(calls) < 40  # lazily: not the whole pool
        ctx2 = context(space, digits, costs, budgets, cfg)
        unfiltered = create_strategy("naswot", ctx2)
        unfiltered._score_pool()
        kept = [p["genotype"] for p in unfiltered.pool if ok(p["choices"])]
        assert [r["genotype"] for r in trained] == kept[:4]  # best scores first, over-whole ones skipped
        assert found["pool_over_whole"] == len(strategy_obj.over_whole) > 0
    else:
        assert any(not ok(c) for c in calls)  # over-whole draws were looked at and passed over


def test_naswot_keeps_its_best_scored_design_when_none_is_under_the_budget_whole(digits):
    """Where every design of the pool is over the budgets whole, naswot trains its best-scored
    design (derivation then repairs it) and says so in the log, rather than failing; with
    zc_select="val" it trains no design over whole while one under remains, the pool's last
    included."""
    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    budgets = resolve([parse_budget("latency_ms", "0.5x")], costs, space)
    logs = []
    ctx = context(space, digits, costs, budgets, small_cfg("naswot", zc_pool=12), log=logs.append)
    ctx.whole_cost = lambda c: {"latency_ms": 2 * budgets[0].limit}
    strategy = create_strategy("naswot", ctx)
    found = strategy.run()
    assert found["candidates"] == 1 and found["pool_over_whole"] == 12
    assert found["choices"] == strategy.over_whole[0]["choices"]  # the best score
    assert any("no design of the pool" in r.get("note", "") for r in logs)
    ref = create_strategy("naswot", context(space, digits, costs, budgets, small_cfg("naswot", zc_pool=12)))
    ref._score_pool()
    last = ref.pool[-1]["choices"]
    ctx = context(space, digits, costs, budgets, small_cfg("naswot", zc_pool=12, zc_select="val", candidates=6))
    ctx.whole_cost = lambda c: {"latency_ms": 0.5 * budgets[0].limit if c == last else 2 * budgets[0].limit}
    found = create_strategy("naswot", ctx).run()
    assert found["candidates"] == 1 and found["choices"] == last  # only the pool's last is under whole


# --- --compare random, end to end -------------------------------------------------------------------

def test_compare_random_runs_end_to_end(finished_run, tmp_path):
    """The default strategy and random search at its compute, both derived, trained, exported and
    measured in one run directory; both networks meet the budget by the predictor."""
    _, root = finished_run
    cfg = SearchConfig(space_args={"c": 4, "cells": 1}, epochs=2, warmup_epochs=1, train_epochs=1, candidate_epochs=1,
                       candidates=2, zc_pool=10, batch_size=64, db=str(root / "p.sqlite"), latency_ms="0.6x",
                       compare="random", schedule="untuned",  # the finished run's profiles (tuned: test_tuned.py)
                       profile_repeats=1, profile_min_repeat_ms=1.0)
    r = run_search(cfg, run_dir=tmp_path / "run", quiet=True)
    c = r["compare"]
    assert (tmp_path / "run" / "compare.json").exists() and (tmp_path / "run" / "compare-model.onnx").exists()
    assert c["strategy"] == "random" and c["candidates"] >= 1
    per_candidate = -(-len(split_train_val(load_digits(), 0.5, 0).y_train) // 64)
    assert abs(c["search_passes"] - r["search_passes"]) <= per_candidate / 2 + 1e-9
    limit = r["budgets"][0]["limit"]
    assert r["derived"]["meets_budgets"], r["derived"]
    assert c["derived"]["meets_budgets"], c["derived"]
    assert r["predicted"]["latency_ms"] <= limit and c["predicted"]["latency_ms"] <= limit
    assert r["measured"]["latency_ms"] > 0 and c["measured"]["latency_ms"] > 0
    assert 0.0 <= c["test_accuracy"] <= 1.0


# --- gdas: every decision of a step drawn in one call ----------------------------------------------

def test_gdas_draws_every_decision_of_a_step_in_one_call(digits, monkeypatch):
    """One gumbel_softmax call on the padded [decisions, options] logits per draw; the draws are
    one-hot, never pick a padded column, follow the softmax of each decision's logits, and the
    straight-through gradient reaches every decision's logits."""
    import codesign.search.strategies as st

    space = create_space("darts", c=2, layers=3, input_shape=(1, 1, 8, 8))  # decisions of 8 options
    s, *_ = _gradient_search("gdas", None, digits)
    s2 = create_strategy("gdas", context(space, digits, table_for(space), [], small_cfg("gdas")))
    for strat in (s, s2):
        with torch.no_grad():
            for a in strat.alphas:
                a.copy_(torch.randn(a.shape))
    calls = []
    real = st.gumbel_softmax
    monkeypatch.setattr(st, "gumbel_softmax", lambda logits, **kw: calls.append(logits.shape) or real(logits, **kw))
    ws, idx = s.sample(5)
    assert calls == [(6, 5)] and len(ws) == 6
    assert all(float(w.detach().sum()) == pytest.approx(1.0) and float(w[k]) == 1.0 for w, k in zip(ws, idx))
    sum(w @ torch.arange(5.0) for w in ws).backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in s.alphas)
    monkeypatch.setattr(st, "gumbel_softmax", real)
    s.epoch = 10**6  # the end of the schedule: tau = tau_min
    counts = torch.zeros(6, 5)
    for seed in range(3000):
        _, idx = s.sample(seed)
        counts[torch.arange(6), torch.tensor(idx)] += 1
    want = torch.stack([torch.softmax(a.detach() / 1.0, 0) for a in s.alphas])
    torch.testing.assert_close(counts / 3000, want, atol=0.04, rtol=0)  # Gumbel-max: P(k) = softmax(logits)_k
    _, idx = s2.sample(1)
    assert len(idx) == len(space.decisions()) and all(0 <= k < 8 for k in idx)


def test_numeric_settings_that_default_to_none_take_numbers():
    """--max-passes and --arch-batch-size default to None but hold numbers: a config.json or a
    Python caller may give them as numbers; anything else is refused by name."""
    SearchConfig(strategy="random", max_passes=150.0, arch_batch_size=32)._check_types()
    SearchConfig(strategy="rsws", max_passes=7)._check_types()
    for bad, msg in [({"strategy": "random", "max_passes": "many"}, "max_passes .* a finite number or null"),
                     ({"strategy": "random", "max_passes": float("inf")}, "a finite number or null"),
                     ({"arch_batch_size": 1.5}, "arch_batch_size .* an integer or null"),
                     ({"arch_batch_size": True}, "an integer or null")]:
        with pytest.raises(CodesignError, match=msg):
            SearchConfig(**bad)._check_types()


def test_a_budget_that_admits_a_tiny_corner_still_yields_feasible_draws(digits):
    """Rejection sampling that misses every try falls back to repairing a random design: the
    draws meet the budget and still differ; a budget nothing meets is one clear error."""
    import random as pyrandom

    from codesign.search.budgets import Budget
    from codesign.search.strategies import sample_feasible, under_budget

    space = create_space("nb201", input_shape=(1, 1, 8, 8), **TINY)
    costs = table_for(space)
    _, cheapest = costs.extreme(space, "latency_ms", "min")
    _, costliest = costs.extreme(space, "latency_ms", "max")
    tight = [Budget("latency_ms", "tight", cheapest + 0.15 * (costliest - cheapest))]
    ctx = context(space, digits, costs, tight, small_cfg("random"))
    rng = pyrandom.Random(0)
    draws = [sample_feasible(ctx, rng, tries=1) for _ in range(12)]
    assert all(under_budget(ctx, d) for d in draws)
    assert len({tuple(d) for d in draws}) > 1
    impossible = context(space, digits, costs, [Budget("latency_ms", "none", cheapest * 0.5)], small_cfg("random"))
    with pytest.raises(CodesignError, match="budget"):
        sample_feasible(impossible, rng, tries=3)


def test_the_printout_says_whether_the_measurement_meets_the_budgets_and_by_which_statistic(capsys):
    from codesign.commands.search import _print_results

    r = {"genotype": "g", "test_accuracy": 0.5, "dataset": {"dataset": "digits", "test": 10},
         "budgets": [{"metric": "latency_ms", "spec": "0.5x", "limit": 0.2}], "device": "cpu-local",
         "schedule": "tuned", "predicted": {"latency_ms": 0.15, "energy_mj": 1.0},
         "measured": {"latency_ms": 0.21, "latency_min_ms": 0.19, "onnxruntime_latency_ms": 0.1},
         "budgets_met_predicted": True, "budgets_met_measured": True, "budgets_measured_by": {"latency_ms": "min"},
         "run_dir": "runs/x"}
    _print_results(r)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("budgets met:"))
    assert "yes by the predictor, yes by the measurement (latency by its fastest run" in line
    _print_results({**r, "budgets_met_measured": False, "budgets_measured_by": {"latency_ms": "median"}})
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("budgets met:"))
    assert line.endswith("yes by the predictor, NO by the measurement")
    _print_results({**r, "measured": None, "budgets_met_measured": None, "budgets_measured_by": None})
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("budgets met:"))
    assert line.endswith("yes by the predictor")


def test_the_search_benchmark_scores_random_searchs_candidates_against_their_final_accuracy(tmp_path, monkeypatch):
    """benchmarks/search.py --part scores: the first --scores-cells candidates of each random-search
    run, trained by the final protocol once (a resumed run trains nothing), every zero-cost score
    and rank sum set against the final accuracy; a work folder without the runs says what to run."""
    import argparse
    import pickle

    from benchmark_module import load_benchmark

    bench = load_benchmark("search")
    rng = np.random.default_rng(0)
    data = tmp_path / "cifar"
    data.mkdir()
    for name, n in (("data_batch_1", 24), ("test_batch", 12)):
        (data / name).write_bytes(pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                                b"labels": [int(v) for v in rng.integers(0, 10, n)], b"batch_label": b"x"}))
    space = create_space("darts", **bench.SPACE_ARGS["darts"])
    r = random.Random(0)
    run = tmp_path / "work" / "darts-random-s0"
    run.mkdir(parents=True)
    lines = [json.dumps({"pool": 5})] + [json.dumps({"candidate": i, "genotype": space.format(space.random_choices(r)),
                                                     "val_accuracy": 0.1 * i}) for i in range(4)]
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    args = argparse.Namespace(spaces=["darts"], seeds=[0], scores_cells=3, data_dir=str(data), batch_size=8,
                              train_epochs=1)
    out = bench.part_scores(args, tmp_path / "work")["darts"]
    assert out["cells"] == 3 and [row["candidate"] for row in out["rows"]] == [0, 1, 2]
    assert set(out["signals"]) == {*bench.SCORE_KEYS, *bench.RANK_SUMS, "one_epoch_val_accuracy"}
    assert all(math.isfinite(row[k]) for row in out["rows"] for k in bench.SCORE_KEYS)
    store = json.loads((tmp_path / "work" / "scores-darts.json").read_text())
    assert len(store) == 3 and all("final_test_accuracy_1_epochs" in v for v in store.values())
    monkeypatch.setattr("codesign.search.train.train_network", lambda *a, **k: pytest.fail("trained twice"))
    again = bench.part_scores(args, tmp_path / "work")["darts"]
    assert [row["final"] for row in again["rows"]] == [row["final"] for row in out["rows"]]
    args.seeds = [0, 1]
    with pytest.raises(SystemExit, match="run --part compare --spaces darts --seeds 1"):
        bench.part_scores(args, tmp_path / "work")
