"""Search spaces as data: a registry of spaces, each listing its decisions and candidate ops, the
kernels its supernet runs (for the profiler and the cost model), building any genotype as an
nn.Module and its supernet over codesign's fused ops. The interface is ``base.SearchSpace``.

Shipped: ``darts`` (DARTS cells), ``nb201`` (NAS-Bench-201 cell), ``mobilenet`` (MobileNet/FBNet
chain, YAML-configured; ``config="fbnet"`` is FBNet's 22-layer space)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from ..errors import CodesignError

_SPACES: dict[str, Callable] = {}


def register_space(name: str):
    """Class decorator adding a space to the registry under ``name``."""

    def deco(cls):
        if name in _SPACES:
            warnings.warn(f"search space {name!r} registered twice; the later one wins", stacklevel=2)
        _SPACES[name] = cls
        cls.name = name
        return cls

    return deco


def list_spaces() -> list[str]:
    return sorted(_SPACES)


def create_space(name: str, **kwargs):
    """A search space by name; unknown names are a CodesignError listing the known ones."""
    if name not in _SPACES:
        raise CodesignError(f"unknown search space {name!r}; known: {', '.join(list_spaces())}")
    return _SPACES[name](**kwargs)


from . import darts, mobilenet, nb201  # noqa: E402,F401  (register the shipped spaces)
