"""Triton kernels of codesign.gumbel_softmax (forward and backward).

The noise is the one every codesign backend draws (see codesign.reference.uniform_noise): element
(r, c) has flat counter n = r*K + c, Philox-4x32-10 runs on counter n // 4 (tl.randint4x with an
int64 offset: low word c0, high word c1) and lane n % 4 is kept. Backward regenerates it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.random import uint_to_uniform_float

U_MIN = 1.1754944e-38  # smallest normal float32: log(u) stays finite
U_MAX = 0.99999994  # 1 - 2**-24: -log(u) stays > 0


@triton.jit
def _soft_sample(
    logits_ptr,  # [R, K] logits, row-major
    seed,  # key of the generator (int < 2**63)
    inv_tau,  # 1 / temperature
    R,
    K,
    row0,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = row0 + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_K)
    mask = (rows[:, None] < R) & (cols[None, :] < K)
    n = rows[:, None].to(tl.int64) * K + cols[None, :]
    w0, w1, w2, w3 = tl.randint4x(seed, n // 4)
    lane = n % 4
    word = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))
    u = uint_to_uniform_float(word)
    u = tl.minimum(tl.maximum(u, U_MIN), U_MAX)
    logits = tl.load(logits_ptr + n, mask=mask, other=0.0)
    u = u.to(logits.dtype)
    g = -tl.log(-tl.log(u))
    z = (logits + g) * inv_tau
    z = tl.where(mask, z, float("-inf"))
    zmax = tl.max(z, axis=1)
    zmax = tl.where(zmax == float("-inf"), 0.0, zmax)  # rows past R: keep the lanes finite
    e = tl.where(mask, tl.exp(z - zmax[:, None]), 0.0)
    total = tl.sum(e, axis=1)
    y = e / tl.where(total == 0.0, 1.0, total)[:, None]
    return y, z, n, mask, rows, cols


@triton.jit
def _gumbel_fwd(
    logits_ptr,  # [R, K] input logits
    y_ptr,  # [R, K] output sample
    index_ptr,  # [R] int64 output: sampled column
    seed,
    inv_tau,
    R,
    K,
    HARD: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    row0 = tl.program_id(0) * BLOCK_R
    y, z, n, mask, rows, cols = _soft_sample(logits_ptr, seed, inv_tau, R, K, row0, BLOCK_R, BLOCK_K)
    idx = tl.argmax(z, axis=1, tie_break_left=True)
    if HARD:
        y = tl.where(cols[None, :] == idx[:, None], 1.0, 0.0).to(y.dtype)
    tl.store(y_ptr + n, y, mask=mask)
    tl.store(index_ptr + rows, idx.to(tl.int64), mask=rows < R)


@triton.jit
def _gumbel_bwd(
    grad_y_ptr,  # [R, K] gradient of the (soft or straight-through) sample
    logits_ptr,  # [R, K] logits of the forward pass
    grad_logits_ptr,  # [R, K] output
    seed,
    inv_tau,
    R,
    K,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    row0 = tl.program_id(0) * BLOCK_R
    y, z, n, mask, rows, cols = _soft_sample(logits_ptr, seed, inv_tau, R, K, row0, BLOCK_R, BLOCK_K)
    gy = tl.load(grad_y_ptr + n, mask=mask, other=0.0)
    dot = tl.sum(gy * y, axis=1)
    tl.store(grad_logits_ptr + n, y * (gy - dot[:, None]) * inv_tau, mask=mask)


def _blocks(k: int) -> tuple[int, int]:
    block_k = triton.next_power_of_2(max(k, 1))
    block_r = max(1, min(128, 4096 // block_k))
    return block_r, block_k


def gumbel_softmax_forward(logits: torch.Tensor, tau: float, hard: bool, seed: int):
    """(y, index) for logits [R, K] on the GPU (or on the CPU under TRITON_INTERPRET=1)."""
    logits = logits.contiguous()
    rows, cols = logits.shape
    y = torch.empty_like(logits)
    index = torch.empty(rows, dtype=torch.long, device=logits.device)
    if rows == 0:
        return y, index
    block_r, block_k = _blocks(cols)
    grid = (triton.cdiv(rows, block_r),)
    _gumbel_fwd[grid](logits, y, index, seed, 1.0 / tau, rows, cols, HARD=bool(hard), BLOCK_R=block_r, BLOCK_K=block_k)
    return y, index


def gumbel_softmax_backward(grad_y: torch.Tensor, logits: torch.Tensor, tau: float, seed: int):
    """Gradient of the soft sample with respect to the logits."""
    grad_y, logits = grad_y.contiguous(), logits.contiguous()
    rows, cols = logits.shape
    grad = torch.empty_like(logits)
    if rows == 0:
        return grad
    block_r, block_k = _blocks(cols)
    grid = (triton.cdiv(rows, block_r),)
    _gumbel_bwd[grid](grad_y, logits, grad, seed, 1.0 / tau, rows, cols, BLOCK_R=block_r, BLOCK_K=block_k)
    return grad
