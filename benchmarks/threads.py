"""How torch's OpenMP threads behave when the CPU is shared (JSON).

This benchmark times supernet training steps (forward, backward, SGD) of the default search (nb201
on 8x8 digits-sized inputs, batch 64) and of a CIFAR-sized one (nb201 c=16 on 32x32) in child
processes under three thread settings:

- ``default``: torch's own (every core, libgomp's default wait policy: spin, then sleep);
- ``passive``: every core, ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep);
- ``one_thread``: ``OMP_NUM_THREADS=1``;

first on the machine as it is, then with ``--busy N`` busy-looping processes beside them (another
job sharing the cores). Settings alternate over ``--rounds`` rounds; the fastest round of each is
reported, with ratios to ``default`` measured in the same run.

    python benchmarks/threads.py [--steps 20] [--rounds 2] [--busy 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import hardware  # noqa: E402

SETTINGS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one_thread": {"OMP_NUM_THREADS": "1"},
}
WORKLOADS = {
    "default_search": {"input_shape": (1, 1, 8, 8), "space_args": {}},
    "cifar_sized": {"input_shape": (1, 3, 32, 32), "space_args": {"c": 16}},
}

CHILD = r"""
import json, sys, time
import torch  # before codesign: the wait policy is the environment's, as the setting names it
import torch.nn.functional as F
from codesign.spaces import create_space
workload, steps = json.loads(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
space = create_space("nb201", input_shape=tuple(workload["input_shape"]), num_classes=10, **workload["space_args"])
net = space.supernet().to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
ws = [torch.softmax(torch.randn(len(d.options)), 0) for d in space.decisions()]
x = torch.randn(64, *workload["input_shape"][1:]).to(memory_format=torch.channels_last)
y = torch.randint(0, 10, (64,))
def step():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(x, ws), y).backward()
    opt.step()
for _ in range(3):
    step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"ms_per_step": (time.perf_counter() - t0) * 1e3 / steps, "threads": torch.get_num_threads()}))
"""


def _busy() -> None:
    while True:
        pass


def run_child(workload: dict, setting: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(SETTINGS[setting])
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(workload), str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(steps: int, rounds: int) -> dict:
    best: dict = {}
    for _ in range(rounds):
        for wname, workload in WORKLOADS.items():
            for setting in SETTINGS:
                r = run_child(workload, setting, steps)
                key = (wname, setting)
                if key not in best or r["ms_per_step"] < best[key]["ms_per_step"]:
                    best[key] = r
    out = {}
    for wname in WORKLOADS:
        base = best[(wname, "default")]["ms_per_step"]
        out[wname] = {s: {**best[(wname, s)], "speedup_vs_default": base / best[(wname, s)]["ms_per_step"]}
                      for s in SETTINGS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--busy", type=int, default=1, help="busy-looping processes for the shared-CPU part")
    args = ap.parse_args()
    result = {"benchmark": "threads", "hardware": hardware(), "steps": args.steps, "rounds": args.rounds,
              "load_average_start": os.getloadavg()}
    result["as_is"] = measure(args.steps, args.rounds)
    busy = [mp.Process(target=_busy, daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    try:
        time.sleep(1)
        result[f"with_{args.busy}_busy_process"] = measure(args.steps, args.rounds)
    finally:
        for p in busy:
            p.terminate()
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
