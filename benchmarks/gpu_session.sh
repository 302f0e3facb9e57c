#!/usr/bin/env bash
# The checks a session lent an NVIDIA GPU runs, in one go (docs/gpu.md; about 6-8 minutes on
# an H200, most of it compiling kernels on their first launch): the CUDA tests for real, in
# process, then the CUDA benchmarks. Record the figures in docs/benchmarks.md with the device
# and the date.
#
#     bash benchmarks/gpu_session.sh 2>&1 | tee gpu_session.log
set -u
cd "$(dirname "$0")/.."
# the device machine has no network: install tracejit itself only (numba-cuda, CuPy, torch
# come with its image)
python -m pip install -q --no-deps --no-build-isolation -e . || exit 1
python - <<'PY'
import tracejit.cuda as c
print("cuda available:", c.is_available(), c.unavailable_reason() or "", "simulator:",
      c.is_simulator())
PY
export TRACEJIT_CACHE_DIR="${TRACEJIT_CACHE_DIR:-$(mktemp -d)}"
timeout 300 python -m pytest -q -p no:cacheprovider -x tests/cuda/test_cuda_gpu.py \
    tests/cuda/test_traced_cuda.py tests/cuda/test_eager_cuda.py
echo "tests exit status: $?"
timeout 280 python benchmarks/cuda.py
echo "benchmarks exit status: $?"
