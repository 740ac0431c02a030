"""ONNX graph front end: kernels and TVM's fusion rules."""

from __future__ import annotations

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
        K("dense", (1, 8), out_features=10, activation="relu"),
    ]


def test_same_padding_is_one_key():
    assert K("conv2d", (1, 4, 8, 8), out_channels=4, kernel=3, padding=1) == K(
        "conv2d", (1, 4, 8, 8), out_channels=4, kernel=3
    )


class WithLSTMish(nn.Module):
    def forward(self, x):
        return torch.erf(x)


def test_unsupported_op_is_named_with_the_supported_list(tmp_path):
    with pytest.raises(CodesignError, match=r"ONNX op Erf .*no kernel builder; supported: .*Conv"):
        module_kernels(WithLSTMish(), (1, 2, 4, 4))
    assert module_kernels(WithLSTMish(), (1, 2, 4, 4), allow_partial=True) == []


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
         "--min-repeat-ms", "1", "--db", str(tmp_path / "p.sqlite")],
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
    from codesign.predict.measure import tvm_kernels

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
