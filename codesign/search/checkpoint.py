"""Checkpoints as npz (tensors) + JSON (everything else), never pickle.

``save(path_stem, tensors, meta)`` writes ``<stem>.npz`` and ``<stem>.json`` atomically: each file
through a temp file and a rename, and the pair through a generation token both carry. The arrays
go to ``<stem>.next.npz`` first, the JSON naming their generation is committed, then the arrays
take their place. A kill before the JSON leaves the previous pair (the stray ``.next.npz`` is
never read); a kill after it leaves ``.next.npz`` holding the JSON's generation, which ``load``
reads. A checkpoint never mixes the arrays of one save with the JSON of another. Nested state dicts (a
module's, an optimizer's) are flattened: tensors go to the npz under their path, the rest to JSON.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np
import torch

from ..errors import CodesignError
from ..files import read_json, read_npz

FORMAT = "codesign-checkpoint"
FORMAT_VERSION = 1


def flatten(obj, prefix: str, arrays: dict[str, np.ndarray]):
    """Tensors -> arrays[prefix...] and a JSON-able skeleton referring to them."""
    if isinstance(obj, torch.Tensor):
        arrays[prefix] = obj.detach().cpu().numpy()
        return {"__tensor__": prefix, "dtype": str(obj.dtype).removeprefix("torch.")}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten(k, f"{prefix}/k{i}", arrays), flatten(v, f"{prefix}/{i}", arrays)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__":
                [flatten(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def unflatten(obj, arrays):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return torch.from_numpy(np.array(arrays[obj["__tensor__"]])).to(getattr(torch, obj["dtype"]))
        if "__array__" in obj:
            return np.array(arrays[obj["__array__"]])
        if "__dict__" in obj:
            return {unflatten(k, arrays): unflatten(v, arrays) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [unflatten(v, arrays) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(unflatten(v, arrays) for v in obj["__tuple__"])
    return obj


def save(stem: str | Path, state: dict, meta: dict | None = None) -> None:
    stem = Path(stem)
    arrays: dict[str, np.ndarray] = {}
    skeleton = flatten(state, "s", arrays)
    generation = secrets.token_hex(8)
    arrays[_GENERATION] = np.array(generation)
    tmp, nxt = stem.with_name(stem.name + ".tmp.npz"), _next(stem)
    np.savez(tmp, **arrays)
    os.replace(tmp, nxt)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "generation": generation, "meta": meta or {},
           "state": skeleton}
    tmpj = stem.with_name(stem.name + ".tmp.json")
    tmpj.write_text(json.dumps(doc))
    os.replace(tmpj, stem.with_suffix(".json"))  # the commit
    os.replace(nxt, stem.with_suffix(".npz"))


_GENERATION = "__generation__"


def _next(stem: Path) -> Path:
    return stem.with_name(stem.name + ".next.npz")


def exists(stem: str | Path) -> bool:
    stem = Path(stem)
    return stem.with_suffix(".json").exists() and (stem.with_suffix(".npz").exists() or _next(stem).exists())


def load(stem: str | Path) -> tuple[dict, dict]:
    """(state, meta) of the checkpoint ``<stem>.json`` + ``<stem>.npz``.

    Raises:
        CodesignError: a missing, truncated or foreign file, another format version, a skeleton
            that refers to arrays the npz lacks.
    """
    stem = Path(stem)
    doc = read_json(stem.with_suffix(".json"), "checkpoint")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CodesignError(f"{stem}.json is not a codesign checkpoint")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CodesignError(f"{stem}.json has checkpoint format version {doc.get('format_version')}; this "
                            f"codesign reads {FORMAT_VERSION}")
    generation = doc.get("generation")
    arrays = None
    if generation is not None and _next(stem).exists():
        pending = read_npz(_next(stem), "checkpoint")
        if _generation_of(pending) == generation:  # killed after the commit, before the rename
            arrays = pending
    if arrays is None:
        arrays = read_npz(stem.with_suffix(".npz"), "checkpoint")
    if generation is not None and _generation_of(arrays) != generation:
        raise CodesignError(f"checkpoint {stem} is damaged: its .json and .npz come from different saves")
    arrays.pop(_GENERATION, None)
    try:
        return unflatten(doc["state"], arrays), doc.get("meta", {})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CodesignError(f"checkpoint {stem} is damaged ({type(exc).__name__}: {exc}); its .json and .npz "
                            "do not belong together") from None


def _generation_of(arrays: dict) -> str | None:
    value = arrays.get(_GENERATION)
    return str(value) if value is not None and value.shape == () else None


def rng_state() -> dict:
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
