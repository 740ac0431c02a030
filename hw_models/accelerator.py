"""The accelerator template: a spatial array of PEs with a register file each, a shared global
buffer, DRAM behind a link of fixed bandwidth, a clock and a dataflow, after Eyeriss (Chen et al.,
ISCA 2016), Timeloop (Parashar et al., ISPASS 2019) and Accelergy (Wu et al., ICCAD 2019).

Declared in YAML (``hw_models/configs/accel-*.yaml`` ship with codesign; any file path works)::

    format_version: 1
    kind: accelerator
    name: eyeriss-like
    pe_rows: 12
    pe_cols: 14
    rf_words: 260            # register file words per PE
    glb_kib: 108             # shared global buffer
    dram_bandwidth_gbs: 2.0
    clock_mhz: 200
    dataflow: rs             # ws (weight-), os (output-), rs (row-stationary)
    word_bits: 16
    energy: {dram_read_pj: 200.0}    # optional: overrides of ENERGY_DEFAULTS_PJ
    area: {glb_mm2_per_kib: 0.008}   # optional: overrides of AREA_DEFAULTS_MM2

Every number the model uses is in one of the two tables below, each with its source. Energies are
per access of one ``word_bits`` word (16 bits by default, Eyeriss's word), so a different word
width needs its own table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codesign.errors import CodesignError

from .files import check_header, read_yaml, shipped

FORMAT_VERSION = 1
DATAFLOWS = ("ws", "os", "rs")
DATAFLOW_NAMES = {"ws": "weight-stationary", "os": "output-stationary", "rs": "row-stationary"}

# Energy per action in pJ at 45 nm for 16-bit words. The ratios between levels are Eyeriss's
# normalised costs (Chen et al., ISCA 2016, its table of normalised energy costs from a commercial 65 nm process: RF 1x, inter-PE array
# 2x, global buffer 6x, DRAM 200x the energy of a MAC); the MAC itself is anchored on Horowitz,
# "Computing's energy problem", ISSCC 2014 (45 nm: 8-bit int mult 0.2 pJ, 32-bit int mult 3.1 pJ,
# 32-bit add 0.1 pJ, so a 16-bit fixed-point multiply-accumulate is about 1 pJ).
ENERGY_DEFAULTS_PJ: dict[str, float] = {
    "mac_pj": 1.0,            # Horowitz 2014: 16-bit mult ~0.8 pJ (between 8- and 32-bit) + 32-bit add 0.1 pJ
    "rf_read_pj": 1.0,        # Eyeriss ISCA 2016 energy-cost table: RF (0.5 KB) access = 1x MAC
    "rf_write_pj": 1.0,       # same table: reads and writes are not distinguished
    "noc_hop_pj": 2.0,        # Eyeriss ISCA 2016 energy-cost table: inter-PE ("array") transfer = 2x MAC
    "glb_read_pj": 6.0,       # Eyeriss ISCA 2016 energy-cost table: global buffer (>100 KB) = 6x MAC; Horowitz 2014:
    "glb_write_pj": 6.0,      #   32 KB SRAM 20 pJ per 64 bit = 5 pJ per 16-bit word, consistent
    "dram_read_pj": 200.0,    # Eyeriss ISCA 2016 energy-cost table: DRAM = 200x MAC; Horowitz 2014 gives 1.3-2.6 nJ per
    "dram_write_pj": 200.0,   #   64 bit (325-650 pJ per word) with the interface, so this is optimistic
}

# Area in mm2 at 45 nm. No paper lists these as a table; they are first-order figures (a 16-bit
# multiplier of ~2.5k NAND2-equivalent gates at ~1 um2 each; SRAM at ~0.35 um2 per bit-cell with
# 2x periphery, CACTI-style; a flip-flop register file ~7x less dense than SRAM). Check: the
# eyeriss-like config (168 PEs, 260-word RFs, 108 KiB) comes to ~6.7 mm2 here, ~14 mm2 scaled to
# 65 nm by (65/45)^2, against Eyeriss's 12.25 mm2 core (Chen et al., JSSC 2017).
AREA_DEFAULTS_MM2: dict[str, float] = {
    "mac_mm2": 0.0025,           # 16-bit MAC, 45 nm (gate count x NAND2 area, see above)
    "pe_ctrl_mm2": 0.001,        # PE control, FIFOs and its NoC router port
    "rf_mm2_per_kib": 0.056,     # flip-flop register file (0.0286 mm2 for Eyeriss's 512 B)
    "glb_mm2_per_kib": 0.008,    # SRAM with periphery (~0.86 mm2 for 108 KiB)
    "fixed_mm2": 0.5,            # top-level control, DRAM interface, clocking
}

_REQUIRED = ("name", "pe_rows", "pe_cols", "rf_words", "glb_kib", "dram_bandwidth_gbs", "clock_mhz",
             "dataflow")
_OPTIONAL = ("word_bits", "energy", "area", "description")
_HEADER = ("format_version", "kind")


@dataclass(frozen=True)
class AcceleratorConfig:
    """One point of the accelerator template (validated on construction)."""

    name: str
    pe_rows: int
    pe_cols: int
    rf_words: int
    glb_kib: float
    dram_bandwidth_gbs: float
    clock_mhz: float
    dataflow: str
    word_bits: int = 16
    energy: dict = field(default_factory=dict, compare=False)
    area: dict = field(default_factory=dict, compare=False)
    description: str = field(default="", compare=False)

    def __post_init__(self):
        for f in ("pe_rows", "pe_cols", "rf_words", "word_bits"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise CodesignError(f"accelerator {self.name}: {f} must be a positive integer, got {v!r}")
            object.__setattr__(self, f, int(v))
        for f in ("glb_kib", "dram_bandwidth_gbs", "clock_mhz"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not v > 0 \
                    or not np.isfinite(v):
                raise CodesignError(f"accelerator {self.name}: {f} must be a positive number, got {v!r}")
            object.__setattr__(self, f, float(v))
        if self.dataflow not in DATAFLOWS:
            raise CodesignError(
                f"accelerator {self.name}: unknown dataflow {self.dataflow!r}; "
                f"use one of {', '.join(DATAFLOWS)} ({', '.join(DATAFLOW_NAMES.values())})"
            )
        object.__setattr__(self, "energy", _table(self.name, "energy", self.energy, ENERGY_DEFAULTS_PJ))
        object.__setattr__(self, "area", _table(self.name, "area", self.area, AREA_DEFAULTS_MM2))

    @property
    def pes(self) -> int:
        return self.pe_rows * self.pe_cols

    @property
    def word_bytes(self) -> float:
        return self.word_bits / 8.0

    @property
    def glb_words(self) -> int:
        return int(self.glb_kib * 1024 * 8 // self.word_bits)

    def energy_pj(self, action: str) -> float:
        return float(self.energy[action])

    def area_mm2(self) -> float:
        """Area from the area table: PEs (MAC, control, register file) + global buffer + fixed."""
        a = self.area
        rf_kib = self.rf_words * self.word_bits / 8 / 1024
        pe = a["mac_mm2"] + a["pe_ctrl_mm2"] + a["rf_mm2_per_kib"] * rf_kib
        return self.pes * pe + a["glb_mm2_per_kib"] * self.glb_kib + a["fixed_mm2"]

    def replace(self, **changes) -> AcceleratorConfig:
        """A copy with some parameters changed (validated; unknown names are an error)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise CodesignError(f"unknown accelerator parameter(s) {', '.join(unknown)}; known: "
                                f"{', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["area_mm2"] = self.area_mm2()
        return d

    def to_yaml_dict(self) -> dict:
        """The YAML form (format_version 1) that ``load_accelerator`` reads back."""
        d = {"format_version": FORMAT_VERSION, "kind": "accelerator"}
        d.update({k: v for k, v in dataclasses.asdict(self).items() if k != "description" or v})
        return d


def _table(name: str, what: str, overrides, defaults: dict[str, float]) -> dict[str, float]:
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise CodesignError(f"accelerator {name}: {what} must be a mapping of {', '.join(defaults)}")
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise CodesignError(f"accelerator {name}: unknown {what} entr{'y' if len(unknown) == 1 else 'ies'} "
                            f"{', '.join(unknown)}; known: {', '.join(defaults)}")
    out = dict(defaults)
    for k, v in overrides.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or not np.isfinite(v):
            raise CodesignError(f"accelerator {name}: {what}.{k} must be a non-negative number, got {v!r}")
        out[k] = float(v)
    return out


def accelerator_from_dict(data, source: str = "<dict>") -> AcceleratorConfig:
    """Validate a parsed YAML mapping (with format_version and kind) into a config."""
    check_header(data, "accelerator", FORMAT_VERSION, source)
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL) - set(_HEADER))
    if unknown:
        raise CodesignError(f"{source}: unknown parameter(s) {', '.join(unknown)}; known: "
                            f"{', '.join(_REQUIRED + _OPTIONAL)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CodesignError(f"{source} lacks {', '.join(missing)}")
    kw = {k: data[k] for k in _REQUIRED + _OPTIONAL if k in data}
    kw["name"] = str(kw["name"])
    return AcceleratorConfig(**kw)


def load_accelerator(path: str | Path) -> AcceleratorConfig:
    return accelerator_from_dict(read_yaml(path, "accelerator"), str(path))


def list_accelerators() -> dict[str, AcceleratorConfig]:
    """Every accelerator config codesign ships, by name."""
    return shipped("accel", load_accelerator)


def get_accelerator(name, **overrides) -> AcceleratorConfig:
    """An accelerator by shipped name or YAML path (or a config), with parameters overridden."""
    if isinstance(name, AcceleratorConfig):
        acc = name
    elif not isinstance(name, (str, Path)):
        raise CodesignError(f"an accelerator is a name, a YAML path or an AcceleratorConfig, got {type(name).__name__}")
    elif str(name).endswith((".yaml", ".yml")):
        acc = load_accelerator(name)
    else:
        known = list_accelerators()
        if name not in known:
            raise CodesignError(f"unknown accelerator {name!r}; known: {', '.join(sorted(known))} "
                                "(or give a YAML file)")
        acc = known[name]
    return acc.replace(**overrides) if overrides else acc
