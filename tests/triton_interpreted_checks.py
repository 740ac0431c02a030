"""Triton kernels against the references on CPU tensors, under Triton's interpreter.

Not collected by the default run: tests/test_triton.py runs this file in a subprocess with
TRITON_INTERPRET=1, which must be set before triton is imported.
"""

from __future__ import annotations

import os

import pytest
import torch
from error_bounds import assert_gumbel_matches, assert_mixed_op_matches

import codesign
from codesign import reference

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1 before triton imports"
)

FREE = list(codesign.FREE_OPS)

# (n, c, h, w, parametric, free ops, stride, dtype): odd sizes, stride 2, every free op alone and
# together, no free ops, no parametric outputs, more outputs than one launch takes (MAX_YS = 4).
CASES = [
    (2, 3, 7, 9, 2, FREE, 1, torch.float64),
    (1, 2, 5, 6, 5, ["avg_pool_3x3", "max_pool_3x3"], 2, torch.float64),
    (2, 2, 4, 4, 0, ["max_pool_3x3"], 1, torch.float32),
    (1, 1, 1, 1, 1, ["avg_pool_3x3", "max_pool_3x3"], 2, torch.float32),
    (1, 2, 6, 5, 3, [], 1, torch.float32),
    (2, 1, 9, 3, 1, ["identity"], 1, torch.float64),
    (1, 3, 8, 8, 2, ["zero"], 2, torch.float32),
    (1, 2, 3, 7, 9, ["avg_pool_3x3", "zero", "max_pool_3x3"], 2, torch.float64),
    (3, 2, 17, 18, 1, ["avg_pool_3x3"], 1, torch.float32),
]


def _sample(n, c, h, w, kp, free, stride, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype).requires_grad_()
    ys = [torch.randn(n, c, ho, wo, generator=gen, dtype=dtype).requires_grad_() for _ in range(kp)]
    wts = torch.randn(kp + len(free), generator=gen, dtype=dtype).requires_grad_()
    return x, ys, wts


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_mixed_op_forward_and_gradients(case):
    n, c, h, w, kp, free, stride, dtype = case
    x, ys, wts = _sample(n, c, h, w, kp, free, stride, dtype, seed=sum(case[:5]))
    # Within the rounding-error bound of the dtype, against the reference in float64.
    assert_mixed_op_matches(x, ys, wts, free, stride, backend="triton")


@pytest.mark.parametrize("layout", ["nhwc", "nhwc_slice", "nchw_slice"])
@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_strided_layouts(layout, stride):
    """channels_last maps and channel slices are read through their strides; the output and the
    gradients take x's layout, as on the CPU kernel."""
    free = ["avg_pool_3x3", "max_pool_3x3"] + (["identity"] if stride == 1 else [])
    x, ys, wts = _sample(2, 3, 7, 6, 5, free, stride, torch.float64, seed=stride)
    x = x.detach()
    wide = torch.cat([x, torch.randn_like(x)], 1)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "nhwc_slice":
        x = wide.contiguous(memory_format=torch.channels_last)[:, :3]
    else:
        x = wide[:, :3]
    x.requires_grad_()
    leaves = [x, wts, *ys]
    with codesign.use_backend("triton"):
        out = codesign.mixed_op(x, ys, wts, free, stride)
    ref = reference.mixed_op(x, ys, wts, free, stride)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    nhwc = layout.startswith("nhwc")
    assert out.is_contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with codesign.use_backend("triton"):
        got = torch.autograd.grad(out, leaves, g)
    want = torch.autograd.grad(ref, leaves, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gumbel_masked_rows():
    """-inf logits (decisions with fewer options in one [decisions, max options] call) are never
    sampled and weigh exactly 0, as on the other backends."""
    logits = torch.tensor([[0.3, -1.0, float("-inf")], [1.0, 0.0, 2.0]], dtype=torch.float64, requires_grad=True)
    with codesign.use_backend("triton"):
        y, idx = codesign.gumbel_softmax(logits, 0.7, False, seed=5)
        (g,) = torch.autograd.grad((y * torch.arange(3.0, dtype=torch.float64)).sum(), logits)
    yr, idxr = reference.gumbel_softmax(logits, 0.7, False, 5)
    (gr,) = torch.autograd.grad((yr * torch.arange(3.0, dtype=torch.float64)).sum(), logits)
    torch.testing.assert_close(y, yr)
    assert torch.equal(idx, idxr) and y[0, 2] == 0
    torch.testing.assert_close(g, gr)


def test_max_pool_ties_go_to_first_maximum():
    x = torch.ones(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.ones(1, dtype=torch.float64, requires_grad=True)
    for stride in (1, 2):
        with codesign.use_backend("triton"):
            got = torch.autograd.grad(codesign.mixed_op(x, [], w, ["max_pool_3x3"], stride).sum(), x)[0]
        want = torch.autograd.grad(reference.mixed_op(x, [], w, ["max_pool_3x3"], stride).sum(), x)[0]
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("rows, cols", [(0, 4), (1, 1), (7, 3), (33, 8), (5, 70)])
@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_matches_reference_bit_for_bit_noise(rows, cols, hard, dtype):
    gen = torch.Generator().manual_seed(rows * 100 + cols)
    logits = torch.randn(rows, cols, generator=gen, dtype=dtype) * 3
    seed = 2**40 + rows
    g = torch.randn(rows, cols, generator=gen, dtype=dtype)
    # Against the float64 reference within the derived bound (error_bounds.GumbelReference); the
    # sampled index must match it exactly unless two columns are a near-tie.
    y, _ = assert_gumbel_matches(logits, 0.7, hard, seed, g, backend="triton")
    if hard and rows:
        assert set(y.detach().unique().tolist()) <= {0.0, 1.0}


def test_gumbel_extremes_stay_finite():
    logits = (torch.randn(16, 8) * 1e4).requires_grad_()
    with codesign.use_backend("triton"):
        y, _ = codesign.gumbel_softmax(logits, 1e-3, seed=5)
        (g,) = torch.autograd.grad((y * y).sum(), logits)
    assert torch.isfinite(y).all() and torch.isfinite(g).all()


def test_triton_and_cpp_draw_the_same_samples():
    # Both against the same float64 sample (same noise): indices equal but for near-ties, values
    # within the rounding-error bound.
    logits = torch.randn(64, 8, generator=torch.Generator().manual_seed(77))
    assert_gumbel_matches(logits, 0.5, False, 77, None, backend="triton")
    if codesign.backends()["cpp"]["available"]:
        assert_gumbel_matches(logits, 0.5, False, 77, None, backend="cpp")


def test_backends_report_triton_available_under_the_interpreter():
    from codesign import kernels

    assert kernels.available(torch.device("cpu")) == (True, None)
