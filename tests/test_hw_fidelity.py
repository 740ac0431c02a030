"""Tests of codesign.hw_models.crosscheck and of the model changes it justifies: how configs and
layers are described to ZigZag-DSE and SCALE-Sim, the systolic fill/drain against SCALE-Sim's
fold arithmetic, the one-line error when the references are missing, and (where they are
installed) both references run on small layers beside codesign."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest
import yaml
from benchmark_module import load_benchmark
from codesign.hw_models import AcceleratorConfig, evaluate_layers, get_accelerator, load_accelerator
from codesign.hw_models import crosscheck as cc

from codesign.cli import main
from codesign.errors import CodesignError
from codesign.kernelspec import KernelSpec

conv = KernelSpec.make


_BASE = dict(name="t", pe_rows=8, pe_cols=8, rf_words=16, glb_kib=64.0, dram_bandwidth_gbs=4.0, clock_mhz=500.0,
             dataflow="ws")


def cfg(**kw) -> AcceleratorConfig:
    """A small weight-stationary config with ``kw`` overridden."""
    return AcceleratorConfig(**{**_BASE, **kw})


def random_mac_layers(rng, n):
    out = []
    for _ in range(n):
        c = int(rng.choice([3, 8, 16, 24, 64]))
        h = int(rng.choice([4, 7, 13, 16]))
        kind = rng.integers(0, 4)
        if kind == 0:
            out.append(conv("conv2d", (1, c, h, h), out_channels=int(rng.choice([8, 16, 40])),
                            kernel=int(rng.choice([1, 3, 5])), stride=int(rng.choice([1, 2]))))
        elif kind == 1:
            out.append(conv("conv2d", (1, c, h, h), out_channels=c, kernel=int(rng.choice([3, 5])), groups=c,
                            stride=int(rng.choice([1, 2]))))
        elif kind == 2:
            out.append(conv("conv2d", (int(rng.choice([1, 2])), c, h, h), out_channels=2 * c, kernel=1))
        else:
            out.append(conv("dense", (1, c * 4), out_features=int(rng.choice([10, 100]))))
    return out


def scalesim_ws_cycles(spec, rows, cols):
    """SCALE-Sim's stall-free weight-stationary cycles, from its fold arithmetic: the reduction
    C*R*S folds over the rows, the filters over the columns, and every fold streams the N*P*Q
    output pixels after loading its weights (rows), skewing them in (rows - 1) and draining the
    partial sums (cols - 1)."""
    lp = cc._Loops.of(spec)
    folds = lp.g * math.ceil(lp.c * lp.r * lp.s / rows) * math.ceil(lp.k / cols)
    return folds * (lp.n * lp.p * lp.q + 2 * rows + cols - 2)


# --- the model change SCALE-Sim justifies ---------------------------------------------------------


@pytest.mark.parametrize("rows, cols", [(8, 8), (16, 16), (12, 14), (32, 4)])
def test_weight_stationary_cycles_follow_scalesims_folds(rows, cols):
    layers = random_mac_layers(np.random.default_rng(rows * cols), 30)
    got = evaluate_layers(layers, cfg(pe_rows=rows, pe_cols=cols, glb_kib=512.0))
    for spec, res in zip(layers, got):
        assert res.mapping["compute_cycles"] == pytest.approx(scalesim_ws_cycles(spec, rows, cols), rel=1e-12), spec.key()
        assert res.cycles >= res.mapping["compute_cycles"]


def test_output_stationary_systolic_passes_follow_scalesims_folds():
    # a batch of 8 vectors, 64 -> 32: output channels down the 8 rows, the 8 vectors across the
    # columns; with one accumulator per PE (3 register words) every pass is 64 MACs plus the
    # rows + cols - 2 cycles of skew and drain, SCALE-Sim's output-stationary fold
    spec = conv("dense", (8, 64), out_features=32)
    one = evaluate_layers([spec], cfg(dataflow="os", rf_words=3))[0]
    assert one.mapping["spatial_choice"] == 1
    assert one.mapping["compute_cycles"] == pytest.approx(4 * (64 + 8 + 8 - 2))
    # four accumulators per PE: one pass covers the four channel groups, one skew and drain
    four = evaluate_layers([spec], cfg(dataflow="os", rf_words=9))[0]
    assert four.mapping["rf_tile"][0] == 4
    assert four.mapping["compute_cycles"] == pytest.approx(4 * 64 + (8 + 8 - 2))


def test_a_systolic_output_stationary_array_maps_depthwise_as_scalesim():
    # SCALE-Sim's output-stationary array puts output pixels down the rows and filters across the
    # columns: a depthwise layer (one filter per channel) uses one column, channel after channel
    spec = conv("conv2d", (1, 16, 10, 10), out_channels=16, kernel=3, groups=16, padding=0)
    systolic = evaluate_layers([spec], cfg(dataflow="os", rf_words=3, interconnect="systolic"))[0]
    assert systolic.mapping["spatial_choice"] == 1
    folds = math.ceil(64 / 8)  # 8 x 8 output pixels over 8 rows, one column
    assert systolic.mapping["compute_cycles"] == pytest.approx(16 * folds * (9 + 8 + 8 - 2))
    # with weight broadcast (ShiDianNao), the same layer spreads its pixels over the whole array
    multicast = evaluate_layers([spec], cfg(dataflow="os", rf_words=3))[0]
    assert multicast.mapping["spatial_choice"] == 0 and multicast.cycles < systolic.cycles / 4


def test_interconnect_is_validated_and_round_trips(tmp_path):
    with pytest.raises(CodesignError, match="unknown interconnect 'mesh'"):
        cfg(interconnect="mesh")
    with pytest.raises(CodesignError, match="row-stationary needs a multicast interconnect"):
        cfg(dataflow="rs", interconnect="systolic")
    ws = get_accelerator("ws-16x16")
    assert ws.interconnect == "systolic" and get_accelerator("eyeriss-like").interconnect == "multicast"
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(ws.replace(dataflow="os").to_yaml_dict()))
    assert load_accelerator(path) == ws.replace(dataflow="os")
    # the shipped ws array computes the same either way: ws is systolic in both
    layer = conv("conv2d", (1, 16, 8, 8), out_channels=16, kernel=3)
    assert evaluate_layers([layer], ws)[0].cycles == evaluate_layers([layer], ws.replace(interconnect="multicast"))[0].cycles


# --- descriptions ------------------------------------------------------------------------------


def test_zigzag_hardware_describes_the_same_array_memories_and_energies():
    c = get_accelerator("eyeriss-like")
    hw = cc.zigzag_hardware(c)
    assert list(hw["memories"]) == ["rf", "glb", "dram"]  # innermost first: ZigZag's hierarchy order
    rf, glb, dram = (hw["memories"][k] for k in ("rf", "glb", "dram"))
    assert rf["size"] == c.rf_words * c.word_bits and rf["served_dimensions"] == []
    assert glb["size"] == c.glb_words * c.word_bits and glb["served_dimensions"] == ["D1", "D2"]
    assert hw["operational_array"]["sizes"] == [c.pe_cols, c.pe_rows]
    assert hw["operational_array"]["unit_energy"] == c.energy["mac_pj"]
    assert hw["operational_array"]["systolic_dimensions"] == []  # rs: multicast, not systolic
    # a word costs the table's energy whatever the port width: cost per access / words per access
    for mem, action in ((rf, "rf_read_pj"), (glb, "glb_read_pj"), (dram, "dram_read_pj")):
        width = mem["ports"][0]["bandwidth_max"]
        assert mem["r_cost"] / (width / c.word_bits) == pytest.approx(c.energy[action])
    # the DRAM link: 2 GB/s at 200 MHz is 10 bytes = 80 bits a cycle
    assert dram["ports"][0]["bandwidth_max"] == 80
    ws = cc.zigzag_hardware(get_accelerator("ws-16x16"))
    assert ws["operational_array"]["systolic_dimensions"] == ["D1", "D2"]


def test_zigzag_spatial_mappings_are_codesigns_candidates():
    ws = get_accelerator("ws-16x16")
    dw5 = conv("conv2d", (1, 64, 8, 8), out_channels=64, kernel=5, groups=64)
    # 25 taps over 16 rows: 5 x 3 in two folds, as codesign's two folds of the flattened 25
    assert cc.zigzag_spatial_mappings(dw5, ws) == [{"D1": {"K": 1}, "D2": {"FY": 3, "FX": 5}}]
    pw = conv("conv2d", (1, 64, 8, 8), out_channels=128, kernel=1)
    assert cc.zigzag_spatial_mappings(pw, ws) == [{"D1": {"K": 16}, "D2": {"C": 16}}]
    first = conv("conv2d", (1, 3, 32, 32), out_channels=16, kernel=3)
    # 27 = 3 x 3 x 3 has no unrolling of 16 or fewer PEs better than 9 (three folds)
    assert cc.zigzag_spatial_mappings(first, ws)[0]["D2"] == {"C": 3, "FX": 3}
    os_ = cc.zigzag_spatial_mappings(pw, get_accelerator("os-8x8"))
    assert os_ == [{"D1": {"OX": 8}, "D2": {"OY": 8}}, {"D1": {"OX": 8}, "D2": {"K": 8}}]
    rs = cc.zigzag_spatial_mappings(conv("conv2d", (1, 64, 28, 28), out_channels=64, kernel=3),
                                    get_accelerator("eyeriss-like"))
    # 3 filter rows x 4 channel sets down 12 rows, 14 output rows across 14 columns
    assert rs == [{"D1": {"OY": 14}, "D2": {"FY": 3, "C": 4}}, {"D1": {"OY": 14}, "D2": {"FY": 3, "K": 4}}]
    for m in os_ + rs:
        text = cc.zigzag_mapping(m)[0]["spatial_mapping"]
        assert all(isinstance(v, list) and all(", " in x for x in v) for v in text.values())


def test_zigzag_layers_keep_groups_batch_stride_and_dilation():
    dw = cc.zigzag_layer(conv("conv2d", (2, 32, 14, 14), out_channels=32, kernel=3, groups=32, stride=2), 0, 16)
    sizes = dict(zip(dw["loop_dims"], dw["loop_sizes"]))
    assert sizes == {"B": 2, "K": 1, "G": 32, "OX": 7, "OY": 7, "C": 1, "FX": 3, "FY": 3}
    assert dw["dimension_relations"] == ["ix=2*ox+1*fx", "iy=2*oy+1*fy"]
    # the unpadded 14 x 14 input; windows reach (7 - 1) * 2 + 3 = 15 padded rows: 1 pad row on top
    assert dw["pr_loop_sizes"] == [14, 14] and dw["padding"] == [[1, 0], [1, 0]]
    same = cc.zigzag_layer(conv("conv2d", (1, 8, 10, 10), out_channels=8, kernel=3), 0, 16)
    assert same["pr_loop_sizes"] == [10, 10] and same["padding"] == [[1, 1], [1, 1]]
    dil = cc.zigzag_layer(conv("conv2d", (1, 8, 16, 16), out_channels=8, kernel=3, dilation=2), 0, 16)
    assert dil["dimension_relations"][0] == "ix=1*ox+2*fx"
    fc = cc.zigzag_layer(conv("dense", (1, 64), out_features=10), 0, 8)
    assert dict(zip(fc["loop_dims"], fc["loop_sizes"])) == {"B": 1, "K": 10, "G": 1, "OX": 1, "OY": 1, "C": 64,
                                                             "FX": 1, "FY": 1}
    assert fc["operand_precision"]["W"] == 8
    with pytest.raises(CodesignError, match="only conv2d and dense"):
        cc.zigzag_layer(conv("relu", (1, 8, 4, 4)), 0, 16)


def test_scalesim_description():
    c = get_accelerator("ws-16x16")
    text = cc.scalesim_config(c)
    assert "ArrayHeight: 16" in text and "ArrayWidth: 16" in text and "Dataflow : ws" in text
    assert "InterfaceBandwidth: CALC" in text and "InterfaceBandwidth: USER" in cc.scalesim_config(c, stalls=True)
    # 256 KiB of 16-bit words = 131072 words, a third each, in SCALE-Sim's one-element "bytes"
    assert "IfmapSramSzkB: 42" in text
    with pytest.raises(CodesignError, match="weight- and output-stationary"):
        cc.scalesim_config(get_accelerator("eyeriss-like"))
    rows = cc.scalesim_layers(conv("conv2d", (1, 8, 10, 10), out_channels=16, kernel=3, groups=2, stride=2))
    assert len(rows) == 2 and rows[0][1:] == (11, 11, 3, 3, 4, 8, 2)  # padded 10 + 2 -> 11 rows read
    assert cc.scalesim_layers(conv("dense", (1, 64), out_features=10))[0][1:] == (1, 1, 1, 1, 64, 10, 1)


def test_zigzag_comparison_config_drops_only_the_interconnect_energy():
    c = get_accelerator("eyeriss-like")
    z = cc.comparable_config(c, "zigzag")
    assert z.energy["noc_hop_pj"] == 0.0
    assert {k: v for k, v in z.energy.items() if k != "noc_hop_pj"} == \
        {k: v for k, v in c.energy.items() if k != "noc_hop_pj"}
    assert cc.comparable_config(c, "scalesim") == c


def test_loop_keys_ignore_bias_and_activation():
    a = conv("conv2d", (1, 8, 8, 8), out_channels=8, kernel=3)
    b = conv("conv2d", (1, 8, 8, 8), out_channels=8, kernel=3, bias=True, activation="relu")
    assert a.key() != b.key() and cc.loop_key(a) == cc.loop_key(b)
    assert cc.loop_key(a) != cc.loop_key(conv("conv2d", (1, 8, 8, 8), out_channels=8, kernel=3, stride=2))


# --- the CLI without the extra -----------------------------------------------------------------


@pytest.mark.parametrize("reference", ["zigzag", "scalesim"])
def test_check_without_the_extra_is_one_line_with_the_install_hint(reference, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_references(name, *args, **kwargs):
        if name.split(".")[0] in ("zigzag", "scalesim"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_references)
    argv = ["hw", "eval", "--accel", "ws-16x16", "--kernel", "dense|1x8|out_features=2", "--check", reference]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'codesign[hw-check]'" in err and "\n" not in err


def test_check_refuses_row_stationary_for_scalesim(capsys):
    pytest.importorskip("scalesim")
    argv = ["hw", "eval", "--accel", "eyeriss-like", "--kernel", "dense|1x8|out_features=2", "--check", "scalesim"]
    assert main(argv) == 2
    assert "check it against zigzag" in capsys.readouterr().err


# --- the references themselves (where the extra is installed) ----------------------------------


def test_scalesim_agrees_with_the_fold_arithmetic_on_small_layers():
    pytest.importorskip("scalesim")
    c = cfg(pe_rows=4, pe_cols=4)
    layers = [conv("conv2d", (1, 3, 6, 6), out_channels=6, kernel=3, padding=0),
              conv("conv2d", (1, 4, 5, 5), out_channels=4, kernel=3, groups=4, padding=0),
              conv("dense", (1, 12), out_features=5)]
    theirs = cc.run_scalesim(layers, c)
    ours = evaluate_layers(layers, c)
    for spec, a, b in zip(layers, ours, theirs):
        # SCALE-Sim counts one cycle less per layer (its last fold ends a cycle earlier)
        assert a.mapping["compute_cycles"] == pytest.approx(b["cycles"], abs=b["groups"]), spec.key()


def test_zigzag_runs_a_small_layer_beside_codesign():
    pytest.importorskip("zigzag")
    c = cfg(pe_rows=4, pe_cols=4, rf_words=32, glb_kib=16.0)
    spec = conv("conv2d", (1, 4, 6, 6), out_channels=8, kernel=3, padding=0)
    out = cc.check_network([spec, conv("relu", (1, 8, 4, 4))], c, "zigzag", lpf_limit=2)
    row = out["layers"][0]
    z = row["zigzag"]
    assert z["feasible"] and out["not_compared"] == {"relu": 1}
    macs = 4 * 8 * 4 * 4 * 9
    assert z["cycles"] >= macs / c.pes and z["energy_mj"] >= macs * c.energy["mac_pj"] * 1e-9
    # same hardware, same layer: the two models agree within a factor of two on this one
    assert 0.5 < row["cycles_ratio"] < 2 and 0.5 < row["energy_ratio"] < 2


# ---- benchmarks/hw_fidelity.py's reference cache (the references replaced by a recorder) ---------

def _fidelity_module(monkeypatch):
    mod = load_benchmark("hw_fidelity")
    monkeypatch.setattr(mod, "version", lambda pkg: "test")  # the references need not be installed
    return mod


def _recorder(calls):
    def run(specs):
        calls.append(cc.loop_key(specs[0]))
        return [{"feasible": True, "cycles": float(len(calls))}]
    return run


def _nets():
    big = [conv("conv2d", (1, c, 8, 8), out_channels=8, kernel=3) for c in (3, 5, 7)]
    return {"big": big, "small": [conv("conv2d", (1, 9, 8, 8), out_channels=8, kernel=1)]}


def test_fidelity_cache_runs_the_closest_network_first_and_stops_at_its_budget(tmp_path, monkeypatch):
    mod = _fidelity_module(monkeypatch)
    nets, calls = _nets(), []
    cache = mod.ReferenceCache(tmp_path, "zigzag", cfg(), {"lpf_limit": 3})
    cache.fill(nets, _recorder(calls), lambda msg: None, deadline=0.0)
    assert calls == [] and not cache.path.exists()
    cache.fill(nets, _recorder(calls), lambda msg: None)
    assert calls[0] == cc.loop_key(nets["small"][0])  # one layer short of complete: first
    assert len(calls) == 4
    again = mod.ReferenceCache(tmp_path, "zigzag", cfg(), {"lpf_limit": 3})  # resumes: nothing to run
    again.fill(nets, _recorder(calls), lambda msg: None)
    assert len(calls) == 4 and all(s in again for ks in nets.values() for s in ks)


def test_fidelity_cache_shards_fill_one_file_together(tmp_path, monkeypatch):
    mod = _fidelity_module(monkeypatch)
    nets, calls = _nets(), []
    first = mod.ReferenceCache(tmp_path, "zigzag", cfg(), {"lpf_limit": 3})
    second = mod.ReferenceCache(tmp_path, "zigzag", cfg(), {"lpf_limit": 3})
    first.fill(nets, _recorder(calls), lambda msg: None, shard=(0, 2))
    second.fill(nets, _recorder(calls), lambda msg: None, shard=(1, 2))
    assert sorted(calls) == sorted({cc.loop_key(s) for ks in nets.values() for s in ks})  # each once
    merged = mod.ReferenceCache(tmp_path, "zigzag", cfg(), {"lpf_limit": 3})
    assert len(merged.layers) == 4


def test_fidelity_cache_refuses_a_file_of_other_settings(tmp_path, monkeypatch):
    mod = _fidelity_module(monkeypatch)
    cache = mod.ReferenceCache(tmp_path, "zigzag", cfg(), {"lpf_limit": 3})
    cache.path.write_text('{"header": {"format_version": 1, "settings": {"lpf_limit": 6}}, "layers": {}}')
    with pytest.raises(CodesignError, match="another reference, version or setting"):
        mod.ReferenceCache(tmp_path, "zigzag", cfg(), {"lpf_limit": 3})
    cache.path.write_text("not json")
    with pytest.raises(CodesignError, match="not a reference cache"):
        mod.ReferenceCache(tmp_path, "zigzag", cfg(), {"lpf_limit": 3})
