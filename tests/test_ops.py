"""The fused ops against their references: values, gradients, opcheck, compile, edge cases."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from error_bounds import assert_gumbel_matches, assert_mixed_op_matches
from hypothesis import example, given, settings
from hypothesis import strategies as st

import codesign
from codesign import reference

FREE = list(codesign.FREE_OPS)
needs_cpp = pytest.mark.skipif(
    not codesign.backends()["cpp"]["available"], reason="codesign._C is not built"
)


def sample_mixed(n, c, h, w, kp, free, stride, dtype=torch.float32, seed=0, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    ys = [torch.randn(n, c, ho, wo, generator=gen, dtype=dtype) for _ in range(kp)]
    wts = torch.randn(kp + len(free), generator=gen, dtype=dtype)
    if requires_grad:
        for t in (x, wts, *ys):
            t.requires_grad_()
    return x, ys, wts


free_subsets = st.lists(st.sampled_from(FREE), min_size=0, max_size=4, unique=True)


@needs_cpp
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 4),
    h=st.integers(1, 11),
    w=st.integers(1, 11),
    kp=st.integers(0, 3),
    free=free_subsets,
    stride=st.sampled_from([1, 2]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_mixed_op_matches_reference(n, c, h, w, kp, free, stride, dtype, seed):
    if stride != 1 and "identity" in free:
        free = [f for f in free if f != "identity"]
    if kp == 0 and not free:
        kp = 1
    x, ys, wts = sample_mixed(n, c, h, w, kp, free, stride, dtype, seed)
    # Within the rounding-error bound of the dtype, against the reference in float64.
    assert_mixed_op_matches(x, ys, wts, free, stride)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(
    "free", [[], ["zero"], ["identity"], ["avg_pool_3x3"], ["max_pool_3x3"], FREE]
)
def test_mixed_op_gradcheck_float64(free, stride):
    if stride == 2 and "identity" in free:
        free = [f for f in free if f != "identity"]
    x, ys, w = sample_mixed(2, 2, 5, 7, 2, free, stride, torch.float64)
    assert torch.autograd.gradcheck(
        lambda x, w, *ys: codesign.mixed_op(x, list(ys), w, free, stride), (x, w, *ys)
    )


def test_mixed_op_repeated_free_ops_and_no_parametric():
    free = ["avg_pool_3x3", "max_pool_3x3", "avg_pool_3x3", "zero"]
    x, ys, w = sample_mixed(2, 3, 6, 6, 0, free, 2, torch.float64)
    assert_mixed_op_matches(x, ys, w, free, 2)


def test_mixed_op_odd_sizes_stride2_and_single_pixel():
    for h, w in [(1, 1), (3, 5), (7, 1), (9, 9)]:
        x, ys, wts = sample_mixed(1, 2, h, w, 1, ["avg_pool_3x3", "max_pool_3x3"], 2, torch.float64)
        assert_mixed_op_matches(x, ys, wts, ["avg_pool_3x3", "max_pool_3x3"], 2)


def test_mixed_op_max_pool_ties_route_to_first_maximum():
    # A constant plane: every window is a tie, torch routes to the first element in scan order.
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.ones(1, dtype=torch.float64, requires_grad=True)
    assert_mixed_op_matches(x, [], w, ["max_pool_3x3"], 1)


@needs_cpp
@settings(max_examples=30, deadline=None)
@given(
    c=st.integers(1, 4), h=st.integers(1, 7), w=st.integers(1, 7), levels=st.integers(1, 3),
    stride=st.sampled_from([1, 2]), layout=st.sampled_from(["nchw", "nhwc", "nhwc_slice"]),
    seed=st.integers(0, 2**16),
)
def test_mixed_op_max_pool_partial_ties_route_like_torch(c, h, w, levels, stride, layout, seed):
    """Maps of a few integer levels tie in many windows, some rows and columns only: the gradient
    goes where torch's max_pool2d sends it (the first maximum in scan order), in every layout."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (2, c, h, w), generator=gen).to(torch.float64)
    x = _in_layout(x, layout).requires_grad_()
    wts = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    free = ["max_pool_3x3", "avg_pool_3x3"]
    assert_mixed_op_matches(x, [], wts, free, stride)


def test_mixed_op_non_contiguous_inputs():
    x, ys, w = sample_mixed(2, 3, 8, 8, 2, FREE, 1, torch.float64, requires_grad=False)
    xt = x.transpose(2, 3).requires_grad_()  # non-contiguous
    yst = [y.transpose(2, 3).requires_grad_() for y in ys]
    assert not xt.is_contiguous()
    assert_mixed_op_matches(xt, yst, w.requires_grad_(), FREE, 1)


def test_mixed_op_partial_requires_grad():
    x, ys, w = sample_mixed(2, 2, 6, 6, 2, FREE, 1, torch.float64, requires_grad=False)
    w.requires_grad_()
    assert_mixed_op_matches(x, ys, w, FREE, 1)  # only the weights' gradient is asked for


@needs_cpp
@settings(max_examples=30, deadline=None)
@given(
    c=st.integers(1, 5),
    h=st.integers(1, 9),
    kp=st.integers(1, 3),
    free=free_subsets,
    stride=st.sampled_from([1, 2]),
    nhwc=st.booleans(),
    ys_grad=st.lists(st.booleans(), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_mixed_op_without_a_weight_gradient(c, h, kp, free, stride, nhwc, ys_grad, seed):
    """Weights that need no gradient (a supernet's weight step): x's and the candidates'
    gradients are still right, and the candidates' outputs are not kept for backward (only
    <grad, y_k> read them)."""
    if stride != 1:
        free = [f for f in free if f != "identity"]
    x, ys, w = sample_mixed(2, c, h, h + 1, kp, free, stride, torch.float64, seed, requires_grad=False)
    if nhwc:
        x, ys = x.contiguous(memory_format=torch.channels_last), [
            y.contiguous(memory_format=torch.channels_last) for y in ys]
    x.requires_grad_()
    for y, want in zip(ys, ys_grad):
        y.requires_grad_(want)
    assert_mixed_op_matches(x, ys, w, free, stride)
    kept: list = []

    def pack(t):
        kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        codesign.mixed_op(x, ys, w, free, stride)
    assert not any(t.data_ptr() == y.data_ptr() for t in kept for y in ys)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.update(ys=[a["ys"][0], a["ys"][1][:, :, :3]]), "ys[1] has shape"),
        (lambda a: a.update(free_ops=["conv_3x3"]), "unknown free op 'conv_3x3'"),
        (lambda a: a.update(weights=a["weights"][:2]), "weights must have shape (5,)"),
        (lambda a: a.update(x=a["x"][0]), "x must be a 4-D tensor"),
        (lambda a: a.update(stride=0), "stride must be a positive int"),
        (lambda a: a.update(ys=[], free_ops=[], weights=torch.zeros(0)), "nothing to mix"),
        (lambda a: a.update(free_ops="avg_pool_3x3"), "sequence of names"),
        (lambda a: a.update(ys=[a["ys"][0].double(), a["ys"][1]]), "ys[0] is torch.float64"),
        (lambda a: a.update(weights=a["weights"].double()), "weights is torch.float64"),
    ],
)
def test_mixed_op_errors_name_the_offending_argument(mutate, message):
    x, ys, w = sample_mixed(2, 3, 8, 8, 2, ["identity", "avg_pool_3x3", "max_pool_3x3"], 1)
    args = {"x": x, "ys": ys, "weights": w, "free_ops": ["identity", "avg_pool_3x3", "max_pool_3x3"], "stride": 1}
    mutate(args)
    with pytest.raises((ValueError, TypeError)) as err:
        codesign.mixed_op(**args)
    assert message in str(err.value)


def test_identity_needs_stride_one():
    x, ys, w = sample_mixed(1, 1, 4, 4, 0, ["identity"], 2)
    with pytest.raises(ValueError, match="'identity' needs stride 1"):
        codesign.mixed_op(x, ys, w, ["identity"], 2)


@needs_cpp
def test_mixed_op_opcheck():
    x, ys, w = sample_mixed(2, 3, 6, 6, 2, FREE, 1, torch.float64)
    codes = [FREE.index(f) for f in FREE]
    torch.library.opcheck(torch.ops.codesign.mixed_op.default, (x, ys, w, codes, 1))
    x, ys, w = sample_mixed(2, 3, 7, 5, 1, ["avg_pool_3x3", "max_pool_3x3"], 2, torch.float32)
    torch.library.opcheck(torch.ops.codesign.mixed_op.default, (x, ys, w, [2, 3], 2))


@needs_cpp
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_mixed_op_eager_path_equals_the_custom_op(layout):
    """Eager CPU calls take a plain autograd.Function (less dispatch); the custom op, which
    torch.compile and opcheck see, must give the very same values and gradients, with only some
    candidates needing a gradient too."""
    x, ys, w = sample_mixed(2, 3, 6, 5, 3, FREE, 1, torch.float64, requires_grad=False)
    if layout == "nhwc":
        x, ys = _in_layout(x, "nhwc"), [_in_layout(y, "nhwc") for y in ys]
    codes = [FREE.index(f) for f in FREE]
    for wanted in ([True, True, True], [False, True, False]):
        leaves = [x.clone().requires_grad_(), w.clone().requires_grad_()]
        yl = [y.clone().requires_grad_(want) for y, want in zip(ys, wanted)]
        eager = codesign.mixed_op(leaves[0], yl, leaves[1], FREE)
        assert eager.grad_fn is not None and "MixedCpp" in type(eager.grad_fn).__name__
        op = torch.ops.codesign.mixed_op(leaves[0], yl, leaves[1], codes, 1)
        assert torch.equal(eager, op)
        g = torch.randn_like(eager)
        inputs = leaves + [y for y in yl if y.requires_grad]
        for a, b in zip(torch.autograd.grad(eager, inputs, g), torch.autograd.grad(op, inputs, g)):
            assert torch.equal(a, b)


def test_mixed_op_compiles_fullgraph():
    x, ys, w = sample_mixed(2, 3, 6, 6, 2, FREE, 1, torch.float32)

    def edge(x, y0, y1, w):
        return codesign.mixed_op(x, [y0, y1], torch.softmax(w, 0), FREE).relu()

    compiled = torch.compile(edge, fullgraph=True, backend="aot_eager")
    out = compiled(x, *ys, w)
    ref = edge(x, *ys, w)
    torch.testing.assert_close(out, ref)
    g1 = torch.autograd.grad(out.sum(), [x, w])
    g2 = torch.autograd.grad(ref.sum(), [x, w])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def _in_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values in one of the memory layouts the kernels read without copying."""
    if layout == "nhwc":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "nhwc_slice":  # channels [0, C) of a channels_last map of 2C channels
        wide = torch.cat([t, torch.zeros_like(t)], 1).contiguous(memory_format=torch.channels_last)
        return wide[:, : t.shape[1]]
    if layout == "nchw_slice":
        return torch.cat([torch.zeros_like(t), t], 1)[:, t.shape[1]:]
    if layout == "transposed":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t.contiguous()


LAYOUTS = ["nchw", "nhwc", "nhwc_slice", "nchw_slice", "transposed"]


@needs_cpp
@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3), c=st.integers(2, 5), h=st.integers(1, 9), w=st.integers(1, 9), kp=st.integers(0, 5),
    free=free_subsets, stride=st.sampled_from([1, 2]), layout=st.sampled_from(LAYOUTS),
    y_layout=st.sampled_from(["nchw", "nhwc"]), seed=st.integers(0, 2**16),
)
def test_mixed_op_every_layout_matches_reference(n, c, h, w, kp, free, stride, layout, y_layout, seed):
    """channels_last maps, channel slices and other strides: the same numbers as the reference,
    in float64, with the output in x's layout."""
    if stride != 1:
        free = [f for f in free if f != "identity"]
    if kp == 0 and not free:
        kp = 1
    x, ys, wts = sample_mixed(n, c, h, w, kp, free, stride, torch.float64, seed, requires_grad=False)
    x = _in_layout(x, layout).requires_grad_()
    ys = [_in_layout(y, y_layout).requires_grad_() for y in ys]
    wts.requires_grad_()
    assert_mixed_op_matches(x, ys, wts, free, stride)
    out = codesign.mixed_op(x, ys, wts, free, stride)
    nhwc = layout.startswith("nhwc")
    assert out.is_contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


@needs_cpp
def test_mixed_op_channels_last_gradcheck_float64():
    x, ys, w = sample_mixed(2, 3, 5, 6, 2, FREE, 1, torch.float64, requires_grad=False)
    x = _in_layout(x, "nhwc_slice").requires_grad_()
    ys = [y.contiguous(memory_format=torch.channels_last).requires_grad_() for y in ys]
    assert torch.autograd.gradcheck(lambda x, w, *ys: codesign.mixed_op(x, list(ys), w, FREE, 1),
                                    (x, w.requires_grad_(), *ys))


@needs_cpp
def test_mixed_op_opcheck_channels_last():
    x, ys, w = sample_mixed(2, 3, 6, 6, 2, FREE, 1, torch.float64)
    x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    ys = [y.detach().contiguous(memory_format=torch.channels_last).requires_grad_() for y in ys]
    torch.library.opcheck(torch.ops.codesign.mixed_op.default, (x, ys, w, [0, 1, 2, 3], 1))


@needs_cpp
def test_kernel_outputs_come_from_recycled_buffers():
    """The C++ kernels' outputs reuse buffers freed by earlier steps, never one still in use."""
    from codesign.ops import buffer_pool

    x, ys, w = sample_mixed(2, 3, 8, 8, 2, FREE, 1, requires_grad=False)
    codesign.mixed_op(x, ys, w, FREE)  # warm-up: one buffer of this size exists and is idle
    before = buffer_pool()
    outs = [codesign.mixed_op(x, ys, w, FREE) for _ in range(3)]  # all alive: need 3 buffers
    assert len({o.data_ptr() for o in outs}) == 3
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0])
    del outs
    for _ in range(5):
        codesign.mixed_op(x, ys, w, FREE)
    after = buffer_pool()
    assert after["fresh"] - before["fresh"] <= 2  # the 3 live ones at most, then only reuse
    assert after["reused"] - before["reused"] >= 5
    assert buffer_pool(0)["idle_bytes"] == 0  # a zero limit frees what is kept
    buffer_pool(512 << 20)
    with pytest.raises(ValueError, match="limit_bytes must be an int >= 0"):
        buffer_pool(-1)


# --------------------------------------------------------------------------------------------
# depthwise_conv2d and batch_norm_relu (the fused supernet's channels_last kernels)
# --------------------------------------------------------------------------------------------

DW_CASES = [  # n, c, h, w, k, stride, padding, dilation
    (2, 3, 7, 9, 3, 1, 1, 1), (2, 4, 8, 8, 5, 2, 2, 1), (1, 5, 9, 6, 3, 1, 2, 2), (3, 2, 5, 5, 5, 1, 4, 2),
    (2, 8, 8, 8, 3, 2, 1, 1), (1, 3, 4, 4, 1, 1, 0, 1), (1, 2, 3, 3, 3, 1, 0, 1), (2, 3, 6, 5, 2, 2, 1, 1),
]


@needs_cpp
@pytest.mark.parametrize("case", DW_CASES, ids=[str(c) for c in DW_CASES])
@pytest.mark.parametrize("layout", ["nhwc", "nhwc_slice"])
def test_depthwise_conv_matches_torch(case, layout):
    n, c, h, w, k, stride, padding, dilation = case
    gen = torch.Generator().manual_seed(sum(case))
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x = _in_layout(torch.randn(n, c, h, w, generator=gen, dtype=dtype), layout).requires_grad_()
        wt = torch.randn(c, 1, k, k, generator=gen, dtype=dtype, requires_grad=True)
        out = codesign.ops.depthwise_conv2d(x, wt, stride, padding, dilation)
        ref = torch.nn.functional.conv2d(x, wt, None, stride, padding, dilation, c)
        torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
        g = torch.randn(ref.shape, generator=gen, dtype=dtype)
        for a, b in zip(torch.autograd.grad(out, [x, wt], g), torch.autograd.grad(ref, [x, wt], g)):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@needs_cpp
def test_depthwise_conv_gradcheck_float64():
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    for stride, padding, dilation in ((1, 1, 1), (2, 2, 2)):
        assert torch.autograd.gradcheck(
            lambda x, w, conv=(stride, padding, dilation): codesign.ops.depthwise_conv2d(x, w, *conv), (x, w))


def test_depthwise_conv_errors_and_torch_fallback():
    x = torch.randn(2, 3, 6, 6)
    w = torch.randn(3, 1, 3, 3)
    torch.testing.assert_close(codesign.ops.depthwise_conv2d(x, w, 1, 1), torch.nn.functional.conv2d(x, w, None, 1, 1, 1, 3))
    with pytest.raises(ValueError, match=r"weight must be \[C=3, 1, K, K\]"):
        codesign.ops.depthwise_conv2d(x, torch.randn(4, 1, 3, 3))
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        codesign.ops.depthwise_conv2d(x, w, 0)
    with pytest.raises(ValueError, match="does not fit"):
        codesign.ops.depthwise_conv2d(x, torch.randn(3, 1, 9, 9))


def _bn_pair(c, dtype, momentum=0.1):
    a = torch.nn.BatchNorm2d(c, momentum=momentum).to(dtype)
    with torch.no_grad():
        a.weight.uniform_(0.5, 2.0)
        a.bias.uniform_(-1.0, 1.0)
        a.running_var.uniform_(0.5, 2.0)
    b = torch.nn.BatchNorm2d(c, momentum=momentum).to(dtype)
    b.load_state_dict(a.state_dict())
    return a, b


@needs_cpp
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (4, 8, 8, 8), (3, 16, 5, 5), (2, 1, 3, 3)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None, 0.0])
def test_batch_norm_relu_matches_torch_module(shape, relu, momentum):
    """Output, gradients, running statistics and batch count as BatchNorm2d (+ ReLU) in training."""
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        fused, plain = _bn_pair(shape[1], dtype, momentum)
        for _step in range(2):
            x = (3 * torch.randn(shape, dtype=dtype) + 1).contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            out = codesign.ops.batch_norm_relu(x, fused, relu)
            ref = plain(x)
            ref = ref.relu() if relu else ref
            torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
            g = torch.randn(shape, dtype=dtype)
            got = torch.autograd.grad(out, [x, fused.weight, fused.bias], g)
            want = torch.autograd.grad(ref, [x, plain.weight, plain.bias], g)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=tol, atol=tol)
            for k, v in plain.state_dict().items():
                torch.testing.assert_close(fused.state_dict()[k], v, rtol=tol, atol=tol, msg=k)


@needs_cpp
@pytest.mark.parametrize("mean, std", [(1000.0, 0.05), (-3e4, 1.0), (1e6, 10.0), (0.0, 1e-3)])
def test_batch_norm_statistics_keep_float32_accuracy_far_from_zero(mean, std):
    """One pass over shifted data: maps whose mean is far larger than their spread normalise as
    accurately as torch's own batch norm does, measured against float64."""
    gen = torch.Generator().manual_seed(0)
    x = (mean + std * torch.randn(4, 8, 8, 8, generator=gen)).contiguous(memory_format=torch.channels_last)
    fused, plain = _bn_pair(8, torch.float32)
    out, ref = codesign.ops.batch_norm_relu(x, fused, False), plain(x)
    x64 = x.double()
    m, v = x64.mean((0, 2, 3), keepdim=True), x64.var((0, 2, 3), unbiased=False, keepdim=True)
    truth = (x64 - m) / torch.sqrt(v + plain.eps) * plain.weight.double().reshape(1, -1, 1, 1) \
        + plain.bias.double().reshape(1, -1, 1, 1)
    err, torch_err = ((t.double() - truth).abs().max().item() for t in (out, ref))
    assert err <= max(torch_err, 1e-6)


@needs_cpp
def test_batch_norm_relu_gradcheck_float64():
    bn = torch.nn.BatchNorm2d(3).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    # y = 0 exactly has no derivative: keep the ReLU's inputs away from it
    with torch.no_grad():
        bn.bias.fill_(0.05)
    assert torch.autograd.gradcheck(lambda x, w, b: codesign.ops.batch_norm_relu(x, bn, True), (x, bn.weight, bn.bias))


def _saved_storages(fn, *args) -> set[int]:
    ptrs: set[int] = set()

    def pack(t):
        ptrs.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return out, ptrs


@needs_cpp
@pytest.mark.parametrize("gamma, beta, from_output", [
    ((1.5, -0.7, 0.3), (0.2, 1.0, -2.0), True),      # the normalised input comes back from y
    ((1e-3, 1.0, 2.0), (1.0, 0.0, 0.0), False),     # |beta| > 100 |gamma|: y - beta loses precision
    ((0.0, 1.0, 2.0), (0.0, 0.0, 0.0), False),      # gamma 0: xhat cannot come back at all
])
def test_batch_norm_without_relu_keeps_its_output_where_it_can(gamma, beta, from_output):
    """Without a ReLU the kernel keeps its output (which the next op keeps anyway) instead of its
    input, and computes backward from it (xhat = (y - beta) / gamma), unless gamma is too close
    to zero for that; the gradients are torch's in both cases, gradcheck included."""
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
    plain = torch.nn.BatchNorm2d(3).double()
    plain.load_state_dict(bn.state_dict())
    x = (2 * torch.randn(4, 3, 5, 6, dtype=torch.float64) + 1).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out, saved = _saved_storages(lambda t: codesign.ops.batch_norm_relu(t, bn, False), x)
    assert (x.untyped_storage().data_ptr() in saved) is not from_output
    assert (out.untyped_storage().data_ptr() in saved) is from_output
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, bn.weight, bn.bias], g)
    want = torch.autograd.grad(plain(x), [x, plain.weight, plain.bias], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    bn.momentum = 0.0
    assert torch.autograd.gradcheck(lambda t, w, b: codesign.ops.batch_norm_relu(t, bn, False),
                                    (x, bn.weight, bn.bias))


def test_batch_norm_relu_outside_training_is_the_module():
    bn = torch.nn.BatchNorm2d(3).eval()
    x = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(codesign.ops.batch_norm_relu(x, bn, True), bn(x).relu())


# --------------------------------------------------------------------------------------------
# gumbel_softmax
# --------------------------------------------------------------------------------------------


@needs_cpp
@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(0, 40),
    cols=st.integers(1, 70),
    tau=st.sampled_from([1e-3, 0.1, 0.5, 1.0, 5.0]),
    hard=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**63 - 1),
    scale=st.sampled_from([1.0, 10.0, 1e4]),
)
# At tau = 1e-3 the softmax's Jacobian scales with 1/tau: a few ulps between the kernel's
# polynomial exp/log and torch's made a 1e-3 gradient difference here, beyond a fixed float32
# tolerance. Compared with the float64 reference, it lies within the derived bound.
@example(rows=5, cols=22, tau=1e-3, hard=False, dtype=torch.float32, seed=172, scale=10.0)
def test_gumbel_matches_reference(rows, cols, tau, hard, dtype, seed, scale):
    gen = torch.Generator().manual_seed(seed % 2**32)
    logits = torch.randn(rows, cols, generator=gen, dtype=dtype) * scale
    g = torch.randn(rows, cols, generator=gen, dtype=dtype)
    # Against the reference in float64, within a bound that follows the conditioning: the
    # rounding error of (logits + noise) amplified by 1/tau, then by how evenly the softmax
    # spreads its mass (see error_bounds.GumbelReference). Indices must agree except on
    # near-ties closer than that error.
    assert_gumbel_matches(logits, tau, hard, seed, g)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_gumbel_masked_options_are_never_sampled(backend):
    """Rows of different option counts in one call: -inf pads are never drawn, weigh exactly 0,
    get no gradient, and the options of a row are sampled from the softmax over the row's own."""
    def masked_logits(rows):
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-float("inf"))

    alphas = [torch.randn(k, dtype=torch.float64, requires_grad=True) for k in (2, 5, 3, 5)]
    logits = masked_logits(alphas)
    assert logits.shape == (4, 5) and torch.isinf(logits[0, 2:]).all() and torch.isinf(logits[2, 3:]).all()
    with codesign.use_backend(backend):
        for hard in (False, True):
            y, index = codesign.gumbel_softmax(masked_logits(alphas), 0.5, hard, seed=11)
            for d, a in enumerate(alphas):
                assert index[d] < len(a)
                assert (y[d, len(a):] == 0).all()
            grads = torch.autograd.grad((y * torch.randn_like(y)).sum(), alphas)
            assert all(torch.isfinite(g).all() for g in grads)
        y, _ = codesign.gumbel_softmax(logits, 0.5, False, seed=11)
    g = reference.gumbel_noise(11, 4, 5, torch.float64, "cpu")
    for d, a in enumerate(alphas):  # the valid part: softmax over the row's own options
        k = len(a)
        torch.testing.assert_close(y[d, :k], torch.softmax((a + g[d, :k]) / 0.5, 0))
    counts = torch.zeros(2)
    two = masked_logits([torch.tensor([0.0, 1.0]), torch.zeros(5)])
    for seed in range(400):
        counts[int(codesign.gumbel_softmax(two, 1.0, True, seed=seed)[1][0])] += 1
    p = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    assert abs(counts[1] / 400 - p[1]) < 0.08  # 4 standard deviations


def test_gumbel_gradcheck_float64():
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: codesign.gumbel_softmax(t, 0.7, seed=5)[0], (logits,))


def test_gumbel_hard_is_one_hot_with_straight_through_gradient():
    logits = torch.randn(50, 7, dtype=torch.float64, requires_grad=True)
    y, idx = codesign.gumbel_softmax(logits, 0.5, hard=True, seed=11)
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    assert (y.sum(1) == 1).all()
    assert torch.equal(y.argmax(1), idx)
    ysoft, _ = codesign.gumbel_softmax(logits, 0.5, hard=False, seed=11)
    assert torch.equal(ysoft.argmax(1), idx)
    g = torch.randn(50, 7, dtype=torch.float64)
    (hard_grad,) = torch.autograd.grad(y, logits, g)
    (soft_grad,) = torch.autograd.grad(ysoft, logits, g)
    torch.testing.assert_close(hard_grad, soft_grad)


def test_gumbel_samples_follow_softmax_chi_square():
    # Gumbel-max theorem: argmax(logits + g) ~ Categorical(softmax(logits)).
    from scipy.stats import chisquare

    probs = torch.tensor([0.05, 0.1, 0.15, 0.3, 0.4], dtype=torch.float64)
    rows = 200_000
    logits = probs.log().expand(rows, -1).contiguous()
    _, idx = codesign.gumbel_softmax(logits, 1.0, seed=1234)
    counts = torch.bincount(idx, minlength=5).numpy()
    assert chisquare(counts, (probs * rows).numpy()).pvalue > 1e-3


def test_gumbel_extremes_never_nan():
    for tau in (1e-3, 1e-6, 1.0, 1e3):
        for scale in (1e4, -1e4):
            logits = (torch.randn(64, 8) * scale).requires_grad_()
            y, _ = codesign.gumbel_softmax(logits, tau, hard=False, seed=3)
            (g,) = torch.autograd.grad(y.sum() + (y * y).sum(), logits)
            assert torch.isfinite(y).all() and torch.isfinite(g).all()


def test_gumbel_uniforms_stay_open_interval():
    u = reference.uniform_noise(7, 1000, 64)
    assert (u > 0).all() and (u < 1).all()
    assert reference.uniform_noise(7, 1000, 64).tobytes() == u.tobytes()


def test_gumbel_k1_and_r0():
    y, idx = codesign.gumbel_softmax(torch.randn(5, 1), seed=0)
    assert torch.equal(y, torch.ones(5, 1)) and torch.equal(idx, torch.zeros(5, dtype=torch.long))
    y, idx = codesign.gumbel_softmax(torch.randn(0, 4), seed=0)
    assert y.shape == (0, 4) and idx.shape == (0,)


def test_gumbel_seed_none_follows_torch_manual_seed():
    logits = torch.randn(20, 6)
    torch.manual_seed(42)
    a = codesign.gumbel_softmax(logits)[1]
    torch.manual_seed(42)
    b = codesign.gumbel_softmax(logits)[1]
    assert torch.equal(a, b)


@needs_cpp
def test_gumbel_same_sample_whatever_the_thread_count():
    script = (
        "import torch, codesign, hashlib;"
        "l = torch.randn(5000, 9, generator=torch.Generator().manual_seed(0));"
        "y, i = codesign.gumbel_softmax(l, 0.3, seed=99);"
        "print(hashlib.sha256(y.numpy().tobytes() + i.numpy().tobytes()).hexdigest())"
    )
    digests = set()
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


@needs_cpp
def test_philox_matches_reference_generator():
    from codesign import _C

    for seed, c0, c1 in itertools.product([0, 1, 2**40 + 7], [0, 5, 2**32 - 1], [0, 3]):
        words = reference.philox4x32_10(seed, np.array([c0]), np.array([c1]))
        assert _C.philox4x32_10(seed, c0, c1) == [int(w[0]) for w in words]
    # Known-answer test of Philox-4x32-10 (Random123's kat_vectors: counter 0, key 0).
    assert _C.philox4x32_10(0, 0, 0) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"logits": torch.randn(5)}, "logits must be a 2-D tensor"),
        ({"logits": torch.randn(3, 0)}, "K = 0"),
        ({"logits": torch.randn(3, 4), "tau": 0.0}, "tau must be a positive number"),
        ({"logits": torch.randn(3, 4), "seed": -1}, "seed must be an int"),
        ({"logits": torch.ones(3, 4, dtype=torch.long)}, "floating point"),
    ],
)
def test_gumbel_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        codesign.gumbel_softmax(**kwargs)


@needs_cpp
def test_gumbel_opcheck():
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(
        torch.ops.codesign.gumbel_softmax.default, (logits, 0.5, False, torch.tensor(3))
    )


def test_gumbel_compiles_fullgraph():
    logits = torch.randn(8, 5, requires_grad=True)

    def sample(t):
        y, idx = codesign.gumbel_softmax(t * 2, tau=0.5, hard=True, seed=7)
        return y * 3, idx

    compiled = torch.compile(sample, fullgraph=True, backend="aot_eager")
    (y, i), (yr, ir) = compiled(logits), sample(logits)
    torch.testing.assert_close(y, yr)
    assert torch.equal(i, ir)


# --------------------------------------------------------------------------------------------
# backends and dispatch
# --------------------------------------------------------------------------------------------


def test_backends_report_every_backend_with_a_reason():
    info = codesign.backends()
    assert set(info) == {"cpp", "triton", "reference"}
    for row in info.values():
        assert isinstance(row["available"], bool)
        assert (row["reason"] is None) == row["available"]


def test_reference_backend_bypasses_the_custom_op():
    x, ys, w = sample_mixed(1, 2, 4, 4, 1, ["avg_pool_3x3"], 1)
    with codesign.use_backend("reference"):
        assert codesign.current_backend() == "reference"
        out = codesign.mixed_op(x, ys, w, ["avg_pool_3x3"])
    assert "MulBackward" in type(out.grad_fn).__name__ or "AddBackward" in type(out.grad_fn).__name__
    assert codesign.current_backend() == "auto"


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        with codesign.use_backend("gpu"):
            pass


def test_other_dtypes_fall_back_to_reference_math():
    x, ys, w = sample_mixed(1, 2, 5, 5, 1, FREE, 1, torch.float64)
    xb, ysb, wb = (x.detach().bfloat16(), [y.detach().bfloat16() for y in ys], w.detach().bfloat16())
    out = codesign.mixed_op(xb, ysb, wb, FREE)
    torch.testing.assert_close(out, reference.mixed_op(xb, ysb, wb, FREE))
