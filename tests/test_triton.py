"""Triton kernels: interpreter checks on the CPU (in a subprocess), CUDA checks on a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from error_bounds import assert_gumbel_matches, assert_mixed_op_matches

import codesign

HERE = Path(__file__).resolve().parent
has_triton = pytest.mark.skipif(
    __import__("importlib").util.find_spec("triton") is None, reason="triton is not installed"
)
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@has_triton
def test_triton_kernels_under_the_interpreter():
    # TRITON_INTERPRET must be set before triton is imported, so the checks run in a fresh process.
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error::RuntimeWarning",
         str(HERE / "triton_interpreted_checks.py")],
        # A safety net against a hung interpreter, not a speed check: the checks take about a minute
        # on 2 quiet cores and over 10 minutes at load 35 (a shared machine), which a 600 s limit failed.
        env=env, capture_output=True, text=True, timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]


def test_import_touches_neither_cuda_nor_triton():
    code = (
        "import sys, torch, codesign; codesign.backends();"
        "print(torch.cuda.is_initialized(), 'triton' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    initialised, triton_imported = out.stdout.split()
    assert initialised == "False"
    assert triton_imported == "False"


def test_triton_unavailable_on_cpu_without_interpreter_says_why():
    from codesign import kernels

    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("interpreter enabled in this process")
    ok, reason = kernels.available(torch.device("cpu"))
    assert not ok and "TRITON_INTERPRET=1" in reason
    with pytest.raises(RuntimeError, match="triton backend cannot run here"):
        with codesign.use_backend("triton"):
            codesign.gumbel_softmax(torch.randn(2, 3), seed=0)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stride", [1, 2])
def test_cuda_mixed_op_matches_reference(dtype, stride):
    free = ["avg_pool_3x3", "max_pool_3x3"] + (["identity"] if stride == 1 else [])
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4, 8, 17, 19, device="cuda", dtype=dtype, generator=gen).requires_grad_()
    ho, wo = (17 - 1) // stride + 1, (19 - 1) // stride + 1
    ys = [torch.randn(4, 8, ho, wo, device="cuda", dtype=dtype, generator=gen).requires_grad_() for _ in range(5)]
    w = torch.randn(5 + len(free), device="cuda", dtype=dtype, generator=gen).requires_grad_()
    # Within the rounding-error bound of the dtype, against the reference in float64.
    assert_mixed_op_matches(x, ys, w, free, stride)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("hard", [False, True])
def test_cuda_gumbel_matches_cpu_samples(hard):
    # The GPU and the CPU both against the same float64 sample (same noise): indices equal but
    # for near-ties, values and gradients within the rounding-error bound.
    logits = torch.randn(1000, 8, dtype=torch.float64)
    g = torch.randn(1000, 8, dtype=torch.float64)
    _, i_cpu = assert_gumbel_matches(logits, 0.5, hard, 123, g)
    _, i = assert_gumbel_matches(logits.cuda(), 0.5, hard, 123, g)
    assert torch.equal(i.cpu(), i_cpu)
