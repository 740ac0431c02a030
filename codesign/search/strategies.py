"""Search strategies (a registry). All share the data split, the cost table, the budgets and the run
directory given in a :class:`SearchContext`, checkpoint after every epoch (gradient strategies) or
candidate (sample-based ones), and resume from their last checkpoint with the same result as an
uninterrupted run of the same seed.

- ``darts``: first-order DARTS. Each step: an architecture step on a validation batch (softmax
  weights over every option, fused ``mixed_op``), the budgets' Lagrangian added to the loss; then a
  weight step on a training batch.
- ``darts2``: second-order DARTS: the architecture gradient at the weights after one virtual SGD
  step, with the Hessian-vector product by finite differences (Liu et al., eq. 7-8).
- ``gdas``: one path per step from hard Gumbel-softmax samples (the fused ``gumbel_softmax``,
  straight-through; every decision drawn in one call), temperature annealed linearly from
  ``tau_max`` to ``tau_min``; the supernet computes only the sampled candidate of each edge.
- ``random``: networks sampled uniformly under the budgets, each trained briefly from scratch,
  the best validation accuracy kept.
- ``zero-cost`` (codesign.search.zero_cost; ``naswot`` is it with NASWOT's score): random search
  whose candidates are chosen, best first, from a larger pool under the budgets by a
  training-free score of the untrained network (SynFlow by default).
- ``evolution``: regularised evolution (Real et al., 2019): tournament selection, one mutation,
  the oldest member dies; every child under the budgets, trained briefly like random's.

Compute is counted in *passes*: forward + backward of one batch through one network path. A
single-path step (gdas) is one pass; a step through every option (darts) counts the mean number
of parametric options per decision (parameter-free ones run inside the fused op); darts2's
architecture step is four such passes (virtual step, validation, two finite differences). A
random/evolution candidate costs ``candidate_epochs * ceil(train / batch)`` passes. Counting
passes instead of seconds keeps "equal compute" fair on a machine whose load changes.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import gumbel_softmax
from ..data import batches
from ..errors import CodesignError
from ..nn import weights_frozen
from ..registry import Registry

if TYPE_CHECKING:
    from ..spaces.base import SearchSpace
from . import checkpoint as ckpt
from .budgets import Budget, Multipliers, expected_objective, satisfied
from .costs import CostTable
from .regularizers import Remedies
from .train import cosine_lr, evaluate, train_network

STRATEGIES = Registry("strategy")
register_strategy = STRATEGIES.register


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def create_strategy(name: str, ctx: SearchContext):
    return STRATEGIES.create(name, ctx)


class StrategySettings(Protocol):
    """The settings strategies read (``codesign.pipeline.SearchConfig`` provides them)."""

    seed: int
    epochs: int
    warmup_epochs: int
    batch_size: int
    lr: float
    arch_lr: float
    weight_decay: float
    lagrange_lr: float
    tau_max: float
    tau_min: float
    regularizer: str  # remedies against collapse (search.regularizers), comma-separated; "none"
    regularizer_args: dict
    arch_batch_size: int | None  # the architecture step's batch (None: batch_size)
    candidates: int
    candidate_epochs: int
    population: int
    tournament: int
    objective: str  # none | latency | energy | edp: minimised inside the budgets
    objective_weight: float


@dataclass
class SearchContext:
    space: SearchSpace
    x_train: torch.Tensor  # the bilevel split: weights learn on train, architecture on val
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    costs: CostTable
    budgets: list[Budget]
    cfg: StrategySettings
    checkpoint_stem: Path | None = None  # checkpoints at <stem>.npz/.json; None: no checkpoints
    log: Callable[[dict], None] = lambda rec: None
    progress: bool = False
    augment: bool = False
    max_passes: float | None = None  # sample-based strategies: stop after this much compute
    arch_optimizer_factory: Callable | None = None
    weight_optimizer_factory: Callable | None = None
    stats: dict = field(default_factory=dict)
    executor: Any = None  # where random/evolution candidates train (codesign.distributed); None: here
    # The cost source's cost of a whole design (choices -> metric -> value; the exported graph,
    # where the additive table misses fusion across options). Derivation judges a design by both;
    # sample-based strategies then keep only designs it also puts under the budgets, so that the
    # design they choose is the one delivered. None: the table alone.
    whole_cost: Callable[[list[int]], dict] | None = None


def _bar(total, desc, enabled, unit="epoch", initial=0):
    from .. import progress

    return progress.bar(total, desc, unit=unit, enabled=enabled, leave=False, initial=initial)


def _check_finite(loss: torch.Tensor, where: str, ctx: SearchContext) -> None:
    if not torch.isfinite(loss):
        kept = f"; the last good checkpoint is {ctx.checkpoint_stem}.json" if ctx.checkpoint_stem else ""
        raise CodesignError(f"the {where} loss became {loss.item()}{kept}. Lower --lr / --arch-lr "
                            "or relax the budgets, then --resume")


def hardware_label(costs: CostTable, choices) -> dict | None:
    """The hardware parameters a choice vector picks ({} for a fixed accelerator, None on TVM)."""
    if costs.hardware is None:
        return None
    return costs.hardware.params(costs.split(choices)[1])


def random_design(space, costs: CostTable, rng: random.Random) -> list[int]:
    """A uniformly random network (and, on hardware, accelerator config)."""
    return space.random_choices(rng) + [rng.randrange(n) for n in costs.hw_sizes()]


def under_budget(ctx: SearchContext, choices) -> bool:
    """Whether a design is a valid network of the space that meets every budget by the table."""
    net, _ = ctx.costs.split(choices)
    return ctx.space.valid(net) and satisfied(ctx.costs, choices, ctx.budgets)


def meets_whole(ctx: SearchContext, choices) -> bool:
    """Whether the cost source's cost of the whole design meets every budget (True without
    ``ctx.whole_cost``): the judgement derivation adds to the table's."""
    if ctx.whole_cost is None:
        return True
    whole = ctx.whole_cost(list(choices))
    return all(whole.get(b.metric, 0.0) <= b.limit for b in ctx.budgets)


# A design under the table is looked at whole (an export, ~0.1 s) at most this many times per
# draw; past that, the last one under the table is returned and derivation repairs it.
WHOLE_CHECKS = 200


def candidate_passes(ctx: SearchContext) -> int:
    """Passes one sampled candidate's training costs (``candidate_epochs`` over the training split)."""
    return ctx.cfg.candidate_epochs * math.ceil(len(ctx.y_train) / ctx.cfg.batch_size)


def sample_feasible(ctx: SearchContext, rng: random.Random, tries: int = 10_000, whole: bool = True) -> list[int]:
    """A design drawn uniformly among those under the budgets (rejection sampling): by the table
    and, with ``whole`` and ``ctx.whole_cost``, by the whole design's cost too (``WHOLE_CHECKS``
    looks at most). Where the budgets admit so small a corner of the space that ``tries`` draws
    all miss, a random design is repaired into it instead (each change preferred by a random
    weight, so repeated calls still differ): a long search that needs thousands of feasible draws
    does not fail on an unlucky one.

    Raises:
        CodesignError: no design of the space meets the budgets at all.
    """
    last, looked = None, 0
    for _ in range(tries):
        c = random_design(ctx.space, ctx.costs, rng)
        if not under_budget(ctx, c):
            continue
        if not whole or ctx.whole_cost is None:
            return c
        last, looked = c, looked + 1
        if meets_whole(ctx, c) or looked >= WHOLE_CHECKS:
            return c
    if last is not None:
        return last
    from .budgets import repair

    c = random_design(ctx.space, ctx.costs, rng)
    sizes = [len(d.options) for d in ctx.space.decisions()] + ctx.costs.hw_sizes()
    prefs = [np.array([rng.random() + 1e-3 for _ in range(n)]) for n in sizes]
    fixed, _ = repair(ctx.space, ctx.costs, c, [p / p.sum() for p in prefs], ctx.budgets)
    if not under_budget(ctx, fixed):
        raise CodesignError("no network under the budgets found in 10,000 random samples or by repair; relax "
                            "the budgets")
    return fixed


def mutate_design(space, costs: CostTable, choices: list[int], rng: random.Random) -> list[int]:
    """One change: a network decision, or (on hardware, in proportion to the parameter count) one
    hardware parameter."""
    net, hw = costs.split(choices)
    sizes = [n for n in costs.hw_sizes()]
    movable = [i for i, n in enumerate(sizes) if n > 1]
    if movable and rng.random() < len(movable) / (len(movable) + len(net)):
        i = rng.choice(movable)
        hw = list(hw)
        hw[i] = rng.choice([k for k in range(sizes[i]) if k != hw[i]])
        return list(net) + hw
    return space.mutate(net, rng) + list(hw)


# ---------------------------------------------------------------------------------------------
# Gradient strategies
# ---------------------------------------------------------------------------------------------


class GradientSearch:
    """The bilevel loop shared by darts, darts2 and gdas."""

    single_path = False
    second_order = False

    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        cfg = ctx.cfg
        torch.manual_seed(cfg.seed)
        # The supernet trains where the data lives (--train-device); the logits stay on the CPU.
        self.net = ctx.space.supernet().to(ctx.x_train.device)
        # One logit vector per network decision, then (co-search) one per hardware parameter.
        sizes = [len(d.options) for d in ctx.space.decisions()] + ctx.costs.hw_sizes()
        self.n_net = len(ctx.space.decisions())
        self.alphas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(n)) for n in sizes)
        weights = list(self.net.parameters())
        self.w_opt = (ctx.weight_optimizer_factory(weights) if ctx.weight_optimizer_factory else
                      torch.optim.SGD(weights, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay))
        self.a_opt = (ctx.arch_optimizer_factory(list(self.alphas)) if ctx.arch_optimizer_factory else
                      torch.optim.Adam(self.alphas, lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3))
        self.mult = Multipliers(ctx.budgets, cfg.lagrange_lr)
        self.epoch = 0
        self.steps_per_epoch = max(1, len(ctx.y_train) // cfg.batch_size)
        self.gstep = 0  # the step the loop is at (the regularizers' schedules read it)
        self.arch_batch_size = getattr(cfg, "arch_batch_size", None) or cfg.batch_size
        self.remedies = Remedies(self, getattr(cfg, "regularizer", None), getattr(cfg, "regularizer_args", None))
        self.history: list[dict] = []
        self.passes = 0.0
        decisions = ctx.space.decisions()
        free = {"none", "zero", "skip", "skip_connect", "identity", "avg_pool_3x3", "max_pool_3x3"}
        self.width = 1.0 if self.single_path else max(1.0, sum(
            sum(o not in free for o in d.options) for d in decisions) / len(decisions))

    # --- state ------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"net": self.net.state_dict(), "alphas": [a.detach().clone() for a in self.alphas],
                "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "mult": list(self.mult.values), "epoch": self.epoch, "history": self.history,
                "passes": self.passes, "remedies": self.remedies.state(),
                "rng": ckpt.rng_state()}

    def load(self, s: dict) -> None:
        self.net.load_state_dict(s["net"])
        with torch.no_grad():
            for a, v in zip(self.alphas, s["alphas"]):
                a.copy_(v)
        self.w_opt.load_state_dict(s["w_opt"])
        self.a_opt.load_state_dict(s["a_opt"])
        self.mult.values = list(s["mult"])
        self.epoch = int(s["epoch"])
        self.history = list(s["history"])
        self.passes = float(s["passes"])
        self.remedies.load(s.get("remedies", {}))
        ckpt.set_rng_state(s["rng"])

    # --- pieces -----------------------------------------------------------------------------
    def probs(self) -> list[torch.Tensor]:
        """The architecture distribution: one probability vector per decision (softmax of the
        logits, or a regularizer's own, e.g. DrNAS's Dirichlet mean, for the network decisions)."""
        net = self.remedies.probs(list(self.alphas[:self.n_net]))
        if net is None:
            return [F.softmax(a, dim=0) for a in self.alphas]
        return net + [F.softmax(a, dim=0) for a in self.alphas[self.n_net:]]

    def mixture(self, detach: bool = False) -> list[torch.Tensor]:
        """The mixing weights of the network decisions for one darts step (the distribution, or a
        regularizer's sample of it / addition to it)."""
        ws = self.remedies.mix(self.probs()[:self.n_net], list(self.alphas[:self.n_net]))
        return [w.detach() for w in ws] if detach else ws

    def arch_progress(self) -> float:
        """How far the architecture search is, from 0 (its first step, after the warm-up) to 1."""
        cfg = self.ctx.cfg
        start = cfg.warmup_epochs * self.steps_per_epoch
        total = (cfg.epochs - cfg.warmup_epochs) * self.steps_per_epoch
        return min(1.0, max(0.0, (self.gstep - start) / max(total, 1)))

    def tau(self) -> float:
        cfg = self.ctx.cfg
        frac = min(1.0, max(0.0, (self.epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs - 1, 1)))
        return cfg.tau_max - (cfg.tau_max - cfg.tau_min) * frac

    def sample(self, seed: int):
        """Hard Gumbel-softmax sample of every decision, network and (co-search) hardware, drawn in
        one call: (weights list, index list), the network's decisions first. The logits are the
        rows of a [decisions, max options] tensor whose missing options (decisions with fewer
        options) are -inf: softmax gives them exactly 0, they are never sampled and get no
        gradient (:func:`masked_logits`). The hardware rows are one accelerator config per step
        with a straight-through gradient."""
        y, index = gumbel_softmax(masked_logits(list(self.alphas)), tau=self.tau(), hard=True, seed=seed % (2**62))
        return [y[d, :len(a)] for d, a in enumerate(self.alphas)], index.tolist()

    def sample_hardware(self, seed: int) -> list[torch.Tensor]:
        """The hardware part of :meth:`sample` (the same draw for the same seed)."""
        return self.sample(seed)[0][self.n_net:] if len(self.alphas) > self.n_net else []

    def forward(self, x, seed: int, sampled=None):
        """The supernet's output; gdas runs the sampled path (``sampled``: a draw of
        :meth:`sample` to reuse, else one is drawn)."""
        if self.single_path:
            ws, idx = sampled if sampled is not None else self.sample(seed)
            return self.net(x, [w.to(x.device) for w in ws[:self.n_net]], idx[:self.n_net])
        return self.net(x, [w.to(x.device) for w in self.mixture()])

    def cost_probs(self, sampled=None) -> list[torch.Tensor]:
        """The distribution the budgets' expectations are taken under: softmax of every logit
        vector; gdas takes its sampled accelerator config (one per step, from the step's draw
        ``sampled``) for the hardware."""
        probs = self.probs()
        if sampled is not None and len(probs) > self.n_net:
            probs = probs[:self.n_net] + sampled[0][self.n_net:]
        return probs

    def arch_loss(self, xv, yv, seed):
        sampled = self.sample(seed) if self.single_path else None
        out = self.forward(xv, seed, sampled)
        ce = F.cross_entropy(out, yv)
        probs = cost_probs = self.cost_probs(sampled)
        pen, expected = self.mult.penalty(self.ctx.costs, probs)
        cfg = self.ctx.cfg
        if len(probs) > self.n_net:
            # Co-search: the objective steers the hardware (which cannot change the accuracy); the
            # network answers to the accuracy within the budgets, as on a fixed device. Letting the
            # objective pull the network too collapses it to parameter-free cells.
            probs = [p.detach() for p in probs[:self.n_net]] + list(probs[self.n_net:])
        obj = expected_objective(self.ctx.costs, probs, getattr(cfg, "objective", None) or "none")
        if obj is not None:
            pen = pen + getattr(cfg, "objective_weight", 0.0) * torch.log(obj.clamp_min(1e-12))
        reg = self.remedies.loss(list(self.alphas[:self.n_net]), cost_probs)
        if reg is not None:
            pen = pen + reg
        return ce, pen, expected, out

    def arch_step(self, xv, yv, xt, yt, seed, lr_w):
        self.a_opt.zero_grad(set_to_none=True)
        if self.second_order:
            ce, pen, expected, out = self._second_order(xv, yv, xt, yt, seed, lr_w)
        else:
            with weights_frozen(self.net):  # the step needs no weight gradient
                ce, pen, expected, out = self.arch_loss(xv, yv, seed)
                _check_finite(ce, "architecture", self.ctx)
                (ce + pen).backward()
            self.net.zero_grad(set_to_none=True)
        self.a_opt.step()
        self.remedies.after_step()
        self.mult.update(expected)
        return ce.item(), expected, out

    fd_radius = 0.01  # DARTS's epsilon = 0.01 / ||grad_w' L_val||

    def _second_order(self, xv, yv, xt, yt, seed, xi):
        """DARTS eq. 7-8: the gradient of L_val(w', alpha) with w' = w - xi grad_w L_train(w, alpha),
        ``grad_alpha L_val(w', alpha) - xi * (grad_alpha L_train(w+, alpha) - grad_alpha
        L_train(w-, alpha)) / (2 eps)``, where w+- = w +- eps grad_w' L_val(w', alpha): the finite
        differences are taken around the weights w, not around the virtual step w'."""
        params = [p for p in self.net.parameters()]
        backup = [p.detach().clone() for p in params]
        # virtual step w' = w - xi * dL_train/dw
        loss_t = self._train_loss(xt, yt, seed + 1)
        g_t = torch.autograd.grad(loss_t, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, g_t):
                if g is not None:
                    p.sub_(xi * g)
        ce, pen, expected, out = self.arch_loss(xv, yv, seed)
        _check_finite(ce, "architecture", self.ctx)
        grads = torch.autograd.grad(ce + pen, list(self.alphas) + params, allow_unused=True)
        g_alpha, g_w = grads[:len(self.alphas)], grads[len(self.alphas):]
        norm = torch.sqrt(sum((g * g).sum() for g in g_w if g is not None)) + 1e-12
        eps = self.fd_radius / norm
        hv = []
        for sign in (1.0, -1.0):  # w + eps*g, then w - eps*g, both from w itself
            with torch.no_grad():
                for p, b, g in zip(params, backup, g_w):
                    p.copy_(b if g is None else b + sign * eps * g)
            loss = self._train_loss(xt, yt, seed + 1)
            hv.append(torch.autograd.grad(loss, list(self.alphas), allow_unused=True))
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)
        for a, ga, hp, hm in zip(self.alphas, g_alpha, hv[0], hv[1]):
            g = torch.zeros_like(a) if ga is None else ga.clone()
            if hp is not None and hm is not None:
                g -= xi * (hp - hm) / (2 * eps)
            a.grad = g
        self.net.zero_grad(set_to_none=True)
        return ce, pen, expected, out

    def _train_loss(self, xt, yt, seed):
        """The training loss of darts2's virtual step and finite differences: the same mixture
        (a regularizer's random draw included) at every weight it is evaluated at."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return F.cross_entropy(self.forward(xt, seed), yt)

    def weight_step(self, xt, yt, seed, lr):
        if not self.ctx.weight_optimizer_factory:
            for g in self.w_opt.param_groups:
                g["lr"] = lr
        self.w_opt.zero_grad(set_to_none=True)
        if self.single_path:
            ws, idx = self.sample(seed)
            out = self.net(xt, [w.detach().to(xt.device) for w in ws[:self.n_net]], idx[:self.n_net])
        else:
            out = self.net(xt, [w.to(xt.device) for w in self.mixture(detach=True)])
        loss = F.cross_entropy(out, yt)
        _check_finite(loss, "weight", self.ctx)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
        self.w_opt.step()
        for a in self.alphas:
            a.grad = None
        return loss.item(), out

    def derived(self) -> list[int]:
        probs = [p.detach().numpy() for p in self.probs()]
        return self.ctx.space.derive(probs[:self.n_net]) + [int(np.argmax(p)) for p in probs[self.n_net:]]

    # --- loop -------------------------------------------------------------------------------
    def run(self) -> dict:
        ctx, cfg = self.ctx, self.ctx.cfg
        if ctx.checkpoint_stem is not None and ckpt.exists(ctx.checkpoint_stem):
            state, _ = ckpt.load(ctx.checkpoint_stem)
            self.load(state)
        total = cfg.epochs * self.steps_per_epoch
        bar = _bar(cfg.epochs, f"search {self.name}", ctx.progress, initial=self.epoch)
        while self.epoch < cfg.epochs:
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.epoch)
            gen_v = torch.Generator().manual_seed(cfg.seed * 1_000_033 + self.epoch)
            val_iter = _cycle(ctx.x_val, ctx.y_val, self.arch_batch_size, gen_v)
            tl = ta = vl = va = 0.0
            n = 0
            expected = {}
            for step, (xt, yt) in enumerate(batches(ctx.x_train, ctx.y_train, cfg.batch_size, gen, ctx.augment,
                                                    drop_last=True)):
                gstep = self.epoch * self.steps_per_epoch + step
                self.gstep = gstep
                lr = cosine_lr(cfg.lr, gstep, total, cfg.lr * 0.02)
                seed = cfg.seed * 7_919 + gstep * 4
                xv, yv = next(val_iter)
                if self.epoch >= cfg.warmup_epochs:
                    ce_v, expected, out_v = self.arch_step(xv, yv, xt, yt, seed, lr)
                    self.passes += self.width * (4 if self.second_order else 1) * self.arch_batch_size / cfg.batch_size
                    vl += ce_v
                    va += float((out_v.argmax(1) == yv).float().mean())
                loss_t, out_t = self.weight_step(xt, yt, seed + 2, lr)
                self.passes += self.width
                tl += loss_t
                ta += float((out_t.argmax(1) == yt).float().mean())
                n += 1
            tau = self.tau()
            self.epoch += 1
            probs = [p.detach() for p in self.probs()]
            if not expected:
                _, expected = self.mult.penalty(ctx.costs, probs)
                expected = {k: v for k, v in expected.items()}
            for m in ctx.costs.metrics():
                expected.setdefault(m, float(ctx.costs.expected(probs, m)))
            choices = self.derived()
            rec = {"epoch": self.epoch, "train_loss": tl / max(n, 1), "train_accuracy": ta / max(n, 1),
                   "val_loss": vl / max(n, 1) if self.epoch > cfg.warmup_epochs else None,
                   "val_accuracy": va / max(n, 1) if self.epoch > cfg.warmup_epochs else None,
                   "expected": expected, "multipliers": dict(zip([b.metric for b in ctx.budgets], self.mult.values)),
                   "tau": tau if self.single_path else None, "lr": lr,
                   "derived": ctx.space.format(choices[:self.n_net]), "derived_cost": ctx.costs.all_of(choices),
                   "derived_hardware": hardware_label(ctx.costs, choices),
                   "arch_probs": [[round(float(v), 5) for v in p] for p in probs],
                   "seconds": time.perf_counter() - t0}
            self.history.append({k: rec[k] for k in ("epoch", "train_accuracy", "val_accuracy", "derived", "seconds")})
            ctx.log(rec)
            if ctx.checkpoint_stem is not None:
                ckpt.save(ctx.checkpoint_stem, self.state(), {"strategy": self.name, "epoch": self.epoch})
            bar.update(1, acc=f"{rec['train_accuracy']:.2f}", lat=f"{expected.get('latency_ms', math.nan):.3g}")
        bar.close()
        probs = [p.detach().numpy() for p in self.probs()]
        return {"choices": self.derived(), "probs": probs, "epochs": self.epoch, "search_passes": self.passes,
                "search_seconds": sum(h["seconds"] for h in self.history)}


def masked_logits(alphas: list[torch.Tensor]) -> torch.Tensor:
    """[decisions, max options] logits: row d is alphas[d], padded with -inf (differentiable)."""
    return nn.utils.rnn.pad_sequence(alphas, batch_first=True, padding_value=-math.inf)


def _cycle(x, y, batch_size, gen):
    while True:
        yield from batches(x, y, batch_size, gen, drop_last=len(y) >= batch_size)


@register_strategy("darts")
class Darts(GradientSearch):
    pass


@register_strategy("darts2")
class Darts2(GradientSearch):
    second_order = True


@register_strategy("gdas")
class Gdas(GradientSearch):
    single_path = True


# ---------------------------------------------------------------------------------------------
# Sample-based strategies
# ---------------------------------------------------------------------------------------------


# Candidates trained on threads of one process (an executor's slots) seed and draw torch's global
# generator one at a time, so that each gets the weights its seed gives in a serial run.
_GLOBAL_RNG = threading.Lock()


def train_candidate(data: dict, job: dict) -> dict:
    """Train one candidate from scratch and score it on the validation split: a pure task of
    (shared data, job) run in this process or on a Ray worker, with the same result on either
    (its seed is the candidate's own, so results do not depend on how many run at once)."""
    t0 = time.perf_counter()
    with _GLOBAL_RNG:  # the initial weights come from torch's process-wide generator
        torch.manual_seed(job["seed"])
        net = data["space"].build(job["genotype"]).to(data["x_train"].device)
    fit = train_network(net, data["x_train"], data["y_train"], job["epochs"], job["seed"], job["batch_size"],
                        job["lr"], job["weight_decay"], data["augment"], data["weight_optimizer_factory"])
    val = evaluate(net, data["x_val"], data["y_val"])
    return {"val_accuracy": val["accuracy"], "train_accuracy": fit["train_accuracy"], "passes": fit["steps"],
            "seconds": time.perf_counter() - t0}


class SampleSearch:
    """Shared by random and evolution: candidates trained briefly from scratch, one checkpoint per
    candidate (the history, the generator state, and candidates that finished ahead of an earlier
    one still training elsewhere, so that a resumed run trains none of them again).

    Candidates whose proposal needs no pending result (all of random's; evolution's first
    population) are handed to ``ctx.executor`` together, as many as it has slots; results are
    recorded in candidate order, so the history is that of the serial run."""

    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        self.rng = random.Random(ctx.cfg.seed)
        self.history: list[dict] = []
        self.ahead: dict[int, dict] = {}  # finished candidates beyond the history, by index
        self._rng_state = self.rng.getstate()  # the generator just after the last recorded proposal

    def state(self) -> dict:
        st = self._rng_state
        return {"history": self.history, "rng": [st[0], list(st[1]), st[2]],
                "ahead": [self.ahead[k] for k in sorted(self.ahead)]}

    def load(self, s: dict) -> None:
        self.history = list(s["history"])
        self.ahead = {int(r["candidate"]): r for r in s.get("ahead", [])}
        st = s["rng"]
        self.rng.setstate((st[0], tuple(st[1]), st[2]))
        self._rng_state = self.rng.getstate()

    def under_budget(self, choices) -> bool:
        return under_budget(self.ctx, choices)

    def meets_whole(self, choices) -> bool:
        return meets_whole(self.ctx, choices)

    def sample_feasible(self) -> list[int]:
        return sample_feasible(self.ctx, self.rng)

    def job(self, choices, index: int) -> dict:
        cfg = self.ctx.cfg
        return {"candidate": index, "choices": list(choices), "genotype": self.ctx.space.format(
                    self.ctx.costs.split(choices)[0]), "seed": cfg.seed * 1_000 + index,
                "epochs": cfg.candidate_epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                "weight_decay": cfg.weight_decay}

    def finished(self, job: dict, fit: dict) -> dict:
        """A candidate's record (logged now, whatever the order candidates finish in)."""
        ctx, choices = self.ctx, job["choices"]
        rec = {"candidate": job["candidate"], "genotype": job["genotype"], "choices": list(choices),
               "hardware": hardware_label(ctx.costs, choices), "val_accuracy": fit["val_accuracy"],
               "train_accuracy": fit["train_accuracy"], "passes": fit["passes"],
               "cost": ctx.costs.all_of(choices), "seconds": fit["seconds"]}
        ctx.log(rec)
        return rec

    def save(self) -> None:
        if self.ctx.checkpoint_stem is not None:
            ckpt.save(self.ctx.checkpoint_stem, self.state(), {"strategy": self.name, "candidates": len(self.history)})

    def remaining(self) -> int:
        """Candidates still to train: up to ``candidates``, or (``max_passes``) while one more would
        not overshoot the compute by more than half a candidate."""
        ctx = self.ctx
        if ctx.max_passes is None:
            return max(0, ctx.cfg.candidates - len(self.history))
        per = candidate_passes(ctx)
        used, n, k = self.overhead_passes() + sum(h["passes"] for h in self.history), len(self.history), 0
        while not (n + k >= 1 and used + k * per + per / 2 > ctx.max_passes):
            k += 1
        return k

    def done(self) -> bool:
        return self.remaining() == 0

    def planned(self) -> int:
        """Candidates a run without ``max_passes`` trains (the progress bar's total)."""
        return self.ctx.cfg.candidates

    def overhead_passes(self) -> float:
        """Compute spent besides training candidates (a preselection's scoring), in passes."""
        return 0.0

    def overhead_seconds(self) -> float:
        return 0.0

    def ready(self) -> int:
        """How many proposals can be made before the next result is known."""
        return 1 << 30

    def propose(self) -> list[int]:
        raise NotImplementedError

    def _data(self) -> dict:
        ctx = self.ctx
        return {"space": ctx.space, "x_train": ctx.x_train, "y_train": ctx.y_train, "x_val": ctx.x_val,
                "y_val": ctx.y_val, "augment": ctx.augment, "weight_optimizer_factory": ctx.weight_optimizer_factory}

    def prepare(self) -> None:
        """Work before the first candidate, after a resumed run's state is loaded (a preselection)."""

    def run(self) -> dict:
        from concurrent.futures import FIRST_COMPLETED, wait

        from ..distributed import SerialExecutor

        ctx = self.ctx
        if ctx.checkpoint_stem is not None and ckpt.exists(ctx.checkpoint_stem):
            self.load(ckpt.load(ctx.checkpoint_stem)[0])
        self.prepare()
        executor = ctx.executor or SerialExecutor()
        data = None
        total = None if ctx.max_passes is not None else self.planned()
        bar = _bar(total, f"search {self.name}", ctx.progress, "candidate", len(self.history))
        # A rolling window: a candidate is proposed and handed out as soon as a slot frees, so no
        # worker waits for the slowest candidate of a batch. `proposed` holds every proposal past
        # the history (its job and the generator state after it), in candidate order.
        proposed: list[tuple[dict, tuple]] = []
        pending: dict = {}
        while True:
            while (len(pending) < executor.slots and len(proposed) < min(self.ready(), self.remaining())):
                job = self.job(self.propose(), len(self.history) + len(proposed))
                proposed.append((job, self.rng.getstate()))
                reused = self.ahead.get(job["candidate"])
                if reused is not None and reused["choices"] == job["choices"]:
                    continue  # finished before the driver stopped; never trained twice
                self.ahead.pop(job["candidate"], None)
                if data is None:
                    data = executor.share(self._data())
                pending[executor.submit(train_candidate, data, job)] = job
            if pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(finished, key=lambda f: pending[f]["candidate"]):
                    job = pending.pop(fut)
                    self.ahead[job["candidate"]] = self.finished(job, fut.result())
            elif not proposed:
                break  # nothing in flight, nothing more to propose: done
            self._record_in_order(proposed, bar)
        bar.close()
        best = max(self.history, key=lambda h: (h["val_accuracy"], -h["candidate"]))
        sizes = [len(d.options) for d in ctx.space.decisions()] + ctx.costs.hw_sizes()
        probs = [np.eye(n)[k] for n, k in zip(sizes, best["choices"])]
        return {"choices": list(best["choices"]), "probs": probs, "candidates": len(self.history),
                "best_val_accuracy": best["val_accuracy"],
                "search_passes": self.overhead_passes() + float(sum(h["passes"] for h in self.history)),
                "search_seconds": self.overhead_seconds() + sum(h["seconds"] for h in self.history)}

    def _record_in_order(self, proposed: list[tuple[dict, tuple]], bar) -> None:
        """Move finished candidates that continue the history into it (with the generator state
        after their proposal); checkpoint. A candidate finished ahead of an earlier one waits in
        ``ahead`` (and in the checkpoint) until the history reaches it."""
        moved = False
        while proposed and proposed[0][0]["candidate"] in self.ahead:
            job, state = proposed.pop(0)
            rec = self.ahead.pop(job["candidate"])
            self.history.append(rec)
            self._rng_state = state
            moved = True
            bar.update(1, best=f"{max(h['val_accuracy'] for h in self.history):.3f}", last=f"{rec['val_accuracy']:.3f}")
        if moved or self.ahead:
            self.save()


@register_strategy("random")
class RandomSearch(SampleSearch):
    def propose(self):
        return self.sample_feasible()


@register_strategy("evolution")
class Evolution(SampleSearch):
    def ready(self):
        # the first population is sampled at random; every child needs the latest results
        return max(1, self.ctx.cfg.population - len(self.history))

    def propose(self):
        cfg = self.ctx.cfg
        population = self.history[-cfg.population:]
        if len(self.history) < cfg.population:
            return self.sample_feasible()
        contenders = self.rng.sample(population, min(cfg.tournament, len(population)))
        parent = max(contenders, key=lambda h: h["val_accuracy"])["choices"]
        looked = 0
        for _ in range(1000):
            child = mutate_design(self.ctx.space, self.ctx.costs, parent, self.rng)
            if not self.under_budget(child):
                continue
            looked += 1
            if self.meets_whole(child):
                return child
            if looked >= 50:  # the parent sits on the budget's edge: draw afresh
                break
        return self.sample_feasible()
