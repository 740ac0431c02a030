"""Triton kernels of codesign.mixed_op (forward and backward).

Layout: one program per (plane, block of pixels), planes being the N*C maps of x. Maps are read
through their strides, so NCHW and channels_last tensors (and channel slices of them, as
partial-channel edges pass) need no copy; the output and gradients take x's format, as on the
other backends. The parametric outputs ys arrive as separate tensors (no stacking copy): a
launch takes up to MAX_YS pointers, and longer lists are folded in several launches that
accumulate. The pools of the free ops are computed from x inside the kernels (3x3 windows,
padding 1) and never stored.

Backward is one pass over the input pixels: each program gathers x's gradient (every input pixel
looks up the output windows that contain it, so there are no atomics and the result is
deterministic) and, where the pixel is the centre of an output window, writes the ys' gradients
and the partial sums of the weight gradients from that same visit: the window's max and sum come
out of the loads the gather makes anyway, so the pools are computed once. The per-program
partial sums are reduced by torch in a fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_YS = 4  # parametric outputs per launch
BLOCK = 256  # pixels per program

ZERO, IDENTITY, AVG, MAX = 0, 1, 2, 3


@triton.jit
def _pools(x_plane, oi, oj, H, W, sxh, sxw, stride, mask):
    """Average (count_include_pad=False) and max of the 3x3 window at output (oi, oj)."""
    total = tl.zeros(oi.shape, dtype=x_plane.dtype.element_ty)
    count = tl.zeros(oi.shape, dtype=x_plane.dtype.element_ty)
    best = tl.full(oi.shape, float("-inf"), dtype=x_plane.dtype.element_ty)
    for dr in tl.static_range(3):
        for dc in tl.static_range(3):
            r = oi * stride - 1 + dr
            c = oj * stride - 1 + dc
            inside = mask & (r >= 0) & (r < H) & (c >= 0) & (c < W)
            v = tl.load(x_plane + r * sxh + c * sxw, mask=inside, other=0.0)
            total += v
            count += inside.to(total.dtype)
            best = tl.where(inside & (v > best), v, best)
    best = tl.where(count > 0, best, 0.0)  # lanes past the plane: keep them finite
    return total / tl.maximum(count, 1.0), best


@triton.jit
def _mixed_fwd(
    x_ptr,  # [N, C, H, W] input of the edge, any strides (sxn, sxc, sxh, sxw)
    out_ptr,  # [N, C, Ho, Wo] output, strides (son, soc, soh, sow) (written, or accumulated into)
    w_ptr,  # weights of this launch's ys, then w_identity, w_avg, w_max (4 + MAX_YS floats)
    y0, y1, y2, y3,  # up to MAX_YS parametric outputs [N, C, Ho, Wo], strides of out
    C, H, W, Ho, Wo, stride,
    sxn, sxc, sxh, sxw, son, soc, soh, sow,
    NUM_YS: tl.constexpr,
    HAS_IDENTITY: tl.constexpr,
    HAS_AVG: tl.constexpr,
    HAS_MAX: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    plane = tl.program_id(0).to(tl.int64)
    n, c = plane // C, plane % C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < Ho * Wo
    oi = offs // Wo
    oj = offs % Wo
    out_off = n * son + c * soc + oi * soh + oj * sow
    acc = tl.load(out_ptr + out_off, mask=mask, other=0.0) if ACCUMULATE else tl.zeros(
        [BLOCK], dtype=out_ptr.dtype.element_ty
    )
    if NUM_YS > 0:
        acc += tl.load(w_ptr + 0) * tl.load(y0 + out_off, mask=mask, other=0.0)
    if NUM_YS > 1:
        acc += tl.load(w_ptr + 1) * tl.load(y1 + out_off, mask=mask, other=0.0)
    if NUM_YS > 2:
        acc += tl.load(w_ptr + 2) * tl.load(y2 + out_off, mask=mask, other=0.0)
    if NUM_YS > 3:
        acc += tl.load(w_ptr + 3) * tl.load(y3 + out_off, mask=mask, other=0.0)
    x_plane = x_ptr + n * sxn + c * sxc
    if HAS_IDENTITY:  # stride 1: the output grid is the input grid
        acc += tl.load(w_ptr + 4) * tl.load(x_plane + oi * sxh + oj * sxw, mask=mask, other=0.0)
    if HAS_AVG or HAS_MAX:
        avg, mx = _pools(x_plane, oi, oj, H, W, sxh, sxw, stride, mask)
        if HAS_AVG:
            acc += tl.load(w_ptr + 5) * avg
        if HAS_MAX:
            acc += tl.load(w_ptr + 6) * mx
    tl.store(out_ptr + out_off, acc, mask=mask)


@triton.jit
def _y_grad(g, off, mask, w, y, gy, partial):
    """One parametric output's share of backward: its gradient w * g (stored at off), and the
    program's partial sum <g, y> (stored at partial)."""
    tl.store(gy + off, w * g, mask=mask)
    tl.store(partial, tl.sum(g * tl.load(y + off, mask=mask, other=0.0)))


@triton.jit
def _mixed_bwd_ys(
    g_ptr,  # [N, C, Ho, Wo] gradient of the output, strides of out
    w_ptr,  # weights of this launch's ys (MAX_YS floats, then 3 unused)
    y0, y1, y2, y3,  # parametric outputs
    gy0, gy1, gy2, gy3,  # their gradients (outputs)
    partial_ptr,  # [num_programs, 7] per-program <g, y_k> sums (output)
    C, Ho, Wo, son, soc, soh, sow,
    NUM_YS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The parametric outputs of launches after the first: their gradients and <g, y_k>."""
    plane = tl.program_id(0).to(tl.int64)
    n, c = plane // C, plane % C
    blk = tl.program_id(1)
    pid = plane * tl.num_programs(1) + blk
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < Ho * Wo
    off = n * son + c * soc + (offs // Wo) * soh + (offs % Wo) * sow
    g = tl.load(g_ptr + off, mask=mask, other=0.0)
    row = partial_ptr + pid * 7
    if NUM_YS > 0:
        _y_grad(g, off, mask, tl.load(w_ptr + 0), y0, gy0, row + 0)
    if NUM_YS > 1:
        _y_grad(g, off, mask, tl.load(w_ptr + 1), y1, gy1, row + 1)
    if NUM_YS > 2:
        _y_grad(g, off, mask, tl.load(w_ptr + 2), y2, gy2, row + 2)
    if NUM_YS > 3:
        _y_grad(g, off, mask, tl.load(w_ptr + 3), y3, gy3, row + 3)


@triton.jit
def _mixed_bwd(
    g_ptr,  # [N, C, Ho, Wo] gradient of the output, strides of out
    x_ptr,  # [N, C, H, W], strides (sxn, sxc, sxh, sxw)
    w_ptr,  # as in _mixed_fwd
    y0, y1, y2, y3,  # parametric outputs, strides of out
    gy0, gy1, gy2, gy3,  # their gradients (outputs), strides of out
    gx_ptr,  # [N, C, H, W] gradient of x (output), strides (sgn, sgc, sgh, sgw)
    partial_ptr,  # [num_programs, 7] per-program sums <g, y_k>..., <g, x>, <g, avg>, <g, max>
    C, H, W, Ho, Wo, stride,
    sxn, sxc, sxh, sxw, son, soc, soh, sow, sgn, sgc, sgh, sgw,
    NUM_YS: tl.constexpr,
    HAS_IDENTITY: tl.constexpr,
    HAS_AVG: tl.constexpr,
    HAS_MAX: tl.constexpr,
    BLOCK: tl.constexpr,
):
    plane = tl.program_id(0).to(tl.int64)
    n, c = plane // C, plane % C
    blk = tl.program_id(1)
    pid = plane * tl.num_programs(1) + blk
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H * W
    p = offs // W
    q = offs % W
    x_plane = x_ptr + n * sxn + c * sxc
    g_plane = g_ptr + n * son + c * soc
    # Input pixels that are the centre of an output window (every output has exactly one).
    centre = mask & (p % stride == 0) & (q % stride == 0)
    co = (p // stride) * soh + (q // stride) * sow
    go = tl.load(g_plane + co, mask=centre, other=0.0)
    row = partial_ptr + pid * 7
    out_plane = n * son + c * soc
    if NUM_YS > 0:
        _y_grad(go, out_plane + co, centre, tl.load(w_ptr + 0), y0, gy0, row + 0)
    if NUM_YS > 1:
        _y_grad(go, out_plane + co, centre, tl.load(w_ptr + 1), y1, gy1, row + 1)
    if NUM_YS > 2:
        _y_grad(go, out_plane + co, centre, tl.load(w_ptr + 2), y2, gy2, row + 2)
    if NUM_YS > 3:
        _y_grad(go, out_plane + co, centre, tl.load(w_ptr + 3), y3, gy3, row + 3)
    acc = tl.zeros([BLOCK], dtype=gx_ptr.dtype.element_ty)
    xv = tl.load(x_plane + p * sxh + q * sxw, mask=mask, other=0.0)
    if HAS_IDENTITY:  # stride 1: every input pixel is a centre
        acc += tl.load(w_ptr + 4) * go
        tl.store(row + 4, tl.sum(go * xv))
    if HAS_AVG or HAS_MAX:
        w_avg = tl.load(w_ptr + 5)
        w_max = tl.load(w_ptr + 6)
        # The output windows containing (p, q) are centred at (t_r, t_c) in {p-1, p, p+1} x
        # {q-1, q, q+1} with t a multiple of the stride; (dr, dc) = (1, 1) is the window centred
        # at (p, q) itself, whose sum and max give the pools of output (p, q) / stride.
        for dr in tl.static_range(3):
            for dc in tl.static_range(3):
                tr = p + 1 - dr
                tc = q + 1 - dc
                oi = tr // stride
                oj = tc // stride
                valid = (
                    mask & (tr >= 0) & (tc >= 0) & (tr % stride == 0) & (tc % stride == 0)
                    & (oi < Ho) & (oj < Wo)
                )
                g_win = tl.load(g_plane + oi * soh + oj * sow, mask=valid, other=0.0)
                rows = tl.minimum(tr + 1, H - 1) - tl.maximum(tr - 1, 0) + 1
                cols = tl.minimum(tc + 1, W - 1) - tl.maximum(tc - 1, 0) + 1
                area = tl.maximum(rows * cols, 1).to(acc.dtype)  # invalid lanes: any positive
                if HAS_AVG:
                    acc += tl.where(valid, w_avg * g_win / area, 0.0)
                if HAS_MAX or (HAS_AVG and dr == 1 and dc == 1):
                    # Scan the window: its first maximum in scan order, and (for the centre
                    # window) its sum.
                    best = tl.full([BLOCK], float("-inf"), dtype=acc.dtype)
                    total = tl.zeros([BLOCK], dtype=acc.dtype)
                    arg = tl.full([BLOCK], -1, dtype=tl.int32)
                    for er in tl.static_range(3):
                        for ec in tl.static_range(3):
                            r = tr - 1 + er
                            cc = tc - 1 + ec
                            inside = valid & (r >= 0) & (r < H) & (cc >= 0) & (cc < W)
                            v = tl.load(x_plane + r * sxh + cc * sxw, mask=inside, other=0.0)
                            total += v
                            take = inside & ((v > best) | (arg < 0))
                            best = tl.where(take, v, best)
                            arg = tl.where(take, er * 3 + ec, arg)
                    best = tl.where(arg >= 0, best, 0.0)  # windows off the plane: keep them finite
                    if HAS_MAX:
                        acc += tl.where(valid & (arg == dr * 3 + dc), w_max * g_win, 0.0)
                    if dr == 1 and dc == 1:  # the pools of the output centred here
                        if HAS_AVG:
                            tl.store(row + 5, tl.sum(tl.where(centre, go * total / area, 0.0)))
                        if HAS_MAX:
                            tl.store(row + 6, tl.sum(tl.where(centre, go * best, 0.0)))
    tl.store(gx_ptr + n * sgn + c * sgc + p * sgh + q * sgw, acc, mask=mask)


def _free_weights(weights: torch.Tensor, kp: int, free_codes: list[int]) -> torch.Tensor:
    """[w_identity, w_avg, w_max] on the weights' device (repeated free ops summed)."""
    out = weights.new_zeros(3)
    for j, code in enumerate(free_codes):
        if code != ZERO:
            out[code - 1] += weights[kp + j]
    return out


def _flags(free_codes):
    return IDENTITY in free_codes, AVG in free_codes, MAX in free_codes


def _out_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x's channels are innermost (as codesign.ops decides), else NCHW."""
    c = x.shape[1]
    if c > 1 and x.stride(1) == 1 and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _launch_groups(kp: int) -> list[list[int]]:
    return [list(range(i, min(i + MAX_YS, kp))) for i in range(0, kp, MAX_YS)] or [[]]


def _launch_weights(weights, group, free_w):
    return torch.cat([weights[group] if group else weights.new_zeros(0),
                      weights.new_zeros(MAX_YS - len(group)), free_w])


def mixed_op_forward(x, ys, weights, free_codes, stride):
    """out = sum_k w_k * ys[k] + free ops of x; see codesign.mixed_op."""
    fmt = _out_format(x)
    weights = weights.contiguous()
    ys = [y.contiguous(memory_format=fmt) for y in ys]
    n, c, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = torch.empty(n, c, ho, wo, dtype=x.dtype, device=x.device, memory_format=fmt)
    kp = len(ys)
    has_id, has_avg, has_max = _flags(free_codes)
    free_w = _free_weights(weights, kp, free_codes)
    grid = (n * c, triton.cdiv(ho * wo, BLOCK))
    for gi, group in enumerate(_launch_groups(kp)):
        first = gi == 0
        ptrs = [ys[k] for k in group] + [out] * (MAX_YS - len(group))  # unused slots: any tensor
        _mixed_fwd[grid](
            x, out, _launch_weights(weights, group, free_w), *ptrs, c, h, w, ho, wo, stride,
            *x.stride(), *out.stride(),
            NUM_YS=len(group), HAS_IDENTITY=first and has_id, HAS_AVG=first and has_avg,
            HAS_MAX=first and has_max, ACCUMULATE=not first, BLOCK=BLOCK,
        )
    return out


def mixed_op_backward(grad, x, ys, weights, free_codes, stride):
    """(grad_x, grad_ys, grad_weights) of codesign.mixed_op."""
    fmt = _out_format(x)
    grad, weights = grad.contiguous(memory_format=fmt), weights.contiguous()
    ys = [y.contiguous(memory_format=fmt) for y in ys]
    n, c, h, w = x.shape
    ho, wo = grad.shape[2], grad.shape[3]
    kp = len(ys)
    has_id, has_avg, has_max = _flags(free_codes)
    free_w = _free_weights(weights, kp, free_codes)
    grad_ys = [torch.empty(y.shape, dtype=y.dtype, device=y.device, memory_format=fmt) for y in ys]
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    dots = weights.new_zeros(kp + 3)  # <g, y_k>..., <g, x>, <g, avg>, <g, max>
    groups = _launch_groups(kp)
    # The first group's ys, the free ops and x's gradient: one pass over the input pixels.
    group = groups[0]
    pad = MAX_YS - len(group)
    grid = (n * c, triton.cdiv(h * w, BLOCK))
    partial = weights.new_zeros(grid[0] * grid[1], 7)
    _mixed_bwd[grid](
        grad, x, _launch_weights(weights, group, free_w), *([ys[k] for k in group] + [grad] * pad),
        *([grad_ys[k] for k in group] + [grad_x] * pad), grad_x, partial, c, h, w, ho, wo, stride,
        *x.stride(), *grad.stride(), *grad_x.stride(),
        NUM_YS=len(group), HAS_IDENTITY=has_id, HAS_AVG=has_avg, HAS_MAX=has_max, BLOCK=BLOCK,
    )
    sums = partial.sum(0)
    if group:
        dots[group[0]:group[-1] + 1] = sums[:len(group)]
    dots[kp:] = sums[4:]
    # Further ys (more than MAX_YS): their gradients and dots only.
    grid = (n * c, triton.cdiv(ho * wo, BLOCK))
    for group in groups[1:]:
        pad = MAX_YS - len(group)
        partial = weights.new_zeros(grid[0] * grid[1], 7)
        _mixed_bwd_ys[grid](
            grad, _launch_weights(weights, group, free_w), *([ys[k] for k in group] + [grad] * pad),
            *([grad_ys[k] for k in group] + [grad_x] * pad), partial, c, ho, wo, *grad.stride(),
            NUM_YS=len(group), BLOCK=BLOCK,
        )
        dots[group[0]:group[-1] + 1] = partial.sum(0)[:len(group)]
    grad_w = torch.empty_like(weights)
    grad_w[:kp] = dots[:kp]
    for j, code in enumerate(free_codes):
        grad_w[kp + j] = 0.0 if code == ZERO else dots[kp + code - 1]
    return grad_x, grad_ys, grad_w
