"""Training-free scores of untrained networks, and the ``naswot`` strategy that uses one to choose
which candidates a sample-based search trains.

NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021): for one batch
of inputs, every ReLU-family unit of the untrained network is either active (output > 0) or not;
K[i, j] counts the units on which inputs i and j agree. A network whose units separate the inputs
into more distinct activation patterns has a better-conditioned K, and log|det K| is its score.
A network whose output does not depend on its input (an NB201 cell with no path from input to
output) scores -inf, whatever its units before the break do: such a network cannot learn.

SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively conserving
synaptic flow", NeurIPS 2020; used as a NAS score by Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS", ICLR 2021): every weight replaced by its absolute value, an all-ones input, and
the sum over parameters of |θ · ∂R/∂θ| for R the sum of the output. It needs no data and rewards
networks whose parameters all carry signal from input to output.

The scores are a registry (``ZC_SCORES``); ``--zc-score`` names one, or several joined by ``+``,
whose ranks within the pool are summed.
"""

from __future__ import annotations

import copy
import math
import random
import time

import numpy as np
import torch
import torch.nn as nn

from ..errors import CodesignError
from ..registry import Registry
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


def synflow_score(net: nn.Module, x: torch.Tensor) -> float:
    """log of SynFlow's saliency of ``net`` (module docstring), computed on a float64 copy with every
    parameter and buffer made non-negative, in eval mode, on one all-ones input of ``x``'s shape
    (``x`` itself is not read); ``net`` is left as it was. -inf where no parameter gets a gradient
    (the output does not depend on any weight)."""
    twin = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        for t in list(twin.parameters()) + list(twin.buffers()):
            if t.is_floating_point():
                t.abs_()
    twin.zero_grad(set_to_none=True)
    out = twin(torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device))
    out.sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in twin.parameters() if p.grad is not None)
    return math.log(total) if total > 0 and math.isfinite(total) else -math.inf


def params_score(net: nn.Module, x: torch.Tensor) -> float:
    """The number of trainable parameters (a strong baseline among training-free scores under a
    latency budget: within the budget, the larger network)."""
    return float(sum(p.numel() for p in net.parameters() if p.requires_grad))


ZC_SCORES = Registry("zero-cost score", attribute=None)
"""Training-free scores: ``fn(net, x) -> float``, higher is better, -inf for a network that cannot
learn; ``fn.passes``: the compute of one score, in passes (``FORWARD_PASS`` if absent)."""
register_zc_score = ZC_SCORES.register
DEFAULT_ZC_SCORE = "synflow"

for _name, _fn, _passes in (("naswot", naswot_score, FORWARD_PASS),
                            # one image forward and backward in float64: under a batch's forward
                            ("synflow", synflow_score, FORWARD_PASS),
                            ("params", params_score, 0.0)):
    _fn.passes = _passes
    register_zc_score(_name)(_fn)


def parse_zc_score(spec: str) -> list[str]:
    """The registered scores ``spec`` names (``"synflow"``, ``"synflow+params"``).

    Raises:
        CodesignError: an empty, unknown or repeated name.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise CodesignError(f"--zc-score takes a score or scores joined by '+' ({', '.join(ZC_SCORES.names())}), "
                            f"got {spec!r}")
    names = [n.strip() for n in spec.split("+")]
    for n in names:
        if n not in ZC_SCORES.names():
            raise CodesignError(f"--zc-score: unknown score {n!r}; known: {', '.join(ZC_SCORES.names())}")
    if len(set(names)) != len(names):
        raise CodesignError(f"--zc-score names a score twice: {spec!r}")
    return names


def score_passes(names: list[str]) -> float:
    """Compute one design's scoring costs, in passes: the sum over its scores, and at least a
    forward batch (the network is built and looked at)."""
    return max(FORWARD_PASS, sum(float(getattr(ZC_SCORES.get(n), "passes", FORWARD_PASS)) for n in names))


def combine_scores(entries: list[dict], names: list[str]) -> list[float]:
    """One score per pool entry (``entry["scores"][name]``): the score itself for one name; for
    several, the sum of each score's rank among the entries (ties share the mean rank), so no score
    outweighs another by its units. An entry with a non-finite score gets -inf: it cannot learn."""
    finite = [all(math.isfinite(e["scores"][n]) for n in names) for e in entries]
    if len(names) == 1:
        return [e["scores"][names[0]] if ok else -math.inf for e, ok in zip(entries, finite)]
    from scipy.stats import rankdata

    kept = [e for e, ok in zip(entries, finite) if ok]
    if not kept:
        return [-math.inf] * len(entries)
    it = iter(np.sum([rankdata([e["scores"][n] for e in kept]) for n in names], axis=0).tolist())
    return [next(it) if ok else -math.inf for ok in finite]


def pool_size(ctx: SearchContext, select: str = "score", per_design: float = FORWARD_PASS) -> int:
    """Designs a zero-cost search scores (``per_design`` passes each). ``zc_pool`` when the user
    gave one. Otherwise, under a compute limit (``max_passes``) with ``select="score"``, the largest
    pool that leaves room for the one candidate trained: a search that keeps only the best score has no other use for the compute, and
    on NB201 the best score of a larger pool is a better cell by NAS-Bench-201's public accuracies
    (top of 100 cells: 85th percentile under the budget on average, top of 1,500: 93rd;
    docs/search.md). Without a limit, ``DEFAULT_POOL``."""
    given = getattr(ctx.cfg, "zc_pool", None)
    if given is not None:
        return int(given)
    if ctx.max_passes is None or select != "score":
        return DEFAULT_POOL
    return max(1, math.floor((ctx.max_passes - candidate_passes(ctx)) / per_design + 1e-9))


def strategy_scores(strategy: str, zc_score: str | None) -> list[str]:
    """The scores a zero-cost strategy ranks by: ``naswot`` always NASWOT; ``zero-cost``
    ``zc_score``, or ``DEFAULT_ZC_SCORE``.

    Raises:
        CodesignError: a bad ``zc_score``, or one given to ``naswot`` that is not NASWOT.
    """
    if strategy == "naswot":
        if zc_score not in (None, "naswot"):
            raise CodesignError(f"--strategy naswot scores by NASWOT; for --zc-score {zc_score} use "
                                "--strategy zero-cost")
        return ["naswot"]
    return parse_zc_score(DEFAULT_ZC_SCORE if zc_score is None else zc_score)


@register_strategy("zero-cost")
class ZeroCostSearch(SampleSearch):
    """Search by a training-free score: designs under the budgets are drawn and each untrained
    network is scored (``--zc-score``: NASWOT on one training batch, SynFlow, the parameter count,
    or the rank sum of several; each design costs ``score_passes`` in the search's passes, at least
    a forward-only batch, ``FORWARD_PASS``). ``naswot`` is this strategy with NASWOT's score. The
    pool is ``zc_pool`` designs if given; else, with ``zc_select="score"`` and ``max_passes``, as
    many as the compute pays for besides the one candidate trained (``pool_size``); else
    ``DEFAULT_POOL``.

    ``zc_select="score"`` (the default): the best-scored design wins. It alone is trained, as
    random's candidates are (``candidate_epochs``), as a check that it learns and for the report;
    the search costs the pool's scoring and that one candidate. On NB201 NASWOT ranks cells by
    their accuracy after full training (NAS-Bench-201's public CIFAR-10 table) at Kendall tau 0.57,
    where the validation accuracy after a short training ranks them at -0.1 (docs/search.md,
    "Choosing the default"), so a short training must not overrule the score. On the DARTS space
    NASWOT ranks random search's candidates by their 20-epoch accuracy at 0.01 and SynFlow at 0.44,
    hence ``DEFAULT_ZC_SCORE`` (docs/search.md, "Which training-free score").

    ``zc_select="val"``: candidates are trained in the order of their scores, best first, as
    random's are, and the best validation accuracy is kept: for a budget whose candidate training
    is long enough to say which network is better.

    The pool is scored once and kept in the checkpoint; a resumed run trains the same candidates in
    the same order."""

    def __init__(self, ctx: SearchContext):
        super().__init__(ctx)
        self.select = getattr(ctx.cfg, "zc_select", "score")
        self.scores = strategy_scores(self.name, getattr(ctx.cfg, "zc_score", None))
        self.per_design = score_passes(self.scores)
        self.pool_size = pool_size(ctx, self.select, self.per_design)
        self.pool: list[dict] | None = None  # scored designs, best first
        self.pool_seconds = 0.0
        self.over_whole: list[dict] = []  # pool designs dropped when their turn came: over a budget whole

    def state(self) -> dict:
        return {**super().state(), "pool": self.pool, "pool_seconds": self.pool_seconds, "over_whole": self.over_whole}

    def load(self, s: dict) -> None:
        super().load(s)
        self.pool = s.get("pool")
        for entry in self.pool or []:  # a pool scored before scores were named: NASWOT's
            if "score" not in entry and "naswot_score" in entry:
                entry["scores"] = {"naswot": entry["naswot_score"]}
                entry["score"] = entry["naswot_score"]
        self.pool_seconds = float(s.get("pool_seconds", 0.0))
        self.over_whole = list(s.get("over_whole", []))

    def planned(self) -> int:
        return 1 if self.select == "score" else super().planned()

    def overhead_passes(self) -> float:
        return self.per_design * self.pool_size

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
        label = "+".join(self.scores)
        bar = _bar(self.pool_size, f"{self.name}: scoring {self.pool_size} designs by {label}", ctx.progress,
                   "design")
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
                         "scores": {n: float(ZC_SCORES.get(n)(net, probe)) for n in self.scores}})
            bar.update(1)
        bar.close()
        for entry, value in zip(pool, combine_scores(pool, self.scores)):
            entry["score"] = value
        finite = [p for p in pool if math.isfinite(p["score"])]
        if not finite:
            raise CodesignError(f"{self.name}: no design under the budgets has a finite {label} score (every "
                                "sampled network ignores its input or its weights); use another strategy")
        # networks that ignore their input are never trained
        self.pool = sorted(finite, key=lambda p: (-p["score"], p["index"]))
        self.pool_seconds = time.perf_counter() - t0
        top = self.pool[0]
        ctx.log({"pool": len(pool), "scored_finite": len(finite), "score": label, "best_score": top["score"],
                 "best_scores": top["scores"], "best_genotype": top["genotype"], "seconds": self.pool_seconds})
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
        return {**super().run(), "pool": self.pool_size, "select": self.select, "score": "+".join(self.scores),
                "pool_over_whole": len(self.over_whole)}


@register_strategy("naswot")
class NaswotSearch(ZeroCostSearch):
    """``zero-cost`` with NASWOT's score (Mellor et al., 2021)."""
