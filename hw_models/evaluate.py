"""Whole networks on an accelerator: totals with a per-layer breakdown, and batch grids.

    from codesign.hw_models import evaluate_network
    res = evaluate_network("model.onnx", "eyeriss-like")
    res.latency_ms, res.energy_mj, res.energy_by_level_mj, res.layers[0].pe_utilization

A network is a list of ``KernelSpec`` (layers run one after the other), an ONNX file or
``onnx.ModelProto``, or a torch ``nn.Module`` with ``input_shape``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from codesign.errors import CodesignError
from codesign.kernelspec import KernelSpec

from . import mapper
from .accelerator import AcceleratorConfig, get_accelerator

LEVELS = ("mac", "rf", "noc", "glb", "dram")


@dataclass
class LayerResult:
    """One layer on one config. Infeasible layers have latency and energy +inf and a reason."""

    kernel_key: str
    op: str
    feasible: bool
    reason: str
    cycles: float
    latency_ms: float
    energy_mj: float
    energy_by_level_mj: dict
    pe_utilization: float
    macs: float
    accesses: dict
    mapping: dict

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NetworkResult:
    """A network on one config: totals (+inf where a layer cannot map) and every layer."""

    accelerator: dict
    latency_ms: float
    energy_mj: float
    energy_by_level_mj: dict
    area_mm2: float
    feasible: bool
    layers: list = field(default_factory=list)

    @property
    def infeasible(self) -> list:
        return [layer for layer in self.layers if not layer.feasible]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [layer.to_dict() for layer in self.layers]
        return d


def network_kernels(network, input_shape=None) -> list[KernelSpec]:
    """The kernels of a network given as KernelSpecs, an ONNX file/ModelProto or an nn.Module."""
    if isinstance(network, KernelSpec):
        return [network]
    if isinstance(network, (list, tuple)):
        if not network:
            raise CodesignError("the network has no layers")
        bad = [type(x).__name__ for x in network if not isinstance(x, KernelSpec)]
        if bad:
            raise CodesignError(f"a layer list must hold codesign KernelSpecs, found {bad[0]}")
        return list(network)
    if isinstance(network, (str, Path)):
        path = Path(network)
        if path.suffix != ".onnx":
            raise CodesignError(f"{path}: give an .onnx file (or a list of KernelSpecs / an nn.Module)")
        if not path.is_file():
            raise CodesignError(f"no ONNX file at {path}")
        from codesign.graph import onnx_kernels

        return onnx_kernels(str(path))
    try:
        import onnx

        if isinstance(network, onnx.ModelProto):
            from codesign.graph import onnx_kernels

            return onnx_kernels(network)
    except ImportError:  # pragma: no cover - onnx is a dependency
        pass
    try:
        import torch

        if isinstance(network, torch.nn.Module):
            if input_shape is None:
                raise CodesignError("an nn.Module needs input_shape (N, C, H, W) to be split into kernels")
            from codesign.graph import module_kernels

            return module_kernels(network, tuple(int(s) for s in input_shape))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    raise CodesignError(f"cannot take the kernels of a {type(network).__name__}: give KernelSpecs, "
                        "an .onnx path, an onnx.ModelProto or a torch nn.Module with input_shape")


def _layer_result(spec: KernelSpec, row: np.ndarray) -> LayerResult:
    r = mapper.R
    ok = bool(row[r["feasible"]])
    reason = mapper.REASONS[int(row[r["reason"]])]
    by_level = {lv: float(row[r[f"{lv}_energy_mj"]]) for lv in LEVELS} if ok else {lv: float("inf") for lv in LEVELS}
    mapping = {}
    if ok:
        mapping = {
            "glb_loop_order": mapper.ORDERS[int(row[r["map_order"]])],
            "glb_tile": {"k": int(row[r["map_k_tile"]]), "c": int(row[r["map_c_tile"]]),
                         "n": int(row[r["map_n_tile"]]), "p": int(row[r["map_p_tile"]])},
            "spatial_choice": int(row[r["map_spatial"]]),
            "rf_tile": [int(row[r["map_rf_a"]]), int(row[r["map_rf_b"]])],
            "compute_cycles": float(row[r["compute_cycles"]]),
            "fill_cycles": float(row[r["fill_cycles"]]),
            "dram_cycles": float(row[r["dram_cycles"]]),
        }
    return LayerResult(
        kernel_key=spec.key(), op=spec.op, feasible=ok, reason=reason,
        cycles=float(row[r["cycles"]]), latency_ms=float(row[r["latency_ms"]]),
        energy_mj=float(row[r["energy_mj"]]), energy_by_level_mj=by_level,
        pe_utilization=float(row[r["pe_utilization"]]), macs=float(row[r["macs"]]),
        accesses={"dram_words": float(row[r["dram_words"]]), "glb": float(row[r["glb_accesses"]]),
                  "noc_hops": float(row[r["noc_hops"]]), "rf": float(row[r["rf_accesses"]])},
        mapping=mapping,
    )


def evaluate_layers(specs, accel, jit: bool = True) -> list[LayerResult]:
    """Every layer of ``specs`` on one accelerator (a name, YAML path or AcceleratorConfig)."""
    specs = network_kernels(specs)
    cfg = get_accelerator(accel)
    unique = list(dict.fromkeys(specs))
    rows = mapper.evaluate_rows(mapper.encode_layers(unique), mapper.encode_configs([cfg]), jit=jit)
    by_spec = {s: rows[i] for i, s in enumerate(unique)}
    return [_layer_result(s, by_spec[s]) for s in specs]


def evaluate_network(network, accel, input_shape=None, jit: bool = True) -> NetworkResult:
    """Totals and per-layer breakdown of a network on one accelerator config.

    Args:
        network: list of KernelSpec, .onnx path, onnx.ModelProto, or nn.Module (with input_shape).
        accel: shipped accelerator name, YAML path or AcceleratorConfig.
        input_shape: (N, C, H, W) for an nn.Module.
        jit: numba (default) or the plain-Python reference.

    Returns:
        NetworkResult; latency and energy are +inf (and ``feasible`` False) if any layer cannot map.
    """
    cfg = get_accelerator(accel)
    layers = evaluate_layers(network_kernels(network, input_shape), cfg, jit=jit)
    by_level = {lv: float(sum(layer.energy_by_level_mj[lv] for layer in layers)) for lv in LEVELS}
    return NetworkResult(
        accelerator=cfg.to_dict(),
        latency_ms=float(sum(layer.latency_ms for layer in layers)),
        energy_mj=float(sum(layer.energy_mj for layer in layers)),
        energy_by_level_mj=by_level,
        area_mm2=cfg.area_mm2(),
        feasible=all(layer.feasible for layer in layers),
        layers=layers,
    )


def evaluate_grid(specs, configs, jit: bool = True, parallel: bool = False) -> np.ndarray:
    """Every layer on every config: float64 [layers, configs, len(mapper.RESULT_NAMES)].

    Column names are ``mapper.RESULT_NAMES`` (index with ``mapper.R[name]``)."""
    specs = network_kernels(specs)
    cfgs = [get_accelerator(c) if not isinstance(c, AcceleratorConfig) else c for c in configs]
    if not cfgs:
        raise CodesignError("evaluate_grid needs at least one config")
    rows = mapper.evaluate_rows(mapper.encode_layers(specs), mapper.encode_configs(cfgs), jit=jit, parallel=parallel)
    return rows.reshape(len(specs), len(cfgs), mapper.RESULT_FIELDS)
