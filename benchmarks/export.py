"""Loading an export vs tracing again: ``tj.load`` of a 784-256-10 MLP training-step file plus
its first call, against the first call of the same traced step (trace, passes, lowering and
the first run), each in a fresh process whose compile cache is warm (numba's machine code is on
disk for both: the loaded graph lowers to the same source). Goal: load <= 1.2x the first call.

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
        tj.trace(step)(x, y)
    else:
        tj.load(path).train_step(x, y)
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def measure(mode: str, path: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", mode, path], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


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
    traced, load = (statistics.median(times[m]) for m in ("traced", "load"))
    print(f"MLP 784-256-10 training step (batch 256, SGD), warm compile cache, "
          f"{args.repeat} processes each:")
    print(f"  first call of the traced step:  {traced * 1e3:8.1f} ms")
    print(f"  tj.load + first call:           {load * 1e3:8.1f} ms")
    print(f"  ratio load / traced:            {load / traced:8.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
