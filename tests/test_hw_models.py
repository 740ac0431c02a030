"""Tests of codesign.hw_models: the accelerator template, the mapper (numba against its plain-Python
reference and against hand-counted accesses), network evaluation, expected cost over hardware
choices, rooflines against profile databases, validation against Eyeriss, the `codesign hw` CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from codesign.hw_models import (
    AcceleratorConfig,
    HardwareCostTable,
    HardwareSpace,
    check_measurements,
    evaluate_grid,
    evaluate_network,
    expected_cost,
    get_accelerator,
    get_roofline,
    list_accelerators,
    list_rooflines,
    load_accelerator,
    mapper,
)
from codesign.hw_models.roofline import roofline_bound_ms

from codesign.cli import main
from codesign.errors import CodesignError
from codesign.kernelspec import KernelSpec, kernel_flops
from codesign.profile.db import Measurement, ProfileDB
from codesign.profile.rooflines import check_profile_db

R = mapper.R


def cfg(**kw) -> AcceleratorConfig:
    base = dict(name="t", pe_rows=8, pe_cols=8, rf_words=64, glb_kib=64.0, dram_bandwidth_gbs=4.0,
                clock_mhz=200.0, dataflow="rs")
    base.update(kw)
    return AcceleratorConfig(**base)


def random_layers(rng, n: int) -> list[KernelSpec]:
    out = []
    for _ in range(n):
        kind = rng.integers(0, 6)
        c = int(rng.choice([3, 8, 16, 24, 64]))
        h = int(rng.choice([5, 7, 13, 16, 28]))
        b = int(rng.choice([1, 2]))
        if kind <= 1:
            k = int(rng.choice([8, 16, 32, 48]))
            out.append(KernelSpec.make("conv2d", (b, c, h, h), out_channels=k, kernel=int(rng.choice([1, 3, 5])),
                                       stride=int(rng.choice([1, 2])), dilation=int(rng.choice([1, 1, 2]))))
        elif kind == 2:  # depthwise
            out.append(KernelSpec.make("conv2d", (b, c, h, h), out_channels=c, kernel=3, groups=c,
                                       stride=int(rng.choice([1, 2]))))
        elif kind == 3:
            out.append(KernelSpec.make("dense", (b, c * 4), out_features=int(rng.choice([10, 100])), bias=False))
        elif kind == 4:
            op = str(rng.choice(["max_pool2d", "avg_pool2d"]))
            out.append(KernelSpec.make(op, (b, c, h, h), kernel=3, stride=2, padding=1))
        else:
            op = str(rng.choice(["add", "relu", "batch_norm", "global_avg_pool2d"]))
            out.append(KernelSpec.make(op, (b, c, h, h)))
    return out


def random_configs(rng, n: int) -> list[AcceleratorConfig]:
    return [cfg(pe_rows=int(rng.choice([2, 4, 12, 16])), pe_cols=int(rng.choice([3, 8, 14])),
                rf_words=int(rng.choice([2, 16, 64, 260])), glb_kib=float(rng.choice([0.25, 4, 108, 512])),
                dram_bandwidth_gbs=float(rng.choice([0.5, 4.0, 25.0])), clock_mhz=float(rng.choice([200, 1000])),
                dataflow=str(rng.choice(["ws", "os", "rs"])))
            for _ in range(n)]


# --- the mapper ------------------------------------------------------------------------------


def test_numba_matches_the_python_reference_on_random_pairs():
    rng = np.random.default_rng(0)
    layers = mapper.encode_layers(random_layers(rng, 18))
    configs = mapper.encode_configs(random_configs(rng, 7))
    ref = mapper.evaluate_rows(layers, configs, jit=False)
    got = mapper.evaluate_rows(layers, configs, jit=True)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    # explicit pairs pick the same rows as the full grid
    li, ci = rng.integers(0, 18, 30), rng.integers(0, 7, 30)
    np.testing.assert_allclose(mapper.evaluate_rows(layers, configs, li, ci), ref[li * 7 + ci], rtol=1e-12)
    assert 0 < ref[:, R["feasible"]].mean() < 1  # the random configs include unmappable ones


def test_invariants_on_random_pairs():
    rng = np.random.default_rng(1)
    specs, cfgs = random_layers(rng, 20), random_configs(rng, 8)
    res = evaluate_grid(specs, cfgs)
    for i, s in enumerate(specs):
        for j, c in enumerate(cfgs):
            r = res[i, j]
            if not r[R["feasible"]]:
                # infeasible: an explicit reason and infinite cost, never zero
                assert r[R["reason"]] in (mapper.REASON_RF, mapper.REASON_GLB)
                assert math.isinf(r[R["latency_ms"]]) and math.isinf(r[R["energy_mj"]])
                continue
            levels = sum(r[R[f"{lv}_energy_mj"]] for lv in ("mac", "rf", "noc", "glb", "dram"))
            assert r[R["energy_mj"]] == pytest.approx(levels, rel=1e-12)
            assert 0 < r[R["pe_utilization"]] <= 1 + 1e-12
            assert r[R["cycles"]] >= r[R["macs"]] / c.pes - 1e-9  # no mapping beats a full array
            assert r[R["latency_ms"]] == pytest.approx(r[R["cycles"]] / (c.clock_mhz * 1e3))
            assert r[R["area_mm2"]] == pytest.approx(c.area_mm2())
            if s.op in ("conv2d", "dense"):
                # every MAC is counted: FLOPs = 2 x MACs (+ bias/activation, absent here)
                assert 2 * r[R["macs"]] == pytest.approx(kernel_flops(s))
                # DRAM traffic is at least each weight, each input the windows read and each output once
                e = mapper.encode_layer(s)
                compulsory = e[mapper.L_G] * e[mapper.L_K] * e[mapper.L_C] * e[mapper.L_R] * e[mapper.L_S] \
                    + e[mapper.L_N] * e[mapper.L_G] * e[mapper.L_C] * e[mapper.L_H] * e[mapper.L_W] \
                    + np.prod(s.output_shape())
                assert r[R["dram_words"]] >= compulsory * (1 - 1e-12)


def test_dense_on_a_weight_stationary_array_matches_hand_counts():
    # 64 -> 32 dense, batch 1, on 8x8 ws with a buffer holding everything: rows take the 64-long
    # reduction 8 at a time, columns 8 of the 32 outputs; every count below is worked by hand.
    c = cfg(dataflow="ws", glb_kib=64.0, dram_bandwidth_gbs=1000.0)
    spec = KernelSpec.make("dense", (1, 64), out_features=32, bias=False)
    r = evaluate_grid([spec], [c])[0, 0]
    assert r[R["macs"]] == 2048
    # 8 x 4 folds, each streaming its one input vector after loading its weights (8 cycles), skewing
    # them in (7) and draining the partial sums (7): SCALE-Sim's weight-stationary fold
    assert r[R["compute_cycles"]] == 8 * 4 * (1 + 8 + 7 + 7)
    assert r[R["fill_cycles"]] == 8 * 4 * (8 + 7 + 7)
    # weights: 2048 fetched once, used once each; inputs: 64 fetched once, sent to the array 4 times
    # (32 uses / 8 columns sharing), psums: 32 outputs, 8 partial sums each reduced down 8 rows.
    # Every word DRAM sends is written into the GLB once (the fill) before it is read.
    dram = 2048 + 64 + 32
    glb_reads = 2048 + 64 * 4 + 32 * 7
    glb_writes = 2048 + 64 + 32 * 7
    glb = glb_reads + glb_writes
    hops = 2048 + 64 * 4 * 8 + 32 * 8 * 7
    rf = 2048 + 64 * 4 * 8
    assert r[R["dram_words"]] == dram
    assert r[R["glb_accesses"]] == pytest.approx(glb)
    assert r[R["noc_hops"]] == pytest.approx(hops)
    assert r[R["rf_accesses"]] == pytest.approx(rf)
    e = c.energy
    pj = 2048 * e["mac_pj"] + rf * e["rf_read_pj"] + hops * e["noc_hop_pj"] + glb_reads * e["glb_read_pj"] \
        + glb_writes * e["glb_write_pj"] \
        + (2048 + 64) * e["dram_read_pj"] + 32 * e["dram_write_pj"]
    assert r[R["energy_mj"]] == pytest.approx(pj * 1e-9)


_EVERY_OP = [
    KernelSpec.make("conv2d", (1, 8, 9, 9), out_channels=8, kernel=1, kernel_w=7),
    KernelSpec.make("batch_matmul", (4, 9, 16), n=9), KernelSpec.make("softmax", (36, 9)),
    KernelSpec.make("layer_norm", (9, 16)), KernelSpec.make("l2_normalize", (9, 16)),
    KernelSpec.make("lrn", (1, 8, 5, 5), size=5), KernelSpec.make("gelu", (9, 64)),
    KernelSpec.make("silu", (1, 8, 5, 5)), KernelSpec.make("hardsigmoid", (1, 8, 5, 5)),
    KernelSpec.make("tanh", (1, 9, 16)),
    KernelSpec.make("resize2d", (1, 8, 5, 5), out_h=10, out_w=10, method="linear"),
    KernelSpec.make("leaky_relu", (1, 8, 5, 5)), KernelSpec.make("instance_norm", (8, 25)),
    KernelSpec.make("conv2d_transpose", (1, 8, 5, 5), out_channels=8, kernel=4, stride=2, padding=1),
]


def test_every_kernel_op_maps():
    """Every op a network reads into has a mapping (transformers, EfficientNet's SiLU, Inception's
    1x7 windows): MAC layers count their MACs, streaming kernels their elements."""
    from codesign.kernelspec import OPS

    assert {s.op for s in _EVERY_OP} | {"conv2d", "dense", "avg_pool2d", "max_pool2d", "global_avg_pool2d",
                                        "batch_norm", "relu", "relu6", "hardswish", "sigmoid", "add", "mul"} == set(OPS)
    rows = evaluate_grid(_EVERY_OP, [cfg()])[:, 0]
    assert (rows[:, R["feasible"]] == 1).all() and np.isfinite(rows[:, R["latency_ms"]]).all()
    assert (rows[:, R["latency_ms"]] > 0).all()
    assert rows[0, R["macs"]] == 8 * 8 * 81 * 7 and rows[1, R["macs"]] == 4 * 9 * 16 * 9
    assert rows[6, R["macs"]] == 9 * 64 * 8  # eight operations per GELU element


def test_infeasible_layers_say_which_level_is_too_small():
    spec = KernelSpec.make("conv2d", (1, 16, 32, 32), out_channels=16, kernel=5)
    rf = evaluate_network([spec], cfg(rf_words=4))  # one 5-tap row of weights and inputs needs 11 words
    assert not rf.feasible and rf.layers[0].reason == mapper.REASONS[mapper.REASON_RF]
    assert math.isinf(rf.latency_ms) and math.isinf(rf.energy_mj)
    glb = evaluate_network([spec], cfg(glb_kib=0.05))  # 25 words < one 5x5 tile + an input row
    assert not glb.feasible and "global buffer" in glb.layers[0].reason
    ok = evaluate_network([spec], cfg(rf_words=11))
    assert ok.feasible and ok.latency_ms > 0 and ok.energy_mj > 0


def test_more_buffer_or_bandwidth_never_hurts():
    rng = np.random.default_rng(2)
    specs = [s for s in random_layers(rng, 12)]
    small, big = cfg(glb_kib=2.0), cfg(glb_kib=256.0)
    a, b = evaluate_grid(specs, [small, big])[:, 0], evaluate_grid(specs, [small, big])[:, 1]
    ok = a[:, R["feasible"]] > 0
    assert (b[ok, R["dram_words"]] <= a[ok, R["dram_words"]] + 1e-9).all()
    slow, fast = cfg(dram_bandwidth_gbs=0.1), cfg(dram_bandwidth_gbs=100.0)
    g = evaluate_grid(specs, [slow, fast])
    assert (g[:, 1, R["latency_ms"]] <= g[:, 0, R["latency_ms"]] + 1e-12).all()
    assert (g[:, 0, R["latency_ms"]] > g[:, 1, R["latency_ms"]]).any()  # bandwidth does bind somewhere


def test_depthwise_utilisation_follows_the_dataflow():
    # A depthwise 3x3 cannot fill a weight-stationary array (one channel per column) but fills an
    # output-stationary one (output pixels across the array).
    spec = KernelSpec.make("conv2d", (1, 32, 28, 28), out_channels=32, kernel=3, groups=32)
    ws = evaluate_network([spec], cfg(dataflow="ws", dram_bandwidth_gbs=100.0)).layers[0]
    os_ = evaluate_network([spec], cfg(dataflow="os", dram_bandwidth_gbs=100.0)).layers[0]
    assert ws.pe_utilization <= 9 / 64 + 1e-9
    assert os_.pe_utilization == pytest.approx((28 / 32) ** 2)  # 28 output rows/cols in 4 passes of 8


# --- configs and their errors -------------------------------------------------------------------


def test_shipped_configs_load_and_round_trip(tmp_path):
    accs = list_accelerators()
    assert {"eyeriss-like", "ws-16x16", "os-8x8"} <= set(accs)
    e = accs["eyeriss-like"]
    assert (e.pe_rows, e.pe_cols, e.dataflow, e.glb_kib) == (12, 14, "rs", 108.0)
    # default energies keep Eyeriss's normalised ratios: DRAM 200x, GLB 6x, NoC 2x, RF 1x a MAC
    mac = e.energy["mac_pj"]
    assert [e.energy[k] / mac for k in ("dram_read_pj", "glb_read_pj", "noc_hop_pj", "rf_read_pj")] == [200, 6, 2, 1]
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(e.replace(pe_rows=16, energy={"dram_read_pj": 300.0}).to_yaml_dict()))
    back = load_accelerator(p)
    assert back.pe_rows == 16 and back.energy["dram_read_pj"] == 300.0 and back.energy["glb_read_pj"] == 6.0
    assert get_accelerator(str(p)) == back


@pytest.mark.parametrize("change, needle", [
    ({"dataflow": "diagonal"}, "unknown dataflow 'diagonal'; use one of ws, os, rs"),
    ({"pe_rows": 0}, "pe_rows must be a positive integer"),
    ({"rf_words": -3}, "rf_words must be a positive integer"),
    ({"glb_kib": 0}, "glb_kib must be a positive number"),
    ({"clock_mhz": float("nan")}, "clock_mhz must be a positive number"),
    ({"pe_cols": 2.5}, "pe_cols must be a positive integer"),
    ({"energy": {"sram_pj": 1.0}}, "unknown energy entry sram_pj"),
    ({"area": {"mac_mm2": -1}}, "area.mac_mm2 must be a non-negative number"),
    ({"banks": 4}, "unknown accelerator parameter(s) banks"),
])
def test_bad_parameters_are_one_line_errors(change, needle):
    with pytest.raises(CodesignError) as exc:
        get_accelerator("eyeriss-like", **change)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_bad_files_are_one_line_errors(tmp_path):
    good = get_accelerator("eyeriss-like").to_yaml_dict()
    cases = {
        "version.yaml": (dict(good, format_version=2), "format_version 2; this codesign reads accelerator files of format_version 1"),
        "kind.yaml": (dict(good, kind="roofline"), "is not an accelerator file"),
        "extra.yaml": (dict(good, pe_depth=3), "unknown parameter(s) pe_depth"),
        "missing.yaml": ({k: v for k, v in good.items() if k != "clock_mhz"}, "lacks clock_mhz"),
    }
    for name, (data, needle) in cases.items():
        p = tmp_path / name
        p.write_text(yaml.safe_dump(data))
        with pytest.raises(CodesignError) as exc:
            load_accelerator(p)
        assert needle in str(exc.value) and "\n" not in str(exc.value), (name, str(exc.value))
    with pytest.raises(CodesignError, match="no accelerator file"):
        load_accelerator(tmp_path / "absent.yaml")
    with pytest.raises(CodesignError, match="unknown accelerator 'tpu9'"):
        get_accelerator("tpu9")


def test_bad_rows_and_networks_are_refused():
    with pytest.raises(CodesignError, match="layers must be"):
        mapper.evaluate_rows(np.zeros((2, 3)), mapper.encode_configs([cfg()]))
    with pytest.raises(CodesignError, match="out of range"):
        mapper.evaluate_rows(mapper.encode_layers(random_layers(np.random.default_rng(0), 2)),
                             mapper.encode_configs([cfg()]), [0, 5], [0, 0])
    with pytest.raises(CodesignError, match="no layers"):
        evaluate_network([], "eyeriss-like")
    with pytest.raises(CodesignError, match="KernelSpecs"):
        evaluate_network(["conv2d"], "eyeriss-like")
    with pytest.raises(CodesignError, match="needs input_shape"):
        evaluate_network(torch.nn.Conv2d(3, 8, 3), "eyeriss-like")
    with pytest.raises(CodesignError, match="no ONNX file"):
        evaluate_network("absent.onnx", "eyeriss-like")


# --- networks -------------------------------------------------------------------------------------


def test_network_totals_are_the_sum_of_layers_for_every_input_form(tmp_path):
    from codesign.graph import export_onnx, module_kernels

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.Conv2d(16, 32, 1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))
    shape = (1, 3, 32, 32)
    specs = module_kernels(net, shape)
    res = evaluate_network(specs, "eyeriss-like")
    assert res.feasible and len(res.layers) == len(specs)
    assert res.latency_ms == pytest.approx(sum(x.latency_ms for x in res.layers))
    assert res.energy_mj == pytest.approx(sum(res.energy_by_level_mj.values()))
    assert res.area_mm2 == pytest.approx(get_accelerator("eyeriss-like").area_mm2())
    from_module = evaluate_network(net, "eyeriss-like", input_shape=shape)
    path = tmp_path / "net.onnx"
    path.write_bytes(export_onnx(net, shape).SerializeToString())
    from_onnx = evaluate_network(str(path), "eyeriss-like")
    python = evaluate_network(specs, "eyeriss-like", jit=False)
    for other in (from_module, from_onnx, python):
        assert other.latency_ms == pytest.approx(res.latency_ms, rel=1e-12)
        assert other.energy_mj == pytest.approx(res.energy_mj, rel=1e-12)


# --- expected cost for search ---------------------------------------------------------------


@pytest.fixture(scope="module")
def space_and_table():
    layers = [KernelSpec.make("conv2d", (1, 16, 16, 16), out_channels=32, kernel=3),
              KernelSpec.make("conv2d", (1, 32, 8, 8), out_channels=32, kernel=3, groups=32),
              KernelSpec.make("dense", (1, 128), out_features=10)]
    space = HardwareSpace("eyeriss-like", {"pe_rows": [4, 12], "rf_words": [8, 64, 260],
                                           "dataflow": ["ws", "os", "rs"]})
    return layers, space, HardwareCostTable(layers, space)


def test_expected_cost_is_the_probability_weighted_sum(space_and_table):
    layers, space, table = space_and_table
    assert space.n_configs == 18 and table.latency_ms.shape == (3, 18)
    gen = torch.Generator().manual_seed(0)
    probs = {n: torch.softmax(torch.randn(5, k, generator=gen, dtype=torch.float64), -1)
             for n, k in zip(space.names, space.sizes)}
    got = table.expected(probs, per_layer=True)
    assert got["latency_ms"].shape == (5,) and got["energy_mj_per_layer"].shape == (5, 3)
    cfgs = space.configs()
    for b in range(5):
        want_lat = want_en = 0.0
        for j, idx in enumerate(np.ndindex(*space.sizes)):
            p = math.prod(float(probs[n][b, i]) for n, i in zip(space.names, idx))
            net = evaluate_network(layers, cfgs[j])
            assert cfgs[j] == space.config_at(idx).replace(name=cfgs[j].name)
            lat = net.latency_ms if net.feasible else float(table.latency_ms[:, j].sum())
            want_lat += p * lat
            want_en += p * (net.energy_mj if net.feasible else float(table.energy_mj[:, j].sum()))
        assert float(got["latency_ms"][b]) == pytest.approx(want_lat, rel=1e-9)
        assert float(got["energy_mj"][b]) == pytest.approx(want_en, rel=1e-9)
    # one-hot choices reproduce a single config's cost exactly
    onehot = {n: torch.nn.functional.one_hot(torch.tensor(k - 1), k).double() for n, k in zip(space.names, space.sizes)}
    exact = evaluate_network(layers, space.config_at([k - 1 for k in space.sizes]))
    one = table.expected(onehot)
    assert float(one["latency_ms"]) == pytest.approx(exact.latency_ms, rel=1e-12)
    assert float(one["area_mm2"]) == pytest.approx(exact.area_mm2)
    assert float(one["infeasible_prob"]) == 0.0


def test_expected_cost_gradients(space_and_table):
    layers, space, table = space_and_table
    logits = [torch.randn(k, dtype=torch.float64, requires_grad=True) for k in space.sizes]

    def f(*ls):
        out = table.expected([torch.softmax(x, -1) for x in ls])
        return out["latency_ms"], out["energy_mj"]

    assert torch.autograd.gradcheck(f, tuple(logits))
    # a Gumbel-softmax sample (hard, straight-through) gives the sampled config's cost and a gradient
    hard = [torch.nn.functional.gumbel_softmax(x, tau=1.0, hard=True) for x in logits]
    out = expected_cost(layers, space, hard)
    out["energy_mj"].backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in logits)


def test_expected_cost_errors(space_and_table):
    layers, space, table = space_and_table
    ok = {n: torch.full((k,), 1.0 / k) for n, k in zip(space.names, space.sizes)}
    with pytest.raises(CodesignError, match="missing dataflow"):
        table.expected({n: v for n, v in ok.items() if n != "dataflow"})
    with pytest.raises(CodesignError, match="sum to 1"):
        table.expected(dict(ok, pe_rows=torch.tensor([0.7, 0.7])))
    with pytest.raises(CodesignError, match="end in a dimension of 3"):
        table.expected(dict(ok, dataflow=torch.tensor([0.5, 0.5])))
    with pytest.raises(CodesignError, match="torch tensor"):
        table.expected(dict(ok, dataflow=[1 / 3] * 3))
    with pytest.raises(CodesignError, match="unknown hardware parameter 'colour'"):
        HardwareSpace("eyeriss-like", {"colour": [1, 2]})
    with pytest.raises(CodesignError, match="unknown dataflow"):
        HardwareSpace("eyeriss-like", {"dataflow": ["ws", "zz"]})
    with pytest.raises(CodesignError, match="maps on no config"):
        HardwareCostTable(layers, HardwareSpace("eyeriss-like", {"rf_words": [1, 2], "dataflow": ["rs"]}))


# --- rooflines --------------------------------------------------------------------------------


def test_roofline_check_flags_kernels_faster_than_the_bound(tmp_path):
    r = get_roofline("cpu-local")
    assert "cpu-local" in list_rooflines()
    a = KernelSpec.make("conv2d", (1, 16, 32, 32), out_channels=16, kernel=3)
    b = KernelSpec.make("conv2d", (1, 32, 16, 16), out_channels=64, kernel=1)
    ba, bb = roofline_bound_ms(r, a), roofline_bound_ms(r, b)
    db = tmp_path / "p.sqlite"
    with ProfileDB(db) as pdb:
        pdb.add(Measurement(a.key(), "cpu-local", "untuned", latency_ms=3 * ba))
        pdb.add(Measurement(b.key(), "cpu-local", "untuned", latency_ms=0.5 * bb))
        pdb.add(Measurement(b.key(), "cpu-local", "torch-eager", latency_ms=None, error="build failed"))
    out = check_profile_db(db, "cpu-local")
    assert out["roofline"] == "cpu-local" and out["violations"] == 1
    u = out["schedules"]["untuned"]
    assert u["kernels"] == 2 and u["min_ratio"] == pytest.approx(0.5) and u["max_ratio"] == pytest.approx(3.0)
    assert u["violations"][0]["kernel_key"] == b.key()
    assert main(["hw", "roofline-check", "--db", str(db), "--device", "cpu-local", "--json"]) == 1
    assert check_measurements([], r)["kernels"] == 0
    with pytest.raises(CodesignError, match="no measured kernels of device gpu9"):
        check_profile_db(db, "gpu9", roofline="cpu-local")


def test_energy_model_source_still_reads_rooflines():
    from codesign.profile.energy import ModelSource

    spec = KernelSpec.make("conv2d", (1, 16, 32, 32), out_channels=16, kernel=3)
    src = ModelSource("cpu-local")
    assert src.available() == (True, None)
    assert src.measure(spec, None, 1.0) > 0


# --- validation against Eyeriss --------------------------------------------------------------


def test_row_stationary_wins_on_alexnet_as_eyeriss_reports():
    from codesign.hw_models.validation import dataflow_comparison, eyeriss_chip

    cmp_ = dataflow_comparison()
    assert cmp_["ranking"][0] == "rs"
    areas = {d["area_mm2"] for d in cmp_["dataflows"].values()}
    assert max(areas) - min(areas) < 0.01  # the comparison is at equal area
    for df in ("ws", "os"):
        assert cmp_["ratio_to_rs"][df] > 1.2  # published: 1.4x-2.5x
    rs = cmp_["dataflows"]["rs"]["share"]
    assert rs["rf"] == max(rs.values())  # RS spends most in its register files (ISCA 2016)
    chip = eyeriss_chip()
    # same order as the chip: within 2x of its frame rate and DRAM traffic per MAC
    assert 0.5 < chip["fps"] / chip["published_fps"] < 2
    assert 0.5 < chip["dram_accesses_per_mac"] / chip["published_dram_accesses_per_mac"] < 2


# --- CLI ------------------------------------------------------------------------------------


def test_hw_eval_command(tmp_path, capsys):
    from codesign.graph import export_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
    path = tmp_path / "m.onnx"
    path.write_bytes(export_onnx(net, (1, 3, 16, 16)).SerializeToString())
    assert main(["hw", "eval", "--accel", "eyeriss-like", "--onnx", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = evaluate_network(str(path), "eyeriss-like")
    assert out["latency_ms"] == pytest.approx(want.latency_ms) and len(out["layers"]) == len(want.layers)
    assert main(["hw", "eval", "--accel", "eyeriss-like", "--onnx", str(path), "--set", "dataflow=ws"]) == 0
    text = capsys.readouterr().out
    assert "12x14 ws" in text and "total: latency" in text
    assert main(["hw", "eval", "--accel", "eyeriss-like", "--set", "rf_words=2",
                 "--kernel", "conv2d|1x8x8x8|kernel=3,out_channels=8"]) == 0
    assert "infeasible: register file too small" in capsys.readouterr().out
    assert main(["hw", "list"]) == 0 and "eyeriss-like" in capsys.readouterr().out
    assert main(["hw", "show", "os-8x8", "--yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["dataflow"] == "os"


@pytest.mark.parametrize("argv, needle", [
    (["hw", "eval", "--accel", "eyeriss-like"], "give either --onnx"),
    (["hw", "eval", "--accel", "x9", "--kernel", "dense|1x8|out_features=2"], "unknown accelerator 'x9'"),
    (["hw", "eval", "--accel", "eyeriss-like", "--set", "dataflow=xx", "--kernel", "dense|1x8|out_features=2"],
     "unknown dataflow 'xx'"),
    (["hw", "eval", "--accel", "eyeriss-like", "--set", "glb_kib=-1", "--kernel", "dense|1x8|out_features=2"],
     "glb_kib must be a positive number"),
    (["hw", "show", "eyeriss-like", "--set", "pe_rows"], "--set takes PARAM=VALUE"),
    (["hw", "roofline-check", "--db", "/nonexistent/p.sqlite"], "no profile database"),
])
def test_hw_command_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
