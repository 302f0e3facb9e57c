#!/usr/bin/env bash
# The checks a session lent an NVIDIA GPU runs, in one go (docs/gpu.md): the CUDA tests for
# real, in process (test files spread over 8 processes: compiling kernels on their first launch
# is CPU work), then the CUDA benchmarks. Record the figures in docs/benchmarks.md with the
# device and the date. Logs go to $OUT (the device tool's folder) or the current directory.
#
#     bash benchmarks/gpu_session.sh
set -u
cd "$(dirname "$0")/.."
LOGS="${OUT:-.}"
export PYTHONUNBUFFERED=1
# the device machine has no network: install tracejit itself only (numba-cuda, CuPy, torch
# come with its image)
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$LOGS/install.log" 2>&1 \
    || { tail -20 "$LOGS/install.log"; exit 1; }
nvidia-smi -L
python3 - <<'PY'
import numba, numpy, tracejit.cuda as c
try:
    import numba_cuda
    nc = numba_cuda.__version__
except Exception as e:  # noqa: BLE001
    nc = f"? ({e})"
print("numba", numba.__version__, "numba-cuda", nc, "numpy", numpy.__version__)
print("cuda available:", c.is_available(), c.unavailable_reason() or "", "simulator:",
      c.is_simulator())
PY
export TRACEJIT_CACHE_DIR="${TRACEJIT_CACHE_DIR:-$(mktemp -d)}"
t0=$(date +%s)
timeout "${TESTS_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile \
    -o addopts="" -m "not slow" -rf --tb=short tests/cuda/test_cuda_gpu.py \
    tests/cuda/test_traced_cuda.py tests/cuda/test_eager_cuda.py tests/cuda/test_availability.py \
    tests/cuda/test_device.py > "$LOGS/tests.log" 2>&1
echo "tests exit status: $? after $(( $(date +%s) - t0 )) s"
tail -40 "$LOGS/tests.log"
t0=$(date +%s)
timeout "${BENCH_TIMEOUT:-280}" python3 benchmarks/cuda.py "$@" 2>&1 | tee "$LOGS/bench.log"
echo "benchmarks exit status: ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
