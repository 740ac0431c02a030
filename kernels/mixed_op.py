"""Triton kernels of codesign.mixed_op (forward and backward).

Layout: one program per (plane, block of pixels), planes being the N*C maps of x. The parametric
outputs ys arrive as separate tensors (no stacking copy): a launch takes up to MAX_YS pointers, and
longer lists are folded in several launches that accumulate. The pools of the free ops are
computed from x inside the kernels (3x3 windows, padding 1) and never stored; backward recomputes
them. Backward is deterministic: x's gradient is gathered per input pixel (each one looks up the
output windows that contain it) rather than scattered with atomics, and the weight gradients are
per-program partial sums reduced by torch in a fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_YS = 4  # parametric outputs per launch
BLOCK = 256  # pixels per program

ZERO, IDENTITY, AVG, MAX = 0, 1, 2, 3


@triton.jit
def _pools(x_plane, oi, oj, H, W, stride, mask):
    """Average (count_include_pad=False) and max of the 3x3 window at output (oi, oj)."""
    total = tl.zeros(oi.shape, dtype=x_plane.dtype.element_ty)
    count = tl.zeros(oi.shape, dtype=x_plane.dtype.element_ty)
    best = tl.full(oi.shape, float("-inf"), dtype=x_plane.dtype.element_ty)
    for dr in tl.static_range(3):
        for dc in tl.static_range(3):
            r = oi * stride - 1 + dr
            c = oj * stride - 1 + dc
            inside = mask & (r >= 0) & (r < H) & (c >= 0) & (c < W)
            v = tl.load(x_plane + r * W + c, mask=inside, other=0.0)
            total += v
            count += inside.to(total.dtype)
            best = tl.where(inside & (v > best), v, best)
    best = tl.where(count > 0, best, 0.0)  # lanes past the plane: keep them finite
    return total / tl.maximum(count, 1.0), best


@triton.jit
def _mixed_fwd(
    x_ptr,  # [N*C, H, W] input of the edge
    out_ptr,  # [N*C, Ho, Wo] output (written, or accumulated into when ACCUMULATE)
    w_ptr,  # weights of this launch's ys, then w_identity, w_avg, w_max (4 + MAX_YS floats)
    y0, y1, y2, y3,  # up to MAX_YS parametric outputs [N*C, Ho, Wo]
    H, W, Ho, Wo, stride,
    NUM_YS: tl.constexpr,
    HAS_IDENTITY: tl.constexpr,
    HAS_AVG: tl.constexpr,
    HAS_MAX: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    plane = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < Ho * Wo
    out_off = plane * Ho * Wo + offs
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
    x_plane = x_ptr + plane * H * W
    if HAS_IDENTITY:  # stride 1: the output grid is the input grid
        acc += tl.load(w_ptr + 4) * tl.load(x_plane + offs, mask=mask, other=0.0)
    if HAS_AVG or HAS_MAX:
        oi = offs // Wo
        oj = offs % Wo
        avg, mx = _pools(x_plane, oi, oj, H, W, stride, mask)
        if HAS_AVG:
            acc += tl.load(w_ptr + 5) * avg
        if HAS_MAX:
            acc += tl.load(w_ptr + 6) * mx
    tl.store(out_ptr + out_off, acc, mask=mask)


@triton.jit
def _mixed_bwd_out(
    g_ptr,  # [N*C, Ho, Wo] gradient of the output
    x_ptr,  # [N*C, H, W]
    w_ptr,  # as in _mixed_fwd
    y0, y1, y2, y3,  # parametric outputs
    gy0, gy1, gy2, gy3,  # their gradients (outputs)
    partial_ptr,  # [num_programs, MAX_YS + 3] per-program <g, candidate> sums (output)
    H, W, Ho, Wo, stride,
    NUM_YS: tl.constexpr,
    HAS_IDENTITY: tl.constexpr,
    HAS_AVG: tl.constexpr,
    HAS_MAX: tl.constexpr,
    BLOCK: tl.constexpr,
):
    plane = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    pid = plane * tl.num_programs(1) + blk
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < Ho * Wo
    off = plane * Ho * Wo + offs
    g = tl.load(g_ptr + off, mask=mask, other=0.0)
    row = partial_ptr + pid * 7
    if NUM_YS > 0:
        tl.store(gy0 + off, tl.load(w_ptr + 0) * g, mask=mask)
        tl.store(row + 0, tl.sum(g * tl.load(y0 + off, mask=mask, other=0.0)))
    if NUM_YS > 1:
        tl.store(gy1 + off, tl.load(w_ptr + 1) * g, mask=mask)
        tl.store(row + 1, tl.sum(g * tl.load(y1 + off, mask=mask, other=0.0)))
    if NUM_YS > 2:
        tl.store(gy2 + off, tl.load(w_ptr + 2) * g, mask=mask)
        tl.store(row + 2, tl.sum(g * tl.load(y2 + off, mask=mask, other=0.0)))
    if NUM_YS > 3:
        tl.store(gy3 + off, tl.load(w_ptr + 3) * g, mask=mask)
        tl.store(row + 3, tl.sum(g * tl.load(y3 + off, mask=mask, other=0.0)))
    x_plane = x_ptr + plane * H * W
    if HAS_IDENTITY:
        tl.store(row + 4, tl.sum(g * tl.load(x_plane + offs, mask=mask, other=0.0)))
    if HAS_AVG or HAS_MAX:
        avg, mx = _pools(x_plane, offs // Wo, offs % Wo, H, W, stride, mask)
        if HAS_AVG:
            tl.store(row + 5, tl.sum(g * avg))
        if HAS_MAX:
            tl.store(row + 6, tl.sum(g * mx))


@triton.jit
def _mixed_bwd_x(
    g_ptr,  # [N*C, Ho, Wo] gradient of the output
    x_ptr,  # [N*C, H, W]
    w_ptr,  # as in _mixed_fwd
    gx_ptr,  # [N*C, H, W] gradient of x (output)
    H, W, Ho, Wo, stride,
    HAS_IDENTITY: tl.constexpr,
    HAS_AVG: tl.constexpr,
    HAS_MAX: tl.constexpr,
    BLOCK: tl.constexpr,
):
    plane = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H * W
    p = offs // W
    q = offs % W
    g_plane = g_ptr + plane * Ho * Wo
    x_plane = x_ptr + plane * H * W
    acc = tl.zeros([BLOCK], dtype=gx_ptr.dtype.element_ty)
    if HAS_IDENTITY:
        acc += tl.load(w_ptr + 4) * tl.load(g_plane + offs, mask=mask, other=0.0)
    if HAS_AVG or HAS_MAX:
        w_avg = tl.load(w_ptr + 5)
        w_max = tl.load(w_ptr + 6)
        # The output windows containing (p, q) are centred at (t_r, t_c) in {p-1, p, p+1} x
        # {q-1, q, q+1} with t a multiple of the stride.
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
                go = tl.load(g_plane + oi * Wo + oj, mask=valid, other=0.0)
                if HAS_AVG:
                    rows = tl.minimum(tr + 1, H - 1) - tl.maximum(tr - 1, 0) + 1
                    cols = tl.minimum(tc + 1, W - 1) - tl.maximum(tc - 1, 0) + 1
                    area = tl.maximum(rows * cols, 1).to(acc.dtype)  # invalid lanes: any positive
                    acc += tl.where(valid, w_avg * go / area, 0.0)
                if HAS_MAX:
                    # Does (p, q) hold the first maximum of that window in scan order?
                    best = tl.full([BLOCK], float("-inf"), dtype=acc.dtype)
                    arg = tl.full([BLOCK], -1, dtype=tl.int32)
                    for er in tl.static_range(3):
                        for ec in tl.static_range(3):
                            r = tr - 1 + er
                            c = tc - 1 + ec
                            inside = valid & (r >= 0) & (r < H) & (c >= 0) & (c < W)
                            v = tl.load(x_plane + r * W + c, mask=inside, other=0.0)
                            take = inside & ((v > best) | (arg < 0))
                            best = tl.where(take, v, best)
                            arg = tl.where(take, er * 3 + ec, arg)
                    mine = valid & (arg == dr * 3 + dc)
                    acc += tl.where(mine, w_max * go, 0.0)
    tl.store(gx_ptr + plane * H * W + offs, acc, mask=mask)


def _free_weights(weights: torch.Tensor, kp: int, free_codes: list[int]) -> torch.Tensor:
    """[w_identity, w_avg, w_max] on the weights' device (repeated free ops summed)."""
    out = weights.new_zeros(3)
    for j, code in enumerate(free_codes):
        if code != ZERO:
            out[code - 1] += weights[kp + j]
    return out


def _flags(free_codes):
    return IDENTITY in free_codes, AVG in free_codes, MAX in free_codes


def mixed_op_forward(x, ys, weights, free_codes, stride):
    """out = sum_k w_k * ys[k] + free ops of x; see codesign.mixed_op."""
    x, weights = x.contiguous(), weights.contiguous()
    ys = [y.contiguous() for y in ys]
    n, c, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = x.new_empty(n, c, ho, wo)
    kp = len(ys)
    has_id, has_avg, has_max = _flags(free_codes)
    free_w = _free_weights(weights, kp, free_codes)
    grid = (n * c, triton.cdiv(ho * wo, BLOCK))
    groups = [list(range(i, min(i + MAX_YS, kp))) for i in range(0, kp, MAX_YS)] or [[]]
    for gi, group in enumerate(groups):
        first = gi == 0
        w_launch = torch.cat([weights[group] if group else weights.new_zeros(0),
                              weights.new_zeros(MAX_YS - len(group)), free_w])
        ptrs = [ys[k] for k in group] + [x] * (MAX_YS - len(group))  # unused slots: any tensor
        _mixed_fwd[grid](
            x, out, w_launch, *ptrs, h, w, ho, wo, stride,
            NUM_YS=len(group), HAS_IDENTITY=first and has_id, HAS_AVG=first and has_avg,
            HAS_MAX=first and has_max, ACCUMULATE=not first, BLOCK=BLOCK,
        )
    return out


def mixed_op_backward(grad, x, ys, weights, free_codes, stride):
    """(grad_x, grad_ys, grad_weights) of codesign.mixed_op."""
    grad, x, weights = grad.contiguous(), x.contiguous(), weights.contiguous()
    ys = [y.contiguous() for y in ys]
    n, c, h, w = x.shape
    ho, wo = grad.shape[2], grad.shape[3]
    kp = len(ys)
    has_id, has_avg, has_max = _flags(free_codes)
    free_w = _free_weights(weights, kp, free_codes)
    grad_ys = [torch.empty_like(y) for y in ys]
    grid = (n * c, triton.cdiv(ho * wo, BLOCK))
    programs = grid[0] * grid[1]
    dots = weights.new_zeros(kp + 3)  # <g, y_k>..., <g, x>, <g, avg>, <g, max>
    groups = [list(range(i, min(i + MAX_YS, kp))) for i in range(0, kp, MAX_YS)] or [[]]
    for gi, group in enumerate(groups):
        first = gi == 0
        w_launch = torch.cat([weights[group] if group else weights.new_zeros(0),
                              weights.new_zeros(MAX_YS - len(group)), free_w])
        pad = MAX_YS - len(group)
        ptrs = [ys[k] for k in group] + [x] * pad
        gptrs = [grad_ys[k] for k in group] + [x] * pad  # unused slots are never written
        partial = weights.new_zeros(programs, 7)
        _mixed_bwd_out[grid](
            grad, x, w_launch, *ptrs, *gptrs, partial, h, w, ho, wo, stride,
            NUM_YS=len(group), HAS_IDENTITY=first and has_id, HAS_AVG=first and has_avg,
            HAS_MAX=first and has_max, BLOCK=BLOCK,
        )
        sums = partial.sum(0)
        if group:
            dots[group[0] : group[-1] + 1] = sums[: len(group)]
        if first:
            dots[kp:] = sums[4:]
    grad_x = torch.empty_like(x)
    w_launch = torch.cat([weights.new_zeros(MAX_YS), free_w])
    _mixed_bwd_x[(n * c, triton.cdiv(h * w, BLOCK))](
        grad, x, w_launch, grad_x, h, w, ho, wo, stride,
        HAS_IDENTITY=has_id, HAS_AVG=has_avg, HAS_MAX=has_max, BLOCK=BLOCK,
    )
    grad_w = torch.empty_like(weights)
    grad_w[:kp] = dots[:kp]
    for j, code in enumerate(free_codes):
        grad_w[kp + j] = 0.0 if code == ZERO else dots[kp + code - 1]
    return grad_x, grad_ys, grad_w
