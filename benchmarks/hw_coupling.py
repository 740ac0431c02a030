"""How much the best accelerator of a hardware space depends on the network (JSON).

Co-search can beat the hardware team's sequential flow (network first, then the best config for it
by exhaustive sweep) only where the best config differs between networks, or where the network
itself can be chosen for its EDP. This benchmark measures the first: for random networks of each
search space, the config of lowest EDP under each area budget, how many distinct configs win, and
what one shared config (the most frequent winner) costs each network against its own best:

    python benchmarks/hw_coupling.py [--spaces nb201 mobilenet] [--networks 100] [--hw-space eyeriss-sweep]

A median loss near 1.00 means the best hardware is the same for (almost) every network of the space:
whichever network is found, an exhaustive sweep after it lands on the same accelerator as a joint
search would. Only the accelerator model runs (no training, no TVM); about a minute per space.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import hardware  # noqa: E402

from codesign.costs.accelerator import HardwareSpaceSource  # noqa: E402
from codesign.spaces import create_space  # noqa: E402

AREAS_MM2 = (3.0, 4.0, 5.0, 6.0, 8.0, 10.0, None)


def coupling(space_name: str, source: HardwareSpaceSource, n: int, seed: int) -> dict:
    space = create_space(space_name)
    rng = random.Random(seed)
    edp = []
    for _ in range(n):
        cost = source.network_cost(space.network_kernels(space.sample(rng)))
        edp.append(np.where(cost["feasible"], cost["latency_ms"] * cost["energy_mj"], np.inf))
    edp = np.stack(edp)  # [networks, configs]
    area = source.axis.area_mm2
    rows = []
    for limit in AREAS_MM2:
        ok = area <= (np.inf if limit is None else limit)
        if not ok.any():
            continue
        e = np.where(ok[None], edp, np.inf)
        best = e.argmin(axis=1)
        counts = collections.Counter(best.tolist())
        shared = counts.most_common(1)[0][0]
        loss = e[:, shared] / e[np.arange(len(e)), best]
        rows.append({
            "area_mm2_max": limit, "configs": int(ok.sum()), "distinct_best_configs": len(counts),
            "shared_config": source.axis.params(source.axis.choices_of(shared)),
            "networks_whose_best_is_shared": counts[shared],
            "edp_shared_over_own_best": {"median": float(np.median(loss)), "p90": float(np.quantile(loss, 0.9)),
                                         "max": float(loss.max())},
        })
    return {"space": space_name, "networks": n, "areas": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spaces", nargs="+", default=["nb201", "mobilenet"])
    ap.add_argument("--networks", type=int, default=100)
    ap.add_argument("--hw-space", default="eyeriss-sweep")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    source = HardwareSpaceSource(args.hw_space)
    out = {"benchmark": "hw_coupling", "hardware": hardware(), "hw_space": args.hw_space,
           "hw_configs": len(source.configs), "spaces": [coupling(s, source, args.networks, args.seed)
                                                         for s in args.spaces]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
