"""``codesign backends`` and ``codesign demo``: the fused ops' backends and a short demo."""

from __future__ import annotations

import time

from ..errors import CodesignError
from .common import print_json


def register(sub) -> None:
    p = sub.add_parser("backends", help="list the kernel backends and why any is missing")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_backends)

    p = sub.add_parser("demo", help="run the fused ops once against their references")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_demo)


def _backends(args) -> int:
    from .. import backends

    info = backends()
    if args.json:
        print_json(info)
        return 0
    for name, row in info.items():
        extra = ""
        if name == "cpp" and row["available"]:
            extra = f" (OpenMP: {'yes' if row['openmp'] else 'no'}, {row['threads']} threads)"
        state = "available" + extra if row["available"] else f"unavailable: {row['reason']}"
        print(f"{name:10s} {state}")
    return 0


def demo(seed: int = 0) -> dict:
    """Run mixed_op and gumbel_softmax on a DARTS-sized edge, forward and backward, on every
    available CPU backend, and report the largest difference from the reference and the time."""
    import torch

    from .. import gumbel_softmax, mixed_op, use_backend

    if seed < 0:
        raise CodesignError(f"--seed must be >= 0, got {seed}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 16, 32, 32, generator=gen)
    ys = [torch.randn(16, 16, 32, 32, generator=gen) for _ in range(5)]
    w = torch.softmax(torch.randn(8, generator=gen), 0)
    free = ["identity", "avg_pool_3x3", "max_pool_3x3"]
    logits = torch.randn(4096, 8, generator=gen)
    result = {}
    for backend in ("reference", "auto"):
        with use_backend(backend):
            leaves = [t.clone().requires_grad_() for t in (x, w, logits, *ys)]
            t0 = time.perf_counter()
            out = mixed_op(leaves[0], leaves[3:], leaves[1], free)
            y, idx = gumbel_softmax(leaves[2], tau=0.5, hard=True, seed=seed)
            (out.square().mean() + (y * leaves[2]).sum()).backward()
            ms = (time.perf_counter() - t0) * 1e3
        result[backend] = {
            "out": out.detach(),
            "grads": [t.grad for t in leaves],
            "index": idx,
            "ms": ms,
        }
    ref, fused = result["reference"], result["auto"]
    diff = max(
        [float((ref["out"] - fused["out"]).abs().max())]
        + [float((a - b).abs().max()) for a, b in zip(ref["grads"], fused["grads"])]
    )
    return {
        "max_abs_diff_vs_reference": diff,
        "gumbel_index_equal": bool(torch.equal(ref["index"], fused["index"])),
        "reference_ms": round(ref["ms"], 2),
        "fused_ms": round(fused["ms"], 2),
    }


def _demo(args) -> int:
    from .. import backends

    res = demo(args.seed)
    if args.json:
        print_json(res)
        return 0
    cpp = backends()["cpp"]
    print(f"backend: {'C++ (codesign._C)' if cpp['available'] else 'reference (C++ core missing)'}")
    print(
        "mixed_op (N=16, C=16, 32x32, 5 parametric + identity/avg/max) and gumbel_softmax "
        "(4096x8, hard), forward + backward:"
    )
    print(f"  reference {res['reference_ms']:.1f} ms, fused {res['fused_ms']:.1f} ms")
    print(f"  largest difference from the reference: {res['max_abs_diff_vs_reference']:.2e}")
    print(f"  same Gumbel samples as the reference: {res['gumbel_index_equal']}")
    return 0
