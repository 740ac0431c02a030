"""ONNX graph front end: kernels and TVM's fusion rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from codesign.errors import CodesignError
from codesign.graph import module_kernels, onnx_kernels
from codesign.kernelspec import KernelSpec

K = KernelSpec.make


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16)

    def forward(self, x):
        return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + x)


def test_fusion_rules_on_a_small_cnn():
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU6(), Residual(), nn.MaxPool2d(3, 2, 1),
        nn.AvgPool2d(3, 1, 1, count_include_pad=False), nn.Hardswish(), nn.Conv2d(16, 8, 1, stride=2),
        nn.Sigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10), nn.ReLU(),
    )
    assert module_kernels(net, (1, 3, 32, 32)) == [
        K("conv2d", (1, 3, 32, 32), out_channels=16, kernel=3, bias=True, activation="relu6"),
        K("conv2d", (1, 16, 32, 32), out_channels=16, kernel=3, bias=True, activation="relu"),
        K("conv2d", (1, 16, 32, 32), out_channels=16, kernel=3, groups=16, bias=True, residual=True, activation="relu"),
        K("max_pool2d", (1, 16, 32, 32), kernel=3, stride=2, padding=1),
        K("avg_pool2d", (1, 16, 16, 16), kernel=3, padding=1),  # with the HardSwish fused
        K("conv2d", (1, 16, 16, 16), out_channels=8, kernel=1, stride=2, padding=0, bias=True, activation="sigmoid"),
        K("global_avg_pool2d", (1, 8, 8, 8)),
        K("dense", (1, 8), out_features=10, activation="relu", weight_kn=True),
    ]


def test_same_padding_is_one_key():
    assert K("conv2d", (1, 4, 8, 8), out_channels=4, kernel=3, padding=1) == K(
        "conv2d", (1, 4, 8, 8), out_channels=4, kernel=3
    )


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 4)

    def forward(self, x):
        return self.lstm(x)[0]


def test_unsupported_op_is_named_with_the_supported_list(tmp_path):
    with pytest.raises(CodesignError, match=r"ONNX op LSTM .*no kernel builder; supported: .*Conv"):
        module_kernels(WithLSTM(), (2, 1, 4))
    assert module_kernels(WithLSTM(), (2, 1, 4), allow_partial=True) == []


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CodesignError, match="no ONNX file"):
        onnx_kernels(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(CodesignError, match="not a readable ONNX model"):
        onnx_kernels(bad)


def test_profile_cli_takes_onnx_models(tmp_path):
    import subprocess
    import sys

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2))
    path = tmp_path / "net.onnx"
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17)
    out = subprocess.run(
        [sys.executable, "-m", "codesign.cli", "profile", "--onnx", str(path), str(path), "--repeats", "2",
         "--min-repeat-ms", "1", "--db", str(tmp_path / "p.sqlite"), "--schedule", "untuned"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "2 kernels on cpu-local [untuned]: 2 measured" in out.stdout


class ChannelShuffle(nn.Module):
    """A ShuffleNetV2-like unit: chunk, branch, concat, channel shuffle."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.pw = nn.Conv2d(8, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        a, b = x.chunk(2, dim=1)
        x = torch.cat((a, torch.relu(self.dw(self.pw(b)))), dim=1)
        n, c, h, w = x.shape
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w).mean((2, 3))


def test_shape_arithmetic_is_folded_away():
    from codesign.graph import export_onnx, fold_constants

    model = export_onnx(ChannelShuffle(), (1, 3, 16, 16))
    assert "Div" in {n.op_type for n in model.graph.node}  # chunk's shape arithmetic
    folded = {n.op_type for n in fold_constants(model).graph.node}
    assert folded.isdisjoint({"Shape", "Gather", "Div", "Constant"})
    assert module_kernels(ChannelShuffle(), (1, 3, 16, 16)) == [
        K("conv2d", (1, 3, 16, 16), out_channels=16, kernel=3, bias=True, activation="relu"),
        K("conv2d", (1, 8, 16, 16), out_channels=8, kernel=1, padding=0, bias=True),
        K("conv2d", (1, 8, 16, 16), out_channels=8, kernel=3, groups=8, bias=True, activation="relu"),
        K("global_avg_pool2d", (1, 16, 16, 16)),
    ]


class _PoolSum(nn.Module):
    """A cell node: pool + conv branch + skip summed, then a BN feeding a pool (DARTS/NB201-like)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):  # (N, 8, H, W)
        y = nn.functional.max_pool2d(x, 3, 1, 1) + self.conv(torch.relu(x)) + x
        return nn.functional.avg_pool2d(self.bn(y), 3, 1, 1) + y


@pytest.mark.parametrize("which", ["small_cnn", "cell", "nb201", "mobilenet"])
def test_kernels_are_the_ones_tvm_fuses(which):
    """The fusion rules against Relax's own FuseOps: as many kernels, the same conv and pool count."""
    import random

    from codesign.graph import export_onnx
    from codesign.profile.measure import tvm_kernels

    torch.manual_seed(0)
    if which == "small_cnn":
        net, shape = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU6(), Residual(), nn.MaxPool2d(3, 2, 1),
                                   nn.AvgPool2d(3, 1, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                   nn.Linear(16, 10)), (1, 3, 16, 16)
    elif which == "cell":
        net, shape = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _PoolSum(), nn.ReLU()), (1, 3, 16, 16)
    else:
        from codesign.spaces import create_space

        space = create_space(which)
        net, shape = space.build(space.sample(random.Random(1))), space.input_shape
    model = export_onnx(net, shape)
    ours, theirs = onnx_kernels(model), tvm_kernels(model)
    assert len(ours) == len(theirs), ([k.key() for k in ours], theirs)
    assert sum(k.op == "conv2d" for k in ours) == sum("conv2d" in t for t in theirs)
    assert sum(k.op.endswith("pool2d") for k in ours) == sum("pool2d" in t or t == "mean" for t in theirs)


class _SqueezeExcite(nn.Module):
    """MobileNetV3/EfficientNet block: depthwise conv + SiLU, squeeze-and-excitation, projection."""

    def __init__(self, c=16):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1)
        self.proj = nn.Conv2d(c, 8, 1)

    def forward(self, x):
        y = nn.functional.silu(self.dw(x))
        s = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        return self.proj(y * s)


def test_squeeze_excitation_silu_and_hardsigmoid():
    assert module_kernels(_SqueezeExcite(), (1, 16, 8, 8)) == [
        K("conv2d", (1, 16, 8, 8), out_channels=16, kernel=3, groups=16, bias=True, activation="silu"),
        K("global_avg_pool2d", (1, 16, 8, 8)),
        K("conv2d", (1, 16, 1, 1), out_channels=4, kernel=1, padding=0, bias=True, activation="relu"),
        K("conv2d", (1, 4, 1, 1), out_channels=16, kernel=1, padding=0, bias=True, activation="hardsigmoid"),
        K("mul", (1, 16, 8, 8), broadcast=True),
        K("conv2d", (1, 16, 8, 8), out_channels=8, kernel=1, padding=0, bias=True),
    ]


class _Attention(nn.Module):
    """A pre-norm transformer block on (1, T, D) tokens, written as ViT's encoder does."""

    def __init__(self, d=16, heads=2):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp1, self.mlp2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x):  # (1, T, D)
        t, d = x.shape[1], x.shape[2]
        q, k, v = self.qkv(self.ln1(x)).reshape(1, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (1, H, T, T)
        x = x + self.out((a @ v).transpose(1, 2).reshape(1, t, d))
        return x + self.mlp2(nn.functional.gelu(self.mlp1(self.ln2(x))))


def test_transformer_block_tokens_attention_and_gelu():
    ks = module_kernels(_Attention(), (1, 5, 16))
    assert ks == [
        K("layer_norm", (5, 16)),
        K("dense", (5, 16), out_features=48, weight_kn=True),
        K("batch_matmul", (2, 5, 8), n=5),
        K("softmax", (10, 5)),
        K("batch_matmul", (2, 5, 5), n=8),
        K("dense", (5, 16), out_features=16, residual=True, weight_kn=True),
        K("layer_norm", (5, 16)),
        K("dense", (5, 16), out_features=64, activation="gelu", weight_kn=True),
        K("dense", (5, 64), out_features=16, residual=True, weight_kn=True),
    ]


def test_ceil_mode_pools_and_lrn():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                        nn.AvgPool2d(2, 2, ceil_mode=True), nn.Hardsigmoid())
    ks = module_kernels(net, (1, 3, 16, 16))
    assert ks == [
        K("conv2d", (1, 3, 16, 16), out_channels=8, kernel=3, padding=0, bias=True, activation="relu"),
        K("max_pool2d", (1, 8, 14, 14), kernel=3, stride=2, ceil_mode=True),
        K("avg_pool2d", (1, 8, 7, 7), kernel=2, stride=2, ceil_mode=True, count_include_pad=True),  # + Hardsigmoid
    ]
    # torch writes LocalResponseNorm as a decomposition; Caffe-converted AlexNet/GoogLeNet carry
    # ONNX's own LRN node.
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("LRN", ["x"], ["y"], size=5, alpha=1e-4, beta=0.75, bias=1.0), helper.make_node("Relu", ["y"], ["z"])],
        "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 7, 7])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 7, 7])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert onnx_kernels(model) == [K("lrn", (1, 8, 7, 7), size=5), K("relu", (1, 8, 7, 7))]
    # ceil mode: ONNX/PyTorch's rule, window starting inside the input or its left padding
    for size, k, s, p in ((14, 3, 2, 0), (7, 2, 2, 0), (15, 3, 2, 1), (8, 3, 3, 1), (5, 2, 2, 1)):
        want = nn.MaxPool2d(k, s, p, ceil_mode=True)(torch.zeros(1, 1, size, size)).shape[2]
        assert K("max_pool2d", (1, 1, size, size), kernel=k, stride=s, padding=p, ceil_mode=True).output_shape()[2] == want


def test_other_clip_and_hardsigmoid_are_refused():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.clamp(x, -1.0, 1.0)

    with pytest.raises(CodesignError, match=r"Clip .*only Clip\(0, 6\)"):
        module_kernels(Odd(), (1, 2, 4, 4))


_NEW_OPS = [
    K("silu", (1, 4, 5, 5)), K("gelu", (3, 7)), K("hardsigmoid", (1, 4, 5, 5)),
    K("max_pool2d", (1, 3, 9, 9), kernel=3, stride=2, ceil_mode=True),
    K("avg_pool2d", (1, 3, 8, 8), kernel=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
    K("lrn", (1, 6, 4, 4), size=5), K("softmax", (6, 9)), K("layer_norm", (5, 12), activation="gelu"),
    K("batch_matmul", (2, 3, 4), n=5), K("mul", (1, 4, 3, 3), broadcast=True),
    K("dense", (3, 8), out_features=4, residual=True, activation="relu"),
    K("conv2d", (1, 4, 6, 6), out_channels=4, kernel=3, bias=True, activation="silu"),
    K("conv2d", (1, 4, 9, 7), out_channels=6, kernel=1, kernel_w=5, padding_w=1, bias=True, activation="tanh"),
    K("conv2d", (1, 4, 9, 7), out_channels=4, kernel=3, kernel_w=1, stride=2, groups=4),
    K("tanh", (2, 3, 5)), K("l2_normalize", (6, 9)),
    K("dense", (3, 8), out_features=5, activation="gelu", weight_kn=True),
    K("resize2d", (1, 3, 5, 6), out_h=10, out_w=12), K("resize2d", (1, 3, 5, 6), out_h=10, out_w=12, method="linear"),
    K("resize2d", (1, 3, 5, 6), out_h=20, out_w=24, method="cubic"), K("leaky_relu", (1, 4, 5, 5)),
    K("instance_norm", (6, 10)),
    K("conv2d_transpose", (1, 4, 5, 5), out_channels=6, kernel=3, stride=2, padding=1, output_padding=1, groups=2,
      bias=True, activation="relu"),
]


@pytest.mark.parametrize("spec", _NEW_OPS, ids=lambda s: s.key())
def test_builders_compute_what_torch_computes(spec):
    """Each kernel's TVM builder against PyTorch on the same inputs."""
    import numpy as np
    import torch.nn.functional as F
    import tvm

    from codesign.profile.builders import build, random_args

    built = build(spec)
    args = random_args(built.arg_shapes, seed=1)
    mod = tvm.compile(built.func, target=tvm.target.Target({"kind": "llvm", "num-cores": 1})).jit()
    tensors = [tvm.runtime.tensor(a) for a in args]
    mod["main"](*tensors)
    got = tensors[-1].numpy()
    t = [torch.from_numpy(a) for a in args[:-1]]
    x = t[0]
    if spec.op in ("silu", "gelu", "hardsigmoid"):
        want = {"silu": F.silu, "gelu": F.gelu, "hardsigmoid": F.hardsigmoid}[spec.op](x)
    elif spec.op == "max_pool2d":
        want = F.max_pool2d(x, 3, 2, 0, ceil_mode=True)
    elif spec.op == "avg_pool2d":
        want = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    elif spec.op == "lrn":
        want = F.local_response_norm(x, 5)
    elif spec.op == "softmax":
        want = torch.softmax(x, -1)
    elif spec.op == "layer_norm":
        want = F.gelu(F.layer_norm(x, (12,), t[1], t[2]))
    elif spec.op == "batch_matmul":
        want = torch.bmm(x, t[1])
    elif spec.op == "mul":
        want = x * t[1]
    elif spec.op == "dense" and spec.attr("weight_kn"):
        want = F.gelu(x @ t[1] + t[2])
    elif spec.op == "dense":
        want = F.relu(F.linear(x, t[1], t[2]) + t[3])
    elif spec.op == "tanh":
        want = torch.tanh(x)
    elif spec.op == "l2_normalize":
        want = F.normalize(x, dim=-1)
    elif spec.op == "leaky_relu":
        want = F.leaky_relu(x)
    elif spec.op == "instance_norm":
        want = F.instance_norm(x.unsqueeze(0), weight=t[1], bias=t[2]).squeeze(0)
    elif spec.op == "conv2d_transpose":
        want = F.relu(F.conv_transpose2d(x, t[1], t[2], 2, 1, 1, 2))
    elif spec.op == "resize2d":  # torch's Upsample and F.interpolate, as they export to ONNX Resize
        mode = {"nearest": "nearest", "linear": "bilinear", "cubic": "bicubic"}[spec.attr("method")]
        kw = {} if mode == "nearest" else {"align_corners": False}
        want = F.interpolate(x, size=spec.output_shape()[2:], mode=mode, **kw)
    elif spec.kernel_hw() == (1, 5):
        want = torch.tanh(F.conv2d(x, t[1], t[2], 1, (0, 1)))
    elif spec.kernel_hw() == (3, 1):
        want = F.conv2d(x, t[1], None, 2, (1, 0), groups=4)
    else:
        want = F.silu(F.conv2d(x, t[1], t[2], 1, 1))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
    assert got.shape == spec.output_shape()


def test_new_patterns_are_the_kernels_tvm_fuses():
    """SE blocks, SiLU and ceil-mode pools against Relax's FuseOps."""
    from codesign.graph import export_onnx
    from codesign.profile.measure import tvm_kernels

    model = export_onnx(nn.Sequential(nn.Conv2d(3, 8, 3), nn.SiLU(), nn.MaxPool2d(3, 2, ceil_mode=True)), (1, 3, 12, 12))
    ours, theirs = onnx_kernels(model), tvm_kernels(model)
    assert len(ours) == len(theirs) == 2, ([k.key() for k in ours], theirs)
    # TVM fuses the squeeze-and-excitation multiply into the 1x1 conv that computes the scale;
    # codesign costs it as that conv plus a broadcast multiply (the same pass over the tensor):
    # one kernel more than TVM per SE block (docs/predict.md).
    model = export_onnx(_SqueezeExcite(), (1, 16, 8, 8))
    ours, theirs = onnx_kernels(model), tvm_kernels(model)
    assert len(ours) == len(theirs) + 1, ([k.key() for k in ours], theirs)
    assert any("conv2d" in t and "multiply" in t for t in theirs)



class _Windows(nn.Module):
    """What Swin, Swin-v2, MaxViT and Inception-v3 add to a CNN: rectangular convs, window padding
    computed from the input's shape, cosine attention (F.normalize), attention as an einsum, tanh."""

    def __init__(self, d=8, window=3):
        super().__init__()
        self.wide, self.tall = nn.Conv2d(4, d, (1, 5), padding=(0, 2)), nn.Conv2d(d, d, (5, 1), padding=(2, 0))
        self.qk, self.head = nn.Linear(d, 2 * d), nn.Linear(d, 3)
        self.window = window

    def forward(self, x):  # (1, 4, H, W)
        x = torch.relu(self.tall(torch.relu(self.wide(x)))).permute(0, 2, 3, 1)  # (1, H, W, D)
        h, w = x.shape[1], x.shape[2]
        x = nn.functional.pad(x, (0, 0, 0, (self.window - w % self.window) % self.window,
                                  0, (self.window - h % self.window) % self.window))
        t = x.reshape(1, -1, self.window * self.window, x.shape[-1])  # (1, windows, tokens, D)
        q, k = self.qk(t).chunk(2, dim=-1)
        q, k = nn.functional.normalize(q, dim=-1), nn.functional.normalize(k, dim=-1)
        a = torch.einsum("bgid,bgjd->bgij", q, k).softmax(-1)
        return torch.tanh(self.head(torch.einsum("bgij,bgjd->bgid", a, t).mean((1, 2))))


def test_window_attention_and_rectangular_convs_read():
    ks = module_kernels(_Windows(), (1, 4, 7, 8))
    assert ks == [
        K("conv2d", (1, 4, 7, 8), out_channels=8, kernel=1, kernel_w=5, bias=True, activation="relu"),
        K("conv2d", (1, 8, 7, 8), out_channels=8, kernel=5, kernel_w=1, bias=True, activation="relu"),
        K("dense", (81, 8), out_features=16, weight_kn=True),  # 9 windows of 3x3 tokens (7x8 padded to 9x9)
        K("l2_normalize", (81, 8)),  # + the clip and division F.normalize adds
        K("l2_normalize", (81, 8)),
        K("batch_matmul", (9, 9, 8), n=9),
        K("softmax", (81, 9)),
        K("batch_matmul", (9, 9, 9), n=8),
        K("global_avg_pool2d", (1, 8, 81, 1)),  # the mean over windows and tokens
        K("dense", (1, 8), out_features=3, activation="tanh", weight_kn=True),
    ]
    assert ks[0].output_shape() == (1, 8, 7, 8) and ks[0].padding_hw() == (0, 2)


def test_rectangular_windows_have_one_key_and_their_geometry():
    assert K("conv2d", (1, 4, 9, 9), out_channels=4, kernel=3, kernel_w=3, padding_w=1) == K(
        "conv2d", (1, 4, 9, 9), out_channels=4, kernel=3)
    wide = K("conv2d", (1, 4, 17, 17), out_channels=4, kernel=1, kernel_w=7, padding=0, padding_w=3)
    assert wide.key() == "conv2d|1x4x17x17|kernel=1,kernel_w=7,out_channels=4"
    assert KernelSpec.from_key(wide.key()) == wide and wide.output_shape() == (1, 4, 17, 17)
    valid = K("conv2d", (1, 4, 17, 17), out_channels=4, kernel=1, kernel_w=7, padding_w=0)
    assert valid.output_shape() == (1, 4, 17, 11)
    from codesign.kernelspec import kernel_flops

    assert kernel_flops(wide) == 2 * 4 * 17 * 17 * 4 * 7
    for bad in ({"kernel_w": -2}, {"padding_w": -3}):
        with pytest.raises(CodesignError, match="must be > 0"):
            K("conv2d", (1, 4, 9, 9), out_channels=4, kernel=3, **bad)


def test_torch_transformer_layers_export_without_their_fast_path():
    """nn.TransformerEncoderLayer in eval mode takes a fused path with no ONNX form; the export
    turns it off (and back on) so that the layer reads as attention and dense kernels."""
    layer = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 1)
    assert torch.backends.mha.get_fastpath_enabled()
    ks = module_kernels(layer, (1, 16, 32))
    assert torch.backends.mha.get_fastpath_enabled()
    assert [k.op for k in ks] == ["dense", "batch_matmul", "softmax", "batch_matmul", "dense", "layer_norm", "dense",
                                  "dense", "layer_norm"]
    assert ks[1] == K("batch_matmul", (4, 16, 8), n=16) and ks[6].attr("activation") == "relu"


def test_convolutions_of_other_ranks_are_one_clear_error():
    with pytest.raises(CodesignError, match="only 1-D and 2-D convolutions are supported, got a 3-D one"):
        module_kernels(nn.Conv3d(3, 8, 3), (1, 3, 6, 6, 6))
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 1, 1])], "c",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, [2, 2, 3, 3], [0.1] * 36)])
    with pytest.raises(CodesignError, match=r"asymmetric padding \[0, 1, 1, 1\] is not supported"):
        onnx_kernels(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_reductions_take_their_axes_from_an_input_at_opset_18():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def model(nodes, inits=()):
        graph = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    last = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    assert onnx_kernels(model([helper.make_node("ReduceMean", ["x", "axes"], ["y"])], [last])) == [
        K("global_avg_pool2d", (1, 4, 6, 1))]
    assert onnx_kernels(model([helper.make_node("ReduceL2", ["x", "axes"], ["n"]),
                               helper.make_node("Div", ["x", "n"], ["y"])], [last])) == [K("l2_normalize", (4, 6))]
    middle = numpy_helper.from_array(np.array([1], np.int64), "axes")  # F.normalize(x, dim=1): 6 norms of 4
    assert onnx_kernels(model([helper.make_node("ReduceL2", ["x", "axes"], ["n"]),
                               helper.make_node("Div", ["x", "n"], ["y"])], [middle])) == [K("l2_normalize", (6, 4))]
    with pytest.raises(CodesignError, match="ReduceL2 .*only a norm over one axis"):
        onnx_kernels(model([helper.make_node("ReduceL2", ["x"], ["y"])]))


def test_weight_standardisation_is_no_kernel_whether_or_not_the_weight_is_made():
    """NF-ResNets standardise their conv weights in the graph; TVM folds that before anything
    runs. Weights stored as unmade fills (architecture-only files) must read the same."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def model(out_channels, on_input=False):
        shape = numpy_helper.from_array(np.array([out_channels, 64, 3, 3], np.int64), "wshape")
        axes = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")
        eps = numpy_helper.from_array(np.array(1e-5, np.float32), "eps")
        src = "x" if on_input else "w"
        nodes = [helper.make_node("ConstantOfShape", ["wshape"], ["w"],
                                  value=numpy_helper.from_array(np.array([0.01], np.float32))),
                 helper.make_node("ReduceMean", [src, "axes"], ["m"], keepdims=1),
                 helper.make_node("Sub", [src, "m"], ["c"]),
                 helper.make_node("Mul", ["c", "c"], ["sq"]),
                 helper.make_node("ReduceMean", ["sq", "axes"], ["v"], keepdims=1),
                 helper.make_node("Add", ["v", "eps"], ["ve"]),
                 helper.make_node("Sqrt", ["ve"], ["sd"]),
                 helper.make_node("Div", ["c", "sd"], ["ws"])]
        nodes.append(helper.make_node("Conv", ["ws", "w"] if on_input else ["x", "ws"], ["y"], pads=[1, 1, 1, 1]))
        graph = helper.make_graph(nodes, "ws", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape, axes, eps])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    conv = K("conv2d", (1, 64, 8, 8), out_channels=128, kernel=3, padding=1)
    assert onnx_kernels(model(128)) == [conv]  # 73,728 weights: left unmade, the chain still static
    assert onnx_kernels(model(16)) == [K("conv2d", (1, 64, 8, 8), out_channels=16, kernel=3, padding=1)]  # folded
    # the same arithmetic on the activation runs in the network
    assert len(onnx_kernels(model(64, on_input=True))) > 1


def test_einsums_that_are_not_a_matrix_product_are_refused():
    from onnx import TensorProto, helper

    def einsum(eq, a, b):
        graph = helper.make_graph(
            [helper.make_node("Einsum", ["x", "y"], ["z"], equation=eq)], "e",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, a), helper.make_tensor_value_info("y", TensorProto.FLOAT, b)],
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
        return onnx_kernels(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))

    assert einsum("bik,bkj->bij", [2, 3, 4], [2, 4, 5]) == [K("batch_matmul", (2, 3, 4), n=5)]
    assert einsum("ik,jk->ij", [3, 4], [5, 4]) == [K("batch_matmul", (1, 3, 4), n=5)]
    assert einsum("bik,bkj->bji", [2, 3, 4], [2, 4, 5]) == [K("batch_matmul", (2, 3, 4), n=5)]  # written transposed
    # MViTv2's relative positions: per h, rows b*y*w against k columns
    assert einsum("byhwc,hkc->byhwk", [1, 2, 3, 4, 8], [3, 5, 8]) == [K("batch_matmul", (3, 8, 8), n=5)]
    for eq, a, b in (("bij,bij->bij", [2, 3, 3], [2, 3, 3]), ("bi,bj->bij", [2, 3], [2, 4]), ("ik,jl->ij", [2, 3], [4, 5]),
                     ("...ik,...kj->...ij", [2, 3, 4], [2, 4, 5])):
        with pytest.raises(CodesignError, match="Einsum .*only a batched matrix product"):
            einsum(eq, a, b)


class _OlderOpsets(nn.Module):
    """What exporters write differently below opset 17 (LayerNorm) and 14 (HardSwish)."""

    def __init__(self):
        super().__init__()
        self.conv, self.dw = nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.ln, self.fc, self.act = nn.LayerNorm(16), nn.Linear(16, 32), nn.Hardswish()

    def forward(self, x):  # (1, 3, H, W)
        y = self.dw(self.act(self.conv(x))).permute(0, 2, 3, 1)  # ConvNeXt's channels-last norm
        y = self.fc(self.ln(y)) - y.mean(-1, keepdim=True)  # a broadcast difference: rides along
        return self.act(y).mean((1, 2))


@pytest.mark.parametrize("opset", [13, 14, 16])
def test_older_opsets_read_into_the_same_kernels(opset):
    import io
    import warnings

    import onnx

    def export(version):
        buf = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_OlderOpsets().eval(), (torch.zeros(1, 3, 16, 16),), buf, dynamo=False,
                              opset_version=version, do_constant_folding=True)
        return onnx.load_from_string(buf.getvalue())

    old, new = export(opset), export(17)
    ops = {n.op_type for n in old.graph.node}
    if opset < 17:
        assert "LayerNormalization" not in ops and {"ReduceMean", "Sub", "Sqrt"} <= ops
    if opset < 14:
        assert "HardSwish" not in ops and "HardSigmoid" in ops
    ks = onnx_kernels(old)
    assert ks == onnx_kernels(new)
    assert [k.op for k in ks] == ["conv2d", "conv2d", "layer_norm", "dense", "global_avg_pool2d", "hardswish",
                                  "global_avg_pool2d"]
    assert ks[0].attr("activation") == "hardswish"

# --- torchvision's classification zoo, exported offline by benchmarks/export_torchvision.py -------
def _zoo(env_var: str = "CODESIGN_TORCHVISION_ONNX", subdir: str = "torchvision-onnx") -> dict:
    import json
    import os

    env = os.environ.get(env_var)
    if env:
        folder = Path(env)
    else:
        from platformdirs import user_cache_dir

        folder = Path(user_cache_dir("codesign")) / subdir
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return {}
    entries = json.loads(manifest.read_text()).get("models", {})
    return {k: folder / e["file"] for k, e in sorted(entries.items()) if "file" in e and (folder / e["file"]).exists()}


ZOO = _zoo()
_NO_ZOO = ("no torchvision ONNX export found (torchvision is not installed beside this torch): run "
           "`python benchmarks/export_torchvision.py` with a Python that has torchvision, or set "
           "$CODESIGN_TORCHVISION_ONNX to such a folder")
SMALL_ZOO = [k for k in ("squeezenet1_1_32", "mobilenet_v3_small_32", "shufflenet_v2_x0_5_32") if k in ZOO]


@pytest.fixture(scope="module")
def zoo_model(tmp_path_factory):
    """A kernel-type model of synthetic timings, saved: what `codesign predict --model` reads."""
    import random

    from codesign.kernelspec import kernel_flops
    from codesign.predict import create_cost_model
    from codesign.predict.adaptive import SAMPLE_TYPES, draw

    rng, taken, specs = random.Random(0), set(), []
    for t in SAMPLE_TYPES:
        specs += draw(t, 12, rng, [], taken)
    rows = [{"kernel_key": s.key(), "latency_ms": 1e-6 * kernel_flops(s) + 0.002, "device": "cpu-local",
             "schedule": "untuned"} for s in specs]
    path = tmp_path_factory.mktemp("zoo") / "model.json"
    create_cost_model("kernel-type", n_estimators=8).fit(rows).save(path)
    return path


def _accepts(name, model_path, capsys, zoo=None):
    import json

    from codesign.cli import main
    from codesign.commands.profile import collect_specs
    from codesign.profile.builders import build

    path = (zoo or ZOO)[name]
    assert main(["predict", "--model", str(model_path), str(path), "--json"]) == 0
    item = json.loads(capsys.readouterr().out)["items"][0]
    assert item["kernels"] > 0 and item["latency_ms"] > 0 and item["skipped_ops"] == []
    # What `codesign profile --onnx` builds before compiling: every kernel has a TVM builder.
    args = type("Args", (), {"space": None, "onnx": [str(path)], "grid": []})()
    specs = collect_specs(args)
    assert [s.key() for s in specs] == item["kernel_keys"]
    for spec in dict.fromkeys(specs):
        assert tuple(build(spec).arg_shapes[-1]) == spec.output_shape()


@pytest.mark.skipif(not SMALL_ZOO, reason=_NO_ZOO)
@pytest.mark.parametrize("name", SMALL_ZOO or ["none"])
def test_small_torchvision_networks_are_predicted_and_built(name, zoo_model, capsys):
    _accepts(name, zoo_model, capsys)


@pytest.mark.slow
@pytest.mark.skipif(not ZOO, reason=_NO_ZOO)
@pytest.mark.parametrize("name", sorted(ZOO) or ["none"])
def test_every_torchvision_network_is_predicted_and_built(name, zoo_model, capsys):
    _accepts(name, zoo_model, capsys)


# --- one network of each timm family, exported offline by benchmarks/export_timm.py ------------------
TIMM_ZOO = _zoo("CODESIGN_TIMM_ONNX", "timm-onnx")
_NO_TIMM = ("no timm ONNX export found: run `python benchmarks/export_timm.py` with a Python that has timm, or set "
            "$CODESIGN_TIMM_ONNX to such a folder")
# Families whose networks hold an op codesign has no kernel for; each must be refused in one line naming it.
TIMM_REFUSED = {"sequencer2d_s": "LSTM", "sam2_hiera_tiny": "If"}


@pytest.mark.slow
@pytest.mark.skipif(not TIMM_ZOO, reason=_NO_TIMM)
@pytest.mark.parametrize("name", sorted(TIMM_ZOO) or ["none"])
def test_every_timm_network_is_predicted_and_built(name, zoo_model, capsys):
    family = name.rsplit("_", 1)[0]
    if family not in TIMM_REFUSED:
        _accepts(name, zoo_model, capsys, zoo=TIMM_ZOO)
        return
    from codesign.cli import main

    assert main(["predict", "--model", str(zoo_model), str(TIMM_ZOO[name])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"ONNX op {TIMM_REFUSED[family]} " in err, err


@pytest.mark.slow
@pytest.mark.skipif(not SMALL_ZOO, reason=_NO_ZOO)
def test_profile_command_times_a_torchvision_network(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "codesign.cli", "profile", "--onnx", str(ZOO[SMALL_ZOO[0]]), "--repeats", "1",
         "--min-repeat-ms", "0", "--schedule", "untuned", "--db", str(tmp_path / "p.sqlite"), "--json"],
        capture_output=True, text=True, timeout=1800,
    )
    assert out.returncode == 0, out.stderr
    import json

    report = json.loads(out.stdout)
    assert report["measured"] == report["requested"] > 0 and report["failed"] == 0


class _BeyondTorchvision(nn.Module):
    """Layers of timm's networks that torchvision's do not have: a 1-D conv + BatchNorm1d
    (EfficientViM), GroupNorm (exported as InstanceNormalization), an upsampling (HRNet),
    padding="same" (ConvMixer), a softmax over channels (CoaT), sums and maxima over axes."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(3, 8, 5, stride=2, padding=2)
        self.bn = nn.BatchNorm1d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.same = nn.Conv2d(8, 8, 3, padding="same")

    def forward(self, x):
        y = self.bn(self.c(x)).relu().view(1, 8, 4, 4)
        y = self.same(self.up(self.gn(y)))
        return (torch.softmax(y, dim=1) + y.sum(dim=(2, 3), keepdim=True)).amax(dim=1)


def test_layers_beyond_torchvisions_read_as_the_kernels_tvm_runs():
    ks = module_kernels(_BeyondTorchvision().eval(), (1, 3, 32))
    assert ks == [
        # the 1-D conv as a 2-D one over a 1-high image, its BatchNorm1d and ReLU fused
        K("conv2d", (1, 3, 1, 32), out_channels=8, kernel=1, kernel_w=5, stride=2, bias=True, activation="relu"),
        K("instance_norm", (2, 64)),  # GroupNorm(2 groups): rows of 4 channels x 4 x 4,
        K("batch_norm", (1, 8, 4, 4)),  # then its per-channel scale and shift, a kernel in TVM
        K("resize2d", (1, 8, 4, 4), out_h=8, out_w=8, method="linear"),
        K("conv2d", (1, 8, 8, 8), out_channels=8, kernel=3, bias=True),
        K("softmax", (64, 8)),  # over the 8 channels at each of 64 positions
        K("global_avg_pool2d", (1, 8, 8, 8)),  # the sum over H and W
        K("global_avg_pool2d", (1, 64, 8, 1)),  # the maximum over channels
    ]
    from codesign.profile.builders import build

    for spec in ks:
        assert tuple(build(spec).arg_shapes[-1]) == spec.output_shape()


def _one_node(node, in_shape, inits=(), opset=17):
    from onnx import TensorProto, helper

    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_auto_pad_is_worked_out_from_the_input_shape():
    import numpy as np
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 2, 3, 3), 0.1, np.float32), "w")

    def conv(**attrs):
        return onnx_kernels(_one_node(helper.make_node("Conv", ["x", "w"], ["y"], **attrs), [1, 2, 7, 7], [w]))

    assert conv(auto_pad="SAME_UPPER") == conv(pads=[1, 1, 1, 1]) == [K("conv2d", (1, 2, 7, 7), out_channels=4, kernel=3)]
    assert conv(auto_pad="VALID") == [K("conv2d", (1, 2, 7, 7), out_channels=4, kernel=3, padding=0)]
    assert conv(auto_pad="SAME_LOWER", strides=[2, 2]) == [
        K("conv2d", (1, 2, 7, 7), out_channels=4, kernel=3, stride=2)]  # 7 -> 4: one row each side
    with pytest.raises(CodesignError, match=r"asymmetric padding \[0, 0, 1, 1\] is not supported"):
        onnx_kernels(_one_node(helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2]),
                               [1, 2, 6, 6], [w]))
    w1 = numpy_helper.from_array(np.full((4, 2, 5), 0.1, np.float32), "w1")  # a 1-D conv: (N, C, L)
    assert onnx_kernels(_one_node(helper.make_node("Conv", ["x", "w1"], ["y"], auto_pad="SAME_UPPER"), [1, 2, 9],
                                  [w1])) == [K("conv2d", (1, 2, 1, 9), out_channels=4, kernel=1, kernel_w=5)]
    pool = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], auto_pad="SAME_UPPER")
    assert onnx_kernels(_one_node(pool, [1, 2, 7, 7])) == [K("max_pool2d", (1, 2, 7, 7), kernel=3, padding=1)]


def test_resize_reads_its_output_size_and_mode():
    import numpy as np
    from onnx import helper, numpy_helper

    sizes = numpy_helper.from_array(np.array([1, 3, 12, 10], np.int64), "sizes")
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="cubic")
    assert onnx_kernels(_one_node(node, [1, 3, 6, 5], [sizes])) == [
        K("resize2d", (1, 3, 6, 5), out_h=12, out_w=10, method="cubic")]
    same = numpy_helper.from_array(np.array([1, 3, 6, 5], np.int64), "sizes")
    assert onnx_kernels(_one_node(node, [1, 3, 6, 5], [same])) == []  # to its own size: nothing to compute
    channels = numpy_helper.from_array(np.array([1, 6, 6, 5], np.int64), "sizes")
    with pytest.raises(CodesignError, match=r"only a resize of the two spatial axes .* \(1, 3, 6, 5\) -> \(1, 6, 6, 5\)"):
        onnx_kernels(_one_node(node, [1, 3, 6, 5], [channels]))


def test_batched_matmuls_broadcast_as_numpy_does():
    from onnx import TensorProto, helper

    def mm(a, b):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["y"])], "m",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, a), helper.make_tensor_value_info("b", TensorProto.FLOAT, b)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        return onnx_kernels(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))

    # one key shared by 12 heads (MobileNetV5's multi-query attention): one product of all rows
    assert mm([1, 12, 16, 64], [1, 1, 64, 4]) == [K("batch_matmul", (1, 192, 64), n=4)]
    assert mm([1, 1, 16, 64], [2, 12, 64, 4]) == [K("batch_matmul", (24, 16, 64), n=4)]
    assert mm([2, 3, 16, 64], [2, 3, 64, 4]) == [K("batch_matmul", (6, 16, 64), n=4)]
    with pytest.raises(CodesignError, match="batch axes of .* do not broadcast"):
        mm([2, 3, 16, 64], [2, 4, 64, 4])


def test_leaky_relus_pools_of_tokens_and_global_max_pools_read():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.act = nn.LeakyReLU(1e-3)  # TResNet's
            self.prelu = nn.PReLU(8)
            self.pool = nn.AvgPool1d(4, 4)  # NextViT's token reduction

        def forward(self, x):
            y = self.prelu(self.act(self.conv(x)) + x.repeat(1, 3, 1, 1)[:, :8])
            t = self.pool(y.flatten(2))  # (1, 8, 64) -> (1, 8, 16)
            return t, nn.functional.adaptive_max_pool2d(y, 1)

    assert module_kernels(Net().eval(), (1, 3, 8, 8)) == [
        K("conv2d", (1, 3, 8, 8), out_channels=8, kernel=3, bias=True, activation="leaky_relu"),
        K("add", (1, 8, 8, 8), activation="leaky_relu"),  # PReLU fused into the add it follows
        K("global_avg_pool2d", (1, 128, 4, 1)),  # 8 channels x 16 windows of 4
        K("max_pool2d", (1, 8, 8, 8), kernel=8, stride=8),  # torch writes the adaptive pool as one window
    ]
    from onnx import helper

    assert onnx_kernels(_one_node(helper.make_node("GlobalMaxPool", ["x"], ["y"]), [1, 8, 5, 5])) == [
        K("global_avg_pool2d", (1, 8, 5, 5))]
    assert onnx_kernels(_one_node(helper.make_node("GlobalMaxPool", ["x"], ["y"]), [1, 8, 20])) == [
        K("global_avg_pool2d", (1, 8, 20, 1))]


def test_transposed_convolutions_read_build_and_map():
    net = nn.Sequential(nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, groups=2))
    ks = module_kernels(net.eval(), (1, 8, 5, 5))
    assert ks == [K("conv2d_transpose", (1, 8, 5, 5), out_channels=4, kernel=4, stride=2, padding=1, bias=True,
                    activation="relu"),
                  K("conv2d_transpose", (1, 4, 10, 10), out_channels=4, kernel=3, stride=2, padding=1, output_padding=1,
                    groups=2, bias=True)]
    assert [k.output_shape() for k in ks] == [(1, 4, 10, 10), (1, 4, 20, 20)]
    with pytest.raises(CodesignError, match="output_padding < stride"):
        K("conv2d_transpose", (1, 4, 5, 5), out_channels=4, kernel=3, stride=2, output_padding=2)


class _LayerScale(nn.Module):
    """ConvNeXt/CaiT-style residual blocks: ``x + gamma * f(x)``, gamma a learned constant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 8)
        self.gamma = nn.Parameter(torch.full((8, 1, 1), 0.1))
        self.gamma_fc = nn.Parameter(torch.full((8,), 0.1))

    def forward(self, x):
        x = x + self.gamma * self.conv(x)
        t = x.flatten(2).transpose(1, 2)
        return t + self.gamma_fc * self.fc(t)


def test_a_layer_scale_rides_in_the_epilogue_of_its_conv_or_dense():
    # TVM fuses conv/matmul + bias + the scale + the residual add into one kernel (fused_conv2d_add_multiply_add).
    assert module_kernels(_LayerScale().eval(), (1, 8, 4, 4)) == [
        K("conv2d", (1, 8, 4, 4), out_channels=8, kernel=1, bias=True, residual=True),
        K("dense", (16, 8), out_features=8, residual=True, weight_kn=True),
    ]
