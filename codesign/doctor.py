"""What this machine can do for codesign, and what is missing, each with its fix (``codesign doctor``).

Every check is a function returning a :class:`Check`; none changes anything on the machine (the
profile database is opened read-only, nothing is compiled or downloaded). Slow imports (triton)
are avoided: installed packages are found by their metadata.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

TVM_FFI_PIN = "0.1.14.post1"  # see codesign/profile/tuning.py: 0.1.15 crashes MetaSchedule's serialisation
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

OK, MISSING, NOTE = "ok", "missing", "note"


@dataclass
class Check:
    """One line of the doctor's screen: ``status`` ok (works), missing (does not; ``fix`` says how)
    or note (works with a limit worth knowing)."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""


def check_compiler() -> Check:
    for cxx in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cxx and shutil.which(cxx):
            return Check("C++ compiler", OK, f"{cxx}: {_first_line([cxx, '--version'])}")
    return Check("C++ compiler", MISSING, "no C++17 compiler on PATH (needed to build codesign's C++ core)",
                 "apt-get install g++ (Debian/Ubuntu), xcode-select --install (macOS); then pip install -e .")


def check_core() -> list[Check]:
    """The C++ core (codesign._C) and whether it was built with OpenMP."""
    try:
        from . import _C
    except ImportError as exc:
        fix = "pip install -e . (rebuilds the C++ core; needs a compiler and CMake)"
        return [Check("codesign._C", MISSING, f"the C++ kernels do not import ({exc}); the reference ops run",
                      fix),
                Check("OpenMP", MISSING, "unknown: the C++ core is missing", fix)]
    core = Check("codesign._C", OK, f"C++ kernels built ({Path(_C.__file__).name})")
    if getattr(_C, "has_openmp", False):
        omp = Check("OpenMP", OK, f"the C++ kernels use up to {_C.max_threads()} threads")
    else:
        omp = Check("OpenMP", NOTE, "built without OpenMP: the C++ kernels run single-threaded",
                    "install the compiler's OpenMP (apt-get install libomp-dev for clang; gcc has libgomp), "
                    "then pip install -e .")
    return [core, omp]


def check_tvm() -> list[Check]:
    tvm_v, ffi_v = _version("apache-tvm"), _version("apache-tvm-ffi")
    if tvm_v is None:
        return [Check("TVM", MISSING, "apache-tvm is not installed: no profiling or measurement",
                      "pip install apache-tvm==0.27.0.post1")]
    try:
        import tvm
        from tvm.target import codegen

        cpu = codegen.llvm_get_system_cpu()
        out = [Check("TVM", OK, f"apache-tvm {tvm.__version__}, LLVM target mcpu={cpu}")]
    except Exception as exc:  # a broken install: report it, do not crash the doctor
        out = [Check("TVM", MISSING, f"apache-tvm {tvm_v} does not import ({type(exc).__name__}: {exc})",
                     "pip install --force-reinstall apache-tvm==0.27.0.post1 apache-tvm-ffi==" + TVM_FFI_PIN)]
    if ffi_v == TVM_FFI_PIN:
        out.append(Check("TVM FFI pin", OK, f"apache-tvm-ffi {ffi_v}"))
    else:
        out.append(Check("TVM FFI pin", MISSING,
                         f"apache-tvm-ffi {ffi_v or 'not installed'}, not {TVM_FFI_PIN}: MetaSchedule tuning "
                         "crashes with other versions (0.1.15 serialises IR with dtypes wrongly)",
                         f"pip install apache-tvm-ffi=={TVM_FFI_PIN}"))
    return out


def check_onnxruntime() -> Check:
    v = _version("onnxruntime")
    if v:
        return Check("onnxruntime", OK, f"onnxruntime {v} (checks exports, timed beside TVM)")
    return Check("onnxruntime", MISSING, "not installed: exports are not checked", "pip install onnxruntime")


def check_gpu() -> list[Check]:
    triton_v = _version("triton")
    triton = (Check("Triton", OK, f"triton {triton_v}") if triton_v else
              Check("Triton", NOTE, "not installed: the fused ops run their C++ kernels on CPUs only",
                    "pip install 'codesign[triton]' (on a machine with a CUDA GPU)"))
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            gpu = Check("GPU", OK, f"CUDA: {', '.join(names)}")
        else:
            gpu = Check("GPU", NOTE, "no CUDA device: searches run on the CPU; Triton kernels are tested with "
                        "TRITON_INTERPRET=1", "a machine with an NVIDIA GPU and a CUDA build of torch")
    except ImportError:
        gpu = Check("GPU", MISSING, "torch is not installed", "pip install torch==2.13.0")
    return [triton, gpu]


def check_energy() -> Check:
    from .profile.energy import NvmlSource, RaplSource

    found, why = [], []
    for label, source in (("RAPL", RaplSource()), ("NVML", NvmlSource())):
        ok, reason = source.available()
        (found if ok else why).append(label if ok else f"{label}: {reason}")
    if found:
        return Check("energy counters", OK, f"measured energy: {', '.join(found)}")
    return Check("energy counters", NOTE, "none readable (" + "; ".join(why) + "): energy is modelled from "
                 "each device's roofline and labelled model:<device>",
                 "on Linux with an Intel/AMD CPU, make /sys/class/powercap/intel-rapl:*/energy_uj readable "
                 "(root); on an NVIDIA GPU, pip install nvidia-ml-py")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def check_profile_db(path: Path | None = None) -> Check:
    """Size, devices and schedules of the profile database (opened read-only)."""
    from .profile.db import default_db_path

    path = Path(path) if path else default_db_path()
    if not path.is_file():
        return Check("profile database", NOTE, f"none yet at {path}",
                     "`codesign profile --space nb201` (or the first `codesign search`) creates it")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT device, schedule, COUNT(*), SUM(error IS NOT NULL) FROM measurements "
                                "GROUP BY device, schedule ORDER BY device, schedule").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check("profile database", MISSING, f"{path} is not readable ({exc})",
                     "move it away and profile again, or point $CODESIGN_DB at another file")
    parts = [f"{d} [{s}] {n} kernels" + (f" ({f} failed)" if f else "") for d, s, n, f in rows]
    return Check("profile database", OK, f"{path}, {_mb(_size(path))}: " + ("; ".join(parts) or "empty"))


def check_tuning_db(path: Path | None = None) -> Check:
    """MetaSchedule's tuning database beside the profile database (``<db>.tuning``)."""
    from .profile.db import default_db_path

    path = Path(path) if path else Path(str(default_db_path()) + ".tuning")
    if not path.is_dir():
        return Check("tuning database", NOTE, f"none yet at {path}",
                     "`codesign profile --schedule metaschedule:64 ...` tunes kernels and keeps the records there")
    records = workloads = 0
    for f in path.rglob("database_tuning_record.json"):
        records += sum(1 for line in f.open() if line.strip())
    for f in path.rglob("database_workload.json"):
        workloads += sum(1 for line in f.open() if line.strip())
    return Check("tuning database", OK, f"{path}, {_mb(_size(path))}: {workloads} tuned kernels, {records} "
                                        "schedule records")


def check_ray() -> Check:
    v = _version("ray")
    if v:
        return Check("Ray", OK, f"ray {v}")
    return Check("Ray", NOTE, "not installed (optional; codesign runs without it)", "pip install ray")


def check_browser() -> Check:
    for name in BROWSERS:
        exe = shutil.which(name)
        if exe:
            return Check("Chromium", OK, f"{_first_line([exe, '--version'])} ({exe})")
    return Check("Chromium", NOTE, "no Chromium: reports open in any browser, but their browser test skips",
                 "apt-get install chromium")


def run_checks(db: Path | None = None) -> list[Check]:
    """Every check, in the order of the screen."""
    return [check_compiler(), *check_core(), *check_tvm(), check_onnxruntime(), *check_gpu(), check_energy(),
            check_profile_db(db), check_tuning_db(Path(str(db) + ".tuning") if db else None), check_ray(),
            check_browser()]


def machine() -> dict:
    import codesign

    return {"codesign": codesign.__version__, "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}", "cpus": os.cpu_count(),
            "executable": sys.executable}
