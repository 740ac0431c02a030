"""Hardware spaces as files: a base accelerator and the choices of some of its parameters, for the
co-search of network and accelerator (``codesign search --hw-space NAME|PATH``).

Declared in YAML (``hw_models/configs/hwspace-*.yaml`` ship with codesign; any file path works)::

    format_version: 1
    kind: hardware-space
    name: eyeriss-sweep
    base: eyeriss-like               # a shipped accelerator name or an accelerator YAML path
    choices:                         # parameter -> values; the configs are every combination
      pe_rows: [8, 12, 16]
      pe_cols: [8, 14, 16]
      glb_kib: [54, 108, 216]
      dataflow: [ws, os, rs]

Searchable parameters: pe_rows, pe_cols, rf_words, glb_kib, dram_bandwidth_gbs, clock_mhz,
dataflow, word_bits. Every value is checked against the template before any work.
"""

from __future__ import annotations

from pathlib import Path

from codesign.errors import CodesignError

from .expected import HardwareSpace
from .files import check_header, read_yaml, shipped

FORMAT_VERSION = 1
_KEYS = {"format_version", "kind", "name", "base", "choices", "description"}


def hardware_space_from_dict(data, source: str = "<dict>", base_dir: Path | None = None) -> HardwareSpace:
    """Validate a parsed YAML mapping into a ``HardwareSpace`` (named ``data["name"]``)."""
    check_header(data, "hardware-space", FORMAT_VERSION, source)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise CodesignError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    for key in ("name", "base", "choices"):
        if key not in data:
            raise CodesignError(f"{source} lacks {key}")
    base = str(data["base"])
    if base.endswith((".yaml", ".yml")) and base_dir is not None and not Path(base).is_absolute():
        base = str(base_dir / base)
    try:
        space = HardwareSpace(base, data["choices"])
    except CodesignError as exc:
        raise CodesignError(f"{source}: {exc}") from None
    space.name = str(data["name"])
    space.description = str(data.get("description", ""))
    return space


def load_hardware_space(path: str | Path) -> HardwareSpace:
    path = Path(path)
    return hardware_space_from_dict(read_yaml(path, "hardware space"), str(path), path.parent)


def list_hardware_spaces() -> dict[str, HardwareSpace]:
    """Every hardware space codesign ships, by name."""
    return shipped("hwspace", load_hardware_space)


def get_hardware_space(name: str | Path) -> HardwareSpace:
    """A hardware space by shipped name or YAML path."""
    if str(name).endswith((".yaml", ".yml")) or Path(str(name)).is_file():
        return load_hardware_space(name)
    known = list_hardware_spaces()
    if str(name) not in known:
        raise CodesignError(f"unknown hardware space {name!r}; known: {', '.join(sorted(known))} (or give a YAML file)")
    return known[str(name)]
