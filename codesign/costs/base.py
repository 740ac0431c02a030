"""The cost-source interface (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..kernelspec import KernelSpec
from ..registry import Registry

COST_SOURCES = Registry("cost source", attribute="kind")
register_cost_source = COST_SOURCES.register


class CostSource:
    """Answers "what do these kernels cost" and "what does this network cost" on one target.

    Attributes:
        kind: the registry name.
        device: the device (or accelerator) name the costs are of.
        schedule: the schedule policy of TVM devices ("" where none applies).
        metrics: the metrics this source predicts (``latency_ms``, ``energy_mj``, ``area_mm2``).
        energy_note: how energy is known ("measured:rapl", "model:<roofline>", ...) or None.
    """

    kind = "?"
    device = "?"
    schedule = ""
    metrics: tuple[str, ...] = ("latency_ms",)
    energy_note: str | None = None

    def prepare(self, specs: Iterable[KernelSpec] | Callable[[], Iterable[KernelSpec]],
                cache: str | Path | None = None, progress: bool = False) -> CostSource:
        """Make the source ready to cost ``specs`` (profile and fit, for a TVM device; a function
        returning the kernels is called only if they are needed); reuse what ``cache`` holds from
        an earlier call, and write it there. Returns self."""
        return self

    def kernel_costs(self, specs: list[KernelSpec]) -> dict[str, np.ndarray]:
        """Per-kernel cost of every metric but area: ``{metric: array of len(specs)}``."""
        raise NotImplementedError

    def network_cost(self, specs: list[KernelSpec]) -> dict[str, float]:
        """The whole network whose kernels are ``specs``, overheads included."""
        raise NotImplementedError

    def kernel_costs_in_network(self, specs: list[KernelSpec]) -> dict[str, np.ndarray]:
        """What each kernel adds to a network's cost (``network_cost`` is their sum plus a per-network
        constant): ``kernel_costs`` where the source fits nothing per kernel beyond them."""
        return self.kernel_costs(specs)

    def can_measure(self) -> tuple[bool, str]:
        """Whether :meth:`measure` checks networks against reality here, and if not, why."""
        return False, f"nothing measures networks on {self.device}"

    def measure(self, onnx_path: str | Path, progress: bool = False, hw_choices: tuple = ()) -> dict | None:
        """The measured (or, for modelled hardware, simulated) cost of an exported network
        (``hw_choices``: the hardware parameters' chosen indices where the source has any)."""
        return None

    def describe(self) -> dict:
        return {"kind": self.kind, "device": self.device, "schedule": self.schedule,
                "metrics": list(self.metrics), "energy": self.energy_note}
