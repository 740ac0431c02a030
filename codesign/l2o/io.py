"""Optimizer files: JSON (format, version, rule kind and config, training summary) beside an npz
of the rule's weights. Never pickle, so that a file outlives library versions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import CodesignError
from ..files import read_npz, read_text
from .optim import LearnedOptimizer
from .rules import UpdateRule, create_rule

FORMAT = "codesign-l2o-optimizer"
FORMAT_VERSION = 1


def weights_path(path: str | os.PathLike) -> Path:
    """The npz that goes with optimizer file ``path`` (``opt.json`` -> ``opt.npz``)."""
    return Path(path).with_suffix(".npz")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a kill mid-write leaves the previous file intact


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an npz atomically."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def save_json(path: Path, obj: dict) -> None:
    """Write JSON atomically."""
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_rule(rule: UpdateRule, path: str | os.PathLike, training: dict | None = None) -> Path:
    """Save a rule as ``path`` (JSON) and its weights as the npz beside it.

    Returns:
        The JSON path.
    """
    path = Path(path)
    if path.suffix != ".json":
        raise CodesignError(f"optimizer file must end in .json (weights go beside it as .npz), got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    wpath = weights_path(path)
    save_arrays(wpath, {k: v.detach().cpu().numpy() for k, v in rule.state_dict().items()})
    save_json(path, {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": rule.kind,
        "config": rule.config(),
        "weights": wpath.name,
        "training": training or {},
    })
    return path


def read_meta(path: str | os.PathLike) -> dict:
    """Read and validate an optimizer file's JSON.

    Raises:
        CodesignError: missing file, not JSON, another format, or another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CodesignError(f"optimizer file {path} does not exist; create one with `codesign l2o train`")
    try:
        meta = json.loads(read_text(path, "optimizer file"))
    except json.JSONDecodeError as exc:
        raise CodesignError(f"{path} is not a codesign optimizer file (not JSON: {exc.__class__.__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CodesignError(f"{path} is not a codesign optimizer file (format {got!r}, expected {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CodesignError(
            f"{path} has optimizer format version {meta.get('format_version')!r}; this codesign reads "
            f"version {FORMAT_VERSION}: retrain it with `codesign l2o train`"
        )
    return meta


def load_rule(path: str | os.PathLike) -> UpdateRule:
    """Load a trained rule from an optimizer file (JSON + npz) or a shipped name.

    Raises:
        CodesignError: see :func:`read_meta`; missing or mismatched weights.
    """
    path = resolve_optimizer_path(path)
    meta = read_meta(path)
    config = meta.get("config", {})
    if not isinstance(config, dict):
        raise CodesignError(f"{path}: config must be a mapping of the rule's settings, got {config!r}")
    rule = create_rule(meta.get("kind", "?"), **config)
    name = meta.get("weights", weights_path(path).name)
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise CodesignError(f"{path}: weights must name a file beside it (no folders), got {name!r}")
    wpath = path.with_name(name)
    if not wpath.is_file():
        raise CodesignError(f"weights file {wpath} of optimizer {path} is missing")
    arrays = read_npz(wpath, "optimizer weights")
    expected = rule.state_dict()
    if set(arrays) != set(expected):
        raise CodesignError(
            f"{wpath} does not match a {rule.kind} optimizer: missing {sorted(set(expected) - set(arrays))}, "
            f"unexpected {sorted(set(arrays) - set(expected))}"
        )
    for k, v in expected.items():
        if tuple(arrays[k].shape) != tuple(v.shape):
            raise CodesignError(f"{wpath}: {k} has shape {arrays[k].shape}, expected {tuple(v.shape)}")
        if arrays[k].dtype.kind not in "fiu" or not np.isfinite(arrays[k]).all():
            raise CodesignError(f"{wpath}: {k} holds NaN, infinite or non-numeric weights")
    rule.load_state_dict({k: torch.from_numpy(np.asarray(a, dtype=np.float32)) for k, a in arrays.items()})
    return rule.eval()


PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
PREFIX = "l2o:"


def list_pretrained() -> list[str]:
    """Names of the optimizers shipped with codesign (``codesign l2o list`` describes them)."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.json"))


def resolve_optimizer_path(name_or_path: str | os.PathLike) -> Path:
    """The optimizer file meant by a name or a path.

    Accepts ``l2o:NAME`` or ``NAME`` for a shipped optimizer (``list_pretrained()``), and
    ``l2o:FILE`` or ``FILE`` for a file written by ``codesign l2o train`` (with or without its
    ``.json`` suffix). An existing file wins over a shipped name.

    Raises:
        CodesignError: neither an existing optimizer file nor a shipped name.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise CodesignError(f"optimizer must be a name or a path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if text.startswith(PREFIX):
        text = text[len(PREFIX):]
    if not text:
        raise CodesignError(f"empty optimizer name; use l2o:NAME ({', '.join(list_pretrained())}) or l2o:FILE.json")
    path = Path(text).expanduser()
    for candidate in (path, path.with_name(path.name + ".json")):
        if candidate.is_file():
            return candidate
    if text in list_pretrained():
        return PRETRAINED_DIR / f"{text}.json"
    raise CodesignError(
        f"no optimizer file {text!r} and no shipped optimizer of that name; shipped: "
        f"{', '.join(list_pretrained()) or 'none'}; train one with `codesign l2o train --out FILE.json`"
    )


def load_optimizer(path: str | os.PathLike, params, step_scale: float = 1.0) -> LearnedOptimizer:
    """Load a trained optimizer file and bind it to ``params``.

    Args:
        path: the ``.json`` written by ``codesign l2o train`` (its ``.npz`` beside it), or a name
            that :func:`resolve_optimizer_path` accepts (``l2o:supernet``, ``general``).
        params: parameters or parameter groups, as for any ``torch.optim.Optimizer``.
        step_scale: multiplies every update (1.0 = as meta-trained).

    Returns:
        A :class:`LearnedOptimizer` (a ``torch.optim.Optimizer``).

    Raises:
        CodesignError: bad file (format, version, weights) or bad parameters.
    """
    return LearnedOptimizer(params, load_rule(path), step_scale=step_scale)
