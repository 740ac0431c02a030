"""Building blocks of supernets: the mixed edge over candidate ops (codesign's fused ops)."""

from .mixed import (
    FREE_OPTION,
    MixedEdge,
    after_relu,
    channel_shuffle,
    frozen_running_stats,
    fused_path,
    sum_paths,
    supernet_input,
    supernet_options,
)

__all__ = ["FREE_OPTION", "MixedEdge", "after_relu", "channel_shuffle", "frozen_running_stats", "fused_path",
           "sum_paths", "supernet_input", "supernet_options"]
