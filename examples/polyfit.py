"""The classic PyTorch tutorial: fit y = sin(x) on [-pi, pi] by a + b x + c x^2 + d x^3.

    python examples/polyfit.py --mode traced --steps 2000

Three versions of the same 2000-step gradient descent (lr 1e-6, sum of squared errors over 2000
points), all from the same starting coefficients:

- ``numpy``: gradients written by hand (the tutorial's reference);
- ``eager``: tracejit tensors and autograd (``loss.backward()``), op by op;
- ``traced``: the whole step (forward, backward, update) traced and compiled with
  ``tracejit.trace``.

``--mode all`` (the default) runs the three and compares their final losses. The loops are the
ones ``python -m tracejit demo`` runs (``tracejit.__main__``); this script adds the loss curve and
step times.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tracejit as tj
from tracejit.__main__ import polyfit_compiled, polyfit_eager, polyfit_numpy

VARIANTS = {"numpy": polyfit_numpy, "eager": polyfit_eager, "traced": polyfit_compiled}
LOG_EVERY = 500  # the loops in tracejit.__main__ report the loss every 500 steps


def train(mode: str = "eager", steps: int = 2000, lr: float = 1e-6, log=None,
          times: list | None = None, coeffs: list | None = None) -> list[float]:
    """Run one variant; returns the loss every 500 steps and at the last step.

    ``times`` (when given) receives the mean step time of every 500-step stretch, ``coeffs`` the
    fitted (a, b, c, d), and ``log(step, loss)`` is called every 500 steps.
    """
    if mode not in VARIANTS:
        raise ValueError(f"mode must be one of {sorted(VARIANTS)}, got {mode!r}")
    losses = []
    last = [time.perf_counter()]

    def record(step, loss):
        now = time.perf_counter()
        if times is not None:
            times.append((now - last[0]) / LOG_EVERY)
        last[0] = now
        losses.append(loss)
        if log is not None:
            log(step, loss)

    t0 = time.perf_counter()
    final, fitted = VARIANTS[mode](steps, lr, log=record)
    if coeffs is not None:
        coeffs.extend(float(v) for v in fitted)
    if steps % LOG_EVERY:
        losses.append(final)
        if log is not None:
            log(steps, final)
        if times is not None and not losses[:-1]:  # no full stretch: the mean over the run
            times.append((time.perf_counter() - t0) / steps)
    return losses


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("all", *VARIANTS), default="all")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-6)
    args = parser.parse_args(argv)
    modes = list(VARIANTS) if args.mode == "all" else [args.mode]
    if "traced" in modes:
        # trace and compile once beforehand (numba keeps the machine code in its disk cache, so
        # the timed run below only traces again)
        polyfit_compiled(3, args.lr)
        tj.wait_compiles()  # compiled in the background: wait for it
    finals, coeffs = {}, []
    for mode in modes:
        print(f"{mode}: fit y = sin(x) by a cubic, {args.steps} steps, lr {args.lr}")
        times: list[float] = []
        coeffs.clear()
        losses = train(mode, args.steps, args.lr, times=times, coeffs=coeffs,
                       log=lambda s, v: print(f"  step {s:5d}  loss {v:9.3f}"))
        finals[mode] = losses[-1]
        print(f"  median step time: {np.median(times) * 1e3:.4f} ms")
    a, b, c, d = coeffs
    print(f"result ({modes[-1]}): y = {a:.4f} {b:+.4f} x {c:+.4f} x^2 {d:+.4f} x^3")
    print("final loss: " + ", ".join(f"{m} {v:.3f}" for m, v in finals.items()))


if __name__ == "__main__":
    main()
