#!/usr/bin/env bash
# One prepared GPU check for a machine with a CUDA device: installs codesign from this checkout
# (no network: build requirements and torch/triton must already be on the machine), runs the CUDA
# tests, then prints the table of the GPU targets:
#   - Triton vs eager for mixed_op and gumbel_softmax at 1x and 10x DARTS sizes (GB/s, share of the
#     device's copy bandwidth, speedup over eager): >= 70% of copy at the large size, >= 2x eager;
#   - one supernet epoch (DARTS search setting) fused vs reference ops: >= 1.5x faster at <= 0.6x
#     the peak memory;
#   - a short `codesign search --train-device cuda --device cuda-local` end to end (NVML energy
#     where it reads).
# The JSON of each part is kept in $OUT (default: a temporary folder). About 5-8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
python -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
pip install --no-build-isolation --no-deps -q -e .
timeout 180 python -m pytest -q -m gpu tests/test_triton.py
timeout 150 python benchmarks/kernels_gpu.py > "$OUT/kernels_gpu.json"
timeout 300 python benchmarks/gpu_search.py --steps 50 --search-epochs 3 --train-epochs 2 > "$OUT/gpu_search.json"
python benchmarks/gpu_search.py --table "$OUT/kernels_gpu.json" "$OUT/gpu_search.json"
echo "JSON: $OUT"
