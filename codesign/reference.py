"""Plain-PyTorch references of codesign's fused ops.

They define what the fused kernels compute: tests compare every backend against them, and
``codesign.use_backend("reference")`` runs them instead of the kernels (ordinary autograd, every
intermediate stored), which is also the eager baseline of ``benchmarks/kernels.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

FREE_OPS = ("zero", "identity", "avg_pool_3x3", "max_pool_3x3")

_PHILOX_ROUND_A = np.uint64(0xD2511F53)
_PHILOX_ROUND_B = np.uint64(0xCD9E8D57)
_PHILOX_KEY_A = np.uint64(0x9E3779B9)
_PHILOX_KEY_B = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
# Uniforms are clamped into the open interval (0, 1): smallest normal float, 1 - 2**-24.
U_MIN = np.float32(1.1754944e-38)
U_MAX = np.float32(0.99999994)


def free_op(name: str, x: torch.Tensor, stride: int) -> torch.Tensor:
    """One parameter-free candidate of a DARTS edge applied to x [N, C, H, W]."""
    if name == "zero":
        h = (x.shape[2] - 1) // stride + 1
        w = (x.shape[3] - 1) // stride + 1
        return x.new_zeros(x.shape[0], x.shape[1], h, w)
    if name == "identity":
        return x
    if name == "avg_pool_3x3":
        return F.avg_pool2d(x, 3, stride=stride, padding=1, count_include_pad=False)
    if name == "max_pool_3x3":
        return F.max_pool2d(x, 3, stride=stride, padding=1)
    raise ValueError(f"unknown free op {name!r}; choose from {', '.join(FREE_OPS)}")


def mixed_op(
    x: torch.Tensor,
    ys: Sequence[torch.Tensor],
    weights: torch.Tensor,
    free_ops: Sequence[str] = (),
    stride: int = 1,
) -> torch.Tensor:
    """out = sum_k weights[k] * ys[k] + sum_j weights[len(ys) + j] * free_op_j(x)."""
    out = None
    for k, y in enumerate(ys):
        term = weights[k] * y
        out = term if out is None else out + term
    for j, name in enumerate(free_ops):
        term = weights[len(ys) + j] * free_op(name, x, stride)
        out = term if out is None else out + term
    return out


def philox4x32_10(seed: int, c0: np.ndarray, c1: np.ndarray) -> tuple[np.ndarray, ...]:
    """Philox-4x32-10 on counters (c0, c1, 0, 0) with key = seed; four uint32 words per counter."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    k0 = np.uint64(seed & 0xFFFFFFFF)
    k1 = np.uint64(seed >> 32)
    x0 = np.asarray(c0, dtype=np.uint64) & _MASK32
    x1 = np.asarray(c1, dtype=np.uint64) & _MASK32
    x2 = np.zeros_like(x0)
    x3 = np.zeros_like(x0)
    for _ in range(10):
        p0, p2 = x0, x2
        prod_b = _PHILOX_ROUND_B * p2
        prod_a = _PHILOX_ROUND_A * p0
        x0 = (prod_b >> np.uint64(32)) ^ x1 ^ k0
        x2 = (prod_a >> np.uint64(32)) ^ x3 ^ k1
        x1 = prod_b & _MASK32
        x3 = prod_a & _MASK32
        k0 = (k0 + _PHILOX_KEY_A) & _MASK32
        k1 = (k1 + _PHILOX_KEY_B) & _MASK32
    return tuple(v.astype(np.uint32) for v in (x0, x1, x2, x3))


def uniform_noise(seed: int, rows: int, cols: int) -> np.ndarray:
    """The uniforms u in (0, 1) that every backend draws for logits of shape [rows, cols].

    Element (r, c) has flat counter n = r*cols + c; Philox runs on counter n // 4 (low and high
    32-bit words) and lane n % 4 is mapped to [0, 1) as Triton's uint_to_uniform_float does.
    """
    n = np.arange(rows * cols, dtype=np.uint64)
    q = n >> np.uint64(2)
    words = np.stack(philox4x32_10(seed, q & _MASK32, q >> np.uint64(32)), axis=0)
    lane = (n & np.uint64(3)).astype(np.int64)
    w = words[lane, np.arange(n.size)].view(np.int32).astype(np.int64)
    w = np.where(w < 0, -w - 1, w)
    u = w.astype(np.float32) * np.float32(4.6566127342e-10)
    return np.clip(u, U_MIN, U_MAX).reshape(rows, cols)


def gumbel_noise(seed: int, rows: int, cols: int, dtype: torch.dtype, device) -> torch.Tensor:
    """g = -log(-log(u)) for the uniforms of :func:`uniform_noise`."""
    u = torch.from_numpy(uniform_noise(seed, rows, cols)).to(device=device, dtype=dtype)
    return -torch.log(-torch.log(u))


def gumbel_softmax(
    logits: torch.Tensor, tau: float = 1.0, hard: bool = False, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax((logits + g) / tau) with the noise of :func:`gumbel_noise`; (y, index)."""
    rows, cols = logits.shape
    g = gumbel_noise(seed, rows, cols, logits.dtype, logits.device)
    y_soft = torch.softmax((logits + g) / tau, dim=-1)
    index = y_soft.argmax(dim=-1) if rows else torch.zeros(0, dtype=torch.long, device=logits.device)
    if not hard:
        return y_soft, index
    y_hard = torch.zeros_like(y_soft).scatter_(-1, index[:, None], 1.0)
    return y_hard - y_soft.detach() + y_soft, index
