"""codesign's fused ops as torch custom ops, and their dispatch.

One op, three layers: the signature is defined once here (``torch.library.custom_op`` with a fake
implementation for torch.compile and a registered autograd formula); each backend supplies the
numbers: the C++ kernel (``codesign._C``) for CPU tensors, the Triton kernels
(``codesign.kernels``) for CUDA tensors, and the plain-torch math of ``codesign.reference`` where
neither applies (another device or dtype, or a backend that failed to build).

``use_backend("reference")`` bypasses the custom ops altogether and runs the reference with
ordinary autograd; ``use_backend("cpp")`` / ``use_backend("triton")`` insist on one kernel and fail
loudly where it cannot run (``"triton"`` on CPU tensors is how tests run Triton's interpreter).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator, Sequence

import torch

from . import reference

BACKENDS = ("auto", "cpp", "triton", "reference")
FREE_OPS = reference.FREE_OPS
_FREE_CODE = {name: code for code, name in enumerate(FREE_OPS)}

# Process-wide (a plain global rather than a ContextVar, so that torch.compile can trace and
# guard on it); use_backend() sets and restores it.
_backend = {"name": os.environ.get("CODESIGN_BACKEND", "auto")}

try:  # the compiled core; its absence is reported by backends(), never at import
    from . import _C  # type: ignore[attr-defined]

    _C_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - depends on the build
    _C = None
    _C_ERROR = f"codesign._C did not import ({exc}); reinstall with a C++ compiler and cmake"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run codesign's ops on one backend inside the block: auto, cpp, triton or reference.

    The choice is process-wide while the block runs (not per thread).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    previous = _backend["name"]
    _backend["name"] = name
    try:
        yield
    finally:
        _backend["name"] = previous


def current_backend() -> str:
    """The backend forced by use_backend() or $CODESIGN_BACKEND ("auto" when none)."""
    name = _backend["name"]
    if name not in BACKENDS:
        raise ValueError(
            f"CODESIGN_BACKEND={name!r} is not a backend; choose from {', '.join(BACKENDS)}"
        )
    return name


def _triton_module():
    """codesign.kernels (Triton) if it imports, else None; never touches the CUDA driver."""
    try:
        return importlib.import_module("codesign.kernels")
    except ImportError:
        return None


def backends() -> dict[str, dict]:
    """Which backends can run here, and why each missing one cannot.

    Returns:
        {"cpp": {...}, "triton": {...}, "reference": {...}}, each with ``available`` (bool) and
        ``reason`` (None when available); cpp adds ``openmp`` and ``threads``.
    """
    out: dict[str, dict] = {}
    if _C is not None:
        out["cpp"] = {
            "available": True,
            "reason": None,
            "openmp": bool(_C.has_openmp),
            "threads": int(_C.max_threads()),
        }
    else:
        out["cpp"] = {"available": False, "reason": _C_ERROR}
    mod = _triton_module()
    if mod is None:
        out["triton"] = {"available": False, "reason": "codesign.kernels did not import"}
    else:
        ok, reason = mod.available()
        out["triton"] = {"available": bool(ok), "reason": reason}
    out["reference"] = {"available": True, "reason": None}
    return out


def _kernel_for(t: torch.Tensor) -> str:
    """Which implementation runs inside the custom op for tensors like t."""
    forced = current_backend()
    if forced == "cpp":
        if _C is None:
            raise RuntimeError(f"codesign: the cpp backend was asked for but {_C_ERROR}")
        if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
            raise RuntimeError(
                f"codesign: the cpp backend runs float32/float64 CPU tensors, got {t.dtype} on {t.device}"
            )
        return "cpp"
    if forced == "triton":
        mod = _triton_module()
        if mod is None:
            raise RuntimeError("codesign: the triton backend was asked for but triton is not installed")
        ok, reason = mod.available(t.device)
        if not ok:
            raise RuntimeError(f"codesign: the triton backend cannot run here: {reason}")
        return "triton"
    if t.device.type == "cpu" and _C is not None and t.dtype in (torch.float32, torch.float64):
        return "cpp"
    if t.device.type == "cuda":
        mod = _triton_module()
        if mod is not None and mod.available(t.device)[0]:
            return "triton"
    return "math"


def _addr(t: torch.Tensor) -> int:
    return t.data_ptr()


# ---------------------------------------------------------------------------------------------
# mixed_op
# ---------------------------------------------------------------------------------------------

NCHW, NHWC = 0, 1  # the kernels' two layouts (NHWC is torch's channels_last)


def _pool_out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def _layout(x: torch.Tensor) -> int:
    """NHWC when x's channels are its innermost dimension (channels_last, or a channel slice of
    such a map, as partial-channel edges pass), else NCHW. Maps that are both (C = 1, or H = W = 1)
    count as NCHW."""
    return NHWC if x.shape[1] > 1 and x.stride(1) == 1 and not x.is_contiguous() else NCHW


def _format(layout: int) -> torch.memory_format:
    return torch.channels_last if layout == NHWC else torch.contiguous_format


def _dense_rows(t: torch.Tensor, layout: int) -> torch.Tensor:
    """t itself when every row of its images is one dense run (what the kernels read for ys and
    gradients), else a copy in the layout's contiguous format."""
    _, c, _, w = t.shape
    if layout == NHWC:
        ok = (c == 1 or t.stride(1) == 1) and (w == 1 or t.stride(3) == c)
    else:
        ok = w == 1 or t.stride(3) == 1
    return t if ok else t.contiguous(memory_format=_format(layout))


def _map(t: torch.Tensor) -> tuple[int, int, int, int, int]:
    return (t.data_ptr(), *t.stride())


def _mixed_out(x: torch.Tensor, stride: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return torch.empty(n, c, _pool_out(h, stride), _pool_out(w, stride), dtype=x.dtype,
                       device=x.device, memory_format=_format(_layout(x)))


def _pooled(shape: Sequence[int], dtype: torch.dtype, layout: int) -> torch.Tensor:
    """An uninitialised CPU map for a C++ kernel to write, on a buffer recycled from earlier
    steps (codesign._C's pool: no page faults in the training loop), with the strides torch gives
    the layout's format."""
    n, c, h, w = shape
    strides = [c * h * w, 1, w * c, c] if layout == NHWC else [c * h * w, h * w, w, 1]
    return torch.from_dlpack(_C.empty_pooled(str(dtype).removeprefix("torch."), list(shape), strides))


def buffer_pool(limit_bytes: int | None = None) -> dict:
    """Statistics of the C++ kernels' pool of output buffers (idle_bytes, limit_bytes, fresh,
    reused); with limit_bytes, first sets how many freed bytes it may keep (0 empties it)."""
    if _C is None:
        raise RuntimeError(f"codesign: no buffer pool, {_C_ERROR}")
    if limit_bytes is not None:
        if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes < 0:
            raise ValueError(f"buffer_pool: limit_bytes must be an int >= 0, got {limit_bytes!r}")
        _C.set_buffer_pool_limit(limit_bytes)
    return dict(_C.buffer_pool_stats())


def _cpp_mixed_forward(x, ys, weights, free_ops, stride) -> torch.Tensor:
    layout = _layout(x)
    weights = weights.contiguous()
    ys = [_dense_rows(y, layout) for y in ys]
    n, c, h, w = x.shape
    out = _pooled((n, c, _pool_out(h, stride), _pool_out(w, stride)), x.dtype, layout)
    _C.mixed_op_forward(
        str(x.dtype).removeprefix("torch."), layout, [n, c, h, w, *out.shape[2:], stride],
        _map(x), [_map(y) for y in ys], _addr(weights), list(free_ops), _map(out),
    )
    return out


def _cpp_mixed_backward(grad, x, ys, weights, free_ops, stride, want_ys=None, want_w=True):
    """(grad_x, grad_weights, grad_ys); want_ys[k] False leaves grad_ys[k] None (not computed);
    want_w False leaves grad_weights None, and then ys are not read (entries may be None)."""
    layout = _layout(x)
    grad, weights = _dense_rows(grad, layout), weights.contiguous()
    n, c, h, w = x.shape
    grad_x = _pooled(x.shape, x.dtype, layout)
    grad_w = torch.empty_like(weights) if want_w else None
    grad_ys = [_pooled(grad.shape, x.dtype, layout) if want_ys is None or want_ys[k] else None
               for k in range(len(ys))]
    ys = [_dense_rows(y, layout) for y in ys] if want_w else ys  # kept alive through the call
    _C.mixed_op_backward(
        str(x.dtype).removeprefix("torch."), layout, [n, c, h, w, *grad.shape[2:], stride],
        _map(grad), _map(x), [_map(y) if want_w else (0, 0, 0, 0, 0) for y in ys],
        _addr(weights), list(free_ops), _map(grad_x),
        [(0, 0, 0, 0, 0) if g is None else _map(g) for g in grad_ys], _addr(grad_w) if want_w else 0,
    )
    return grad_x, grad_w, grad_ys


def _save_for_mix(ctx, x, weights, ys) -> None:
    """What the eager mixed op keeps for backward: x and the weights, and the candidates' outputs
    only where the weights need a gradient (<grad, y_k> is all backward reads them for)."""
    ctx.kp = len(ys)
    ctx.save_for_backward(x, weights, *(ys if ctx.needs_input_grad[1] else ()))


class _MixedCpp(torch.autograd.Function):
    """The mixed op on codesign's C++ kernels under autograd, for eager CPU calls: the custom op
    (what torch.compile, opcheck and the other backends use) computes the same, but its Python
    dispatch costs about 0.2 ms a call, as much as the whole kernel on an 8x8 DARTS map
    (benchmarks/kernels.py)."""

    @staticmethod
    def forward(ctx, x, weights, free_ops, stride, *ys):
        _save_for_mix(ctx, x, weights, ys)
        ctx.free_ops, ctx.stride = free_ops, stride
        return _cpp_mixed_forward(x, ys, weights, free_ops, stride)

    @staticmethod
    def backward(ctx, grad):
        x, weights, *ys = ctx.saved_tensors
        want_w = ctx.needs_input_grad[1]
        grad_x, grad_w, grad_ys = _cpp_mixed_backward(grad, x, ys if want_w else [None] * ctx.kp, weights,
                                                      ctx.free_ops, ctx.stride, ctx.needs_input_grad[4:], want_w)
        return (grad_x if ctx.needs_input_grad[0] else None, grad_w, None, None, *grad_ys)


class _MixedSaves(torch.autograd.Function):
    """What :class:`_MixedCpp` saves for backward, in the same order, without computing the mix
    (see :func:`mixed_op_saves`)."""

    @staticmethod
    def forward(ctx, x, weights, free_ops, stride, *ys):
        _save_for_mix(ctx, x, weights, ys)
        return x.new_empty(())

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("codesign: mixed_op_saves has no backward: it stands in for the mixed op "
                           "only while a checkpoint recomputes what that op saved")


@torch.library.custom_op("codesign::mixed_op", mutates_args=())
def _mixed_op(
    x: torch.Tensor, ys: list[torch.Tensor], weights: torch.Tensor, free_ops: list[int], stride: int
) -> torch.Tensor:
    kernel = _kernel_for(x)
    if kernel == "cpp":
        return _cpp_mixed_forward(x, ys, weights, free_ops, stride)
    if kernel == "triton":
        return _triton_module().mixed_op_forward(x, ys, weights, list(free_ops), stride)
    names = [FREE_OPS[c] for c in free_ops]
    out = reference.mixed_op(x, ys, weights, names, stride)
    return torch.empty_like(out, memory_format=_format(_layout(x))).copy_(out)


@_mixed_op.register_fake
def _(x, ys, weights, free_ops, stride):
    return _mixed_out(x, stride)


@torch.library.custom_op("codesign::mixed_op_backward", mutates_args=())
def _mixed_op_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    ys: list[torch.Tensor],
    weights: torch.Tensor,
    free_ops: list[int],
    stride: int,
) -> list[torch.Tensor]:
    """[grad_x, grad_weights, *grad_ys]."""
    kernel = _kernel_for(x)
    if kernel == "cpp":
        grad_x, grad_w, grad_ys = _cpp_mixed_backward(grad, x, ys, weights, free_ops, stride)
        return [grad_x, grad_w, *grad_ys]
    if kernel == "triton":
        grad_x, grad_ys, grad_w = _triton_module().mixed_op_backward(
            grad, x, ys, weights, list(free_ops), stride
        )
        return [grad_x, grad_w, *grad_ys]
    names = [FREE_OPS[c] for c in free_ops]
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(), weights.detach().requires_grad_()]
        leaves += [y.detach().requires_grad_() for y in ys]
        out = reference.mixed_op(leaves[0], leaves[2:], leaves[1], names, stride)
        grads = torch.autograd.grad(out, leaves, grad, allow_unused=True)
    return [torch.zeros_like(v) if g is None else g for g, v in zip(grads, leaves)]


@_mixed_op_backward.register_fake
def _(grad, x, ys, weights, free_ops, stride):
    fmt = _format(_layout(x))
    return [torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt),
            torch.empty_like(weights),
            *[torch.empty(y.shape, dtype=y.dtype, device=y.device, memory_format=fmt) for y in ys]]


def _mixed_setup(ctx, inputs, output):
    x, ys, weights, free_ops, stride = inputs
    ctx.save_for_backward(x, weights, *ys)
    ctx.free_ops, ctx.stride = free_ops, stride


def _mixed_backward(ctx, grad):
    x, weights, *ys = ctx.saved_tensors
    grads = _mixed_op_backward(grad, x, list(ys), weights, ctx.free_ops, ctx.stride)
    # free_ops gets None; torch.library reads an empty list as an (empty) tensor list, though.
    return grads[0], list(grads[2:]), grads[1], (None if ctx.free_ops else []), None


_mixed_op.register_autograd(_mixed_backward, setup_context=_mixed_setup)


def _check_mixed(x, ys, weights, free_ops, stride) -> list[int]:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"mixed_op: x must be a 4-D tensor [N, C, H, W], got {got}")
    if not x.is_floating_point():
        raise TypeError(f"mixed_op: x must be a floating-point tensor, got {x.dtype}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"mixed_op: stride must be a positive int, got {stride!r}")
    if isinstance(free_ops, str):
        raise TypeError(f"mixed_op: free_ops must be a sequence of names, got the string {free_ops!r}")
    codes = []
    for name in free_ops:
        if name not in _FREE_CODE:
            raise ValueError(f"mixed_op: unknown free op {name!r}; choose from {', '.join(FREE_OPS)}")
        if name == "identity" and stride != 1:
            raise ValueError("mixed_op: free op 'identity' needs stride 1 (use a factorized reduce op)")
        codes.append(_FREE_CODE[name])
    n, c, h, w = x.shape
    expect = (n, c, _pool_out(h, stride), _pool_out(w, stride))
    for k, y in enumerate(ys):
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"mixed_op: ys[{k}] must be a tensor, got {type(y).__name__}")
        if tuple(y.shape) != expect:
            raise ValueError(
                f"mixed_op: ys[{k}] has shape {tuple(y.shape)}, expected {expect} "
                f"(x {tuple(x.shape)} with stride {stride})"
            )
        if y.dtype != x.dtype or y.device != x.device:
            raise ValueError(
                f"mixed_op: ys[{k}] is {y.dtype} on {y.device}, x is {x.dtype} on {x.device}"
            )
    k_total = len(ys) + len(codes)
    if k_total == 0:
        raise ValueError("mixed_op: nothing to mix; pass at least one of ys or free_ops")
    if not isinstance(weights, torch.Tensor) or weights.dim() != 1 or weights.shape[0] != k_total:
        got = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(
            f"mixed_op: weights must have shape ({k_total},) = len(ys) {len(ys)} + "
            f"len(free_ops) {len(codes)}, got {got}"
        )
    if weights.dtype != x.dtype or weights.device != x.device:
        raise ValueError(
            f"mixed_op: weights is {weights.dtype} on {weights.device}, x is {x.dtype} on {x.device}"
        )
    return codes


def mixed_op(
    x: torch.Tensor,
    ys: Sequence[torch.Tensor],
    weights: torch.Tensor,
    free_ops: Sequence[str] = (),
    stride: int = 1,
) -> torch.Tensor:
    """One DARTS/GDAS edge: sum_k weights[k]*ys[k] + sum_j weights[len(ys)+j]*free_op_j(x).

    Args:
        x: [N, C, H, W] input of the edge.
        ys: outputs of the parametric candidates, each [N, C, H', W'] with H' = (H-1)//stride + 1.
        weights: [len(ys) + len(free_ops)], the mixing weights (softmax, or a Gumbel sample).
        free_ops: names among "zero", "identity" (stride 1), "avg_pool_3x3"
            (count_include_pad=False), "max_pool_3x3"; pools use padding 1.
        stride: stride of the pools.

    Non-contiguous inputs are accepted (the kernels copy them once). The pooled maps are never
    stored: backward recomputes them from x.

    Raises:
        ValueError / TypeError naming the offending argument.
    """
    codes = _check_mixed(x, ys, weights, free_ops, stride)
    if current_backend() == "reference":
        return reference.mixed_op(x, list(ys), weights, list(free_ops), stride)
    if _eager_cpp(x):
        return _MixedCpp.apply(x, weights, codes, stride, *ys)
    return _mixed_op(x, list(ys), weights, codes, stride)


def _eager_cpp(x: torch.Tensor) -> bool:
    """Whether a mixed op on x runs the C++ kernels under :class:`_MixedCpp` (eager CPU calls),
    rather than the custom op (torch.compile, other backends) or the reference."""
    return current_backend() != "reference" and not torch.compiler.is_compiling() and _kernel_for(x) == "cpp"


def mixed_op_saves(
    x: torch.Tensor,
    ys: Sequence[torch.Tensor],
    weights: torch.Tensor,
    free_ops: Sequence[str] = (),
    stride: int = 1,
) -> torch.Tensor:
    """For a non-reentrant checkpoint's recomputation of a block that ends in :func:`mixed_op`:
    has autograd save what the mixed op's call would (so the checkpoint gets back the maps that the
    original call's backward reads), without computing its output, which the recomputation
    throws away. Where the call would not run the eager C++ kernels (another backend,
    torch.compile), the mixed op itself runs, and its output is returned."""
    codes = _check_mixed(x, ys, weights, free_ops, stride)
    if _eager_cpp(x):
        return _MixedSaves.apply(x, weights, codes, stride, *ys)
    return mixed_op(x, ys, weights, free_ops, stride)


# ---------------------------------------------------------------------------------------------
# depthwise_conv2d
# ---------------------------------------------------------------------------------------------


def _nhwc_cpp(x: torch.Tensor) -> bool:
    """Whether codesign's channels_last CPU kernels (depthwise conv, batch norm) take x; other
    maps go to torch."""
    return (_C is not None and current_backend() in ("auto", "cpp") and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64) and _layout(x) == NHWC)


def _conv_out(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _dw_shape(x, weight, stride, padding, dilation, ho, wo) -> list[int]:
    n, c, h, w = x.shape
    return [n, c, h, w, ho, wo, weight.shape[-1], stride, padding, dilation]


class _Depthwise(torch.autograd.Function):
    """codesign's depthwise-conv kernel under autograd (channels_last float CPU maps only).

    A plain autograd.Function rather than a torch.library custom op: the fused supernet calls it
    a thousand times per step, and the custom op's Python dispatch cost three times as much per
    call (179 against 56 us for a forward and backward of a tiny map, measured here). Eager only:
    torch.compile breaks the graph at it."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation):
        n, c, h, w = x.shape
        k = weight.shape[-1]
        shape = [n, c, h, w, _conv_out(h, k, stride, padding, dilation), _conv_out(w, k, stride, padding, dilation),
                 k, stride, padding, dilation]
        weight = weight.contiguous()
        out = _pooled((n, c, shape[4], shape[5]), x.dtype, NHWC)
        _C.depthwise_conv2d_forward(str(x.dtype).removeprefix("torch."), shape, _map(x), _addr(weight), _map(out))
        ctx.save_for_backward(x, weight)
        ctx.shape = shape
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = _dense_rows(grad, NHWC)
        grad_x = _pooled(x.shape, x.dtype, NHWC) if ctx.needs_input_grad[0] else None
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        _C.depthwise_conv2d_backward(str(x.dtype).removeprefix("torch."), ctx.shape, _map(grad), _map(x),
                                     _addr(weight), _map(grad_x) if grad_x is not None else (0, 0, 0, 0, 0),
                                     _addr(grad_w) if grad_w is not None else 0)
        return grad_x, grad_w, None, None, None


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0,
                     dilation: int = 1) -> torch.Tensor:
    """Depthwise convolution (groups = channels, no bias): ``F.conv2d(x, weight, None, stride,
    padding, dilation, groups=C)``, by codesign's kernel on channels_last float CPU maps (the
    fused supernet's layout) and by torch elsewhere.

    Args:
        x: [N, C, H, W].
        weight: [C, 1, K, K], K odd or even.
        stride, padding, dilation: ints, as torch's (the same for both axes).

    Raises:
        ValueError naming the offending argument.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"depthwise_conv2d: x must be a 4-D tensor [N, C, H, W], got {getattr(x, 'shape', x)!r}")
    c = x.shape[1]
    if (not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[0] != c or weight.shape[1] != 1
            or weight.shape[2] != weight.shape[3]):
        raise ValueError(f"depthwise_conv2d: weight must be [C={c}, 1, K, K], got {getattr(weight, 'shape', weight)!r}")
    for name, v, low in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"depthwise_conv2d: {name} must be an int >= {low}, got {v!r}")
    k = weight.shape[-1]
    if min(_conv_out(x.shape[2], k, stride, padding, dilation), _conv_out(x.shape[3], k, stride, padding, dilation)) < 1:
        raise ValueError(f"depthwise_conv2d: a {k}x{k} kernel (dilation {dilation}, padding {padding}) does not fit "
                         f"a {x.shape[2]}x{x.shape[3]} input")
    if not _nhwc_cpp(x) or weight.dtype != x.dtype or weight.device != x.device:
        return torch.nn.functional.conv2d(x, weight, None, stride, padding, dilation, c)
    return _Depthwise.apply(x, weight, stride, padding, dilation)


# ---------------------------------------------------------------------------------------------
# batch_norm (training) + ReLU
# ---------------------------------------------------------------------------------------------


class _BatchNorm(torch.autograd.Function):
    """codesign's batch-norm (+ ReLU) kernel under autograd (channels_last float CPU maps only);
    an autograd.Function for the reason given at _Depthwise. Returns (out, batch mean, batch
    variance (biased)); backward recomputes the ReLU's mask from x."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, relu, inplace=False, on_output=None):
        x_in = x
        x = _dense_rows(x, NHWC)
        from_output = _normalised_from_output(relu, weight, bias)
        # in place: the input's memory becomes the output (backward needs only the output)
        inplace = inplace and from_output and x is x_in
        out = x if inplace else _pooled(x.shape, x.dtype, NHWC)
        mean, invstd, var = torch.empty_like(weight), torch.empty_like(weight), torch.empty_like(weight)
        params = [_addr(t) for t in (weight, bias, mean, invstd, var)]
        _C.batch_norm_forward(str(x.dtype).removeprefix("torch."), list(x.shape), _map(x), params, float(eps),
                              bool(relu), _map(out))
        if on_output is not None:  # before autograd packs what is saved below
            on_output(out, mean, var)
        ctx.relu = relu
        ctx.from_output = from_output
        if inplace:
            ctx.mark_dirty(x)
        if ctx.from_output:  # keep the output (which the next op keeps anyway), not x
            ctx.save_for_backward(out, weight, bias, mean, invstd)
        else:
            ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        grad = _dense_rows(grad, NHWC)
        grad_x = _pooled(x.shape, x.dtype, NHWC) if ctx.needs_input_grad[0] else None
        grad_w, grad_b = torch.empty_like(weight), torch.empty_like(bias)
        if ctx.from_output:
            # x is the output y = gamma * xhat + beta: the kernel's xhat = (x - mean) * invstd and its
            # scale gamma * invstd come out right with mean := beta, invstd := 1 / gamma and
            # gamma := gamma^2 * invstd (see _normalised_from_output)
            weight, mean, invstd = weight * weight * invstd, bias, 1.0 / weight
        params = [_addr(t) for t in (weight, bias, mean, invstd, grad_w, grad_b)]
        _C.batch_norm_backward(str(x.dtype).removeprefix("torch."), list(x.shape), _map(grad), _map(x), params,
                               bool(ctx.relu), _map(grad_x) if grad_x is not None else (0, 0, 0, 0, 0))
        return grad_x, grad_w, grad_b, None, None, None, None


def _normalised_from_output(relu: bool, weight: torch.Tensor, bias: torch.Tensor) -> bool:
    """Whether a batch norm's backward can take the normalised input from its output,
    xhat = (y - beta) / gamma (in-place activated BN, Rota Bulo et al. 2018), so that it keeps
    its output (kept anyway by the op that consumes it) and its input map is freed: without a
    ReLU (which loses y < 0), and with every |gamma| far enough from zero, against |beta|, that
    y - beta keeps its precision (otherwise the input is kept, as always)."""
    if relu:
        return False
    g = weight.detach().abs()
    return bool((g > 1e-6).all() and (100.0 * g >= bias.detach().abs()).all())


def batch_norm_relu(x: torch.Tensor, bn: torch.nn.BatchNorm2d, relu: bool = True, inplace: bool = False,
                    on_output=None):
    """``relu(bn(x))`` (or ``bn(x)`` with relu=False) for a BatchNorm2d module, in one kernel on
    channels_last float CPU maps when the module is training with affine parameters and running
    statistics (updated as torch's module updates them, batch count included); by the module
    (and torch's ReLU) otherwise. ``inplace``: the kernel may
    write over x where its backward needs only its output. ``on_output(out, mean, var)`` is
    called by the kernel (not the module) before autograd keeps anything for backward."""
    if not (bn.training and bn.affine and bn.track_running_stats and _nhwc_cpp(x) and bn.weight.dtype == x.dtype):
        out = bn(x)
        return torch.relu(out) if relu else out
    momentum = bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    count = x.numel() // x.shape[1]
    if count == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    out, mean, var = _BatchNorm.apply(x, bn.weight, bn.bias, float(bn.eps), bool(relu), bool(inplace), on_output)
    if momentum:  # the running variance is the unbiased one, as torch's module keeps it
        with torch.no_grad():
            bn.running_mean.lerp_(mean, momentum)
            bn.running_var.lerp_(var * (count / (count - 1)), momentum)
    return out


# ---------------------------------------------------------------------------------------------
# gumbel_softmax
# ---------------------------------------------------------------------------------------------

_SEED_MAX = 2**62


@torch.library.custom_op("codesign::gumbel_softmax", mutates_args=())
def _gumbel_softmax(
    logits: torch.Tensor, tau: float, hard: bool, seed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    s = int(seed.item())
    kernel = _kernel_for(logits)
    if kernel == "cpp":
        logits = logits.contiguous()
        rows, cols = logits.shape
        y = torch.empty_like(logits)
        index = torch.empty(rows, dtype=torch.long, device=logits.device)
        _C.gumbel_softmax_forward(
            str(logits.dtype).removeprefix("torch."), _addr(logits), rows, cols, float(tau), s,
            bool(hard), _addr(y), _addr(index),
        )
        return y, index
    if kernel == "triton":
        return _triton_module().gumbel_softmax_forward(logits, tau, hard, s)
    y, index = reference.gumbel_softmax(logits, tau, hard, s)
    return y.detach().clone(), index


@_gumbel_softmax.register_fake
def _(logits, tau, hard, seed):
    return torch.empty_like(logits), logits.new_empty(logits.shape[0], dtype=torch.long)


@torch.library.custom_op("codesign::gumbel_softmax_backward", mutates_args=())
def _gumbel_softmax_backward(
    grad_y: torch.Tensor, logits: torch.Tensor, tau: float, seed: torch.Tensor
) -> torch.Tensor:
    s = int(seed.item())
    kernel = _kernel_for(logits)
    if kernel == "cpp":
        grad_y, logits = grad_y.contiguous(), logits.contiguous()
        rows, cols = logits.shape
        grad = torch.empty_like(logits)
        _C.gumbel_softmax_backward(
            str(logits.dtype).removeprefix("torch."), _addr(grad_y), _addr(logits), rows, cols,
            float(tau), s, _addr(grad),
        )
        return grad
    if kernel == "triton":
        return _triton_module().gumbel_softmax_backward(grad_y, logits, tau, s)
    with torch.enable_grad():
        leaf = logits.detach().requires_grad_()
        y, _ = reference.gumbel_softmax(leaf, tau, False, s)
        (grad,) = torch.autograd.grad(y, leaf, grad_y)
    return grad


@_gumbel_softmax_backward.register_fake
def _(grad_y, logits, tau, seed):
    return torch.empty_like(logits)


def _gumbel_setup(ctx, inputs, output):
    logits, tau, hard, seed = inputs
    ctx.save_for_backward(logits, seed)
    ctx.tau = tau


def _gumbel_backward(ctx, grad_y, grad_index):
    logits, seed = ctx.saved_tensors
    return _gumbel_softmax_backward(grad_y, logits, ctx.tau, seed), None, None, None


_gumbel_softmax.register_autograd(_gumbel_backward, setup_context=_gumbel_setup)


def gumbel_softmax(
    logits: torch.Tensor, tau: float = 1.0, hard: bool = False, seed: int | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-softmax sample of every row of logits [R, K]: (y [R, K], index [R]).

    y = softmax((logits + g) / tau) with Gumbel noise g drawn from a counter-based generator keyed
    by (seed, row, col), so a seed gives the same sample on every backend and thread count; with
    hard=True, y is exactly one-hot in forward and carries the straight-through gradient of the
    soft sample. index is the sampled column of each row. seed=None draws one from torch's
    generator, so torch.manual_seed makes runs repeatable.

    Raises:
        ValueError / TypeError for a logits tensor that is not 2-D floating point, tau <= 0 or a
        seed out of range.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"gumbel_softmax: logits must be a 2-D tensor [R, K], got {got}")
    if not logits.is_floating_point():
        raise TypeError(f"gumbel_softmax: logits must be floating point, got {logits.dtype}")
    if logits.shape[1] == 0:
        raise ValueError("gumbel_softmax: logits has K = 0 columns; there is nothing to sample")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ValueError(f"gumbel_softmax: tau must be a positive number, got {tau!r}")
    if seed is None:
        seed_t = torch.randint(0, _SEED_MAX, (), dtype=torch.long)
    elif isinstance(seed, torch.Tensor):
        seed_t = seed.to(device="cpu", dtype=torch.long).reshape(())
    else:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"gumbel_softmax: seed must be an int in [0, 2**63), got {seed!r}")
        seed_t = torch.tensor(seed, dtype=torch.long)
    if current_backend() == "reference":
        return reference.gumbel_softmax(logits, float(tau), bool(hard), int(seed_t.item()))
    return _gumbel_softmax(logits, float(tau), bool(hard), seed_t)
