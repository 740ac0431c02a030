"""Whether the kernels codesign reads from a network are the kernels TVM runs: each network's
kernels profiled one by one, the network measured whole, and the sum of the kernels over the
measurement (no network overhead fitted; 1.0 is a perfect composition).

    python benchmarks/composition.py NET.onnx [NET.onnx ...] [--db DB] [--schedule untuned]
                                     [--statistic min] [--model MODEL] [--out results.json]

With ``--model`` (a saved cost model, e.g. from ``codesign fit --adaptive --exclude-onnx NET.onnx
...``, which never profiled these networks' kernels) each network is also predicted by it
(``codesign predict --model MODEL --no-measured``), and the summary scores those predictions
against the same measurements beside the obvious alternative: latency proportional to FLOPs, with
one scale, the median of the other networks' measured ms per FLOP (leave one out).

Both are timed as a user would: ``codesign profile --onnx NET`` into ``--db`` (kernels already
there are reused, so a killed run resumes) and ``codesign measure NET``, cpu-local, under one
schedule policy and timing statistic. Prints one line per network to stderr and the JSON (the
hardware, load averages, one row per network, and how many are within ±5 and ±10 %) to stdout;
``--out`` also keeps it in a file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import hardware, write_json  # noqa: E402

FORMAT_VERSION = 1


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codesign.cli", *args], capture_output=True, text=True)


def predicted(net: Path, model: Path) -> dict:
    """The saved model's prediction of a network, regression only (none of its kernels is looked up)."""
    out = _cli("predict", "--model", str(model), "--no-measured", "--json", "--no-progress", str(net))
    if out.returncode:
        return {"predict_error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    item = json.loads(out.stdout)["items"][0]
    return {"predicted_ms": item["latency_ms"], "predicted_interval_ms": item.get("latency_interval_ms"),
            "kernels_outside_sampled_range": len(item.get("out_of_range", []))}


def scores(pred: list[float], meas: list[float]) -> dict:
    """Share within ±10 % and ±25 %, median absolute error and Kendall τ of predictions
    (``codesign.predict.evaluate.accuracy``, the figures every predictor benchmark reports)."""
    from codesign.predict.evaluate import accuracy

    a = accuracy(pred, meas)
    return {"n": a["n"], "within_10pct": a["within_10pct"], "within_25pct": a["within_25pct"],
            "median_abs_error": a["median_ape"], "kendall_tau": a["kendall_tau"]}


def compose(net: Path, db: Path, schedule: str, statistic: str, repeats: int, min_repeat_ms: float) -> dict:
    """One network's row: its kernels, their profiled sum, the measurement and the ratio."""
    from codesign.graph import onnx_kernels
    from codesign.kernelspec import kernel_flops
    from codesign.profile.db import ProfileDB

    prof = _cli("profile", "--onnx", str(net), "--schedule", schedule, "--db", str(db), "--repeats", "5",
                "--min-repeat-ms", "20", "--statistic", statistic, "--json", "--no-progress")
    if prof.returncode:
        return {"net": net.stem, "error": "profile: " + (prof.stderr.strip().splitlines() or ["?"])[-1]}
    meas = _cli("measure", str(net), "--schedule", schedule, "--repeats", str(repeats), "--min-repeat-ms",
                str(min_repeat_ms), "--statistic", statistic, "--no-onnxruntime", "--json", "--no-progress")
    if meas.returncode:
        return {"net": net.stem, "error": "measure: " + (meas.stderr.strip().splitlines() or ["?"])[-1]}
    measured = json.loads(meas.stdout)[0]
    specs = onnx_kernels(net)
    with ProfileDB(db, readonly=True) as d:
        lat = {m.kernel_key: m.latency_ms for m in d.query(device="cpu-local", schedule=schedule, ok_only=True)}
    total = sum(lat.get(s.key(), 0.0) for s in specs)
    return {"net": net.stem, "kernels": len(specs), "ops": sorted({s.op for s in specs}),
            "flops": sum(kernel_flops(s) for s in specs),
            "unprofiled_kernels": sum(s.key() not in lat for s in specs), "kernel_sum_ms": total,
            "measured_ms": measured["latency_ms"], "sum_over_measured": total / measured["latency_ms"],
            "load_average": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", nargs="+", type=Path)
    ap.add_argument("--db", type=Path, default=Path("composition.sqlite"), help="profile database (default ./composition.sqlite)")
    ap.add_argument("--schedule", default="untuned")
    ap.add_argument("--statistic", default="min", choices=("min", "median"))
    ap.add_argument("--repeats", type=int, default=10, help="timed repeats of each network (default 10)")
    ap.add_argument("--min-repeat-ms", type=float, default=50.0)
    ap.add_argument("--model", type=Path, default=None,
                    help="a saved cost model that also predicts each network (never-profiled figure)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    missing = [str(p) for p in args.onnx + ([args.model] if args.model else []) if not p.is_file()]
    if missing:
        print(f"composition.py: no such file: {', '.join(missing)}", file=sys.stderr)
        sys.exit(2)
    rows = []
    for net in args.onnx:
        rows.append(compose(net, args.db, args.schedule, args.statistic, args.repeats, args.min_repeat_ms))
        r = rows[-1]
        if args.model and "error" not in r:
            r.update(predicted(net, args.model))
        print(f"{r['net']}: " + (r["error"] if "error" in r else
              f"{r['kernels']} kernels, sum {r['kernel_sum_ms']:.3f} ms, measured {r['measured_ms']:.3f} ms, "
              f"ratio {r['sum_over_measured']:.3f}"
              + (f", predicted {r['predicted_ms']:.3f} ms" if "predicted_ms" in r else "")),
              file=sys.stderr, flush=True)
    ratios = [r["sum_over_measured"] for r in rows if "error" not in r]
    result = {
        "format_version": FORMAT_VERSION, "hardware": hardware(), "schedule": args.schedule,
        "statistic": args.statistic, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows,
        "summary": {"networks": len(ratios), "failed": len(rows) - len(ratios),
                    "within_5pct": sum(abs(x - 1) <= 0.05 for x in ratios),
                    "within_10pct": sum(abs(x - 1) <= 0.10 for x in ratios),
                    "median_ratio": statistics.median(ratios) if ratios else None,
                    "min_ratio": min(ratios, default=None), "max_ratio": max(ratios, default=None)},
    }
    if args.model:
        ok = [r for r in rows if "predicted_ms" in r]
        meas = [r["measured_ms"] for r in ok]
        per_flop = [r["measured_ms"] / r["flops"] for r in ok]
        flops_pred = [r["flops"] * statistics.median(per_flop[:i] + per_flop[i + 1:]) for i, r in enumerate(ok)]
        result["never_profiled"] = {
            "model": str(args.model), "networks": len(ok), "predict_failed": sum("predict_error" in r for r in rows),
            "model_scores": scores([r["predicted_ms"] for r in ok], meas) if len(ok) > 1 else None,
            "flops_proxy_scores": scores(flops_pred, meas) if len(ok) > 2 else None,
            "interval_holds": (sum(r["predicted_interval_ms"][0] <= r["measured_ms"] <= r["predicted_interval_ms"][1]
                                   for r in ok if r.get("predicted_interval_ms")) / len(ok)) if ok else None,
            "networks_with_kernels_outside_sampled_range": sum(r["kernels_outside_sampled_range"] > 0 for r in ok),
        }
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
