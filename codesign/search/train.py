"""Training and evaluation of plain networks (derived networks, random/evolution candidates)."""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import batches
from ..errors import CodesignError


def cosine_lr(base: float, step: int, total: int, floor: float = 0.0) -> float:
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256, **fwd) -> dict:
    """Accuracy and mean cross-entropy of ``model`` (eval mode) on (x, y)."""
    was = model.training
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for xb, yb in batches(x, y, batch_size):
        out = model(xb, **fwd) if fwd else model(xb)
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
        n += len(yb)
    model.train(was)
    return {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1)}


def train_network(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
                  batch_size: int = 64, lr: float = 0.05, weight_decay: float = 3e-4, augment: bool = False,
                  optimizer_factory=None, progress=None) -> dict:
    """SGD (momentum 0.9, cosine schedule) on (x, y) for ``epochs``; stops with a CodesignError if
    the loss becomes NaN. ``optimizer_factory(params)`` replaces SGD (e.g. a learned optimizer)."""
    if epochs < 0:
        raise CodesignError(f"epochs must be >= 0, got {epochs}")
    model.train()
    opt = (optimizer_factory(model.parameters()) if optimizer_factory else
           torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True))
    steps_per_epoch = max(1, math.ceil(len(y) / batch_size))
    total, step, t0 = epochs * steps_per_epoch, 0, time.perf_counter()
    last = {"loss": math.nan, "accuracy": math.nan}
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        loss_sum, correct, n = 0.0, 0, 0
        for xb, yb in batches(x, y, batch_size, gen, augment):
            if optimizer_factory is None:
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(lr, step, total)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            if not torch.isfinite(loss):
                raise CodesignError(f"training loss became {float(loss)} at epoch {epoch} step {step}; "
                                    "lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            loss_sum += loss.item() * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            n += len(yb)
        last = {"loss": loss_sum / max(n, 1), "accuracy": correct / max(n, 1)}
        if progress is not None:
            progress(epoch, last)
    return {"train_loss": last["loss"], "train_accuracy": last["accuracy"], "steps": step,
            "seconds": time.perf_counter() - t0}
