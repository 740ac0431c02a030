"""Installing codesign: an installed package writes nothing into itself, and an editable install
made over a non-editable one imports cleanly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "conv2d|1x16x32x32|kernel=3,out_channels=16"


def _run(argv, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{argv} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow  # two builds of the C++ core in a new virtual environment: 1-3 minutes
def test_installed_package_writes_nothing_into_itself_then_installs_editable(tmp_path):
    """The issue this guards against: numba's cache, written into site-packages/codesign, outlived
    ``pip uninstall`` and turned the leftover folder into a namespace package that shadowed the
    editable install (``cannot import name 'AcceleratorConfig' from 'codesign.hw_models'``).

    The venv's own site-packages holds the install; the dependencies come from the running
    environment's site-packages, listed in a .pth file (whose own .pth files, such as an editable
    codesign of the running environment, are not processed). pip fetches the build requirements
    (setuptools, pybind11, cmake) from the configured package index, as any ``pip install`` does.
    """
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", "runs",
        ".pytest_cache", ".hypothesis", ".ruff_cache"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    outer = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    (site / "_outer_environment.pth").write_text("\n".join(outer) + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("CODESIGN_CACHE_DIR", "NUMBA_CACHE_DIR", "PYTHONPATH")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    _run([py, "-m", "pip", "install", "-q", "--no-deps", src], env=env, cwd=tmp_path)
    pkg = site / "codesign"
    assert (pkg / "hw_models" / "mapper.py").is_file() and not (site / "hw_models").exists()

    work = tmp_path / "work"  # the current directory of the run: nothing may appear in it either
    work.mkdir()
    before = _snapshot(pkg)
    r = _run([venv / "bin" / "codesign", "hw", "eval", "--accel", "eyeriss-like", "--kernel", KERNEL, "--json"],
             env=env, cwd=work)
    assert json.loads(r.stdout)["latency_ms"] > 0
    where = _run([py, "-c", "import codesign.hw_models as h; print(h.__file__)"], env=env, cwd=work).stdout.strip()
    assert Path(where).parent == pkg / "hw_models"  # the run used the installed copy
    after = _snapshot(pkg)
    assert after == before, f"written into the installed package: {sorted(set(after.items()) - set(before.items()))}"
    assert list(work.iterdir()) == []
    numba_cache = tmp_path / "xdg" / "codesign" / "numba"
    assert [p.name for p in numba_cache.rglob("*.nbi")], "numba's cache is not in codesign's cache directory"

    _run([py, "-m", "pip", "install", "-q", "--no-deps", "-e", src], env=env, cwd=tmp_path)
    assert not pkg.exists()  # the uninstall left nothing behind
    r = _run([py, "-c", "import codesign.hw_models as h; from codesign.hw_models import AcceleratorConfig; "
                        "print(h.__file__, AcceleratorConfig.__name__)"], env=env, cwd=work)
    path, name = r.stdout.split()
    assert Path(path) == src / "hw_models" / "__init__.py" and name == "AcceleratorConfig"
