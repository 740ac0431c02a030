"""What every search space provides to the search: decisions, genotypes, costs, networks.

A space is a list of *decisions* (an edge of a cell, a layer of a chain), each choosing one of its
*options* (candidate ops). A point of the space is a *choice vector*: one option index per decision.
Every space writes choice vectors as a genotype string of its own documented grammar
(``format``/``parse`` round-trip), samples and mutates them, builds them as plain nn.Modules,
builds its supernet (every option of every decision, mixed by codesign's fused ops), and lists
the kernels each option runs so that a cost model can cost every (decision, option).

The cost of a network is modelled additively: ``base + sum_d cost[d][choice_d]``, where ``base``
covers what no decision changes (stem, reductions, classifier, the sums of a cell's nodes) and is
fitted (with a scale of the option costs) so that the additive costs of the cheapest and the
costliest network equal the cost model's predictions for their whole exported graphs
(``codesign.search.costs``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch.nn as nn

from ..errors import CodesignError
from ..kernelspec import KernelSpec


@dataclass(frozen=True)
class Decision:
    name: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class NetworkGraph:
    """A network of a space drawn as a graph (reports): node labels in topological order, the
    first ``inputs`` of them the inputs, and edges ``(from, to, op)`` between node indices (op ""
    for a plain connection)."""

    title: str
    nodes: tuple[str, ...]
    edges: tuple[tuple[int, int, str], ...]
    inputs: int = 1


class SearchSpace:
    """Base class: subclasses set ``name`` (by registration) and implement the abstract methods."""

    name = "?"
    input_shape: tuple[int, ...] = (1, 3, 32, 32)
    num_classes: int = 10

    # --- abstract ------------------------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        raise NotImplementedError

    def parse(self, text: str) -> list[int]:
        """Genotype string -> choice vector; CodesignError naming the offending part."""
        raise NotImplementedError

    def format(self, choices: list[int]) -> str:
        """Choice vector -> genotype string (``parse(format(c)) == c``)."""
        raise NotImplementedError

    def build(self, genotype: str) -> nn.Module:
        """The derived network of a genotype as a plain nn.Module (input ``input_shape``)."""
        raise NotImplementedError

    def supernet(self) -> nn.Module:
        """The weight-sharing supernet: ``forward(x, weights, index=None)`` with ``weights`` a list
        of one 1-D tensor per decision (mixing weights) and ``index`` None (every option runs,
        mixed by ``codesign.mixed_op``) or one sampled option index per decision (one path)."""
        raise NotImplementedError

    def option_kernels(self) -> list[list[list[KernelSpec]]]:
        """``[decision][option] -> kernels`` that option runs (TVM's fused kernels)."""
        raise NotImplementedError

    def kernels(self, input_shape=None) -> list[KernelSpec]:
        """Every distinct kernel the supernet and derived networks run, for the profiler."""
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------
    def network_kernels(self, genotype: str) -> list[KernelSpec]:
        """The kernels TVM runs for a genotype's whole network (exported once, then cached)."""
        from .kernels import ExportedKernels

        if getattr(self, "_exported", None) is None:
            self._exported = ExportedKernels()
        return self._exported.network(self, self.canonical(genotype))

    def graphs(self, genotype: str) -> list[NetworkGraph]:
        """The genotype drawn as graphs: a cell space gives its cells; the default is the chain of
        decisions, input to output, each node labelled with its decision and chosen option."""
        choices = self.parse(genotype)
        nodes = ("input",) + tuple(f"{d.name}: {d.options[c]}" for d, c in zip(self.decisions(), choices)) + ("output",)
        return [NetworkGraph("layers", nodes, tuple((i, i + 1, "") for i in range(len(nodes) - 1)))]

    def canonical(self, genotype: str) -> str:
        return self.format(self.parse(genotype))

    def valid(self, choices: list[int]) -> bool:
        """Whether a choice vector is a network of the space (all are, unless a space restricts)."""
        return len(choices) == len(self.decisions())

    def random_choices(self, rng: random.Random) -> list[int]:
        return [rng.randrange(len(d.options)) for d in self.decisions()]

    def sample(self, rng: random.Random) -> str:
        """A uniformly random genotype string."""
        return self.format(self.random_choices(rng))

    def mutate(self, choices: list[int], rng: random.Random) -> list[int]:
        """One decision changed to another of its options (regularised evolution's mutation)."""
        decisions = self.decisions()
        movable = [i for i, d in enumerate(decisions) if len(d.options) > 1]
        if not movable:
            return list(choices)
        out = list(choices)
        i = rng.choice(movable)
        out[i] = rng.choice([k for k in range(len(decisions[i].options)) if k != choices[i]])
        return out

    def derive(self, probs: list[np.ndarray]) -> list[int]:
        """The discrete network of architecture weights: argmax of every decision."""
        return [int(np.argmax(p)) for p in probs]

    def identity_options(self) -> list[int | None]:
        """Per decision, the index of its parameter-free identity option (``skip_connect``, ``skip``,
        ``identity``), or None where it has none or where that option is a learned op (a strided
        skip). DARTS-'s auxiliary skip connection goes where this is not None."""
        names = ("skip_connect", "skip", "identity")
        return [next((k for k, o in enumerate(d.options) if o in names), None) for d in self.decisions()]

    def cheapest(self, cost: list[np.ndarray]) -> list[int]:
        """The choice vector of least additive cost."""
        return [int(np.argmin(c)) for c in cost]

    def costliest(self, cost: list[np.ndarray]) -> list[int]:
        """The choice vector of highest additive cost (the reference of relative budgets)."""
        return [int(np.argmax(c)) for c in cost]

    def describe(self) -> dict:
        ds = self.decisions()
        return {"space": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "decisions": len(ds), "options": sorted({o for d in ds for o in d.options}),
                "size": float(np.prod([float(len(d.options)) for d in ds]))}


def check_shape(name: str, input_shape, num_classes: int) -> tuple[int, ...]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise CodesignError(f"{name} space: input shape must be 4 positive ints N,C,H,W, got {tuple(input_shape)}")
    if num_classes < 1:
        raise CodesignError(f"{name} space: num_classes must be >= 1, got {num_classes}")
    return (1,) + shape[1:]


def split_items(text: str, sep: str, n: int, what: str) -> list[str]:
    parts = text.strip().split(sep)
    if len(parts) != n:
        raise CodesignError(f"{what}: {n} items separated by {sep!r} expected, got {len(parts)} in {text!r}")
    return parts
