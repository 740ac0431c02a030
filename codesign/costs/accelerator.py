"""Cost sources on modelled accelerators (``codesign.hw_models``): one fixed config (``accel``), or a
hardware space whose configs are searched together with the network (``hw-space``).

Every kernel is costed on every config by the numba mapper (latency_ms, energy_mj from data
movement and MACs, PE utilisation); a network's cost is the sum of its kernels (layers run one after
the other), and its area is the config's. Costs come as arrays ``[kernels, configs]`` (one column
for a fixed accelerator); a (kernel, config) pair that cannot map is marked infeasible, costed at a
penalty for gradient search and never chosen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import CodesignError
from ..kernelspec import KernelSpec
from .base import CostSource, register_cost_source

INFEASIBLE_PENALTY = 10.0  # an infeasible pair costs this times the kernel's worst feasible cost


@dataclasses.dataclass
class HardwareAxis:
    """The hardware dimension of a cost table: the parameters searched, their values, every
    config's area. No parameters (a fixed accelerator) is one config."""

    base: dict  # the base accelerator (AcceleratorConfig.to_yaml_dict())
    names: list[str]
    values: list[list]
    area_mm2: np.ndarray  # [configs]

    @property
    def sizes(self) -> list[int]:
        return [len(v) for v in self.values]

    @property
    def n_configs(self) -> int:
        return int(np.prod(self.sizes)) if self.names else 1

    def index(self, hw_choices: Sequence[int]) -> int:
        """Row-major config index of per-parameter choices (the last parameter varies fastest)."""
        if len(hw_choices) != len(self.names):
            raise CodesignError(f"give one hardware choice per parameter ({', '.join(self.names) or 'none'})")
        i = 0
        for k, n in zip(hw_choices, self.sizes):
            if not 0 <= int(k) < n:
                raise CodesignError(f"hardware choice {k} out of range ({n} values)")
            i = i * n + int(k)
        return i

    def choices_of(self, index: int) -> list[int]:
        out = []
        for n in reversed(self.sizes):
            out.append(index % n)
            index //= n
        return out[::-1]

    def params(self, hw_choices: Sequence[int]) -> dict:
        return {n: v[int(k)] for n, v, k in zip(self.names, self.values, hw_choices)}

    def config(self, hw_choices: Sequence[int]):
        """The AcceleratorConfig of per-parameter choices."""
        from ..hw_models.accelerator import accelerator_from_dict

        base = accelerator_from_dict(dict(self.base), "the cost table's base accelerator")
        params = self.params(hw_choices)
        if not params:
            return base
        label = ",".join(f"{k}={v}" for k, v in params.items())
        return dataclasses.replace(base.replace(**params), name=f"{base.name}[{label}]")

    def joint(self, probs):
        """Joint probability of every config [configs] from per-parameter probability tensors."""
        import torch

        if not self.names:
            return torch.ones(1, dtype=torch.float64)
        joint = None
        for p in probs:
            joint = p if joint is None else (joint.unsqueeze(-1) * p.unsqueeze(-2)).flatten(-2)
        return joint

    def to_dict(self) -> dict:
        return {"base": self.base, "names": list(self.names), "values": [list(v) for v in self.values],
                "area_mm2": np.asarray(self.area_mm2).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> HardwareAxis:
        return cls(dict(d["base"]), list(d["names"]), [list(v) for v in d["values"]],
                   np.asarray(d["area_mm2"], np.float64))


class _MapperSource(CostSource):
    """Shared by the fixed accelerator and the hardware space: costs of kernels on every config."""

    metrics = ("latency_ms", "energy_mj", "area_mm2")
    energy_note = "model:hw_models (data movement and MACs per level)"

    def __init__(self, base, configs: list, names: list[str], values: list[list]):
        self.base = base
        self.configs = configs
        self.axis = HardwareAxis(base.to_yaml_dict(), list(names), [list(v) for v in values],
                                 np.array([c.area_mm2() for c in configs], np.float64))
        self.schedule = ""
        self._cache: dict[KernelSpec, np.ndarray] = {}

    def _rows(self, specs: list[KernelSpec]) -> np.ndarray:
        """[len(specs), configs, RESULT_FIELDS] mapper results (each distinct kernel evaluated once)."""
        from ..hw_models import mapper

        todo = [s for s in dict.fromkeys(specs) if s not in self._cache]
        if todo:
            rows = mapper.evaluate_rows(mapper.encode_layers(todo), mapper.encode_configs(self.configs))
            rows = rows.reshape(len(todo), len(self.configs), mapper.RESULT_FIELDS)
            for s, r in zip(todo, rows):
                self._cache[s] = r
        if not specs:
            return np.zeros((0, len(self.configs), mapper.RESULT_FIELDS))
        return np.stack([self._cache[s] for s in specs])

    def feasible(self, specs: list[KernelSpec]) -> np.ndarray:
        """[kernels, configs] bool: which pairs map. A kernel that maps on no config is an error."""
        from ..hw_models import mapper

        rows = self._rows(list(specs))
        ok = rows[:, :, mapper.R["feasible"]] > 0
        dead = np.where(~ok.any(axis=1))[0] if len(ok) else []
        if len(dead):
            reason = mapper.REASONS[int(rows[dead[0], 0, mapper.R["reason"]])]
            raise CodesignError(f"layer {specs[dead[0]].key()} maps on no accelerator config of {self.device} "
                                f"({reason}); widen the hardware choices or change the network")
        return ok

    def kernel_costs(self, specs: list[KernelSpec]) -> dict[str, np.ndarray]:
        """{metric: [kernels, configs]}; infeasible pairs at ``INFEASIBLE_PENALTY`` x the kernel's
        worst feasible cost (see ``feasible``)."""
        from ..hw_models import mapper

        specs = list(specs)
        rows = self._rows(specs)
        ok = self.feasible(specs)
        out = {}
        for m in ("latency_ms", "energy_mj"):
            v = rows[:, :, mapper.R[m]]
            worst = np.where(ok, v, -np.inf).max(axis=1, keepdims=True) if len(v) else np.zeros((0, 1))
            out[m] = np.where(ok, v, INFEASIBLE_PENALTY * worst)
        return out

    def network_cost(self, specs: list[KernelSpec]) -> dict[str, np.ndarray]:
        """{metric: [configs]}: the layers' sums (infeasible layers at their penalty), the area, and
        ``feasible`` [configs]: whether every layer maps."""
        specs = list(specs)
        out = {m: v.sum(axis=0) for m, v in self.kernel_costs(specs).items()}
        out["area_mm2"] = self.axis.area_mm2.copy()
        out["feasible"] = self.feasible(specs).all(axis=0)
        return out

    def can_measure(self) -> tuple[bool, str]:
        return True, ""

    def evaluate(self, onnx_path, config) -> dict:
        """The exported network on one config, layer by layer (the modelled "measurement")."""
        from ..hw_models import evaluate_network

        res = evaluate_network(str(onnx_path), config)
        layers = [{"kernel_key": la.kernel_key, "op": la.op, "feasible": la.feasible, "reason": la.reason,
                   "latency_ms": la.latency_ms, "energy_mj": la.energy_mj, "energy_by_level_mj": la.energy_by_level_mj,
                   "pe_utilization": la.pe_utilization, "macs": la.macs} for la in res.layers]
        return {"source": "model:hw_models", "accelerator": config.name, "latency_ms": res.latency_ms,
                "energy_mj": res.energy_mj, "edp_mj_ms": res.latency_ms * res.energy_mj,
                "area_mm2": res.area_mm2, "energy_by_level_mj": res.energy_by_level_mj, "feasible": res.feasible,
                "layers": layers}

    def describe(self) -> dict:
        out = super().describe()
        out.update(base=self.base.name, configs=len(self.configs), parameters=dict(zip(self.axis.names,
                                                                                       self.axis.values)))
        return out


@register_cost_source("accel")
class AcceleratorSource(_MapperSource):
    """One accelerator config of the template (``--device accel:NAME|PATH``): no TVM, no profiling."""

    def __init__(self, accel: str | Path):
        from ..hw_models import get_accelerator

        cfg = get_accelerator(accel)
        super().__init__(cfg, [cfg], [], [])
        self.device = f"accel:{cfg.name}"

    def measure(self, onnx_path, progress: bool = False, hw_choices=()) -> dict:
        return self.evaluate(onnx_path, self.configs[0])


@register_cost_source("hw-space")
class HardwareSpaceSource(_MapperSource):
    """A hardware space (``--hw-space NAME|PATH``): every kernel costed on every config once, so that
    the search can weigh network options and hardware choices together."""

    def __init__(self, hw_space):
        from ..hw_models import HardwareSpace, get_hardware_space

        space = hw_space if isinstance(hw_space, HardwareSpace) else get_hardware_space(hw_space)
        self.hw_space = space
        super().__init__(space.base, space.configs(), list(space.names), [list(v) for v in space.choices.values()])
        self.device = f"hw-space:{getattr(space, 'name', space.base.name)}"

    def measure(self, onnx_path, progress: bool = False, hw_choices=()) -> dict:
        return self.evaluate(onnx_path, self.axis.config(hw_choices))
