"""A learned update rule wrapped as a ``torch.optim.Optimizer``."""

from __future__ import annotations

import torch

from ..errors import CodesignError
from .rules import UpdateRule


class LearnedOptimizer(torch.optim.Optimizer):
    """Apply a trained :class:`UpdateRule` to parameters, like any torch optimizer.

    ``step()`` runs the rule once on the concatenated gradients of every parameter that has one
    (parameters whose ``.grad`` is None are skipped and keep their state, as torch optimizers do)
    and adds its output. The rule's recurrent state (LSTM cells, moment estimates) lives in
    ``self.state[p]`` as tensors whose first dimension is ``p.numel()``, so ``state_dict()`` /
    ``load_state_dict()`` save and restore a run mid-way. The rule's own weights are frozen: they
    are the optimizer, not something it trains. The rule runs in float32 on the parameters'
    device; float64 or float16 parameters get their update cast back.

    Memory: the state holds ``4 * hidden`` (+3 for rnnprop) floats per coordinate, 80-83 at the
    default hidden size of 20: meant for architecture parameters and small networks.

    Args:
        params: parameters (or parameter groups) to optimise.
        rule: the trained update rule.
        step_scale: multiplies every update (1.0 = as meta-trained); a group may override it.

    Raises:
        CodesignError: no parameters, a bad ``step_scale``, a sparse gradient, or (at ``step()``)
            no parameter with a gradient at all (``backward()`` missing or the loss does not
            depend on these parameters).
    """

    def __init__(self, params, rule: UpdateRule, step_scale: float = 1.0):
        if not isinstance(rule, UpdateRule):
            raise CodesignError(f"rule must be an UpdateRule (see codesign.l2o.load_rule), got {type(rule).__name__}")
        if not (isinstance(step_scale, (int, float)) and step_scale > 0):
            raise CodesignError(f"step_scale must be a number > 0, got {step_scale!r}")
        if isinstance(params, torch.Tensor):
            raise CodesignError("params must be an iterable of tensors (e.g. model.parameters()), not one tensor")
        try:
            super().__init__(params, {"step_scale": float(step_scale)})
        except ValueError as exc:  # torch: "optimizer got an empty parameter list"
            raise CodesignError(f"learned optimizer: {exc}") from None
        for group in self.param_groups:
            if not (isinstance(group["step_scale"], (int, float)) and group["step_scale"] > 0):
                raise CodesignError(f"step_scale must be a number > 0, got {group['step_scale']!r}")
            for p in group["params"]:
                if not p.is_floating_point():
                    raise CodesignError(f"parameter of dtype {p.dtype} cannot be optimised; pass floating-point tensors")
        self.rule = rule
        for w in rule.parameters():
            w.requires_grad_(False)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient; returns closure()'s loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        active: list[tuple[torch.Tensor, float]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue  # a frozen or unused branch this step: no update, state kept
                if p.grad.is_sparse:
                    raise CodesignError("learned optimizers do not support sparse gradients")
                active.append((p, group["step_scale"]))
        if not active:
            raise CodesignError(
                "no parameter has a gradient: call loss.backward() before step(), and check that "
                "the loss depends on the parameters given to the learned optimizer"
            )
        device = active[0][0].device
        if next(self.rule.parameters()).device != device:
            self.rule.to(device)
        for p, _ in active:
            if p.device != device:
                raise CodesignError(f"parameters on {device} and {p.device}: keep them on one device "
                                    "or give each device its own learned optimizer")
            if not self.state[p]:
                self.state[p].update(self.rule.init_state(p.numel(), torch.float32, device))
        # one rule call over all coordinates: the alphas of a search are dozens of tiny tensors
        sizes = [p.numel() for p, _ in active]
        grad = torch.cat([p.grad.reshape(-1).float() for p, _ in active])
        keys = list(self.state[active[0][0]])
        state = {k: torch.cat([self.state[p][k].float() for p, _ in active]) for k in keys}
        update, new = self.rule(grad, state)
        chunks = {k: v.split(sizes) for k, v in new.items()}
        for i, (u, (p, scale)) in enumerate(zip(update.split(sizes), active)):
            for k in keys:
                self.state[p][k] = chunks[k][i].clone()
            p.add_(u.view_as(p).to(p.dtype), alpha=scale)
        return loss
