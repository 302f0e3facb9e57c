"""Where the cold compile time of a training step goes (issue 13).

    TRACEJIT_CACHE_DIR is set to a fresh temporary directory by this script:
    python benchmarks/compile_time.py [--batch 256] [--repeat 1] [--workload mlp|cnn]
                                      [--functions 20]

Traces and compiles the MLP training step of ``python -m tracejit`` (784-256-10, SGD with
momentum, cross-entropy; ``--workload cnn``: ``examples/cnn.py``'s step, batch 32) in a fresh
process with an empty cache, and splits the time from the
first call to the first compiled result into our stages (timers around them) and numba's
(its per-pass pipeline timings, ``metadata['pipeline_times']``, and the LLVM time from
numba's event API, ``numba:llvm_lock``):

- trace: running the step eagerly while recording the graph (Python, numpy);
- passes: ``passes.PIPELINE`` and ``COMPILE_PIPELINE`` (fold ... fuse);
- lower: ``codegen.lower`` (plans and the CPU renderer);
- import: writing and importing the generated module (``runtime.compile.load_module``);
- numba: the first call of the entry, which compiles it and every kernel it calls, split into
  type inference, parfor passes, lowering to LLVM IR, LLVM (optimisation and machine code) and
  the rest of numba's pipeline.

Each run is a subprocess of its own (numba compiles a function once per process); with
``--repeat N`` the table gives medians. ``--functions N`` also lists the N numba functions that
took longest to compile in the first run (a timer around ``Dispatcher.compile``; a function's
time includes the helpers it compiled first, which are listed indented below it).
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
from collections import defaultdict

# compiled code is timed: compiles block (no interpreter tier), as before issue 13
os.environ.setdefault("TRACEJIT_SYNC_COMPILE", "1")

STAGES = ["trace", "passes", "lower", "import", "numba"]
NUMBA_PARTS = ["type inference", "parfors", "lowering (IR)", "LLVM", "numba other"]


def _category(pass_name: str) -> str:
    name = pass_name.lower()
    if "typeinference" in name or "type_inference" in name:
        return "type inference"
    if "parfor" in name and "lowering" not in name:
        return "parfors"
    if "lowering" in name:
        return "lowering (IR)"
    return "numba other"


def child(batch: int, workload: str = "mlp") -> dict:
    """Runs in the subprocess: time every stage of the first compiled step."""
    from numba.core import event
    from numba.core.dispatcher import Dispatcher

    import tracejit as tj
    import tracejit.codegen as codegen
    import tracejit.passes as passes
    from tracejit.runtime import compile as rcompile
    from tracejit.tracing import front

    spent: dict = defaultdict(float)

    def timed(stage, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - t0
        return wrapper

    front._call_watched = timed("trace", front._call_watched)
    passes.run_pipeline = timed("passes", passes.run_pipeline)
    codegen.lower = timed("lower", codegen.lower)
    rcompile.load_module = timed("import", rcompile.load_module)
    rcompile.Runner._first_call = timed("numba", rcompile.Runner._first_call)
    compiles: list = []  # (seconds, depth, name) per Dispatcher.compile, in completion order
    depth = [0]
    real_compile = Dispatcher.compile

    def compile_timed(self, sig):
        depth[0] += 1
        t0 = time.perf_counter()
        try:
            return real_compile(self, sig)
        finally:
            depth[0] -= 1
            compiles.append((time.perf_counter() - t0, depth[0], self.py_func.__qualname__))
    Dispatcher.compile = compile_timed

    import tiers  # this directory's: the steps benchmarks/tiers.py times
    make, (x, y) = tiers._cnn() if workload == "cnn" else tiers._mlp(batch)
    step = tj.trace(make())

    llvm = event.TimingListener()
    t0 = time.perf_counter()
    with event.install_listener("numba:llvm_lock", llvm):
        # SGD with momentum: the 1st call traces the first step, the 2nd traces the others,
        # the 3rd runs (and compiles) that graph: as python -m tracejit's warm-up
        for _ in range(3):
            step(x, y)
    total = time.perf_counter() - t0

    parts: dict = defaultdict(float)
    functions = 0
    spec = step.specs()[-1]
    module = spec.runner.module
    for value in vars(module).values():
        for cres in getattr(value, "overloads", {}).values():
            functions += 1
            for pipeline in cres.metadata.get("pipeline_times", {}).values():
                for pass_name, t in pipeline.items():
                    parts[_category(pass_name)] += t.init + t.run + t.finalize
    llvm_s = llvm.duration if llvm.done else 0.0
    parts["LLVM"] = llvm_s
    # numba's lowering passes include the LLVM work done under the lock while they run
    parts["lowering (IR)"] = max(parts["lowering (IR)"] - llvm_s, 0.0)
    parts["numba other"] = max(spent["numba"] - sum(parts[k] for k in NUMBA_PARTS
                                                    if k != "numba other"), 0.0)
    kernels = sum(1 for v in vars(module).values() if hasattr(v, "overloads"))
    parallel = sum(1 for v in vars(module).values()
                   if getattr(v, "targetoptions", {}).get("parallel"))
    return {"total": total, **{k: spent[k] for k in STAGES}, **dict(parts),
            "functions": kernels, "compiled": functions, "parallel": parallel,
            "nodes": len(spec.compiled.graph.nodes), "compiles": compiles}


def _print_functions(compiles: list, n: int) -> None:
    """The n slowest top-level compiles, each followed by the helpers compiled inside it."""
    tops, inner, block = [], [], []
    for seconds, depth, name in compiles:  # a helper completes before the call that needs it
        if depth:
            block.append((seconds, depth, name))
        else:
            tops.append((seconds, name))
            inner.append(block)
            block = []
    total = sum(s for s, _ in tops)
    print(f"\n{len(tops)} numba functions compiled at the top level, {total:.2f} s in all; "
          f"the {min(n, len(tops))} slowest (first run):\n")
    print("| seconds | function |")
    print("|---|---|")
    for k in sorted(range(len(tops)), key=lambda k: -tops[k][0])[:n]:
        print(f"| {tops[k][0]:.3f} | {tops[k][1]} |")
        for seconds, depth, name in inner[k]:
            if seconds >= 0.005:  # (the rest are lookups of what was compiled already)
                print(f"| {seconds:.3f} | {'&nbsp;&nbsp;' * depth}{name} (inside) |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeat", type=int, default=1, help="fresh processes; medians")
    p.add_argument("--workload", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--functions", type=int, default=0,
                   help="list the N numba functions slowest to compile")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.batch, args.workload)))
        return 0
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, TRACEJIT_CACHE_DIR=d)
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                                  "--batch", str(args.batch), "--workload", args.workload],
                                 env=env, capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))

    def med(k):
        return statistics.median(r[k] for r in runs)

    total = med("total")
    what = "CNN training step (examples/cnn.py), batch 32" if args.workload == "cnn" else \
        f"MLP training step 784-256-10, batch {args.batch}"
    print(f"{what}, SGD momentum; cold cache; {args.repeat} fresh process(es), medians")
    print(f"generated module: {runs[0]['functions']} numba functions "
          f"({runs[0]['parallel']} parallel), {runs[0]['nodes']} fused-graph nodes\n")
    print("| stage | seconds | share |")
    print("|---|---|---|")
    for k in STAGES:
        print(f"| {k} | {med(k):.2f} | {med(k) / total:.0%} |")
        if k == "numba":
            for part in NUMBA_PARTS:
                print(f"| &nbsp;&nbsp;{part} | {med(part):.2f} | {med(part) / total:.0%} |")
    rest = statistics.median(r["total"] - sum(r[k] for k in STAGES) for r in runs)
    print(f"| eager runs, guards, other | {rest:.2f} | {rest / total:.0%} |")
    print(f"| **first call to compiled result (3 calls)** | **{total:.2f}** | 100% |")
    if args.functions:
        _print_functions(runs[0]["compiles"], args.functions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
