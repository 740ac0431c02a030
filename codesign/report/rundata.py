"""A run directory read for a report: every phase file it has, checked, and the views the figures
take (epochs, candidates, networks, per-kernel costs).

Only whole, codesign-made files are read: a damaged JSON file or a config of another format is
refused with one line naming the file. A log's last line may be cut by a kill mid-write; that
line alone is left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CodesignError

CONFIG_FORMAT = "codesign-search-config"
RESULTS_FORMAT = "codesign-search-results"
# The phase files of a run directory (see codesign.pipeline), read when present.
PHASE_FILES = ("results.json", "search.json", "derived.json", "train.json", "export.json", "measure.json",
               "compare.json", "costs.json", "compare-measure.json", "sequential-measure.json",
               "sequential-derived-base.json")
LOGS = ("log.jsonl", "compare-log.jsonl", "sequential-log.jsonl")


@dataclass
class RunData:
    """What a run directory holds."""

    path: Path
    config: dict
    codesign_version: str
    command: str | None
    files: dict[str, dict] = field(default_factory=dict)
    logs: dict[str, list[dict]] = field(default_factory=dict)
    label: str | None = None  # how pages name the run (default: its folder's name)

    @property
    def name(self) -> str:
        return self.label or self.path.name

    @property
    def results(self) -> dict | None:
        return self.files.get("results.json")

    def phases_done(self) -> list[str]:
        return [f[:-5] for f in ("search.json", "derived.json", "train.json", "export.json", "measure.json",
                                 "compare.json", "results.json") if f in self.files]

    def budgets(self) -> dict[str, float]:
        """metric -> resolved limit (known once the run has results)."""
        r = self.results or {}
        return {b["metric"]: float(b["limit"]) for b in r.get("budgets", [])}

    def budget_specs(self) -> list[dict]:
        return list((self.results or {}).get("budgets", []))

    # --- search ---------------------------------------------------------------------------------
    def epochs(self, stream: str = "log.jsonl") -> list[dict]:
        """The per-epoch records of a gradient search (empty for sample-based strategies)."""
        return [r for r in self.logs.get(stream, []) if "epoch" in r]

    def candidates(self, stream: str = "log.jsonl") -> list[dict]:
        """The per-candidate records of a random or evolution search."""
        return [r for r in self.logs.get(stream, []) if "candidate" in r]

    def hardware_axis(self) -> tuple[list[str], list[list]] | None:
        """(parameter names, values of each) of a co-search's hardware space, else None."""
        hw = (self.files.get("costs.json") or {}).get("hardware")
        if not hw or "names" not in hw:
            return None
        return list(hw["names"]), [list(v) for v in hw["values"]]

    def network(self) -> dict | None:
        """The found network: genotype, accuracy, predicted and measured costs (None before derive)."""
        derived = self.files.get("derived.json")
        if derived is None:
            return None
        train = self.files.get("train.json") or {}
        return {"genotype": derived["genotype"], "predicted": derived.get("predicted") or {},
                "measured": self.files.get("measure.json"), "test_accuracy": train.get("test_accuracy"),
                "hardware": derived.get("hardware")}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CodesignError(f"{path} is damaged ({type(exc).__name__}: {exc}); the report reads only whole files") \
            from None
    if not isinstance(data, dict):
        raise CodesignError(f"{path} is not a codesign run file (a JSON object expected)")
    return data


def _read_log(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # cut by a kill while it was written
                break
            raise CodesignError(f"{path}:{i + 1} is damaged (not a JSON line); the report reads only whole files") \
                from None
        if not isinstance(rec, dict):
            raise CodesignError(f"{path}:{i + 1} is not a codesign log record")
        out.append(rec)
    return out


def check_run_dir(path: str | Path) -> Path:
    """The run directory ``path`` if it holds a codesign run's config.json; else a CodesignError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CodesignError(f"{path} is a file, not a codesign run directory")
    if not path.is_dir():
        raise CodesignError(f"{path}: no such run directory")
    if not (path / "config.json").is_file():
        raise CodesignError(f"{path} is not a codesign run directory (no config.json)")
    return path


def load_run(path: str | Path, settings: dict | None = None) -> RunData:
    """Read and check a run directory (every present phase file, the logs).

    Args:
        settings: the run's checked search settings, every one present (``codesign report`` reads
            config.json through the pipeline's checks and passes them); default: config.json's as
            written.

    Raises:
        CodesignError: not a run directory, a damaged or foreign file.
    """
    path = check_run_dir(path)
    cfg = _read_json(path / "config.json")
    if cfg.get("format") != CONFIG_FORMAT or not isinstance(cfg.get("config"), dict):
        raise CodesignError(f"{path / 'config.json'} is not a codesign search config (format "
                            f"{cfg.get('format')!r})")
    run = RunData(path, settings if settings is not None else cfg["config"], str(cfg.get("codesign_version", "?")), cfg.get("command"))
    for name in PHASE_FILES:
        if (path / name).is_file():
            run.files[name] = _read_json(path / name)
    res = run.files.get("results.json")
    if res is not None and res.get("format") != RESULTS_FORMAT:
        raise CodesignError(f"{path / 'results.json'} is not a codesign results file (format {res.get('format')!r})")
    for name in LOGS:
        if (path / name).is_file():
            run.logs[name] = _read_log(path / name)
    return run


# --- views -------------------------------------------------------------------------------------------


def open_space(run: RunData):
    """The run's search space (decision names, graphs of genotypes), or None if it cannot be made here."""
    from ..spaces import create_space

    cfg = run.config
    ds = (run.results or {}).get("dataset") or {}
    kwargs = dict(cfg.get("space_args") or {})
    if ds.get("input_shape"):
        kwargs.update(input_shape=tuple(ds["input_shape"]), num_classes=int(ds["classes"]))
    try:
        return create_space(cfg["space"], **kwargs)
    except CodesignError:
        return None


def arch_probs(epochs: list[dict]) -> list[np.ndarray]:
    """Per decision an array [epochs, options] of the logged architecture probabilities."""
    if not epochs or not epochs[0].get("arch_probs"):
        return []
    n = len(epochs[0]["arch_probs"])
    return [np.array([r["arch_probs"][d] for r in epochs], float) for d in range(n)]


def decision_labels(run: RunData, space, n: int) -> tuple[list[str], list[list[str]]]:
    """Names and option names of the first ``n`` decisions: the space's, then the hardware's."""
    names, options = [], []
    if space is not None:
        for d in space.decisions():
            names.append(d.name)
            options.append(list(d.options))
    hw = run.hardware_axis()
    if hw is not None:
        for name, values in zip(*hw):
            names.append(f"hardware {name}")
            options.append([str(v) for v in values])
    return names[:n], options[:n]


def _final_point(net: dict | None) -> dict | None:
    if not net or net.get("test_accuracy") is None:
        return None
    return {**(net.get("predicted") or {}), "accuracy": net["test_accuracy"]}


def pareto_series(run: RunData) -> dict[str, dict]:
    """Strategy -> points (candidates, or each epoch's derived network with the supernet's
    validation accuracy) and the final network (test accuracy), all at predicted costs."""
    cfg = run.config
    out: dict[str, dict] = {}

    def search_points(stream: str) -> list[dict]:
        pts = [{**(c.get("cost") or {}), "accuracy": c.get("val_accuracy")} for c in run.candidates(stream)]
        pts += [{**(e.get("derived_cost") or {}), "accuracy": e.get("val_accuracy")} for e in run.epochs(stream)
                if e.get("val_accuracy") is not None]
        return pts

    main = {"points": search_points("log.jsonl"), "final": []}
    p = _final_point(run.network())
    if p:
        main["final"].append(p)
    out[cfg["strategy"] + (" (co-search)" if cfg.get("hw_space") else "")] = main
    cmp = run.files.get("compare.json")
    if cmp and cmp.get("strategy") == "random":
        out["random (same compute)"] = {"points": search_points("compare-log.jsonl"),
                                        "final": [p for p in [_final_point(cmp)] if p]}
    elif cmp and cmp.get("strategy") == "sequential":
        out["sequential"] = {"points": search_points("sequential-log.jsonl"),
                             "final": [p for p in [_final_point(cmp)] if p and cmp.get("feasible")]}
    return out


def kernel_costs(run: RunData) -> dict | None:
    """Per kernel of the exported network: predicted latency inside the network (the cost model's
    in-network scale applied) and energy, from the run's cost model.

    Returns ``{"keys", "latency_ms", "energy_mj" (or None), "measured_kernels", "overhead_ms",
    "model_kind", "energy_source"}``, or None where the run has no exported network or cost model (accelerator
    targets have their layers in measure.json instead).
    """
    onnx_path = run.path / "model.onnx"
    cfg = run.config
    model_path = Path(cfg["cost_model"]) if cfg.get("cost_model") else run.path / "cost_model.json"
    if not onnx_path.is_file() or not model_path.is_file():
        return None
    from ..graph import onnx_kernels
    from ..predict import load_cost_model

    model = load_cost_model(model_path)
    specs = onnx_kernels(onnx_path)
    # Each kernel as it runs inside the network (its in-network scale applied); the overhead is
    # then the fitted constant and per-kernel terms, never negative.
    lat = np.asarray(model.predict(specs, True), float) * model.in_network_scales(specs)
    energy = np.asarray(model.predict_energy(specs, True), float) if "energy_mj" in model.heads else None
    return {"keys": [s.key() for s in specs], "latency_ms": lat.tolist(),
            "energy_mj": energy.tolist() if energy is not None else None,
            "measured_kernels": sum(1 for s in specs if s.key() in model.table),
            "overhead_ms": float(model.overhead_ms + model.per_kernel_overhead_ms * len(specs)),
            "model_kind": model.kind, "energy_source": model.energy_source}


def cost_rows(run: RunData) -> list[dict]:
    """Predicted and measured costs of each network of the run (the cost-check figure's rows)."""
    rows = []

    def row(name, predicted, measured, accel):
        predicted, measured = predicted or {}, measured or {}
        r = {"network": name, "latency_ms": {"predicted": predicted.get("latency_ms")},
             "energy_mj": {"predicted": predicted.get("energy_mj")}, "latency_ms_std": {}}
        if accel:
            r["latency_ms"]["accelerator model (exported ONNX)"] = measured.get("latency_ms")
            r["energy_mj"]["accelerator model (exported ONNX)"] = measured.get("energy_mj")
        else:
            r["latency_ms"]["TVM (measured)"] = measured.get("latency_ms")
            r["latency_ms_std"]["TVM (measured)"] = measured.get("latency_std_ms")
            r["latency_ms"]["onnxruntime (measured)"] = measured.get("onnxruntime_latency_ms")
            r["energy_mj"]["measured"] = measured.get("energy_mj")
        return r

    accel = is_accelerator(run)
    net = run.network()
    if net:
        rows.append(row(f"found ({run.config['strategy']})", net["predicted"], net["measured"], accel))
    cmp = run.files.get("compare.json")
    if cmp and cmp.get("predicted") and (cmp.get("strategy") == "random" or cmp.get("feasible")):
        prefix = "compare-" if cmp["strategy"] == "random" else "sequential-"
        rows.append(row(cmp["strategy"], cmp["predicted"], run.files.get(f"{prefix}measure.json"), accel))
    return rows


def is_accelerator(run: RunData) -> bool:
    cfg = run.config
    return bool(cfg.get("hw_space")) or str(cfg.get("device", "")).startswith("accel:")


def summary(run: RunData) -> dict:
    """The headline numbers of a run (test accuracy, costs, budgets met) for tables and comparisons."""
    r = run.results or {}
    net = run.network() or {}
    measured = net.get("measured") or {}
    predicted = net.get("predicted") or {}
    return {"run": run.name, "space": run.config["space"], "strategy": run.config["strategy"],
            "device": r.get("device") or run.config.get("hw_space") or run.config["device"],
            "genotype": net.get("genotype"), "test_accuracy": net.get("test_accuracy"),
            "predicted_latency_ms": predicted.get("latency_ms"), "measured_latency_ms": measured.get("latency_ms"),
            "predicted_energy_mj": predicted.get("energy_mj"), "measured_energy_mj": measured.get("energy_mj"),
            "area_mm2": predicted.get("area_mm2"), "search_seconds": r.get("search_seconds"),
            "budgets": ", ".join(f"{b['metric']} <= {b['limit']:.4g}" for b in run.budget_specs()),
            "budgets_met": r.get("budgets_met_predicted"), "finished": run.results is not None}


def finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
