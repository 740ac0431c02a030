"""Benchmark and validation of the analytical accelerator model (codesign.hw_models).

Prints JSON:

- throughput: (layer, config) evaluations per second of the numba batch evaluator (serial and
  parallel) against the plain-Python reference of the same code, measured in the same run (ratio),
  plus expected-cost queries per second of a HardwareCostTable (what a search step calls);
- eyeriss: AlexNet CONV1-5 against the Eyeriss papers (dataflow ranking and energy ratios at equal
  area, ISCA 2016; frame rate, DRAM accesses per MAC, power of the chip, JSSC 2017);
- roofline: every measured kernel of a profile database against its device's roofline bound
  (``--db``, made with ``codesign profile --grid conv2d --grid-samples 40 --db /tmp/hw_prof.sqlite``).

    python benchmarks/hw_models.py [--quick] [--db /tmp/hw_prof.sqlite] [--device cpu-local]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import hardware  # noqa: E402
from codesign.hw_models import HardwareCostTable, HardwareSpace, mapper  # noqa: E402
from codesign.hw_models.accelerator import AcceleratorConfig  # noqa: E402

from codesign.kernelspec import KernelSpec  # noqa: E402


def workload(seed: int, n_layers: int, n_configs: int):
    """A mix of the layers searched networks use (dense, depthwise, pointwise, strided convs, dense
    layers, pools) and random accelerator configs over the template's parameters."""
    rng = np.random.default_rng(seed)
    specs = []
    while len(specs) < n_layers:
        c = int(rng.choice([16, 24, 32, 64, 96, 128, 256]))
        h = int(rng.choice([7, 14, 28, 56]))
        kind = rng.integers(0, 5)
        if kind == 0:
            specs.append(KernelSpec.make("conv2d", (1, c, h, h), out_channels=int(rng.choice([16, 32, 64, 128])),
                                         kernel=int(rng.choice([3, 5])), stride=int(rng.choice([1, 2]))))
        elif kind == 1:
            specs.append(KernelSpec.make("conv2d", (1, c, h, h), out_channels=c, kernel=int(rng.choice([3, 5, 7])),
                                         groups=c, stride=int(rng.choice([1, 2]))))
        elif kind == 2:
            specs.append(KernelSpec.make("conv2d", (1, c, h, h), out_channels=int(rng.choice([16, 64, 256])), kernel=1))
        elif kind == 3:
            specs.append(KernelSpec.make("dense", (1, c * 4), out_features=int(rng.choice([10, 100, 1000]))))
        else:
            specs.append(KernelSpec.make("max_pool2d", (1, c, h, h), kernel=3, stride=2, padding=1))
    cfgs = [AcceleratorConfig(name=f"c{i}", pe_rows=int(rng.choice([4, 8, 12, 16, 32])),
                              pe_cols=int(rng.choice([4, 8, 14, 16, 32])),
                              rf_words=int(rng.choice([16, 64, 128, 260, 512])),
                              glb_kib=float(rng.choice([32, 64, 108, 256, 512])),
                              dram_bandwidth_gbs=float(rng.choice([1, 4, 16])), clock_mhz=float(rng.choice([200, 500, 1000])),
                              dataflow=str(rng.choice(["ws", "os", "rs"])))
            for i in range(n_configs)]
    return specs, cfgs


def rate(fn, pairs: int, repeats: int) -> dict:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return {"evals_per_s_median": pairs / statistics.median(samples), "evals_per_s_best": pairs / min(samples),
            "pairs": pairs, "repeats": repeats}


def bench_throughput(quick: bool) -> dict:
    specs, cfgs = workload(0, 40 if quick else 100, 100 if quick else 500)
    layers, configs = mapper.encode_layers(specs), mapper.encode_configs(cfgs)
    pairs = len(specs) * len(cfgs)
    t0 = time.perf_counter()
    mapper.evaluate_rows(layers[:1], configs[:1])
    first_call_s = time.perf_counter() - t0  # compile, or load from numba's on-disk cache
    mapper.evaluate_rows(layers[:1], configs[:1], parallel=True)
    repeats = 3 if quick else 7
    serial = rate(lambda: mapper.evaluate_rows(layers, configs), pairs, repeats)
    parallel = rate(lambda: mapper.evaluate_rows(layers, configs, parallel=True), pairs, repeats)
    # the reference is ~1000x slower: time it on a slice of the same pairs
    n_py = 200 if quick else 600
    li = np.arange(n_py) % len(specs)
    ci = (np.arange(n_py) * 7) % len(cfgs)
    python = rate(lambda: mapper.evaluate_rows(layers, configs, li, ci, jit=False), n_py, 1 if quick else 3)
    same = np.allclose(mapper.evaluate_rows(layers, configs, li, ci, jit=False),
                       mapper.evaluate_rows(layers, configs, li, ci), rtol=1e-12)
    feasible = float(mapper.evaluate_rows(layers, configs)[:, mapper.R["feasible"]].mean())
    return {
        "numba_serial": serial, "numba_parallel": parallel, "python_reference": python,
        "speedup_serial_vs_python": serial["evals_per_s_median"] / python["evals_per_s_median"],
        "target_evals_per_s": 100_000,
        "meets_target": max(serial["evals_per_s_median"], parallel["evals_per_s_median"]) >= 100_000,
        "first_call_s": first_call_s, "numba_equals_python": bool(same), "feasible_share": feasible,
        "layers": len(specs), "configs": len(cfgs),
    }


def bench_expected(quick: bool) -> dict:
    import torch

    specs, _ = workload(1, 20, 1)
    space = HardwareSpace("eyeriss-like", {"pe_rows": [8, 12, 16], "pe_cols": [8, 14, 16], "rf_words": [64, 260],
                                           "glb_kib": [54, 108, 216], "dataflow": ["ws", "os", "rs"]})
    t0 = time.perf_counter()
    table = HardwareCostTable(specs, space)
    build_s = time.perf_counter() - t0
    # tiny tensors: one thread (two threads spin against each other on a shared 2-core machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    logits = [torch.randn(8, k, requires_grad=True) for k in space.sizes]  # 8 Gumbel samples per step

    def step():
        probs = [torch.nn.functional.gumbel_softmax(x, tau=1.0, hard=True) for x in logits]
        out = table.expected(probs)
        (out["latency_ms"].sum() + out["energy_mj"].sum()).backward()

    step()
    n = 50 if quick else 200
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    per_step_ms = (time.perf_counter() - t0) / n * 1e3
    torch.set_num_threads(threads)
    return {"layers": len(specs), "configs": space.n_configs, "table_build_s": build_s,
            "table_pairs_per_s": len(specs) * space.n_configs / build_s,
            "expected_cost_step_ms": per_step_ms, "samples_per_step": 8,
            "step": "Gumbel-sample every parameter, expected latency + energy, backward (1 torch thread)"}


def validation() -> dict:
    from codesign.hw_models.validation import dataflow_comparison, eyeriss_chip

    cmp_ = dataflow_comparison()
    chip = eyeriss_chip()
    return {
        "dataflow_ranking": cmp_["ranking"],
        "energy_ratio_to_rs": cmp_["ratio_to_rs"],
        "published_rs_advantage_range": cmp_["published_rs_advantage_range"],
        "energy_per_mac_x_mac": {d: v["energy_per_mac_x_mac"] for d, v in cmp_["dataflows"].items()},
        "energy_share": {d: v["share"] for d, v in cmp_["dataflows"].items()},
        "chip": {k: v for k, v in chip.items() if k != "per_layer"},
        "chip_per_layer": chip["per_layer"],
    }


def roofline(db: str | None, device: str) -> dict | None:
    if not db or not os.path.exists(db):
        return None
    from codesign.profile.rooflines import check_profile_db

    out = check_profile_db(db, device)
    for s in out["schedules"].values():
        s["violations"] = len(s["violations"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer pairs and repeats")
    ap.add_argument("--db", default="/tmp/hw_prof.sqlite", help="profile database for the roofline check")
    ap.add_argument("--device", default="cpu-local", help="device of the roofline check")
    args = ap.parse_args()
    out = {"hardware": hardware(), "throughput": bench_throughput(args.quick),
           "expected_cost": bench_expected(args.quick), "eyeriss": validation(),
           "roofline": roofline(args.db, args.device)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
