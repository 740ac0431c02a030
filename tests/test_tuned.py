"""The tuned policy (the CPU default): its trial budget, its profiles and networks, and where the
search trains (--train-device)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codesign.errors import CodesignError
from codesign.kernelspec import KernelSpec
from codesign.profile import Device, ProfileDB, get_device, profile_kernels
from codesign.profile.schedules import (
    MAX_TRIALS_OVER_MEAN,
    MIN_KERNEL_TRIALS,
    allocate_trials,
    base_schedule,
    default_schedule,
    is_tuned,
    parse_schedule,
)
from codesign.search.device import resolve_train_device

K = KernelSpec.make

costs_st = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=4),
                           st.one_of(st.none(), st.floats(1e-4, 1e3)), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(costs_st, st.integers(1, 64))
def test_trials_follow_each_kernels_share_of_the_cost_within_the_budget(costs, mean):
    out = allocate_trials(costs, mean)
    assert set(out) == set(costs)
    floor, cap = min(MIN_KERNEL_TRIALS, mean), MAX_TRIALS_OVER_MEAN * mean
    assert all(floor <= t <= cap for t in out.values())
    assert sum(out.values()) <= mean * len(costs)
    # Nearly all of the budget is spent: at most one trial per kernel lost to rounding down, unless
    # every kernel is at its cap.
    if any(t < cap for t in out.values()):
        assert sum(out.values()) >= mean * len(costs) - len(costs)
    # A costlier kernel never gets fewer trials (unknown costs count as the mean of the known ones).
    known = [c for c in costs.values() if c is not None]
    fill = sum(known) / len(known) if known else 1.0
    ranked = sorted(costs, key=lambda k: costs[k] if costs[k] is not None else fill)
    weights = [costs[k] if costs[k] is not None else fill for k in ranked]
    for (a, wa), (b, wb) in zip(zip(ranked, weights), zip(ranked[1:], weights[1:])):
        if wb > wa:
            assert out[b] >= out[a]


def test_the_dominant_kernel_gets_most_trials_and_small_ones_the_floor():
    out = allocate_trials({"conv3x3": 9.0, "conv1x1": 1.0, "relu": 0.01, "failed": None}, 8)
    assert out["conv3x3"] > out["conv1x1"] > out["relu"] == MIN_KERNEL_TRIALS
    assert sum(out.values()) <= 32
    assert allocate_trials({}, 8) == {}
    with pytest.raises(CodesignError, match=r"^--tune-trials must be >= 1, got 0$"):
        allocate_trials({"a": 1.0}, 0)


def test_tuned_is_the_cpu_default_and_dlight_the_gpu_one():
    assert parse_schedule("tuned") == ("tuned", 0)
    assert default_schedule({"kind": "llvm"}) == "tuned" and base_schedule({"kind": "llvm"}) == "untuned"
    assert default_schedule({"kind": "cuda"}) == "dlight" and base_schedule({"kind": "cuda"}) == "dlight"
    assert is_tuned("tuned") and is_tuned("metaschedule:4") and not is_tuned("untuned") and not is_tuned("dlight")


def test_tuned_profiles_spend_the_budget_by_untuned_cost_and_reuse_records(tmp_path):
    """Real MetaSchedule on two small kernels: the untuned profile steers the trials, the tuned
    rows land beside it, the records persist, and a second database tunes nothing again."""
    from codesign.profile.tuning import meta_schedule

    dev = Device(name="cpu-test", target={"kind": "llvm", "num-cores": 1})
    specs = [K("conv2d", (1, 8, 8, 8), out_channels=8, kernel=3, activation="relu"), K("relu", (1, 8, 8, 8))]
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels(specs, dev, db, repeats=2, min_repeat_ms=1, progress=False, tune_trials=3)
        assert rep.schedule == "tuned" and rep.measured == 2 and rep.failed == 0
        untuned = {m.kernel_key: m.latency_ms for m in db.query(schedule="untuned", ok_only=True)}
        tuned = {m.kernel_key: m.latency_ms for m in db.query(schedule="tuned", ok_only=True)}
    assert set(untuned) == set(tuned) == {s.key() for s in specs}
    want = allocate_trials(untuned, 3)
    assert rep.tune_trials == sum(want.values()) and want[specs[0].key()] > want[specs[1].key()]
    ms = meta_schedule()
    records = ms.database.JSONDatabase(work_dir=str(tmp_path / "p.sqlite.tuning")).get_all_tuning_records()
    assert len(records) >= 2  # at least one per kernel, each the run of one candidate
    # Another profile database on the same tuning records: every kernel compiles from its record.
    with ProfileDB(tmp_path / "q.sqlite") as db:
        again = profile_kernels(specs, dev, db, repeats=2, min_repeat_ms=1, progress=False, tune_trials=3,
                                tuning_dir=str(tmp_path / "p.sqlite.tuning"))
    assert again.measured == 2
    assert len(ms.database.JSONDatabase(work_dir=str(tmp_path / "p.sqlite.tuning")).get_all_tuning_records()) \
        == len(records)


def test_flat_trials_tune_every_kernel_alike_without_an_untuned_pass(tmp_path):
    """trial_split="flat" (the samples of ``codesign fit --adaptive``): tune_trials for each kernel,
    as ``codesign measure`` tunes a network's kernels, and no base-policy profile first."""
    dev = Device(name="cpu-test", target={"kind": "llvm", "num-cores": 1})
    specs = [K("conv2d", (1, 8, 8, 8), out_channels=8, kernel=3, activation="relu"), K("relu", (1, 8, 8, 8))]
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels(specs, dev, db, repeats=2, min_repeat_ms=1, progress=False, tune_trials=2,
                              trial_split="flat")
        assert rep.measured == 2 and rep.failed == 0 and rep.tune_trials == 2 * 2
        assert db.query(schedule="untuned") == [] and len(db.query(schedule="tuned", ok_only=True)) == 2
        with pytest.raises(CodesignError, match=r"^unknown trial split 'even'; known: cost, flat$"):
            profile_kernels(specs, dev, db, tune_trials=2, trial_split="even", progress=False)


def test_a_bad_trial_budget_is_refused_before_anything_is_written(tmp_path):
    with ProfileDB(tmp_path / "p.sqlite") as db, pytest.raises(CodesignError, match="--tune-trials"):
        profile_kernels([K("relu", (1, 4, 4, 4))], get_device("cpu-local"), db, tune_trials=0, progress=False)
    out = subprocess.run([sys.executable, "-m", "codesign.cli", "search", "--tune-trials", "0"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "codesign search: error: --tune-trials must be >= 1, got 0"]


def test_train_device_auto_takes_the_cpu_here_and_cuda_is_one_line_where_absent():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    assert resolve_train_device("auto") == resolve_train_device("cpu") == "cpu"
    with pytest.raises(CodesignError, match=r"^--train-device cuda: .*; use --train-device cpu or auto$"):
        resolve_train_device("cuda")
    with pytest.raises(CodesignError, match=r"^--train-device takes auto, cpu, cuda, got 'gpu'$"):
        resolve_train_device("gpu")
    for flags, message in [(["--train-device", "cuda"], "--train-device cuda: "),
                           (["--device", "cuda-local", "--no-measure"], "no cuda device")]:
        out = subprocess.run([sys.executable, "-m", "codesign.cli", "search", *flags], capture_output=True, text=True)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert message in out.stderr and "--schedule" not in out.stderr


def test_cuda_local_defaults_to_dlight_without_a_schedule_flag(monkeypatch, tmp_path):
    """What `--device cuda-local` resolves to with no --schedule (the GPU itself is checked apart)."""
    from codesign.costs import model as cost_model
    from codesign.pipeline.config import SearchConfig

    monkeypatch.setattr(cost_model, "_check_timeable", lambda dev, schedule: None)
    cfg = SearchConfig(device="cuda-local")
    assert cfg.schedule is None
    source = cost_model.open_cost_source(device=cfg.device, schedule=cfg.schedule, db=tmp_path / "p.sqlite")
    assert (source.device, source.schedule) == ("cuda-local", "dlight")


@pytest.mark.slow
def test_the_search_trains_through_the_triton_kernels_under_the_interpreter(tmp_path):
    """The GPU path's training loop on the CPU: Triton's interpreter runs mixed_op and gumbel_softmax
    (CODESIGN_BACKEND=triton) for darts and gdas, through search, derive and final training."""
    code = (
        "import json, sys\n"
        "from codesign.pipeline import SearchConfig, run_search\n"
        "r = run_search(SearchConfig(strategy=sys.argv[1], epochs=2, warmup_epochs=1, train_epochs=1, "
        "space_args={'c': 4, 'cells': 1}, "
        "batch_size=32, cost_model=sys.argv[2], measure=False, train_device='auto'), run_dir=sys.argv[3], quiet=True)\n"
        "print(json.dumps({'genotype': r['genotype'], 'train_device': r['train_device']}))\n"
    )
    model = _fitted_cost_model(tmp_path)
    env = dict(os.environ, TRITON_INTERPRET="1", CODESIGN_BACKEND="triton", OMP_NUM_THREADS="1")
    for strategy in ("darts", "gdas"):
        out = subprocess.run([sys.executable, "-c", code, strategy, str(model), str(tmp_path / strategy)],
                             capture_output=True, text=True, env=env, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["train_device"] == "cpu" and result["genotype"]


def _fitted_cost_model(tmp_path):
    """A cost model of nb201's digits kernels fitted on a roofline law (no TVM needed)."""
    from codesign.data import load_dataset
    from codesign.kernelspec import kernel_flops
    from codesign.predict.models import create_cost_model
    from codesign.profile.db import Measurement
    from codesign.spaces import create_space

    d = load_dataset("digits", None)
    specs = create_space("nb201", input_shape=d.input_shape, num_classes=d.num_classes, c=4, cells=1).kernels()
    rows = [Measurement(kernel_key=s.key(), device="cpu-local", schedule="tuned",
                        latency_ms=1e-3 + 1e-7 * kernel_flops(s)) for s in specs]
    path = tmp_path / "model.json"
    create_cost_model("gbdt", seed=0).fit(rows).save(path)
    return path


def test_a_measured_energy_counter_measures_whole_networks(monkeypatch):
    """Where the device's energy source is a counter (RAPL, NVML), the network's energy is read
    around a loop of real runs; a modelled source gives none."""
    import torch.nn as nn

    from codesign.graph import export_onnx
    from codesign.profile import energy
    from codesign.profile.measure import measure_network

    calls = []

    class Counter(energy.EnergySource):
        label = "measured:test"

        def measure(self, spec, run, latency_ms):
            run(3)
            calls.append(latency_ms)
            return 0.25

    model = export_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), (1, 3, 8, 8))
    monkeypatch.setattr(energy, "energy_source_for", lambda device: Counter())
    r = measure_network(model, get_device("cpu-local"), "untuned", repeats=2, min_repeat_ms=0, onnxruntime=False)
    assert (r.energy_mj, r.energy_source) == (0.25, "measured:test") and calls == [r.latency_ms]
    monkeypatch.setattr(energy, "energy_source_for", lambda device: energy.ModelSource("cpu-local"))
    r = measure_network(model, get_device("cpu-local"), "untuned", repeats=2, min_repeat_ms=0, onnxruntime=False)
    assert (r.energy_mj, r.energy_source) == (None, None)


@pytest.mark.slow
def test_tuning_a_pool_prints_no_unknown_rule_warning(tmp_path):
    """TOPI's pools name a MetaSchedule rule that TVM registers for no CPU target; codesign's
    stand-in keeps TVM from warning once per pool block, and the pool still tunes and runs."""
    script = (
        "import sys\n"
        "from codesign.kernelspec import KernelSpec\n"
        "from codesign.profile import ProfileDB, get_device, profile_kernels\n"
        "specs = [KernelSpec.make('avg_pool2d', (1, 16, 8, 8), kernel=3, padding=1),\n"
        "         KernelSpec.make('max_pool2d', (1, 16, 8, 8), kernel=3, padding=1)]\n"
        f"with ProfileDB({str(tmp_path / 'p.sqlite')!r}) as db:\n"
        "    rep = profile_kernels(specs, get_device('cpu-local'), db, schedule='metaschedule:2', repeats=2,\n"
        f"                          min_repeat_ms=1, tuning_dir={str(tmp_path / 't')!r}, progress=False)\n"
        "print(rep.measured, rep.failed)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2", "0"]
    assert "Unknown schedule rule" not in out.stderr


class _Shapes(__import__("torch").nn.Module):
    """Every pattern ``workloads`` covers: conv + BN + ReLU/ReLU6, depthwise, strided, dilated,
    both residual operand orders, a grouped conv, a standalone ReLU, pools, a global pool and a
    dense head."""

    def __init__(self):
        from torch import nn

        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.dil = nn.Sequential(nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(8))
        self.grp = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.avg = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.pw(self.dw(x.relu()))  # x + f(x): the residual first; a standalone ReLU
        x = self.dil(self.avg(x)) + x  # f(x) + x: the residual last
        x = self.pool(self.grp(x))
        return self.head(x.mean((2, 3)))


def test_a_tuned_kernel_is_profiled_as_the_workload_its_network_compiles():
    """Each kernel of a network is described, under the tuned policies, by the very fused function
    the network's compile hands MetaSchedule (structurally equal), or by its alias (the other
    operand order of a residual add); kernels outside the covered patterns say None."""
    import tvm

    from codesign.graph import export_onnx, onnx_kernels
    from codesign.profile.measure import _fused, relax_module
    from codesign.profile.tuning import meta_schedule
    from codesign.profile.workloads import alias_workloads, network_workload

    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    proto = export_onnx(_Shapes().eval(), (1, 3, 16, 16))
    ms = meta_schedule()
    tasks = [t.dispatched[0] for t in ms.relax_integration.extract_tasks(_fused(relax_module(proto)[0], target),
                                                                         target)]

    def found(mod):
        for t in tasks:
            try:
                tvm.ir.assert_structural_equal(mod, t)
                return True
            except ValueError:
                continue
        return False

    specs = onnx_kernels(proto)
    covered = [s for s in specs if s.op in ("conv2d", "max_pool2d", "avg_pool2d", "dense", "relu")]
    assert len(covered) >= 8
    for spec in covered:
        built = network_workload(spec, target)
        assert built is not None, spec.key()
        assert built.arg_shapes[0] == spec.input_shape and built.arg_shapes[-1] == spec.output_shape()
        forms = [tvm.IRModule({"main": built.func})] + alias_workloads(spec, target)
        assert any(found(m) for m in forms), spec.key()
    residual = [s for s in covered if s.attr("residual")]
    assert len(residual) == 2 and all(len(alias_workloads(s, target)) == 1 for s in residual)
    assert network_workload(K("batch_norm", (1, 8, 4, 4)), target) is None
    assert network_workload(K("conv2d", (1, 8, 4, 4), out_channels=8, kernel=3, activation="gelu"), target) is None


@pytest.mark.slow
def test_a_network_compiles_from_its_profiled_kernels_records_without_tuning(tmp_path):
    """After `profile` under tuned, `measure` of the network tunes nothing: every fused kernel
    compiles from the records the profile tuned, residual adds of either operand order included,
    so that the network runs the schedules whose latencies were profiled."""
    from codesign.graph import export_onnx, onnx_kernels
    from codesign.profile.measure import measure_network
    from codesign.profile.tuning import meta_schedule

    dev = Device(name="cpu-test", target={"kind": "llvm", "num-cores": 1})
    proto = export_onnx(_Shapes().eval(), (1, 3, 16, 16))
    tuning = str(tmp_path / "p.sqlite.tuning")
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels(onnx_kernels(proto), dev, db, repeats=2, min_repeat_ms=1, progress=False,
                              tune_trials=2)
    assert rep.failed == 0
    from codesign.profile.tuning import has_record
    from codesign.profile.workloads import alias_workloads, network_workload

    target = dev.tvm_target()
    covered = [s for s in onnx_kernels(proto) if network_workload(s, target) is not None]
    assert len(covered) == 10
    for spec in covered:  # the profile tuned each kernel's network workload, and its alias
        assert has_record(network_workload(spec, target).func, target, tuning)
        assert all(has_record(a["main"], target, tuning) for a in alias_workloads(spec, target))
    ms = meta_schedule()

    def records():
        return len(ms.database.JSONDatabase(work_dir=tuning).get_all_tuning_records())

    before = records()
    m = measure_network(proto, dev, "tuned", repeats=2, min_repeat_ms=1, tuning_dir=tuning, onnxruntime=False,
                        tune_trials=2)
    # Only the global mean is tuned now, with its 2 trials: torch exports it as ReduceMean, another
    # workload than the GlobalAveragePool it is profiled as. Every fused kernel compiles from a record.
    assert records() - before <= 2
    assert m.tuned_kernels == m.fused_kernels == 10


def test_the_tuning_seed_changes_the_schedules_drawn_and_is_recorded(tmp_path):
    """`measure --tuning-seed`: MetaSchedule draws other schedules for the same kernels under
    another seed (into a fresh tuning folder), the same ones under the same seed, and the
    measurement says which seed tuned it."""
    import torch

    from codesign.graph import export_onnx
    from codesign.profile.measure import measure_network
    from codesign.profile.tuning import meta_schedule

    net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU()).eval()
    proto = export_onnx(net, (1, 8, 12, 12))
    dev = Device(name="cpu-test", target={"kind": "llvm", "num-cores": 1})
    ms = meta_schedule()

    def traces(seed, folder):
        m = measure_network(proto, dev, "tuned", repeats=1, min_repeat_ms=0, tuning_dir=str(tmp_path / folder),
                            onnxruntime=False, tune_trials=3, tuning_seed=seed)
        assert m.tuning_seed == seed and m.tuned_kernels == m.fused_kernels >= 1
        recs = ms.database.JSONDatabase(work_dir=str(tmp_path / folder)).get_all_tuning_records()
        return sorted(str(r.trace) for r in recs)

    first = traces(0, "a")
    assert traces(0, "b") == first
    assert traces(1, "c") != first
