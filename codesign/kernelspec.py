"""KernelSpec: one kernel as a device runs it, the unit of profiling and prediction.

A search space lists the kernels its supernet runs, an ONNX graph is split into kernels, the
profiler times kernels and the predictor predicts them; all of them speak KernelSpec. The string
``key()`` is stable across versions (it is the primary key of profile databases): never change
the format of an existing op, only add ops or attributes with defaults (defaults are left out
of the key, so adding one keeps old keys valid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import CodesignError

ACTIVATIONS = ("none", "relu", "relu6", "hardswish", "sigmoid", "hardsigmoid", "silu", "gelu", "tanh", "leaky_relu")
# Elementwise ops that are also activations; alone they run on tensors of rank 2 to 4.
# leaky_relu: max(x, a * x) for any slope a (ONNX LeakyRelu, and PRelu's per-channel slopes).
ELEMENTWISE = ("relu", "relu6", "hardswish", "sigmoid", "hardsigmoid", "silu", "gelu", "tanh", "leaky_relu")

# op -> (rank of input_shape, or the ranks allowed; attribute defaults). Attributes without a
# default are required.
_REQUIRED = object()
OPS: dict[str, tuple[int | tuple[int, ...], dict[str, Any]]] = {
    # conv2d covers dense, depthwise (groups == in channels), grouped and pointwise convs, and the
    # patterns TVM fuses into one kernel: + bias, + activation, + residual add.
    "conv2d": (
        4,
        {
            "out_channels": _REQUIRED,
            "kernel": _REQUIRED,
            "stride": 1,
            "padding": -1,  # -1: "same"-style kernel//2 * dilation
            "dilation": 1,
            "groups": 1,
            "bias": False,
            "activation": "none",
            "residual": False,
            # Rectangular windows (Inception-v3's 1x7 and 7x1): ``kernel`` and ``padding`` are
            # then the height's, these the width's. 0: as ``kernel``; -1: "same"-style kernel_w//2 *
            # dilation when ``padding`` is "same", else ``padding``.
            "kernel_w": 0,
            "padding_w": -1,
        },
    ),
    # ceil_mode: the last window may hang over the padded edge (ONNX/PyTorch ceil_mode=1).
    "avg_pool2d": (4, {"kernel": _REQUIRED, "stride": 1, "padding": 0, "count_include_pad": False,
                       "ceil_mode": False}),
    "max_pool2d": (4, {"kernel": _REQUIRED, "stride": 1, "padding": 0, "ceil_mode": False}),
    "global_avg_pool2d": (4, {}),
    "batch_norm": (4, {"activation": "none"}),
    **{op: ((2, 3, 4), {}) for op in ELEMENTWISE},
    "add": (4, {"activation": "none"}),
    # broadcast: the second operand is (N, C, 1, 1), a per-channel scale (squeeze-and-excitation).
    "mul": (4, {"broadcast": False}),
    # dense: (rows, features) @ (features, out_features); rows > 1 for token-wise layers.
    # weight_kn: the weight is stored (features, out_features) and read along a stride of
    # out_features, as TVM runs a Linear layer imported from ONNX (the importer folds Gemm's
    # transposed weight into a constant). False: stored (out_features, features), contiguous along
    # the reduction, as ``topi.nn.dense`` reads it. Untuned, the two differ by up to 6x (a
    # 576 -> 1024 layer: 1.6 against 0.26 ms): ONNX networks' layers are weight_kn.
    "dense": (2, {"out_features": _REQUIRED, "bias": True, "activation": "none", "residual": False,
                  "weight_kn": False}),
    # Local response normalisation across ``size`` neighbouring channels (AlexNet/GoogLeNet style).
    "lrn": (4, {"size": _REQUIRED}),
    # Normalisations over the last axis of a (rows, columns) view of the tensor.
    "softmax": (2, {}),
    "layer_norm": (2, {"activation": "none"}),
    # x / max(||x||_2, eps) over the last axis (torch's F.normalize; Swin-v2's cosine attention).
    "l2_normalize": (2, {}),
    # Instance (and group) normalisation of each row of (rows, columns), with a scale and shift per
    # row, as TVM's ONNX importer writes it: a mean, a variance, then the normalisation.
    "instance_norm": (2, {}),
    # (batch, M, K) @ (batch, K, n): both operands computed at run time (attention).
    "batch_matmul": (3, {"n": _REQUIRED}),
    # Resampling of an (N, C, H, W) map to (N, C, out_h, out_w) (ONNX Resize / Upsample; HRNet's
    # fusion layers, feature pyramids): "nearest", "linear" (bilinear) or "cubic" (bicubic).
    "resize2d": (4, {"out_h": _REQUIRED, "out_w": _REQUIRED, "method": "nearest"}),
    # A transposed (fractionally strided) convolution, as decoders and learned upsamplings run it:
    # output (H - 1) * stride - 2 * padding + kernel + output_padding; square windows.
    "conv2d_transpose": (4, {"out_channels": _REQUIRED, "kernel": _REQUIRED, "stride": 1, "padding": 0,
                             "output_padding": 0, "groups": 1, "bias": False, "activation": "none"}),
}
RESIZE_METHODS = ("nearest", "linear", "cubic")


def _conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _pool_out_ceil(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output size of a pool with ceil_mode (ONNX and PyTorch): the last window must start
    inside the input or its left padding."""
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _canonical_conv_window(attrs: dict) -> dict:
    """One key per conv window: an explicit padding equal to the "same" padding, a width equal to
    the height, a width padding equal to what it defaults to, are left to their defaults."""
    attrs = dict(attrs)
    dil = int(attrs.get("dilation", 1))
    kh = int(attrs["kernel"])
    kw = int(attrs.get("kernel_w", 0)) or kh
    if "padding" in attrs and int(attrs["padding"]) == (kh // 2) * dil:
        del attrs["padding"]
    if "kernel_w" in attrs and kw == kh:
        del attrs["kernel_w"]
    if "padding_w" in attrs:
        ph = int(attrs.get("padding", -1))
        default_pw = (kw // 2) * dil if ph == -1 else ph
        if int(attrs["padding_w"]) == default_pw:
            del attrs["padding_w"]
    return attrs


@dataclass(frozen=True)
class KernelSpec:
    """An op kind, its input shape and its attributes (hashable; build with ``make``)."""

    op: str
    input_shape: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, op: str, input_shape, **attrs) -> KernelSpec:
        """Validated constructor; attributes equal to their default are dropped."""
        if op not in OPS:
            raise CodesignError(f"unknown kernel op {op!r}; supported: {', '.join(sorted(OPS))}")
        rank, defaults = OPS[op]
        ranks = rank if isinstance(rank, tuple) else (rank,)
        shape = tuple(int(s) for s in input_shape)
        if len(shape) not in ranks or any(s <= 0 for s in shape):
            raise CodesignError(
                f"{op}: input_shape must be {' or '.join(map(str, ranks))} positive ints, got {tuple(input_shape)}"
            )
        if op == "conv2d" and "kernel" in attrs:
            attrs = _canonical_conv_window(attrs)
        unknown = set(attrs) - set(defaults)
        if unknown:
            raise CodesignError(
                f"{op}: unknown attribute(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(defaults)) or 'none'}"
            )
        kept = {}
        for name, default in defaults.items():
            if name not in attrs:
                if default is _REQUIRED:
                    raise CodesignError(f"{op}: attribute {name!r} is required")
                continue
            value = attrs[name]
            if isinstance(default, bool):
                value = bool(value)
            elif isinstance(default, int) or default is _REQUIRED:
                value = int(value)
            if name == "activation" and value not in ACTIVATIONS:
                raise CodesignError(f"{op}: activation {value!r} not in {', '.join(ACTIVATIONS)}")
            if value != default:
                kept[name] = value
        spec = cls(op, shape, tuple(sorted(kept.items())))
        spec.output_shape()  # validates geometry
        return spec

    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute's value, falling back to the op's default."""
        for k, v in self.attrs:
            if k == name:
                return v
        d = OPS[self.op][1].get(name, default)
        return default if d is _REQUIRED else d

    def key(self) -> str:
        """Stable string form, e.g. ``conv2d|1x16x32x32|kernel=3,out_channels=16``."""
        shape = "x".join(str(s) for s in self.input_shape)
        attrs = ",".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in self.attrs)
        return f"{self.op}|{shape}|{attrs}"

    @classmethod
    def from_key(cls, key: str) -> KernelSpec:
        """Inverse of key()."""
        try:
            op, shape, attrs = key.split("|")
            dims = [int(s) for s in shape.split("x")]
            kw: dict[str, Any] = {}
            for item in filter(None, attrs.split(",")):
                k, v = item.split("=", 1)
                kw[k] = json.loads(v.replace("True", "true").replace("False", "false"))
        except ValueError as exc:
            raise CodesignError(f"not a kernel key: {key!r}") from exc
        return cls.make(op, dims, **kw)

    def to_dict(self) -> dict:
        return {"op": self.op, "input_shape": list(self.input_shape), "attrs": dict(self.attrs)}

    @classmethod
    def from_dict(cls, d: dict) -> KernelSpec:
        return cls.make(d["op"], d["input_shape"], **d.get("attrs", {}))

    def padding(self) -> int:
        """Effective padding of conv/pool ops over the height (conv2d's -1 resolves to
        kernel//2 * dilation); see ``padding_hw`` for the width's."""
        pad = self.attr("padding", 0)
        if self.op == "conv2d" and pad == -1:
            pad = (self.attr("kernel") // 2) * self.attr("dilation")
        return pad

    def kernel_hw(self) -> tuple[int, int]:
        """The window (height, width) of a conv or window pool; (1, 1) for other ops."""
        if self.op not in ("conv2d", "avg_pool2d", "max_pool2d", "conv2d_transpose"):
            return 1, 1
        k = self.attr("kernel")
        return (k, self.attr("kernel_w", 0) or k) if self.op == "conv2d" else (k, k)

    def padding_hw(self) -> tuple[int, int]:
        """Effective padding (height, width) of a conv or window pool."""
        ph = self.padding()
        if self.op != "conv2d":
            return ph, ph
        pw = self.attr("padding_w")
        if pw == -1:
            pw = (self.kernel_hw()[1] // 2) * self.attr("dilation") if self.attr("padding") == -1 else ph
        return ph, pw

    def output_shape(self) -> tuple[int, ...]:
        """Shape of the kernel's output; raises CodesignError on impossible geometry."""
        s = self.input_shape
        if self.op == "dense":
            return (s[0], self.attr("out_features"))
        if self.op == "global_avg_pool2d":
            return (s[0], s[1], 1, 1)
        if self.op == "batch_matmul":
            if self.attr("n") <= 0:
                raise CodesignError(f"{self.key()}: n must be > 0")
            return (s[0], s[1], self.attr("n"))
        if self.op == "conv2d_transpose":
            k, st, pad, opad = (self.attr(a) for a in ("kernel", "stride", "padding", "output_padding"))
            g, c, co = self.attr("groups"), s[1], self.attr("out_channels")
            if min(k, st, g) <= 0 or min(pad, opad) < 0 or opad >= st:
                raise CodesignError(f"{self.key()}: kernel, stride, groups must be > 0, padding >= 0 and "
                                    "0 <= output_padding < stride")
            if c % g or co % g:
                raise CodesignError(f"{self.key()}: groups {g} must divide in channels {c} and out channels {co}")
            h, w = ((n - 1) * st - 2 * pad + k + opad for n in s[2:])
            if h <= 0 or w <= 0:
                raise CodesignError(f"{self.key()}: padding larger than the output")
            return (s[0], co, h, w)
        if self.op == "resize2d":
            if self.attr("out_h") <= 0 or self.attr("out_w") <= 0:
                raise CodesignError(f"{self.key()}: out_h and out_w must be > 0")
            if self.attr("method") not in RESIZE_METHODS:
                raise CodesignError(f"{self.key()}: method must be one of {', '.join(RESIZE_METHODS)}")
            return (s[0], s[1], self.attr("out_h"), self.attr("out_w"))
        if self.op == "lrn" and self.attr("size") <= 0:
            raise CodesignError(f"{self.key()}: size must be > 0")
        if self.op in ("conv2d", "avg_pool2d", "max_pool2d"):
            (kh, kw), st = self.kernel_hw(), self.attr("stride")
            dil = self.attr("dilation", 1) if self.op == "conv2d" else 1
            ph, pw = self.padding_hw()
            if min(kh, kw, st, dil) <= 0 or min(ph, pw) < 0:
                raise CodesignError(f"{self.key()}: kernel, stride, dilation must be > 0, padding >= 0")
            if self.attr("ceil_mode", False):
                h, w = _pool_out_ceil(s[2], kh, st, ph), _pool_out_ceil(s[3], kw, st, pw)
            else:
                h, w = _conv_out(s[2], kh, st, ph, dil), _conv_out(s[3], kw, st, pw, dil)
            if h <= 0 or w <= 0:
                raise CodesignError(f"{self.key()}: kernel larger than the padded input")
            c = s[1]
            if self.op == "conv2d":
                g, co = self.attr("groups"), self.attr("out_channels")
                if g <= 0 or c % g or co % g:
                    raise CodesignError(
                        f"{self.key()}: groups {g} must divide in channels {c} and out channels {co}"
                    )
                c = co
            return (s[0], c, h, w)
        return s


def kernel_flops(spec: KernelSpec) -> float:
    """Floating-point operations of one kernel (a multiply-add counts 2)."""
    out = spec.output_shape()
    out_elems = float(_prod(out))
    if spec.op == "conv2d":
        (kh, kw), c, g = spec.kernel_hw(), spec.input_shape[1], spec.attr("groups")
        flops = 2.0 * out_elems * (c // g) * kh * kw
        flops += out_elems * (int(spec.attr("bias")) + int(spec.attr("residual")))
        return flops + out_elems * (spec.attr("activation") != "none")
    if spec.op == "conv2d_transpose":
        # Each input element scatters into out_channels / groups x kernel^2 outputs.
        flops = 2.0 * _prod(spec.input_shape) * spec.attr("out_channels") // spec.attr("groups") * spec.attr("kernel") ** 2
        return flops + out_elems * (int(spec.attr("bias")) + (spec.attr("activation") != "none"))
    if spec.op == "dense":
        flops = 2.0 * out_elems * spec.input_shape[1] + out_elems * (int(spec.attr("bias")) + int(spec.attr("residual")))
        return flops + _ACT_FLOPS.get(spec.attr("activation"), 1) * out_elems * (spec.attr("activation") != "none")
    if spec.op == "batch_matmul":
        return 2.0 * out_elems * spec.input_shape[2]
    if spec.op in ("avg_pool2d", "max_pool2d"):
        return out_elems * spec.attr("kernel") ** 2
    if spec.op == "global_avg_pool2d":
        return float(_prod(spec.input_shape))
    if spec.op == "batch_norm":
        return 2.0 * out_elems
    if spec.op == "lrn":
        return out_elems * (spec.attr("size") + 4)
    if spec.op in ("softmax", "layer_norm"):
        return 5.0 * out_elems
    if spec.op == "l2_normalize":
        return 3.0 * out_elems
    if spec.op == "instance_norm":
        return 7.0 * out_elems
    if spec.op == "resize2d":  # taps per output: 1 (nearest), 2x2 (bilinear), 4x4 (bicubic), a multiply-add each
        return out_elems * {"nearest": 1.0, "linear": 8.0, "cubic": 32.0}[spec.attr("method")]
    if spec.op in _ACT_FLOPS:
        return _ACT_FLOPS[spec.op] * out_elems
    return out_elems


# FLOPs per element of an activation (an exponential or erf counted as 4).
_ACT_FLOPS = {"relu": 1, "relu6": 2, "hardswish": 4, "hardsigmoid": 3, "sigmoid": 4, "silu": 5, "gelu": 8, "tanh": 4,
              "leaky_relu": 2}


def kernel_bytes(spec: KernelSpec, dtype_bytes: int = 4) -> float:
    """Bytes a kernel must move at least once: inputs, weights and output."""
    inp = _prod(spec.input_shape)
    out = _prod(spec.output_shape())
    weights = 0
    if spec.op == "conv2d":
        (kh, kw), c, g, co = spec.kernel_hw(), spec.input_shape[1], spec.attr("groups"), spec.attr("out_channels")
        weights = co * (c // g) * kh * kw + co * int(spec.attr("bias")) + out * int(spec.attr("residual"))
    elif spec.op == "conv2d_transpose":
        c, g, co, k = spec.input_shape[1], spec.attr("groups"), spec.attr("out_channels"), spec.attr("kernel")
        weights = c * (co // g) * k * k + co * int(spec.attr("bias"))
    elif spec.op == "dense":
        weights = (spec.input_shape[1] * spec.attr("out_features") + spec.attr("out_features") * int(spec.attr("bias"))
                   + out * int(spec.attr("residual")))
    elif spec.op in ("batch_norm", "layer_norm"):
        weights = 2 * spec.input_shape[1]
    elif spec.op == "instance_norm":
        weights = 2 * spec.input_shape[0]
    elif spec.op == "add" or (spec.op == "mul" and not spec.attr("broadcast")):
        weights = inp
    elif spec.op == "mul":
        weights = spec.input_shape[0] * spec.input_shape[1]
    elif spec.op == "batch_matmul":
        weights = spec.input_shape[0] * spec.input_shape[2] * spec.attr("n")
    return float(dtype_bytes * (inp + out + weights))


def _prod(shape) -> int:
    p = 1
    for s in shape:
        p *= int(s)
    return p
