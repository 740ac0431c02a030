"""The accelerator model against the field's own simulators: ZigZag-DSE and SCALE-Sim.

The same layers and the same accelerator config are described to codesign's mapper and to a
reference, and their cycles, latency, energy and PE utilisation are set side by side. The
references are optional (``pip install 'codesign[hw-check]'``) and never imported on the fast
path; asking for one that is missing is one CodesignError with the install line.

- **ZigZag-DSE** (KU Leuven; Mei et al., IEEE TC 2021 and its LOMA mapper) is an analytical
  mapper and cost model of the Timeloop class. It gets the config as its own hardware YAML: an
  operational array of ``pe_cols`` (D1) x ``pe_rows`` (D2) MACs; a register file per PE of
  ``rf_words`` words shared by weights, inputs and outputs; a global buffer of ``glb_kib`` shared
  by all three and multicast to every PE; DRAM behind one read/write port of the config's link
  bandwidth. Energies per word are codesign's energy table (a wide port's access costs its width
  in words, so a word costs the same whatever the port). The dataflow is described as ZigZag
  describes dataflows, by spatial unrollings: the ones codesign's mapper considers for the layer
  (``zigzag_spatial_mappings``), so that both search the same spatial choices (ZigZag's own
  generator would try divisors only: a 5x5 depthwise layer would use 5 of 16 rows); ZigZag
  searches the temporal mapping of each and keeps the smallest energy-delay product, as codesign. ZigZag has no interconnect energy, so the codesign config it is
  compared with has ``noc_hop_pj`` 0 (``comparable_config``). Systolic arrays (ws, os) declare
  their systolic dimensions, so ZigZag drains the array at the end of each layer.
- **SCALE-Sim** (Samajdar et al., ISPASS 2020; v3) simulates a systolic array cycle by cycle from
  its operand traces, for weight- and output-stationary dataflows. It gets ``pe_rows`` x
  ``pe_cols``, the dataflow, the global buffer split into its three double-buffered SRAMs
  (ifmap, filter, ofmap) with the same capacity in words, and the DRAM link in words per cycle.
  SCALE-Sim has no groups: a depthwise layer runs as one single-channel layer per channel (its
  own ``DP`` convention), a grouped layer as one layer per group. Its layers have no padding, so
  they get the padded input.

Only layers with MACs (conv2d, dense) are described to the references; pools and elementwise
kernels are reported as not compared.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from codesign.errors import CodesignError
from codesign.kernelspec import KernelSpec

from .accelerator import AcceleratorConfig, get_accelerator

REFERENCES = ("zigzag", "scalesim")
_PACKAGES = {"zigzag": ("zigzag", "ZigZag-DSE (zigzag-dse)"), "scalesim": ("scalesim", "SCALE-Sim (scalesim)")}
INSTALL_HINT = "pip install 'codesign[hw-check]'"

# Bump when the way a config or a layer is described to a reference changes (caches key on it).
DESCRIPTION_VERSION = 3  # 3: ws partial sums bypass the register file


def require(reference: str):
    """Import a reference simulator, or one CodesignError naming it and the install line."""
    if reference not in REFERENCES:
        raise CodesignError(f"unknown reference {reference!r}; use one of {', '.join(REFERENCES)}")
    module, label = _PACKAGES[reference]
    try:
        return __import__(module)
    except ImportError:
        raise CodesignError(f"--check {reference} needs {label}, which is not installed: {INSTALL_HINT}") from None


def _mac_layer(spec: KernelSpec) -> bool:
    return spec.op in ("conv2d", "dense")


@dataclass(frozen=True)
class _Loops:
    """A MAC layer as its loop nest (per group)."""

    n: int
    g: int
    k: int
    c: int
    p: int
    q: int
    r: int
    s: int
    stride: int
    dilation: int
    h: int = 1  # input rows and columns, unpadded
    w: int = 1
    pad: int = 0
    pad_w: int = -1  # -1: as pad (square windows)

    def key(self) -> str:
        """The loop nest and its input as a string: layers with the same key cost the same on every
        side (bias and activation, which codesign's KernelSpec keys carry, do not enter it)."""
        return (f"n{self.n}_g{self.g}_k{self.k}_c{self.c}_p{self.p}_q{self.q}_r{self.r}_s{self.s}"
                f"_u{self.stride}_d{self.dilation}_h{self.h}_w{self.w}_pad{self.pad}"
                + (f"x{self.pad_w}" if self.pad_w not in (-1, self.pad) else ""))

    @property
    def macs(self) -> int:
        return self.n * self.g * self.k * self.c * self.p * self.q * self.r * self.s

    @classmethod
    def of(cls, spec: KernelSpec) -> _Loops:
        if spec.op == "dense":
            n, c = spec.input_shape
            return cls(n, 1, spec.attr("out_features"), c, 1, 1, 1, 1, 1, 1)
        if spec.op != "conv2d":
            raise CodesignError(f"only conv2d and dense layers are described to the references, not {spec.op}")
        n, c, h, w = spec.input_shape
        _, k, p, q = spec.output_shape()
        g = spec.attr("groups")
        (kr, ks), (pad_h, pad_w) = spec.kernel_hw(), spec.padding_hw()
        return cls(n, g, k // g, c // g, p, q, kr, ks, spec.attr("stride"), spec.attr("dilation"), h, w,
                   pad_h, pad_w)


def loop_key(spec: KernelSpec) -> str:
    """The loop nest of a conv2d or dense layer as a string (see ``_Loops.key``)."""
    return _Loops.of(spec).key()


def comparable_config(cfg: AcceleratorConfig, reference: str) -> AcceleratorConfig:
    """The codesign config a reference is compared with: ZigZag models no interconnect energy, so
    its comparison runs codesign with ``noc_hop_pj`` 0; SCALE-Sim compares cycles only."""
    if reference == "zigzag":
        return cfg.replace(energy={**cfg.energy, "noc_hop_pj": 0.0})
    return cfg


# ---- ZigZag ------------------------------------------------------------------------------------

def _zz_ports(operands, word_bits: int, width_bits: int) -> list[dict]:
    """A port per operand and direction, each ``width_bits`` wide, so that no memory of the
    description is short of ports: codesign models no register-file or buffer bandwidth limit."""
    directions = {"I1": (("read", "tl"), ("write", "fh")), "I2": (("read", "tl"), ("write", "fh")),
                  "O": (("read", "tl"), ("read", "th"), ("write", "fh"), ("write", "fl"))}
    ports, count = [], {"read": 0, "write": 0}
    for op in operands:
        for kind, direction in directions[op]:
            count[kind] += 1
            ports.append({"name": f"{kind[0]}_port_{count[kind]}", "type": kind, "bandwidth_min": word_bits,
                          "bandwidth_max": width_bits, "allocation": [f"{op}, {direction}"]})
    return ports


def dram_link_bits(cfg: AcceleratorConfig) -> int:
    """The DRAM link in bits per cycle (at least one word: ZigZag moves whole words)."""
    return max(cfg.word_bits, int(cfg.dram_bandwidth_gbs / (cfg.clock_mhz * 1e-3) * 8))


def zigzag_hardware(cfg: AcceleratorConfig) -> dict:
    """ZigZag's hardware description (its accelerator YAML as a dict) of one config."""
    wb, e = cfg.word_bits, cfg.energy
    ops = ["I1", "I2", "O"]
    # weight-stationary partial sums flow down the columns into the buffer and never touch a PE's
    # register file (codesign's ws, SCALE-Sim's and the TPU's arrays): they bypass it here too
    rf_ops = ["I1", "I2"] if cfg.dataflow == "ws" else ops
    glb_bits = wb * cfg.pes  # wide enough to feed every PE a word per cycle: codesign has no GLB bandwidth limit
    link = dram_link_bits(cfg)
    every_direction = ["I1, fh", "I1, tl", "I2, fh", "I2, tl", "O, fh", "O, tl", "O, fl", "O, th"]
    return {
        "name": f"codesign-{cfg.name}",
        "memories": {
            "rf": {"size": cfg.rf_words * wb, "r_cost": e["rf_read_pj"], "w_cost": e["rf_write_pj"], "area": 0.0,
                   "latency": 1, "operands": rf_ops, "ports": _zz_ports(rf_ops, wb, wb), "served_dimensions": []},
            "glb": {"size": cfg.glb_words * wb, "r_cost": e["glb_read_pj"] * glb_bits / wb,
                    "w_cost": e["glb_write_pj"] * glb_bits / wb, "area": 0.0, "latency": 1, "operands": ops,
                    "ports": _zz_ports(ops, wb, glb_bits), "served_dimensions": ["D1", "D2"]},
            "dram": {"size": 10 ** 12, "r_cost": e["dram_read_pj"] * link / wb, "w_cost": e["dram_write_pj"] * link / wb,
                     "area": 0.0, "latency": 1, "operands": ops,
                     "ports": [{"name": "rw_port_1", "type": "read_write", "bandwidth_min": wb, "bandwidth_max": link,
                                "allocation": every_direction}],
                     "served_dimensions": ["D1", "D2"]},
        },
        "operational_array": {"unit_energy": e["mac_pj"], "unit_area": 0.0, "dimensions": ["D1", "D2"],
                              "sizes": [cfg.pe_cols, cfg.pe_rows],
                              "systolic_dimensions": ["D1", "D2"] if cfg.dataflow in ("ws", "os") else []},
    }


def _reduction_unrolling(c: int, r: int, s: int, rows: int) -> dict:
    """Input channels x filter rows x filter columns over ``rows`` PEs with the fewest folds (the
    reduction a weight-stationary column sums), the largest unrolling among equals. ZigZag unrolls
    loops, not their flattened product, so this is as close as it gets to SCALE-Sim's and
    codesign's C*R*S folded over the rows."""
    best = (math.inf, 0, {})
    for fy in range(1, min(r, rows) + 1):
        for fx in range(1, min(s, rows // fy) + 1):
            fc = min(c, rows // (fy * fx))
            folds = math.ceil(c / fc) * math.ceil(r / fy) * math.ceil(s / fx)
            if (folds, -fc * fy * fx) < best[:2]:
                best = (folds, -fc * fy * fx, {"C": fc, "FY": fy, "FX": fx})
    return best[2]


def zigzag_spatial_mappings(spec: KernelSpec, cfg: AcceleratorConfig) -> list[dict]:
    """The spatial unrollings codesign's mapper considers for this layer and dataflow, in ZigZag's
    terms (D1 = the array's columns, D2 its rows); ZigZag searches the temporal mapping of each and
    the one with the smallest energy-delay product is kept, as codesign keeps its best.

    - ws: output channels across the columns, the reduction (C, R, S) down the rows;
    - os: output rows down the rows and output columns across them (weights broadcast; multicast
      interconnects only), or output channels down the rows and output pixels (columns, rows,
      images) across the columns;
    - rs: filter rows down the rows replicated over C (or K), output rows across the columns
      replicated over K (or C).
    """
    lp = _Loops.of(spec)
    rows, cols = cfg.pe_rows, cfg.pe_cols
    if cfg.dataflow == "ws":
        maps = [{"D1": {"K": min(lp.k, cols)}, "D2": _reduction_unrolling(lp.c, lp.r, lp.s, rows)}]
    elif cfg.dataflow == "os":
        ox = min(lp.q, cols)
        oy = min(lp.p, max(1, cols // ox))
        b = min(lp.n, max(1, cols // (ox * oy)))
        maps = [{"D1": {"OX": ox, "OY": oy, "B": b}, "D2": {"K": min(lp.k, rows)}}]
        if cfg.interconnect == "multicast":  # weights broadcast over a grid of output pixels
            maps.insert(0, {"D1": {"OX": min(lp.q, cols)}, "D2": {"OY": min(lp.p, rows)}})
    else:
        rr, pu = min(lp.r, rows), min(lp.p, cols)
        maps = []
        for vert, horiz in (("C", "K"), ("K", "C")):
            v = max(1, min(rows // rr, getattr(lp, vert.lower())))
            h = max(1, min(cols // pu, getattr(lp, horiz.lower())))
            maps.append({"D1": {"OY": pu, horiz: h}, "D2": {"FY": rr, vert: v}})
    # drop unit unrollings (ZigZag wants at least one loop per array dimension) and duplicates
    out = []
    for m in maps:
        m = {d: {k: v for k, v in loops.items() if v > 1} or {next(iter(loops)): 1} for d, loops in m.items()}
        if m not in out:
            out.append(m)
    return out


def zigzag_mapping(spatial: dict) -> list[dict]:
    """ZigZag's mapping file for one spatial unrolling (every layer takes the default entry)."""
    return [{"name": "default",
             "spatial_mapping": {d: [f"{k}, {v}" for k, v in loops.items()] for d, loops in spatial.items()},
             "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]


def zigzag_layer(spec: KernelSpec, layer_id: int, word_bits: int) -> dict:
    """One MAC layer in ZigZag's workload format: the unpadded input with its padding, as ZigZag's
    own ONNX front end writes a convolution (only the padding rows the windows reach are given,
    so that ZigZag's input size is the rows the layer reads)."""
    lp = _Loops.of(spec)
    if spec.op == "dense":
        h, w, ph, pw = 1, 1, 0, 0
    else:
        _, _, h, w = spec.input_shape
        ph, pw = spec.padding_hw()
    # padding past the last row (column) the windows read is never read: leave it out
    reach_h = (lp.p - 1) * lp.stride + (lp.r - 1) * lp.dilation + 1
    reach_w = (lp.q - 1) * lp.stride + (lp.s - 1) * lp.dilation + 1
    pad_h = [min(ph, reach_h), max(0, min(ph, reach_h - ph - h))]
    pad_w = [min(pw, reach_w), max(0, min(pw, reach_w - pw - w))]
    return {
        "id": layer_id, "name": f"layer{layer_id}", "operator_type": "Conv",
        "equation": "O[b][g][k][oy][ox]+=W[g][k][c][fy][fx]*I[b][g][c][iy][ix]",
        "dimension_relations": [f"ix={lp.stride}*ox+{lp.dilation}*fx", f"iy={lp.stride}*oy+{lp.dilation}*fy"],
        "loop_dims": ["B", "K", "G", "OX", "OY", "C", "FX", "FY"],
        "loop_sizes": [lp.n, lp.k, lp.g, lp.q, lp.p, lp.c, lp.s, lp.r],
        "operand_precision": {"W": word_bits, "I": word_bits, "O": word_bits, "O_final": word_bits},
        "operand_source": {"I": layer_id},
        "pr_loop_dims": ["IX", "IY"], "pr_loop_sizes": [w, h], "padding": [pad_w, pad_h],
    }


def run_zigzag(specs, accel, lpf_limit: int = 3) -> list[dict]:
    """Each MAC layer of ``specs`` through ZigZag on ``accel``; one dict per layer (same order).

    Each layer is its own ZigZag workload, so layers are independent (no inter-layer data kept on
    chip), as in codesign's model; each of its spatial unrollings (``zigzag_spatial_mappings``)
    gets LOMA's temporal mapping search and the smallest energy-delay product is kept.
    ``lpf_limit`` bounds LOMA's loop prime factors (ZigZag's API default is 6; 3 found the same
    mappings on the layers we tried and is several times faster).
    """
    require("zigzag")
    from zigzag.mapping.temporal_mapping import TemporalMappingType
    from zigzag.opt.loma.engine import NoValidLoopOrderingFoundException
    from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage
    from zigzag.stages.main import MainStage
    from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage
    from zigzag.stages.mapping.temporal_mapping_generator_stage import TemporalMappingGeneratorStage
    from zigzag.stages.parser.accelerator_parser import AcceleratorParserStage
    from zigzag.stages.parser.workload_parser import WorkloadParserStage
    from zigzag.stages.results.reduce_stages import MinimalEDPStage
    from zigzag.stages.workload_iterator import WorkloadStage

    cfg = get_accelerator(accel)
    stages = [WorkloadParserStage, AcceleratorParserStage, WorkloadStage, MinimalEDPStage,
              SpatialMappingGeneratorStage, MinimalEDPStage, TemporalMappingGeneratorStage, CostModelStage]
    out = []
    with tempfile.TemporaryDirectory(prefix="codesign-zigzag-") as tmp, _quiet("zigzag"):
        hw, mp = Path(tmp) / "hardware.yaml", Path(tmp) / "mapping.yaml"
        hw.write_text(yaml.safe_dump(zigzag_hardware(cfg), sort_keys=False))  # order = memory hierarchy
        for spec in specs:
            best = None
            for spatial in zigzag_spatial_mappings(spec, cfg):
                mp.write_text(yaml.safe_dump(zigzag_mapping(spatial), sort_keys=False))
                main = MainStage(stages, accelerator=str(hw), workload=[zigzag_layer(spec, 0, cfg.word_bits)],
                                 mapping=str(mp), loma_lpf_limit=lpf_limit, loma_show_progress_bar=False,
                                 nb_mappings_generated=1, access_same_data_considered_as_no_access=True,
                                 temporal_mapping_type=TemporalMappingType("uneven"))
                try:
                    cme = main.run()[0][0]
                except NoValidLoopOrderingFoundException:
                    continue
                if best is None or cme.energy_total * cme.latency_total2 < best.energy_total * best.latency_total2:
                    best = cme
            if best is None:
                out.append({"feasible": False, "reason": "ZigZag found no mapping that fits the memories"})
                continue
            cycles = float(best.latency_total2)
            out.append({
                "feasible": True, "cycles": cycles, "latency_ms": cycles / (cfg.clock_mhz * 1e3),
                "energy_mj": float(best.energy_total) * 1e-9, "mac_energy_mj": float(best.mac_energy) * 1e-9,
                "pe_utilization": float(best.mac_utilization2), "compute_cycles": float(best.ideal_temporal_cycle),
                "stall_cycles": float(best.stall_slack_comb), "onload_cycles": float(best.data_onloading_cycle),
                "offload_cycles": float(best.data_offloading_cycle), "drain_cycles": float(best.systolic_drain_cycle),
                "spatial_mapping": str(best.layer.spatial_mapping),
                "energy_by_operand_pj": {str(op): [float(x) for x in v] for op, v in best.mem_energy_breakdown.items()},
            })
    return out


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silence a reference's logging and printing while it runs."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


# ---- SCALE-Sim ---------------------------------------------------------------------------------

_SCALESIM_CFG = """[general]
run_name = codesign

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {sram_kb}
FilterSramSzkB: {sram_kb}
OfmapSramSzkB: {sram_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth : {bw}
Dataflow : {dataflow}
MemoryBanks: 1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: {bw}
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: {bw}
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: {mode}
UseRamulatorTrace: False
"""


def dram_link_words(cfg: AcceleratorConfig) -> int:
    """The DRAM link in whole words per cycle (SCALE-Sim's bandwidths are integers; at least 1)."""
    return max(1, int(cfg.dram_bandwidth_gbs / (cfg.clock_mhz * 1e-3) / cfg.word_bytes))


def scalesim_config(cfg: AcceleratorConfig, stalls: bool = False) -> str:
    """SCALE-Sim's config file for one config: stall-free by default (its CALC mode, which sizes the
    DRAM bandwidth so that nothing waits), the config's DRAM link with ``stalls`` (USER mode)."""
    if cfg.dataflow not in ("ws", "os"):
        raise CodesignError(f"SCALE-Sim simulates weight- and output-stationary systolic arrays; "
                            f"{cfg.name} is {cfg.dataflow}: check it against zigzag instead")
    # SCALE-Sim stores one element per byte: its kB are thousands of words
    sram_kb = max(1, int(cfg.glb_words / 3 // 1024))
    return _SCALESIM_CFG.format(rows=cfg.pe_rows, cols=cfg.pe_cols, sram_kb=sram_kb, bw=dram_link_words(cfg),
                                dataflow=cfg.dataflow, mode="USER" if stalls else "CALC")


def scalesim_layers(spec: KernelSpec) -> list[tuple]:
    """SCALE-Sim topology rows (name, ifmap h, w, filter h, w, channels, filters, stride) of one
    MAC layer; a grouped layer is one row per group (as SCALE-Sim's ``DP`` rows do)."""
    lp = _Loops.of(spec)
    if lp.dilation != 1:
        raise CodesignError("SCALE-Sim has no dilated convolutions")
    # a batch of N images is N times the output rows (SCALE-Sim's cycles follow the pixel count)
    h = (lp.n * lp.p - 1) * lp.stride + lp.r
    w = (lp.q - 1) * lp.stride + lp.s
    row = (h, w, lp.r, lp.s, lp.c, lp.k, lp.stride)
    return [(f"g{i}",) + row for i in range(lp.g)]


def _scalesim_compat() -> None:
    """SCALE-Sim 3.0 calls int() on one-element arrays, which NumPy >= 2.4 refuses: give its two
    memory modules a ``max`` that returns the scalar it means (same value, no other change)."""
    import builtins

    import numpy as np
    from scalesim.memory import double_buffered_scratchpad_mem as dbm
    from scalesim.memory import read_buffer as rb

    def scalar_max(*values):
        if len(values) == 1:
            return np.asarray(values[0]).max()
        return builtins.max(np.asarray(v).max() for v in values)

    rb.max = dbm.max = scalar_max


def run_scalesim(specs, accel, stalls: bool = False) -> list[dict]:
    """Each MAC layer of ``specs`` through SCALE-Sim on ``accel`` (ws or os); one dict per layer.

    ``cycles`` is SCALE-Sim's total summed over a layer's groups. By default SCALE-Sim sizes the
    DRAM bandwidth so that nothing stalls (its CALC mode) and ``cycles`` are the array's own; with
    ``stalls`` it gets the config's link (USER mode) and adds its stalls, which takes far longer.
    """
    require("scalesim")
    from scalesim.scale_sim import scalesim

    _scalesim_compat()
    cfg = get_accelerator(accel)
    specs = list(specs)
    config_text = scalesim_config(cfg, stalls)
    out = []
    with tempfile.TemporaryDirectory(prefix="codesign-scalesim-") as tmp, _quiet("scalesim"):
        tmp = Path(tmp)
        (tmp / "arch.cfg").write_text(config_text)
        for spec in specs:
            rows = scalesim_layers(spec)
            # identical groups: simulate one, count it once per group
            topo = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"
            topo += ",".join(str(x) for x in rows[0]) + ",\n"
            (tmp / "topology.csv").write_text(topo)
            layout = "Layer name," + " x," * 20 + "\n" + rows[0][0] + ", 1, 1, 1, 1, 1, 1, 0, 1, 2, 4, 5, 3, 3, 2, 1, 0, 4, 5, 6, 7,\n"
            (tmp / "layout.csv").write_text(layout)
            sim = scalesim(save_disk_space=True, verbose=False, config=str(tmp / "arch.cfg"),
                           topology=str(tmp / "topology.csv"), layout=str(tmp / "layout.csv"))
            sim.run_scale(top_path=str(tmp / "out"))
            layer = sim.runner.single_layer_sim_object_list[0]
            _overall, total, stall, util, mapping_eff, _compute_util = layer.get_compute_report_items()
            groups = len(rows)
            cycles = float(total) * groups
            out.append({
                "feasible": True, "cycles": cycles, "latency_ms": cycles / (cfg.clock_mhz * 1e3),
                "stall_cycles": float(stall) * groups, "pe_utilization": float(util) / 100.0,
                "mapping_efficiency": float(mapping_eff) / 100.0, "groups": groups,
            })
    return out


# ---- side by side --------------------------------------------------------------------------------

def run_reference(reference: str, specs, accel, **kw) -> list[dict]:
    """Every MAC layer of ``specs`` through one reference (``zigzag`` or ``scalesim``)."""
    if reference == "zigzag":
        return run_zigzag(specs, accel, **kw)
    if reference == "scalesim":
        return run_scalesim(specs, accel, **kw)
    require(reference)  # raises for an unknown name
    return []


def check_network(network, accel, reference: str, input_shape=None, progress=None, **kw) -> dict:
    """codesign's estimate of a network beside a reference's, per MAC layer and in total.

    Args:
        network: as for ``evaluate_network`` (KernelSpecs, .onnx path, ModelProto, nn.Module).
        accel: accelerator name, YAML path or AcceleratorConfig.
        reference: ``zigzag`` or ``scalesim``.
        progress: optional ``progress(done, total, layer_key)``, called after each distinct layer
            the reference has run (they take seconds to minutes each).
        kw: passed to ``run_zigzag`` / ``run_scalesim``.

    Returns:
        dict with ``layers`` (codesign and reference side by side, with ratios), ``totals`` over the
        layers both describe, and ``not_compared`` (kernels without MACs, by op).
    """
    from .evaluate import evaluate_layers, network_kernels

    require(reference)
    cfg = comparable_config(get_accelerator(accel), reference)
    if reference == "scalesim":
        scalesim_config(cfg)  # refuses rs before any work
    specs = network_kernels(network, input_shape)
    mac = [s for s in specs if _mac_layer(s)]
    if not mac:
        raise CodesignError("the network has no conv2d or dense layer to compare")
    skipped: dict[str, int] = {}
    for s in specs:
        if not _mac_layer(s):
            skipped[s.op] = skipped.get(s.op, 0) + 1
    ours = dict(zip(mac, evaluate_layers(mac, cfg)))
    by_loops = {}
    for s in mac:  # one reference run per distinct loop nest (bias and activation do not matter)
        by_loops.setdefault(loop_key(s), s)
    answers = {}
    for i, (key, s) in enumerate(by_loops.items()):
        answers[key] = run_reference(reference, [s], cfg, **kw)[0]
        if progress is not None:
            progress(i + 1, len(by_loops), key)
    theirs = {s: answers[loop_key(s)] for s in mac}
    layers, tot = [], {"codesign": {"cycles": 0.0, "energy_mj": 0.0}, reference: {"cycles": 0.0, "energy_mj": 0.0}}
    for s in mac:
        a, b = ours[s], theirs[s]
        # SCALE-Sim runs stall-free: set its cycles beside the array's own (compute) cycles
        cycles = a.mapping["compute_cycles"] if reference == "scalesim" and a.feasible else a.cycles
        row = {"kernel_key": s.key(), "macs": a.macs,
               "codesign": {"cycles": cycles, "latency_ms": cycles / (cfg.clock_mhz * 1e3), "energy_mj": a.energy_mj,
                            "pe_utilization": a.macs / (cycles * cfg.pes) if a.feasible else 0.0},
               reference: b}
        if b.get("feasible") and a.feasible:
            row["cycles_ratio"] = cycles / b["cycles"]
            if "energy_mj" in b:
                row["energy_ratio"] = a.energy_mj / b["energy_mj"]
        layers.append(row)
        tot["codesign"]["cycles"] += cycles
        tot["codesign"]["energy_mj"] += a.energy_mj
        tot[reference]["cycles"] += b.get("cycles", math.inf)
        tot[reference]["energy_mj"] += b.get("energy_mj", math.nan if reference == "scalesim" else math.inf)
    for side in tot.values():
        side["latency_ms"] = side["cycles"] / (cfg.clock_mhz * 1e3)
    if reference == "scalesim":
        del tot[reference]["energy_mj"]
    return {"accelerator": cfg.to_dict(), "reference": reference, "layers": layers, "totals": tot,
            "not_compared": skipped}
