"""Loading an export vs tracing again: ``tj.load`` of a 784-256-10 MLP training-step file
against the first call of the same traced step, each in a fresh process whose compile cache is
warm (numba's machine code is on disk for both: the loaded graph lowers to the same source).
Goal: load <= 1.2x the first call.

NOTE: a traced function's first call runs eagerly while it records (trace, passes, lowering;
numba's machine code is only loaded by the second call), while a loaded entry's first call
runs the compiled code. So two pairs are timed: ``tj.load`` against the traced first call (the
issue's goal), and until compiled code has run once: load + first call against the traced
function's calls until its compiled code has run (the third: the second traces again, as the
first set the parameters' .grad).

    python benchmarks/export.py [--repeat 7]

Each measurement is its own process (``--child``), run alternately; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# compiled code is timed: compiles block (no interpreter tier), as before issue 13
os.environ.setdefault("TRACEJIT_SYNC_COMPILE", "1")


def make_step():
    import tracejit as tj
    from tracejit import nn, optim

    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    rng = np.random.default_rng(0)
    x = tj.tensor(rng.standard_normal((256, 784)).astype(np.float32))
    y = tj.tensor(rng.integers(0, 10, 256))
    return step, x, y


def child(mode: str, path: str) -> None:
    import tracejit as tj

    step, x, y = make_step()
    t0 = time.perf_counter()
    if mode == "traced":
        f = tj.trace(step)
        f(x, y)
        t1 = time.perf_counter()
        # NOTE: the second call traces again (the first one set the parameters' .grad, which
        # the graph is specialised on); calls go on until compiled code has run
        while not any(getattr(s.runner, "compiled", False) for s in f.specs()):
            f(x, y)
    else:
        loaded = tj.load(path)
        t1 = time.perf_counter()
        loaded.train_step(x, y)
    t2 = time.perf_counter()
    print(json.dumps({"first": t1 - t0, "compiled": t2 - t0}))


def measure(mode: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, path], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FILE"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import tracejit as tj

    path = os.path.join(tempfile.mkdtemp(prefix="tj-export-bench-"), "mlp_step.tjit")
    step, x, y = make_step()
    tj.export({"train_step": (step, (x, y))}).save(path)
    for mode in ("traced", "load"):  # warm the compile cache for both
        measure(mode, path)
    times: dict = {"traced": [], "load": []}
    for _ in range(args.repeat):
        for mode in times:
            times[mode].append(measure(mode, path))

    def med(mode, key):
        return statistics.median(t[key] for t in times[mode])

    first, load = med("traced", "first"), med("load", "first")
    two, load_call = med("traced", "compiled"), med("load", "compiled")
    print(f"MLP 784-256-10 training step (batch 256, SGD), warm compile cache, "
          f"{args.repeat} processes each, medians:")
    print(f"  traced step, first call:           {first * 1e3:8.1f} ms")
    print(f"  tj.load:                           {load * 1e3:8.1f} ms   "
          f"ratio {load / first:.2f}x (goal <= 1.2x)")
    print(f"  traced step, until compiled ran:   {two * 1e3:8.1f} ms")
    print(f"  tj.load + first call:              {load_call * 1e3:8.1f} ms   "
          f"ratio {load_call / two:.2f}x")


if __name__ == "__main__":
    main()
