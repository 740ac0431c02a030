"""Schedule policies: how a kernel's PrimFunc is scheduled before TVM compiles it.

- ``untuned``: TVM's default lowering, no schedule (CPU only: a GPU kernel without thread
  bindings cannot be built). Quick and clearly labelled; dense convs run 10-30x slower than tuned.
- ``dlight``: TVM's rule-based default schedules (``tvm.s_tir.dlight``). On a CPU only the GEMV and
  reduction rules exist, so they apply to dense layers at batch 1 and global pools and leave the
  other kernels as ``untuned`` would; on a GPU the matmul, GEMV, reduction and fallback rules bind
  every kernel to threads, which is why ``dlight`` is the default policy for GPU devices.
- ``metaschedule:N``: MetaSchedule with N trials per kernel (see ``tuning.py``).
"""

from __future__ import annotations

from ..errors import CodesignError

GPU_KINDS = ("cuda", "rocm", "vulkan", "opencl", "metal")


def parse_schedule(schedule: str) -> tuple[str, int]:
    """``"untuned"`` -> ("untuned", 0), ``"dlight"`` -> ("dlight", 0),
    ``"metaschedule:64"`` -> ("metaschedule", 64).

    Raises:
        CodesignError: an unknown policy or a trial count that is not a positive int.
    """
    if schedule in ("untuned", "dlight"):
        return schedule, 0
    if schedule.startswith("metaschedule:"):
        try:
            trials = int(schedule.split(":", 1)[1])
        except ValueError:
            trials = 0
        if trials < 1:
            raise CodesignError(f"schedule {schedule!r}: the trial count must be a positive int")
        return "metaschedule", trials
    raise CodesignError(f"unknown schedule {schedule!r}; use untuned, dlight or metaschedule:<trials>")


def is_gpu(target_dict: dict) -> bool:
    return str(target_dict.get("kind")) in GPU_KINDS


def default_schedule(target_dict: dict) -> str:
    """``untuned`` on a CPU, ``dlight`` on a GPU (the cheapest policy that builds there)."""
    return "dlight" if is_gpu(target_dict) else "untuned"


def check_schedule_for_target(schedule: str, target_dict: dict, device_name: str) -> None:
    """Raises CodesignError where the policy cannot build for the target (untuned on a GPU)."""
    if parse_schedule(schedule)[0] == "untuned" and is_gpu(target_dict):
        raise CodesignError(
            f"device {device_name} is a GPU: TVM cannot build unscheduled kernels for it; "
            "use --schedule dlight or --tune-trials N"
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
