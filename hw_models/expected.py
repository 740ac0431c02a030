"""Expected latency/energy under a probability distribution over discrete hardware choices.

For a search that samples (or relaxes) accelerator parameters alongside the network: a
``HardwareSpace`` names the choices of some parameters of a base config, a probability vector per
choice (independent across parameters) gives a distribution over the space's configs, and the
expected per-layer cost is ``sum_config P(config) * cost(layer, config)``, a differentiable function
of the probabilities (torch). The cost of every (layer, config) pair is computed once with the
numba mapper and kept in a ``HardwareCostTable``; each call afterwards is a few tensor products.

    from codesign.hw_models import HardwareSpace, HardwareCostTable, expected_cost

    space = HardwareSpace("eyeriss-like", {"pe_rows": [8, 12, 16], "glb_kib": [54, 108, 216],
                                           "dataflow": ["ws", "os", "rs"]})
    table = HardwareCostTable(layers, space)             # once
    probs = {name: torch.softmax(logits[name], -1) for name in space.names}  # or Gumbel samples
    cost = table.expected(probs)                          # {"latency_ms": tensor, "energy_mj": ...}
    (cost["latency_ms"] + lam * cost["energy_mj"]).backward()

Infeasible pairs (a layer that cannot map on a config) cost ``infeasible_penalty`` times the
layer's worst feasible cost, so that the gradient pushes probability away from them without
infinities; ``infeasible_prob`` reports the probability mass on configs where any layer fails.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from codesign.errors import CodesignError

from . import mapper
from .accelerator import AcceleratorConfig, get_accelerator

_SEARCHABLE = ("pe_rows", "pe_cols", "rf_words", "glb_kib", "dram_bandwidth_gbs", "clock_mhz", "dataflow",
               "word_bits")
METRICS = ("latency_ms", "energy_mj")


class HardwareSpace:
    """Discrete choices for some parameters of a base accelerator config.

    Args:
        base: shipped accelerator name, YAML path or AcceleratorConfig.
        choices: parameter -> list of values, e.g. {"pe_rows": [8, 12, 16], "dataflow": ["ws", "rs"]}.
            Parameters: pe_rows, pe_cols, rf_words, glb_kib, dram_bandwidth_gbs, clock_mhz, dataflow,
            word_bits. The order of the mapping is the order of ``names`` and of the configs.
    """

    def __init__(self, base, choices: Mapping[str, Sequence]):
        self.base = get_accelerator(base)
        if not isinstance(choices, Mapping) or not choices:
            raise CodesignError("a hardware space needs a mapping of parameter -> list of choices")
        self.choices: dict[str, tuple] = {}
        for name, values in choices.items():
            if name not in _SEARCHABLE:
                raise CodesignError(f"unknown hardware parameter {name!r}; searchable: {', '.join(_SEARCHABLE)}")
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
                raise CodesignError(f"choices of {name} must be a non-empty list, got {values!r}")
            if len(set(values)) != len(values):
                raise CodesignError(f"choices of {name} repeat a value: {list(values)}")
            for v in values:  # validates each value through the config's own checks
                self.base.replace(**{name: v})
            self.choices[name] = tuple(values)
        self.names = tuple(self.choices)
        self.sizes = tuple(len(v) for v in self.choices.values())

    @property
    def n_configs(self) -> int:
        return int(np.prod(self.sizes))

    def configs(self) -> list[AcceleratorConfig]:
        """Every config of the space, row-major over ``names`` (the last parameter varies fastest)."""
        out = []
        for combo in itertools.product(*self.choices.values()):
            changes = dict(zip(self.names, combo))
            label = ",".join(f"{k}={v}" for k, v in changes.items())
            out.append(dataclasses.replace(self.base.replace(**changes), name=f"{self.base.name}[{label}]"))
        return out

    def config_at(self, indices: Sequence[int]) -> AcceleratorConfig:
        """The config choosing ``indices[i]`` for parameter ``names[i]`` (e.g. a derived argmax)."""
        if len(indices) != len(self.names):
            raise CodesignError(f"give one index per parameter ({', '.join(self.names)})")
        changes = {}
        for name, i, n in zip(self.names, indices, self.sizes):
            if not 0 <= int(i) < n:
                raise CodesignError(f"index {i} out of range for {name} ({n} choices)")
            changes[name] = self.choices[name][int(i)]
        return self.base.replace(**changes)


class HardwareCostTable:
    """Cost of every layer on every config of a space, for repeated expected-cost queries.

    Attributes (numpy, [layers, configs] unless noted): ``latency_ms``, ``energy_mj`` (infeasible
    pairs replaced by the penalty), ``feasible`` (bool), ``area_mm2`` ([configs]).
    """

    def __init__(self, layers, space: HardwareSpace, infeasible_penalty: float = 10.0):
        from .evaluate import network_kernels

        if not isinstance(space, HardwareSpace):
            raise CodesignError(f"space must be a HardwareSpace, got {type(space).__name__}")
        if not (isinstance(infeasible_penalty, (int, float)) and infeasible_penalty >= 1.0):
            raise CodesignError(f"infeasible_penalty must be a number >= 1, got {infeasible_penalty!r}")
        self.space = space
        self.layers = network_kernels(layers)
        cfgs = space.configs()
        rows = mapper.evaluate_rows(mapper.encode_layers(self.layers), mapper.encode_configs(cfgs))
        rows = rows.reshape(len(self.layers), len(cfgs), mapper.RESULT_FIELDS)
        self.feasible = rows[:, :, mapper.R["feasible"]] > 0
        dead = np.where(~self.feasible.any(axis=1))[0]
        if len(dead):
            raise CodesignError(f"layer {self.layers[dead[0]].key()} maps on no config of the space "
                                f"({mapper.REASONS[int(rows[dead[0], 0, mapper.R['reason']])]}); widen the choices")
        self.area_mm2 = rows[0, :, mapper.R["area_mm2"]].copy()
        for m in METRICS:
            v = rows[:, :, mapper.R[m]].copy()
            worst = np.where(self.feasible, v, -np.inf).max(axis=1, keepdims=True)
            setattr(self, m, np.where(self.feasible, v, infeasible_penalty * worst))

    def joint(self, probs):
        """The joint probability of every config, [..., n_configs], from per-parameter tensors."""
        import torch

        if isinstance(probs, Mapping):
            missing = [n for n in self.space.names if n not in probs]
            extra = [n for n in probs if n not in self.space.names]
            if missing or extra:
                raise CodesignError(f"probabilities must be given for exactly {', '.join(self.space.names)}"
                                    + (f"; missing {', '.join(missing)}" if missing else "")
                                    + (f"; unknown {', '.join(extra)}" if extra else ""))
            tensors = [probs[n] for n in self.space.names]
        else:
            tensors = list(probs)
            if len(tensors) != len(self.space.names):
                raise CodesignError(f"give {len(self.space.names)} probability tensors ({', '.join(self.space.names)})")
        joint = None
        for name, n, p in zip(self.space.names, self.space.sizes, tensors):
            if not isinstance(p, torch.Tensor) or not p.is_floating_point():
                raise CodesignError(f"probabilities of {name} must be a floating-point torch tensor")
            if p.ndim == 0 or p.shape[-1] != n:
                raise CodesignError(f"probabilities of {name} must end in a dimension of {n}, got {tuple(p.shape)}")
            with torch.no_grad():
                bad = (p < 0).any() or not torch.allclose(p.sum(-1), torch.ones((), dtype=p.dtype, device=p.device),
                                                          atol=1e-4)
            if bad:
                raise CodesignError(f"probabilities of {name} must be non-negative and sum to 1 over the last dimension")
            joint = p if joint is None else (joint.unsqueeze(-1) * p.unsqueeze(-2)).flatten(-2)
        return joint

    def expected(self, probs, per_layer: bool = False) -> dict:
        """Expected latency_ms and energy_mj (torch, differentiable in ``probs``).

        Args:
            probs: parameter name -> tensor [..., n_choices] (softmax, Gumbel-softmax or one-hot
                samples; leading batch dimensions broadcast), or a list in ``space.names`` order.
            per_layer: also return ``[..., layers]`` tensors under ``latency_ms_per_layer`` and
                ``energy_mj_per_layer``.

        Returns:
            {"latency_ms": [...], "energy_mj": [...], "area_mm2": [...], "infeasible_prob": [...]}:
            the network's expected total latency and energy (layers run in sequence), expected
            area, and the probability of a config on which some layer cannot map.
        """
        import torch

        joint = self.joint(probs)
        dt, dev = joint.dtype, joint.device
        out = {}
        for m in METRICS:
            table = torch.as_tensor(getattr(self, m), dtype=dt, device=dev)  # [L, M]
            layer_cost = joint @ table.T  # [..., L]
            out[m] = layer_cost.sum(-1)
            if per_layer:
                out[f"{m}_per_layer"] = layer_cost
        out["area_mm2"] = joint @ torch.as_tensor(self.area_mm2, dtype=dt, device=dev)
        bad = torch.as_tensor((~self.feasible).any(axis=0).astype(np.float64), dtype=dt, device=dev)
        out["infeasible_prob"] = joint @ bad
        return out


def expected_cost(layers, space: HardwareSpace, probs, per_layer: bool = False,
                  infeasible_penalty: float = 10.0) -> dict:
    """Expected latency_ms / energy_mj of ``layers`` under ``probs`` over ``space`` (torch tensors,
    differentiable). One-off form of ``HardwareCostTable(layers, space).expected(probs)``: a search
    that calls it every step should build the table once."""
    return HardwareCostTable(layers, space, infeasible_penalty).expected(probs, per_layer=per_layer)
