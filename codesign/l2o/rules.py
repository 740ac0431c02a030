"""Learned update rules: small networks applied to every coordinate of every parameter.

A rule maps one flat gradient ``g`` of N coordinates and its per-coordinate state to an update
added to the parameter (``theta <- theta + update``). The same weights serve every coordinate, so
a rule trained on a 10-dimensional quadratic runs on a network of any size.

Two rules are built in:

- ``lstm``: Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient
  descent". Gradient preprocessing ``(log|g|/p, sign g)`` for ``|g| >= e^-p``, else
  ``(-1, e^p g)``, with p = 10; two LSTM layers of 20 units; a linear output times 0.1.
- ``rnnprop``: Lv, Jiang and Li 2017, "Learning Gradient Descent: Better Generalization and Longer
  Horizons". Inputs are Adam-like *relative* quantities ``m_hat/sqrt(v_hat)`` and
  ``g/sqrt(v_hat)`` (invariant to the gradient's scale), a linear+ELU input layer, two LSTM layers
  of 20 units, and a bounded output ``alpha * tanh(.)`` (alpha = 0.1), which keeps steps finite
  on horizons longer than those it was trained on.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CodesignError
from ..registry import Registry

RULES = Registry("learned optimizer", attribute="kind")
register_rule = RULES.register()  # rules register under their ``kind``


def list_rules() -> list[str]:
    """Names of the built-in update rules."""
    return RULES.names()


def create_rule(kind: str, **config) -> UpdateRule:
    """Build a rule by name with its config (hidden size, scales...), fresh random weights.

    Raises:
        CodesignError: unknown kind or config key; a value that is not a positive number of the
            default's kind (an integer hidden size; beta* below 1).
    """
    cls = RULES.get(kind)
    unknown = set(config) - set(cls.defaults)
    if unknown:
        raise CodesignError(
            f"{kind} optimizer: unknown config {sorted(unknown)}; known keys: {sorted(cls.defaults)}"
        )
    for key, value in config.items():
        integer = isinstance(cls.defaults[key], int)
        ok = (not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
              and math.isfinite(value) and value > 0 and (value < 1 or not key.startswith("beta")))
        if not ok:
            raise CodesignError(f"{kind} optimizer: {key} must be a positive {'integer' if integer else 'number'}"
                                f"{' below 1' if key.startswith('beta') else ''}, got {value!r}")
    return cls(**{**cls.defaults, **config})


class UpdateRule(nn.Module):
    """Base class: ``forward(grad [N], state) -> (update [N], new_state)``; state is a dict of
    tensors whose first dimension is N, so the states of several parameters concatenate along
    dimension 0 and one call updates them all."""

    kind = ""
    defaults: dict = {}

    def config(self) -> dict:
        """The constructor arguments, JSON-serialisable (what the optimizer file stores)."""
        return dict(self._config)

    def init_state(self, n: int, dtype=torch.float32, device=None) -> dict[str, torch.Tensor]:
        """The state of ``n`` fresh coordinates."""
        raise NotImplementedError

    def forward(self, grad: torch.Tensor, state: dict[str, torch.Tensor]):
        raise NotImplementedError


class _TwoLayerLSTM(nn.Module):
    """Two stacked LSTM cells run on a batch of coordinates: x [N, in] -> h [N, hidden]."""

    def __init__(self, n_in: int, hidden: int):
        super().__init__()
        self.cell1 = nn.LSTMCell(n_in, hidden)
        self.cell2 = nn.LSTMCell(hidden, hidden)

    def forward(self, x, state):
        h1, c1 = self.cell1(x, (state["h1"], state["c1"]))
        h2, c2 = self.cell2(h1, (state["h2"], state["c2"]))
        return h2, {"h1": h1, "c1": c1, "h2": h2, "c2": c2}


def _lstm_state(n, hidden, dtype, device):
    return {k: torch.zeros(n, hidden, dtype=dtype, device=device) for k in ("h1", "c1", "h2", "c2")}


@register_rule
class LSTMRule(UpdateRule):
    """Coordinatewise LSTM optimizer of Andrychowicz et al. 2016."""

    kind = "lstm"
    defaults = {"hidden": 20, "preprocess_p": 10.0, "output_scale": 0.1}

    def __init__(self, hidden: int = 20, preprocess_p: float = 10.0, output_scale: float = 0.1):
        super().__init__()
        self._config = {"hidden": hidden, "preprocess_p": preprocess_p, "output_scale": output_scale}
        self.hidden, self.p, self.output_scale = hidden, preprocess_p, output_scale
        self.lstm = _TwoLayerLSTM(2, hidden)
        self.out = nn.Linear(hidden, 1)

    def init_state(self, n, dtype=torch.float32, device=None):
        return _lstm_state(n, self.hidden, dtype, device)

    def preprocess(self, g: torch.Tensor) -> torch.Tensor:
        """[N] -> [N, 2]: (log|g|/p, sign g) where |g| >= e^-p, else (-1, e^p g); this puts
        gradients spanning many orders of magnitude into a range an LSTM can use."""
        big = g.abs() >= math.exp(-self.p)
        log_part = torch.where(big, g.abs().clamp_min(1e-38).log() / self.p, torch.full_like(g, -1.0))
        sign_part = torch.where(big, g.sign(), g * math.exp(self.p))
        return torch.stack([log_part, sign_part], dim=1)

    def forward(self, grad, state):
        h, new = self.lstm(self.preprocess(grad), state)
        return self.output_scale * self.out(h).squeeze(1), new


@register_rule
class RNNPropRule(UpdateRule):
    """RNNProp (Lv et al. 2017): an LSTM over Adam-like relative inputs with a bounded step."""

    kind = "rnnprop"
    defaults = {"hidden": 20, "beta1": 0.95, "beta2": 0.95, "eps": 1e-8, "output_scale": 0.1}

    def __init__(self, hidden=20, beta1=0.95, beta2=0.95, eps=1e-8, output_scale=0.1):
        super().__init__()
        self._config = {"hidden": hidden, "beta1": beta1, "beta2": beta2, "eps": eps,
                        "output_scale": output_scale}
        self.hidden, self.beta1, self.beta2, self.eps = hidden, beta1, beta2, eps
        self.output_scale = output_scale
        self.inp = nn.Linear(2, hidden)
        self.lstm = _TwoLayerLSTM(hidden, hidden)
        self.out = nn.Linear(hidden, 1)

    def init_state(self, n, dtype=torch.float32, device=None):
        state = _lstm_state(n, self.hidden, dtype, device)
        state["m"] = torch.zeros(n, dtype=dtype, device=device)
        state["v"] = torch.zeros(n, dtype=dtype, device=device)
        # per coordinate, so that parameters which skipped steps (no gradient) can share one call
        state["t"] = torch.zeros(n, dtype=dtype, device=device)
        return state

    def forward(self, grad, state):
        t = state["t"] + 1
        m = self.beta1 * state["m"] + (1 - self.beta1) * grad
        v = self.beta2 * state["v"] + (1 - self.beta2) * grad * grad
        m_hat = m / (1 - self.beta1**t)
        denom = (v / (1 - self.beta2**t)).sqrt() + self.eps
        x = torch.stack([m_hat / denom, grad / denom], dim=1)  # [N, 2], scale-free
        h, new = self.lstm(F.elu(self.inp(x)), {k: state[k] for k in ("h1", "c1", "h2", "c2")})
        new.update(m=m, v=v, t=t)
        return self.output_scale * torch.tanh(self.out(h).squeeze(1)), new
