"""benchmarks/cuda.py runs its code paths under the simulator (``--tiny``: sizes that
measure nothing), so the GPU session starts from a script that works, and says plainly that
it needs a GPU where there is none."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba_cuda")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "cuda.py"


def _run(*args, sim: bool, tmp_path):
    env = dict(os.environ, TRACEJIT_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if sim:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cuda_benchmark_runs_under_the_simulator(tmp_path):
    proc = _run("--tiny", "elementwise", "rows", "matmul", "overhead", sim=True,
                tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for text in ("device-to-device copy", "tracejit gelu", "softmax", "layer_norm",
                 "tracejit tiled kernel", "call + synchronize", "traced call on a CUDA tensor"):
        assert text in proc.stdout, proc.stdout


def test_cuda_benchmark_without_a_gpu_says_so(tmp_path):
    import tracejit.cuda
    if tracejit.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = _run(sim=False, tmp_path=tmp_path)
    assert proc.returncode == 0 and "needs an NVIDIA GPU" in proc.stdout, proc.stdout
