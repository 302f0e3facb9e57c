"""Smoke test: benchmarks/dataloader.py runs at its quick sizes and prints its table."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dataloader_benchmark_quick():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dataloader.py"), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert set(rows) >= {"load only", "step only", "0 workers", "1 workers", "2 workers",
                         "2 workers, persistent"}, proc.stdout
    assert rows["0 workers"].rstrip().endswith("| 1.00x |")
