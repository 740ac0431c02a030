"""Remedies against the collapse of gradient architecture search (a registry, ``--regularizer``).

A short differentiable search on a small supernet tends to *collapse*: parameter-free options
(skip, pooling, none) train fastest, win their edges early and keep winning, so the derived cell is
an almost empty network whatever the data (the "rich get richer" failure of DARTS, Zela et al. 2020,
and of GDAS on a short schedule). Each remedy below is one named plug-in that acts on the
architecture weights of ``darts``, ``darts2`` or ``gdas`` through five hooks; several can be chained
(``--regularizer beta-darts,tunas``) and tuned with ``--regularizer-arg NAME.KEY=VALUE``.

- ``beta-darts`` (Ye et al., "beta-DARTS: Beta-Decay Regularization for Differentiable Architecture
  Search", CVPR 2022): adds ``lambda(t) * mean_d logsumexp(alpha_d)`` to the architecture loss,
  whose gradient (the softmax itself) keeps the logits small and their softmax from saturating;
  ``lambda`` grows linearly from 0 to ``weight`` over the architecture-search steps.
- ``drnas`` (Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021): every decision's
  mixing weights are a sample of a Dirichlet distribution with concentration ``elu(alpha) + 1``
  (pathwise gradient), in the weight step too, so the supernet trains under varied mixtures; the
  distribution's mean is what the budgets and the derivation read; ``weight`` scales a
  KL(Dir(beta) || Dir(1)) anchor that keeps the concentrations from exploding. darts/darts2 only
  (gdas already samples one path).
- ``darts-minus`` (Chu et al., "DARTS-: Robustly Stepping out of Performance Collapse Without
  Indicators", ICLR 2021): an auxiliary skip connection of weight ``beta(t)`` on every edge whose
  space has a parameter-free identity option, decaying linearly from ``beta0`` to 0 over the
  architecture-search steps, so that the skip option no longer has to win its softmax to give the
  gradient a residual path. darts/darts2 only (a single path has no mixture to add it to).
- ``shrink`` (progressive shrinking of the candidate set, after P-DARTS's search-space
  approximation, Chen et al., "Progressive Differentiable Architecture Search", ICCV 2019): at 1/3
  and 2/3 of the architecture-search steps, every decision drops its weakest options, from n
  options down to n - round((n - 2) / 2) and then 2, so that the last third of the search
  decides among strong candidates only. Dropped options keep a logit of -30 (probability ~1e-13).
- ``tunas`` (Bender et al., "Can Weight Sharing Outperform Random Architecture Search? An
  Investigation With TuNAS", CVPR 2020: the absolute-value cost reward): adds
  ``weight * |E[cost_b] / limit_b - 1|`` for every budget, a pull *up* toward the budget when the
  distribution sits below it. The Lagrange multipliers only push down; without this term a search
  that drifts to parameter-free cells far under the budget gets no signal that capacity is left.

The hooks: ``probs`` (the distribution of the network decisions, softmax by default), ``mix`` (the
mixing weights of one darts step), ``loss`` (a term of the architecture loss), ``after_step`` (after
every architecture step) and ``state``/``load`` (checkpointed with the search).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import CodesignError
from ..registry import Registry

REGULARIZERS = Registry("regularizer")
register_regularizer = REGULARIZERS.register

MASKED_LOGIT = -30.0  # a dropped option (shrink): softmax weight ~1e-13 next to logits near 0


def list_regularizers() -> list[str]:
    return REGULARIZERS.names()


class Regularizer:
    """Base class: every hook does nothing. ``defaults`` lists the settings ``--regularizer-arg``
    may change; ``strategies`` those it applies to."""

    name = "?"
    strategies: tuple[str, ...] = ("darts", "darts2", "gdas")
    defaults: dict[str, float] = {}

    def __init__(self, search, **settings):
        self.search = search
        unknown = set(settings) - set(self.defaults)
        if unknown:
            raise CodesignError(f"regularizer {self.name}: unknown setting(s) {', '.join(sorted(unknown))}; "
                                f"known: {', '.join(sorted(self.defaults)) or 'none'}")
        for key, default in self.defaults.items():
            value = float(settings.get(key, default))
            if not math.isfinite(value) or value < 0:
                raise CodesignError(f"regularizer {self.name}: {key} must be a number >= 0, got {settings[key]!r}")
            setattr(self, key, value)

    def probs(self, alphas: list[torch.Tensor]) -> list[torch.Tensor] | None:
        return None

    def mix(self, weights: list[torch.Tensor], alphas: list[torch.Tensor]) -> list[torch.Tensor]:
        return weights

    def loss(self, alphas: list[torch.Tensor], probs: list[torch.Tensor]) -> torch.Tensor | None:
        return None

    def after_step(self) -> None:
        pass

    def state(self) -> dict:
        return {}

    def load(self, state: dict) -> None:
        pass


@register_regularizer("beta-darts")
class BetaDecay(Regularizer):
    defaults = {"weight": 1.0}

    def loss(self, alphas, probs):
        lam = self.weight * self.search.arch_progress()
        return lam * torch.stack([torch.logsumexp(a, 0) for a in alphas]).mean()


def _concentration(a: torch.Tensor) -> torch.Tensor:
    return F.elu(a) + 1.0 + 1e-6  # > 0 everywhere, 1 at a = 0


@register_regularizer("drnas")
class DrNAS(Regularizer):
    strategies = ("darts", "darts2")
    defaults = {"weight": 1e-3}

    def probs(self, alphas):
        out = []
        for a in alphas:
            beta = _concentration(a)
            out.append(beta / beta.sum())
        return out

    def mix(self, weights, alphas):
        # A dropped option (shrink) has a vanishing concentration; its sample is zeroed and the rest
        # renormalised, so the two remedies chain.
        out = []
        for a in alphas:
            keep = a.detach() > MASKED_LOGIT + 1
            conc = torch.where(keep, _concentration(a), torch.ones_like(a))  # no gradient through dropped ones
            theta = torch.distributions.Dirichlet(conc).rsample() * keep.to(a.dtype)
            out.append(theta / theta.sum().clamp_min(1e-12))
        return out

    def loss(self, alphas, probs):
        kl = [torch.distributions.kl_divergence(torch.distributions.Dirichlet(_concentration(a)),
                                                torch.distributions.Dirichlet(torch.ones_like(a))) for a in alphas]
        return self.weight * torch.stack(kl).sum()


@register_regularizer("darts-minus")
class AuxiliarySkip(Regularizer):
    strategies = ("darts", "darts2")
    defaults = {"beta0": 1.0}

    def __init__(self, search, **settings):
        super().__init__(search, **settings)
        self.identity = search.ctx.space.identity_options()

    def mix(self, weights, alphas):
        beta = self.beta0 * (1.0 - self.search.arch_progress())
        if beta <= 0:
            return weights
        out = []
        for w, k in zip(weights, self.identity):
            if k is not None:
                w = w + beta * F.one_hot(torch.tensor(k), len(w)).to(w.dtype)
            out.append(w)
        return out


@register_regularizer("shrink")
class ProgressiveShrinking(Regularizer):
    defaults = {"stages": 3.0}

    def __init__(self, search, **settings):
        super().__init__(search, **settings)
        if self.stages < 2 or self.stages != int(self.stages):
            raise CodesignError(f"regularizer shrink: stages must be an integer >= 2, got {self.stages:g}")
        self.dropped: list[list[int]] = [[] for _ in range(search.n_net)]
        self.done = 0  # shrink events so far

    def keep(self, n: int, event: int) -> int:
        """Options kept by a decision of n options after ``event`` of stages-1 shrink events."""
        events = int(self.stages) - 1
        return max(2, n - round(event * (n - 2) / events)) if n > 2 else n

    def after_step(self):
        events = int(self.stages) - 1
        due = min(events, int(self.search.arch_progress() * self.stages + 1e-9))
        alphas = self.search.alphas
        with torch.no_grad():
            while self.done < due:
                self.done += 1
                for d in range(self.search.n_net):
                    a = alphas[d]
                    alive = [k for k in range(len(a)) if k not in self.dropped[d]]
                    n_keep = self.keep(len(a), self.done)
                    order = sorted(alive, key=lambda k: float(a[k]))
                    self.dropped[d] += order[:max(0, len(alive) - n_keep)]
            for d, dropped in enumerate(self.dropped):
                if dropped:
                    alphas[d][dropped] = MASKED_LOGIT

    def state(self):
        return {"dropped": [list(d) for d in self.dropped], "done": self.done}

    def load(self, state):
        self.dropped = [list(d) for d in state["dropped"]]
        self.done = int(state["done"])


@register_regularizer("tunas")
class AbsoluteCost(Regularizer):
    defaults = {"weight": 0.5}

    def loss(self, alphas, probs):
        ctx = self.search.ctx
        terms = [torch.abs(ctx.costs.expected(probs, b.metric) / b.limit - 1.0) for b in ctx.budgets]
        return self.weight * torch.stack(terms).sum() if terms else None


# What each gradient strategy uses when --regularizer is not given (chosen by measurement; see
# docs/search.md and benchmarks/search.py --part remedies).
DEFAULTS = {"darts": "none", "darts2": "none", "gdas": "tunas"}


def default_regularizer(strategy: str) -> str:
    return DEFAULTS.get(strategy, "none")


def check_regularizers(spec: str | None, args: dict | None, strategy: str) -> list[str]:
    """Every check of ``--regularizer``/``--regularizer-arg`` that needs no search: names known, not
    repeated, applicable to ``strategy`` (a gradient strategy; others take none), settings known and
    numbers >= 0. Returns the names (``spec`` None: the strategy's default)."""
    names = parse_regularizers(default_regularizer(strategy) if spec is None else spec)
    for n in names:
        allowed = REGULARIZERS.get(n).strategies
        if strategy not in allowed:
            raise CodesignError(f"regularizer {n} applies to {', '.join(allowed)}, not {strategy}")
    for n, settings in split_settings(args, names).items():
        known = REGULARIZERS.get(n).defaults
        for key, value in settings.items():
            if key not in known:
                raise CodesignError(f"regularizer {n}: unknown setting {key!r}; known: "
                                    f"{', '.join(sorted(known)) or 'none'}")
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = math.nan
            if not math.isfinite(v) or v < 0:
                raise CodesignError(f"regularizer {n}: {key} must be a number >= 0, got {value!r}")
    return names


def parse_regularizers(spec: str | None) -> list[str]:
    """``"beta-darts,tunas"`` -> names (``none`` or empty: no remedy); unknown names are refused."""
    names = [s.strip() for s in (spec or "").split(",") if s.strip() and s.strip() != "none"]
    for n in names:
        REGULARIZERS.check(n)
    if len(set(names)) != len(names):
        raise CodesignError(f"--regularizer names a remedy twice: {spec!r}")
    return names


def split_settings(args: dict | None, names: list[str]) -> dict[str, dict]:
    """``{"beta-darts.weight": 2}`` -> ``{"beta-darts": {"weight": 2}}``, checked against ``names``."""
    out: dict[str, dict] = {n: {} for n in names}
    for key, value in (args or {}).items():
        name, _, setting = str(key).partition(".")
        if not setting or name not in out:
            raise CodesignError(f"--regularizer-arg {key}={value}: use NAME.KEY=VALUE with NAME one of the chosen "
                                f"regularizers ({', '.join(names) or 'none chosen'})")
        out[name][setting] = value
    return out


class Remedies:
    """The chosen regularizers of one search, applied in the order given."""

    def __init__(self, search, spec: str | None, args: dict | None = None):
        names = check_regularizers(spec, args, search.name)
        settings = split_settings(args, names)
        self.names = names
        self.items = [REGULARIZERS.create(n, search, **settings[n]) for n in names]

    def probs(self, alphas):
        for r in self.items:
            p = r.probs(alphas)
            if p is not None:
                return p
        return None

    def mix(self, weights, alphas):
        for r in self.items:
            weights = r.mix(weights, alphas)
        return weights

    def loss(self, alphas, probs):
        terms = [t for t in (r.loss(alphas, probs) for r in self.items) if t is not None]
        return torch.stack(terms).sum() if terms else None

    def after_step(self):
        for r in self.items:
            r.after_step()

    def state(self) -> dict:
        return {r.name: r.state() for r in self.items}

    def load(self, state: dict) -> None:
        for r in self.items:
            r.load(state.get(r.name, {}))
