"""Few-shot calibration: a cost model of a profiled device carried to a new device.

Profiling a new device kernel by kernel is slow; timing a handful of whole networks (or kernels)
on it is not. ``calibrate`` takes a fitted model of a known device (``--from``) and a table of N
measurements on the new one, and fits, per op family, how much slower or faster the new device
is, plus a per-kernel overhead:

    new_latency(network) = sum over kernels k of w[family(k)] * base_latency(k) + c * kernels

w >= 0 and c >= 0 minimise the squared *relative* error over the table, with a ridge pull of every
w towards the table's median ratio (so a family the table barely exercises keeps the common
scale, and N = 5 rows already give a usable model). The result is a ``calibrated`` cost model
for the new device name, saved like any other.

Table format (CSV with a header): a ``latency_ms`` column and, per row, one of ``model`` or
``onnx_path`` (an ONNX file; relative paths are relative to the table), ``genotype`` (a genotype of
the search space named in a ``space`` column, or by ``space=`` / ``--space``; built with the
space's default settings) or ``kernel_key`` (a KernelSpec key). Other columns are ignored, so
``codesign measure --append`` output can be used directly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CodesignError
from ..files import read_csv
from ..kernelspec import KernelSpec
from ..profile.devices import check_device_name
from .features import FAMILIES, family
from .models import (
    DEFAULT_PRIOR,
    CostModel,
    family_sums,
    fit_weights,
    model_from_dict,
    model_to_dict,
    register_cost_model,
)

_SPACES: dict[str, Any] = {}  # search spaces of genotype rows, created once per process


@register_cost_model("calibrated", fittable=False)
class CalibratedModel(CostModel):
    """A base device's model scaled per op family to a new device (made by ``calibrate``)."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.base: CostModel | None = None
        self.base_device = ""

    def fit(self, records, device=None, schedule=None):
        raise CodesignError("a calibrated model is made by `codesign calibrate` (calibrate()), not fitted")

    def _check_head(self, target, head):
        w = np.asarray(head.get("weights"))
        if w.shape != (len(FAMILIES),) or (w < 0).any():
            return f"weights must be {len(FAMILIES)} numbers >= 0, one per op family"
        return None

    def _predict_head(self, head, specs, x):
        base = self.base.predict(specs, use_measured=True)
        w = np.asarray(head["weights"])
        return np.log(np.maximum(base * w[[FAMILIES.index(family(s)) for s in specs]], 1e-12))

    def _meta(self) -> dict[str, Any]:
        meta = super()._meta()
        meta["base"] = model_to_dict(self.base)
        meta["base_device"] = self.base_device
        return meta

    def _restore(self, meta, arrays=None) -> None:
        super()._restore(meta)
        self.base = model_from_dict(meta["base"], where="the base model inside a calibrated model")
        self.base_device = meta["base_device"]


def check_prior(prior: float) -> float:
    """``prior`` if it is a finite number >= 0 (the ridge pull of ``fit_weights``)."""
    if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not math.isfinite(prior) or prior < 0:
        raise CodesignError(f"--prior must be a finite number >= 0, got {prior!r}")
    return float(prior)


def check_new_device(new_device: str, base_device: str) -> str:
    """``new_device`` if it can name the calibrated model's device: a plain name (it also names the
    model file), other than the base model's own device."""
    check_device_name(new_device, "--as")
    if new_device == base_device:
        raise CodesignError(f"--as {new_device} is the base model's own device; calibration carries a model to "
                            "another device (`codesign fit --networks` fits a device's network overhead)")
    return new_device


def read_table(path: str | Path, space: str | None = None) -> list[dict[str, Any]]:
    """Rows of a calibration table: dicts with latency_ms and model (a Path), kernel_key, or
    genotype and space.

    Args:
        path: the CSV file (see the module docstring).
        space: the search space of ``genotype`` rows without a ``space`` column.

    Raises:
        CodesignError: missing file or columns, bad numbers, rows naming no network or kernel,
            genotype rows without a space.
    """
    path = Path(path)
    columns, lines = read_csv(path, "table")
    cols = set(columns)
    if "latency_ms" not in cols or not cols & {"model", "onnx_path", "kernel_key", "genotype"}:
        raise CodesignError(
            f"{path}: the table needs a latency_ms column and a model, onnx_path, genotype or kernel_key "
            f"column; it has {', '.join(sorted(cols)) or 'none'}"
        )
    rows = []
    for line, r in lines:
        try:
            lat = float(r["latency_ms"])
        except (TypeError, ValueError) as exc:
            raise CodesignError(f"{path}:{line}: latency_ms {r.get('latency_ms')!r} is not a number") from exc
        if not (math.isfinite(lat) and lat > 0):
            raise CodesignError(f"{path}:{line}: latency_ms must be a finite positive number, got {lat}")
        row: dict[str, Any] = {"latency_ms": lat}
        onnx_path = r.get("model") or r.get("onnx_path")
        if onnx_path:
            model = Path(onnx_path)
            row["model"] = model if model.is_absolute() else path.parent / model
        elif r.get("genotype"):
            row["genotype"] = r["genotype"]
            row["space"] = r.get("space") or space
            if not row["space"]:
                raise CodesignError(f"{path}:{line}: a genotype row needs its search space (a space column "
                                    "or --space NAME)")
        elif r.get("kernel_key"):
            row["kernel_key"] = r["kernel_key"]
        else:
            raise CodesignError(f"{path}:{line}: the row names no model, onnx_path, genotype or kernel_key")
        rows.append(row)
    if not rows:
        raise CodesignError(f"{path}: the table has no rows")
    return rows


def row_kernels(row: dict[str, Any]) -> list[KernelSpec]:
    """The kernels of one table row (its network's, or the one kernel)."""
    if "kernel_key" in row:
        return [KernelSpec.from_key(row["kernel_key"])]
    if "genotype" in row:
        from ..graph import module_kernels
        from ..spaces import create_space

        space = _SPACES.get(row["space"])
        if space is None:
            space = _SPACES[row["space"]] = create_space(row["space"])
        return module_kernels(space.build(row["genotype"]), tuple(space.input_shape))
    from ..graph import onnx_kernels

    return onnx_kernels(row["model"])


def calibrate(base: CostModel, rows: list[dict[str, Any]], new_device: str,
              prior: float = DEFAULT_PRIOR) -> CalibratedModel:
    """A cost model for ``new_device`` from ``base`` and measured rows (see ``read_table``).

    Raises:
        CodesignError: an unfitted base, a prior that is not a finite number >= 0, a new device
            name that is a path or the base's own device, no rows, rows whose kernels cannot be
            extracted.
    """
    check_prior(prior)
    base._check_fitted()
    check_new_device(new_device, base.device)
    if not rows:
        raise CodesignError("calibration needs at least one measured row")
    kernels = [row_kernels(r) for r in rows]
    measured = np.array([r["latency_ms"] for r in rows])
    weights, per_kernel = fit_weights(family_sums(base, kernels), measured, prior)
    model = CalibratedModel(seed=base.seed)
    model.base = base
    model.base_device = base.device
    model.device = new_device
    model.schedule = base.schedule
    model.target = {}
    model.tvm_version = base.tvm_version
    model.n_train = len(rows)
    model.per_kernel_overhead_ms = per_kernel
    model.heads = {"latency_ms": {"weights": weights, "prior": prior}}
    # Kernel rows are measurements of the new device itself: keep them for use_measured.
    model.table = {r["kernel_key"]: {"latency_ms": r["latency_ms"]} for r in rows if "kernel_key" in r}
    import time

    model.created_at = time.time()
    return model
