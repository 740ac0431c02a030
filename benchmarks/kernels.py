"""Benchmark of codesign's fused ops against the same computation in eager PyTorch.

Prints JSON. For the mixed op, at the DARTS supernet's sizes and in both layouts (NCHW, and the
channels_last the fused supernet runs): forward+backward time of the fused op and of the eager
reference, the bytes each saves for backward (saved_tensors_hooks), and the achieved GB/s of the
fused op (bytes it must move over its time) against a memory copy of the same number of bytes
timed in the same loop (interleaved, so both see the same load), with the kernel's output buffers
recycled (the default) and without (``codesign.ops.buffer_pool(0)``: fresh, page-faulting
allocations every call); and the same edge in NHWC without its two 3x3 pools (identity only). Then the supernet's channels_last depthwise-conv and BN (+ ReLU) kernels
against torch's, and the Gumbel-softmax. Times are process CPU time (what a loaded shared machine
distorts least) with wall time beside it; OMP_NUM_THREADS is set by --threads. With a CUDA device
and Triton, a GPU section follows (benchmarks/kernels_gpu.py).

    python benchmarks/kernels.py [--quick] [--repeats N] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys

_ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_ap.add_argument("--quick", action="store_true", help="fewer repeats, fewer cases")
_ap.add_argument("--repeats", type=int, default=None, help="timed repeats per case")
_ap.add_argument("--threads", type=int, default=1, help="OMP threads (default 1)")
if __name__ == "__main__":
    _ARGS = _ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(_ARGS.threads)  # before torch and codesign._C load

import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import gumbel_bytes, hardware, mixed_op_bytes, saved_storages, time_ms  # noqa: E402

import codesign  # noqa: E402
from codesign.ops import batch_norm_relu, buffer_pool, depthwise_conv2d  # noqa: E402

FREE = ["identity", "avg_pool_3x3", "max_pool_3x3"]


def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """CPU and wall milliseconds of each fn, timed in turn (A, B, C, A, B, C, ...): median, the
    quartiles of CPU time, and the least disturbed (minimum) CPU time."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    cpu = {k: [] for k in fns}
    wall = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu[k].append((time.process_time() - c0) * 1e3)
            wall[k].append((time.perf_counter() - w0) * 1e3)
    out = {}
    for k in fns:
        q = statistics.quantiles(cpu[k], n=4)
        out[k] = {"cpu_median_ms": statistics.median(cpu[k]), "cpu_q1_ms": q[0], "cpu_q3_ms": q[2],
                  "cpu_min_ms": min(cpu[k]), "wall_median_ms": statistics.median(wall[k]), "repeats": repeats}
    return out


def saved_bytes(fn, inputs: list[torch.Tensor]) -> dict:
    """Bytes of distinct storages saved for backward by fn(); 'new' excludes the inputs' own."""
    out, seen = saved_storages(fn)
    input_ptrs = {t.untyped_storage().data_ptr() for t in inputs}
    total = sum(seen.values())
    new = sum(b for p, b in seen.items() if p not in input_ptrs)
    del out
    return {"saved_bytes": total, "saved_bytes_beyond_inputs": new}


def _gbps(nbytes: float, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


def bench_mixed(n, c, h, kp, layout, repeats, free=FREE) -> dict:
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, h, generator=gen).contiguous(memory_format=fmt)
    ys = [torch.randn(n, c, h, h, generator=gen).contiguous(memory_format=fmt) for _ in range(kp)]
    w = torch.softmax(torch.randn(kp + len(free), generator=gen), 0)
    leaves = [t.clone().requires_grad_() for t in (x, w, *ys)]
    grad = torch.randn(n, c, h, h, generator=gen).contiguous(memory_format=fmt)
    moved = mixed_op_bytes(x.numel() * x.element_size(), kp)
    src = torch.empty(moved // 2 // 4).uniform_()  # a copy moving as many bytes (read + write)
    dst = torch.empty_like(src)

    fixed_w = leaves[1].detach()  # weights that need no gradient, as in a supernet's weight step

    def step(backend, pool=True, weight_grad=True):
        def run():
            with codesign.use_backend(backend):
                if weight_grad:
                    out = codesign.mixed_op(leaves[0], leaves[2:], leaves[1], free)
                    torch.autograd.grad(out, leaves, grad)
                else:
                    out = codesign.mixed_op(leaves[0], leaves[2:], fixed_w, free)
                    torch.autograd.grad(out, [leaves[0], *leaves[2:]], grad)

        def fresh():
            limit = buffer_pool()["limit_bytes"]
            buffer_pool(0)
            try:
                run()
            finally:
                buffer_pool(limit)

        return run if pool else fresh

    def forward(backend):
        def run():
            with codesign.use_backend(backend):
                return codesign.mixed_op(leaves[0], leaves[2:], leaves[1], free)

        return run

    t = interleaved({"copy": lambda: dst.copy_(src), "fused": step("auto"),
                     "fused_fresh_buffers": step("auto", pool=False), "eager": step("reference"),
                     "fused_no_weight_grad": step("auto", weight_grad=False)}, repeats)
    copy_gbps = _gbps(2 * src.numel() * 4, t["copy"]["cpu_median_ms"])
    fused_gbps = _gbps(moved, t["fused"]["cpu_median_ms"])
    return {
        "shape": [n, c, h, h], "layout": layout, "parametric": kp, "free_ops": free,
        "fused_fwd_bwd": t["fused"], "fused_fwd_bwd_fresh_buffers": t["fused_fresh_buffers"],
        "eager_fwd_bwd": t["eager"], "copy": t["copy"],
        "speedup_vs_eager": t["eager"]["cpu_median_ms"] / t["fused"]["cpu_median_ms"],
        "buffer_reuse_speedup": t["fused_fresh_buffers"]["cpu_median_ms"] / t["fused"]["cpu_median_ms"],
        # the weights needing no gradient (a supernet's weight step): backward reads no y_k
        "fused_fwd_bwd_no_weight_grad": t["fused_no_weight_grad"],
        "no_weight_grad_speedup": t["fused"]["cpu_median_ms"] / t["fused_no_weight_grad"]["cpu_median_ms"],
        "fused_saved": saved_bytes(forward("auto"), leaves),
        "eager_saved": saved_bytes(forward("reference"), leaves),
        "fused_bytes_moved": moved,
        "copy_gbps": copy_gbps,
        "fused_gbps": fused_gbps,
        "fused_gbps_over_copy": fused_gbps / copy_gbps,
        "fused_gbps_over_copy_least_disturbed": (_gbps(moved, t["fused"]["cpu_min_ms"])
                                                 / _gbps(2 * src.numel() * 4, t["copy"]["cpu_min_ms"])),
        "fused_fresh_buffers_gbps_over_copy": _gbps(moved, t["fused_fresh_buffers"]["cpu_median_ms"]) / copy_gbps,
    }


def bench_candidate_kernels(n, c, h, repeats) -> dict:
    """The fused supernet's channels_last kernels against torch's on the same maps."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, h, generator=gen).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(n, c, h, h, generator=gen).contiguous(memory_format=torch.channels_last)
    fns = {}
    for k, dil in ((3, 1), (5, 1), (3, 2), (5, 2)):
        w = torch.randn(c, 1, k, k, generator=gen, requires_grad=True)
        pad = dil * (k - 1) // 2
        fns[f"dw{k}x{k}_d{dil}_codesign"] = (
            lambda w=w, pad=pad, dil=dil: torch.autograd.grad(depthwise_conv2d(x, w, 1, pad, dil), [x, w], g))
        fns[f"dw{k}x{k}_d{dil}_torch"] = (
            lambda w=w, pad=pad, dil=dil: torch.autograd.grad(
                torch.nn.functional.conv2d(x, w, None, 1, pad, dil, c), [x, w], g))
    bn = torch.nn.BatchNorm2d(c)
    fns["bn_relu_codesign"] = lambda: torch.autograd.grad(batch_norm_relu(x, bn, True), [x, *bn.parameters()], g)
    fns["bn_relu_torch"] = lambda: torch.autograd.grad(torch.relu(bn(x)), [x, *bn.parameters()], g)
    t = interleaved(fns, repeats)
    out = {"shape": [n, c, h, h], "layout": "nhwc", "fwd_bwd": t}
    for name in fns:
        if name.endswith("_codesign"):
            base = name.removesuffix("_codesign")
            out[f"{base}_speedup_vs_torch"] = t[f"{base}_torch"]["cpu_median_ms"] / t[name]["cpu_median_ms"]
    return out


def bench_gumbel(rows, cols, repeats) -> dict:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, cols, generator=gen).requires_grad_()
    grad = torch.randn(rows, cols, generator=gen)

    def fused():
        y, _ = codesign.gumbel_softmax(logits, tau=1.0, hard=False, seed=1)
        torch.autograd.grad(y, logits, grad)

    def torch_ref():
        y = torch.nn.functional.gumbel_softmax(logits, tau=1.0, hard=False)
        torch.autograd.grad(y, logits, grad)

    f = time_ms(fused, repeats)
    t = time_ms(torch_ref, repeats)
    moved = gumbel_bytes(logits.numel() * logits.element_size(), rows)
    return {
        "shape": [rows, cols],
        "fused_fwd_bwd": f,
        "torch_gumbel_softmax_fwd_bwd": t,
        "speedup_vs_torch": t["median_ms"] / f["median_ms"],
        "fused_gbps": moved / (f["median_ms"] * 1e-3) / 1e9,
    }


def main(args) -> None:
    repeats = args.repeats or (5 if args.quick else 15)
    # The DARTS supernet's edge maps at batch 64 and c=16 (cells at 32x32, 16x16, 8x8), 5
    # parametric candidates (a reduction edge's) and the 3 parameter-free ones.
    sizes = [(64, 16, 32), (64, 64, 8)] if args.quick else [(64, 16, 32), (64, 32, 16), (64, 64, 8)]
    result = {
        "benchmark": "kernels",
        "hardware": hardware(),
        "threads": args.threads,
        "load_average_start": os.getloadavg()[0],
        "backends": codesign.backends(),
        "mixed_op": [bench_mixed(n, c, h, 5, layout, repeats) for n, c, h in sizes for layout in ("nchw", "nhwc")],
        # the same edge without its 3x3 pools: how much of the gap to a copy the pools' windows take
        "mixed_op_without_pools": [bench_mixed(n, c, h, 5, "nhwc", repeats, free=["identity"]) for n, c, h in sizes],
        "candidate_kernels": [bench_candidate_kernels(32, 8, 32, repeats)]
        + ([] if args.quick else [bench_candidate_kernels(32, 32, 8, repeats)]),
        "gumbel_softmax": [bench_gumbel(100_000 if args.quick else 1_000_000, 8, repeats)],
    }
    for case in result["mixed_op"]:
        case["saved_bytes_ratio"] = (
            case["fused_saved"]["saved_bytes"] / case["eager_saved"]["saved_bytes"]
        )
    if torch.cuda.is_available():
        try:
            from kernels_gpu import gpu_section

            result["gpu"] = gpu_section()
        except ImportError as exc:
            result["gpu"] = {"skipped": f"benchmarks/kernels_gpu.py did not import: {exc}"}
    else:
        result["gpu"] = {"skipped": "no CUDA device"}
    result["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(_ARGS)
