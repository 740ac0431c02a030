"""Where codesign writes on its own: the cache directory, its override, numba's cache."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from codesign.hw_models import get_accelerator, mapper

from codesign.kernelspec import KernelSpec
from codesign.paths import cache_dir
from codesign.profile import Device, ProfileDB, profile_kernels
from codesign.profile.db import default_db_path, tuning_dir_for


def test_cache_dir_follows_the_override_variable(tmp_path, monkeypatch):
    from platformdirs import user_cache_dir

    monkeypatch.delenv("CODESIGN_CACHE_DIR", raising=False)
    monkeypatch.delenv("CODESIGN_DB", raising=False)
    assert cache_dir() == Path(user_cache_dir("codesign"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # platformdirs' own variable on Linux
    assert cache_dir("numba") == Path(user_cache_dir("codesign")) / "numba"
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert cache_dir("numba", "x") == tmp_path / "mine" / "numba" / "x"
    assert default_db_path() == tmp_path / "mine" / "profiles.sqlite"
    assert tuning_dir_for(default_db_path()) == tmp_path / "mine" / "profiles.sqlite.tuning"
    monkeypatch.setenv("CODESIGN_DB", str(tmp_path / "p.sqlite"))  # a named database wins
    assert default_db_path() == tmp_path / "p.sqlite"
    monkeypatch.setenv("CODESIGN_CACHE_DIR", "")  # empty counts as unset
    assert cache_dir() == Path(user_cache_dir("codesign"))


@pytest.fixture
def fresh_mapper(monkeypatch):
    """Forget the compiled evaluators for one test (the module's own are put back after it)."""
    monkeypatch.setattr(mapper, "_jit", {})
    monkeypatch.setattr(mapper, "_eval_pair_nb", mapper._eval_pair_nb)
    monkeypatch.setattr(mapper, "_prange", mapper._prange)
    import numba

    monkeypatch.setattr(numba.config, "CACHE_DIR", "")  # as without NUMBA_CACHE_DIR
    return numba


def _cache_subdirs(root: Path) -> list[Path]:
    return sorted(root.glob("hw_models_*")) if root.is_dir() else []


def test_numba_cache_goes_to_the_cache_dir_not_the_package(tmp_path, monkeypatch, fresh_mapper):
    numba = fresh_mapper
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path / "cache"))
    pycache = Path(mapper.__file__).parent / "__pycache__"
    before = {p: p.stat().st_mtime_ns for p in pycache.glob("*.nb[ic]")} if pycache.is_dir() else {}
    t0 = time.time_ns()
    layers = mapper.encode_layers([KernelSpec.make("conv2d", (1, 8, 8, 8), out_channels=8, kernel=3)])
    configs = mapper.encode_configs([get_accelerator("eyeriss-like")])
    out = mapper.evaluate_rows(layers, configs)
    np.testing.assert_allclose(out, mapper.evaluate_rows(layers, configs, jit=False))
    assert numba.config.CACHE_DIR == ""  # the process's numba settings are left as they were
    (sub,) = _cache_subdirs(tmp_path / "cache" / "numba")
    names = {p.name for p in sub.iterdir()}
    assert any(n.startswith("mapper._eval_batch-") and n.endswith(".nbi") for n in names), names
    assert any(n.endswith(".nbc") for n in names), names
    after = {p: p.stat().st_mtime_ns for p in pycache.glob("*.nb[ic]")} if pycache.is_dir() else {}
    assert not [p for p, m in after.items() if before.get(p) != m and m >= t0], "numba wrote into the package"


def test_a_users_own_numba_cache_dir_is_kept(tmp_path, monkeypatch, fresh_mapper):
    numba = fresh_mapper
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "users"))  # as NUMBA_CACHE_DIR does
    mapper._compiled()  # numba fixes (and creates) a function's cache directory when it is decorated
    assert len(_cache_subdirs(tmp_path / "users")) == 1
    assert not (tmp_path / "cache" / "numba").exists()
    assert numba.config.CACHE_DIR == str(tmp_path / "users")


def test_an_unwritable_cache_dir_compiles_without_a_disk_cache(tmp_path, monkeypatch, fresh_mapper):
    (tmp_path / "file").write_text("")  # a directory below a file cannot be made, even by root
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path / "file" / "cache"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fns = mapper._compiled()
    assert any("cannot be written" in str(w.message) and "CODESIGN_CACHE_DIR" in str(w.message) for w in caught)
    assert type(fns["serial"]._cache).__name__ == "NullCache"  # not numba's fallback, the package's __pycache__


def test_metaschedule_profiles_keep_their_tuning_records_beside_the_database(tmp_path, monkeypatch):
    import codesign.profile.tuning as tuning

    seen = []

    def fake_tune(func, target, trials, work_dir, aliases=()):  # the tuner itself is tested in test_profile.py
        seen.append(work_dir)
        raise RuntimeError("not tuned here")

    monkeypatch.setattr(tuning, "tune_and_compile", fake_tune)
    dev = Device(name="cpu-test", target={"kind": "llvm", "num-cores": 1})
    with ProfileDB(tmp_path / "p.sqlite") as db:
        rep = profile_kernels([KernelSpec.make("dense", (1, 8), out_features=4)], dev, db,
                              schedule="metaschedule:2", progress=False)
    assert seen == [str(tmp_path / "p.sqlite.tuning")] and rep.failed == 1


def test_a_tvm_cost_source_keeps_tuning_records_beside_its_database(tmp_path):
    from codesign.costs.model import TVMDeviceSource

    assert TVMDeviceSource("cpu-local", db=tmp_path / "p.sqlite").tuning_dir == tmp_path / "p.sqlite.tuning"
    named = TVMDeviceSource("cpu-local", db=tmp_path / "p.sqlite", tuning_dir=tmp_path / "t")
    assert named.tuning_dir == tmp_path / "t"
