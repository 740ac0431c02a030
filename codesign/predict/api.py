"""Whole-network prediction: ONNX files, ONNX models and torch nn.Modules, one at a time or by the thousand.

    from codesign.predict import load_cost_model, predict_network, predict_networks

    model = load_cost_model("cpu-local.json", device="cpu-local")
    predict_network(model, my_module, input_shape=(1, 3, 32, 32))["latency_ms"]
    [r["latency_ms"] for r in predict_networks(model, ["a.onnx", "b.onnx"])]

Each result is ``CostModel.predict_network``'s dict (latency_ms, energy_mj, kernels,
measured_kernels, per_kernel_latency_ms) plus ``name``, ``kernel_keys`` and ``skipped_ops`` (ops
without a kernel builder, only ever non-empty with ``allow_partial``). The same as
``codesign predict``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import CodesignError
from ..files import read_csv
from ..graph import onnx_kernels
from .models import CostModel, load_cost_model

TABLE_COLUMNS = ("onnx_path", "model")


def _cost_model(model) -> CostModel:
    if isinstance(model, CostModel):
        model._check_fitted()
        return model
    if isinstance(model, (str, Path)):
        return load_cost_model(model)
    raise CodesignError(f"expected a CostModel or the path of a saved one, got {type(model).__name__}")


def fit_from_profiles(device: str, db: str | Path | None = None, schedule: str | None = None,
                      kind: str | None = None, seed: int = 0) -> tuple[CostModel, list]:
    """A ``kind`` cost model (default gbdt) fitted on every measured kernel of ``device`` under
    ``schedule`` (default: the device's default policy, tuned on a CPU, where the database holds
    profiles of it, else untuned ones) in the profile database ``db`` (default: the user cache database).

    Returns:
        (the fitted model, the measurement records it was fitted on).

    Raises:
        CodesignError: no database, or no measured kernels of that device and schedule in it.
    """
    from ..profile.db import ProfileDB, default_db_path
    from .models import create_cost_model

    path = Path(db) if db else default_db_path()
    if not path.exists():
        raise CodesignError(f"no profile database at {path}; run `codesign profile --device {device}` or pass --db")
    model = create_cost_model(kind or "gbdt", seed=seed)
    with ProfileDB(path, readonly=True) as pdb:
        if schedule is None:
            preferred = _default_schedule(device)
            held = {m.schedule for m in pdb.query(device=device, ok_only=True)}
            schedule = preferred if preferred in held or "untuned" not in held else "untuned"
        records = pdb.query(device=device, schedule=schedule, ok_only=True)
    if not records:
        raise CodesignError(
            f"{path} holds no measured kernels of device {device} under schedule {schedule}; "
            f"run `codesign profile --device {device} --schedule {schedule}` first"
        )
    return model.fit(records), records


def _default_schedule(device: str) -> str:
    from ..profile.devices import get_device
    from ..profile.schedules import default_schedule

    try:
        return default_schedule(get_device(device).target)
    except CodesignError:  # a device known only from its profiles
        return "untuned"


def network_kernels(network, input_shape=None, allow_partial: bool = False, skipped: list | None = None):
    """The kernels of an ONNX path, onnx.ModelProto or torch nn.Module (which needs ``input_shape``)."""
    import onnx

    if isinstance(network, (str, Path, onnx.ModelProto)):
        return onnx_kernels(network, allow_partial=allow_partial, skipped=skipped)
    try:
        import torch.nn as nn
    except ImportError:  # pragma: no cover - torch is a dependency
        nn = None
    if nn is not None and isinstance(network, nn.Module):
        if input_shape is None:
            raise CodesignError(f"predicting a {type(network).__name__} needs its input_shape, e.g. (1, 3, 32, 32)")
        shape = tuple(input_shape)
        if len(shape) == 0 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise CodesignError(f"input_shape must be positive ints, got {input_shape!r}")
        from ..graph import export_onnx

        return onnx_kernels(export_onnx(network, shape), allow_partial=allow_partial, skipped=skipped)
    raise CodesignError(
        f"cannot predict a {type(network).__name__}: give an ONNX path, an onnx.ModelProto or a torch nn.Module"
    )


def predict_network(model, network, input_shape=None, allow_partial: bool = False, use_measured: bool = True,
                    name: str | None = None) -> dict[str, Any]:
    """Predicted latency_ms (and energy_mj) of one network; see the module docstring.

    Args:
        model: a fitted CostModel or the path of a saved one.
        network: an ONNX file path, an onnx.ModelProto or a torch nn.Module.
        input_shape: the module's input shape (nn.Module only).
        allow_partial: skip ONNX ops without a kernel builder (listed in ``skipped_ops``) instead
            of raising.
        use_measured: return profiled kernels' measurements instead of the regression.

    Raises:
        CodesignError: an unreadable network, an op without a kernel builder, an unfitted model.
    """
    model = _cost_model(model)
    skipped: list[str] = []
    specs = network_kernels(network, input_shape, allow_partial, skipped)
    res = model.predict_network(specs, use_measured=use_measured)
    if name is None:
        name = str(network) if isinstance(network, (str, Path)) else type(network).__name__
    res.update(name=name, skipped_ops=sorted(set(skipped)), kernel_keys=[s.key() for s in specs])
    return res


def predict_networks(model, networks: Iterable, input_shape=None, allow_partial: bool = False,
                     use_measured: bool = True, progress: bool = False) -> list[dict[str, Any]]:
    """``predict_network`` of each network (one model load for all; progress on stderr if ``progress``)."""
    model = _cost_model(model)
    networks = list(networks)
    from .. import progress as _progress

    out = []
    with _progress.bar(len(networks), "predict", unit="net", enabled=progress and len(networks) > 1,
                       every_s=10.0) as bar:
        for net in networks:
            out.append(predict_network(model, net, input_shape, allow_partial, use_measured))
            bar.update(1)
    return out


def read_model_table(path: str | Path) -> list[Path]:
    """The ONNX files listed in a CSV table's ``onnx_path`` (or ``model``) column.

    Relative paths are relative to the table's folder (as in ``codesign calibrate`` tables).

    Raises:
        CodesignError: a missing file, no such column, an empty table or an empty cell.
    """
    path = Path(path)
    cols, rows = read_csv(path, "table of networks")
    col = next((c for c in TABLE_COLUMNS if c in cols), None)
    if col is None:
        raise CodesignError(f"{path}: a table of networks needs an onnx_path (or model) column; it has "
                            f"{', '.join(cols) or 'none'}")
    out = []
    for line, row in rows:
        cell = (row.get(col) or "").strip()
        if not cell:
            raise CodesignError(f"{path}:{line}: empty {col}")
        p = Path(cell)
        out.append(p if p.is_absolute() else path.parent / p)
    if not out:
        raise CodesignError(f"{path}: the table lists no networks")
    return out
