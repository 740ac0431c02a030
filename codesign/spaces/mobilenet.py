"""A MobileNet-style chain as in ProxylessNAS and FBNet: every layer picks one MBConv block (or a
skip), stage widths and strides declared in a YAML config.

Config (``configs/mobilenet-small.yaml`` by default, ``configs/fbnet.yaml`` is FBNet's 22-layer
space; pass a name of the shipped configs or a path)::

    format_version: 1
    input_shape: [1, 3, 32, 32]
    num_classes: 10
    stem: {channels: 8, stride: 1}          # 3x3 conv-BN-ReLU6
    stages: [{n: 2, c: 16, s: 2}, ...]      # n layers of c channels, first with stride s
    head: {channels: 64}                    # 1x1 conv-BN-ReLU6, global pool, linear
    options: [k3_e1, k3_e3, ..., k3_e1_g2, skip]

Options: ``k{K}_e{E}`` is an MBConv block: 1x1 expansion to E times the input channels, KxK
depthwise conv (the layer's stride), 1x1 projection, each with BN (ReLU6 after the first two),
plus the input where stride is 1 and the width does not change. ``_g{G}`` makes both 1x1 convs
grouped (with a channel shuffle between them, as FBNet). ``skip`` is offered only where the
layer keeps stride 1 and width; elsewhere it is not an option of that layer.

Genotype grammar: the options of every layer, in order, separated by commas::

    k3_e6,k5_e3,skip,k3_e1_g2,...
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn
import yaml

from ..errors import CodesignError
from ..kernelspec import KernelSpec
from ..nn import MixedEdge, channel_shuffle, supernet_input, supernet_options
from . import register_space
from .base import Decision, SearchSpace, check_shape
from .kernels import ExportedKernels

CONFIG_FORMAT_VERSION = 1
CONFIG_DIR = Path(__file__).parent / "configs"
_OPTION = re.compile(r"^k(\d+)_e(\d+)(?:_g(\d+))?$")


def parse_option(name: str) -> tuple[int, int, int] | None:
    """(kernel, expansion, groups) of an MBConv option name; None for skip."""
    if name == "skip":
        return None
    m = _OPTION.match(name)
    if not m:
        raise CodesignError(f"mobilenet option {name!r} must be k<kernel>_e<expansion>[_g<groups>] or skip")
    k, e, g = int(m[1]), int(m[2]), int(m[3] or 1)
    if k < 1 or k % 2 == 0 or e < 1 or g < 1:
        raise CodesignError(f"mobilenet option {name!r}: odd kernel >= 1, expansion >= 1, groups >= 1 required")
    return k, e, g


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return channel_shuffle(x, self.groups)


class MBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, k: int, e: int, g: int):
        super().__init__()
        mid = c_in * e
        if c_in % g or mid % g or c_out % g:
            raise CodesignError(f"mobilenet: groups {g} must divide channels {c_in}, {mid} and {c_out}")
        layers = [nn.Conv2d(c_in, mid, 1, groups=g, bias=False), nn.BatchNorm2d(mid), nn.ReLU6()]
        if g > 1:
            layers.append(ChannelShuffle(g))
        layers += [nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
                   nn.Conv2d(mid, c_out, 1, groups=g, bias=False), nn.BatchNorm2d(c_out)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):  # (N, C_in, H, W) -> (N, C_out, H/stride, W/stride)
        y = self.body(x)
        return x + y if self.residual else y


def make_block(option: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    spec = parse_option(option)
    if spec is None:
        if stride != 1 or c_in != c_out:
            raise CodesignError("mobilenet: skip needs stride 1 and equal widths")
        return nn.Identity()
    return MBConv(c_in, c_out, stride, *spec)


def load_config(config: str | Path | dict) -> dict:
    """A space config by shipped name (``mobilenet-small``, ``fbnet``), path or dict, validated."""
    if isinstance(config, dict):
        cfg, where = dict(config), "config"
    else:
        path = Path(config)
        if not path.suffix:
            path = CONFIG_DIR / f"{config}.yaml"
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise CodesignError(f"mobilenet config {str(config)!r} not found; shipped: {shipped}, or give a YAML path")
        try:
            cfg = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise CodesignError(f"mobilenet config {path}: not valid YAML ({exc})") from None
        where = str(path)
    if not isinstance(cfg, dict):
        raise CodesignError(f"mobilenet config {where}: a mapping expected")
    version = cfg.get("format_version")
    if version != CONFIG_FORMAT_VERSION:
        raise CodesignError(f"mobilenet config {where}: format_version {version!r} is not supported "
                            f"(this codesign reads {CONFIG_FORMAT_VERSION})")
    try:
        stages = [(int(s["n"]), int(s["c"]), int(s["s"])) for s in cfg["stages"]]
        stem = (int(cfg["stem"]["channels"]), int(cfg["stem"].get("stride", 1)))
        head = int(cfg.get("head", {}).get("channels", 0))
        options = [str(o) for o in cfg["options"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CodesignError(f"mobilenet config {where}: missing or malformed field ({exc}); see "
                            "codesign/spaces/configs/mobilenet-small.yaml") from None
    if not stages or any(n < 1 or c < 1 or s not in (1, 2) for n, c, s in stages) or stem[0] < 1 or head < 0:
        raise CodesignError(f"mobilenet config {where}: stages need n >= 1, c >= 1, s in (1, 2); stem channels >= 1")
    if not options or len(set(options)) != len(options):
        raise CodesignError(f"mobilenet config {where}: options must be a non-empty list without repeats")
    for o in options:
        parse_option(o)
    return {"input_shape": cfg.get("input_shape", [1, 3, 32, 32]), "num_classes": int(cfg.get("num_classes", 10)),
            "stem": stem, "stages": stages, "head": head, "options": options, "where": where}


class Chain(nn.Module):
    """Stem, the layers (fixed blocks or MixedEdges), head, classifier."""

    def __init__(self, cfg: dict, in_channels: int, num_classes: int, blocks):
        super().__init__()
        c0, s0 = cfg["stem"]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c0, 3, s0, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU6())
        self.layers = nn.ModuleList(blocks)
        c_last = cfg["stages"][-1][1]
        head = cfg["head"]
        self.head = (nn.Sequential(nn.Conv2d(c_last, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU6())
                     if head else nn.Identity())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(head or c_last, num_classes)

    def forward(self, x, weights=None, index=None, fused=True):  # (N, C, H, W) -> (N, classes)
        searchable = any(isinstance(layer, MixedEdge) for layer in self.layers)
        x = self.stem(supernet_input(x, fused) if searchable else x)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, MixedEdge):
                x = layer(x, weights[i], None if index is None else index[i], fused)
            else:
                x = layer(x)
        return self.classifier(self.pool(self.head(x)))


@register_space("mobilenet")
class MobileNetSpace(SearchSpace):
    """MobileNet-style chain. Args: ``config`` (shipped name or YAML path; default
    mobilenet-small), ``num_classes`` and ``input_shape`` (override the config's); for the
    supernet only, ``checkpoint`` (1/0: recompute or store the layers' candidates in backward;
    default: recompute, as in the darts space)."""

    def __init__(self, config: str | Path | dict = "mobilenet-small", num_classes: int | None = None,
                 input_shape=None, checkpoint: bool | int | None = None):
        _, self.checkpoint = supernet_options("mobilenet", 1, checkpoint, 1)
        self.cfg = load_config(config)
        self.num_classes = num_classes or self.cfg["num_classes"]
        self.input_shape = check_shape("mobilenet", input_shape or self.cfg["input_shape"], self.num_classes)
        self._exported = ExportedKernels()
        self._layers = []  # (c_in, c_out, stride, h_in)
        c, h = self.cfg["stem"][0], (self.input_shape[2] - 1) // self.cfg["stem"][1] + 1
        for n, c_out, s in self.cfg["stages"]:
            for i in range(n):
                stride = s if i == 0 else 1
                self._layers.append((c, c_out, stride, h))
                c, h = c_out, (h - 1) // stride + 1
        self._decisions = [
            Decision(f"layer{i}", tuple(o for o in self.cfg["options"]
                                        if o != "skip" or (stride == 1 and c_in == c_out)))
            for i, (c_in, c_out, stride, _) in enumerate(self._layers)]
        for i, d in enumerate(self._decisions):
            if not d.options:
                raise CodesignError(f"mobilenet config: layer {i} changes stride or width and has only skip as option")

    def decisions(self) -> list[Decision]:
        return list(self._decisions)

    def parse(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise CodesignError(f"mobilenet genotype must be a string, got {type(text).__name__}")
        items = [s.strip() for s in text.strip().split(",")]
        if len(items) != len(self._decisions):
            raise CodesignError(f"mobilenet genotype: {len(self._decisions)} comma-separated layer options expected, "
                                f"got {len(items)}")
        out = []
        for i, (item, d) in enumerate(zip(items, self._decisions)):
            if item not in d.options:
                raise CodesignError(f"mobilenet genotype layer {i}: {item!r} is not an option here; "
                                    f"choose from {', '.join(d.options)}")
            out.append(d.options.index(item))
        return out

    def format(self, choices: list[int]) -> str:
        if len(choices) != len(self._decisions):
            raise CodesignError(f"mobilenet: {len(self._decisions)} choices expected, got {len(choices)}")
        return ",".join(d.options[k] for d, k in zip(self._decisions, choices))

    def build(self, genotype: str) -> nn.Module:
        blocks = [make_block(d.options[k], c_in, c_out, s)
                  for k, d, (c_in, c_out, s, _) in zip(self.parse(genotype), self._decisions, self._layers)]
        return Chain(self.cfg, self.input_shape[1], self.num_classes, blocks)

    def supernet(self) -> nn.Module:
        edges = []
        for d, (c_in, c_out, s, _) in zip(self._decisions, self._layers):
            mods = {o: make_block(o, c_in, c_out, s) for o in d.options if o != "skip"}
            edges.append(MixedEdge(list(d.options), mods, s, checkpoint=self.checkpoint))
        return Chain(self.cfg, self.input_shape[1], self.num_classes, edges)

    def option_kernels(self) -> list[list[list[KernelSpec]]]:
        table = []
        for d, (c_in, c_out, s, h) in zip(self._decisions, self._layers):
            row = []
            for o in d.options:
                if o == "skip":
                    row.append([])
                    continue
                with torch.no_grad():
                    block = make_block(o, c_in, c_out, s)
                row.append(self._exported.get(("mobilenet", o, c_in, c_out, s, h), block, (1, c_in, h, h)))
            table.append(row)
        return table

    def kernels(self, input_shape=None) -> list[KernelSpec]:
        if input_shape is not None and tuple(input_shape) != self.input_shape:
            return type(self)(self.cfg["where"] if self.cfg["where"] != "config" else self.cfg,
                              self.num_classes, input_shape).kernels()
        return self._exported.space_kernels(self)
