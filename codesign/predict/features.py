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
    if op in ("conv2d", "conv2d_transpose"):
        groups, c = spec.attr("groups"), spec.input_shape[1]
        if groups == 1:
            return "conv_pointwise" if spec.kernel_hw() == (1, 1) else "conv"
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
        _kernel_size(spec), float(spec.attr("stride", 1) or 1), _log(spec.attr("groups", 1) or 1),
        float(bool(spec.attr("bias", False))), float(bool(spec.attr("residual", False))),
        0.0 if act in (None, "none") else 1.0,
    ], dtype=np.float64)


def feature_matrix(specs: list[KernelSpec]) -> np.ndarray:
    """Features of many kernels, shape (len(specs), len(FEATURE_NAMES))."""
    if not specs:
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.stack([kernel_features(s) for s in specs])


# --- kernel types: the finer split of the per-type predictors (``kernel-type`` cost model) ---------
KERNEL_TYPES = ("conv", "conv_pointwise", "conv_depthwise", "conv_grouped", "dense", "max_pool", "avg_pool",
                "global_pool", "batch_norm", "add", "mul", "activation", "softmax", "layer_norm", "lrn",
                "matmul")

# Activations by the kind of arithmetic they cost (0: none, 1: compare/clip, 2: piecewise linear
# with a multiply, 3: an exponential, 4: an error function).
_ACT_CODE = {"none": 0, "relu": 1, "relu6": 1, "hardswish": 2, "hardsigmoid": 2, "sigmoid": 3, "silu": 3,
             "gelu": 4, "tanh": 3, "leaky_relu": 2}

TYPE_FEATURE_NAMES = (
    "log_flops", "log_bytes", "log_intensity", "log_in_channels", "log_out_channels", "log_in_h", "log_in_w",
    "log_out_h", "log_out_w", "log_out_elements", "log_reduction", "log_weight_elements", "kernel", "stride",
    "dilation", "padding", "log_groups", "bias", "residual", "activation_code", "op_code", "in_w_mod_8",
    "out_w_mod_8", "in_channels_mod_8", "out_channels_mod_8",
    # Appended later (a model records how many of these it was fitted on; see models.KernelTypeModel):
    "reduction_stride_pow2", "out_channels_pow2",
)
# Models fitted before the power-of-two features know this many.
LEGACY_TYPE_FEATURES = 25

# The configuration of a kernel as a user reads it: what "outside the sampled range" is checked on.
RANGE_DIMS = ("in_channels", "out_channels", "in_hw", "kernel", "stride", "flops")


def kernel_type(spec: KernelSpec) -> str:
    """The kernel type of a kernel (one of ``KERNEL_TYPES``): one predictor is fitted per type."""
    op = spec.op
    fam = family(spec)
    if fam.startswith("conv"):
        return fam
    if op in ("max_pool2d", "avg_pool2d"):
        return "max_pool" if op == "max_pool2d" else "avg_pool"
    if op in ("add", "mul", "batch_norm", "softmax", "layer_norm", "lrn", "dense"):
        return op
    if op in ("l2_normalize", "instance_norm"):  # normalisations over the last axis, as layer_norm
        return "layer_norm"
    if op == "global_avg_pool2d":
        return "global_pool"
    if op == "batch_matmul":
        return "matmul"
    return "activation"


def _reduction(spec: KernelSpec) -> float:
    """Length of the reduction behind each output element."""
    if spec.op == "conv2d":
        return spec.input_shape[1] // spec.attr("groups") * _window(spec)
    if spec.op == "conv2d_transpose":  # the taps that land on each output: the window over the stride squared
        return max(1.0, spec.input_shape[1] // spec.attr("groups") * _window(spec) / spec.attr("stride") ** 2)
    if spec.op == "dense":
        return spec.input_shape[-1]
    if spec.op == "batch_matmul":
        return spec.input_shape[-1]
    if spec.op in ("avg_pool2d", "max_pool2d"):
        return spec.attr("kernel") ** 2
    if spec.op == "global_avg_pool2d":
        return spec.input_shape[2] * spec.input_shape[3]
    if spec.op in ("softmax", "layer_norm", "l2_normalize", "instance_norm"):
        return spec.input_shape[-1]
    if spec.op == "lrn":
        return spec.attr("size")
    return 1.0


def _window(spec: KernelSpec) -> int:
    kh, kw = spec.kernel_hw()
    return kh * kw


def _kernel_size(spec: KernelSpec) -> float:
    """The side of a square window of the same area (a 1x7 window reads as 2.65)."""
    return math.sqrt(_window(spec))


def _weights(spec: KernelSpec) -> float:
    if spec.op in ("conv2d", "conv2d_transpose"):
        return spec.attr("out_channels") * spec.input_shape[1] // spec.attr("groups") * _window(spec)
    if spec.op == "dense":
        return spec.input_shape[-1] * spec.attr("out_features")
    return 0.0


def _hw(shape) -> tuple[int, int]:
    if len(shape) == 4:
        return shape[2], shape[3]
    if len(shape) == 3:
        return shape[1], 1
    return shape[0], 1


def kernel_dims(spec: KernelSpec) -> dict[str, float]:
    """The ``RANGE_DIMS`` of a kernel: channels in and out, input resolution (H*W), kernel, stride, FLOPs."""
    ins, outs = spec.input_shape, spec.output_shape()
    h, w = _hw(ins)
    return {
        "in_channels": float(ins[1] if len(ins) >= 2 else ins[0]),
        "out_channels": float(outs[1] if len(outs) >= 2 else outs[0]),
        "in_hw": float(h * w),
        "kernel": _kernel_size(spec),
        "stride": float(spec.attr("stride", 1) or 1),
        "flops": float(kernel_flops(spec)),
    }


def type_features(spec: KernelSpec) -> np.ndarray:
    """One row of ``TYPE_FEATURE_NAMES``: shapes, work, bytes, intensity and loop-shape details.

    The residues modulo 8 are there because untuned TVM code vectorises the innermost loop: a
    width or channel count that is not a multiple of the vector length leaves a scalar tail. The
    powers of two (log2 of the largest one dividing a count, at most 12) are there because a loop
    striding over 2^k floats maps every access to a few cache sets: an imported Linear layer's
    (K, N) weight, read along its reduction with a stride of N, runs 6x slower at N = 1024 than at
    N = 1000. ``reduction_stride_pow2`` is that of the stride the reduction reads its operand with
    (``_reduction_stride``).
    """
    flops, nbytes = kernel_flops(spec), kernel_bytes(spec)
    ins, outs = spec.input_shape, spec.output_shape()
    in_h, in_w = _hw(ins)
    out_h, out_w = _hw(outs)
    in_c = ins[1] if len(ins) >= 2 else ins[0]
    out_c = outs[1] if len(outs) >= 2 else outs[0]
    act = spec.attr("activation", "none") if spec.op not in _ACT_CODE else spec.op
    op_code = float(_OP_CODES.index(spec.op)) if spec.op in _OP_CODES else -1.0
    return np.array([
        _log(flops), _log(nbytes), math.log(max(flops, 1.0) / max(nbytes, 1.0)), _log(in_c), _log(out_c),
        _log(in_h), _log(in_w), _log(out_h), _log(out_w), _log(_prod(outs)), _log(_reduction(spec)),
        _log(_weights(spec)), _kernel_size(spec), float(spec.attr("stride", 1) or 1),
        float(spec.attr("dilation", 1) or 1), float(max(sum(spec.padding_hw()) / 2, 0)) if spec.op in _WINDOWED else 0.0,
        _log(spec.attr("groups", 1) or 1), float(bool(spec.attr("bias", False))),
        float(bool(spec.attr("residual", False))), float(_ACT_CODE.get(act, 0)), op_code,
        float(in_w % 8), float(out_w % 8), float(in_c % 8), float(out_c % 8), _pow2(_reduction_stride(spec)),
        _pow2(out_c),
    ], dtype=np.float64)


def _reduction_stride(spec: KernelSpec) -> int:
    """Floats between consecutive elements of the operand a kernel's reduction strides over: a
    (K, N) dense weight's N, a batched matmul's n, an NCHW input's H*W across channels (convs,
    pools); 0 where the reduction reads contiguously or there is none."""
    if spec.op == "dense":
        return spec.attr("out_features") if spec.attr("weight_kn") else 0
    if spec.op == "batch_matmul":
        return spec.attr("n")
    if spec.op in _WINDOWED or spec.op == "global_avg_pool2d":
        return spec.input_shape[2] * spec.input_shape[3]
    return 0


def _pow2(n: int) -> float:
    n = int(n)
    return float(min(12, (n & -n).bit_length() - 1)) if n > 0 else 0.0


_WINDOWED = ("conv2d", "avg_pool2d", "max_pool2d", "conv2d_transpose")
# The op_code feature: fitted models store codes, so an op added later is appended, never sorted in.
_OP_CODES = ("add", "avg_pool2d", "batch_matmul", "batch_norm", "conv2d", "dense", "gelu", "global_avg_pool2d",
             "hardsigmoid", "hardswish", "layer_norm", "lrn", "max_pool2d", "mul", "relu", "relu6", "sigmoid",
             "silu", "softmax", "tanh", "l2_normalize", "resize2d", "leaky_relu", "conv2d_transpose", "instance_norm")


def type_feature_matrix(specs: list[KernelSpec]) -> np.ndarray:
    """Type features of many kernels, shape (len(specs), len(TYPE_FEATURE_NAMES))."""
    if not specs:
        return np.zeros((0, len(TYPE_FEATURE_NAMES)))
    return np.stack([type_features(s) for s in specs])


def _prod(shape) -> int:
    p = 1
    for s in shape:
        p *= int(s)
    return p
