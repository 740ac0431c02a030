"""The build itself: the C++ core must load, or every fused-op test silently checks the reference
against itself (``auto`` falls back to it)."""

from __future__ import annotations

import os

import pytest

import codesign

OPT_OUT = "CODESIGN_ALLOW_NO_CPP"


def test_the_cpp_core_loads():
    """Fails where ``codesign._C`` did not build or import. A build without a C++ compiler, on
    purpose, sets CODESIGN_ALLOW_NO_CPP=1 (the fused ops then run their PyTorch reference)."""
    cpp = codesign.backends()["cpp"]
    if not cpp["available"] and os.environ.get(OPT_OUT) == "1":
        pytest.skip(f"{OPT_OUT}=1: running without the C++ core ({cpp['reason']})")
    assert cpp["available"], f"{cpp['reason']} (set {OPT_OUT}=1 to test a build without a C++ compiler)"
    from codesign import _C

    assert _C.philox4x32_10(0, 0, 0) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_while_they_wait_unless_the_user_says_otherwise(given, expected):
    """Importing codesign before torch sets OMP_WAIT_POLICY=PASSIVE (spinning threads slow a shared
    machine, benchmarks/threads.py); a policy the user set is kept."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", "import os, codesign, torch; print(os.environ['OMP_WAIT_POLICY'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
