"""Energy sources: RAPL (Intel/AMD package counters), NVML (GPU total-energy counter), or a model.

Every measurement carries its source: ``measured:rapl``, ``measured:nvml`` or ``model:<name>``.
Where nothing measures energy and no model is declared, energy is None — never invented.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from ..errors import CodesignError
from ..kernelspec import KernelSpec, kernel_bytes, kernel_flops

RAPL_ROOT = Path("/sys/class/powercap")


class EnergySource:
    """Energy per call of a kernel, in mJ. ``run(calls)`` runs the kernel ``calls`` times."""

    label = "none"

    def available(self) -> tuple[bool, str | None]:
        return False, "no energy source"

    def measure(self, spec: KernelSpec, run: Callable[[int], None], latency_ms: float) -> float | None:
        return None


class RaplSource(EnergySource):
    """Package energy from /sys/class/powercap/intel-rapl:N/energy_uj read around a timed loop.

    The loop runs long enough (``min_seconds``) for the counter (updated about every
    millisecond, in microjoule steps) to resolve one call; counter wrap-around is handled with
    max_energy_range_uj. The figure includes the package's idle and uncore power during the loop:
    it is what the device draws while running the kernel, not the kernel alone.
    """

    label = "measured:rapl"

    def __init__(self, root: Path | str = RAPL_ROOT, min_seconds: float = 0.2):
        self.root = Path(root)
        self.min_seconds = min_seconds

    def domains(self) -> list[Path]:
        # Top-level package domains only (intel-rapl:0, not the sub-zones intel-rapl:0:0).
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.glob("intel-rapl:*")
            if p.name.count(":") == 1 and (p / "energy_uj").exists()
        )

    def available(self) -> tuple[bool, str | None]:
        doms = self.domains()
        if not doms:
            return False, f"no RAPL domains under {self.root}"
        try:
            self._read(doms[0])
        except (OSError, ValueError) as exc:
            return False, f"cannot read {doms[0] / 'energy_uj'}: {exc}"
        return True, None

    @staticmethod
    def _read(domain: Path) -> int:
        return int((domain / "energy_uj").read_text().strip())

    def _total_uj(self) -> list[int]:
        return [self._read(d) for d in self.domains()]

    def measure(self, spec, run, latency_ms):
        doms = self.domains()
        ranges = [int((d / "max_energy_range_uj").read_text().strip()) if (d / "max_energy_range_uj").exists() else 2**32 for d in doms]
        calls = max(1, math.ceil(self.min_seconds * 1e3 / max(latency_ms, 1e-6)))
        before = self._total_uj()
        run(calls)
        after = self._total_uj()
        delta_uj = sum((a - b) % r for a, b, r in zip(after, before, ranges))
        return delta_uj / 1e3 / calls


class NvmlSource(EnergySource):
    """The GPU's total-energy counter (nvmlDeviceGetTotalEnergyConsumption, millijoules)."""

    label = "measured:nvml"

    def __init__(self, index: int = 0, min_seconds: float = 0.2):
        self.index = index
        self.min_seconds = min_seconds

    def _handle(self):
        import pynvml

        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(self.index)

    def available(self):
        try:
            nvml, handle = self._handle()
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except ImportError:
            return False, "pynvml is not installed"
        except Exception as exc:  # NVMLError and friends
            return False, f"NVML: {exc}"
        return True, None

    def measure(self, spec, run, latency_ms):
        nvml, handle = self._handle()
        calls = max(1, math.ceil(self.min_seconds * 1e3 / max(latency_ms, 1e-6)))
        before = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        run(calls)
        after = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return (after - before) / calls


class ModelSource(EnergySource):
    """First-order model of a roofline in codesign.hw_models (FLOPs, bytes, static power)."""

    def __init__(self, roofline: str):
        self.roofline_name = roofline
        self.label = f"model:{roofline}"

    def _roofline(self):
        from codesign.hw_models.roofline import get_roofline

        return get_roofline(self.roofline_name)

    def available(self):
        try:
            self._roofline()
        except (ImportError, CodesignError) as exc:
            return False, str(exc)
        return True, None

    def measure(self, spec, run, latency_ms):
        return self._roofline().energy_mj(kernel_flops(spec), kernel_bytes(spec), latency_ms)


def energy_source_for(device, rapl_root: Path | str = RAPL_ROOT) -> EnergySource:
    """The source a device declares; ``auto`` takes RAPL (CPU) or NVML (CUDA) where they read,
    else the device's roofline model, else none."""
    kind = device.energy
    is_gpu = device.target.get("kind") == "cuda"
    if kind == "none":
        return EnergySource()
    if kind in ("rapl", "nvml") and device.rpc is not None:
        raise CodesignError(
            f"device {device.name}: {kind} counters are read on this host, not through RPC; "
            "declare energy: model:<roofline> for a remote device"
        )
    if kind == "rapl":
        src = RaplSource(rapl_root)
    elif kind == "nvml":
        src = NvmlSource()
    elif kind.startswith("model:"):
        src = ModelSource(kind.split(":", 1)[1])
    else:  # auto
        if device.rpc is None:
            cand = NvmlSource() if is_gpu else RaplSource(rapl_root)
            if cand.available()[0]:
                return cand
        if device.roofline:
            return ModelSource(device.roofline)
        return EnergySource()
    ok, reason = src.available()
    if not ok:
        raise CodesignError(f"device {device.name}: energy source {kind} unavailable: {reason}")
    return src
