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
from ..files import check_output, read_json, read_npz
from .config import SearchConfig

CONFIG_FORMAT = "codesign-search-config"
CONFIG_VERSION = 1


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
    saved = _run_config(path, "--resume ")
    for k, v in (overrides or {}).items():
        if getattr(saved, k) != v:
            raise CodesignError(f"--resume {path}: the run was made with {k}={getattr(saved, k)!r}, not {v!r}; "
                                "drop the flag or start a new run")
    return saved


def read_finished_run(run_dir: str | Path) -> tuple[SearchConfig, str]:
    """The config and derived genotype of a run that got past its derive phase (``codesign train``
    and ``codesign export`` of a run directory)."""
    path = Path(run_dir)
    if not (path / "derived.json").is_file():
        raise CodesignError(f"{path} is a directory but not a finished search run (no derived.json)")
    if not (path / "config.json").is_file():
        raise CodesignError(f"{path} is not a codesign run directory (no config.json)")
    cfg = _run_config(path)
    derived = read_json(path / "derived.json", "derived network")
    genotype = derived.get("genotype") if isinstance(derived, dict) else None
    if not isinstance(genotype, str):
        raise CodesignError(f"{path}: derived.json is damaged (it holds no genotype string)")
    return cfg, genotype


def _run_config(path: Path, flag: str = "") -> SearchConfig:
    data = read_json(path / "config.json", "run config")
    if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
        raise CodesignError(f"{flag}{path}: config.json is not a codesign run config")
    if data.get("format_version") != CONFIG_VERSION:
        raise CodesignError(f"{flag}{path}: config.json has format version {data.get('format_version')!r}; this "
                            f"codesign reads version {CONFIG_VERSION}")
    try:
        return SearchConfig.from_dict(data["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CodesignError(f"{flag}{path}: config.json is damaged ({type(exc).__name__}: {exc})") from None


# What a run directory holds once a phase has finished (config.json alone: nothing done yet).
_PHASE_FILES = ("costs.json", "search.json", "checkpoint.json", "derived.json", "train.json", "results.json")


def check_run_dir(run_dir: str | Path | None, resume: bool) -> None:
    """Check a run directory before any work: a new run's must be creatable and hold no run;
    a resumed run's files must all be readable (a damaged one is named, with what to delete)."""
    if run_dir is None:
        return
    path = Path(run_dir)
    if not resume:
        check_output(path, "--run-dir", folder=True)
        done = [f for f in _PHASE_FILES if (path / f).exists()]
        if done:
            raise CodesignError(f"{path} already holds a run ({', '.join(done)}); use --resume {path} or another "
                                "--run-dir")
        return
    if not path.is_dir():
        raise CodesignError(f"--resume {path}: not a codesign run directory"
                            + (" (a file)" if path.exists() else " (no such folder)"))
    check_output(path, "--resume", folder=True)
    for f in sorted(path.glob("*.json")) + sorted(path.glob("*.npz")):
        if f.name.endswith((".tmp.json", ".tmp.npz")):
            continue  # a write a kill interrupted; never read
        try:
            read_json(f, "run file") if f.suffix == ".json" else read_npz(f, "run file")
        except CodesignError as exc:
            raise CodesignError(f"--resume {path}: {exc}; delete it (and its .json/.npz partner) to redo "
                                "that phase") from None


def open_run(cfg: SearchConfig, run_dir: str | Path | None, resume: bool,
             overrides: dict | None = None) -> tuple[Run, SearchConfig]:
    """Create a run directory holding config.json, or reopen one with ``resume``."""
    if resume:
        return Run(Path(run_dir)), read_config(run_dir, overrides)
    path = Path(run_dir) if run_dir else new_run_dir(cfg)
    check_run_dir(path, resume=False)  # config.json alone (no phase done) is replaced
    path.mkdir(parents=True, exist_ok=True)
    import codesign

    Run(path).write("config.json", {"format": CONFIG_FORMAT, "format_version": CONFIG_VERSION,
                                    "codesign_version": codesign.__version__, "config": cfg.to_dict()})
    return Run(path), cfg
