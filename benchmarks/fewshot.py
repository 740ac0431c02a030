"""Few-shot latency transfer, leave one device out: build a bank of devices, then score methods.

    python benchmarks/fewshot.py build --bank fewshot-bank.sqlite --pool 250 --group fast
    python benchmarks/fewshot.py build --bank fewshot-bank.sqlite --group tvm --tvm-pool 250
    python benchmarks/fewshot.py build --bank fewshot-bank.sqlite --group tvm --tvm-schedule tuned --tvm-pool 250
    python benchmarks/fewshot.py build --bank fewshot-bank.sqlite --group retest --retest-devices ort-1t,tvm-untuned-1t
    python benchmarks/fewshot.py eval --bank fewshot-bank.sqlite > fewshot.json
    python benchmarks/fewshot.py prior --bank fewshot-bank.sqlite --out codesign/predict/data/fewshot-prior.json \
        [--extra-prior OTHER-PRIOR.json --extra-sources ort-1t,torch-1t --extra-prefix xeon-]

``build`` measures (resumably, into the SQLite bank) networks of the mobilenet space in FBNet's
layout at 32x32: the reference set (``codesign calibrate --reference-set``) and a pool of other
random networks, on devices of this machine (onnxruntime at 1 and 2 threads, torch at 1 thread;
``--group tvm``: TVM at 1 thread, untuned or tuned with MetaSchedule into a tuning database beside
the bank, which compiles each network) and on accelerator configs
of the hw_models mapper (``BANK_ACCELS``). ``eval`` holds out each
device in turn, gives each method the device's latencies on the first N reference networks (N = 5,
10, 20), and scores its predictions on the pool networks (Kendall tau, share within ±10%).
Sources for the held-out device are every other bank device plus the mapper's source family,
and with ``--extra-prior`` the source devices of a saved prior (their fitted weights: devices of
another host's bank, whose networks this bank does not hold), as ``prior`` meta-trains the
shipped prior.

Timing: the fastest of ``--repeats`` single runs, taken in ``--passes`` round-robin passes over
every network (a few runs per network and pass), read on the calling thread's CPU clock at 1
thread (onnxruntime, torch and TVM all run a one-thread inference on the caller, so other jobs on
a shared machine do not inflate it) and on the wall clock at 2. Passes spread each network's runs
over minutes, so a slow spell of the host (they last seconds) cannot make one network look slow.
Once every pass is in, each timed device's latency becomes the percentile of its networks' pass
minima (the fastest, p10, p25 or the median) that ranks them most alike between random halves of
the passes (``_choose_statistic``; the row's ``statistic`` and ``statistic_split_tau`` say which).
TVM networks are compiled once into ``BANK.tvm/`` and loaded from there by later passes, a
resumed build and ``--group retest``.

``--group retest`` times the first ``--retest`` pool networks again and ``eval`` scores that
second timing as a prediction of the first. ``eval`` also gives each timed device's
``split_half`` reliability (its statistic of its odd passes against that of its even ones,
and from it the tau a perfect predictor could reach against the whole timing, under normal
noise), and each device's ``own_half_ridge_kendall_tau``: ridge on the same features fitted on a
random half of the device's own networks, scored on the other half, what far more than N rows of
the device would teach.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import hardware  # noqa: E402

RETEST = "retest:"  # a device timed a second time on the same networks (not a device of its own)

# Accelerator devices of the bank: the shipped configs and five more of other sizes/dataflows.
BANK_ACCELS = {
    "accel-eyeriss-like": "eyeriss-like",
    "accel-os-8x8": "os-8x8",
    "accel-ws-16x16": "ws-16x16",
    "accel-ws-32x32-fast": dict(dataflow="ws", rows=32, cols=32, rf=32, glb=1024, bw=16.0, mhz=800),
    "accel-rs-6x8-lowbw": dict(dataflow="rs", rows=6, cols=8, rf=200, glb=64, bw=0.8, mhz=250),
    "accel-os-16x16": dict(dataflow="os", rows=16, cols=16, rf=48, glb=128, bw=3.0, mhz=600),
    "accel-rs-16x16": dict(dataflow="rs", rows=16, cols=16, rf=128, glb=256, bw=8.0, mhz=500),
    "accel-ws-8x8-tiny": dict(dataflow="ws", rows=8, cols=8, rf=8, glb=32, bw=1.0, mhz=200),
}


def _accel_config(name, spec):
    from codesign.hw_models import get_accelerator

    from codesign.predict.fewshot import _accel

    if isinstance(spec, str):
        return get_accelerator(spec)
    return _accel(name, spec["dataflow"], spec["rows"], spec["cols"], spec["rf"], spec["glb"], spec["bw"], spec["mhz"])


def _time_pass(fn, threads, runs):
    """Fastest of ``runs`` single runs of ``fn`` in ms, after one warm-up run. One thread: the
    calling thread's CPU time (onnxruntime, torch and TVM all run a one-thread inference on the
    caller), which other jobs on a loaded machine do not inflate; two threads: wall time."""
    clock = time.thread_time if threads == 1 else time.perf_counter
    fn()
    best = np.inf
    for _ in range(runs):
        t0 = clock()
        fn()
        best = min(best, (clock() - t0) * 1e3)
    return best


def _tvm_compiled(args, proto, genotype, schedule):
    """TVM's compiled network on one thread of this CPU as a callable, and its compile time in s.

    Each network is compiled once into ``BANK.tvm/<schedule>/`` (a shared library beside a JSON
    of its compile time), so the timing passes, a retest and a resumed build load it instead of
    compiling again. The network runs on the calling thread (a one-thread TVM runtime), so
    ``_time_pass`` reads its CPU clock as for onnxruntime and torch; TVM's own timer reads the
    wall clock, which other jobs on a shared machine inflate."""
    import hashlib

    import tvm
    from tvm import relax

    from codesign.profile.devices import get_device
    from codesign.profile.measure import (
        compile_network,
        input_shapes,
        random_inputs,
        relax_module,
    )

    folder = Path(args.bank).with_suffix(".tvm") / schedule
    stem = hashlib.sha256(genotype.encode()).hexdigest()[:16]
    lib_path, info_path = folder / f"{stem}.so", folder / f"{stem}.json"
    mod, proto = relax_module(proto)
    if not (lib_path.exists() and info_path.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        executable, _ = compile_network(mod, get_device("cpu-local").tvm_target(), schedule,
                                        str(Path(args.bank).with_suffix(".tuning")) if schedule == "tuned" else None,
                                        args.tune_trials)
        info = {"format_version": 1, "genotype": genotype, "schedule": schedule,
                "compile_s": round(time.perf_counter() - t0, 2)}
        if schedule == "tuned":
            info["tune_trials"] = args.tune_trials
        tmp = lib_path.with_suffix(".tmp.so")
        executable.export_library(str(tmp))
        os.replace(tmp, lib_path)
        info_path.write_text(json.dumps(info))
    info = json.loads(info_path.read_text())
    if info.get("genotype") != genotype:
        sys.exit(f"benchmarks/fewshot.py: {info_path} holds another network ({info.get('genotype')})")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu(0))
    feeds = random_inputs(proto, 0)
    inputs = [tvm.runtime.tensor(feeds[k], tvm.cpu(0)) for k in input_shapes(proto)]
    main = vm["main"]
    return (lambda: main(*inputs)), {k: v for k, v in info.items() if k in ("compile_s", "tune_trials")}


def _pass_state(bank, device):
    """genotype -> the fastest run of each timing pass stored so far for ``device``; None for a
    row written before timing passes (one block of consecutive runs), which counts as done."""
    out = {}
    for g, settings in bank.conn.execute("SELECT genotype, settings FROM latencies WHERE device = ?", (device,)):
        out[g] = json.loads(settings).get("pass_min_ms")
    return out


def _prepare(args, bank, space, todo, devices, t_start):
    """A runner for every (network, device) still short of ``--passes`` timing passes: ONNX
    sessions and torch modules built, TVM networks compiled (``--max-minutes`` bounds this
    part). Returns a list of dicts (genotype, device, fn, threads, settings, pass minimums so far)."""
    import torch

    from codesign.graph import export_onnx, onnx_kernels

    have_kernels = bank.kernels()
    state = {d: _pass_state(bank, d) for d in devices}
    if any(d.removeprefix(RETEST).startswith("tvm-") for d in devices):
        from codesign.profile.devices import get_device
        from codesign.profile.measure import set_threads

        set_threads(get_device("cpu-local").threads)
    x = torch.randn(*space.input_shape)
    feeds = {"input": x.numpy()}
    runners = []
    for i, g in enumerate(todo):
        need = [d for d in devices if g not in state[d] or
                state[d][g] is not None and len(state[d][g]) < args.passes]
        if not need and g in have_kernels:
            continue
        if time.time() - t_start > args.max_minutes * 60:
            print(f"stopped preparing after {args.max_minutes} min at {i} networks; timing what is ready",
                  file=sys.stderr)
            break
        torch.manual_seed(0)
        net = space.build(g).eval()
        proto = export_onnx(net, space.input_shape)
        if g not in have_kernels:
            bank.set_kernels(g, onnx_kernels(proto))
        for d in need:
            kind, threads = d.removeprefix(RETEST).rsplit("-", 1)
            threads = int(threads[:-1])
            base = {"repeats": args.repeats, "passes": args.passes, "statistic": "min", "threads": threads,
                    "clock": "thread_time" if threads == 1 else "perf_counter"}
            if kind == "ort":
                sess = _ort_session(proto, threads)
                fn = partial(sess.run, None, feeds)
                base["runtime"] = "onnxruntime"
            elif kind == "torch":
                fn = partial(net, x)
                base["runtime"] = f"torch {torch.__version__}"
            else:
                schedule = kind.removeprefix("tvm-")
                fn, info = _tvm_compiled(args, proto, g, schedule)
                base.update(runtime="tvm", schedule=schedule, **info)
            runners.append({"genotype": g, "device": d, "fn": fn, "threads": threads, "settings": base,
                            "mins": list(state[d].get(g) or [])})
        print(f"prepared {i + 1}/{len(todo)} {time.time() - t_start:.0f}s", file=sys.stderr, flush=True)
    return runners


# The summaries of a network's pass minima a timed device's latency may be (percentiles; 0 is the
# fastest pass, 50 the median one), and how many random halvings of the passes choose between them.
STATISTICS = (0, 10, 25, 50)
STATISTIC_SPLITS = 20


def _statistic_name(q: int) -> str:
    return {0: "min", 50: "median"}.get(q, f"p{q}")


def _statistic_q(name: str) -> int:
    named = {"min": 0, "median": 50}
    return named[name] if name in named else int(name.removeprefix("p"))


def _choose_statistic(passes: np.ndarray, seed: int = 0) -> tuple[int, dict[str, float]]:
    """The percentile of each network's pass minima (``passes``: networks x passes) whose
    ranking of the networks agrees best between two random halves of the passes (mean Kendall
    tau over ``STATISTIC_SPLITS`` halvings; ties keep the lower percentile).

    The host's slow spells only ever slow a run down, so the fastest pass is usually the most
    repeatable summary; but a host that also has *fast* spells (a quiet neighbour, a higher
    clock for a minute) lets a network timed in one of them look faster than the rest, and a
    pass's minimum of a 1 ms network then ranks below the noise (measured: tuned TVM's fastest
    passes agreed at tau 0.44 between halves, its median ones at 0.86). No latency or prediction
    is looked at, only the timing's agreement with itself."""
    from scipy.stats import kendalltau

    rng = np.random.default_rng(seed)
    n = passes.shape[1]
    halves = [rng.permutation(n) for _ in range(STATISTIC_SPLITS)]
    score = {}
    for q in STATISTICS:
        taus = [kendalltau(np.percentile(passes[:, h[: n // 2]], q, axis=1),
                           np.percentile(passes[:, h[n // 2:]], q, axis=1))[0] for h in halves]
        score[_statistic_name(q)] = round(float(np.nanmean(taus)), 4)
    best = max(STATISTICS, key=lambda q: (score[_statistic_name(q)], -q))
    return best, score


def _settle(bank, device) -> dict | None:
    """Set ``device``'s latencies to the statistic of their pass minima that ``_choose_statistic``
    picks over all its networks with stored passes (at least 10 networks, 4 passes; else they
    stay the fastest pass). A retest keeps the statistic of the device it times again, so that
    it tests that statistic's reproducibility. Returns the choice, or None."""
    rows = [(g, json.loads(s), std) for g, s, std in
            bank.conn.execute("SELECT genotype, settings, latency_std_ms FROM latencies WHERE device = ?", (device,))]
    rows = [r for r in rows if r[1].get("pass_min_ms")]
    n = min((len(r[1]["pass_min_ms"]) for r in rows), default=0)
    if len(rows) < 10 or n < 4:
        return None
    q, score = _choose_statistic(np.array([r[1]["pass_min_ms"][:n] for r in rows]))
    first = bank.settings(device.removeprefix(RETEST)).get("statistic") if device.startswith(RETEST) else None
    if first:
        q = _statistic_q(first)
    for g, settings, std in rows:
        settings.update(statistic=_statistic_name(q), statistic_split_tau=score)
        bank.add(g, device, float(np.percentile(settings["pass_min_ms"], q)), std, settings, commit=False)
    bank.conn.commit()
    return {"statistic": _statistic_name(q), "split_tau": score}


# Between one device's networks and the next device's, a pass waits SETTLE_S for the previous
# runtime's worker threads to stop spinning, and each pass times a device's networks in its own
# order (a permutation seeded by PASS_ORDER_SEED and the pass). With one fixed order, the first
# network of ort-1t, timed right after torch's two-thread pass in every pass, read 53 % slow in a
# 96-pass bank: its difference from ort-2t was 12 standard deviations out, the largest of 270.
SETTLE_S = 0.3
PASS_ORDER_SEED = 20261203


def _timing_passes(args, bank, runners, t_start):
    """Time every runner in ``--passes`` round-robin passes of ``--repeats / --passes`` runs each
    and keep the fastest run. On a shared host the slow spells come in bursts of seconds; a
    network timed in one block of consecutive runs is slow throughout one, while passes spread
    over minutes each meet a different moment (two block timings of the same 40 networks on
    torch ranked them at Kendall tau 0.16, two of five passes each at 0.82). Whatever a position
    in the pass costs (the moment after another runtime ran) falls on a different network in each
    pass. Each pass is stored, so a killed build resumes at the pass it was in."""
    import torch

    runs = max(1, args.repeats // args.passes)
    by_device = {}
    for r in runners:
        by_device.setdefault(r["device"], []).append(r)
    for p in range(args.passes):
        for device, rs in by_device.items():
            todo = [r for r in rs if len(r["mins"]) <= p]
            if not todo:
                continue
            torch.set_num_threads(todo[0]["threads"])
            time.sleep(SETTLE_S)
            order = np.random.default_rng([PASS_ORDER_SEED, p]).permutation(len(todo))
            with torch.inference_mode():
                for r in (todo[k] for k in order):
                    r["mins"].append(_time_pass(r["fn"], r["threads"], runs))
                    mins = np.array(r["mins"])
                    bank.add(r["genotype"], device, float(mins.min()), float(mins.std()),
                             dict(r["settings"], pass_min_ms=[round(float(m), 5) for m in mins]), commit=False)
            bank.conn.commit()
        print(f"pass {p + 1}/{args.passes} {time.time() - t_start:.0f}s", file=sys.stderr, flush=True)


def _ort_session(proto, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def build(args) -> None:
    from codesign.predict.fewshot import (
        Bank,
        create_reference_space,
        random_genotypes,
        reference_genotypes,
    )

    bad = [d for d in args.fast_devices.split(",") if not re.fullmatch(r"(ort|torch)-[1-9][0-9]*t", d)]
    if bad:
        sys.exit(f"benchmarks/fewshot.py: --fast-devices takes ort-Nt or torch-Nt, got {', '.join(bad)}")
    retest = args.retest_devices.split(",") if args.retest_devices else args.fast_devices.split(",")
    bad = [d for d in retest if not re.fullmatch(r"(ort|torch)-[1-9][0-9]*t|tvm-(untuned|tuned)-1t", d)]
    if bad:
        sys.exit(f"benchmarks/fewshot.py: --retest-devices takes ort-Nt, torch-Nt or tvm-untuned-1t/tvm-tuned-1t, "
                 f"got {', '.join(bad)}")
    if args.passes < 1 or args.repeats < args.passes:
        sys.exit(f"benchmarks/fewshot.py: --passes must be at least 1 and at most --repeats ({args.repeats}), "
                 f"got {args.passes}")
    if any(d.startswith("tvm-tuned") for d in retest) or args.group == "tvm" and args.tvm_schedule == "tuned":
        from codesign.errors import CodesignError
        from codesign.profile.schedules import check_tune_trials

        try:  # before the bank is opened and the first network compiled
            check_tune_trials(args.tune_trials)
        except CodesignError as exc:
            sys.exit(f"benchmarks/fewshot.py: {exc}")
    space = create_reference_space()
    bank = Bank(args.bank)
    refs = reference_genotypes(space)
    bank.add_networks(refs, "reference")
    bank.add_networks(random_genotypes(space, args.pool, seed=1, exclude=set(refs)), "pool")
    refs, pool = bank.networks("reference"), bank.networks("pool")
    if args.group == "tvm":  # slow: enough for N = 10 first, then test networks, then N = 20
        todo = refs[:10] + pool[: args.tvm_pool] + refs[10:]
    elif args.group == "retest":  # the same networks timed again: the measurement's own noise
        todo = pool[: args.retest]
    else:
        todo = refs + pool[: args.pool]
    if args.group == "retest":
        devices = [RETEST + d for d in retest]
    elif args.group == "fast":
        # torch at 2 threads is left out by default: on a loaded 2-core machine its OpenMP
        # barriers wait for preempted threads (150 ms against 5 ms at 1 thread, spread 10x the
        # value); --fast-devices adds it on a quiet one
        devices = args.fast_devices.split(",")
    elif args.group == "tvm":
        devices = [f"tvm-{args.tvm_schedule}-1t"]
    else:
        devices = []
    t_start = time.time()
    if devices:
        runners = _prepare(args, bank, space, todo, devices, t_start)
        _timing_passes(args, bank, runners, t_start)
        for d in devices:
            choice = _settle(bank, d)
            if choice:
                print(f"{d}: latency = {choice['statistic']} of the passes (split-half tau {choice['split_tau']})",
                      file=sys.stderr, flush=True)
    if args.group in ("accel", "fast"):
        from codesign.predict.fewshot import ChainKernels, accel_latencies_ms

        kernels = bank.kernels()
        missing = [g for g in todo if g not in kernels]
        if missing:  # modelled devices need no export: compose the networks' kernels from the options'
            compose = ChainKernels(space)
            for g in missing:
                bank.set_kernels(g, compose(g))
            kernels = bank.kernels()
        nets = [g for g in bank.networks() if g in kernels]
        for name, spec in BANK_ACCELS.items():
            cfg = _accel_config(name, spec)
            lat = accel_latencies_ms([kernels[g] for g in nets], [cfg])[:, 0]
            for g, v in zip(nets, lat):
                bank.add(g, name, float(v), 0.0, {"runtime": "hw_models mapper", "accelerator": cfg.to_dict()})
    bank.close()



def _split_half(states: dict, settings: dict) -> dict:
    """Each timed device's split-half reliability from its stored passes (``{device:
    _pass_state(...)}``): the device's statistic (``settings[device]["statistic"]``, the fastest
    pass by default) of its odd timing passes against that of its even ones over every network
    (Kendall tau, median relative difference). Both halves met the same moments of the host, so
    this is the ceiling a ranking of that device's networks can be scored against, measured
    inside one build."""
    from scipy.stats import kendalltau

    out = {}
    for device, state in sorted(states.items()):
        ps = [p for p in state.values() if p and len(p) >= 2]
        if len(ps) < 5:
            continue
        n = min(len(p) for p in ps)
        a = np.array([p[:n] for p in ps])
        name = settings.get(device, {}).get("statistic", "min")
        q = _statistic_q(name)
        odd, even = np.percentile(a[:, 1::2], q, axis=1), np.percentile(a[:, 0::2], q, axis=1)
        tau = float(kendalltau(odd, even)[0])
        out[device] = {"n": len(a), "passes": n, "statistic": name, "kendall_tau": round(tau, 4),
                       "median_relative_difference": round(float(np.median(np.abs(odd / even - 1))), 4),
                       "attainable_kendall_tau": round(_attainable_tau(tau), 4)}
    return out


def _attainable_tau(split_tau: float) -> float:
    """The Kendall tau a perfect predictor would reach against all passes of a device, from the
    split-half tau: for normal noise tau = 2/pi asin(r); two halves correlate r_half = r_t^2
    with r_t the correlation of one half with the truth, and the full measurement's reliability
    follows by Spearman-Brown, r_full = 2 r_half / (1 + r_half); the truth correlates with it by
    sqrt(r_full). An estimate under those assumptions, not a measurement."""
    r_half = max(np.sin(np.pi * split_tau / 2), 0.0)
    r_full = 2 * r_half / (1 + r_half)
    return float(2 / np.pi * np.arcsin(np.sqrt(r_full)))


def _calibration_base(data, device):
    """The current method's base: a kernel cost model holding an accelerator's per-kernel costs
    (the mapper's, exact for every kernel of the bank); eyeriss-like, or ws-16x16 when that is the
    held-out device."""
    from codesign.predict.fewshot import accel_latencies_ms
    from codesign.predict.models import create_cost_model

    name = "accel-eyeriss-like" if device != "accel-eyeriss-like" else "accel-ws-16x16"
    cfg = _accel_config(name, BANK_ACCELS[name])
    unique = list(dict.fromkeys(s for k in data.kernels for s in k))
    lat = accel_latencies_ms([[s] for s in unique], [cfg])[:, 0]
    records = [{"kernel_key": s.key(), "device": name, "schedule": "model", "latency_ms": float(v)}
               for s, v in zip(unique, lat)]
    return create_cost_model("loglinear").fit(records), name


def _ridge_predict(x_train, y_train, x_test, lam=1.0):
    from codesign.predict.fewshot import _ridge_weights

    mean, scale = x_train.mean(axis=0), x_train.std(axis=0)
    scale[scale < 1e-9] = 1.0
    w = _ridge_weights((x_train - mean) / scale, np.log(y_train), lam)
    z = (x_test - mean) / scale
    return np.exp(np.hstack([np.ones((len(z), 1)), z]) @ w)



def _help_like(sources, n, seed=0, epochs=200):
    """HELP-style predictor (Lee et al. 2021), simplified: an MLP on [network features, device
    embedding], the embedding being the device's log latencies on the first n reference networks
    (centred), trained across the source devices; adapted to a new device by an affine map of its
    output fitted on the n reference rows (HELP fine-tunes with MAML; this keeps the hardware
    embedding and the meta-training across devices, not the second-order inner loop)."""
    import torch

    torch.manual_seed(seed)
    xs, es, ys = [], [], []
    allx = np.vstack([x for x, _, _ in sources.values()])
    mean, scale = allx.mean(axis=0), allx.std(axis=0)
    scale[scale < 1e-9] = 1.0
    for x, y, r in sources.values():
        if r < n:
            continue
        ly = np.log(y)
        emb = ly[:n] - ly[:n].mean()
        xs.append((x - mean) / scale)
        es.append(np.repeat(emb[None], len(x), axis=0))
        ys.append(ly - ly[:n].mean())
    xt = torch.tensor(np.hstack([np.vstack(xs), np.vstack(es)]), dtype=torch.float32)
    yt = torch.tensor(np.concatenate(ys), dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(xt.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.mean((net(xt)[:, 0] - yt) ** 2)
        loss.backward()
        opt.step()

    def predict(x_dev, y_ref, x_test):
        ly = np.log(y_ref)
        emb = ly - ly.mean()
        def run(x):
            inp = np.hstack([(x - mean) / scale, np.repeat(emb[None], len(x), axis=0)])
            with torch.no_grad():
                return net(torch.tensor(inp, dtype=torch.float32))[:, 0].numpy().astype(np.float64)
        p_ref = run(x_dev)
        a = np.vstack([p_ref, np.ones(len(p_ref))]).T
        lam = 1.0  # pull the slope towards 1
        coef = np.linalg.solve(a.T @ a + lam * np.diag([1.0, 0.0]), a.T @ (ly - ly.mean()) + lam * np.array([1.0, 0.0]))
        return np.exp(coef[0] * run(x_test) + coef[1] + ly.mean())

    return predict


def _extra_sources(args) -> dict | None:
    """--extra-prior: devices of a saved prior (--extra-sources of them) as extra meta-training
    sources, named with --extra-prefix."""
    if not getattr(args, "extra_prior", None):
        return None
    from codesign.predict.fewshot import Prior, prior_source_weights

    prior = Prior.load(args.extra_prior)
    names = args.extra_sources.split(",") if args.extra_sources else None
    missing = sorted(set(names or ()) - set(prior.sources))
    if missing:
        raise SystemExit(f"--extra-sources: {', '.join(missing)} not in {args.extra_prior} "
                         f"(its sources: {', '.join(prior.sources)})")
    return {f"{args.extra_prefix}{k}": v for k, v in prior_source_weights(prior, names).items()}


def evaluate(args) -> dict:
    from scipy.stats import kendalltau

    from codesign.predict.calibrate import family_sums, fit_weights
    from codesign.predict.evaluate import accuracy
    from codesign.predict.fewshot import FEATURE_NAMES, Bank, BankData, _share_basis, meta_train

    t0 = time.time()
    with Bank(args.bank, create=False) as bank:
        data = BankData(bank)
        settings = {d: bank.settings(d) for d in data.latency}  # every device of the bank
        split_half = _split_half({d: _pass_state(bank, d) for d in data.latency}, settings)
    shots = [int(n) for n in args.shots.split(",")]
    methods = args.methods.split(",")
    nf = len(FEATURE_NAMES)
    flops_col = FEATURE_NAMES.index("log_flops")
    out = {"hardware": hardware(), "load_average": os.getloadavg(), "bank": str(args.bank),
           "space": data.space, "reference_networks": len(data.reference), "pool_networks": len(data.pool),
           "shots": shots, "methods": methods, "devices": {}}
    retest = {}
    for device in sorted(d for d in data.latency if d.startswith(RETEST)):
        again, first = data.latency[device], data.latency.get(device.removeprefix(RETEST), {})
        both = [g for g in again if g in first]
        if len(both) >= 5:
            retest[device.removeprefix(RETEST)] = {
                k: round(v, 4) for k, v in accuracy([again[g] for g in both], [first[g] for g in both]).items()
                if k in ("n", "kendall_tau", "within_10pct", "median_ape")}
    out["retest"] = retest  # a second timing of the same networks scored as a prediction: the ceiling
    out["split_half"] = split_half
    for d in [d for d in data.latency if d.startswith(RETEST)]:
        del data.latency[d]
    extra = _extra_sources(args)  # read once, for every held-out device
    for device in sorted(data.latency):
        if args.devices and device not in args.devices.split(","):
            continue
        idx, y, r = data.device_rows(device)
        test = np.arange(r, len(y))
        if len(test) < 5 or r < min(shots):
            out["devices"][device] = {"skipped": f"{r} reference and {len(test)} test networks measured"}
            continue
        t_dev = time.time()
        x = data.x[idx]
        res = {"reference_measured": r, "test_networks": int(len(test)), "settings": settings[device], "shots": {}}
        prior = (meta_train(data.sources(exclude=(device,)), data.entries, data.space, extra=extra)
                 if "bayes" in methods else None)
        base = _calibration_base(data, device) if "calibrate" in methods else None
        sums = family_sums(base[0], [data.kernels[i] for i in idx]) if base else None
        for n in shots:
            if n > r:
                continue
            ref = np.arange(n)
            per = {}
            if "flops" in methods:
                f = np.exp(x[:, flops_col])
                scale = np.median(y[ref] / f[ref])
                per["flops"] = accuracy(scale * f[test], y[test])
            if "ridge" in methods:
                per["ridge"] = accuracy(_ridge_predict(x[ref, :nf], y[ref], x[test, :nf]), y[test])
            if "calibrate" in methods:
                w, c = fit_weights(sums[ref], y[ref])
                pred = sums[test, :-1] @ w + c * sums[test, -1]
                per["calibrate"] = accuracy(np.maximum(pred, 1e-9), y[test])
            if "bayes" in methods:
                wpost = prior.adapt(x[ref], y[ref])
                z = prior.z(x[test])
                per["bayes"] = accuracy(np.exp(np.hstack([np.ones((len(z), 1)), z]) @ wpost), y[test])
            if "help" in methods and n == 10:  # meta-trained once per held-out device: N = 10 only
                sources = data.sources(exclude=(device,))
                predict = _help_like(sources, n, seed=args.seed)
                per["help"] = accuracy(predict(x[ref], y[ref], x[test]), y[test])
            if "basis" in methods:  # the single best-ranking basis accelerator, scaled
                j = nf + _share_basis(x[ref], y[ref])
                b = np.exp(x[:, j])
                per["basis"] = accuracy(np.median(y[ref] / b[ref]) * b[test], y[test])
            res["shots"][str(n)] = {m: {"kendall_tau": round(a["kendall_tau"], 4),
                                        "within_10pct": round(a["within_10pct"], 4),
                                        "median_ape": round(a["median_ape"], 4)} for m, a in per.items()}
        # What the device's own data can teach with these features: ridge on the design matrix
        # fitted on a random half of its networks, Kendall tau on the other half.
        half = np.random.default_rng(0).permutation(len(y))
        fit, held = half[: len(y) // 2], half[len(y) // 2:]
        res["own_half_ridge_kendall_tau"] = round(float(
            kendalltau(_ridge_predict(x[fit], y[fit], x[held]), y[held])[0]), 4)
        if base:
            res["calibrate_base"] = base[1]
        if prior is not None:
            res["prior"] = {"noise": prior.noise, "sources": len(prior.sources)}
        res["seconds"] = round(time.time() - t_dev, 1)
        out["devices"][device] = res
        print(f"{device}: {json.dumps(res['shots'].get('10', {}))}", file=sys.stderr, flush=True)
    summary = {}
    for n in shots:
        for m in methods:
            taus = [d["shots"][str(n)][m]["kendall_tau"] for d in out["devices"].values()
                    if "shots" in d and str(n) in d["shots"] and m in d["shots"][str(n)]]
            w10 = [d["shots"][str(n)][m]["within_10pct"] for d in out["devices"].values()
                   if "shots" in d and str(n) in d["shots"] and m in d["shots"][str(n)]]
            if taus:
                summary.setdefault(str(n), {})[m] = {"mean_kendall_tau": round(float(np.mean(taus)), 4),
                                                     "mean_within_10pct": round(float(np.mean(w10)), 4),
                                                     "devices": len(taus)}
    out["summary"] = summary
    beats = {}
    for n in shots:
        for dname, d in out["devices"].items():
            sh = d.get("shots", {}).get(str(n), {})
            if "bayes" in sh and "flops" in sh:
                beats.setdefault(str(n), {})[dname] = sh["bayes"]["kendall_tau"] > sh["flops"]["kendall_tau"]
    out["bayes_beats_flops"] = beats
    out["seconds"] = round(time.time() - t0, 1)
    out["load_average_end"] = os.getloadavg()
    return out

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="measure networks into the bank (resumable)")
    b.add_argument("--bank", required=True)
    b.add_argument("--retest", type=int, default=40, help="pool networks --group retest times again")
    b.add_argument("--fast-devices", default="ort-1t,ort-2t,torch-1t",
                   help="--group fast: the devices to time (ort-Nt, torch-Nt)")
    b.add_argument("--retest-devices", default=None,
                   help="--group retest: the devices timed again (default --fast-devices; tvm-untuned-1t and "
                        "tvm-tuned-1t compile again)")
    b.add_argument("--group", choices=("fast", "tvm", "accel", "retest"), default="fast",
                   help="fast: onnxruntime and torch at 1 and 2 threads (+ accelerators); tvm: TVM (--tvm-schedule)")
    b.add_argument("--pool", type=int, default=250, help="pool networks besides the reference set")
    b.add_argument("--tvm-pool", type=int, default=40, help="pool networks TVM measures (it compiles each)")
    b.add_argument("--tvm-schedule", choices=("untuned", "tuned"), default="untuned",
                   help="--group tvm: TVM's policy (tuned: MetaSchedule records in BANK.tuning/, reused)")
    b.add_argument("--tune-trials", type=int, default=8, help="--tvm-schedule tuned: trials per kernel without a record")
    b.add_argument("--repeats", type=int, default=144, help="single runs timed per network and device, all passes")
    b.add_argument("--passes", type=int, default=48,
                   help="round-robin timing passes over all networks (each --repeats / --passes runs)")
    b.add_argument("--max-minutes", type=float, default=60.0,
                   help="stop preparing (exporting, compiling) after this long; what is ready is then timed")
    e = sub.add_parser("eval", help="leave-one-device-out scores as JSON")
    e.add_argument("--bank", required=True)
    e.add_argument("--shots", default="5,10,20")
    e.add_argument("--methods", default="bayes,help,ridge,flops,calibrate,basis")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--devices", default=None, help="held-out devices to score (default all)")
    pr = sub.add_parser("prior", help="meta-train the prior on every device of the bank and save it (JSON)")
    pr.add_argument("--bank", required=True)
    pr.add_argument("--out", required=True)
    for p in (e, pr):
        p.add_argument("--extra-prior", default=None, metavar="JSON",
                       help="a saved prior whose source devices join the bank's as meta-training sources (their "
                            "fitted weights; e.g. the devices of another host's bank)")
        p.add_argument("--extra-sources", default=None, metavar="NAME,...",
                       help="--extra-prior: which of its sources (default all)")
        p.add_argument("--extra-prefix", default="extra-", help="--extra-prior: prefix of their names (default extra-)")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        build(args)
        return 0
    if args.cmd == "prior":
        from codesign.predict.fewshot import meta_train, read_bank

        data = read_bank(args.bank)
        prior = meta_train(data.sources(), data.entries, data.space, extra=_extra_sources(args))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        prior.save(args.out)
        print(json.dumps({"saved": args.out, "sources": len(prior.sources), "noise": prior.noise}))
        return 0
    print(json.dumps(evaluate(args), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
