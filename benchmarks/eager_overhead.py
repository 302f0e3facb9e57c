"""Eager overhead: tracejit ops against the numpy calls under them, in one process.

    python benchmarks/eager_overhead.py [--repeat 30]

Prints medians and ratios: a 10-op elementwise chain on 1M float32 elements (goal <= 1.3x numpy)
and the per-op Python overhead on tiny tensors (goal < 5 us). Shared, noisy machines: compare
the ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import tracejit as tj

# compiled code is timed: compiles block (no interpreter tier), as before issue 13
os.environ.setdefault("TRACEJIT_SYNC_COMPILE", "1")


def median_time(fn, repeat, number=1):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def chain_numpy(a, b, c):
    x = a * b
    x = x + c
    x = np.tanh(x)
    x = x * 0.5
    x = x - a
    x = np.exp(x)
    x = x / (b + 2.0)
    x = np.maximum(x, 0.1)
    x = np.sqrt(x)
    return x * c


def chain_tracejit(a, b, c):
    x = a * b
    x = x + c
    x = x.tanh()
    x = x * 0.5
    x = x - a
    x = x.exp()
    x = x / (b + 2.0)
    x = x.clamp(min=0.1)
    x = x.sqrt()
    return x * c


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(1_000_000).astype(np.float32) for _ in range(3)]
    tensors = [tj.from_numpy(a) for a in arrays]
    np.testing.assert_allclose(chain_tracejit(*tensors).numpy(), chain_numpy(*arrays), rtol=1e-6)
    t_np = median_time(lambda: chain_numpy(*arrays), args.repeat)
    t_tj = median_time(lambda: chain_tracejit(*tensors), args.repeat)
    print(f"10-op chain, 1M float32: numpy {t_np * 1e3:.2f} ms, tracejit eager {t_tj * 1e3:.2f} ms,"
          f" ratio {t_tj / t_np:.2f}x (goal <= 1.3x)")

    small_np = np.ones(16, np.float32)
    small = tj.ones(16)
    cases = {
        "add": (lambda: small + small, lambda: small_np + small_np),
        "mul by scalar": (lambda: small * 2.0, lambda: small_np * 2.0),
        "exp": (lambda: small.exp(), lambda: np.exp(small_np)),
        "sum": (lambda: small.sum(), lambda: small_np.sum()),
        "reshape": (lambda: small.reshape(4, 4), lambda: small_np.reshape(4, 4)),
        "slice": (lambda: small[2:10], lambda: small_np[2:10]),
        "matmul 4x4": (lambda: small.reshape(4, 4) @ small.reshape(4, 4),
                       lambda: small_np.reshape(4, 4) @ small_np.reshape(4, 4)),
    }
    print("per-op overhead on 16 elements (median of repeats; goal < 5 us):")
    for name, (f_tj, f_np) in cases.items():
        a = median_time(f_tj, args.repeat, number=2000)
        b = median_time(f_np, args.repeat, number=2000)
        print(f"  {name:14s} tracejit {a * 1e6:6.2f} us  numpy {b * 1e6:6.2f} us  "
              f"overhead {(a - b) * 1e6:5.2f} us")


if __name__ == "__main__":
    main()
