"""The NAS-Bench-201 cell space (Dong & Yang, 2020): 5 candidate ops on the 6 edges of a 4-node
cell, one cell design shared by every cell of a 3-stage ResNet-like skeleton.

Genotype grammar: NAS-Bench-201's own architecture strings, so genotypes can be looked up in
the benchmark's tables::

    |OP~0|+|OP~0|OP~1|+|OP~0|OP~1|OP~2|

The ``+``-separated groups are nodes 1, 2, 3; ``OP~i`` is the op on the edge from node i. ``OP``
is one of ``none``, ``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3``, ``avg_pool_3x3``.
Node 0 is the cell input, node 3 its output; node j sums its incoming edges. Example (the best
CIFAR-10 cell of the benchmark)::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|

Skeleton: 3x3 conv stem (C channels), ``cells`` cells, a residual reduction block to 2C, ``cells``
cells, a reduction to 4C, ``cells`` cells, BN-ReLU, global pooling, linear classifier. The
benchmark itself uses C=16, 5 cells per stage; the defaults here are smaller for CPUs.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch.nn as nn

from ..errors import CodesignError
from ..kernelspec import KernelSpec
from ..nn import MixedEdge, edge_checkpoint, sum_paths, supernet_input, supernet_options
from . import register_space
from .base import Decision, NetworkGraph, SearchSpace, check_shape, split_items
from .kernels import ExportedKernels

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (node, input), benchmark order


def connected(choices) -> bool:
    """Whether node 3 (the output) is reached from node 0 (the input) through non-``none`` edges."""
    reached = {0}
    for (node, inp), c in zip(EDGES, choices):  # EDGES lists every node's inputs before the node's users
        if c != 0 and inp in reached:
            reached.add(node)
    return 3 in reached


@functools.cache
def _all_connected() -> np.ndarray:
    """Every connected cell's choice vector: [n, 6]."""
    grid = np.array(list(itertools.product(range(len(OPS)), repeat=len(EDGES))))
    return grid[[connected(row) for row in grid]]


def _extreme_connected(cost: list[np.ndarray], pick) -> list[int]:
    """The connected cell of least (np.argmin) or most (np.argmax) additive cost; ties go to the
    first in the order of the choice vectors."""
    cells = _all_connected()
    total = sum(np.asarray(c, dtype=np.float64)[cells[:, e]] for e, c in enumerate(cost))
    return [int(v) for v in cells[int(pick(total))]]


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, k, stride):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))


class ResBlock(nn.Module):
    """The skeleton's reduction: two ReLU-conv-BN 3x3 (stride 2 first), avg-pool + 1x1 shortcut.

    The shortcut pools 3x3 with stride 2 and padding 1 (NAS-Bench-201: 2x2, stride 2) so that odd
    sizes such as 8x8 -> 4x4 -> 2x2 and 7x7 inputs keep the conv path's shape."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.a = ReLUConvBN(c_in, c_out, 3, 2)
        self.b = ReLUConvBN(c_out, c_out, 3, 1)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, 2, 1, count_include_pad=False), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):  # (N, C_in, H, W) -> (N, C_out, ceil(H/2), ceil(W/2))
        return self.b(self.a(x)) + self.shortcut(x)


def make_op(name: str, c: int) -> nn.Module | None:
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity()
    return None  # none


class Cell(nn.Module):
    """A derived cell: the chosen op on every edge; an edge with ``none`` is left out."""

    def __init__(self, ops: list[str], c: int):
        super().__init__()
        self.ops = ops
        self.mods = nn.ModuleList(make_op(op, c) or nn.Identity() for op in ops)

    def forward(self, x):
        nodes = [x]
        for j in (1, 2, 3):
            out = None
            for e, (node, inp) in enumerate(EDGES):
                if node == j and self.ops[e] != "none":
                    y = self.mods[e](nodes[inp])
                    out = y if out is None else out + y
            nodes.append(out if out is not None else nodes[0] * 0.0)
        return nodes[3]


class SuperCell(nn.Module):
    """A MixedEdge over OPS on each of the 6 edges (candidates at c / partial_channels channels)."""

    def __init__(self, c: int, partial_channels: int = 1, checkpoint: bool | None = None):
        super().__init__()
        cp = c // partial_channels
        self.edges = nn.ModuleList(
            MixedEdge(list(OPS), {op: make_op(op, cp) for op in ("nor_conv_1x1", "nor_conv_3x3")}, 1,
                      partial_channels, checkpoint) for _ in EDGES)

    def forward(self, x, weights, index=None, fused=True):
        nodes = [x]
        for j in (1, 2, 3):
            terms = [self.edges[e](nodes[inp], weights[e], None if index is None else index[e], fused)
                     for e, (node, inp) in enumerate(EDGES) if node == j]
            nodes.append(sum_paths(terms, x, x.shape))
        return nodes[3]


class Skeleton(nn.Module):
    """Stem, three stages of cells with two reduction blocks, classifier. ``make_cell(c)`` gives
    a cell of c channels; supernet cells take the architecture weights."""

    def __init__(self, make_cell, c: int, cells: int, num_classes: int, in_channels: int, searchable: bool):
        super().__init__()
        self.searchable = searchable
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers, c_curr = [], c
        for stage in range(3):
            if stage:
                layers.append(ResBlock(c_curr, 2 * c_curr))
                c_curr *= 2
            layers += [make_cell(c_curr) for _ in range(cells)]
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c_curr), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_curr, num_classes)

    def forward(self, x, weights=None, index=None, fused=True):  # (N, C_in, H, W) -> (N, classes)
        x = self.stem(supernet_input(x, fused) if self.searchable else x)
        for layer in self.layers:
            if self.searchable and isinstance(layer, SuperCell):
                x = layer(x, weights, index, fused)
            else:
                x = layer(x)
        return self.classifier(self.head(x))


@register_space("nb201")
class NB201Space(SearchSpace):
    """NAS-Bench-201. Args: channels ``c`` (default 16), ``cells`` per stage (default 2),
    ``num_classes`` (10), ``input_shape`` (1, 3, 32, 32); for the supernet only,
    ``partial_channels`` (PC-DARTS's K, default 1) and ``checkpoint`` (1/0: recompute or store
    the edges' candidates in backward; default: recompute in the first stage's cells, store in
    later ones, see ``codesign.nn.edge_checkpoint``), as in the darts space."""

    ops = OPS

    def __init__(self, c: int = 16, cells: int = 2, num_classes: int = 10, input_shape=(1, 3, 32, 32),
                 partial_channels: int = 1, checkpoint: bool | int | None = None):
        if c < 1 or cells < 1:
            raise CodesignError(f"nb201 space: c >= 1 and cells >= 1 are required, got c={c}, cells={cells}")
        self.c, self.cells, self.num_classes = c, cells, num_classes
        self.input_shape = check_shape("nb201", input_shape, num_classes)
        self.partial_channels, self.checkpoint = supernet_options("nb201", partial_channels, checkpoint, c)
        self._exported = ExportedKernels()

    def decisions(self) -> list[Decision]:
        return [Decision(f"edge{inp}->{node}", OPS) for node, inp in EDGES]

    def valid(self, choices: list[int]) -> bool:
        """A cell whose output is reached from its input through edges other than ``none``: the
        others (341 of the 15,625 cells) compute a constant, and the search never picks one."""
        return len(choices) == len(EDGES) and connected(choices)

    def random_choices(self, rng) -> list[int]:
        """A uniformly random connected cell."""
        while True:
            choices = super().random_choices(rng)
            if connected(choices):
                return choices

    def mutate(self, choices: list[int], rng) -> list[int]:
        """One edge's op changed, into a connected cell (redrawn until it is: from any cell, giving
        the edge 0->3 an op other than ``none`` connects it, so the draw ends)."""
        while True:
            child = super().mutate(choices, rng)
            if connected(child):
                return child

    def describe(self) -> dict:
        """As the base class, with the count of connected cells (15,284 of 5^6)."""
        return {**super().describe(), "size": float(len(_all_connected()))}

    def cheapest(self, cost: list[np.ndarray]) -> list[int]:
        return _extreme_connected(cost, np.argmin)

    def costliest(self, cost: list[np.ndarray]) -> list[int]:
        return _extreme_connected(cost, np.argmax)

    def parse(self, text: str) -> list[int]:
        if not isinstance(text, str) or not text.strip().startswith("|"):
            raise CodesignError(f"nb201 genotype must look like |OP~0|+|OP~0|OP~1|+|OP~0|OP~1|OP~2|, got {text!r}")
        nodes = split_items(text.strip(), "+", 3, "nb201 genotype")
        choices = []
        for j, node in enumerate(nodes, start=1):
            items = [s for s in node.split("|") if s]
            if len(items) != j:
                raise CodesignError(f"nb201 genotype node {j}: {j} OP~i items expected, got {node!r}")
            for i, item in enumerate(items):
                op, _, inp = item.partition("~")
                if op not in OPS:
                    raise CodesignError(f"nb201 genotype node {j}: unknown op {op!r}; choose from {', '.join(OPS)}")
                if inp != str(i):
                    raise CodesignError(f"nb201 genotype node {j}: item {item!r} must read {op}~{i}")
                choices.append(OPS.index(op))
        return choices

    def format(self, choices: list[int]) -> str:
        if len(choices) != len(EDGES):
            raise CodesignError(f"nb201: {len(EDGES)} choices expected, got {len(choices)}")
        groups, e = [], 0
        for j in (1, 2, 3):
            groups.append("|" + "|".join(f"{OPS[choices[e + i]]}~{i}" for i in range(j)) + "|")
            e += j
        return "+".join(groups)

    def graphs(self, genotype: str) -> list[NetworkGraph]:
        """The cell (shared by every cell of the skeleton); ``none`` edges are left out."""
        choices = self.parse(genotype)
        edges = tuple((inp, node, OPS[c]) for (node, inp), c in zip(EDGES, choices) if OPS[c] != "none")
        return [NetworkGraph("cell (every cell of the network)", ("0 (input)", "1", "2", "3 (output)"), edges)]

    def _stage_shapes(self):
        """(channels, height) of every cell."""
        _, _, h, _ = self.input_shape
        out, c = [], self.c
        for stage in range(3):
            if stage:
                c, h = 2 * c, (h + 1) // 2
            out += [(c, h)] * self.cells
        return out

    def build(self, genotype: str) -> nn.Module:
        ops = [OPS[k] for k in self.parse(genotype)]
        return Skeleton(lambda c: Cell(ops, c), self.c, self.cells, self.num_classes, self.input_shape[1], False)

    def supernet(self) -> nn.Module:
        return Skeleton(lambda c: SuperCell(c, self.partial_channels, edge_checkpoint(self.checkpoint, c, self.c)), self.c, self.cells,
                        self.num_classes, self.input_shape[1], True)

    def option_kernels(self) -> list[list[list[KernelSpec]]]:
        table = []
        for _ in EDGES:
            row = []
            for op in OPS:
                ks = []
                for c, h in self._stage_shapes():
                    mod = make_op(op, c)
                    if op not in ("none", "skip_connect"):
                        ks += self._exported.get(("nb201", op, c, h), mod, (1, c, h, h))
                row.append(ks)
            table.append(row)
        return table

    def kernels(self, input_shape=None) -> list[KernelSpec]:
        if input_shape is not None and tuple(input_shape) != self.input_shape:
            return type(self)(self.c, self.cells, self.num_classes, input_shape).kernels()
        return self._exported.space_kernels(self)
