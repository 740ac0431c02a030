"""The run directory: config.json, one JSON file per finished phase, log.jsonl, checkpoints.

Files are written atomically (temporary file, then rename), so a killed run leaves each file
either whole or absent, and ``--resume`` skips exactly the phases whose file exists."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from ..errors import CodesignError
from .config import SearchConfig


class Run:
    """A run directory: config, log, phase files."""

    def __init__(self, path: Path):
        self.path = path

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return self.file(name).exists()

    def read(self, name: str) -> dict:
        return json.loads(self.file(name).read_text())

    def write(self, name: str, obj) -> Path:
        p = self.file(name)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=_jsonable))
        tmp.replace(p)
        return p

    def log(self, rec: dict, stream: str = "log.jsonl") -> None:
        with open(self.file(stream), "a") as f:
            f.write(json.dumps({"time": time.time(), **rec}, default=_jsonable) + "\n")


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)


def new_run_dir(cfg: SearchConfig, root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{cfg.space}-{cfg.strategy}-s{cfg.seed}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def read_config(run_dir: str | Path, overrides: dict | None = None) -> SearchConfig:
    """The config of an existing run (``--resume``), refusing flags that differ from it."""
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise CodesignError(f"--resume {path}: not a codesign run directory (no config.json)")
    try:
        data = json.loads((path / "config.json").read_text())
        saved = SearchConfig.from_dict(data["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CodesignError(f"--resume {path}: config.json is damaged ({type(exc).__name__}: {exc})") from None
    for k, v in (overrides or {}).items():
        if getattr(saved, k) != v:
            raise CodesignError(f"--resume {path}: the run was made with {k}={getattr(saved, k)!r}, not {v!r}; "
                                "drop the flag or start a new run")
    return saved


def open_run(cfg: SearchConfig, run_dir: str | Path | None, resume: bool,
             overrides: dict | None = None) -> tuple[Run, SearchConfig]:
    """Create a run directory holding config.json, or reopen one with ``resume``."""
    if resume:
        return Run(Path(run_dir)), read_config(run_dir, overrides)
    path = Path(run_dir) if run_dir else new_run_dir(cfg)
    if (path / "config.json").exists():
        raise CodesignError(f"{path} already holds a run; use --resume {path} or another --run-dir")
    path.mkdir(parents=True, exist_ok=True)
    import codesign

    Run(path).write("config.json", {"format": "codesign-search-config", "format_version": 1,
                                    "codesign_version": codesign.__version__, "config": cfg.to_dict()})
    return Run(path), cfg
