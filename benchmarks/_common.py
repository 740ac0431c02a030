"""Helpers shared by codesign's benchmarks: hardware description and robust timing."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path


def hardware() -> dict:
    """The machine a benchmark ran on: CPU model, cores, threads, library versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def time_ms(fn, repeats: int = 15, warmup: int = 3) -> dict:
    """Median and quartiles of fn()'s wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(samples, n=4)
    return {"median_ms": statistics.median(samples), "q1_ms": q[0], "q3_ms": q[2], "repeats": repeats}


def saved_storages(fn) -> tuple[object, dict[int, int]]:
    """fn()'s result and the distinct storages autograd keeps for backward while it runs
    ({data pointer: bytes}, counted by a saved-tensor hook around it)."""
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, seen


def mixed_op_bytes(map_bytes: int, parametric: int) -> int:
    """Bytes a fused mixed op must move, forward + backward, for maps of ``map_bytes`` each:
    forward reads x and every y and writes out; backward reads grad, x and every y and writes
    grad_x and every grad_y."""
    return map_bytes * ((1 + parametric + 1) + (1 + 1 + parametric + 1 + parametric))


def gumbel_bytes(logits_bytes: int, rows: int) -> int:
    """Bytes a fused Gumbel-softmax must move, forward + backward: forward reads the logits and
    writes y and the int64 index; backward reads grad and logits and writes their gradient."""
    return 2 * logits_bytes + rows * 8 + 3 * logits_bytes


def run_or_resume(cfg, run_dir) -> dict:
    """A search run's results: read when finished, resumed when started, else run (quietly)."""
    import json
    from pathlib import Path

    from codesign.pipeline import run_search

    run_dir = Path(run_dir)
    if (run_dir / "results.json").exists():
        return json.loads((run_dir / "results.json").read_text())
    if (run_dir / "config.json").exists():
        return run_search(run_dir=run_dir, resume=True, quiet=True)
    return run_search(cfg, run_dir=run_dir, quiet=True)


def write_json(path: Path, obj, indent: int | None = None) -> None:
    """Write ``obj`` as JSON through a temporary file of this process, then rename it over ``path``:
    benchmark stages run in several processes share their caches, and a reader must never see a
    half-written file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=indent))
    tmp.replace(path)
