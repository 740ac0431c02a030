"""Device rooflines: peak FLOP/s, memory bandwidth and per-kernel overhead, plus a first-order
energy model (energy per FLOP, per byte of memory traffic, static power).

A roofline is a cheap prior on a kernel's latency (a lower bound: no measured kernel of the same
device may beat it) and, where no counter measures energy, the model that
``codesign profile`` labels ``model:<name>``. Declared in YAML (hw_models/configs/roofline-*.yaml)::

    format_version: 1
    kind: roofline
    name: cpu-local
    peak_gflops: 128.0
    mem_bandwidth_gbs: 25.0
    kernel_overhead_ms: 0.002
    energy_pj_per_flop: 2.3
    energy_pj_per_byte: 100.0
    static_power_w: 5.0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from codesign.errors import CodesignError

from .files import check_header, read_yaml, shipped

FORMAT_VERSION = 1
_FIELDS = ("peak_gflops", "mem_bandwidth_gbs", "kernel_overhead_ms", "energy_pj_per_flop",
           "energy_pj_per_byte", "static_power_w")


@dataclass(frozen=True)
class Roofline:
    name: str
    peak_gflops: float
    mem_bandwidth_gbs: float
    kernel_overhead_ms: float
    energy_pj_per_flop: float
    energy_pj_per_byte: float
    static_power_w: float

    def latency_ms(self, flops: float, nbytes: float) -> float:
        """Lower bound on a kernel's latency: overhead + max(compute time, memory time)."""
        compute_ms = flops / (self.peak_gflops * 1e9) * 1e3
        memory_ms = nbytes / (self.mem_bandwidth_gbs * 1e9) * 1e3
        return self.kernel_overhead_ms + max(compute_ms, memory_ms)

    def energy_mj(self, flops: float, nbytes: float, latency_ms: float) -> float:
        """Dynamic energy of the FLOPs and bytes plus static power over the latency, in mJ."""
        dynamic_mj = (flops * self.energy_pj_per_flop + nbytes * self.energy_pj_per_byte) * 1e-9
        return dynamic_mj + self.static_power_w * latency_ms  # W x ms = mJ


def _load(path: Path) -> Roofline:
    data = check_header(read_yaml(path, "roofline"), "roofline", FORMAT_VERSION, str(path))
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise CodesignError(f"{path} lacks {', '.join(missing)}")
    values = {}
    for f in _FIELDS:
        v = data[f]
        if not isinstance(v, (int, float)) or v < 0 or (f in ("peak_gflops", "mem_bandwidth_gbs") and v == 0):
            raise CodesignError(f"{path}: {f} must be a positive number, got {v!r}")
        values[f] = float(v)
    return Roofline(name=str(data["name"]), **values)


def list_rooflines() -> dict[str, Roofline]:
    """Every roofline codesign ships, by name."""
    return shipped("roofline", _load)


def get_roofline(name: str) -> Roofline:
    """A roofline by name, or from a YAML file path."""
    if name.endswith((".yaml", ".yml")):
        return _load(Path(name))
    known = list_rooflines()
    if name not in known:
        raise CodesignError(f"unknown roofline {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def roofline_bound_ms(roofline: Roofline, spec) -> float:
    """The roofline's lower bound on one kernel's latency (FLOPs and minimum bytes of the spec)."""
    from codesign.kernelspec import KernelSpec, kernel_bytes, kernel_flops

    if not isinstance(spec, KernelSpec):
        raise CodesignError(f"a kernel is a codesign KernelSpec, got {type(spec).__name__}")
    return roofline.latency_ms(kernel_flops(spec), kernel_bytes(spec))


def check_measurements(measurements, roofline: Roofline) -> dict:
    """Compare measured kernels with the roofline bound: none may run faster than it.

    Args:
        measurements: ``codesign.profile.db.Measurement`` objects (failed ones are skipped).
        roofline: the roofline of the device the kernels were measured on.

    Returns:
        {"kernels", "violations" (list of {kernel_key, schedule, latency_ms, bound_ms}),
         "min_ratio", "median_ratio", "max_ratio"} where ratio = measured / bound (>= 1 expected).
    """
    if not isinstance(roofline, Roofline):
        raise CodesignError(f"roofline must be a Roofline, got {type(roofline).__name__}")
    ratios, violations = [], []
    for m in measurements:
        if not m.ok:
            continue
        bound = roofline_bound_ms(roofline, m.spec)
        ratios.append(m.latency_ms / bound)
        if m.latency_ms < bound:
            violations.append({"kernel_key": m.kernel_key, "schedule": m.schedule,
                               "latency_ms": m.latency_ms, "bound_ms": bound})
    if not ratios:
        return {"kernels": 0, "violations": [], "min_ratio": None, "median_ratio": None, "max_ratio": None}
    ratios.sort()
    return {"kernels": len(ratios), "violations": violations, "min_ratio": ratios[0],
            "median_ratio": ratios[len(ratios) // 2], "max_ratio": ratios[-1]}
