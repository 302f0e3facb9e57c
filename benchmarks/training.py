"""Training benchmarks: a 784-256-10 MLP training step (batch 256, SGD) and the polyfit loop
(2000 steps), compiled vs eager in one process, plus torch eager / torch.compile when torch
is importable. "traced model" traces only the model and runs loss, backward() and the
optimizer eagerly (the compiled backward graph is the outputs' grad_fn).

    python benchmarks/training.py [--repeat 20] [--no-torch]

Medians over repeats after warm-up; compare ratios, not absolute times (shared machines).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import tracejit as tj
from tracejit import nn, optim
from tracejit.__main__ import polyfit_compiled, polyfit_numpy

# compiled code is timed: compiles block (no interpreter tier), as before issue 13
os.environ.setdefault("TRACEJIT_SYNC_COMPILE", "1")


def median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def mlp_steps(repeat):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 784)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    results = {}

    def make(trace_model=False):
        tj.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        opt = optim.SGD(model.parameters(), lr=0.01)
        loss_fn = nn.CrossEntropyLoss()
        # trace_model: only the model is traced (compiled forward, compiled backward graph as
        # its grad_fn); loss, backward() and the update run eagerly, as with torch.compile(model)
        forward = tj.trace(model) if trace_model else model

        def step(x, y):
            opt.zero_grad()
            loss = loss_fn(forward(x), y)
            loss.backward()
            opt.step()
            return loss.detach()
        return step

    tx, ty = tj.tensor(x), tj.tensor(y)
    eager = make()
    results["tracejit eager"] = median_ms(lambda: eager(tx, ty), repeat)
    compiled = tj.trace(make())
    for _ in range(3):
        compiled(tx, ty)
    results["tracejit compiled"] = median_ms(lambda: compiled(tx, ty), repeat)
    traced_model = make(trace_model=True)
    for _ in range(3):
        traced_model(tx, ty)
    results["tracejit traced model"] = median_ms(lambda: traced_model(tx, ty), repeat)
    try:
        import torch
    except ImportError:
        return results
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    px, py = torch.from_numpy(x), torch.from_numpy(y)

    def tstep(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    results["torch eager"] = median_ms(lambda: tstep(px, py), repeat)
    try:
        cstep = torch.compile(tstep)
        for _ in range(3):
            cstep(px, py)
        results["torch.compile"] = median_ms(lambda: cstep(px, py), repeat)
    except Exception as e:  # torch.compile needs a C++ toolchain; report, do not fail
        results["torch.compile"] = f"unavailable ({type(e).__name__})"
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--polyfit-only", action="store_true", help="skip the MLP step")
    parser.add_argument("--polyfit-repeat", type=int, default=3)
    args = parser.parse_args()
    if args.no_torch:
        import sys
        sys.modules["torch"] = None
    if not args.polyfit_only:
        print("MLP 784-256-10 training step, batch 256, SGD (median ms):")
        for name, value in mlp_steps(args.repeat).items():
            print(f"  {name:22s} {value if isinstance(value, str) else f'{value:8.2f}'}")
    polyfit_compiled(3)  # compile once; the machine code is cached
    tj.wait_compiles()
    rep = args.polyfit_repeat
    t_np = median_ms(lambda: polyfit_numpy(2000), rep)
    t_c = median_ms(lambda: polyfit_compiled(2000), rep)
    print(f"polyfit, 2000 steps (median of {rep} ms):")
    print(f"  numpy hand-written {t_np:8.1f}")
    print(f"  tracejit compiled  {t_c:8.1f}   ({t_np / t_c:.1f}x the numpy loop, "
          f"{t_c / 2000 * 1e3:.1f} us per call, tracing included)")


if __name__ == "__main__":
    main()
