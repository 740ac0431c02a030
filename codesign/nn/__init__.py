"""Building blocks of supernets: the mixed edge over candidate ops (codesign's fused ops)."""

from .mixed import (
    FEATURES,
    FREE_OPTION,
    MixedEdge,
    after_relu,
    channel_shuffle,
    edge_checkpoint,
    frozen_running_stats,
    fused_features,
    fused_path,
    run_chain,
    run_fused,
    sum_paths,
    supernet_input,
    supernet_options,
    weights_frozen,
)

__all__ = ["FEATURES", "FREE_OPTION", "fused_features", "MixedEdge", "after_relu", "channel_shuffle", "edge_checkpoint", "frozen_running_stats", "fused_path", "run_chain", "run_fused",
           "sum_paths", "supernet_input", "supernet_options", "weights_frozen"]
