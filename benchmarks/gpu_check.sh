#!/usr/bin/env bash
# One prepared GPU check for a machine with a CUDA device: installs codesign from this checkout
# (no network: build requirements and torch/triton must already be on the machine), runs the
# CUDA tests and prints the GPU benchmark table. Under 5 minutes on a recent GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
pip install --no-build-isolation --no-deps -q -e .
timeout 180 python -m pytest -q -m gpu tests/test_triton.py
timeout 120 python benchmarks/kernels_gpu.py
