"""``python -m tracejit demo``: the classic fit of y = sin(x) by a cubic, trained with autograd."""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def polyfit_numpy(steps: int = 2000, lr: float = 1e-6):
    """The tutorial's numpy version, gradients written by hand (the reference)."""
    x = np.linspace(-math.pi, math.pi, 2000, dtype=np.float32)
    y = np.sin(x)
    rng = np.random.default_rng(0)
    a, b, c, d = (np.float32(v) for v in rng.standard_normal(4))
    for _ in range(steps):
        y_pred = a + b * x + c * x ** 2 + d * x ** 3
        loss = float(np.square(y_pred - y).sum())
        g = 2.0 * (y_pred - y)
        a -= lr * g.sum()
        b -= lr * (g * x).sum()
        c -= lr * (g * x ** 2).sum()
        d -= lr * (g * x ** 3).sum()
    return loss, (a, b, c, d)


def polyfit_eager(steps: int = 2000, lr: float = 1e-6, log=None):
    """The same fit with tracejit tensors and autograd (eager)."""
    import tracejit as tj

    x = tj.linspace(-math.pi, math.pi, 2000)
    y = x.sin()
    rng = np.random.default_rng(0)
    params = [tj.tensor(float(v), requires_grad=True) for v in rng.standard_normal(4)]
    a, b, c, d = params
    for t in range(steps):
        y_pred = a + b * x + c * x ** 2 + d * x ** 3
        loss = ((y_pred - y) ** 2).sum()
        if log and t % 500 == 499:
            log(t + 1, loss.item())
        loss.backward()
        with tj.no_grad():
            for p in params:
                p -= lr * p.grad
                p.grad = None
    return loss.item(), tuple(p.item() for p in params)


def demo(steps: int = 2000) -> None:
    print("tracejit demo: fit y = sin(x) on 2000 points by a + b x + c x^2 + d x^3, lr 1e-6")
    t0 = time.perf_counter()
    np_loss, _ = polyfit_numpy(steps)
    t_np = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss, (a, b, c, d) = polyfit_eager(steps, log=lambda s, v: print(f"  step {s:5d}  loss {v:9.3f}"))
    t_eager = time.perf_counter() - t0
    print(f"result: y = {a:.4f} + {b:.4f} x + {c:.4f} x^2 + {d:.4f} x^3")
    print(f"final loss: tracejit eager autograd {loss:.3f}, numpy hand-written gradients {np_loss:.3f}")
    print(f"time for {steps} steps: numpy {t_np * 1e3:.0f} ms, tracejit eager {t_eager * 1e3:.0f} ms "
          f"({t_eager / t_np:.1f}x numpy)")
    print("(compiled @tracejit.trace training arrives with the compiler; this demo is eager)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tracejit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train the polyfit example and print timings")
    p.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.steps)


if __name__ == "__main__":
    main()
