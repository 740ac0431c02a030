"""Kernels of candidate ops and networks, found by exporting them to ONNX and splitting the graph
with TVM's fusion rules (``codesign.graph``), so that what the profiler measures and what
the cost model is asked about use the same kernel keys as whole-network prediction."""

from __future__ import annotations

import random

import torch

from ..kernelspec import KernelSpec


class ExportedKernels:
    """A per-space cache of ``module_kernels`` results keyed by a signature of the module."""

    def __init__(self):
        self._cache: dict = {}

    def get(self, key, module, shape) -> list[KernelSpec]:
        if key not in self._cache:
            from ..graph import module_kernels

            self._cache[key] = module_kernels(module, tuple(shape))
        return list(self._cache[key])

    def network(self, space, genotype: str) -> list[KernelSpec]:
        """A whole network's kernels. The network is built only when they are not cached, and on a
        forked random generator: a search that looks at networks whole between its own draws
        (``search.strategies.meets_whole``) leaves torch's generator as it found it."""
        key = (space.name, "net", genotype)
        if key in self._cache:
            return list(self._cache[key])
        with torch.random.fork_rng():
            return self.get(key, space.build(genotype), space.input_shape)

    def space_kernels(self, space, samples: int = 6, seed: int = 0) -> list[KernelSpec]:
        """Every option's kernels, plus the kernels of networks that use each option everywhere it
        is offered and of ``samples`` random networks: the fused variants (a conv absorbing the
        node sum after it, the activation of the next op) depend on the neighbours."""
        specs = [k for row in space.option_kernels() for ks in row for k in ks]
        decisions = space.decisions()
        width = max(len(d.options) for d in decisions)
        genotypes = []
        for k in range(width):
            choices = [min(k, len(d.options) - 1) for d in decisions]
            if space.valid(choices):
                genotypes.append(space.format(choices))
        rng = random.Random(seed)
        genotypes += [space.sample(rng) for _ in range(samples)]
        for g in dict.fromkeys(genotypes):
            specs += self.network(space, g)
        return list(dict.fromkeys(specs))
