"""Whether the kernels codesign reads from a network are the kernels TVM runs: each network's
kernels profiled one by one, the network measured whole, and the sum of the kernels over the
measurement (no network overhead fitted; 1.0 is a perfect composition).

    python benchmarks/composition.py NET.onnx [NET.onnx ...] [--db DB] [--schedule untuned]
                                     [--statistic min] [--out results.json]

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

from _common import hardware, write_json

FORMAT_VERSION = 1


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codesign.cli", *args], capture_output=True, text=True)


def compose(net: Path, db: Path, schedule: str, statistic: str, repeats: int, min_repeat_ms: float) -> dict:
    """One network's row: its kernels, their profiled sum, the measurement and the ratio."""
    from codesign.graph import onnx_kernels
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
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    missing = [str(p) for p in args.onnx if not p.is_file()]
    if missing:
        print(f"composition.py: no such file: {', '.join(missing)}", file=sys.stderr)
        sys.exit(2)
    rows = []
    for net in args.onnx:
        rows.append(compose(net, args.db, args.schedule, args.statistic, args.repeats, args.min_repeat_ms))
        r = rows[-1]
        print(f"{r['net']}: " + (r["error"] if "error" in r else
              f"{r['kernels']} kernels, sum {r['kernel_sum_ms']:.3f} ms, measured {r['measured_ms']:.3f} ms, "
              f"ratio {r['sum_over_measured']:.3f}"), file=sys.stderr, flush=True)
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
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
