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

ACTIVATIONS = ("none", "relu", "relu6", "hardswish", "sigmoid")

# op -> (rank of input_shape, attribute defaults). Attributes without a default are required.
_REQUIRED = object()
OPS: dict[str, tuple[int, dict[str, Any]]] = {
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
        },
    ),
    "avg_pool2d": (4, {"kernel": _REQUIRED, "stride": 1, "padding": 0, "count_include_pad": False}),
    "max_pool2d": (4, {"kernel": _REQUIRED, "stride": 1, "padding": 0}),
    "global_avg_pool2d": (4, {}),
    "batch_norm": (4, {"activation": "none"}),
    "relu": (4, {}),
    "relu6": (4, {}),
    "hardswish": (4, {}),
    "sigmoid": (4, {}),
    "add": (4, {"activation": "none"}),
    "mul": (4, {}),
    "dense": (2, {"out_features": _REQUIRED, "bias": True, "activation": "none"}),
}


def _conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


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
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != rank or any(s <= 0 for s in shape):
            raise CodesignError(
                f"{op}: input_shape must be {rank} positive ints, got {tuple(input_shape)}"
            )
        if op == "conv2d" and "padding" in attrs and "kernel" in attrs:
            # An explicit padding equal to the "same" padding is the default: one key per kernel.
            if int(attrs["padding"]) == (int(attrs["kernel"]) // 2) * int(attrs.get("dilation", 1)):
                attrs = {k: v for k, v in attrs.items() if k != "padding"}
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
        """Effective padding of conv/pool ops (conv2d's -1 resolves to kernel//2 * dilation)."""
        pad = self.attr("padding", 0)
        if self.op == "conv2d" and pad == -1:
            pad = (self.attr("kernel") // 2) * self.attr("dilation")
        return pad

    def output_shape(self) -> tuple[int, ...]:
        """Shape of the kernel's output; raises CodesignError on impossible geometry."""
        s = self.input_shape
        if self.op == "dense":
            return (s[0], self.attr("out_features"))
        if self.op == "global_avg_pool2d":
            return (s[0], s[1], 1, 1)
        if self.op in ("conv2d", "avg_pool2d", "max_pool2d"):
            k, st = self.attr("kernel"), self.attr("stride")
            dil = self.attr("dilation", 1) if self.op == "conv2d" else 1
            pad = self.padding()
            if k <= 0 or st <= 0 or dil <= 0 or pad < 0:
                raise CodesignError(f"{self.key()}: kernel, stride, dilation must be > 0, padding >= 0")
            h, w = (_conv_out(v, k, st, pad, dil) for v in s[2:])
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
        c, k, g = spec.input_shape[1], spec.attr("kernel"), spec.attr("groups")
        flops = 2.0 * out_elems * (c // g) * k * k
        flops += out_elems * (int(spec.attr("bias")) + int(spec.attr("residual")))
        return flops + out_elems * (spec.attr("activation") != "none")
    if spec.op == "dense":
        return 2.0 * out_elems * spec.input_shape[1] + out_elems * int(spec.attr("bias"))
    if spec.op in ("avg_pool2d", "max_pool2d"):
        return out_elems * spec.attr("kernel") ** 2
    if spec.op == "global_avg_pool2d":
        return float(_prod(spec.input_shape))
    if spec.op == "batch_norm":
        return 2.0 * out_elems
    if spec.op == "hardswish":
        return 4.0 * out_elems
    return out_elems


def kernel_bytes(spec: KernelSpec, dtype_bytes: int = 4) -> float:
    """Bytes a kernel must move at least once: inputs, weights and output."""
    inp = _prod(spec.input_shape)
    out = _prod(spec.output_shape())
    weights = 0
    if spec.op == "conv2d":
        c, k, g, co = spec.input_shape[1], spec.attr("kernel"), spec.attr("groups"), spec.attr("out_channels")
        weights = co * (c // g) * k * k + co * int(spec.attr("bias")) + out * int(spec.attr("residual"))
    elif spec.op == "dense":
        weights = spec.input_shape[1] * spec.attr("out_features") + spec.attr("out_features") * int(spec.attr("bias"))
    elif spec.op == "batch_norm":
        weights = 2 * spec.input_shape[1]
    elif spec.op in ("add", "mul"):
        weights = inp
    return float(dtype_bytes * (inp + out + weights))


def _prod(shape) -> int:
    p = 1
    for s in shape:
        p *= int(s)
    return p
