"""The cost of every (decision, option) of a space on a device, from a cost source.

``CostTable`` holds, per metric (``latency_ms``, ``energy_mj``), one array per decision with the
predicted cost of each option, and a ``base`` cost (what no decision changes). The additive cost
of a network is ``base + sum_d table[d][choice_d]``; the expected cost of the architecture
distribution is ``base + sum_d scale_d * <p_d, table[d]>`` (differentiable in p). ``base`` is
fitted so that the cheapest and the costliest network's additive costs equal the cost source's costs of their
whole exported graph, where TVM's fusion across option boundaries is seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CodesignError

METRICS = ("latency_ms", "energy_mj")
FORMAT = "codesign-cost-table"
FORMAT_VERSION = 1


@dataclass
class CostTable:
    space: str
    device: str
    schedule: str
    table: dict[str, list[np.ndarray]]  # metric -> [decision] -> [option]
    base: dict[str, float]
    scale: list[float] = field(default_factory=list)  # per decision weight of the expectation
    calibration: dict = field(default_factory=dict)  # metric -> scale and whole-graph anchors

    def metrics(self) -> list[str]:
        return [m for m in METRICS if m in self.table]

    def of(self, choices: list[int], metric: str = "latency_ms") -> float:
        t = self.table[metric]
        return float(self.base[metric] + sum(t[d][k] for d, k in enumerate(choices)))

    def all_of(self, choices: list[int]) -> dict[str, float]:
        return {m: self.of(choices, m) for m in self.metrics()}

    def expected(self, probs: list[torch.Tensor], metric: str = "latency_ms") -> torch.Tensor:
        """Expected cost under per-decision probabilities (differentiable)."""
        t = self.table[metric]
        total = probs[0].new_tensor(self.base[metric])
        for d, p in enumerate(probs):
            total = total + self.scale[d] * (p * p.new_tensor(t[d])).sum()
        return total

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "space": self.space, "device": self.device,
                "schedule": self.schedule, "base": self.base, "scale": self.scale, "calibration": self.calibration,
                "table": {m: [v.tolist() for v in rows] for m, rows in self.table.items()}}

    @classmethod
    def from_dict(cls, d: dict, where: str = "cost table") -> CostTable:
        if d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
            raise CodesignError(f"{where}: not a codesign cost table of format version {FORMAT_VERSION}")
        return cls(d["space"], d["device"], d["schedule"],
                   {m: [np.asarray(v, np.float64) for v in rows] for m, rows in d["table"].items()},
                   {m: float(v) for m, v in d["base"].items()}, [float(s) for s in d["scale"]],
                   d.get("calibration", {}))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()), str(path))
        except (OSError, ValueError, KeyError) as exc:
            raise CodesignError(f"cannot read cost table {path}: {exc}") from None


def network_cost(space, genotype: str, source) -> dict[str, float]:
    """The cost source's prediction for a whole derived network (its kernels exported once per
    genotype and cached by the space), overheads included."""
    return source.network_cost(space.network_kernels(genotype))


def build_cost_table(space, source) -> CostTable:
    """Cost every option's kernels with the cost source (a ``codesign.costs.CostSource``), then
    calibrate the table on the source's whole-network costs of the cheapest and the costliest network."""
    rows = space.option_kernels()
    flat = [k for row in rows for ks in row for k in ks]
    per_kernel = source.kernel_costs(flat)
    table: dict[str, list[np.ndarray]] = {}
    for metric in METRICS:
        values = per_kernel.get(metric)
        if values is None or (len(values) and not np.all(np.isfinite(values))):
            continue
        out, i = [], 0
        for row in rows:
            option_sums = []
            for ks in row:  # options without kernels (none, identity) cost nothing
                option_sums.append(float(np.sum(values[i:i + len(ks)])))
                i += len(ks)
            out.append(np.asarray(option_sums, np.float64))
        table[metric] = out
    if "latency_ms" not in table:
        raise CodesignError(f"the cost source of {source.device} gave no finite latency for the {space.name} space")
    scale = list(getattr(space, "expectation_scale", lambda: [1.0] * len(rows))())
    ct = CostTable(space.name, source.device, source.schedule, table, {m: 0.0 for m in table}, scale)
    # Two-point calibration of ``base + scale * sum(options)`` against the cost source's prediction
    # of whole exported graphs (where TVM fuses across option boundaries): exact at the cheapest
    # and at the costliest network, so that infeasible budgets and relative budgets are judged
    # on whole-graph costs.
    low, top = space.cheapest(table["latency_ms"]), space.costliest(table["latency_ms"])
    whole_low = network_cost(space, space.format(low), source)
    whole_top = network_cost(space, space.format(top), source)
    ct.calibration = {}
    for m in ct.metrics():
        opt_low, opt_top = ct.of(low, m), ct.of(top, m)  # base is 0 here: option sums
        w_low, w_top = whole_low.get(m, opt_low), whole_top.get(m, opt_top)
        scale = (w_top - w_low) / (opt_top - opt_low) if opt_top - opt_low > 1e-12 else 1.0
        if not (np.isfinite(scale) and scale > 0):
            scale = 1.0
        ct.table[m] = [row * scale for row in ct.table[m]]
        ct.base[m] = max(w_low - scale * opt_low, 0.0)
        ct.calibration[m] = {"scale": scale, "whole_cheapest": w_low, "whole_costliest": w_top}
    return ct
