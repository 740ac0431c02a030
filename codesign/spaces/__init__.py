"""Search spaces as data: a registry of spaces, each listing its decisions and candidate ops, the
kernels its supernet runs (for the profiler and the cost model), building any genotype as an
nn.Module and its supernet over codesign's fused ops. The interface is ``base.SearchSpace``.

Shipped: ``darts`` (DARTS cells), ``nb201`` (NAS-Bench-201 cell), ``mobilenet`` (MobileNet/FBNet
chain, YAML-configured; ``config="fbnet"`` is FBNet's 22-layer space)."""

from __future__ import annotations

from ..registry import Registry

SPACES = Registry("search space")
register_space = SPACES.register


def list_spaces() -> list[str]:
    return SPACES.names()


def create_space(name: str, **kwargs):
    """A search space by name; unknown names are a CodesignError listing the known ones."""
    return SPACES.create(name, **kwargs)


from . import darts, mobilenet, nb201  # noqa: E402,F401  (register the shipped spaces)
