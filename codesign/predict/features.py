"""Kernel features: what a cost model sees of a KernelSpec.

Every kernel becomes one fixed-length float vector (``FEATURE_NAMES``): the op family as a one-hot
(dense conv, pointwise conv, depthwise conv, grouped conv, dense layer, window pool, global pool,
batch norm, elementwise), then log-scaled work and size terms (FLOPs and bytes from
``codesign.kernelspec``, channels, resolutions, kernel size) and the fused extras (bias, residual,
activation). Latency spans five orders of magnitude across kernels, so sizes enter as logs and
models regress log latency.
"""

from __future__ import annotations

import math

import numpy as np

from ..kernelspec import KernelSpec, kernel_bytes, kernel_flops

FAMILIES = ("conv", "conv_pointwise", "conv_depthwise", "conv_grouped", "dense", "pool", "global_pool",
            "batch_norm", "elementwise")

FEATURE_NAMES = tuple(f"is_{f}" for f in FAMILIES) + (
    "log_flops", "log_bytes", "log_intensity", "log_in_channels", "log_out_channels", "log_in_hw",
    "log_out_hw", "kernel", "stride", "log_groups", "bias", "residual", "activation",
)


def family(spec: KernelSpec) -> str:
    """The op family of a kernel (one of ``FAMILIES``)."""
    op = spec.op
    if op == "conv2d":
        groups, c = spec.attr("groups"), spec.input_shape[1]
        if groups == 1:
            return "conv_pointwise" if spec.attr("kernel") == 1 else "conv"
        return "conv_depthwise" if groups == c and spec.attr("out_channels") == c else "conv_grouped"
    if op == "dense":
        return "dense"
    if op in ("avg_pool2d", "max_pool2d"):
        return "pool"
    if op == "global_avg_pool2d":
        return "global_pool"
    if op == "batch_norm":
        return "batch_norm"
    return "elementwise"


def _log(x: float) -> float:
    return math.log(max(float(x), 1.0))


def kernel_features(spec: KernelSpec) -> np.ndarray:
    """One row of ``FEATURE_NAMES`` for a kernel."""
    fam = family(spec)
    onehot = [1.0 if fam == f else 0.0 for f in FAMILIES]
    flops, nbytes = kernel_flops(spec), kernel_bytes(spec)
    ins, outs = spec.input_shape, spec.output_shape()
    in_hw = ins[2] * ins[3] if len(ins) == 4 else 1
    out_hw = outs[2] * outs[3] if len(outs) == 4 else 1
    out_c = outs[1]
    act = spec.attr("activation", "none")
    return np.array(onehot + [
        _log(flops), _log(nbytes), math.log(max(flops, 1.0) / max(nbytes, 1.0)),
        _log(ins[1]), _log(out_c), _log(in_hw), _log(out_hw),
        float(spec.attr("kernel", 1) or 1), float(spec.attr("stride", 1) or 1), _log(spec.attr("groups", 1) or 1),
        float(bool(spec.attr("bias", False))), float(bool(spec.attr("residual", False))),
        0.0 if act in (None, "none") else 1.0,
    ], dtype=np.float64)


def feature_matrix(specs: list[KernelSpec]) -> np.ndarray:
    """Features of many kernels, shape (len(specs), len(FEATURE_NAMES))."""
    if not specs:
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.stack([kernel_features(s) for s in specs])
