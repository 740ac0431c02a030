"""The DARTS cell space (Liu et al., 2019): 8 candidate ops on the 14 edges of a normal and a
reduction cell, cells stacked into a CIFAR-style network.

Genotype grammar (one string, decoded in ``Genotype.parse``)::

    normal=OP@IN,OP@IN|OP@IN,OP@IN|OP@IN,OP@IN|OP@IN,OP@IN;reduce=...same...

Each of the 4 ``|``-separated groups is an intermediate node with two incoming edges; ``OP`` is
one of PRIMITIVES except ``none``, ``IN`` the index of the edge's input (0 and 1: the two previous
cells' outputs, 2..5: earlier nodes of the same cell, so node i may take inputs < i + 2). Every
cell outputs the concatenation of its 4 nodes. Example (DARTS-V2 from the paper)::

    normal=sep_conv_3x3@0,sep_conv_3x3@1|sep_conv_3x3@0,sep_conv_3x3@1|sep_conv_3x3@1,skip_connect@0|skip_connect@0,dil_conv_3x3@2;reduce=max_pool_3x3@0,max_pool_3x3@1|skip_connect@2,max_pool_3x3@1|max_pool_3x3@0,skip_connect@2|skip_connect@2,max_pool_3x3@1
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..errors import CodesignError
from ..kernelspec import KernelSpec
from ..nn import (
    MixedEdge,
    edge_checkpoint,
    fused_path,
    run_fused,
    sum_paths,
    supernet_input,
    supernet_options,
)
from . import register_space
from .base import Decision, NetworkGraph, SearchSpace, check_shape

PRIMITIVES = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)
NODES = 4


def edges() -> list[tuple[int, int]]:
    """(node, input) pairs of a cell, in DARTS order: 2 + 3 + 4 + 5 = 14 edges."""
    return [(node, inp) for node in range(NODES) for inp in range(node + 2)]


@dataclass(frozen=True)
class Genotype:
    normal: tuple[tuple[str, int], ...]  # 8 (op, input) pairs, two per node
    reduce: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, text: str) -> Genotype:
        """Decode the grammar in the module docstring; errors name the offending part."""
        chunks = text.strip().split(";")
        parts = dict(p.split("=", 1) for p in chunks if "=" in p)
        if len(chunks) != 2 or set(parts) != {"normal", "reduce"}:
            raise CodesignError(f"genotype must have normal=...;reduce=..., got {text!r}")
        cells = []
        for kind in ("normal", "reduce"):
            nodes = parts[kind].split("|")
            if len(nodes) != NODES:
                raise CodesignError(f"genotype {kind}: {NODES} nodes separated by '|' expected, got {len(nodes)}")
            pairs = []
            for i, node in enumerate(nodes):
                ins = node.split(",")
                if len(ins) != 2:
                    raise CodesignError(f"genotype {kind} node {i}: two OP@IN inputs expected, got {node!r}")
                for item in ins:
                    op, _, idx = item.partition("@")
                    if op not in PRIMITIVES or op == "none":
                        raise CodesignError(f"genotype {kind} node {i}: unknown op {op!r}; choose from {', '.join(PRIMITIVES[1:])}")
                    if not idx.isdigit() or not 0 <= int(idx) < i + 2:
                        raise CodesignError(f"genotype {kind} node {i}: input {idx!r} must be an int in [0, {i + 2})")
                    pairs.append((op, int(idx)))
            cells.append(tuple(pairs))
        return cls(*cells)

    def __str__(self) -> str:
        def cell(pairs):
            return "|".join(",".join(f"{op}@{i}" for op, i in pairs[2 * n: 2 * n + 2]) for n in range(NODES))

        return f"normal={cell(self.normal)};reduce={cell(self.reduce)}"


# ---------------------------------------------------------------------------------------------
# Ops (as in DARTS: ReLU-conv-BN orderings, factorized reduce for strided skips)
# ---------------------------------------------------------------------------------------------


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, k, stride, pad):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, pad, bias=False), nn.BatchNorm2d(c_out))


class DilConv(nn.Sequential):
    def __init__(self, c, k, stride, pad, dil):
        super().__init__(nn.ReLU(), nn.Conv2d(c, c, k, stride, pad, dilation=dil, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))


class SepConv(nn.Sequential):
    def __init__(self, c, k, stride, pad):
        super().__init__(DilConv(c, k, stride, pad, 1), DilConv(c, k, 1, pad, 1))


class FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.relu = nn.ReLU()
        self.c1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.c2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):  # x: (N, C_in, H, W) -> (N, C_out, H/2, W/2)
        return self.forward_after_relu(self.relu(x))

    def forward_after_relu(self, xr):
        return self.bn(torch.cat([self.c1(xr), self.c2(xr[:, :, 1:, 1:] if xr.shape[2] > 1 else xr)], 1))


def make_op(name: str, c: int, stride: int) -> nn.Module:
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        return SepConv(c, k, stride, k // 2)
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        return DilConv(c, k, stride, k - 1, 2)
    raise CodesignError(f"no module for op {name!r}")


def op_kernels(name: str, c: int, h: int, stride: int) -> list[KernelSpec]:
    """Kernels TVM runs for one candidate op on an (1, c, h, h) input (BN folded into convs)."""
    K = KernelSpec.make
    shape = (1, c, h, h)
    ho = (h - 1) // stride + 1
    if name == "none" or (name == "skip_connect" and stride == 1):
        return []
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return [K("max_pool2d" if name[0] == "m" else "avg_pool2d", shape, kernel=3, stride=stride, padding=1)]
    if name == "skip_connect":
        return [K("relu", shape), K("conv2d", shape, out_channels=c // 2, kernel=1, stride=2, padding=0),
                K("conv2d", (1, c, h - 1, h - 1), out_channels=c - c // 2, kernel=1, stride=2, padding=0),
                K("batch_norm", (1, c, ho, ho))]
    k = int(name[-1])
    if name.startswith("dil_conv_"):
        return [K("relu", shape), K("conv2d", shape, out_channels=c, kernel=k, stride=stride, dilation=2, groups=c),
                K("conv2d", (1, c, ho, ho), out_channels=c, kernel=1, padding=0, bias=True)]
    return [K("relu", shape), K("conv2d", shape, out_channels=c, kernel=k, stride=stride, groups=c),
            K("conv2d", (1, c, ho, ho), out_channels=c, kernel=1, padding=0, bias=True, activation="relu"),
            K("conv2d", (1, c, ho, ho), out_channels=c, kernel=k, groups=c),
            K("conv2d", (1, c, ho, ho), out_channels=c, kernel=1, padding=0, bias=True)]


class Cell(nn.Module):
    def __init__(self, pairs, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.pairs = pairs
        self.ops = nn.ModuleList(make_op(op, c, 2 if reduction and i < 2 else 1) for op, i in pairs)

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        for n in range(NODES):
            a, b = 2 * n, 2 * n + 1
            states.append(self.ops[a](states[self.pairs[a][1]]) + self.ops[b](states[self.pairs[b][1]]))
        return torch.cat(states[2:], dim=1)  # (N, 4C, H', W')


def _stem_cells_head(net: nn.Module, c: int, layers: int, num_classes: int, in_channels: int, make_cell) -> None:
    """The DARTS network's frame, shared by derived and search networks: a 3c-channel stem, ``layers``
    cells from ``make_cell(c_pp, c_p, c_curr, reduction, reduction_prev)`` with reductions (channels
    doubled) at 1/3 and 2/3 of the depth, global pooling and a linear classifier."""
    c_curr = 3 * c
    net.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
    c_pp, c_p, c_curr = c_curr, c_curr, c
    net.cells = nn.ModuleList()
    reduction_prev = False
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            c_curr *= 2
        net.cells.append(make_cell(c_pp, c_p, c_curr, reduction, reduction_prev))
        reduction_prev = reduction
        c_pp, c_p = c_p, NODES * c_curr
    net.pool = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Linear(c_p, num_classes)


class Network(nn.Module):
    """A derived DARTS network: stem, ``layers`` cells (reductions at 1/3 and 2/3), classifier."""

    def __init__(self, genotype: Genotype, c: int, layers: int, num_classes: int, in_channels: int):
        super().__init__()
        _stem_cells_head(self, c, layers, num_classes, in_channels,
                         lambda c_pp, c_p, c_curr, reduction, reduction_prev: Cell(
                             genotype.reduce if reduction else genotype.normal, c_pp, c_p, c_curr, reduction,
                             reduction_prev))

    def forward(self, x):  # x: (N, in_channels, H, W) -> logits (N, num_classes)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))


class SuperCell(nn.Module):
    """A search cell: a MixedEdge over all PRIMITIVES on each of the 14 edges (candidates at
    c / partial_channels channels)."""

    def __init__(self, c_pp, c_p, c, reduction, reduction_prev, partial_channels=1, checkpoint=None):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.edges = nn.ModuleList()
        for _node, inp in edges():
            stride = 2 if reduction and inp < 2 else 1
            mods = {op: make_op(op, c // partial_channels, stride) for op in PRIMITIVES
                    if op.startswith(("sep_", "dil_")) or (op == "skip_connect" and stride == 2)}
            self.edges.append(MixedEdge(list(PRIMITIVES), mods, stride, partial_channels, checkpoint))

    def forward(self, s0, s1, weights, index, fused):
        pre = run_fused if fused_path(fused) else nn.Module.__call__
        states = [pre(self.pre0, s0), pre(self.pre1, s1)]
        n, c, h, w = states[0].shape
        stride = 2 if self.reduction else 1
        shape = (n, c, (h - 1) // stride + 1, (w - 1) // stride + 1)
        e = 0
        for _node in range(NODES):
            terms = []
            for j in range(len(states)):
                terms.append(self.edges[e](states[j], weights[e], None if index is None else index[e], fused))
                e += 1
            states.append(sum_paths(terms, states[0], shape))
        return torch.cat(states[2:], dim=1)


class SuperNetwork(nn.Module):
    """The DARTS search network: weights[0:14] mix the normal cells' edges, weights[14:28] the
    reduction cells'."""

    def __init__(self, c: int, layers: int, num_classes: int, in_channels: int, partial_channels: int = 1,
                 checkpoint: bool | None = None):
        super().__init__()
        _stem_cells_head(self, c, layers, num_classes, in_channels,
                         lambda c_pp, c_p, c_curr, reduction, reduction_prev: SuperCell(
                             c_pp, c_p, c_curr, reduction, reduction_prev, partial_channels,
                             edge_checkpoint(checkpoint, c_curr, c)))

    def forward(self, x, weights, index=None, fused=True):  # (N, C, H, W) -> (N, classes)
        s0 = s1 = self.stem(supernet_input(x, fused))
        n = len(edges())
        for cell in self.cells:
            off = n if cell.reduction else 0
            w = weights[off:off + n]
            idx = None if index is None else index[off:off + n]
            s0, s1 = s1, cell(s0, s1, w, idx, fused)
        return self.classifier(self.pool(s1).flatten(1))


@register_space("darts")
class DartsSpace(SearchSpace):
    """The DARTS space. Args: init channels ``c`` (16), ``layers`` (8), ``num_classes`` (10),
    default input shape (1, 3, 32, 32); for the supernet only, ``partial_channels`` (PC-DARTS's K:
    1/K of each edge's channels go through its candidates; default 1, all) and ``checkpoint``
    (1: recompute the edges' candidates in backward instead of storing them, 0: store them;
    default: recompute in the first stage's cells, store in later ones, see
    ``codesign.nn.edge_checkpoint``).

    Decisions: the 14 edges of the normal cell, then the 14 of the reduction cell, each over the
    8 PRIMITIVES including ``none``; a network keeps exactly two non-``none`` edges per node
    (``valid``), and ``derive`` applies DARTS's rule (per node, the two inputs whose strongest
    non-none op weighs most, each with that op).
    """

    primitives = PRIMITIVES

    def __init__(self, c: int = 16, layers: int = 8, num_classes: int = 10, input_shape=(1, 3, 32, 32),
                 partial_channels: int = 1, checkpoint: bool | int | None = None):
        if c < 2 or layers < 3 or num_classes < 1:
            raise CodesignError("darts space: c >= 2, layers >= 3 and num_classes >= 1 are required")
        self.c, self.layers, self.num_classes = c, layers, num_classes
        self.input_shape = check_shape("darts", input_shape, num_classes)
        # FactorizedReduce (a strided skip) splits its channels in two
        self.partial_channels, self.checkpoint = supernet_options("darts", partial_channels, checkpoint, c, 2)

    # --- decisions and genotypes ---------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        return [Decision(f"{kind}/{inp}->{node + 2}", PRIMITIVES) for kind in ("normal", "reduce")
                for node, inp in edges()]

    def parse(self, text: str) -> list[int]:
        g = Genotype.parse(text)
        out = []
        for pairs in (g.normal, g.reduce):
            row = [0] * len(edges())
            for n in range(NODES):
                (op_a, a), (op_b, b) = pairs[2 * n], pairs[2 * n + 1]
                if a == b:
                    raise CodesignError(f"genotype node {n}: both inputs are {a}; the search space keeps two "
                                        "distinct input edges per node")
                for op, inp in ((op_a, a), (op_b, b)):
                    row[edges().index((n, inp))] = PRIMITIVES.index(op)
            out += row
        return out

    def graphs(self, genotype: str) -> list[NetworkGraph]:
        """The normal and the reduction cell: inputs c[k-2], c[k-1], nodes 0-3, and the output
        c[k], the concatenation of the four nodes."""
        g = Genotype.parse(self.format(self.parse(genotype)))
        nodes = ("c[k-2]", "c[k-1]") + tuple(str(n) for n in range(NODES)) + ("c[k] (concat)",)
        out = []
        for title, pairs in (("normal cell", g.normal), ("reduction cell", g.reduce)):
            edges = [(inp, 2 + i // 2, op) for i, (op, inp) in enumerate(pairs)]
            edges += [(2 + n, len(nodes) - 1, "") for n in range(NODES)]
            out.append(NetworkGraph(title, nodes, tuple(edges), inputs=2))
        return out

    def format(self, choices: list[int]) -> str:
        if not self.valid(choices):
            raise CodesignError("darts: a network needs exactly two non-none input edges per node (28 choices)")
        cells = []
        for off in (0, len(edges())):
            pairs = []
            for e, (_node, inp) in enumerate(edges()):
                if choices[off + e]:
                    pairs.append((PRIMITIVES[choices[off + e]], inp))
            cells.append(tuple(pairs))
        return str(Genotype(*cells))

    def valid(self, choices: list[int]) -> bool:
        if len(choices) != 2 * len(edges()):
            return False
        for off in (0, len(edges())):
            for n in range(NODES):
                if sum(1 for e, (node, _i) in enumerate(edges()) if node == n and choices[off + e]) != 2:
                    return False
        return True

    def random_choices(self, rng) -> list[int]:
        out = []
        for _cell in range(2):
            row = [0] * len(edges())
            for n in range(NODES):
                for inp in rng.sample(range(n + 2), 2):
                    row[edges().index((n, inp))] = rng.randrange(1, len(PRIMITIVES))
            out += row
        return out

    def mutate(self, choices, rng) -> list[int]:
        """Change the op of one kept edge, or move a kept edge to another input of its node."""
        out = list(choices)
        off = rng.choice((0, len(edges())))
        n = rng.randrange(NODES)
        node_edges = [off + e for e, (node, _i) in enumerate(edges()) if node == n]
        kept = [e for e in node_edges if out[e]]
        e = rng.choice(kept)
        free = [f for f in node_edges if not out[f]]
        if free and rng.random() < 0.5:
            f = rng.choice(free)
            out[f], out[e] = out[e], 0
        else:
            out[e] = rng.choice([k for k in range(1, len(PRIMITIVES)) if k != out[e]])
        return out

    def _per_node_top2(self, score: list[np.ndarray], best_op) -> list[int]:
        out = []
        for off in (0, len(edges())):
            row = [0] * len(edges())
            for n in range(NODES):
                cand = [(e, best_op(score[off + e])) for e, (node, _i) in enumerate(edges()) if node == n]
                cand.sort(key=lambda t: -t[1][1])
                for e, (k, _v) in cand[:2]:
                    row[e] = k
            out += row
        return out

    def derive(self, probs) -> list[int]:
        def best(p):
            k = 1 + int(np.argmax(np.asarray(p)[1:]))
            return k, float(p[k])

        return self._per_node_top2(probs, best)

    def cheapest(self, cost) -> list[int]:
        def best(c):
            k = 1 + int(np.argmin(np.asarray(c)[1:]))
            return k, -float(c[k])

        return self._per_node_top2(cost, best)

    def costliest(self, cost) -> list[int]:
        def best(c):
            k = 1 + int(np.argmax(np.asarray(c)[1:]))
            return k, float(c[k])

        return self._per_node_top2(cost, best)

    def describe(self) -> dict:
        """As the base class, with the count of valid networks: per node, 2 of its n+2 inputs and
        one of 7 ops on each, for both cells (about 1e18, as the DARTS paper says)."""
        from math import comb

        per_cell = 1
        for n in range(NODES):
            per_cell *= comb(n + 2, 2) * (len(PRIMITIVES) - 1) ** 2
        return {**super().describe(), "size": float(per_cell) ** 2}

    def neighbours(self, choices):
        """Valid networks one edge move away: a kept edge's op moved to an unused input of its node."""
        for off in (0, len(edges())):
            for n in range(NODES):
                node_edges = [off + e for e, (node, _i) in enumerate(edges()) if node == n]
                for e in node_edges:
                    if not choices[e]:
                        continue
                    for f in node_edges:
                        if not choices[f]:
                            cand = list(choices)
                            cand[f], cand[e] = cand[e], 0
                            yield cand

    def identity_options(self) -> list[int | None]:
        """skip_connect is an identity except on the reduction cell's edges from its two inputs,
        where it is a factorized reduction (a learned, strided op)."""
        skip = PRIMITIVES.index("skip_connect")
        return [None if kind == "reduce" and inp < 2 else skip for kind in ("normal", "reduce") for _n, inp in edges()]

    def expectation_scale(self) -> list[float]:
        """A node keeps 2 of its n+2 incoming edges: its edges' expected costs count 2/(n+2)."""
        return [2.0 / (node + 2) for _kind in range(2) for node, _i in edges()]

    def supernet(self) -> nn.Module:
        return SuperNetwork(self.c, self.layers, self.num_classes, self.input_shape[1], self.partial_channels,
                            self.checkpoint)

    def option_kernels(self) -> list[list[list[KernelSpec]]]:
        per = self.edge_op_kernels()
        table = []
        for reduction in (False, True):
            cells = [i for i, red, _c, _h in self.cell_plan() if red == reduction]
            for e in range(len(edges())):
                table.append([[k for i in cells for k in per[(i, e, op)]] for op in PRIMITIVES])
        return table

    def cell_plan(self, input_shape=None):
        """(index, reduction, c, h) of every cell: channels and resolution its edges see."""
        _, _, h, _ = input_shape or self.input_shape
        plan, c = [], self.c
        for i in range(self.layers):
            reduction = i in (self.layers // 3, 2 * self.layers // 3)
            if reduction:
                c *= 2
            plan.append((i, reduction, c, h))
            if reduction:
                h = (h - 1) // 2 + 1
        return plan

    def edge_op_kernels(self, input_shape=None) -> dict[tuple[int, int, str], list[KernelSpec]]:
        """Kernels of every (cell, edge, op) of the supernet: what a cost model costs per choice."""
        out = {}
        for i, reduction, c, h in self.cell_plan(input_shape):
            for e, (_node, inp) in enumerate(edges()):
                stride = 2 if reduction and inp < 2 else 1
                h_in = h if stride == 2 or not reduction else (h - 1) // 2 + 1
                for op in PRIMITIVES:
                    out[(i, e, op)] = op_kernels(op, c, h_in, stride)
        return out

    def kernels(self, input_shape=None) -> list[KernelSpec]:
        """Every distinct kernel the supernet runs and any derived network may run (stem,
        preprocessing, all ops of all edges with their fused variants, classifier), for the
        profiler."""
        shape = tuple(input_shape or self.input_shape)
        if len(shape) != 4:
            raise CodesignError(f"darts space: input shape must be N,C,H,W, got {shape}")
        K = KernelSpec.make
        specs = [K("conv2d", shape, out_channels=3 * self.c, kernel=3, bias=True)]
        (c_pp, h_pp), (c_p, h_p) = (3 * self.c, shape[2]), (3 * self.c, shape[2])
        reduction_prev = False
        for _i, reduction, c, h in self.cell_plan(shape):
            if reduction_prev:  # FactorizedReduce of the cell before the previous one
                specs += op_kernels("skip_connect", c_pp, h_pp, 2)
                if c_pp != c:
                    specs[-3:-1] = [
                        K("conv2d", (1, c_pp, h_pp, h_pp), out_channels=c // 2, kernel=1, stride=2, padding=0),
                        K("conv2d", (1, c_pp, h_pp - 1, h_pp - 1), out_channels=c - c // 2, kernel=1, stride=2,
                          padding=0),
                    ]
                    specs[-1] = K("batch_norm", (1, c, (h_pp - 1) // 2 + 1, (h_pp - 1) // 2 + 1))
            else:
                specs += [K("relu", (1, c_pp, h_pp, h_pp)),
                          K("conv2d", (1, c_pp, h_pp, h_pp), out_channels=c, kernel=1, padding=0, bias=True)]
            specs += [K("relu", (1, c_p, h_p, h_p)),
                      K("conv2d", (1, c_p, h_p, h_p), out_channels=c, kernel=1, padding=0, bias=True)]
            h_out = (h - 1) // 2 + 1 if reduction else h
            specs.append(K("add", (1, c, h_out, h_out)))  # each node sums its two edges
            (c_pp, h_pp), (c_p, h_p) = (c_p, h_p), (NODES * c, h_out)
            reduction_prev = reduction
        for ks in self.edge_op_kernels(shape).values():
            specs += ks
        # Which conv absorbs a node's sum (residual) or the next op's ReLU depends on the genotype
        # (TVM fuses into a conv only a sole consumer), so list every fused variant.
        variants = []
        for k in specs:
            if k.op == "conv2d" and k.attr("activation") == "none" and not k.attr("residual"):
                attrs = dict(k.attrs)
                for extra in ({"activation": "relu"}, {"residual": True}, {"residual": True, "activation": "relu"}):
                    variants.append(KernelSpec.make("conv2d", k.input_shape, **{**attrs, **extra}))
        specs += variants
        last_c, last_h = self.cell_plan(shape)[-1][2], self.cell_plan(shape)[-1][3]
        specs += [K("global_avg_pool2d", (1, NODES * last_c, last_h, last_h)),
                  K("dense", (1, NODES * last_c), out_features=self.num_classes, weight_kn=True)]
        return list(dict.fromkeys(specs))

    def build(self, genotype: str | Genotype, in_channels: int | None = None) -> Network:
        """The derived network of a genotype as a plain nn.Module."""
        g = Genotype.parse(genotype) if isinstance(genotype, str) else genotype
        if not isinstance(g, Genotype):
            raise CodesignError(f"darts: a genotype string expected, got {type(genotype).__name__}")
        return Network(g, self.c, self.layers, self.num_classes, in_channels or self.input_shape[1])
