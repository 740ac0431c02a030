"""Search spaces as data: a registry of spaces, each listing its decisions and candidate ops, the
kernels its supernet runs (for the profiler and the cost model), building any genotype as an
nn.Module and its supernet over codesign's fused ops. The interface is ``base.SearchSpace``.

Shipped: ``darts`` (DARTS cells), ``nb201`` (NAS-Bench-201 cell), ``mobilenet`` (MobileNet/FBNet
chain, YAML-configured; ``config="fbnet"`` is FBNet's 22-layer space)."""

from __future__ import annotations

import inspect
import os

from ..errors import CodesignError
from ..registry import Registry

SPACES = Registry("search space")
register_space = SPACES.register


def list_spaces() -> list[str]:
    return SPACES.names()


def create_space(name: str, **kwargs):
    """A search space by name; an unknown name or constructor argument is a CodesignError listing
    the known ones (users pass them as ``--space-arg KEY=VALUE``)."""
    cls = SPACES.get(name)
    params = inspect.signature(cls).parameters
    known = [p for p in params if p not in ("input_shape", "num_classes")]
    for key, value in kwargs.items():
        if key not in params:
            raise CodesignError(f"search space {name!r} has no argument {key!r} (--space-arg); "
                                f"its arguments: {', '.join(known) or 'none'}")
        default = params[key].default
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, (str, os.PathLike, dict)), "a name or a path"
        else:
            ok, kind = True, ""
        if not ok:
            raise CodesignError(f"search space {name!r}: {key} must be {kind}, got {value!r} (--space-arg)")
    return cls(**kwargs)


from . import darts, mobilenet, nb201  # noqa: E402,F401  (register the shipped spaces)
