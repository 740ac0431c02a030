"""Fidelity of codesign's accelerator model against ZigZag-DSE and SCALE-Sim (JSON).

The same layers and networks are described to codesign's mapper and to the references (see
``codesign.hw_models.crosscheck`` for how a config becomes ZigZag's hardware YAML and SCALE-Sim's
config), and the benchmark prints:

- zigzag: per accelerator (the shipped ``ws-16x16``, ``os-8x8``, ``eyeriss-like`` by default), every
  MAC layer's cycles, latency, energy and PE utilisation from both sides with their ratios, and
  the Kendall tau between codesign's and ZigZag's network latencies and energies over the network
  set (samples of every search space, ResNet, MobileNet and MBConv stacks);
- scalesim: per systolic config (ws and os), codesign's array cycles beside SCALE-Sim's stall-free
  cycles for a layer subset, with the share of layers within +-20%;
- eyeriss: the dataflow ranking at equal area (codesign's own validation, for the record);
- mapper_throughput: the numba mapper's (layer, config) evaluations per second on one core
  (``benchmarks/hw_models.py``'s measurement, quick settings), beside the plain-Python reference.

References are slow (ZigZag ~5-40 s a layer, SCALE-Sim ~5-60 s on a loaded 2-core machine), so
their per-layer answers are kept in a JSON cache (``--cache``, one file per reference and config,
with the reference's version and settings; a cache of other settings is refused) and a run fills
only what is missing. Needs ``pip install 'codesign[hw-check]'``.

    python benchmarks/hw_fidelity.py [--quick] [--accel ws-16x16 ...] [--reference zigzag scalesim]
        [--cache DIR] [--networks-per-space 14] [--reference-budget-s S] [--shard I/N] [--out results.json]

With ``--reference-budget-s`` the references stop after S seconds and the comparison covers what
the cache holds (networks missing a layer are listed under ``networks_not_run``, never compared);
layers are run network by network, those closest to complete first. ``--shard I/N`` lets N
processes fill one cache at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import hardware, write_json  # noqa: E402
from codesign.hw_models import AcceleratorConfig, evaluate_layers, get_accelerator  # noqa: E402
from codesign.hw_models import crosscheck as cc  # noqa: E402

from codesign.errors import CodesignError  # noqa: E402
from codesign.kernelspec import KernelSpec  # noqa: E402

CACHE_FORMAT = 1
conv = KernelSpec.make


# ---- the network set ----------------------------------------------------------------------------

def _same(c_in, c_out, h, k=3, s=1, g=1):
    return conv("conv2d", (1, c_in, h, h), out_channels=c_out, kernel=k, stride=s, groups=g)


def _basic_stages(layers: list, c: int, h: int, widths, blocks: int) -> int:
    """Append ResNet basic blocks (two 3x3 convolutions; the first block of every stage after the
    first halves the resolution and has a strided 1x1 shortcut); returns the channels at the end."""
    for stage, out in enumerate(widths):
        for b in range(blocks):
            s = 2 if stage > 0 and b == 0 else 1
            layers.append(_same(c, out, h, s=s))
            h = h // s
            layers.append(_same(out, out, h))
            if s == 2:
                layers.append(_same(c, out, h * 2, k=1, s=2))
            c = out
    return c


def resnet_cifar(depth: int, width: int, h: int = 32) -> list[KernelSpec]:
    """He et al.'s CIFAR ResNet (basic blocks, three stages of width, 2x, 4x)."""
    layers = [_same(3, width, h)]
    c = _basic_stages(layers, width, h, [width * 2 ** i for i in range(3)], (depth - 2) // 6)
    layers.append(conv("dense", (1, c), out_features=10))
    return layers


def resnet18(width: int = 64, h: int = 64) -> list[KernelSpec]:
    """ResNet-18's convolutions (7x7 stem, four stages of two basic blocks) at a small input."""
    layers = [_same(3, width, h, k=7, s=2)]
    # stem stride 2 + 3x3 max pool stride 2
    c = _basic_stages(layers, width, h // 4, [width * 2 ** i for i in range(4)], 2)
    layers.append(conv("dense", (1, c), out_features=100))
    return layers


def mobilenet_v1(alpha: float, h: int = 32) -> list[KernelSpec]:
    """MobileNet v1: a 3x3 stem, then 13 depthwise 3x3 + pointwise 1x1 pairs."""
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    c = max(8, int(32 * alpha))
    layers = [_same(3, c, h, s=1)]
    for out, s in plan:
        out = max(8, int(out * alpha))
        layers.append(_same(c, c, h, s=s, g=c))
        h = (h + s - 1) // s
        layers.append(_same(c, out, h, k=1))
        c = out
    layers.append(conv("dense", (1, c), out_features=10))
    return layers


def mbconv_net(expand: int, kernel: int, alpha: float, h: int = 32) -> list[KernelSpec]:
    """A MobileNet v2 / EfficientNet-style stack of MBConv blocks (1x1 expansion, KxK depthwise,
    1x1 projection) with one expansion and kernel everywhere."""
    plan = [(16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]
    c = max(8, int(32 * alpha))
    layers = [_same(3, c, h)]
    for out, n, s0 in plan:
        out = max(8, int(out * alpha))
        for i in range(n):
            s = s0 if i == 0 else 1
            mid = c * expand
            layers.append(_same(c, mid, h, k=1))
            layers.append(_same(mid, mid, h, k=kernel, s=s, g=mid))
            h = (h + s - 1) // s
            layers.append(_same(mid, out, h, k=1))
            c = out
    head = max(64, int(1280 * alpha))
    layers.append(_same(c, head, h, k=1))
    layers.append(conv("dense", (1, head), out_features=10))
    return layers


def stacks() -> dict[str, list[KernelSpec]]:
    """Hand-written ResNet, MobileNet and MBConv networks (depthwise and pointwise layers)."""
    nets = {}
    for depth, width in ((20, 16), (32, 16), (56, 16), (20, 32), (20, 64)):
        nets[f"resnet{depth}-w{width}"] = resnet_cifar(depth, width)
    for width in (32, 64):
        nets[f"resnet18-w{width}-64px"] = resnet18(width)
    for alpha in (0.25, 0.5, 0.75, 1.0):
        nets[f"mobilenet_v1-{alpha:g}"] = mobilenet_v1(alpha)
    for e, k, a in ((6, 3, 0.5), (3, 5, 0.5), (6, 5, 0.35), (4, 3, 0.75), (6, 3, 1.0)):
        nets[f"mbconv-e{e}k{k}-{a:g}"] = mbconv_net(e, k, a)
    return nets


def space_samples(per_space: int, seed: int) -> dict[str, list[KernelSpec]]:
    """``per_space`` random genotypes of every shipped search space, as their MAC layers."""
    import warnings

    from codesign.hw_models import network_kernels

    from codesign.spaces import create_space, list_spaces

    nets = {}
    for name in list_spaces():
        space = create_space(name)
        rng = random.Random(seed)
        shape = tuple(getattr(space, "input_shape", (1, 3, 32, 32)))
        seen = set()
        while len([n for n in nets if n.startswith(name + ":")]) < per_space:
            genotype = space.sample(rng)
            if genotype in seen:
                continue
            seen.add(genotype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kernels = network_kernels(space.build(genotype), input_shape=shape)
            nets[f"{name}:{genotype}"] = kernels
    return nets


def network_set(per_space: int, seed: int) -> dict[str, list[KernelSpec]]:
    """Every network compared, by name, as its conv2d and dense layers (what both sides describe)."""
    nets = {**space_samples(per_space, seed), **stacks()}
    return {name: [s for s in ks if s.op in ("conv2d", "dense")] for name, ks in nets.items()}


def unique_layers(nets: dict) -> list[KernelSpec]:
    """One layer per distinct loop nest over all networks (first seen)."""
    by_loops: dict[str, KernelSpec] = {}
    for ks in nets.values():
        for s in ks:
            by_loops.setdefault(cc.loop_key(s), s)
    return list(by_loops.values())


# ---- reference cache ---------------------------------------------------------------------------

class ReferenceCache:
    """Per-layer answers of one reference on one config, in a JSON file (format version, the
    reference's version and settings, and the config, all checked on load)."""

    def __init__(self, directory: Path, reference: str, cfg, settings: dict):
        pkg = {"zigzag": "zigzag-dse", "scalesim": "scalesim"}[reference]
        self.header = {"format_version": CACHE_FORMAT, "reference": reference, "reference_version": version(pkg),
                       "description_version": cc.DESCRIPTION_VERSION, "settings": settings,
                       "accelerator": cfg.to_yaml_dict()}
        digest = hashlib.sha1(json.dumps(self.header, sort_keys=True).encode()).hexdigest()[:12]
        self.path = Path(directory) / f"{reference}-{cfg.name}-{digest}.json"
        self.layers: dict[str, dict] = self._on_disk()

    def _on_disk(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise CodesignError(f"{self.path} is not a reference cache (invalid JSON: {exc})") from exc
        if not isinstance(data, dict) or data.get("header") != json.loads(json.dumps(self.header)):
            raise CodesignError(f"{self.path} holds another reference, version or setting; remove it")
        return data["layers"]

    def save(self) -> None:
        """Write the cache, keeping answers another process (``--shard``) saved meanwhile."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.layers = {**self._on_disk(), **self.layers}
        write_json(self.path, {"header": self.header, "layers": self.layers})

    def fill(self, nets: dict, run, log, deadline: float = float("inf"), shard: tuple = (0, 1)) -> None:
        """Run the reference on every layer of ``nets`` not yet cached, saving after each one
        (resumable). Networks missing the fewest layers come first, so that a run stopped at
        ``deadline`` (a ``time.monotonic()`` instant) leaves as many whole networks as it can."""
        missing = {}
        for ks in sorted(nets.values(), key=lambda ks: len({cc.loop_key(s) for s in ks} - set(self.layers))):
            for s in ks:
                if cc.loop_key(s) not in self.layers:
                    missing.setdefault(cc.loop_key(s), s)
        # shard i of n takes every n-th missing layer: n processes can fill one cache together
        missing = dict(list(missing.items())[shard[0]::shard[1]])
        for i, (key, spec) in enumerate(missing.items()):
            if time.monotonic() >= deadline:
                log(f"{self.path.name}: reference budget spent, {len(missing) - i} layers left uncached")
                return
            if shard[1] > 1 and key in self._on_disk():  # another shard got there first
                continue
            t0 = time.perf_counter()
            self.layers[key] = {**run([spec])[0], "wall_s": time.perf_counter() - t0}
            self.save()
            log(f"{self.path.name}: {i + 1}/{len(missing)} {key} {time.perf_counter() - t0:.1f} s")

    def __getitem__(self, spec: KernelSpec) -> dict:
        return self.layers[cc.loop_key(spec)]

    def __contains__(self, spec: KernelSpec) -> bool:
        return cc.loop_key(spec) in self.layers


# ---- comparisons -------------------------------------------------------------------------------

def kendall_tau(a, b) -> float:
    """Kendall's tau-b between two equally long sequences."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def _ratios(ours, theirs) -> dict:
    r = np.asarray(ours, dtype=float) / np.asarray(theirs, dtype=float)
    within = np.abs(r - 1.0) <= 0.2
    return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max()),
            "geomean": float(np.exp(np.log(r).mean())), "within_20pct": float(within.mean()), "n": int(r.size)}


def _without_fill_ms(result, cfg) -> float:
    """A layer's latency without the systolic arrays' per-fold fill and drain (a diagnostic: SCALE-Sim
    charges them, ZigZag does not)."""
    m = result.mapping
    if not result.feasible:
        return float("inf")
    return max(m["compute_cycles"] - m["fill_cycles"], m["dram_cycles"]) / (cfg.clock_mhz * 1e3)


def _diagnose(rows, ours, cache, cfg) -> dict:
    """Why layers land outside +-20% of ZigZag's cycles: counts of the known causes.

    - ``zigzag_below_its_dram_bound``: ZigZag's cycles are fewer than its own DRAM traffic (its DRAM
      energy / the energy per word) needs through the link: its stall model overlaps more than the
      link carries, where codesign's cycles are at least that bound;
    - ``within_20pct_without_fill``: codesign's cycles without the per-fold systolic fill and drain
      (which SCALE-Sim simulates and ZigZag does not charge) are within 20% of ZigZag's;
    - ``zigzag_edges_over_20pct``: ZigZag's first load, last store and stalls are over a fifth of its
      cycles (the double-buffered stream codesign assumes hides them).
    """
    wpc = cc.dram_link_bits(cfg) / cfg.word_bits
    out = {"codesign_slower": {"layers": 0, "zigzag_below_its_dram_bound": 0, "within_20pct_without_fill": 0},
           "codesign_faster": {"layers": 0, "zigzag_edges_over_20pct": 0}, "zigzag_below_its_dram_bound": 0}
    for row in rows:
        spec = KernelSpec.from_key(row["kernel_key"])
        a, z = ours[cc.loop_key(spec)], cache[spec]
        words = sum(v[-1] for v in z["energy_by_operand_pj"].values()) / cfg.energy["dram_read_pj"]
        below = z["cycles"] < 0.99 * words / wpc
        out["zigzag_below_its_dram_bound"] += int(below)
        r = a.cycles / z["cycles"]
        if r > 1.2:
            s = out["codesign_slower"]
            s["layers"] += 1
            s["zigzag_below_its_dram_bound"] += int(below)
            no_fill = _without_fill_ms(a, cfg) * cfg.clock_mhz * 1e3
            s["within_20pct_without_fill"] += int(no_fill <= 1.2 * z["cycles"])
        elif r < 0.8:
            f = out["codesign_faster"]
            f["layers"] += 1
            f["zigzag_edges_over_20pct"] += int(z["onload_cycles"] + z["offload_cycles"] + z["stall_cycles"]
                                                > 0.2 * z["cycles"])
    return out


def compare_zigzag(nets: dict, accel: str, cache_dir: Path, settings: dict, log, deadline=float("inf"),
                   shard=(0, 1)) -> dict:
    cfg = cc.comparable_config(get_accelerator(accel), "zigzag")
    cache = ReferenceCache(cache_dir, "zigzag", cfg, settings)
    cache.fill(nets, lambda specs: cc.run_zigzag(specs, cfg, **settings), log, deadline, shard)
    all_unique = unique_layers(nets)
    unique = [s for s in all_unique if s in cache]
    ours = dict(zip(map(cc.loop_key, unique), evaluate_layers(unique, cfg)))
    layers = []
    for s in unique:
        a, b = ours[cc.loop_key(s)], cache[s]
        layers.append({"kernel_key": s.key(), "macs": a.macs,
                       "codesign": {"cycles": a.cycles, "latency_ms": a.latency_ms, "energy_mj": a.energy_mj,
                                    "pe_utilization": a.pe_utilization},
                       "zigzag": {k: b.get(k) for k in ("feasible", "cycles", "latency_ms", "energy_mj",
                                                        "pe_utilization", "spatial_mapping")}})
    ok = [row for row in layers if row["zigzag"]["feasible"] and np.isfinite(row["codesign"]["cycles"])]
    per_net = {}
    not_run, infeasible = [], []
    for name, ks in nets.items():
        if not all(s in cache for s in ks):
            not_run.append(name)
            continue
        rows = [cache[s] for s in ks]
        if not all(r["feasible"] for r in rows):
            infeasible.append(name)
            continue
        per_net[name] = {"codesign_latency_ms": sum(ours[cc.loop_key(s)].latency_ms for s in ks),
                         "codesign_latency_without_fill_ms": sum(_without_fill_ms(ours[cc.loop_key(s)], cfg) for s in ks),
                         "zigzag_latency_ms": sum(r["latency_ms"] for r in rows),
                         "codesign_energy_mj": sum(ours[cc.loop_key(s)].energy_mj for s in ks),
                         "zigzag_energy_mj": sum(r["energy_mj"] for r in rows), "layers": len(ks)}
    names = list(per_net)
    col = {k: [per_net[n][k] for n in names] for k in next(iter(per_net.values()))} if per_net else {}
    return {
        "accelerator": cfg.to_dict(), "settings": settings, "layers_compared": len(ok),
        "disagreements": _diagnose(ok, ours, cache, cfg),
        "layers_infeasible_in_zigzag": len(layers) - len(ok), "layers_not_run": len(all_unique) - len(unique),
        "networks_not_run": not_run, "networks_infeasible_in_zigzag": infeasible,
        "layer_cycles_ratio": _ratios([r["codesign"]["cycles"] for r in ok], [r["zigzag"]["cycles"] for r in ok]),
        "layer_energy_ratio": _ratios([r["codesign"]["energy_mj"] for r in ok], [r["zigzag"]["energy_mj"] for r in ok]),
        "layer_tau_cycles": kendall_tau([r["codesign"]["cycles"] for r in ok], [r["zigzag"]["cycles"] for r in ok]),
        "layer_tau_energy": kendall_tau([r["codesign"]["energy_mj"] for r in ok], [r["zigzag"]["energy_mj"] for r in ok]),
        "networks": len(names),
        "network_tau_latency": kendall_tau(col["codesign_latency_ms"], col["zigzag_latency_ms"]) if names else None,
        "network_tau_energy": kendall_tau(col["codesign_energy_mj"], col["zigzag_energy_mj"]) if names else None,
        # diagnostic: the same without the systolic fill and drain per fold, which ZigZag does not charge
        "network_tau_latency_without_fill": kendall_tau(col["codesign_latency_without_fill_ms"],
                                                        col["zigzag_latency_ms"]) if names else None,
        "network_latency_ratio": _ratios(col["codesign_latency_ms"], col["zigzag_latency_ms"]) if names else None,
        "network_energy_ratio": _ratios(col["codesign_energy_mj"], col["zigzag_energy_mj"]) if names else None,
        "per_network": per_net, "per_layer": layers,
    }


def scalesim_layers(nets: dict, limit: int, seed: int) -> list[KernelSpec]:
    """A layer subset for SCALE-Sim: every kind (dense, pointwise, depthwise, strided, first
    layers), chosen at random among the networks' layers with at most ``limit`` of them."""
    unique = sorted(unique_layers(nets), key=cc.loop_key)
    rng = random.Random(seed)
    rng.shuffle(unique)
    return unique[:limit]


def scalesim_configs() -> dict:
    """SCALE-Sim's own systolic configs (its repository's configs/scale.cfg, 32x32 with 64 kB for
    each of ifmap, filter and ofmap SRAM; configs/eyeriss.cfg, 12x14 with 36 kB each) as codesign
    configs: the same systolic array, the same SRAM in words (SCALE-Sim counts one element a byte), a
    PE holding one weight or one accumulator (3 register words: the operand passing through, the
    operand kept, the partial sum). Clock and DRAM do not matter here: SCALE-Sim runs stall-free."""
    def make(name, rows, cols, sram_kb, dataflow):
        return AcceleratorConfig(name=name, pe_rows=rows, pe_cols=cols, rf_words=3,
                                 glb_kib=3 * sram_kb * 2.0, dram_bandwidth_gbs=20.0, clock_mhz=1000.0,
                                 dataflow=dataflow, interconnect="systolic", description="SCALE-Sim's " + name)
    return {c.name: c for c in (make("scalesim-32x32-ws", 32, 32, 64, "ws"), make("scalesim-32x32-os", 32, 32, 64, "os"),
                                make("scalesim-eyeriss-12x14-ws", 12, 14, 36, "ws"))}


def compare_scalesim(specs, accel, cache_dir: Path, log, deadline=float("inf"), shard=(0, 1)) -> dict:
    cfg = scalesim_configs().get(accel) or get_accelerator(accel)
    settings = {"stalls": False}
    cache = ReferenceCache(cache_dir, "scalesim", cfg, settings)
    cache.fill({s.key(): [s] for s in specs}, lambda s: cc.run_scalesim(s, cfg, **settings), log, deadline, shard)
    n_asked = len(specs)
    specs = [s for s in specs if s in cache]
    ours = dict(zip(specs, evaluate_layers(specs, cfg)))
    rows = []
    for s in specs:
        a, b = ours[s], cache[s]
        compute = a.mapping["compute_cycles"]  # the array's own cycles: SCALE-Sim runs stall-free here
        rows.append({"kernel_key": s.key(), "codesign_cycles": compute, "scalesim_cycles": b["cycles"],
                     "ratio": compute / b["cycles"], "codesign_pe_utilization": a.macs / (compute * cfg.pes),
                     "scalesim_pe_utilization": b["pe_utilization"]})
    return {"accelerator": cfg.to_dict(), "settings": settings, "layers_not_run": n_asked - len(specs),
            "cycles_ratio": _ratios([r["codesign_cycles"] for r in rows], [r["scalesim_cycles"] for r in rows]),
            "per_layer": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", nargs="+", default=list(cc.REFERENCES), choices=cc.REFERENCES)
    ap.add_argument("--accel", nargs="+", default=["ws-16x16", "os-8x8", "eyeriss-like"],
                    help="accelerators for ZigZag (SCALE-Sim takes the ws and os ones)")
    ap.add_argument("--networks-per-space", type=int, default=14)
    ap.add_argument("--scalesim-layers", type=int, default=40)
    ap.add_argument("--scalesim-accel", nargs="+", default=[*scalesim_configs(), "ws-16x16"],
                    help="systolic configs for SCALE-Sim: its own (scalesim-*) or codesign's ws/os ones")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="3 networks per space, stacks, 10 SCALE-Sim layers")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/codesign/hw_fidelity"))
    ap.add_argument("--lpf-limit", type=int, default=3, help="ZigZag LOMA loop prime factor limit")
    ap.add_argument("--list", action="store_true", help="only count networks and unique layers")
    ap.add_argument("--no-throughput", action="store_true", help="skip timing the numba mapper")
    ap.add_argument("--shard", default="0/1", help="I/N: run only every N-th missing reference layer, "
                    "from the I-th; N processes with 0/N .. N-1/N fill one cache together")
    ap.add_argument("--reference-budget-s", type=float, default=float("inf"),
                    help="stop running the references after this many seconds (all of them together) and "
                         "compare what the cache holds: networks not fully run are listed, not compared")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.quick:
        args.networks_per_space, args.scalesim_layers = 3, 10
    try:
        shard = tuple(int(x) for x in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        raise SystemExit(f"--shard: expected I/N with 0 <= I < N, got {args.shard!r}") from None
    for ref in args.reference:
        cc.require(ref)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    nets = network_set(args.networks_per_space, args.seed)
    unique = unique_layers(nets)
    out = {"hardware": hardware(), "load_average": os.getloadavg(), "networks": len(nets),
           "unique_mac_layers": len(unique),
           "network_names": list(nets)}
    if args.list:
        print(json.dumps(out, indent=2))
        return
    cache_dir = Path(args.cache)
    deadline = time.monotonic() + args.reference_budget_s
    if "zigzag" in args.reference:
        settings = {"lpf_limit": args.lpf_limit}
        out["zigzag"] = {a: compare_zigzag(nets, a, cache_dir, settings, log, deadline, shard) for a in args.accel}
    if "scalesim" in args.reference:
        subset = scalesim_layers(nets, args.scalesim_layers, args.seed)
        out["scalesim"] = {a: compare_scalesim(subset, a, cache_dir, log, deadline, shard) for a in args.scalesim_accel}
    if not args.no_throughput:
        # the numba mapper after the model changes (benchmarks/hw_models.py's measurement, quick settings)
        import importlib.util

        spec = importlib.util.spec_from_file_location("hw_models_bench", Path(__file__).with_name("hw_models.py"))
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        out["mapper_throughput"] = {**bench.bench_throughput(quick=True), "load_average": os.getloadavg()}
    from codesign.hw_models.validation import dataflow_comparison

    cmp_ = dataflow_comparison()
    out["eyeriss"] = {"ranking": cmp_["ranking"], "energy_ratio_to_rs": cmp_["ratio_to_rs"],
                      "published_rs_advantage_range": cmp_["published_rs_advantage_range"]}
    out["wall_s"] = time.perf_counter() - t0
    out["load_average_end"] = os.getloadavg()
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
