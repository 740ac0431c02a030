"""Write the real-network kernel set that adaptive sampling draws around (codesign/predict/data/real-kernels.json).

    python benchmarks/real_shapes.py --onnx-dir DIR [DIR ...] [--exclude-from JSON ...] [--out PATH]

Every ONNX network listed in each folder's ``manifest.json`` (the folders ``export_torchvision.py``
and ``export_timm.py`` write) is read as codesign reads it (``codesign.graph.onnx_kernels``); its
kernels of the types ``codesign fit --adaptive`` samples, up to ``adaptive.MAX_FLOPS``, are
collected once each. A network whose model is named in an ``--exclude-from`` file (the JSON that
``benchmarks/predictor.py --stage never-profiled`` writes: its ``per_network`` rows) is left out
at every input size, so that the benchmark's networks stay networks whose kernels were never
profiled, and none of whose sizes were drawn around. A network codesign cannot read is left out
with a line saying why.

Output: JSON, ``format_version`` 1: the networks read (model, input size, kernels kept), the
networks left out and why, and ``kernels`` (kernel keys, sorted).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codesign.errors import CodesignError
from codesign.graph import onnx_kernels
from codesign.kernelspec import kernel_flops
from codesign.predict.adaptive import (
    MAX_FLOPS,
    REAL_KERNELS_FILE,
    REAL_KERNELS_VERSION,
    SAMPLE_TYPES,
)
from codesign.predict.features import kernel_type


def excluded_models(paths: list[str]) -> set[str]:
    """Model names (without the input size) of the networks a never-profiled report evaluated."""
    out = set()
    for p in paths:
        for row in json.loads(Path(p).read_text())["per_network"]:
            name = row["name"]
            for prefix in ("tv_", "timm_"):
                if name.startswith(prefix):
                    name = name[len(prefix):]
            out.add(name.rsplit("_", 1)[0])  # the input size
            out.add(Path(row["onnx"]).stem.rsplit("_", 1)[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-dir", nargs="+", required=True, help="folders with a manifest.json of exported networks")
    ap.add_argument("--exclude-from", nargs="*", default=[], metavar="JSON",
                    help="never-profiled reports whose networks (every input size) are left out")
    ap.add_argument("--out", default=str(REAL_KERNELS_FILE), help="where to write (default: the packaged file)")
    args = ap.parse_args()
    exclude = excluded_models(args.exclude_from)
    keys: set[str] = set()
    networks, left_out = [], {}
    for folder in map(Path, args.onnx_dir):
        manifest = json.loads((folder / "manifest.json").read_text())
        for entry_name, entry in sorted(manifest["models"].items()):
            if "file" not in entry:
                continue
            model = entry.get("model", entry_name.rsplit("_", 1)[0])
            if model in exclude:
                left_out[entry_name] = "a network the never-profiled benchmark evaluates"
                continue
            try:
                specs = onnx_kernels(folder / entry["file"])
            except CodesignError as exc:
                left_out[entry_name] = str(exc)
                print(f"{entry_name}: left out ({exc})", file=sys.stderr)
                continue
            kept = {s.key() for s in specs if kernel_type(s) in SAMPLE_TYPES and kernel_flops(s) <= MAX_FLOPS}
            keys |= kept
            networks.append({"model": model, "input_size": entry.get("size"), "kernels": len(specs),
                             "kernels_kept": len(kept)})
            print(f"{entry_name}: {len(kept)} of {len(specs)} kernels kept", file=sys.stderr)
    out = {"format_version": REAL_KERNELS_VERSION,
           "what": "kernels of real classification networks (torchvision, timm) that `codesign fit --adaptive` "
                   "draws perturbed copies around; written by benchmarks/real_shapes.py",
           "max_flops": MAX_FLOPS, "networks": networks, "left_out": left_out, "kernels": sorted(keys)}
    Path(args.out).write_text(json.dumps(out, indent=0) + "\n")
    print(json.dumps({"networks": len(networks), "left_out": len(left_out), "kernels": len(keys),
                      "out": args.out}, indent=2))


if __name__ == "__main__":
    main()
