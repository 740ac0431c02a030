"""Building blocks of supernets: the mixed edge over candidate ops (codesign's fused ops)."""

from .mixed import FREE_OPTION, MixedEdge

__all__ = ["FREE_OPTION", "MixedEdge"]
