"""Benchmark of codesign's fused ops against the same computation in eager PyTorch.

Prints JSON: for each size, forward+backward time of the fused op and of the eager reference (the
ratio is measured in the same run), the bytes each saves for backward (saved_tensors_hooks), and
the achieved GB/s of the fused op against a memory-copy baseline measured in the same run. With a
CUDA device and Triton, a GPU section follows (benchmarks/kernels_gpu.py).

    python benchmarks/kernels.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import gumbel_bytes, hardware, mixed_op_bytes, time_ms  # noqa: E402

import codesign  # noqa: E402


def copy_gbps(nbytes: int, repeats: int) -> float:
    """Achieved bandwidth of dst.copy_(src) for a buffer of nbytes (read + write)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    t = time_ms(lambda: dst.copy_(src), repeats=repeats)
    return 2 * nbytes / (t["median_ms"] * 1e-3) / 1e9


def saved_bytes(fn, inputs: list[torch.Tensor]) -> dict:
    """Bytes of distinct storages saved for backward by fn(); 'new' excludes the inputs' own."""
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    input_ptrs = {t.untyped_storage().data_ptr() for t in inputs}
    total = sum(seen.values())
    new = sum(b for p, b in seen.items() if p not in input_ptrs)
    del out
    return {"saved_bytes": total, "saved_bytes_beyond_inputs": new}


def bench_mixed(n, c, h, kp, free, repeats) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, h, generator=gen)
    ys = [torch.randn(n, c, h, h, generator=gen) for _ in range(kp)]
    w = torch.softmax(torch.randn(kp + len(free), generator=gen), 0)
    leaves = [t.clone().requires_grad_() for t in (x, w, *ys)]
    grad = torch.randn(n, c, h, h, generator=gen)

    def step(backend):
        def run():
            with codesign.use_backend(backend):
                out = codesign.mixed_op(leaves[0], leaves[2:], leaves[1], free)
                torch.autograd.grad(out, leaves, grad)

        return run

    def forward(backend):
        def run():
            with codesign.use_backend(backend):
                return codesign.mixed_op(leaves[0], leaves[2:], leaves[1], free)

        return run

    fused = time_ms(step("auto"), repeats)
    ref = time_ms(step("reference"), repeats)
    moved = mixed_op_bytes(x.numel() * x.element_size(), kp)
    return {
        "shape": [n, c, h, h],
        "parametric": kp,
        "free_ops": free,
        "fused_fwd_bwd": fused,
        "eager_fwd_bwd": ref,
        "speedup_vs_eager": ref["median_ms"] / fused["median_ms"],
        "fused_saved": saved_bytes(forward("auto"), leaves),
        "eager_saved": saved_bytes(forward("reference"), leaves),
        "fused_bytes_moved": moved,
        "fused_gbps": moved / (fused["median_ms"] * 1e-3) / 1e9,
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller Gumbel case")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case")
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 15)
    free = ["identity", "avg_pool_3x3", "max_pool_3x3"]
    result = {
        "benchmark": "kernels",
        "hardware": hardware(),
        "backends": codesign.backends(),
        "copy_gbps": copy_gbps(64 << 20, repeats),
        "mixed_op": [
            bench_mixed(64, 16, 32, 5, free, repeats),
            bench_mixed(64, 64, 8, 5, free, repeats),
        ],
        "gumbel_softmax": [bench_gumbel(100_000 if args.quick else 1_000_000, 8, repeats)],
    }
    for case in result["mixed_op"]:
        case["fused_gbps_over_copy"] = case["fused_gbps"] / result["copy_gbps"]
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
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
