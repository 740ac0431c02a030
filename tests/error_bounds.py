"""Rounding-error bounds for comparing codesign's fused ops with their references.

A fixed tolerance such as ``rtol=1e-4`` is right for some inputs and wrong for others: the error a
correct kernel makes grows with the conditioning of what it computes (a softmax at temperature
1e-3 multiplies the rounding error of its inputs by 1000; a sum of many terms that cancel has an
error set by the size of the terms, not of the sum). So the checks here compare a kernel's result
in its own dtype with the reference evaluated in float64 on exactly the same inputs (float32
values convert to float64 without rounding), and accept the difference when it lies within a
bound derived from the operations the computation rounds, for the kernel's precision plus the
float64 reference's own (much smaller) error.

Notation: ``eps`` is the machine epsilon of a dtype (2**-23 for float32), ``u = eps / 2`` the unit
roundoff, and gamma(n) = n u / (1 - n u) the classic worst-case bound of a sum or dot product of n
terms (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., Lemma 3.1 and eq. 3.5):
|fl(sum x_i) - sum x_i| <= gamma(n - 1) sum |x_i|, in any order of summation. The bounds hold
for any correct kernel and do not assume a summation order, so a backend that reorders its sums
(SIMD lanes, a GPU reduction tree) still passes; a wrong term, a wrong window or a wrong scale is
orders of magnitude larger than them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

import codesign
from codesign import reference

F64 = torch.float64


def eps_of(dtype: torch.dtype) -> float:
    """Machine epsilon of a floating dtype (2**-23 for float32, 2**-52 for float64)."""
    return torch.finfo(dtype).eps


def gamma(n: int | torch.Tensor, dtype: torch.dtype) -> float | torch.Tensor:
    """Higham's gamma_n = n u / (1 - n u), u = eps / 2: the relative error bound of n roundings."""
    nu = n * eps_of(dtype) / 2
    return nu / (1 - nu)


def assert_within(got: torch.Tensor, want: torch.Tensor, bound: torch.Tensor, what: str) -> None:
    """Every |got - want| <= bound (elementwise, float64); the message names the worst element."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got.detach().to(F64) - want.detach().to(F64)).abs()
    bad = ~(err <= bound)  # also catches NaN
    if bad.any():
        ratio = torch.where(bad, err / bound.clamp_min(1e-300), torch.zeros_like(err))
        flat = int(ratio.flatten().argmax())
        at = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.numel()} elements exceed their rounding-error bound; "
            f"worst at {at}: got {got.flatten()[flat].item():.9g}, float64 reference "
            f"{want.flatten()[flat].item():.9g}, |difference| {err.flatten()[flat].item():.3g} > "
            f"bound {bound.flatten()[flat].item():.3g}"
        )


# --------------------------------------------------------------------------------------------
# mixed_op
# --------------------------------------------------------------------------------------------


def _f64_leaves(x, ys, weights):
    return [t.detach().to(F64).requires_grad_() for t in (x, weights, *ys)]


def _grads(out: torch.Tensor, leaves: Sequence[torch.Tensor], g: torch.Tensor) -> list[torch.Tensor]:
    if not out.requires_grad:  # e.g. only the 'zero' op reads x
        return [torch.zeros_like(v) for v in leaves]
    got = torch.autograd.grad(out, leaves, g, allow_unused=True)
    return [torch.zeros_like(v) if a is None else a for a, v in zip(got, leaves)]


def _backend(name: str | None):
    return contextlib.nullcontext() if name is None else codesign.use_backend(name)


def assert_mixed_op_matches(
    x: torch.Tensor, ys: Sequence[torch.Tensor], weights: torch.Tensor, free_ops: Sequence[str],
    stride: int, backend: str | None = None, grad_seed: int = 1,
) -> None:
    """codesign.mixed_op and its gradients against reference.mixed_op in float64.

    Forward and backward run under ``codesign.use_backend(backend)`` when a backend is named.

    Every output element is a short sum: sum_k w_k y_k plus the free ops, each an identity, a max
    or a mean of at most 9 window elements. Its error is at most gamma(n) times the same sum taken
    over absolute values (the reference run on |x|, |ys|, |weights|), n counting every rounding on
    the way: one per term mixed in, 8 for the window sum, 4 for its 1/count scaling and 4 more for
    repeated free ops whose weights are summed first. The gradients are bounded alike: a ys
    gradient is one product; an x gradient gathers at most 9 windows per free op (the reference's
    backward with |weights| and |grad| gives its magnitude; max-pool routing depends on x only);
    a weight gradient is a dot product over all N*C*H'*W' output elements (the reference's
    backward on |x|, |ys| with |grad| gives its magnitude). Inputs with requires_grad are compared.
    """
    dtype = x.dtype
    leaves = [x, weights, *ys]
    wants_grad = [t.requires_grad for t in leaves]
    with _backend(backend):
        out = codesign.mixed_op(x, list(ys), weights, free_ops, stride)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=dtype)
        g = g.to(out.device)
        got = _grads(out, [t for t, w in zip(leaves, wants_grad) if w], g) if any(wants_grad) else []

    x64, w64, *ys64 = _f64_leaves(x, ys, weights)
    ref = reference.mixed_op(x64, ys64, w64, free_ops, stride)
    g64 = g.to(F64)
    want = _grads(ref, [x64, w64, *ys64], g64)
    # Magnitudes: the same computations over absolute values.
    ax, aw, *ays = (t.detach().abs() for t in (x64, w64, *ys64))
    mag_out = reference.mixed_op(ax, ays, aw, free_ops, stride)
    xg = x64.detach().requires_grad_()  # x's own signs, so that max-pool routes as the kernel does
    (mag_gx,) = _grads(reference.mixed_op(xg, ys64, aw, free_ops, stride), [xg], g64.abs())
    wg = w64.detach().requires_grad_()
    (mag_gw,) = _grads(reference.mixed_op(ax, ays, wg, free_ops, stride), [wg], g64.abs())
    mag_gys = [aw[k] * g64.abs() for k in range(len(ys))]

    nfree = len(free_ops)
    n_out = len(ys) + nfree + 16
    n_gx = 9 * nfree + nfree + 16
    n_gw = out.numel() + 16
    n_gys = 2

    def bound(n, mag):
        return (gamma(n, dtype) + gamma(n, F64)) * mag

    assert_within(out, ref, bound(n_out, mag_out), "output")
    names = ["x", "weights"] + [f"ys[{k}]" for k in range(len(ys))]
    bounds = [bound(n_gx, mag_gx), bound(n_gw, mag_gw)] + [bound(n_gys, m) for m in mag_gys]
    chosen = [(n, w, b) for n, w, b, keep in zip(names, want, bounds, wants_grad) if keep]
    for a, (name, w, b) in zip(got, chosen):
        assert_within(a, w, b, f"gradient of {name}")


# --------------------------------------------------------------------------------------------
# gumbel_softmax
# --------------------------------------------------------------------------------------------


class GumbelReference:
    """The exact (float64) Gumbel-softmax of float logits, with the error bounds of a kernel.

    What a kernel computes, per row: z_i = (l_i + g_i) / tau with g_i = -log(-log(u_i)), then
    y = softmax(z), and in backward grad_i = y_i (gy_i - sum_j gy_j y_j) / tau.

    Bound of z (absolute), for a kernel rounding at eps: log(u) and log(w) each carry at most
    2 eps relative error (the float32 kernels use ~1 ulp polynomials; libm is below 1 ulp), so g
    is off by at most 2 eps (1 + |g|); l + g and the scaling by 1/tau (itself rounded) add
    eps (|l| + |g|) / 2 and eps |z|. Together |dz_i| <= 4 eps (1 + |l_i| + |g_i|) / tau: the
    rounding error of the logits' scale, amplified by 1/tau. This is the conditioning issue:
    at tau = 1e-3 and |l| ~ 30, float32 gets z only to ~1e-2.

    Bound of y: softmax is shift invariant, so only the differences of the exponent errors count
    (the row maximum's own error cancels); with D_i = |dz_i| + eps |z_i - max z| / 2 (the shift),
    y_hat_i / y_i = 1 / (y_i + sum_{j != i} y_j exp(d_j - d_i)), |d_j - d_i| <= D_i + D_j, gives
    |y_hat_i - y_i| <= y_i max(N+_i / (1 + N+_i), N-_i / (y_i + sum_{j != i} y_j e^{-(D_i + D_j)}))
    with N+-_i = sum_{j != i} y_j |exp(+-(D_i + D_j)) - 1|. It is ~ y_i (1 - y_i)(D_i + D) for
    small D: zero error where the sample is one-hot, largest where two columns share the mass.
    exp, the row sum of K terms and the division add a relative (K + 4) eps. A float32 kernel may
    flush results below the smallest normal float to zero: 2 * tiny absolute.

    Bound of the gradient: from grad_i = y_i (gy_i - dot) / tau with y and dot off by the above,
    |dgrad_i| <= [Ey_i |gy_i - dot| + (y_i + Ey_i)(sum_j |gy_j| Ey_j + K eps sum_j |gy_j|
    (y_j + Ey_j))] / tau + 4 eps |grad_i| (the last for the products and the 1/tau scaling).

    Each bound is the sum of the kernel's (its dtype's eps) and the float64 reference's (eps of
    float64), doubled to cover the second-order terms the first-order steps above drop.
    """

    SAFETY = 2.0

    def __init__(self, logits: torch.Tensor, tau: float, seed: int):
        rows, cols = logits.shape
        self.dtype, self.tau, self.cols = logits.dtype, float(tau), cols
        self.l = logits.detach().cpu().to(F64)
        self.g = reference.gumbel_noise(seed, rows, cols, F64, "cpu")
        self.z = (self.l + self.g) / self.tau
        self.y = torch.softmax(self.z, dim=-1)
        self.index = self.y.argmax(dim=-1) if rows else torch.zeros(0, dtype=torch.long)

    def _dz(self, eps: float) -> torch.Tensor:
        return 4 * eps * (1 + self.l.abs() + self.g.abs()) / self.tau

    def _y_bound_at(self, eps: float, tiny: float) -> torch.Tensor:
        y = self.y
        if y.numel() == 0:
            return y.clone()
        zmax = self.z.max(dim=-1, keepdim=True).values
        d = self._dz(eps) + eps / 2 * (self.z - zmax).abs()
        pair = (d[:, :, None] + d[:, None, :]).clamp(max=700.0)  # [R, i, j]
        off = ~torch.eye(self.cols, dtype=torch.bool)
        yj = y[:, None, :] * off
        n_plus = (yj * torch.expm1(pair)).sum(-1)
        n_minus = (yj * -torch.expm1(-pair)).sum(-1)
        low = y + (yj * torch.exp(-pair)).sum(-1)
        ratio = torch.maximum(n_plus / (1 + n_plus), n_minus / low)
        rho = (self.cols + 4) * eps
        return (y * ((1 + ratio) * (1 + rho) - 1)).clamp(max=1.0) + 2 * tiny

    def y_bound(self) -> torch.Tensor:
        """Bound of |y_kernel - y| for the soft sample."""
        tiny = torch.finfo(self.dtype).tiny
        return self.SAFETY * (self._y_bound_at(eps_of(self.dtype), tiny) + self._y_bound_at(eps_of(F64), 0.0))

    def grad(self, grad_y: torch.Tensor) -> torch.Tensor:
        """Exact gradient of the soft sample for the upstream gradient grad_y."""
        gy = grad_y.detach().cpu().to(F64)
        dot = (gy * self.y).sum(-1, keepdim=True)
        return self.y * (gy - dot) / self.tau

    def grad_bound(self, grad_y: torch.Tensor) -> torch.Tensor:
        """Bound of |grad_kernel - grad| for the upstream gradient grad_y."""
        gy = grad_y.detach().cpu().to(F64)
        y, agy = self.y, gy.abs()
        dot = (gy * y).sum(-1, keepdim=True)
        exact = y * (gy - dot) / self.tau
        total = torch.zeros_like(y)
        for dtype in (self.dtype, F64):
            eps = eps_of(dtype)
            ey = self._y_bound_at(eps, torch.finfo(dtype).tiny if dtype == self.dtype else 0.0)
            dot_err = (agy * ey).sum(-1, keepdim=True) + self.cols * eps * (agy * (y + ey)).sum(-1, keepdim=True)
            total += (ey * (gy - dot).abs() + (y + ey) * dot_err) / self.tau + 4 * eps * exact.abs()
        return self.SAFETY * total

    def near_tie(self, rows: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Whether z[rows, i] and z[rows, j] are closer than z's rounding error (either may win)."""
        dz = self.SAFETY * (self._dz(eps_of(self.dtype)) + self._dz(eps_of(F64)))
        return (self.z[rows, i] - self.z[rows, j]).abs() <= dz[rows, i] + dz[rows, j]


def assert_gumbel_matches(
    logits: torch.Tensor, tau: float, hard: bool, seed: int, grad_y: torch.Tensor | None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """codesign.gumbel_softmax and its gradient against the float64 reference; (y, index).

    The sampled index must be the reference's, except on rows where the two columns are a
    near-tie (closer than z's rounding error). A hard sample must be exactly one-hot at the index
    it returns; a soft one within the bound of GumbelReference. grad_y (or None to skip) is the
    upstream gradient; hard samples pass the soft sample's gradient straight through. Forward
    and backward run under ``codesign.use_backend(backend)`` when a backend is named.
    """
    leaf = logits.detach().requires_grad_()
    with _backend(backend):
        y, index = codesign.gumbel_softmax(leaf, tau, hard, seed=seed)
    ref = GumbelReference(logits, tau, seed)
    assert torch.isfinite(y).all(), "non-finite sample"
    assert index.shape == ref.index.shape and index.dtype == torch.long
    idx = index.cpu()
    differ = idx != ref.index
    if differ.any():
        rows = differ.nonzero()[:, 0]
        tied = ref.near_tie(rows, idx[rows], ref.index[rows])
        assert tied.all(), f"sampled index differs from the reference on rows {rows[~tied].tolist()} (no near-tie)"
    if hard:
        one_hot = torch.zeros_like(y).scatter_(-1, index[:, None], 1.0)
        assert torch.equal(y.detach(), one_hot), "hard sample is not one-hot at the returned index"
    else:
        assert_within(y.cpu(), ref.y, ref.y_bound(), "soft sample")
    if grad_y is not None and logits.shape[0]:
        with _backend(backend):
            (a,) = torch.autograd.grad(y, leaf, grad_y.to(y.device))
        assert torch.isfinite(a).all(), "non-finite gradient"
        assert_within(a.cpu(), ref.grad(grad_y), ref.grad_bound(grad_y), "gradient")
    return y, index
