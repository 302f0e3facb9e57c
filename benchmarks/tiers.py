"""Tiered execution (issue 13): when does a traced training step return, and when does it run
compiled, in a fresh process with an empty compile cache?

    python benchmarks/tiers.py [--workload mlp|cnn|all] [--repeat 1]

Each run is a subprocess of its own with a fresh ``TRACEJIT_CACHE_DIR``. It times the eager
step (median of 5, after 2 warm-up steps), then calls the traced step in a loop, as a training
loop would, and records:

- first call returns: the first call of the traced step (it traces, running the step eagerly);
- cold to compiled: from the first call until a call that ran compiled code has returned
  (tiered: the calls in between run on the interpreter while a worker compiles; sync: the third
  call compiles in this process and runs);
- the step's compiled time (median of 5, after ``tj.wait_compiles()``).

Workloads: ``mlp``, the demo's 784-256-10 MLP step (SGD with momentum, batch 256); ``cnn``,
``examples/cnn.py``'s step (batch 32).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mlp(batch: int = 256):
    import numpy as np

    import tracejit as tj
    from tracejit import nn, optim
    rng = np.random.default_rng(0)
    x = tj.tensor(rng.standard_normal((batch, 784)).astype(np.float32))
    y = tj.tensor(rng.integers(0, 10, batch))

    def make():
        tj.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def step(x, y):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss.detach()
        return step
    return make, (x, y)


def _cnn():
    import tracejit as tj
    from tracejit import nn, optim
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import cnn

    images, labels = cnn.make_data(32, seed=1)
    x, y = tj.tensor(images), tj.tensor(labels)

    def make():
        model = cnn.build_model(0)
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def step(x, y):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss.detach()
        return step
    return make, (x, y)


def _median_ms(fn, n=5):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def child(workload: str, mode: str) -> dict:
    import tracejit as tj
    from tracejit.runtime.tiered import TieredRunner

    make, args = {"mlp": _mlp, "cnn": _cnn}[workload]()
    eager = make()
    for _ in range(2):
        eager(*args)
    eager_ms = _median_ms(lambda: eager(*args))
    step = tj.trace(make(), compile=mode)
    t0 = time.perf_counter()
    step(*args)
    first = time.perf_counter() - t0
    calls = 1
    while True:
        spec = max(step.specs(), key=lambda s: s.calls) if step.specs() else None
        runner = spec.runner if spec is not None else None
        # tiered: the specialization's runner is swapped for the compiled one when it is ready
        compiled_now = mode == "sync" and calls >= 2 or (
            spec is not None and spec.calls > 0 and not isinstance(runner, TieredRunner))
        step(*args)
        calls += 1
        if compiled_now or calls > 100000:
            break
    to_compiled = time.perf_counter() - t0
    tj.wait_compiles()
    compiled_ms = _median_ms(lambda: step(*args))
    return {"eager_ms": eager_ms, "first_s": first, "to_compiled_s": to_compiled,
            "calls": calls, "compiled_ms": compiled_ms}


def run(workload: str, mode: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="tjbench-tiers-") as d:
        env = dict(os.environ, TRACEJIT_CACHE_DIR=d)
        env.pop("TRACEJIT_SYNC_COMPILE", None)
        out = subprocess.run([sys.executable, __file__, "--child", workload, mode], env=env,
                             capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=("mlp", "cnn", "all"), default="mlp")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    workloads = ["mlp", "cnn"] if args.workload == "all" else [args.workload]
    print("| workload | mode | eager step | first call returns | cold to compiled | calls "
          "| compiled step |")
    print("|---|---|---|---|---|---|---|")
    for w in workloads:
        for mode in ("tiered", "sync"):
            runs = [run(w, mode) for _ in range(args.repeat)]

            def med(key, runs=runs):
                return statistics.median(r[key] for r in runs)
            print(f"| {w} | {mode} | {med('eager_ms'):.1f} ms | {med('first_s'):.2f} s "
                  f"| {med('to_compiled_s'):.2f} s | {med('calls'):.0f} "
                  f"| {med('compiled_ms'):.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
