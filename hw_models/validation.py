"""Validation of the accelerator model against what the Eyeriss papers report for AlexNet's
convolutional layers, and of device rooflines against measured profiles.

Published figures compared (each quoted with its source; the model is never fitted to them):

- Chen, Emer, Sze, "Eyeriss: a spatial architecture for energy-efficient dataflow for CNNs",
  ISCA 2016 (abstract and Section VII): under the same storage area and 256 PEs, AlexNet CONV
  layers, batch 16, row-stationary is the most energy-efficient dataflow, 1.4x to 2.5x better
  than the others (weight-stationary, output-stationary variants, no-local-reuse); in its CONV
  layer energy breakdown the register files take RS's largest share (read from the figure).
- Chen, Krishna, Emer, Sze, "Eyeriss: an energy-efficient reconfigurable accelerator for deep
  CNNs", JSSC 2017 (abstract): the 168-PE chip runs AlexNet's CONV layers at 35 frames/s with
  0.0029 DRAM accesses per MAC at batch 4, 278 mW (65 nm, 200 MHz, without DRAM power).
"""

from __future__ import annotations

from codesign.kernelspec import KernelSpec

from .accelerator import DATAFLOWS, get_accelerator
from .evaluate import LEVELS, evaluate_network

PUBLISHED = {
    "rs_advantage_range": (1.4, 2.5),       # ISCA 2016 abstract: RS vs other dataflows, CONV layers
    "jssc_fps": 35.0,                       # JSSC 2017 abstract, AlexNet CONV1-5, N=4
    "jssc_dram_accesses_per_mac": 0.0029,   # JSSC 2017 abstract (with run-length compression)
    "jssc_power_mw": 278.0,                 # JSSC 2017 abstract, chip only, 65 nm
}


def alexnet_conv_layers(batch: int = 4) -> list[KernelSpec]:
    """AlexNet's five CONV layers as Eyeriss ran them (227x227 input, two groups in 2, 4, 5)."""
    c = KernelSpec.make
    return [
        c("conv2d", (batch, 3, 227, 227), out_channels=96, kernel=11, stride=4, padding=0),
        c("conv2d", (batch, 96, 27, 27), out_channels=256, kernel=5, padding=2, groups=2),
        c("conv2d", (batch, 256, 13, 13), out_channels=384, kernel=3, padding=1),
        c("conv2d", (batch, 384, 13, 13), out_channels=384, kernel=3, padding=1, groups=2),
        c("conv2d", (batch, 384, 13, 13), out_channels=256, kernel=3, padding=1, groups=2),
    ]


def equal_area(base, dataflow: str, rf_words: int):
    """``base`` switched to ``dataflow`` with ``rf_words`` per PE and the global buffer resized so
    that the area is unchanged (ISCA 2016's comparison under the same storage area)."""
    cfg = get_accelerator(base)
    rf_kib_saved = (cfg.rf_words - rf_words) * cfg.word_bits / 8 / 1024
    extra_glb = cfg.pes * rf_kib_saved * cfg.area["rf_mm2_per_kib"] / cfg.area["glb_mm2_per_kib"]
    return cfg.replace(dataflow=dataflow, rf_words=rf_words, glb_kib=cfg.glb_kib + extra_glb,
                       name=f"{cfg.name}-{dataflow}")


# RF words per PE each dataflow gets in the equal-area comparison: RS keeps Eyeriss's 0.5 KB;
# WS holds one weight (and a few pipeline registers), OS one partial sum per output channel it
# accumulates; the area they save goes to the global buffer.
_RF_WORDS = {"ws": 16, "os": 64, "rs": 256}


def dataflow_comparison(batch: int = 16, jit: bool = True) -> dict:
    """Energy per MAC of AlexNet CONV1-5 under ws/os/rs at equal area (ISCA 2016's setup: 256 PEs,
    0.5 KB RF per PE for RS, 128 KB global buffer), with each level's share for every dataflow."""
    base = get_accelerator("eyeriss-like").replace(pe_rows=16, pe_cols=16, rf_words=256, glb_kib=128.0,
                                                  name="isca2016-256pe")
    layers = alexnet_conv_layers(batch)
    out = {"batch": batch, "pes": base.pes, "dataflows": {}}
    mac_pj = base.energy["mac_pj"]
    for df in DATAFLOWS:
        cfg = equal_area(base, df, _RF_WORDS[df])
        res = evaluate_network(layers, cfg, jit=jit)
        macs = sum(layer.macs for layer in res.layers)
        out["dataflows"][df] = {
            "rf_words": cfg.rf_words, "glb_kib": round(cfg.glb_kib, 1), "area_mm2": round(cfg.area_mm2(), 3),
            "energy_per_mac_x_mac": res.energy_mj * 1e9 / macs / mac_pj,
            "share": {lv: res.energy_by_level_mj[lv] / res.energy_mj for lv in LEVELS},
            "latency_ms": res.latency_ms,
            "dram_words_per_mac": sum(layer.accesses["dram_words"] for layer in res.layers) / macs,
        }
    rs = out["dataflows"]["rs"]["energy_per_mac_x_mac"]
    out["ratio_to_rs"] = {df: v["energy_per_mac_x_mac"] / rs for df, v in out["dataflows"].items()}
    out["ranking"] = sorted(out["dataflows"], key=lambda d: out["dataflows"][d]["energy_per_mac_x_mac"])
    out["published_rs_advantage_range"] = PUBLISHED["rs_advantage_range"]
    return out


def eyeriss_chip(batch: int = 4, jit: bool = True) -> dict:
    """AlexNet CONV1-5 on the eyeriss-like config, against the JSSC 2017 chip's figures."""
    res = evaluate_network(alexnet_conv_layers(batch), "eyeriss-like", jit=jit)
    macs = sum(layer.macs for layer in res.layers)
    dram = sum(layer.accesses["dram_words"] for layer in res.layers)
    on_chip_mj = res.energy_mj - res.energy_by_level_mj["dram"]
    return {
        "batch": batch,
        "fps": batch / (res.latency_ms * 1e-3),
        "published_fps": PUBLISHED["jssc_fps"],
        "dram_accesses_per_mac": dram / macs,
        "published_dram_accesses_per_mac": PUBLISHED["jssc_dram_accesses_per_mac"],
        "on_chip_power_mw": on_chip_mj / res.latency_ms * 1e3,
        "published_power_mw": PUBLISHED["jssc_power_mw"],
        "per_layer": [{"layer": f"CONV{i + 1}", "latency_ms": layer.latency_ms,
                       "pe_utilization": layer.pe_utilization, "energy_mj": layer.energy_mj}
                      for i, layer in enumerate(res.layers)],
        "share": {lv: res.energy_by_level_mj[lv] / res.energy_mj for lv in LEVELS},
    }
