"""Warm start (issue 13): a new process whose compile cache already holds the MLP training
step, from ``import tracejit`` to the step's first compiled result; numba's own floor in the
same run.

    python benchmarks/warm_start.py [--repeat 5]

A first subprocess fills a fresh ``TRACEJIT_CACHE_DIR`` (and ``NUMBA_CACHE_DIR`` for the floor).
Then, alternating, fresh processes time:

- tracejit: ``import tracejit`` -> building the demo's 784-256-10 MLP, SGD with momentum and the
  traced step -> calls until one has run compiled code (the first two trace: SGD's first step
  creates the momentum buffers, so the second traces again; the third loads the machine code
  from the cache and runs it);
- numba floor: ``import numba`` -> the first result of one hand-written
  ``@numba.njit(cache=True)`` function loaded from numba's cache (what any numba-cached code
  costs in a new process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

TRACEJIT = r"""
import time, json
t0 = time.perf_counter()
import numpy as np
import tracejit as tj
from tracejit import nn, optim
t_import = time.perf_counter()
rng = np.random.default_rng(0)
x = tj.tensor(rng.standard_normal((256, 784)).astype(np.float32))
y = tj.tensor(rng.integers(0, 10, 256))
tj.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

@tj.trace
def step(x, y):
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()

for _ in range(3):
    loss = step(x, y)
spec = max(step.specs(), key=lambda s: s.calls)
assert type(spec.runner).__name__ == "Runner", spec.runner  # ran compiled, from the cache
t_end = time.perf_counter()
print(json.dumps({"from_import": t_end - t0, "after_import": t_end - t_import,
                  "loss": float(loss.item())}))
"""

FLOOR = r"""
import time, json
t0 = time.perf_counter()
import numba
import numpy as np
t_import = time.perf_counter()

@numba.njit(cache=True)
def kernel(a, b, out):
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            v = a[i, j] + b[j]
            out[i, j] = v if v > 0 else 0.0

a = np.ones((256, 256), np.float32)
out = np.empty_like(a)
kernel(a, a[0], out)
t_end = time.perf_counter()
print(json.dumps({"from_import": t_end - t0, "after_import": t_end - t_import}))
"""


def run(code: str, env: dict, script_dir: str) -> dict:
    path = os.path.join(script_dir, "floor.py" if code is FLOOR else "step.py")
    with open(path, "w") as f:
        f.write(code)
    out = subprocess.run([sys.executable, path], env=env, capture_output=True, text=True,
                         timeout=1800)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tjbench-warm-") as d:
        env = dict(os.environ, TRACEJIT_CACHE_DIR=os.path.join(d, "tj"),
                   NUMBA_CACHE_DIR=os.path.join(d, "numba"))
        env.pop("TRACEJIT_SYNC_COMPILE", None)
        # as an installed package would: its modules' bytecode is cached (without .pyc files,
        # compiling tracejit's and numba's Python source costs ~0.5 s in every new process)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cold = dict(env, TRACEJIT_SYNC_COMPILE="1")  # fill the caches
        run(TRACEJIT, cold, d)
        run(FLOOR, cold, d)
        rows = {"tracejit": [], "floor": []}
        for _ in range(args.repeat):
            rows["tracejit"].append(run(TRACEJIT, env, d))
            rows["floor"].append(run(FLOOR, env, d))
    print("| warm cache, new process | import -> compiled result | after the import |")
    print("|---|---|---|")
    for name, label in (("tracejit", "tracejit: MLP training step (3 calls)"),
                        ("floor", "numba floor: one `@njit(cache=True)` function")):
        r = rows[name]
        print(f"| {label} | {statistics.median(x['from_import'] for x in r) * 1e3:.0f} ms "
              f"| {statistics.median(x['after_import'] for x in r) * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
