"""The cost of every (decision, option) of a space on a target, from a cost source.

``CostTable`` holds, per metric (``latency_ms``, ``energy_mj``), one array per decision with the
cost of each option, and a ``base`` cost (what no decision changes). The additive cost of a network
is ``base + sum_d table[d][choice_d]``; the expected cost of the architecture distribution is
``base + sum_d scale_d * <p_d, table[d]>`` (differentiable in p). ``base`` and a scale of the option
costs are fitted so that the cheapest and the costliest network's additive costs equal the cost
source's costs of their whole exported graphs, where TVM's fusion across option boundaries is seen.

On a modelled accelerator the table has a hardware axis (``hardware``, a
``codesign.costs.accelerator.HardwareAxis``): every option's cost is an array over the accelerator
configs ([options, configs]), ``base`` is one value per config, ``area_mm2`` is a metric, and a
choice vector is the network's choices followed by one index per hardware parameter. The expected
cost then couples both distributions: ``sum_c q(c) * (base_c + sum_d scale_d * <p_d, table[d][:, c]>)``
with ``q`` the joint probability of the configs (a product over the hardware parameters). A fixed
accelerator is a hardware axis with no parameters (one config). Option/config pairs on which a
kernel cannot map are ``infeasible``: their additive cost is infinite, so no derived design uses them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CodesignError

METRICS = ("latency_ms", "energy_mj")
FORMAT = "codesign-cost-table"
FORMAT_VERSION = 2  # 2: optional hardware axis; version 1 tables (no hardware) still load


@dataclass
class CostTable:
    space: str
    device: str
    schedule: str
    table: dict[str, list[np.ndarray]]  # metric -> [decision] -> [option] (or [option, config])
    base: dict[str, float | np.ndarray]  # metric -> float (or [config])
    scale: list[float] = field(default_factory=list)  # per decision weight of the expectation
    calibration: dict = field(default_factory=dict)  # metric -> scale and whole-graph anchors
    hardware: object | None = None  # codesign.costs.accelerator.HardwareAxis
    infeasible: list[np.ndarray] | None = None  # [decision] -> bool [option, config]
    base_infeasible: np.ndarray | None = None  # bool [config]: a kernel no decision changes cannot map

    # --- the shape of a choice vector ---------------------------------------------------------------
    @property
    def n_network(self) -> int:
        """How many of a choice vector's entries are network decisions."""
        return len(self.table["latency_ms"])

    def hw_sizes(self) -> list[int]:
        return list(self.hardware.sizes) if self.hardware is not None else []

    def split(self, choices) -> tuple[list[int], list[int]]:
        n = self.n_network
        return list(choices[:n]), list(choices[n:])

    def config_index(self, choices) -> int | None:
        if self.hardware is None:
            return None
        return self.hardware.index(self.split(choices)[1])

    def metrics(self) -> list[str]:
        out = [m for m in METRICS if m in self.table]
        return out + (["area_mm2"] if self.hardware is not None else [])

    # --- costs ----------------------------------------------------------------------------------
    def of(self, choices: list[int], metric: str = "latency_ms") -> float:
        """Additive cost of a (network[, hardware]) choice vector; inf on an infeasible pair."""
        net, _ = self.split(choices)
        if self.hardware is None:
            t = self.table[metric]
            return float(self.base[metric] + sum(t[d][k] for d, k in enumerate(net)))
        c = self.config_index(choices)
        if metric == "area_mm2":
            return float(self.hardware.area_mm2[c])
        if self.infeasible is not None and any(self.infeasible[d][k, c] for d, k in enumerate(net)):
            return math.inf
        if self.base_infeasible is not None and self.base_infeasible[c]:
            return math.inf
        t = self.table[metric]
        return float(self.base[metric][c] + sum(t[d][k, c] for d, k in enumerate(net)))

    def all_of(self, choices: list[int]) -> dict[str, float]:
        return {m: self.of(choices, m) for m in self.metrics()}

    def per_config(self, probs: list[torch.Tensor], metric: str) -> torch.Tensor:
        """Expected network cost on every config, [configs] (hardware tables only)."""
        p0 = probs[0]
        total = p0.new_tensor(np.asarray(self.base[metric], np.float64))
        for d in range(self.n_network):
            p = probs[d]
            total = total + self.scale[d] * (p @ p.new_tensor(self.table[metric][d]))
        return total

    def expected(self, probs: list[torch.Tensor], metric: str = "latency_ms") -> torch.Tensor:
        """Expected cost under per-decision probabilities (differentiable); with a hardware axis,
        ``probs`` continues with one probability vector per hardware parameter."""
        if self.hardware is None:
            t = self.table[metric]
            total = probs[0].new_tensor(self.base[metric])
            for d, p in enumerate(probs[:self.n_network]):
                total = total + self.scale[d] * (p * p.new_tensor(t[d])).sum()
            return total
        q = self.hardware.joint(list(probs[self.n_network:])).to(probs[0].dtype)
        if metric == "area_mm2":
            return q @ q.new_tensor(self.hardware.area_mm2)
        return q @ self.per_config(probs, metric)

    def network_table(self, metric: str, config: int | None = None) -> list[np.ndarray]:
        """Per-decision option costs on one config (the plain table without a hardware axis)."""
        if self.hardware is None:
            return self.table[metric]
        return [t[:, config] for t in self.table[metric]]

    def extreme(self, space, metric: str, which: str = "min") -> tuple[list[int], float]:
        """The (network[, hardware]) choice vector of least (``min``) or most (``max``) additive
        ``metric``, and that cost: per config the space's cheapest/costliest network, then the best
        config (for area: the smallest/largest config, with the network cheapest in latency)."""
        pick = space.cheapest if which == "min" else space.costliest
        if self.hardware is None:
            choices = pick(self.table[metric])
            return choices, self.of(choices, metric)
        best, best_cost = None, None
        for c in range(self.hardware.n_configs):
            net = pick(self.network_table("latency_ms" if metric == "area_mm2" else metric, c))
            choices = net + self.hardware.choices_of(c)
            cost = self.of(choices, metric)
            if not math.isfinite(cost) and metric != "area_mm2":
                continue
            if best is None or (cost < best_cost if which == "min" else cost > best_cost):
                best, best_cost = choices, cost
        if best is None:
            raise CodesignError(f"no network of the {space.name} space maps on any accelerator config")
        return best, best_cost

    # --- files ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"format": FORMAT, "format_version": FORMAT_VERSION, "space": self.space, "device": self.device,
             "schedule": self.schedule, "scale": self.scale, "calibration": self.calibration,
             "base": {m: np.asarray(v).tolist() for m, v in self.base.items()},
             "table": {m: [v.tolist() for v in rows] for m, rows in self.table.items()}}
        if self.hardware is not None:
            d["hardware"] = self.hardware.to_dict()
            d["infeasible"] = [v.astype(int).tolist() for v in self.infeasible] if self.infeasible else None
            d["base_infeasible"] = (self.base_infeasible.astype(int).tolist()
                                    if self.base_infeasible is not None else None)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "cost table") -> CostTable:
        if d.get("format") != FORMAT or d.get("format_version") not in (1, FORMAT_VERSION):
            raise CodesignError(f"{where}: not a codesign cost table of format version {FORMAT_VERSION}")
        hardware = infeasible = base_infeasible = None
        if d.get("hardware") is not None:
            from ..costs.accelerator import HardwareAxis

            hardware = HardwareAxis.from_dict(d["hardware"])
            if d.get("infeasible") is not None:
                infeasible = [np.asarray(v, bool) for v in d["infeasible"]]
            if d.get("base_infeasible") is not None:
                base_infeasible = np.asarray(d["base_infeasible"], bool)
        base = {m: (np.asarray(v, np.float64) if isinstance(v, list) else float(v)) for m, v in d["base"].items()}
        return cls(d["space"], d["device"], d["schedule"],
                   {m: [np.asarray(v, np.float64) for v in rows] for m, rows in d["table"].items()},
                   base, [float(s) for s in d["scale"]], d.get("calibration", {}), hardware, infeasible,
                   base_infeasible)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()), str(path))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CodesignError(f"cannot read cost table {path}: {exc}") from None


def network_cost(space, genotype: str, source, hw_choices=None) -> dict[str, float]:
    """The cost source's cost of a whole derived network (its kernels exported once per genotype
    and cached by the space), overheads included; on a hardware source, on the config of
    ``hw_choices`` (per-parameter indices)."""
    out = source.network_cost(space.network_kernels(genotype))
    axis = getattr(source, "axis", None)
    if axis is None:
        return out
    c = axis.index(list(hw_choices or []))
    ok = bool(out.get("feasible", np.ones(axis.n_configs, bool))[c])
    return {m: (float(v[c]) if ok or m == "area_mm2" else math.inf) for m, v in out.items() if m != "feasible"}


def whole_cost_of(space, table: CostTable, source):
    """choices -> ``network_cost`` of the whole design they pick (network decisions, then the
    hardware parameters of ``table``): what ``SearchContext.whole_cost`` asks for."""
    def whole_cost(choices) -> dict[str, float]:
        net, hw = table.split(list(choices))
        return network_cost(space, space.format(net), source, hw)

    return whole_cost


def _option_sums(rows, values: np.ndarray) -> list[np.ndarray]:
    """Per decision, the sum over each option's kernels of ``values`` ([kernels] or [kernels, configs])."""
    out, i = [], 0
    for row in rows:
        sums = []
        for ks in row:  # options without kernels (none, identity) cost nothing
            sums.append(values[i:i + len(ks)].sum(axis=0))
            i += len(ks)
        out.append(np.asarray(sums, np.float64))
    return out


def build_cost_table(space, source) -> CostTable:
    """Cost every option's kernels with the cost source (a ``codesign.costs.CostSource``; what each
    kernel adds to a network, per-kernel overheads included), then calibrate the table on the
    source's whole-network costs of the cheapest and the costliest network."""
    rows = space.option_kernels()
    flat = [k for row in rows for ks in row for k in ks]
    per_kernel = source.kernel_costs_in_network(flat)
    table: dict[str, list[np.ndarray]] = {}
    for metric in METRICS:
        values = per_kernel.get(metric)
        if values is None or (len(values) and not np.all(np.isfinite(values))):
            continue
        table[metric] = _option_sums(rows, np.asarray(values, np.float64))
    if "latency_ms" not in table:
        raise CodesignError(f"the cost source of {source.device} gave no finite latency for the {space.name} space")
    axis = getattr(source, "axis", None)
    infeasible = None
    if axis is not None:  # an option is infeasible on a config where any of its kernels is
        bad = (~source.feasible(flat)).astype(np.float64) if flat else np.zeros((0, axis.n_configs))
        infeasible = [t > 0 for t in _option_sums(rows, bad)]
    scale = list(getattr(space, "expectation_scale", lambda: [1.0] * len(rows))())
    zero = 0.0 if axis is None else np.zeros(axis.n_configs)
    ct = CostTable(space.name, source.device, source.schedule, table, {m: zero for m in table}, scale,
                   hardware=axis, infeasible=infeasible)
    mean = [t if axis is None else t.mean(axis=1) for t in table["latency_ms"]]
    low, top = space.cheapest(mean), space.costliest(mean)
    low_kernels = space.network_kernels(space.format(low))
    if axis is not None:  # the kernels of no option (stem, classifier...) must map too
        options = set(flat)
        fixed = [k for k in low_kernels if k not in options]
        ct.base_infeasible = ~source.feasible(fixed).all(axis=0) if fixed else np.zeros(axis.n_configs, bool)
    # Two-point calibration of ``base + scale * sum(options)`` against the cost source's cost of
    # whole exported graphs (where TVM fuses across option boundaries): exact at the cheapest and
    # at the costliest network (of the mean over configs, on hardware), so that infeasible budgets
    # and relative budgets are judged on whole-graph costs.
    whole_low = source.network_cost(low_kernels)
    whole_top = source.network_cost(space.network_kernels(space.format(top)))
    ct.calibration = {}
    for m in METRICS:
        if m not in table:
            continue
        opt_low = sum(t[k] for t, k in zip(table[m], low))  # option sums ([configs] on hardware)
        opt_top = sum(t[k] for t, k in zip(table[m], top))
        w_low = np.asarray(whole_low.get(m, opt_low), np.float64)
        w_top = np.asarray(whole_top.get(m, opt_top), np.float64)
        span = np.asarray(opt_top - opt_low, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(span > 1e-12, (w_top - w_low) / np.where(span > 1e-12, span, 1.0), 1.0)
        s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
        b = np.maximum(w_low - s * opt_low, 0.0)
        b = np.where(np.isfinite(b), b, 0.0)
        if axis is None:
            s, b = float(s), float(b)
        ct.table[m] = [row * s for row in table[m]]
        ct.base[m] = b
        ct.calibration[m] = {"scale": np.asarray(s).tolist(), "whole_cheapest": np.asarray(w_low).tolist(),
                             "whole_costliest": np.asarray(w_top).tolist()}
    return ct


def calibration_networks(space, table: CostTable, n: int, seed: int = 0) -> list[str]:
    """The ``n`` networks timed to calibrate a table (``TVMDeviceSource.calibrate``): the cheapest
    and the costliest by ``table``, then random networks of the space (one seed for every run, so
    that later runs find them stored)."""
    import random

    mean = table.network_table("latency_ms")
    out = [space.format(space.cheapest(mean)), space.format(space.costliest(mean))]
    rng = random.Random(seed)
    for _ in range(50 * n):
        if len(out) >= n:
            break
        g = space.sample(rng)
        if g not in out:
            out.append(g)
    return out[:n]


def anchor_table(table: CostTable, low: list[int], low_ms: float, top: list[int], top_ms: float,
                 metric: str = "latency_ms") -> CostTable:
    """Rescale a table without a hardware axis so that the networks ``low`` and ``top`` cost
    ``low_ms`` and ``top_ms`` (their measurements): ``base`` and one scale of the option costs,
    as the two-point calibration of ``build_cost_table``. Changes ``table`` in place and returns it."""
    if table.hardware is not None:
        raise CodesignError("anchor_table: a table with a hardware axis is anchored per config")
    opt_low = table.of(low, metric) - table.base[metric]
    opt_top = table.of(top, metric) - table.base[metric]
    if not (opt_top - opt_low > 1e-12 and top_ms > low_ms > 0):
        return table  # nothing to spread: keep the fitted table
    s = (top_ms - low_ms) / (opt_top - opt_low)
    b = max(low_ms - s * opt_low, 0.0)
    table.table[metric] = [row * s for row in table.table[metric]]
    table.base[metric] = float(b)
    table.calibration.setdefault(metric, {})["measured_anchors"] = {
        "scale": float(s), "cheapest_ms": float(low_ms), "costliest_ms": float(top_ms)}
    return table
