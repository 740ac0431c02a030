"""Random search with weight sharing (``rsws``; Li & Talwalkar, "Random Search and Reproducibility
for Neural Architecture Search", UAI 2019), under the budgets.

1. **Train the supernet** on uniformly random single paths: every step draws one architecture among
   those under the budgets (rejection sampling, as ``random`` draws its candidates) and trains its
   path's shared weights on one batch. Sampling only under the budgets spends the weights' training
   on the networks that can be chosen.
2. **Rank candidates with the shared weights**: ``--ws-candidates`` architectures under the budgets,
   each scored by its supernet accuracy on the same ``--ws-eval-batches`` validation batches; the
   best tenth (at least 2, at most 10) is scored again on the whole validation split, and the best
   of those is the result. Batch normalisation uses the batch's statistics (the running statistics
   of a supernet mix every path), so a candidate is scored as the paths were trained.

Compute, in passes: one per training step (one path, forward + backward of one batch); a scoring
batch is forward only, counted as 1/3 of a pass (a backward costs about two forwards). With
``max_passes`` (``--compare random``'s budget, or ``--max-passes``) the training steps are what is
left after the scoring's passes. Checkpoints after every epoch; ``--resume`` continues.
"""

from __future__ import annotations

import math
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import batches
from . import checkpoint as ckpt
from .strategies import (
    SearchContext,
    _bar,
    _check_finite,
    hardware_label,
    register_strategy,
    sample_feasible,
)
from .train import cosine_lr

FORWARD_PASS = 1.0 / 3.0  # a forward-only batch, in passes (forward + backward)


def one_hot(space, choices: list[int], device="cpu") -> list[torch.Tensor]:
    """The mixing weights of one path: a one-hot vector per network decision, on ``device``."""
    return [F.one_hot(torch.tensor(k, device=device), len(d.options)).float()
            for d, k in zip(space.decisions(), choices)]


@torch.no_grad()
def supernet_accuracy(net: nn.Module, space, choices: list[int], data) -> float:
    """Accuracy of one path of a trained supernet on ``data`` (a list of (x, y) batches), with
    batch statistics in batch normalisation. The modules' running statistics are left as they were."""
    bn = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in bn if m.running_mean is not None]
    was = net.training
    net.train()
    ws, idx = one_hot(space, choices, next(net.parameters()).device), list(choices)
    correct = n = 0
    for x, y in data:
        correct += int((net(x, ws, idx).argmax(1) == y).sum())
        n += len(y)
    net.train(was)
    for m, (mean, var, count) in zip([m for m in bn if m.running_mean is not None], saved):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.copy_(count)
    return correct / max(n, 1)


@register_strategy("rsws")
class RandomSearchWeightSharing:
    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        cfg = ctx.cfg
        torch.manual_seed(cfg.seed)
        self.net = ctx.space.supernet().to(ctx.x_train.device)  # where the data lives (--train-device)
        weights = list(self.net.parameters())
        self.w_opt = (ctx.weight_optimizer_factory(weights) if ctx.weight_optimizer_factory else
                      torch.optim.SGD(weights, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay))
        self.rng = random.Random(cfg.seed)
        self.n_net = len(ctx.space.decisions())
        self.steps_per_epoch = max(1, len(ctx.y_train) // cfg.batch_size)
        self.n_candidates = int(getattr(cfg, "ws_candidates", 100))
        self.eval_batches = int(getattr(cfg, "ws_eval_batches", 4))
        self.steps = 0  # training steps done
        self.passes = 0.0
        self.history: list[dict] = []
        self.seconds = 0.0

    # --- compute ------------------------------------------------------------------------------
    def val_batches(self, count: int | None = None) -> list:
        """The validation batches candidates are scored on (the same for every candidate)."""
        ctx = self.ctx
        gen = torch.Generator().manual_seed(ctx.cfg.seed * 1_000_081)
        out = list(batches(ctx.x_val, ctx.y_val, ctx.cfg.batch_size, gen))
        return out if count is None else out[:count]

    def n_finalists(self) -> int:
        return min(self.n_candidates, max(2, min(10, self.n_candidates // 10)))

    def scoring_passes(self) -> float:
        full = math.ceil(len(self.ctx.y_val) / self.ctx.cfg.batch_size)
        return FORWARD_PASS * (self.n_candidates * min(self.eval_batches, full) + self.n_finalists() * full)

    def total_steps(self) -> int:
        ctx = self.ctx
        if ctx.max_passes is not None:
            return max(1, int(round(ctx.max_passes - self.scoring_passes())))
        return ctx.cfg.epochs * self.steps_per_epoch

    # --- state --------------------------------------------------------------------------------
    def state(self) -> dict:
        st = self.rng.getstate()
        return {"net": self.net.state_dict(), "w_opt": self.w_opt.state_dict(), "steps": self.steps,
                "passes": self.passes, "history": self.history, "seconds": self.seconds,
                "py_rng": [st[0], list(st[1]), st[2]], "rng": ckpt.rng_state()}

    def load(self, s: dict) -> None:
        self.net.load_state_dict(s["net"])
        self.w_opt.load_state_dict(s["w_opt"])
        self.steps, self.passes = int(s["steps"]), float(s["passes"])
        self.history, self.seconds = list(s["history"]), float(s["seconds"])
        st = s["py_rng"]
        self.rng.setstate((st[0], tuple(st[1]), st[2]))
        ckpt.set_rng_state(s["rng"])

    def save(self, stage: str) -> None:
        if self.ctx.checkpoint_stem is not None:
            ckpt.save(self.ctx.checkpoint_stem, self.state(), {"strategy": self.name, "stage": stage,
                                                               "steps": self.steps})

    # --- phases -------------------------------------------------------------------------------
    def train(self) -> None:
        """Train the supernet's shared weights on random paths under the budgets."""
        ctx, cfg = self.ctx, self.ctx.cfg
        total = self.total_steps()
        bar = _bar(total, f"search {self.name}", ctx.progress)
        bar.update(self.steps)
        while self.steps < total:
            t0 = time.perf_counter()
            epoch = self.steps // self.steps_per_epoch
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            loss_sum = acc_sum = 0.0
            n = 0
            for step, (xt, yt) in enumerate(batches(ctx.x_train, ctx.y_train, cfg.batch_size, gen, ctx.augment,
                                                    drop_last=True)):
                if step < self.steps - epoch * self.steps_per_epoch:
                    continue  # done before the checkpoint this run resumed from
                if self.steps >= total:
                    break
                for g in self.w_opt.param_groups:
                    if not ctx.weight_optimizer_factory:
                        g["lr"] = cosine_lr(cfg.lr, self.steps, total, cfg.lr * 0.02)
                choices = sample_feasible(ctx, self.rng, whole=False)[:self.n_net]  # a path to train
                out = self.net(xt, one_hot(ctx.space, choices, xt.device), choices)
                loss = F.cross_entropy(out, yt)
                _check_finite(loss, "weight", ctx)
                self.w_opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
                self.w_opt.step()
                self.steps += 1
                self.passes += 1.0
                loss_sum += loss.item()
                acc_sum += float((out.argmax(1) == yt).float().mean())
                n += 1
                bar.update(1)
            seconds = time.perf_counter() - t0
            self.seconds += seconds
            ctx.log({"epoch": epoch + 1, "steps": self.steps, "train_loss": loss_sum / max(n, 1),
                     "train_accuracy": acc_sum / max(n, 1), "seconds": seconds})
            self.save("train")
        bar.close()

    def rank(self) -> dict:
        """Score candidates under the budgets with the shared weights; the best of the finalists."""
        ctx = self.ctx
        t0 = time.perf_counter()
        few, full = self.val_batches(self.eval_batches), self.val_batches()
        rng = random.Random(ctx.cfg.seed * 7_001 + 17)
        scored = []
        for i in range(self.n_candidates):
            c = sample_feasible(ctx, rng)
            scored.append({"candidate": i, "choices": c, "supernet_accuracy": supernet_accuracy(
                self.net, ctx.space, c[:self.n_net], few)})
        finalists = sorted(scored, key=lambda r: (-r["supernet_accuracy"], r["candidate"]))[:self.n_finalists()]
        for r in finalists:
            r["supernet_val_accuracy"] = supernet_accuracy(self.net, ctx.space, r["choices"][:self.n_net], full)
        best = max(finalists, key=lambda r: (r["supernet_val_accuracy"], -r["candidate"]))
        self.passes += self.scoring_passes()
        self.seconds += time.perf_counter() - t0
        for r in finalists:
            ctx.log({"finalist": r["candidate"], "genotype": ctx.space.format(r["choices"][:self.n_net]),
                     "hardware": hardware_label(ctx.costs, r["choices"]), "cost": ctx.costs.all_of(r["choices"]),
                     "supernet_accuracy": r["supernet_accuracy"], "supernet_val_accuracy": r["supernet_val_accuracy"]})
        return best

    def run(self) -> dict:
        ctx = self.ctx
        if ctx.checkpoint_stem is not None and ckpt.exists(ctx.checkpoint_stem):
            self.load(ckpt.load(ctx.checkpoint_stem)[0])
        self.train()
        best = self.rank()
        sizes = [len(d.options) for d in ctx.space.decisions()] + ctx.costs.hw_sizes()
        probs = [np.eye(n)[k] for n, k in zip(sizes, best["choices"])]
        return {"choices": list(best["choices"]), "probs": probs, "candidates": self.n_candidates,
                "best_supernet_val_accuracy": best["supernet_val_accuracy"], "training_steps": self.steps,
                "search_passes": self.passes, "search_seconds": self.seconds}
