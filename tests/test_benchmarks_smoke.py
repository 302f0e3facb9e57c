"""Smoke test: benchmarks/compiled.py runs (quick sizes, tracejit and numpy only) and prints its
table. It must not need torch or jax, so it runs with --no-torch --no-jax."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_compiled_benchmark_quick(tmp_path):
    env = dict(os.environ, TRACEJIT_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("TJ_BENCH_THREADS", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compiled.py"), "--quick", "--only",
         "tiny,gelu", "--no-torch", "--no-jax"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{proc.stderr[-3000:]}"
    header = ("| workload | unit | numpy | tracejit eager | compiled | torch | torch.compile "
              "| jax.jit | eager vs numpy | compiled vs numpy "
              "| compiled vs best-of(torch.compile, jax.jit) |")
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert header in lines, out
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert set(rows) >= {"tiny", "gelu_64K", "gelu_256K"}, out
    assert "MISMATCH" not in out and "NOT COMPILED" not in out, out
    # numpy, eager and compiled are timed; the absent frameworks are dashes, not errors
    cells = [c.strip() for c in rows["gelu_64K"].split("|")[1:-1]]
    assert cells[1] == "ms"
    for value in cells[2:5]:
        assert float(value) > 0, cells
    assert cells[5:8] == ["-", "-", "-"], cells
    assert "torch: disabled (--no-torch)" in out and "jax.jit: disabled (--no-jax)" in out
