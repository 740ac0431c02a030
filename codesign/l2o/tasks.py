"""Meta-training and evaluation tasks: families of small optimisation problems.

A task owns its data and randomness (one seed fixes the problem, the initial point and the
minibatch order) and exposes a *functional* loss, so the same object serves meta-training (the
parameters are non-leaf tensors produced by the learned rule, gradients flow back into it) and
evaluation (the parameters are leaves updated by any ``torch.optim.Optimizer``):

    params = task.init_params()           # list of tensors
    loss = task.loss(params)              # one optimisation step's loss (a fresh minibatch)
    task.eval_loss(params)                # full-data loss, for reporting

Families (``list_tasks()``):

- ``quadratic``: f(theta) = ||W theta - y||^2, W 10x10 and y 10 drawn N(0, 1) (as in
  Andrychowicz et al. 2016).
- ``mlp`` / ``mlp_relu``: one hidden layer of 20 units (sigmoid / ReLU) on the digits dataset
  (scikit-learn's 8x8 digits), cross-entropy, minibatches of 128. ``mlp_relu`` tests transfer to
  another activation.
- ``convnet``: conv3x3(8)-ReLU-maxpool-conv3x3(16)-ReLU-global-average-pool-linear on digits,
  minibatches of 64.
- ``supernet``: the architecture weights (alphas) of a tiny DARTS-like cell whose three edges are
  ``codesign.mixed_op`` over {conv3x3, zero, identity, avg_pool_3x3, max_pool_3x3}. Bilevel as in
  first-order DARTS: each ``loss()`` call first takes one SGD step (lr 0.1, momentum 0.9) on the
  network weights on a training batch (alphas fixed), then returns the validation-batch loss as
  a function of the alphas, which is what the optimizer under test updates.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CodesignError
from ..registry import Registry

TASKS = Registry("task")
register_task = TASKS.register()  # task families register under their ``name``


def list_tasks() -> list[str]:
    """Names of the task families."""
    return TASKS.names()


def create_task(name: str, seed: int) -> Task:
    """Build one task of family ``name``; ``seed`` fixes problem, initial point and batches.

    Raises:
        CodesignError: unknown family.
    """
    return TASKS.create(name, seed)


def parse_tasks(text: str) -> list[str]:
    """``"mlp,quadratic"`` -> ["mlp", "quadratic"], each checked; meta-training mixes them."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise CodesignError(f"--task needs at least one of {', '.join(list_tasks())}")
    for n in names:
        TASKS.check(n)
    return names


@functools.lru_cache(maxsize=1)
def _digits() -> dict[str, torch.Tensor]:
    """Digits (1797 8x8 images, 10 classes) scaled to [0, 1], split 1200 train / 597 val with a
    fixed permutation, so every task sees the same split."""
    from sklearn.datasets import load_digits  # shipped with scikit-learn: no download

    d = load_digits()
    x, y = d.data, d.target
    x = torch.as_tensor(np.asarray(x, dtype=np.float32).reshape(-1, 64) / 16.0)
    y = torch.as_tensor(np.asarray(y, dtype=np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return {"x_train": x[:1200], "y_train": y[:1200], "x_val": x[1200:], "y_val": y[1200:]}


class Task:
    """One optimisation problem; subclasses set ``name`` and implement the three methods."""

    name = ""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)

    def init_params(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def loss(self, params: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def eval_loss(self, params: list[torch.Tensor]) -> float:
        with torch.no_grad():
            return float(self.loss(params))


@register_task
class QuadraticTask(Task):
    name = "quadratic"
    dim = 10

    def __init__(self, seed):
        super().__init__(seed)
        self.W = torch.randn(self.dim, self.dim, generator=self.gen)
        self.y = torch.randn(self.dim, generator=self.gen)

    def init_params(self):
        return [torch.randn(self.dim, generator=self.gen)]

    def loss(self, params):
        return (self.W @ params[0] - self.y).square().sum()


class _DigitsTask(Task):
    batch = 128

    def _batch(self):
        d = _digits()
        idx = torch.randint(0, len(d["y_train"]), (self.batch,), generator=self.gen)
        return d["x_train"][idx], d["y_train"][idx]

    def forward(self, params, x):
        raise NotImplementedError

    def loss(self, params):
        x, y = self._batch()
        return F.cross_entropy(self.forward(params, x), y)

    def eval_loss(self, params):
        d = _digits()
        with torch.no_grad():
            return float(F.cross_entropy(self.forward(params, d["x_train"]), d["y_train"]))

    def _init(self, *shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)  # torch's default Linear/Conv init range
        return (torch.rand(*shape, generator=self.gen) * 2 - 1) * bound


@register_task
class MLPTask(_DigitsTask):
    name = "mlp"
    hidden = 20
    activation = staticmethod(torch.sigmoid)

    def init_params(self):
        return [self._init(self.hidden, 64, fan_in=64), self._init(self.hidden, fan_in=64),
                self._init(10, self.hidden, fan_in=self.hidden), self._init(10, fan_in=self.hidden)]

    def forward(self, params, x):  # x: (B, 64) -> logits (B, 10)
        w1, b1, w2, b2 = params
        return F.linear(self.activation(F.linear(x, w1, b1)), w2, b2)


@register_task
class MLPReLUTask(MLPTask):
    name = "mlp_relu"
    activation = staticmethod(torch.relu)


@register_task
class ConvNetTask(_DigitsTask):
    name = "convnet"
    batch = 64

    def init_params(self):
        return [self._init(8, 1, 3, 3, fan_in=9), self._init(8, fan_in=9),
                self._init(16, 8, 3, 3, fan_in=72), self._init(16, fan_in=72),
                self._init(10, 16, fan_in=16), self._init(10, fan_in=16)]

    def forward(self, params, x):  # x: (B, 64) -> logits (B, 10)
        c1, b1, c2, b2, w, b = params
        h = F.relu(F.conv2d(x.view(-1, 1, 8, 8), c1, b1, padding=1))  # (B, 8, 8, 8)
        h = F.max_pool2d(h, 2)  # (B, 8, 4, 4)
        h = F.relu(F.conv2d(h, c2, b2, padding=1))  # (B, 16, 4, 4)
        return F.linear(h.mean(dim=(2, 3)), w, b)


@register_task
class SupernetTask(_DigitsTask):
    """Architecture parameters of a tiny DARTS-like cell (see the module docstring)."""

    name = "supernet"
    batch = 64
    channels = 8
    free_ops = ("zero", "identity", "avg_pool_3x3", "max_pool_3x3")
    edges = ((0, "s"), (1, "s"), (1, 0))  # node 0 <- stem; node 1 <- stem, node 0
    weight_lr = 0.1

    def __init__(self, seed):
        super().__init__(seed)
        c = self.channels
        self.weights = [
            self._init(c, 1, 3, 3, fan_in=9), self._init(c, fan_in=9),  # stem
            *[self._init(c, c, 3, 3, fan_in=9 * c) for _ in self.edges],  # one conv per edge
            self._init(10, 16 * c, fan_in=16 * c), self._init(10, fan_in=16 * c),  # classifier
        ]
        self.momentum = [torch.zeros_like(w) for w in self.weights]

    def init_params(self):
        # DARTS initialises alphas at 1e-3 * N(0, 1): all candidates start nearly equal
        return [1e-3 * torch.randn(len(self.edges), 1 + len(self.free_ops), generator=self.gen)]

    def forward_with(self, weights, alphas, x):  # x: (B, 64) -> logits (B, 10)
        from .. import mixed_op

        stem_w, stem_b, *convs, w, b = weights
        convs, probs = convs[: len(self.edges)], torch.softmax(alphas, dim=-1)
        s = F.relu(F.conv2d(x.view(-1, 1, 8, 8), stem_w, stem_b, padding=1))  # (B, C, 8, 8)
        nodes: list[torch.Tensor] = []
        for node in range(2):
            acc = None
            for e, (dst, src) in enumerate(self.edges):
                if dst != node:
                    continue
                inp = s if src == "s" else nodes[src]
                y = F.conv2d(F.relu(inp), convs[e], padding=1)
                out = mixed_op(inp, [y], probs[e], self.free_ops)
                acc = out if acc is None else acc + out
            nodes.append(acc)
        # (B, C, 8, 8) -> (B, C*16): pooled 2x2, not global, so that the tiny net learns in 100 steps
        return F.linear(F.avg_pool2d(nodes[0] + nodes[1], 2).flatten(1), w, b)

    def forward(self, params, x):
        return self.forward_with(self.weights, params[0], x)

    def loss(self, params):
        # inner step: SGD with momentum 0.9 on the network weights, the alphas held fixed
        x, y = self._batch()
        ws = [w.detach().requires_grad_() for w in self.weights]
        inner = F.cross_entropy(self.forward_with(ws, params[0].detach(), x), y)
        grads = torch.autograd.grad(inner, ws)
        self.momentum = [0.9 * m + g for m, g in zip(self.momentum, grads)]
        self.weights = [(w - self.weight_lr * m).detach() for w, m in zip(ws, self.momentum)]
        # outer loss: a validation batch, differentiable in the alphas only
        d = _digits()
        idx = torch.randint(0, len(d["y_val"]), (self.batch,), generator=self.gen)
        return F.cross_entropy(self.forward(params, d["x_val"][idx]), d["y_val"][idx])

    def eval_loss(self, params):
        d = _digits()
        with torch.no_grad():
            return float(F.cross_entropy(self.forward(params, d["x_val"]), d["y_val"]))
