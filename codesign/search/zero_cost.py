"""Training-free scores of untrained networks, and the ``naswot`` strategy that uses one to choose
which candidates a sample-based search trains.

NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021): for one batch
of inputs, every ReLU-family unit of the untrained network is either active (output > 0) or not;
K[i, j] counts the units on which inputs i and j agree. A network whose units separate the inputs
into more distinct activation patterns has a better-conditioned K, and log|det K| is its score.
A network whose output does not depend on its input (an NB201 cell with no path from input to
output) scores -inf, whatever its units before the break do: such a network cannot learn.
"""

from __future__ import annotations

import math
import random
import time

import torch
import torch.nn as nn

from ..errors import CodesignError
from .strategies import (
    SampleSearch,
    SearchContext,
    _bar,
    candidate_passes,
    register_strategy,
    sample_feasible,
)
from .weight_sharing import FORWARD_PASS

DEFAULT_POOL = 100  # designs scored when neither --zc-pool nor --max-passes sizes the pool

# Activations whose output is positive exactly where their input is: the unit's binary code.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.SiLU, nn.GELU)


def naswot_score(net: nn.Module, x: torch.Tensor) -> float:
    """log|det K| of the activation-pattern kernel of ``net`` on the batch ``x`` (one forward in
    training mode, no gradients; ``net`` is left as it was).

    Raises:
        CodesignError: the network has no ReLU-family activation to read codes from.
    """
    codes: list[torch.Tensor] = []

    def hook(module, inputs, output):
        codes.append((output.detach().flatten(1) > 0).to(torch.float64))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, ACTIVATIONS)]
    if not handles:
        raise CodesignError(f"naswot: {type(net).__name__} has no ReLU-family activation to score")
    was = net.training
    try:
        with torch.no_grad():
            out = net.train()(x)
    finally:
        net.train(was)
        for h in handles:
            h.remove()
    if torch.is_tensor(out) and len(out) > 1 and bool((out == out[:1]).all()):
        return -math.inf  # the output ignores the input (units before the break still vary)
    c = torch.cat(codes, 1)
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) > 0 else -math.inf


def pool_size(ctx: SearchContext, select: str = "score") -> int:
    """Designs ``naswot`` scores. ``zc_pool`` when the user gave one. Otherwise, under a compute
    limit (``max_passes``) with ``select="score"``, the largest pool that leaves room for the one
    candidate trained: a search that keeps only the best score has no other use for the compute, and
    on NB201 the best score of a larger pool is a better cell by NAS-Bench-201's public accuracies
    (top of 100 cells: 85th percentile under the budget on average, top of 1,500: 93rd;
    docs/search.md). Without a limit, ``DEFAULT_POOL``."""
    given = getattr(ctx.cfg, "zc_pool", None)
    if given is not None:
        return int(given)
    if ctx.max_passes is None or select != "score":
        return DEFAULT_POOL
    return max(1, math.floor((ctx.max_passes - candidate_passes(ctx)) / FORWARD_PASS + 1e-9))


@register_strategy("naswot")
class ZeroCostSearch(SampleSearch):
    """Search by a training-free score: designs under the budgets are drawn and each untrained
    network is scored by NASWOT on one training batch (one forward-only batch, ``FORWARD_PASS``,
    counted in the search's passes). The pool is ``zc_pool`` designs if given; else, with
    ``zc_select="score"`` and ``max_passes``, as many as the compute pays for besides the one
    candidate trained (``pool_size``); else ``DEFAULT_POOL``.

    ``zc_select="score"`` (the default): the best-scored design wins. It alone is trained, as
    random's candidates are (``candidate_epochs``), as a check that it learns and for the report;
    the search costs the pool's scoring and that one candidate. On NB201 the score ranks cells by
    their accuracy after full training (NAS-Bench-201's public CIFAR-10 table) at Kendall tau 0.57,
    where the validation accuracy after a short training ranks them at -0.1 (docs/search.md,
    "Choosing the default"), so a short training must not overrule it.

    ``zc_select="val"``: candidates are trained in the order of their scores, best first, as
    random's are, and the best validation accuracy is kept: for a budget whose candidate training
    is long enough to say which network is better.

    The pool is scored once and kept in the checkpoint; a resumed run trains the same candidates in
    the same order."""

    def __init__(self, ctx: SearchContext):
        super().__init__(ctx)
        self.select = getattr(ctx.cfg, "zc_select", "score")
        self.pool_size = pool_size(ctx, self.select)
        self.pool: list[dict] | None = None  # scored designs, best first
        self.pool_seconds = 0.0
        self.over_whole: list[dict] = []  # pool designs dropped when their turn came: over a budget whole

    def state(self) -> dict:
        return {**super().state(), "pool": self.pool, "pool_seconds": self.pool_seconds, "over_whole": self.over_whole}

    def load(self, s: dict) -> None:
        super().load(s)
        self.pool = s.get("pool")
        self.pool_seconds = float(s.get("pool_seconds", 0.0))
        self.over_whole = list(s.get("over_whole", []))

    def planned(self) -> int:
        return 1 if self.select == "score" else super().planned()

    def overhead_passes(self) -> float:
        return FORWARD_PASS * self.pool_size

    def overhead_seconds(self) -> float:
        return self.pool_seconds

    def remaining(self) -> int:
        left = super().remaining()
        if self.pool is None:
            return left
        if self.select == "score":
            trained = 1  # the best-scored design only
        else:
            self._keep_whole(len(self.history) + left)  # what the compute can still train: under the budgets whole
            trained = len(self.pool)
        return max(0, min(left, trained - len(self.history)))

    def _keep_whole(self, n: int) -> None:
        """Make the pool's first ``n`` designs (best score first) ones the whole-design cost also
        puts under the budgets: the others leave the pool for ``over_whole``, when their turn comes
        (the pool is drawn under the table alone: looking at every design whole costs an export
        each). The checkpoint keeps the pool as pruned, so a resumed run proposes the same designs.
        Where no design of the pool is under the budgets whole, the best-scored one is put back:
        derivation repairs it."""
        i = 0
        while i < min(n, len(self.pool)):
            entry = self.pool[i]
            if entry.get("whole_ok") is None:
                entry["whole_ok"] = self.meets_whole(entry["choices"])
            if entry["whole_ok"] or entry.get("kept_over"):
                i += 1
            else:
                self.over_whole.append(self.pool.pop(i))
        if not self.pool and self.over_whole:
            self.pool.append({**self.over_whole[0], "kept_over": True})
            self.ctx.log({"note": "no design of the pool is under the budgets by its whole-network cost; the "
                                  "best-scored one is kept and derivation repairs it"})

    def _score_pool(self) -> None:
        ctx, cfg = self.ctx, self.ctx.cfg
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_033 + 5)
        probe = ctx.x_train[torch.randperm(len(ctx.x_train), generator=gen)[:cfg.batch_size]]
        rng = random.Random(cfg.seed * 7_919 + 3)
        seen, pool = set(), []
        bar = _bar(self.pool_size, f"naswot: scoring {self.pool_size} designs", ctx.progress, "design")
        for _ in range(20 * self.pool_size):  # distinct designs; a small space may have fewer
            if len(pool) == self.pool_size:
                break
            c = sample_feasible(ctx, rng, whole=False)  # looked at whole only when chosen (``propose``)
            if tuple(c) in seen:
                continue
            seen.add(tuple(c))
            genotype = ctx.space.format(ctx.costs.split(c)[0])
            torch.manual_seed(cfg.seed * 1_000 + len(pool))
            net = ctx.space.build(genotype).to(probe.device)
            pool.append({"index": len(pool), "choices": list(c), "genotype": genotype,
                         "naswot_score": naswot_score(net, probe)})
            bar.update(1)
        bar.close()
        finite = [p for p in pool if math.isfinite(p["naswot_score"])]
        if not finite:
            raise CodesignError("naswot: no design under the budgets has a finite score (every sampled network "
                                "ignores its input); use another strategy")
        # networks that ignore their input are never trained
        self.pool = sorted(finite, key=lambda p: (-p["naswot_score"], p["index"]))
        self.pool_seconds = time.perf_counter() - t0
        top = self.pool[0]
        ctx.log({"pool": len(pool), "scored_finite": len(finite), "best_naswot_score": top["naswot_score"],
                 "best_genotype": top["genotype"], "seconds": self.pool_seconds})
        self.save()

    def propose(self) -> list[int]:
        # called once per candidate in candidate order (also when a resumed run re-proposes the
        # candidates that finished ahead of the history): the k-th proposal is the k-th best score
        # among the designs under the budgets whole too (``_keep_whole``), so that derivation
        # delivers the design chosen rather than a repaired one
        k = self._proposed
        self._keep_whole(k + 1)
        k = min(k, len(self.pool) - 1)  # every design over whole: the best-scored one, put back
        self._proposed += 1
        return list(self.pool[k]["choices"])

    def prepare(self) -> None:
        if self.pool is None:
            self._score_pool()
        self._proposed = len(self.history)

    def run(self) -> dict:
        return {**super().run(), "pool": self.pool_size, "select": self.select,
                "pool_over_whole": len(self.over_whole)}
