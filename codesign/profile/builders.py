"""KernelSpec -> TVM PrimFunc (TE/TOPI), and the same kernel in PyTorch for reference timings.

Each builder returns a :class:`Built`: the PrimFunc and the shapes of its arguments (inputs, then
the output). Fused patterns are built as TVM fuses them into one kernel: conv2d + bias +
activation (+ residual add), batch norm (inference: per-channel scale and shift) + activation,
add + activation, dense + bias + activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CodesignError
from ..kernelspec import ELEMENTWISE, KernelSpec

DTYPE = "float32"


@dataclass
class Built:
    func: object  # tvm.tir.PrimFunc
    arg_shapes: list[tuple[int, ...]]  # inputs then output


def _activation(te_tensor, name: str):
    from tvm import te, topi

    if name == "none":
        return te_tensor
    if name == "relu":
        return topi.nn.relu(te_tensor)
    if name == "relu6":
        return topi.clip(te_tensor, 0.0, 6.0)
    if name == "sigmoid":
        return topi.sigmoid(te_tensor)
    if name == "hardswish":
        return te.compute(
            te_tensor.shape,
            lambda *i: te_tensor(*i) * te.min(te.max(te_tensor(*i) + 3.0, 0.0), 6.0) / 6.0,
            name="hardswish",
        )
    if name == "hardsigmoid":
        return te.compute(te_tensor.shape, lambda *i: te.min(te.max(te_tensor(*i) + 3.0, 0.0), 6.0) / 6.0,
                          name="hardsigmoid")
    if name == "tanh":
        return topi.tanh(te_tensor)
    if name == "leaky_relu":  # the slope does not change the cost; torch's default
        return topi.nn.leaky_relu(te_tensor, 0.01)
    if name == "silu":
        return te.compute(te_tensor.shape, lambda *i: te_tensor(*i) * te.sigmoid(te_tensor(*i)), name="silu")
    if name == "gelu":
        # exact GELU, as the ONNX graphs exporters write at opset 17 (x * 0.5 * (1 + erf(x / sqrt 2)))
        return te.compute(
            te_tensor.shape,
            lambda *i: te_tensor(*i) * 0.5 * (1.0 + te.erf(te_tensor(*i) * 0.7071067811865476)),
            name="gelu",
        )
    raise CodesignError(f"no TVM builder for activation {name!r}")


def _conv(spec: KernelSpec, data):
    from tvm import te, topi

    n, c, h, w = spec.input_shape
    co, (kh, kw) = spec.attr("out_channels"), spec.kernel_hw()
    s, d, g, p = spec.attr("stride"), spec.attr("dilation"), spec.attr("groups"), spec.padding_hw()
    if g == 1:
        weight = te.placeholder((co, c, kh, kw), name="weight", dtype=DTYPE)
        out = topi.nn.conv2d_nchw(data, weight, s, p, d, out_dtype=DTYPE)
    elif g == c and co == c:
        weight = te.placeholder((c, 1, kh, kw), name="weight", dtype=DTYPE)
        out = topi.nn.depthwise_conv2d_nchw(data, weight, s, p, d, out_dtype=DTYPE)
    else:
        weight = te.placeholder((co, c // g, kh, kw), name="weight", dtype=DTYPE)
        out = topi.nn.group_conv2d_nchw(data, weight, s, p, d, g, out_dtype=DTYPE)
    args = [weight]
    if spec.attr("bias"):
        bias = te.placeholder((co,), name="bias", dtype=DTYPE)
        out = te.compute(out.shape, lambda b, o, y, x: out[b, o, y, x] + bias[o], name="bias_add")
        args.append(bias)
    if spec.attr("residual"):
        res = te.placeholder(tuple(int(v) for v in out.shape), name="residual", dtype=DTYPE)
        out = topi.add(out, res)
        args.append(res)
    return _activation(out, spec.attr("activation")), args


def build(spec: KernelSpec) -> Built:
    """The PrimFunc TVM compiles for one kernel."""
    from tvm import te, topi

    data = te.placeholder(spec.input_shape, name="data", dtype=DTYPE)
    extra: list = []
    op = spec.op
    if op == "conv2d":
        out, extra = _conv(spec, data)
    elif op in ("avg_pool2d", "max_pool2d"):
        k, s, p = spec.attr("kernel"), spec.attr("stride"), spec.attr("padding")
        out = topi.nn.pool2d(
            data, (k, k), (s, s), (1, 1), (p, p, p, p), "avg" if op == "avg_pool2d" else "max",
            ceil_mode=bool(spec.attr("ceil_mode")), count_include_pad=bool(spec.attr("count_include_pad", False)),
        )
    elif op == "global_avg_pool2d":
        out = topi.nn.global_pool(data, "avg")
    elif op == "batch_norm":
        c = spec.input_shape[1]
        scale = te.placeholder((c,), name="scale", dtype=DTYPE)
        shift = te.placeholder((c,), name="shift", dtype=DTYPE)
        out = te.compute(data.shape, lambda b, o, y, x: data[b, o, y, x] * scale[o] + shift[o], name="bn")
        out = _activation(out, spec.attr("activation"))
        extra = [scale, shift]
    elif op in ELEMENTWISE:
        out = _activation(data, op)
    elif op in ("add", "mul"):
        n, c = spec.input_shape[:2]
        other_shape = (n, c, 1, 1) if op == "mul" and spec.attr("broadcast") else spec.input_shape
        other = te.placeholder(other_shape, name="other", dtype=DTYPE)
        out = topi.add(data, other) if op == "add" else topi.multiply(data, other)
        if op == "add":
            out = _activation(out, spec.attr("activation"))
        extra = [other]
    elif op == "dense":
        f, o = spec.input_shape[1], spec.attr("out_features")
        bias = te.placeholder((o,), name="bias", dtype=DTYPE) if spec.attr("bias") else None
        if spec.attr("weight_kn"):
            # As Relax legalises the matmul of an imported Linear layer: (features, out) weights.
            weight = te.placeholder((f, o), name="weight", dtype=DTYPE)
            k = te.reduce_axis((0, f), name="k")
            out = te.compute((spec.input_shape[0], o), lambda i, j: te.sum(data[i, k] * weight[k, j], axis=k),
                             name="matmul")
            out = topi.add(out, bias) if bias is not None else out
        else:
            weight = te.placeholder((o, f), name="weight", dtype=DTYPE)
            out = topi.nn.dense(data, weight, bias, out_dtype=DTYPE)
        extra = [weight] + ([bias] if bias is not None else [])
        if spec.attr("residual"):
            res = te.placeholder((spec.input_shape[0], o), name="residual", dtype=DTYPE)
            out = topi.add(out, res)
            extra.append(res)
        out = _activation(out, spec.attr("activation"))
    elif op == "lrn":
        # torch's LocalResponseNorm defaults, as exported (alpha 1e-4, beta 0.75, bias 1)
        out = topi.nn.lrn(data, spec.attr("size"), 1, 0.0001, 0.75, 1.0)
    elif op == "softmax":
        out = topi.nn.softmax(data, axis=-1)
    elif op == "l2_normalize":
        rows, cols = spec.input_shape
        j = te.reduce_axis((0, cols), name="j")
        sq = te.compute((rows,), lambda r: te.sum(data[r, j] * data[r, j], axis=j), name="sum_sq")
        out = te.compute(spec.input_shape, lambda r, c: data[r, c] / te.max(te.sqrt(sq[r]), 1e-12),
                         name="l2_normalize")
    elif op == "layer_norm":
        cols = spec.input_shape[1]
        gamma = te.placeholder((cols,), name="gamma", dtype=DTYPE)
        beta = te.placeholder((cols,), name="beta", dtype=DTYPE)
        out = _activation(topi.nn.layer_norm(data, gamma, beta, [1], 1e-5), spec.attr("activation"))
        extra = [gamma, beta]
    elif op == "instance_norm":
        # As Relax imports ONNX InstanceNormalization: mean, variance, (x - mean) / sqrt(var + eps),
        # then the per-row scale and shift.
        rows, cols = spec.input_shape
        gamma = te.placeholder((rows,), name="gamma", dtype=DTYPE)
        beta = te.placeholder((rows,), name="beta", dtype=DTYPE)
        k1 = te.reduce_axis((0, cols), name="k1")
        total = te.compute((rows,), lambda r: te.sum(data[r, k1], axis=k1), name="sum")
        k2 = te.reduce_axis((0, cols), name="k2")
        sq = te.compute((rows,), lambda r: te.sum((data[r, k2] - total[r] / cols) * (data[r, k2] - total[r] / cols),
                                                  axis=k2), name="sum_sq")
        out = te.compute(spec.input_shape, lambda r, c: (data[r, c] - total[r] / cols) / te.sqrt(sq[r] / cols + 1e-5)
                         * gamma[r] + beta[r], name="instance_norm")
        extra = [gamma, beta]
    elif op == "conv2d_transpose":
        # As Relax legalises an imported ConvTranspose: (in, out / groups, k, k) weights.
        c, co, k, g = spec.input_shape[1], spec.attr("out_channels"), spec.attr("kernel"), spec.attr("groups")
        weight = te.placeholder((c, co // g, k, k), name="weight", dtype=DTYPE)
        st, pad, opad = spec.attr("stride"), spec.attr("padding"), spec.attr("output_padding")
        out = topi.nn.group_conv2d_transpose_nchw(data, weight, [st, st], [pad, pad, pad, pad], DTYPE, [opad, opad], g)
        extra = [weight]
        if spec.attr("bias"):
            bias = te.placeholder((co,), name="bias", dtype=DTYPE)
            out = topi.add(out, topi.reshape(bias, (1, co, 1, 1)))
            extra.append(bias)
        out = _activation(out, spec.attr("activation"))
    elif op == "resize2d":
        # As Relax legalises an imported ONNX Resize (torch's exports: half_pixel for linear and
        # cubic, asymmetric + floor for nearest).
        # Relax's shapes are int64, and so is the index arithmetic of the kernel it builds: a bilinear
        # resize of 1x36x16x16 to 64x64 runs in 0.48 ms so against 0.36 ms with int32 indices
        # (znver3, untuned; the imported one-node network: 0.52 ms).
        from tvm import tirx

        method = {"nearest": "nearest_neighbor", "linear": "linear", "cubic": "cubic"}[spec.attr("method")]
        nearest = method == "nearest_neighbor"
        data = te.placeholder([tirx.IntImm("int64", v) for v in spec.input_shape], name="data", dtype=DTYPE)
        size = (tirx.IntImm("int64", spec.attr("out_h")), tirx.IntImm("int64", spec.attr("out_w")))
        out = topi.image.resize2d(data, (0.0, 0.0, 0.0, 0.0), size, layout="NCHW",
                                  method=method,
                                  coordinate_transformation_mode="asymmetric" if nearest else "half_pixel",
                                  rounding_method="floor" if nearest else "", out_dtype=DTYPE)
    elif op == "batch_matmul":
        b, _, k = spec.input_shape
        other = te.placeholder((b, k, spec.attr("n")), name="other", dtype=DTYPE)
        out = topi.nn.batch_matmul(data, other, transpose_a=False, transpose_b=False)
        extra = [other]
    else:
        raise CodesignError(f"no TVM builder for op {op!r}")
    args = [data, *extra, out]
    shapes = [tuple(int(v) for v in t.shape) for t in args]
    if tuple(shapes[-1]) != tuple(spec.output_shape()):
        raise CodesignError(f"{spec.key()}: TVM output {shapes[-1]} != expected {spec.output_shape()}")
    return Built(te.create_prim_func(args), shapes)


def random_args(shapes: list[tuple[int, ...]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(DTYPE) for s in shapes[:-1]] + [np.zeros(shapes[-1], DTYPE)]


def torch_callable(spec: KernelSpec, device: str = "cpu"):
    """A zero-argument function running the kernel in eager PyTorch (for --reference torch).

    Args:
        spec: the kernel.
        device: the torch device its tensors live on ("cpu" or "cuda").
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)

    def torch_randn(*shape, generator):
        # Drawn on the CPU (the same values on every device), then moved.
        return torch.randn(*shape, generator=generator).to(device)

    x = torch_randn(spec.input_shape, generator=gen)
    act = {
        "none": lambda t: t,
        "relu": F.relu,
        "relu6": F.relu6,
        "hardswish": F.hardswish,
        "sigmoid": torch.sigmoid,
        "hardsigmoid": F.hardsigmoid,
        "silu": F.silu,
        "gelu": F.gelu,
        "tanh": torch.tanh,
        "leaky_relu": F.leaky_relu,
    }
    op = spec.op
    if op == "conv2d":
        c, co, (kh, kw), g = spec.input_shape[1], spec.attr("out_channels"), spec.kernel_hw(), spec.attr("groups")
        w = torch_randn(co, c // g, kh, kw, generator=gen)
        b = torch_randn(co, generator=gen) if spec.attr("bias") else None
        res = torch_randn(spec.output_shape(), generator=gen) if spec.attr("residual") else None
        a = act[spec.attr("activation")]

        def run():
            y = F.conv2d(x, w, b, spec.attr("stride"), spec.padding_hw(), spec.attr("dilation"), g)
            return a(y + res if res is not None else y)

        return run
    ceil = bool(spec.attr("ceil_mode", False))
    if op == "avg_pool2d":
        return lambda: F.avg_pool2d(x, spec.attr("kernel"), spec.attr("stride"), spec.attr("padding"), ceil_mode=ceil,
                                    count_include_pad=bool(spec.attr("count_include_pad", False)))
    if op == "max_pool2d":
        return lambda: F.max_pool2d(x, spec.attr("kernel"), spec.attr("stride"), spec.attr("padding"), ceil_mode=ceil)
    if op == "global_avg_pool2d":
        return lambda: F.adaptive_avg_pool2d(x, 1)
    if op == "batch_norm":
        scale, shift = torch_randn(spec.input_shape[1], generator=gen), torch_randn(spec.input_shape[1], generator=gen)
        a = act[spec.attr("activation")]
        return lambda: a(x * scale[:, None, None] + shift[:, None, None])
    if op in act:
        return lambda: act[op](x)
    if op == "mul" and spec.attr("broadcast"):
        scale = torch_randn(*spec.input_shape[:2], 1, 1, generator=gen)
        return lambda: x * scale
    if op in ("add", "mul"):
        other = torch_randn(spec.input_shape, generator=gen)
        a = act[spec.attr("activation")] if op == "add" else act["none"]
        return (lambda: a(x + other)) if op == "add" else (lambda: x * other)
    if op == "dense":
        # torch's own layout: the same arithmetic under either weight_kn
        w = torch_randn(spec.attr("out_features"), spec.input_shape[1], generator=gen)
        b = torch_randn(spec.attr("out_features"), generator=gen) if spec.attr("bias") else None
        res = torch_randn(spec.output_shape(), generator=gen) if spec.attr("residual") else None
        a = act[spec.attr("activation")]
        return lambda: a(F.linear(x, w, b) + res) if res is not None else a(F.linear(x, w, b))
    if op == "lrn":
        return lambda: F.local_response_norm(x, spec.attr("size"))
    if op == "softmax":
        return lambda: torch.softmax(x, -1)
    if op == "l2_normalize":
        return lambda: F.normalize(x, dim=-1)
    if op == "layer_norm":
        cols = spec.input_shape[1]
        gamma, beta = torch_randn(cols, generator=gen), torch_randn(cols, generator=gen)
        a = act[spec.attr("activation")]
        return lambda: a(F.layer_norm(x, (cols,), gamma, beta))
    if op == "instance_norm":
        rows, cols = spec.input_shape
        gamma, beta = torch_randn(rows, generator=gen), torch_randn(rows, generator=gen)
        return lambda: F.instance_norm(x.unsqueeze(0), weight=gamma, bias=beta).squeeze(0)
    if op == "conv2d_transpose":
        c, co, k, g = spec.input_shape[1], spec.attr("out_channels"), spec.attr("kernel"), spec.attr("groups")
        w = torch_randn(c, co // g, k, k, generator=gen)
        b = torch_randn(co, generator=gen) if spec.attr("bias") else None
        a = act[spec.attr("activation")]
        return lambda: a(F.conv_transpose2d(x, w, b, spec.attr("stride"), spec.attr("padding"),
                                            spec.attr("output_padding"), g))
    if op == "resize2d":
        size, method = (spec.attr("out_h"), spec.attr("out_w")), spec.attr("method")
        mode = {"nearest": "nearest", "linear": "bilinear", "cubic": "bicubic"}[method]
        kw = {} if method == "nearest" else {"align_corners": False}
        return lambda: F.interpolate(x, size=size, mode=mode, **kw)
    if op == "batch_matmul":
        b, _, k = spec.input_shape
        other = torch_randn(b, k, spec.attr("n"), generator=gen)
        return lambda: torch.bmm(x, other)
    raise CodesignError(f"no PyTorch reference for op {op!r}")
