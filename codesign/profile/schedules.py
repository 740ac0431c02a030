"""Schedule policies: how a kernel's PrimFunc is scheduled before TVM compiles it.

- ``untuned``: TVM's default lowering, no schedule (CPU only: a GPU kernel without thread
  bindings cannot be built). Quick and clearly labelled; dense convs run 10-30x slower than tuned.
- ``dlight``: TVM's rule-based default schedules (``tvm.s_tir.dlight``). On a CPU only the GEMV and
  reduction rules exist, so they apply to dense layers at batch 1 and global pools and leave the
  other kernels as ``untuned`` would; on a GPU the matmul, GEMV, reduction and fallback rules bind
  every kernel to threads, which is why ``dlight`` is the default policy for GPU devices.
- ``tuned`` (the default on CPUs): MetaSchedule with a trial budget spread over the kernels by their
  share of the base policy's cost (``untuned`` on a CPU, ``dlight`` on a GPU), so that the kernels
  that dominate a space's cost get the trials; ``--tune-trials`` sets the mean per kernel. Records
  go to the device's persistent tuning database, and a kernel whose workload is already there is
  compiled from its record without tuning again.
- ``metaschedule:N``: MetaSchedule with N trials for every kernel (see ``tuning.py``).
"""

from __future__ import annotations

from ..errors import CodesignError

GPU_KINDS = ("cuda", "rocm", "vulkan", "opencl", "metal")
# Mean MetaSchedule trials per kernel under ``tuned``. Each kernel's tuning also pays a fixed
# start (task set-up and design-space generation) of the order of the trials themselves: the 44
# kernels of the default nb201 search (340 trials) took 13 minutes on a 2-core host whose load
# average was 30, i.e. shared with some 15 other jobs. More trials buy faster schedules.
DEFAULT_TUNE_TRIALS = 8
# Bounds of one kernel's share: every kernel gets a few candidates (an unscheduled loop nest can be
# 10x off), and no kernel takes more than this many times the mean.
MIN_KERNEL_TRIALS = 2
MAX_TRIALS_OVER_MEAN = 8


def parse_schedule(schedule: str) -> tuple[str, int]:
    """``"untuned"`` -> ("untuned", 0), ``"dlight"`` -> ("dlight", 0), ``"tuned"`` -> ("tuned", 0)
    (its trials come from a budget, see :func:`allocate_trials`), ``"metaschedule:64"`` ->
    ("metaschedule", 64).

    Raises:
        CodesignError: an unknown policy or a trial count that is not a positive int.
    """
    if schedule in ("untuned", "dlight", "tuned"):
        return schedule, 0
    if schedule.startswith("metaschedule:"):
        try:
            trials = int(schedule.split(":", 1)[1])
        except ValueError:
            trials = 0
        if trials < 1:
            raise CodesignError(f"schedule {schedule!r}: the trial count must be a positive int")
        return "metaschedule", trials
    raise CodesignError(f"unknown schedule {schedule!r}; use tuned, untuned, dlight or metaschedule:<trials>")


def is_gpu(target_dict: dict) -> bool:
    return str(target_dict.get("kind")) in GPU_KINDS


def default_schedule(target_dict: dict) -> str:
    """``tuned`` on a CPU (what a deployment ships), ``dlight`` on a GPU."""
    return "dlight" if is_gpu(target_dict) else "tuned"


def base_schedule(target_dict: dict) -> str:
    """The cheapest policy that builds for the target (``untuned`` on a CPU, ``dlight`` on a GPU):
    its costs decide where ``tuned`` spends its trials."""
    return "dlight" if is_gpu(target_dict) else "untuned"


def is_tuned(schedule: str) -> bool:
    """Whether the policy compiles from MetaSchedule records (``tuned``, ``metaschedule:N``)."""
    return parse_schedule(schedule)[0] in ("tuned", "metaschedule")


# MetaSchedule's search strategies (``CODESIGN_MS_STRATEGY``): replay-trace with a random cost
# model, the default; evolutionary search guided by an XGBoost cost model (better schedules, 5-10x
# the tuning time, needs the xgboost package).
MS_STRATEGIES = ("replay-trace", "evolutionary")


def tuning_strategy() -> str:
    """MetaSchedule's search strategy, from ``CODESIGN_MS_STRATEGY`` (``MS_STRATEGIES``).

    Raises:
        CodesignError: another value, or ``evolutionary`` where xgboost is not installed (checked
            before any tuning starts, not after the first kernel's trials).
    """
    import importlib.util
    import os

    value = os.environ.get("CODESIGN_MS_STRATEGY", "").strip() or "replay-trace"
    if value not in MS_STRATEGIES:
        raise CodesignError(f"CODESIGN_MS_STRATEGY must be one of {', '.join(MS_STRATEGIES)}, got {value!r}")
    if value == "evolutionary" and importlib.util.find_spec("xgboost") is None:
        raise CodesignError("CODESIGN_MS_STRATEGY=evolutionary guides MetaSchedule with an XGBoost cost model, and "
                            "xgboost is not installed: pip install xgboost (or unset CODESIGN_MS_STRATEGY)")
    return value


def check_tune_trials(tune_trials) -> int:
    """Raises CodesignError unless ``tune_trials`` (mean trials per kernel) is an int >= 1."""
    if isinstance(tune_trials, bool) or not isinstance(tune_trials, int) or tune_trials < 1:
        raise CodesignError(f"--tune-trials must be >= 1, got {tune_trials!r}")
    return tune_trials


def allocate_trials(costs: dict[str, float | None], mean_trials: int) -> dict[str, int]:
    """Spread ``mean_trials * len(costs)`` MetaSchedule trials over kernels by their share of the cost.

    Args:
        costs: kernel key -> its cost under the base policy (ms); None where unknown (a kernel
            that failed to build untuned), which counts as the mean cost.
        mean_trials: the mean trials per kernel (``--tune-trials``).

    Returns:
        kernel key -> trials: at least ``MIN_KERNEL_TRIALS`` (capped by ``mean_trials``), at most
        ``MAX_TRIALS_OVER_MEAN * mean_trials``, in proportion to the cost in between, and summing to
        no more than the budget plus the floors' rounding.
    """
    check_tune_trials(mean_trials)
    if not costs:
        return {}
    known = [c for c in costs.values() if c is not None and c > 0]
    fill = sum(known) / len(known) if known else 1.0
    weight = {k: (c if c is not None and c > 0 else fill) for k, c in costs.items()}
    floor, cap = min(MIN_KERNEL_TRIALS, mean_trials), MAX_TRIALS_OVER_MEAN * mean_trials
    budget = mean_trials * len(costs)
    out = dict.fromkeys(costs, floor)
    # Water-filling: the floors first, then the rest in proportion to cost among uncapped kernels.
    left, free = budget - floor * len(costs), set(costs)
    while left > 0 and free:
        total = sum(weight[k] for k in free)
        grant = {k: left * weight[k] / total for k in free}
        capped = {k for k in free if out[k] + grant[k] >= cap}
        if not capped:
            for k in free:
                out[k] += int(grant[k])
            break
        for k in capped:
            left -= cap - out[k]
            out[k] = cap
        free -= capped
    return out


def check_schedule_for_target(schedule: str, target_dict: dict, device_name: str) -> None:
    """Raises CodesignError where the policy cannot build for the target (untuned on a GPU)."""
    if parse_schedule(schedule)[0] == "untuned" and is_gpu(target_dict):
        raise CodesignError(
            f"device {device_name} is a GPU: TVM cannot build unscheduled kernels for it; "
            "use --schedule dlight or --schedule tuned"
        )


def apply_dlight(func, target):
    """``func`` scheduled by dlight's rules for ``target``; returns (IRModule, whether a rule applied)."""
    import tvm
    from tvm.s_tir import dlight as dl

    mod = tvm.IRModule({"main": func})
    if str(target.kind.name) in GPU_KINDS:
        rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    else:
        rules = [dl.cpu.GEMV(), dl.cpu.Reduction()]
    with target:
        scheduled = dl.ApplyDefaultSchedule(*rules)(mod)
    attrs = scheduled["main"].attrs
    applied = bool(attrs is not None and "tirx.is_scheduled" in attrs and attrs["tirx.is_scheduled"])
    return scheduled, applied
