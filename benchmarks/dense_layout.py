"""Which weight layout a Linear layer runs in inside a TVM network: the two ``dense`` kernels
against the one-layer network they describe.

For classifier heads and transformer layers (rows x in -> out): the ``dense`` kernel with its
weight stored (out, in) as ``topi.nn.dense`` reads it (``weight_kn=False``), the same kernel with
the weight stored (in, out) as TVM's ONNX importer folds a ``Gemm``'s transposed weight
(``weight_kn=True``, what ``codesign.graph`` now reads an ONNX Linear layer as), and the
one-layer network itself (``nn.Linear`` exported to ONNX, compiled and timed by ``codesign
measure``'s ``measure_network``). All untuned on cpu-local, timed as ``codesign profile`` and
``codesign measure`` time (one thread, each repeat scaled by the share of a core it held).
Prints JSON: per layer the three timings and each kernel over the network (1.0: the kernel is
what the network runs).

    python benchmarks/dense_layout.py [--repeats 10] [--min-repeat-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import hardware  # noqa: E402

# (rows, in, out): MobileNetV3-Small's and ResNet-18's classifier layers, MobileNetV3-Large's
# hidden layer, a ViT-B token-wise layer at 32x32 px (5 tokens).
LAYERS = ((1, 576, 1024), (1, 1024, 1000), (1, 512, 1000), (1, 960, 1280), (5, 768, 3072), (5, 3072, 768))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--min-repeat-ms", type=float, default=50.0)
    args = p.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    import torch
    from torch import nn

    from codesign.graph import export_onnx, onnx_kernels
    from codesign.kernelspec import KernelSpec
    from codesign.profile import ProfileDB, get_device, profile_kernels
    from codesign.profile.measure import measure_network

    torch.set_num_threads(1)
    device = get_device("cpu-local")
    load = [os.getloadavg()]
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with ProfileDB(Path(tmp) / "dense.sqlite") as db:
            for r, k, n in LAYERS:
                model = export_onnx(nn.Linear(k, n), (r, k))
                (read,) = onnx_kernels(model)
                specs = {layout: KernelSpec.make("dense", (r, k), out_features=n, weight_kn=layout == "kn")
                         for layout in ("nk", "kn")}
                profile_kernels(list(specs.values()), device, db, schedule="untuned", repeats=args.repeats,
                                min_repeat_ms=args.min_repeat_ms, progress=False)
                have = {m.kernel_key: m.latency_ms for m in db.query(device=device.name, schedule="untuned", ok_only=True)}
                lat = {layout: have[s.key()] for layout, s in specs.items()}
                net = measure_network(model, device, "untuned", args.repeats, args.min_repeat_ms,
                                      onnxruntime=False).latency_ms
                rows.append({"layer": f"{r}x{k} -> {n}", "network_ms": net, "kernel_nk_ms": lat["nk"],
                             "kernel_kn_ms": lat["kn"], "nk_over_network": lat["nk"] / net,
                             "kn_over_network": lat["kn"] / net, "graph_reads_as": read.key()})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    load.append(os.getloadavg())
    out = {"benchmark": "dense_layout", "hardware": hardware(), "load_average_1_5_15": load,
           "seconds": round(time.perf_counter() - t0, 1), "schedule": "untuned", "device": "cpu-local",
           "layers": rows}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
