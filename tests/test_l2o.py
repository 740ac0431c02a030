"""Learned optimizers: rules against their formulas, the torch optimizer wrapper, optimizer files,
meta-training (resume equality after a kill, NaN skipping, it learns), evaluation and the CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from codesign.cli import main
from codesign.errors import CodesignError
from codesign.l2o import (
    FORMAT_VERSION,
    LearnedOptimizer,
    TrainConfig,
    create_rule,
    create_task,
    list_pretrained,
    list_rules,
    list_tasks,
    load_optimizer,
    load_rule,
    resolve_optimizer_path,
    save_rule,
    train,
)
from codesign.l2o.evaluate import compare, run
from codesign.l2o.io import PRETRAINED_DIR
from codesign.l2o.train import ckpt_paths

TINY = {"unrolls": 2, "unroll_length": 5}


def _rule(kind, seed=0):
    torch.manual_seed(seed)
    return create_rule(kind)


# --- rules ------------------------------------------------------------------------------------


def test_lstm_preprocessing_matches_the_paper():
    rule = _rule("lstm")
    g = torch.cat([torch.randn(50) * 10.0 ** torch.randint(-8, 3, (50,)).float(), torch.tensor([0.0, 1e-6, -1e-6])])
    got = rule.preprocess(g)
    p = 10.0
    for i, gi in enumerate(g.tolist()):
        if abs(gi) >= math.exp(-p):
            want = (math.log(abs(gi)) / p, math.copysign(1.0, gi))
        else:
            want = (-1.0, math.exp(p) * gi)
        assert got[i].tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_rnnprop_is_invariant_to_the_gradient_scale():
    rule = _rule("rnnprop")
    g = torch.randn(40)
    s1, s2 = rule.init_state(40), rule.init_state(40)
    for _ in range(3):
        u1, s1 = rule(g, s1)
        u2, s2 = rule(1000.0 * g, s2)
        torch.testing.assert_close(u1, u2, rtol=1e-4, atol=1e-6)
        assert u1.abs().max() <= rule.output_scale  # bounded step
        g = torch.randn(40)


def test_create_rule_rejects_unknown_kind_and_config():
    with pytest.raises(CodesignError, match="unknown learned optimizer 'adamw'.*lstm"):
        create_rule("adamw")
    with pytest.raises(CodesignError, match=r"unknown config \['hiden'\]"):
        create_rule("lstm", hiden=3)


# --- the torch optimizer ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list_rules())
def test_optimizer_step_matches_the_rule_applied_per_parameter(kind):
    rule = _rule(kind)
    torch.manual_seed(1)
    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)
    ref = [a.detach().clone(), b.detach().clone()]
    ref_states = [rule.init_state(12), rule.init_state(5)]
    opt = LearnedOptimizer([a, b], rule, step_scale=0.5)
    for _ in range(3):
        opt.zero_grad()
        ((a**2).sum() + (b.sin()).sum()).backward()
        grads = [a.grad.clone(), b.grad.clone()]
        opt.step()
        with torch.no_grad():
            for i, g in enumerate(grads):
                u, ref_states[i] = rule(g.reshape(-1), ref_states[i])
                ref[i] += 0.5 * u.view_as(ref[i])
        torch.testing.assert_close(a.detach(), ref[0])
        torch.testing.assert_close(b.detach(), ref[1])


def test_optimizer_skips_parameters_without_gradient_and_rejects_none_at_all():
    opt_params = [torch.randn(4, requires_grad=True), torch.randn(3, requires_grad=True)]
    frozen_before = opt_params[1].detach().clone()
    opt = load_optimizer("l2o:general", opt_params)
    (opt_params[0] ** 2).sum().backward()
    opt.step()
    torch.testing.assert_close(opt_params[1].detach(), frozen_before)
    assert opt_params[1] not in opt.state and opt_params[0] in opt.state
    opt.zero_grad()  # set_to_none: now no parameter has a gradient
    with pytest.raises(CodesignError, match="no parameter has a gradient: call loss.backward"):
        opt.step()
    with pytest.raises(CodesignError, match="empty parameter list"):
        load_optimizer("l2o:general", [])
    with pytest.raises(CodesignError, match="step_scale must be a number > 0"):
        load_optimizer("l2o:general", opt_params, step_scale=0)


def test_optimizer_state_dict_resumes_a_run_exactly():
    def loss_of(w):
        return ((w - torch.arange(6.0)) ** 2).sum() + w.prod().abs()

    w = torch.zeros(6, requires_grad=True)
    opt = load_optimizer("l2o:supernet", [w])
    for _ in range(4):
        opt.zero_grad()
        loss_of(w).backward()
        opt.step()
    saved_w, saved = w.detach().clone(), json.loads(json.dumps(_jsonable(opt.state_dict())))
    for _ in range(4):
        opt.zero_grad()
        loss_of(w).backward()
        opt.step()
    w2 = saved_w.clone().requires_grad_()
    opt2 = load_optimizer("l2o:supernet", [w2])
    opt2.load_state_dict(_from_jsonable(saved))
    for _ in range(4):
        opt2.zero_grad()
        loss_of(w2).backward()
        opt2.step()
    torch.testing.assert_close(w2.detach(), w.detach(), rtol=0, atol=0)


def test_optimizer_state_survives_a_search_checkpoint(tmp_path):
    from codesign.search import checkpoint

    alphas = [torch.nn.Parameter(1e-3 * torch.randn(5)) for _ in range(4)]  # as the search holds them
    opt = load_optimizer("l2o:supernet", alphas)
    for _ in range(3):
        opt.zero_grad()
        sum((a.softmax(0) * torch.arange(5.0)).sum() for a in alphas).backward()
        opt.step()
    checkpoint.save(tmp_path / "ck", {"a_opt": opt.state_dict()})
    state, _ = checkpoint.load(tmp_path / "ck")
    opt2 = load_optimizer("l2o:supernet", [torch.nn.Parameter(a.detach().clone()) for a in alphas])
    opt2.load_state_dict(state["a_opt"])
    for p, p2 in zip(alphas, opt2.param_groups[0]["params"]):
        for k, v in opt.state[p].items():
            torch.testing.assert_close(opt2.state[p2][k], v, rtol=0, atol=0)


def _jsonable(obj):  # a state dict through JSON, as a checkpoint stores it
    if isinstance(obj, torch.Tensor):
        return {"t": obj.tolist(), "shape": list(obj.shape)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def _from_jsonable(obj):
    if isinstance(obj, dict) and set(obj) == {"t", "shape"}:
        return torch.tensor(obj["t"], dtype=torch.float32).reshape(obj["shape"])
    if isinstance(obj, dict):
        return {(int(k) if k.isdigit() else k): _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


def test_optimizer_float64_parameters():
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    opt = load_optimizer("general", [w])
    start = float((w.detach() ** 2).sum())
    for _ in range(20):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert w.dtype == torch.float64 and float((w.detach() ** 2).sum()) < start


# --- optimizer files --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list_rules())
def test_save_load_round_trip(tmp_path, kind):
    rule = _rule(kind, seed=3)
    path = save_rule(rule, tmp_path / "opt.json", training={"episodes": 1})
    loaded = load_rule(path)
    g = torch.randn(30)
    u1, _ = rule(g, rule.init_state(30))
    u2, _ = loaded(g, loaded.init_state(30))
    torch.testing.assert_close(u1, u2, rtol=0, atol=0)
    assert load_rule(tmp_path / "opt").kind == kind  # without the suffix too


def test_files_of_another_format_or_version_are_refused_in_one_line(tmp_path):
    path = save_rule(_rule("lstm"), tmp_path / "opt.json")
    meta = json.loads(path.read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(meta))
    with pytest.raises(CodesignError, match=rf"optimizer format version {FORMAT_VERSION + 1}; this codesign reads "
                       rf"version {FORMAT_VERSION}") as exc:
        load_rule(path)
    assert "\n" not in str(exc.value)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "codesign-checkpoint", "format_version": 1}))
    with pytest.raises(CodesignError, match="is not a codesign optimizer file .format 'codesign-checkpoint'"):
        load_rule(other)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CodesignError, match="not JSON"):
        load_rule(tmp_path / "bad.json")
    # weights of another rule
    lstm = save_rule(_rule("lstm"), tmp_path / "a.json")
    save_rule(_rule("rnnprop"), tmp_path / "b.json")
    meta = json.loads(lstm.read_text())
    meta["weights"] = "b.npz"
    lstm.write_text(json.dumps(meta))
    with pytest.raises(CodesignError, match="does not match a lstm optimizer"):
        load_rule(lstm)
    os.remove(tmp_path / "b.npz")
    with pytest.raises(CodesignError, match="weights file .*b.npz of optimizer .* is missing"):
        load_rule(lstm)


def test_resolve_optimizer_path_and_shipped_optimizers(tmp_path):
    assert {"general", "supernet"} <= set(list_pretrained())
    for name in list_pretrained():
        path = resolve_optimizer_path(f"l2o:{name}")
        assert path == PRETRAINED_DIR / f"{name}.json" == resolve_optimizer_path(name)
        assert path.stat().st_size + path.with_suffix(".npz").stat().st_size < 200_000
        rule = load_rule(path)
        meta = json.loads(path.read_text())
        assert meta["training"]["episodes"] >= 100 and meta["training"]["skipped_segments"] == 0
        assert rule.kind in list_rules()
    mine = save_rule(_rule("lstm"), tmp_path / "mine.json")
    assert resolve_optimizer_path(f"l2o:{mine}") == mine
    with pytest.raises(CodesignError, match="no optimizer file 'nope' and no shipped optimizer of that name; "
                       "shipped: .*general"):
        resolve_optimizer_path("l2o:nope")
    with pytest.raises(CodesignError, match="empty optimizer name"):
        resolve_optimizer_path("l2o:")


# --- tasks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_tasks())
def test_tasks_are_seeded_and_adam_reduces_their_loss(name):
    a, b = create_task(name, 7), create_task(name, 7)
    pa, pb = a.init_params(), b.init_params()
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y)
    assert float(a.loss(pa)) == float(b.loss(pb))
    r = run(name, 7, lambda p: torch.optim.Adam(p, lr=0.05), 15)
    assert all(math.isfinite(v) for v in r["curve"])
    assert r["final_loss"] < create_task(name, 7).eval_loss(create_task(name, 7).init_params())


def test_supernet_task_loss_is_a_function_of_the_alphas():
    task = create_task("supernet", 3)
    (alphas,) = task.init_params()
    assert alphas.shape == (3, 5)
    alphas.requires_grad_()
    loss = task.loss([alphas])
    (g,) = torch.autograd.grad(loss, [alphas])
    assert g.abs().sum() > 0 and torch.isfinite(g).all()
    with pytest.raises(CodesignError, match="unknown task 'cifar'; known: convnet"):
        create_task("cifar", 0)


# --- meta-training ----------------------------------------------------------------------------


def _arrays(path):
    with np.load(path.with_suffix(".npz")) as z:
        return {k: z[k] for k in z.files}


def test_meta_training_resumes_to_the_same_result(tmp_path):
    cfg = dict(optimizer="lstm", tasks=["quadratic", "mlp"], seed=5, **TINY)
    full = tmp_path / "full.json"
    train(TrainConfig(episodes=4, **cfg), full, progress=False, log=lambda m: None)
    part = tmp_path / "part.json"
    train(TrainConfig(episodes=2, **cfg), part, progress=False, log=lambda m: None)
    msgs = []
    train(TrainConfig(episodes=4, **cfg), part, progress=False, log=msgs.append)
    assert any("resuming" in m and "episode 2/4" in m for m in msgs)
    a, b = _arrays(full), _arrays(part)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # settings that change the run are refused, not silently mixed
    with pytest.raises(CodesignError, match="other settings .*meta_lr"):
        train(TrainConfig(episodes=5, meta_lr=0.1, **cfg), part, progress=False)
    ckpt_json, _ = ckpt_paths(part)
    ckpt_json.write_text(json.dumps({"format": "x"}))
    with pytest.raises(CodesignError, match="not a version-1 codesign l2o checkpoint; pass --restart"):
        train(TrainConfig(episodes=5, **cfg), part, progress=False)


def test_a_kill_between_the_weights_and_the_checkpoint_resumes_from_a_consistent_pair(tmp_path):
    """A kill after the next episode's weights are written but before the checkpoint JSON names
    them: the resumed run starts from the JSON's episode with that episode's weights, and ends as an
    uninterrupted run does. The weights of older episodes are removed once the JSON moves on."""
    cfg = dict(optimizer="lstm", tasks=["quadratic"], seed=3, **TINY)
    full = tmp_path / "full.json"
    train(TrainConfig(episodes=4, **cfg), full, progress=False, log=lambda m: None)
    part = tmp_path / "part.json"
    train(TrainConfig(episodes=2, **cfg), part, progress=False, log=lambda m: None)
    ckpt_json, _ = ckpt_paths(part)
    assert json.loads(ckpt_json.read_text())["weights"] == "part.ckpt.e000002.npz"
    assert sorted(p.name for p in tmp_path.glob("part.ckpt.*.npz")) == ["part.ckpt.e000002.npz"]
    stray = tmp_path / "part.ckpt.e000003.npz"  # what a kill mid-save leaves: newer weights, older JSON
    with np.load(tmp_path / "part.ckpt.e000002.npz") as z:
        np.savez(stray, **{k: z[k] + 1.0 for k in z.files})
    train(TrainConfig(episodes=4, **cfg), part, progress=False, log=lambda m: None)
    a, b = _arrays(full), _arrays(part)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert sorted(p.name for p in tmp_path.glob("part.ckpt.*.npz")) == ["part.ckpt.e000004.npz"]
    # a checkpoint naming a file elsewhere is refused, never read
    meta = json.loads(ckpt_json.read_text())
    ckpt_json.write_text(json.dumps({**meta, "weights": "../elsewhere.ckpt.e000004.npz"}))
    with pytest.raises(CodesignError, match="not a version-1 codesign l2o checkpoint; pass --restart"):
        train(TrainConfig(episodes=5, **cfg), part, progress=False)


def test_meta_training_survives_a_kill(tmp_path):
    out = tmp_path / "k.json"
    args = [sys.executable, "-m", "codesign.cli", "l2o", "train", "--task", "quadratic", "--optimizer", "rnnprop",
            "--episodes", "25", "--unrolls", "2", "--unroll-length", "10", "--seed", "2", "--no-progress"]
    proc = subprocess.Popen(args + ["--out", str(out)], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    ckpt_json, _ = ckpt_paths(out)
    deadline = time.time() + 600  # a wait for the condition: a loaded machine starts the CLI slowly
    while time.time() < deadline and proc.poll() is None:
        if ckpt_json.exists() and json.loads(ckpt_json.read_text())["episode"] >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(ckpt_json.read_text())["episode"]
    assert 3 <= killed_at < 25 and not out.exists()
    subprocess.run(args + ["--out", str(out)], check=True, capture_output=True)
    ref = tmp_path / "ref.json"  # the same run, uninterrupted (in-process: same code path)
    train(TrainConfig(optimizer="rnnprop", tasks=["quadratic"], episodes=25, unrolls=2, unroll_length=10, seed=2),
          ref, progress=False, log=lambda m: None)
    a, b = _arrays(out), _arrays(ref)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_meta_training_skips_and_logs_non_finite_segments(tmp_path):
    msgs = []
    cfg = TrainConfig(optimizer="lstm", tasks=["quadratic"], episodes=3, seed=0, rule_config={"output_scale": 1e30},
                      **TINY)
    summary = train(cfg, tmp_path / "nan.json", progress=False, log=msgs.append)
    assert summary["skipped_segments"] >= 1
    assert any("non-finite meta-loss or meta-gradient; segment skipped" in m for m in msgs)
    for v in _arrays(tmp_path / "nan.json").values():
        assert np.isfinite(v).all()


def test_meta_training_beats_the_untrained_rule_on_held_out_quadratics(tmp_path):
    cfg = TrainConfig(optimizer="rnnprop", tasks=["quadratic"], episodes=30, unrolls=2, unroll_length=10, seed=1)
    path = train(cfg, tmp_path / "q.json", progress=False, log=lambda m: None)["out"]
    trained, untrained = load_rule(path), _rule("rnnprop", seed=1)
    finals = {}
    for name, rule in (("trained", trained), ("untrained", untrained)):
        finals[name] = np.mean([run("quadratic", 2**31 + s, lambda p, r=rule: LearnedOptimizer(p, r), 20)["final_loss"]
                                for s in range(5)])
    assert finals["trained"] < 0.5 * finals["untrained"], finals


@pytest.mark.parametrize("bad, match", [
    ({"episodes": 0}, "--episodes must be >= 1"),
    ({"optimizer": "adam"}, "unknown --optimizer 'adam'"),
    ({"tasks": ["imagenet"]}, "unknown task 'imagenet'"),
    ({"clip": float("nan")}, "--clip must be a positive number"),
])
def test_train_config_validation(tmp_path, bad, match):
    with pytest.raises(CodesignError, match=match):
        train(TrainConfig(**{**TINY, **bad}), tmp_path / "x.json", progress=False)
    with pytest.raises(CodesignError, match="--out must end in .json"):
        train(TrainConfig(**TINY), tmp_path / "x.npz", progress=False)


# --- evaluation and CLI -----------------------------------------------------------------------


def test_compare_reports_every_optimizer_and_a_consistent_ratio():
    res = compare({"l2o": load_rule("l2o:general")}, "quadratic", steps=10, seeds=2, progress=False)
    assert set(res["optimizers"]) == {"l2o", "adam", "rmsprop", "sgd_momentum"}
    best = res["optimizers"][res["best_baseline"]]["final_loss_mean"]
    assert res["learned_vs_best_baseline"]["l2o"] == pytest.approx(res["optimizers"]["l2o"]["final_loss_mean"] / best)
    assert best == min(r["final_loss_mean"] for k, r in res["optimizers"].items() if k != "l2o")
    # the baselines' learning rates come from the grid and were tuned, not fixed
    assert all(res["optimizers"][b]["lr"] in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0) for b in ("adam", "rmsprop"))
    with pytest.raises(CodesignError, match="at least one learned rule"):
        compare({}, "quadratic", steps=10)
    fixed = compare({"l2o": load_rule("l2o:general")}, "quadratic", steps=5, seeds=1, progress=False,
                    lrs={"adam": 0.123, "rmsprop": 0.01, "sgd_momentum": 0.01})
    assert fixed["optimizers"]["adam"]["lr"] == 0.123  # given rates are used, not re-tuned
    for name, r in res["optimizers"].items():
        assert len(r["final_loss_per_seed"]) == 2 and (r["lr"] is None) == (name == "l2o")


def test_cli(tmp_path, capsys):
    assert main(["l2o", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert set(listed["rules"]) == {"lstm", "rnnprop"} and "supernet" in listed["pretrained"]
    out = tmp_path / "c.json"
    assert main(["l2o", "train", "--task", "quadratic", "--out", str(out), "--episodes", "2", "--unrolls", "1",
                 "--unroll-length", "3", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2
    assert main(["l2o", "info", str(out)]) == 0
    assert "kind: rnnprop" in capsys.readouterr().out
    assert main(["l2o", "train", "--task", "quadratic,cifar", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown task 'cifar'" in err
    meta = json.loads(out.read_text())
    meta["format_version"] = 99
    out.write_text(json.dumps(meta))
    assert main(["l2o", "eval", str(out), "--task", "quadratic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer format version 99" in err
