"""GPU section of benchmarks/kernels.py: the Triton kernels against eager PyTorch on CUDA.

For both ops, at the CPU benchmark's sizes and at 10x larger: forward+backward median time
(triton.testing.do_bench), GB/s from the bytes the op must move, against a device-to-device copy
measured in the same run, and the ratio against eager torch (codesign.use_backend("reference")).

    python benchmarks/kernels_gpu.py     # prints JSON; needs a CUDA device and triton
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import gumbel_bytes, hardware, mixed_op_bytes  # noqa: E402

import codesign  # noqa: E402

FREE = ["identity", "avg_pool_3x3", "max_pool_3x3"]


def _bench(fn) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def copy_gbps(nbytes: int) -> float:
    src = torch.empty(nbytes // 4, device="cuda").uniform_()
    dst = torch.empty_like(src)
    return 2 * nbytes / (_bench(lambda: dst.copy_(src)) * 1e-3) / 1e9


def mixed_case(n, c, h, kp=5) -> dict:
    x = torch.randn(n, c, h, h, device="cuda", requires_grad=True)
    ys = [torch.randn(n, c, h, h, device="cuda", requires_grad=True) for _ in range(kp)]
    w = torch.softmax(torch.randn(kp + len(FREE), device="cuda"), 0).requires_grad_()
    g = torch.randn(n, c, h, h, device="cuda")
    leaves = [x, w, *ys]

    def run(backend):
        def step():
            with codesign.use_backend(backend):
                out = codesign.mixed_op(x, ys, w, FREE)
                torch.autograd.grad(out, leaves, g)

        return step

    fused, eager = _bench(run("auto")), _bench(run("reference"))
    moved = mixed_op_bytes(x.numel() * x.element_size(), kp)
    return {
        "shape": [n, c, h, h],
        "fused_ms": fused,
        "eager_ms": eager,
        "speedup_vs_eager": eager / fused,
        "fused_gbps": moved / (fused * 1e-3) / 1e9,
    }


def gumbel_case(rows, cols=8) -> dict:
    logits = torch.randn(rows, cols, device="cuda", requires_grad=True)
    g = torch.randn(rows, cols, device="cuda")

    def fused():
        y, _ = codesign.gumbel_softmax(logits, 1.0, seed=1)
        torch.autograd.grad(y, logits, g)

    def eager():
        y = torch.nn.functional.gumbel_softmax(logits, tau=1.0)
        torch.autograd.grad(y, logits, g)

    f, e = _bench(fused), _bench(eager)
    moved = gumbel_bytes(logits.numel() * logits.element_size(), rows)
    return {
        "shape": [rows, cols],
        "fused_ms": f,
        "torch_gumbel_softmax_ms": e,
        "speedup_vs_torch": e / f,
        "fused_gbps": moved / (f * 1e-3) / 1e9,
    }


def gpu_section() -> dict:
    ok, reason = codesign.backends()["triton"]["available"], codesign.backends()["triton"]["reason"]
    if not ok:
        return {"skipped": reason}
    copy = copy_gbps(256 << 20)
    mixed = [mixed_case(64, 16, 32), mixed_case(64, 64, 8), mixed_case(640, 16, 32), mixed_case(640, 64, 8)]
    gumbel = [gumbel_case(1_000_000), gumbel_case(10_000_000)]
    for case in mixed + gumbel:
        case["fused_gbps_over_copy"] = case["fused_gbps"] / copy
    return {"device": torch.cuda.get_device_name(0), "copy_gbps": copy, "mixed_op": mixed, "gumbel_softmax": gumbel}


if __name__ == "__main__":
    print(json.dumps({"benchmark": "kernels_gpu", "hardware": hardware(), "gpu": gpu_section()}, indent=2))
