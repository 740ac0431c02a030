"""The search on a GPU: one supernet epoch with the fused ops against the reference ops, a short
search end to end with ``--train-device cuda``, and the table of the GPU targets.

    python benchmarks/gpu_search.py                       # JSON; needs a CUDA device
    python benchmarks/gpu_search.py --device cpu --c 4 --layers 3 --steps 1 --search-epochs 1  # CPU dry run
    python benchmarks/gpu_search.py --table kernels.json search.json           # the targets' table

The supernet epoch is the DARTS search setting (darts space, C=16, 8 cells, batch 64, 32x32 inputs):
``--steps`` weight steps (forward, backward, SGD) on random data, timed with the device
synchronised, under ``codesign.use_backend("auto")`` (the Triton mixed_op on CUDA) and
``use_backend("reference")`` (plain torch ops, every candidate's output materialised), with the
peak of allocated memory of each. The search is ``codesign search --train-device cuda --device
cuda-local`` (default schedule of the device, dlight) on the default digits data with few epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import hardware  # noqa: E402

# Targets of the GPU path: fused ops against the device's copy bandwidth and eager torch, the
# supernet step against the reference ops.
COPY_SHARE_TARGET = 0.70
EAGER_SPEEDUP_TARGET = 2.0
STEP_SPEEDUP_TARGET = 1.5
PEAK_MEMORY_TARGET = 0.6


def supernet_epoch(backend: str, device: str, steps: int, batch: int = 64, c: int = 16, layers: int = 8) -> dict:
    """``steps`` weight steps of the DARTS supernet on ``device`` under ``backend``."""
    import torch
    import torch.nn.functional as F

    import codesign
    from codesign.spaces import create_space

    torch.manual_seed(0)
    space = create_space("darts", c=c, layers=layers, input_shape=(1, 3, 32, 32), num_classes=10)
    net = space.supernet().to(device)
    weights = [torch.softmax(torch.randn(len(d.options)), 0).to(device) for d in space.decisions()]
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x, weights), y)
        loss.backward()
        opt.step()

    with codesign.use_backend(backend):
        step()  # compile and autotune outside the timing
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        seconds = time.perf_counter() - t0
    return {"backend": backend, "steps": steps, "batch": batch, "step_ms": seconds * 1e3 / steps,
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def short_search(device: str, epochs: int, train_epochs: int) -> dict:
    """``codesign search`` end to end with few epochs on ``device`` (cuda: the GPU device too)."""
    flags = (["--train-device", "cuda", "--device", "cuda-local"] if device.startswith("cuda") else
             ["--train-device", "cpu", "--device", "cpu-local", "--schedule", "untuned"])
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "codesign.cli", "search", *flags, "--strategy", "gdas", "--epochs", str(epochs),
               "--warmup-epochs", "1", "--train-epochs", str(train_epochs), "--run-dir", os.path.join(tmp, "run"),
               "--json", "--quiet"]
        env = dict(os.environ, CODESIGN_DB=os.path.join(tmp, "profiles.sqlite"))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"command": " ".join(cmd[2:]), "error": proc.stderr.strip().splitlines()[-1:], "wall_s": wall}
    r = json.loads(proc.stdout)
    measured = r.get("measured") or {}
    return {"command": " ".join(cmd[2:]), "wall_s": wall, "train_device": r.get("train_device"),
            "schedule": r.get("schedule"), "genotype": r["genotype"], "test_accuracy": r["test_accuracy"],
            "predicted_latency_ms": r["predicted"].get("latency_ms"), "measured_latency_ms": measured.get("latency_ms"),
            "measured_energy_mj": measured.get("energy_mj"), "search_seconds": r["search_seconds"]}


def table(kernels: dict, search: dict) -> str:
    """The GPU targets as a text table, from benchmarks/kernels_gpu.py's and this script's JSON."""
    lines = [f"{'check':44s} {'value':>12s} {'target':>10s}  ok"]

    def row(name, value, target, ok):
        lines.append(f"{name:44s} {value:>12s} {target:>10s}  {'yes' if ok else 'NO'}")

    gpu = kernels.get("gpu", {})
    if "skipped" in gpu or not gpu:
        lines.append(f"fused ops: not run ({gpu.get('skipped', 'no kernels_gpu output')})")
    else:
        for op in ("mixed_op", "gumbel_softmax"):
            for case in gpu[op]:
                shape = "x".join(str(v) for v in case["shape"])
                row(f"{op} {shape} GB/s share of copy", f"{case['fused_gbps_over_copy']:.2f}",
                    f">={COPY_SHARE_TARGET:.2f}", case["fused_gbps_over_copy"] >= COPY_SHARE_TARGET)
                speed = case.get("speedup_vs_eager", case.get("speedup_vs_torch"))
                row(f"{op} {shape} speedup vs eager", f"{speed:.2f}x", f">={EAGER_SPEEDUP_TARGET:.1f}x",
                    speed >= EAGER_SPEEDUP_TARGET)
    epoch = search.get("supernet_epoch")
    if epoch:
        fused, ref = epoch["fused"], epoch["reference"]
        row("supernet step: reference / fused time", f"{ref['step_ms'] / fused['step_ms']:.2f}x",
            f">={STEP_SPEEDUP_TARGET:.1f}x", ref["step_ms"] / fused["step_ms"] >= STEP_SPEEDUP_TARGET)
        if fused["peak_memory_mib"] is not None:
            share = fused["peak_memory_mib"] / ref["peak_memory_mib"]
            row("supernet step: fused / reference peak memory", f"{share:.2f}", f"<={PEAK_MEMORY_TARGET:.1f}",
                share <= PEAK_MEMORY_TARGET)
    s = search.get("search")
    if s:
        if "error" in s:
            lines.append(f"short search: FAILED: {s['error']}")
        else:
            def num(v):
                return "-" if v is None else f"{v:.4g}"

            lines.append(f"short search: {s['wall_s']:.0f} s on {s['train_device']} [{s['schedule']}], accuracy "
                         f"{s['test_accuracy']:.3f}, predicted {num(s['predicted_latency_ms'])} ms, measured "
                         f"{num(s['measured_latency_ms'])} ms, energy {num(s['measured_energy_mj'])} mJ")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run of the script)")
    p.add_argument("--steps", type=int, default=50, help="weight steps of the supernet epoch (default 50)")
    p.add_argument("--c", type=int, default=16, help="supernet channels (default 16, DARTS's search setting)")
    p.add_argument("--layers", type=int, default=8, help="supernet cells (default 8, DARTS's search setting)")
    p.add_argument("--search-epochs", type=int, default=3, help="search epochs of the short search (default 3)")
    p.add_argument("--train-epochs", type=int, default=2, help="training epochs of the found network (default 2)")
    p.add_argument("--no-search", action="store_true", help="only the supernet epoch")
    p.add_argument("--table", nargs=2, metavar=("KERNELS_JSON", "SEARCH_JSON"), default=None,
                   help="print the targets' table from kernels_gpu.py's and this script's JSON, and exit")
    args = p.parse_args(argv)
    if args.table:
        with open(args.table[0]) as f, open(args.table[1]) as g:
            print(table(json.load(f), json.load(g)))
        return
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.exit(2, "gpu_search.py: torch sees no CUDA device (use --device cpu for a dry run)\n")
    out = {"benchmark": "gpu_search", "hardware": hardware(), "device": args.device, "loadavg": list(os.getloadavg())}
    out["supernet_epoch"] = {"setting": f"darts space, C={args.c}, {args.layers} cells, batch 64, 32x32",
                             "fused": supernet_epoch("auto", args.device, args.steps, c=args.c, layers=args.layers),
                             "reference": supernet_epoch("reference", args.device, args.steps, c=args.c,
                                                         layers=args.layers)}
    if not args.no_search:
        out["search"] = short_search(args.device, args.search_epochs, args.train_epochs)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
