"""A supernet edge choosing among candidate ops, computed by ``codesign.mixed_op``.

Parameter-free candidates (zero, identity, 3x3 pools) never become tensors: the fused op computes
them inside its kernel and recomputes them in backward. Parametric candidates (convs) run as
torch modules and are mixed by the same op.

``forward(x, weights)`` mixes every candidate (DARTS); ``forward(x, weights, index=k)`` runs only
candidate k, scaled by ``weights[k]`` (GDAS/FBNet single path: with a hard straight-through
Gumbel sample, ``weights[k]`` is 1 in forward and carries the gradient to every logit).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import mixed_op

# Option names of the spaces that map to the fused op's parameter-free candidates.
FREE_OPTION = {
    "none": "zero", "zero": "zero",
    "skip_connect": "identity", "skip": "identity", "identity": "identity",
    "avg_pool_3x3": "avg_pool_3x3", "max_pool_3x3": "max_pool_3x3",
}


class MixedEdge(nn.Module):
    """Candidates ``options`` (names) of one decision; ``modules[name]`` for parametric ones.

    ``fused`` is False where the fused op cannot apply (candidates that change the channel
    count): the weighted sum is then taken in torch.
    """

    def __init__(self, options: list[str], modules: dict[str, nn.Module], stride: int = 1):
        super().__init__()
        self.options = list(options)
        self.stride = stride
        self.free = {}
        for name in self.options:
            if name in modules:
                continue
            free = FREE_OPTION.get(name)
            if free is None or (free == "identity" and stride != 1):
                raise ValueError(f"MixedEdge: option {name!r} needs a module at stride {stride}")
            self.free[name] = free
        self.parametric = [n for n in self.options if n not in self.free]
        self.ops = nn.ModuleDict({n: modules[n] for n in self.parametric})
        order = self.parametric + list(self.free)
        # weights are given in option order; the fused op wants [parametric..., free...]
        self.register_buffer("perm", torch.tensor([self.options.index(n) for n in order]), persistent=False)
        self.free_names = [self.free[n] for n in self.free]

    def forward(self, x: torch.Tensor, weights: torch.Tensor, index: int | None = None,
                fused: bool = True) -> torch.Tensor:
        if index is not None:
            name = self.options[index]
            w = weights[index:index + 1]
            if name in self.free:
                return mixed_op(x, [], w, [self.free[name]], self.stride)
            y = self.ops[name](x)
            if fused and y.shape[1] == x.shape[1]:
                return mixed_op(x, [y], w, [], self.stride)
            return y * w[0]
        ys = [self.ops[n](x) for n in self.parametric]
        if fused and all(y.shape[1] == x.shape[1] for y in ys):
            return mixed_op(x, ys, weights[self.perm], self.free_names, self.stride)
        out = 0
        for n, y in zip(self.parametric, ys):
            out = out + weights[self.options.index(n)] * y
        for n in self.free:
            if self.free[n] != "zero":
                raise ValueError(f"MixedEdge: option {n!r} cannot mix with channel-changing candidates")
        return out
