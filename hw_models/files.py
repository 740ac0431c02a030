"""The YAML files of hw_models (accelerators, hardware spaces, rooflines): reading, the header every
file carries (``format_version``, ``kind``), and the configs codesign ships in ``configs/``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from codesign.errors import CodesignError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def read_yaml(path: str | Path, what: str) -> dict:
    """The mapping in a YAML file; a missing file or invalid YAML is one CodesignError line."""
    path = Path(path)
    if not path.is_file():
        raise CodesignError(f"no {what} file at {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CodesignError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return data


def check_header(data, kind: str, version: int, source: str) -> dict:
    """``data`` itself if it is a mapping of this ``kind`` and ``format_version``."""
    what = kind.replace("-", " ")
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise CodesignError(f"{source} is not a{'n' if kind[0] in 'aeiou' else ''} {what} file (it needs kind: {kind})")
    if data.get("format_version") != version:
        raise CodesignError(f"{source} has format_version {data.get('format_version')!r}; this codesign "
                            f"reads {what} files of format_version {version}")
    return data


def shipped(prefix: str, load: Callable[[Path], object]) -> dict:
    """Every shipped config ``configs/<prefix>-*.yaml``, loaded, by its ``name``."""
    out = {}
    for path in sorted(CONFIG_DIR.glob(f"{prefix}-*.yaml")):
        obj = load(path)
        out[obj.name] = obj
    return out
