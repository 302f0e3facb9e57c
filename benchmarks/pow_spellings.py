"""gelu with the cube spelled ``x ** 3`` and ``x * x * x``, compiled, with simplify's power
rewrite (issue 13) and without it (the exponent kept as a ``pow``), in one process:

    TRACEJIT_CACHE_DIR=/tmp/tjbench python benchmarks/pow_spellings.py [--n 4194304]

"without" patches ``simplify._power`` to rewrite only ``x ** 2`` and ``x ** 0.5``, as simplify
did before. Medians per call.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import tracejit as tj

# compiled code is timed: compiles block (no interpreter tier), as before issue 13
os.environ.setdefault("TRACEJIT_SYNC_COMPILE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compiled import gelu_cube, gelu_pow3  # noqa: E402

simplify = importlib.import_module("tracejit.passes.simplify")
REWRITE = simplify._power


def _before(node, fresh):
    y = node.inputs[1]
    return REWRITE(node, fresh) if not isinstance(y, bool) and y in (2, 0.5) else None


def median_ms(fn, x, repeat: int) -> tuple:
    f = tj.trace(fn)
    f(x)
    f(x)  # traced, then compiled
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, f.graph(x).nodes[0].attr_dict.get("kernel", "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1 << 22)
    p.add_argument("--repeat", type=int, default=31)
    args = p.parse_args(argv)
    x = tj.from_numpy(np.random.default_rng(0).standard_normal(args.n).astype(np.float32))
    print("| simplify | x ** 3 | x * x * x | ratio | kernel of x ** 3 |\n|---|---|---|---|---|")
    for label, rewrite in (("without the power rewrite", _before), ("with it", REWRITE)):
        simplify._power = rewrite
        pow3, kernel = median_ms(gelu_pow3, x, args.repeat)
        cube, _ = median_ms(gelu_cube, x, args.repeat)
        print(f"| {label} | {pow3:.2f} ms | {cube:.2f} ms | {pow3 / cube:.2f}x | {kernel} |")
    simplify._power = REWRITE
    return 0


if __name__ == "__main__":
    sys.exit(main())
