"""Compiled vs eager: tracejit.trace (numba) against numpy, tracejit eager, and (when importable)
torch eager, torch.compile and jax.jit, all in one process on the same float32 inputs.

    python benchmarks/compiled.py                    # full sizes (a few minutes; torch.compile
                                                     # and jax.jit compile on their first call)
    python benchmarks/compiled.py --quick            # small sizes, few repeats: a smoke test
    python benchmarks/compiled.py --only gelu,tiny --repeat 20
    python benchmarks/compiled.py --no-torch --no-jax
    python benchmarks/compiled.py --threads 1         # every thread pool single-threaded

Every implementation is checked against numpy (allclose) before it is timed. Times are medians
over ``--repeat`` samples taken after warm-up, round-robin across the implementations (one
sample of each in turn, so a load change on a shared machine hits every column alike); a sample
averages enough back-to-back calls to last a few milliseconds. The ``compile`` rows run fresh
subprocesses: cold compile of the gelu graph (empty TRACEJIT_CACHE_DIR) and start-up with a warm
cache directory. Shared, noisy machines: compare the ratios, not absolute times. On a machine
whose cores are busy with other work, thread pools that spin while they wait (numba's default
OpenMP layer, OpenBLAS, torch's OpenMP) lose whole scheduler time slices per call; the header
prints the load average, and ``--threads 1`` (or ``OMP_WAIT_POLICY=passive``) takes that out.

torch and jax are optional (``pip install torch jax jaxlib``); tracejit never imports them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# compiled code is timed: compiles block (no interpreter tier), as before issue 13
os.environ.setdefault("TRACEJIT_SYNC_COMPILE", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import tracejit as tj  # noqa: E402
import tracejit.nn.functional as TF  # noqa: E402

COLUMNS = ["numpy", "tracejit eager", "compiled", "torch", "torch.compile", "jax.jit"]
GELU_C = math.sqrt(2 / math.pi)


# ---------------------------------------------------------------------------- optional frameworks


class Frameworks:
    """torch / jax when importable (and not disabled); ``why`` says why a column is empty."""

    def __init__(self, use_torch: bool, use_jax: bool):
        self.torch = self.jax = self.jnp = None
        self.why: dict = {}
        if use_torch:
            try:
                import torch
                self.torch = torch
            except ImportError as e:
                self.why["torch"] = self.why["torch.compile"] = f"torch not importable ({e})"
        else:
            self.why["torch"] = self.why["torch.compile"] = "disabled (--no-torch)"
        if use_jax:
            try:
                import jax
                import jax.numpy as jnp
                self.jax, self.jnp = jax, jnp
            except ImportError as e:
                self.why["jax.jit"] = f"jax not importable ({e})"
        else:
            self.why["jax.jit"] = "disabled (--no-jax)"

    def versions(self) -> str:
        import numba
        parts = [f"numpy {np.__version__}", f"numba {numba.__version__} "
                 f"({numba.config.NUMBA_NUM_THREADS} threads)", f"tracejit {tj.__version__}"]
        if self.torch is not None:
            parts.append(f"torch {self.torch.__version__} ({self.torch.get_num_threads()} threads)")
        if self.jax is not None:
            parts.append(f"jax {self.jax.__version__} ({self.jax.default_backend()})")
        return ", ".join(parts)


# ---------------------------------------------------------------------------- workloads
# Each workload gives the same computation four ways: numpy (written out), tracejit (Tensor
# methods; the same function runs eagerly and under tracejit.trace), torch, jax.numpy.


def gelu_np(x):
    return 0.5 * x * (1 + np.tanh(GELU_C * (x + 0.044715 * x * x * x)))


def gelu_tj(x):
    return x.gelu(approximate="tanh")


# gelu written out as users write it, with the cube spelled two ways: simplify turns x ** 3
# into x * x * x (issue 13), so both should run at the same speed; tanh is the module's
def gelu_pow3(x, tanh=None):
    tanh = tanh or (lambda t: t.tanh())
    return 0.5 * x * (1 + tanh(GELU_C * (x + 0.044715 * x ** 3)))


def gelu_cube(x, tanh=None):
    tanh = tanh or (lambda t: t.tanh())
    return 0.5 * x * (1 + tanh(GELU_C * (x + 0.044715 * (x * x * x))))


# the same 10-op chain as the eager benchmark (this script's folder is on sys.path)
from eager_overhead import chain_numpy as chain_np  # noqa: E402
from eager_overhead import chain_tracejit as chain_tj  # noqa: E402


def softmax_np(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_tj(x):
    return x.softmax(-1)


def layer_norm_np(x, w, b, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    d = x - mean
    var = (d * d).mean(axis=-1, keepdims=True)
    return d / np.sqrt(var + eps) * w + b


def layer_norm_tj(x, w, b):
    return TF.layer_norm(x, (x.shape[-1],), w, b)


def sum_np(x):
    return x.sum()


def sum_tj(x):
    return x.sum()


def mean_np(x):
    return x.mean()


def mean_tj(x):
    return x.mean()


def mlp_np(x, w1, b1, w2, b2):
    return np.maximum(x @ w1.T + b1, 0) @ w2.T + b2


def mlp_tj(x, w1, b1, w2, b2):
    return TF.linear(TF.linear(x, w1, b1).relu(), w2, b2)


def tiny_np(x):
    return np.maximum(x * 2 + 1, 0)


def tiny_tj(x):
    return (x * 2 + 1).relu()


def torch_fns(torch):
    F = torch.nn.functional

    def chain(a, b, c):
        x = torch.tanh(a * b + c) * 0.5 - a
        x = torch.exp(x) / (b + 2.0)
        return torch.sqrt(torch.clamp(x, min=0.1)) * c

    return {
        "gelu": lambda x: F.gelu(x, approximate="tanh"),
        "gelu_pow3": lambda x: gelu_pow3(x, torch.tanh),
        "gelu_cube": lambda x: gelu_cube(x, torch.tanh),
        "chain": chain,
        "softmax": lambda x: torch.softmax(x, -1),
        "layer_norm": lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b),
        "mlp": lambda x, w1, b1, w2, b2: F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2),
        "tiny": lambda x: torch.relu(x * 2 + 1),
        "sum": lambda x: x.sum(),
        "mean": lambda x: x.mean(),
    }


def jax_fns(jax, jnp):
    def chain(a, b, c):
        x = jnp.tanh(a * b + c) * 0.5 - a
        x = jnp.exp(x) / (b + 2.0)
        return jnp.sqrt(jnp.maximum(x, 0.1)) * c

    def layer_norm(x, w, b):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * w + b

    return {
        "gelu": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_pow3": lambda x: gelu_pow3(x, jnp.tanh),
        "gelu_cube": lambda x: gelu_cube(x, jnp.tanh),
        "chain": chain,
        "softmax": lambda x: jax.nn.softmax(x, axis=-1),
        "layer_norm": layer_norm,
        "mlp": lambda x, w1, b1, w2, b2: jnp.maximum(x @ w1.T + b1, 0) @ w2.T + b2,
        "tiny": lambda x: jnp.maximum(x * 2 + 1, 0),
        "sum": lambda x: x.sum(),
        "mean": lambda x: x.mean(),
    }


@dataclass
class Workload:
    name: str
    group: str  # key into the torch/jax function tables, and an --only name
    desc: str
    make: object  # rng -> list of float32 arrays
    np_fn: object
    tj_fn: object
    unit: str = "ms"
    rtol: float = 1e-4
    atol: float = 1e-5


def _normal(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def workloads(quick: bool) -> list:
    n1, n4, n16 = (1 << 14, 1 << 16, 1 << 18) if quick else (1 << 20, 1 << 22, 1 << 24)
    rows, cols = (256, 256) if quick else (4096, 1024)
    batch = 32 if quick else 256

    def label(n):
        return f"{n >> 20}M" if n >= 1 << 20 else f"{n >> 10}K"

    def mlp_inputs(rng):
        return [_normal(rng, batch, 784), _normal(rng, 256, 784, scale=784 ** -0.5),
                _normal(rng, 256, scale=0.1), _normal(rng, 10, 256, scale=256 ** -0.5),
                _normal(rng, 10, scale=0.1)]

    def ln_inputs(rng):
        return [_normal(rng, rows, cols), 1 + _normal(rng, cols, scale=0.1),
                _normal(rng, cols, scale=0.1)]

    return [
        Workload("tiny", "tiny", "(x * 2 + 1).relu(), 16 elements: per-call overhead",
                 lambda rng: [_normal(rng, 16)], tiny_np, tiny_tj, unit="us"),
        Workload(f"gelu_{label(n4)}", "gelu", f"gelu tanh, {n4:,} elements",
                 lambda rng: [_normal(rng, n4)], gelu_np, gelu_tj),
        Workload(f"gelu_{label(n16)}", "gelu", f"gelu tanh, {n16:,} elements",
                 lambda rng: [_normal(rng, n16)], gelu_np, gelu_tj),
        Workload(f"gelu_pow3_{label(n4)}", "gelu_pow3", f"gelu written with x ** 3, {n4:,} "
                 f"elements", lambda rng: [_normal(rng, n4)], gelu_np, gelu_pow3),
        Workload(f"gelu_cube_{label(n4)}", "gelu_cube", f"gelu written with x * x * x, {n4:,} "
                 f"elements", lambda rng: [_normal(rng, n4)], gelu_np, gelu_cube),
        Workload(f"chain_{label(n4)}", "chain", f"10-op elementwise chain, 3 x {n4:,} elements",
                 lambda rng: [_normal(rng, n4) for _ in range(3)], chain_np, chain_tj),
        Workload(f"softmax_{rows}x{cols}", "softmax", f"softmax over rows of {rows}x{cols}",
                 lambda rng: [_normal(rng, rows, cols, scale=3.0)], softmax_np, softmax_tj,
                 atol=1e-6),
        Workload(f"layer_norm_{rows}x{cols}", "layer_norm",
                 f"layer_norm over rows of {rows}x{cols}, weight and bias",
                 ln_inputs, layer_norm_np, layer_norm_tj),
        # float32 reductions: blocks of 1024 summed in float32, the blocks in float64
        # (codegen/cpu.py _blocked_sum); numpy sums pairwise
        *(Workload(f"{name}_{label(n)}", name, f"x.{name}() of {n:,} float32 elements",
                   lambda rng, n=n: [rng.random(n, dtype=np.float32)], np_fn, tj_fn,
                   rtol=1e-5)
          for name, np_fn, tj_fn in (("sum", sum_np, sum_tj), ("mean", mean_np, mean_tj))
          for n in (n1, n16)),
        Workload(f"mlp_b{batch}", "mlp", f"784-256-10 MLP forward (linear, relu, linear), "
                 f"batch {batch}", mlp_inputs, mlp_np, mlp_tj, atol=1e-4),
    ]


# ---------------------------------------------------------------------------- timing


def _sample(fn, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def measure(fns: dict, repeat: int, target_s: float, warmup: int = 2) -> dict:
    """Median seconds per call of each callable, sampled round-robin after warm-up."""
    numbers = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        one = _sample(fn, 1)
        numbers[name] = max(1, min(100_000, int(target_s / max(one, 1e-9))))
    samples: dict = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            samples[name].append(_sample(fn, numbers[name]))
    return {name: statistics.median(s) for name, s in samples.items()}


def check(name: str, got, want, w: Workload) -> str | None:
    """None if ``got`` matches numpy's ``want``, else a one-line description of the mismatch."""
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"{name}: shape {got.shape}, numpy gives {want.shape}"
    if got.dtype != want.dtype:
        return f"{name}: dtype {got.dtype}, numpy gives {want.dtype}"
    if not np.allclose(got, want, rtol=w.rtol, atol=w.atol):
        err = np.abs(got.astype(np.float64) - want)
        return (f"{name}: max abs error {err.max():.3g} (rtol {w.rtol}, atol {w.atol}) "
                f"at index {np.unravel_index(err.argmax(), err.shape)}")
    return None


@dataclass
class Result:
    workload: Workload
    times: dict = field(default_factory=dict)  # column -> seconds, or None
    notes: dict = field(default_factory=dict)  # column -> why it is empty / wrong
    failed: bool = False


def run_workload(w: Workload, fw: Frameworks, repeat: int, target_s: float) -> Result:
    res = Result(w)
    rng = np.random.default_rng(0)
    arrays = w.make(rng)
    want = w.np_fn(*arrays)
    tensors = [tj.from_numpy(a) for a in arrays]
    compiled = tj.trace(w.tj_fn)
    fns: dict = {
        "numpy": lambda: w.np_fn(*arrays),
        "tracejit eager": lambda: w.tj_fn(*tensors),
        "compiled": lambda: compiled(*tensors),
    }
    outputs = {"numpy": want, "tracejit eager": lambda: w.tj_fn(*tensors).numpy(),
               "compiled": lambda: compiled(*tensors).numpy()}
    if fw.torch is not None:
        torch = fw.torch
        t_fn = torch_fns(torch)[w.group]
        t_in = [torch.from_numpy(a) for a in arrays]
        t_comp = torch.compile(t_fn, dynamic=False)
        fns["torch"] = lambda: t_fn(*t_in)
        fns["torch.compile"] = lambda: t_comp(*t_in)
        outputs["torch"] = lambda: t_fn(*t_in).numpy()
        outputs["torch.compile"] = lambda: t_comp(*t_in).numpy()
    if fw.jax is not None:
        jax = fw.jax
        j_fn = jax.jit(jax_fns(jax, fw.jnp)[w.group])
        j_in = [jax.device_put(a) for a in arrays]
        fns["jax.jit"] = lambda: j_fn(*j_in).block_until_ready()
        outputs["jax.jit"] = lambda: np.asarray(j_fn(*j_in))
    for col in list(fns):
        if col == "numpy":
            continue
        # NOTE: check two calls: tracejit.trace's first call returns the values computed while
        # tracing, and only the second runs (and so numba-compiles) the generated code
        problem = None
        for call in ("1st", "2nd"):
            t0 = time.perf_counter()
            try:
                problem = check(f"{col} ({call} call)", outputs[col](), want, w)
            except Exception as e:  # a framework failing on this workload: report, keep going
                problem = f"{col} raised {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                if col in ("tracejit eager", "compiled"):
                    traceback.print_exc()
            if col in ("compiled", "torch.compile", "jax.jit"):
                res.notes[f"{col} {call} call"] = time.perf_counter() - t0
            if problem is not None:
                break
        if problem is not None:
            print(f"  MISMATCH {w.name}: {problem}", flush=True)
            res.notes[col] = "wrong"
            del fns[col]
            if col in ("tracejit eager", "compiled"):
                res.failed = True
    if "compiled" in fns and not _runs_compiled(compiled):
        print(f"  NOT COMPILED {w.name}: tracejit.trace ran the graph without numba "
              f"(no specialization, or it fell back to the reference interpreter)", flush=True)
        res.notes["compiled"] = "wrong"
        res.failed = True
        del fns["compiled"]
    times = measure(fns, repeat, target_s)
    for col in COLUMNS:
        res.times[col] = times.get(col)
    return res


def _runs_compiled(traced) -> bool:
    """Did the traced function's (only) specialization run numba code, not the interpreter?"""
    specs = traced.specs()  # NOTE: specializations maps an argument key to a list of variants
    runner = getattr(specs[0], "runner", None) if len(specs) == 1 else None
    return runner is not None and getattr(runner, "compiled", True)


# ---------------------------------------------------------------------------- start-up


CHILD = r"""
import json, os, sys, time
FLOOR_SRC = {floor!r}
t_start = time.monotonic()
sys.path.insert(0, {root!r})
import numpy as np
N, KIND = {n}, {kind!r}
x_np = (np.random.default_rng(0).standard_normal(N)).astype(np.float32)
t_import = time.monotonic()
if KIND == "tracejit":
    import tracejit as tj
    f = tj.trace(lambda x: x.gelu(approximate="tanh"))
    x = tj.from_numpy(x_np)
    run = lambda: f(x).numpy()
elif KIND == "torch.compile":
    import torch
    f = torch.compile(lambda x: torch.nn.functional.gelu(x, approximate="tanh"), dynamic=False)
    x = torch.from_numpy(x_np)
    run = lambda: f(x).numpy()
elif KIND == "numba floor":  # the least any numba-cached code costs: one njit function
    import numba
    d = os.environ["TRACEJIT_CACHE_DIR"]
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "floor_gelu.py")
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write(FLOOR_SRC)
    sys.path.insert(0, d)
    def run():
        import floor_gelu
        return floor_gelu.gelu(x_np, np.empty_like(x_np))
else:
    import jax
    f = jax.jit(lambda x: jax.nn.gelu(x, approximate=True))
    x = jax.device_put(x_np)
    run = lambda: np.asarray(f(x))
t_call = time.monotonic()
y1 = run()
t_first = time.monotonic()
y2 = run()
t_done = time.monotonic()
want = 0.5 * x_np * (1 + np.tanh({c!r} * (x_np + 0.044715 * x_np ** 3)))
ok = all(bool(np.allclose(y, want, rtol=1e-4, atol=1e-5)) for y in (y1, y2))
print("RESULT " + json.dumps(dict(start=t_start, imp=t_import, call=t_call, first=t_first,
                                  done=t_done, ok=ok)))
"""


FLOOR_SRC = f"""import math
import numba
import numpy as np


@numba.njit(cache=True, fastmath={{"reassoc", "contract"}})
def gelu(x, out):
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = 0.5 * v * (1.0 + math.tanh({GELU_C!r} * (v + 0.044715 * v * v * v)))
    return out
"""


def child_run(kind: str, env: dict, n: int) -> dict:
    code = CHILD.format(root=str(ROOT), n=n, kind=kind, c=GELU_C, floor=FLOOR_SRC)
    t_launch = time.monotonic()  # CLOCK_MONOTONIC: comparable with the child's stamps
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} child failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    r = json.loads(lines[-1][7:])
    if not r["ok"]:
        raise RuntimeError(f"{kind} child computed a wrong gelu")
    return {"1st call": r["first"] - r["call"], "2nd call": r["done"] - r["first"],
            "1st call -> 2nd result": r["done"] - r["call"],
            "import -> 2nd result": r["done"] - r["imp"],
            "process start -> 2nd result": r["done"] - t_launch}


def startup(fw: Frameworks, repeat: int, n: int) -> list:
    """Rows (label, {measure: median seconds}, runs, note) for cold compile and warm start."""
    rows = []
    base = {k: v for k, v in os.environ.items()
            if k not in ("TRACEJIT_CACHE_DIR", "NUMBA_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")}
    runs_cold, runs_warm = max(1, min(repeat, 3)), max(1, min(repeat, 5))
    kinds = ["tracejit", "numba floor"]
    if fw.torch is not None:
        kinds.append("torch.compile")
    if fw.jax is not None:
        kinds.append("jax.jit")
    with tempfile.TemporaryDirectory(prefix="tj-bench-") as tmp:
        for kind in kinds:
            print(f"  start-up: {kind} ...", flush=True)
            cold, warm, cold_numba = [], [], []
            last_dir = None
            for i in range(runs_cold):
                d = Path(tmp) / f"{kind}-cold-{i}"
                d.mkdir()
                env = dict(base, TRACEJIT_CACHE_DIR=str(d / "tj"),
                           TORCHINDUCTOR_CACHE_DIR=str(d / "inductor"))
                cold.append(child_run(kind, env, n))
                last_dir = env
                if kind == "tracejit":  # also without numba's cache of the shared helpers
                    env2 = dict(env, TRACEJIT_CACHE_DIR=str(d / "tj2"),
                                NUMBA_CACHE_DIR=str(d / "numba"))
                    cold_numba.append(child_run(kind, env2, n))
            if kind != "jax.jit":  # jax keeps no compile cache across processes by default
                for _ in range(runs_warm):
                    warm.append(child_run(kind, last_dir, n))

            def med(runs):
                return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

            cache = {"tracejit": "TRACEJIT_CACHE_DIR", "numba floor": "numba cache=True",
                     "torch.compile":
                     "TORCHINDUCTOR_CACHE_DIR", "jax.jit": "(no persistent cache)"}[kind]
            rows.append((f"{kind} cold", med(cold), len(cold), f"fresh {cache}"))
            if cold_numba:
                rows.append((f"{kind} cold+numba", med(cold_numba), len(cold_numba),
                             "fresh TRACEJIT_CACHE_DIR and NUMBA_CACHE_DIR (mathlib helpers "
                             "compiled too)"))
            if warm:
                rows.append((f"{kind} warm", med(warm), len(warm), f"warm {cache}"))
    return rows


# ---------------------------------------------------------------------------- report


def fmt_time(t, unit: str) -> str:
    if t is None:
        return "-"
    return f"{t * 1e6:.1f}" if unit == "us" else f"{t * 1e3:.2f}"


def fmt_ratio(a, b) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def table(headers: list, rows: list) -> str:
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w)
                              for i, (c, w) in enumerate(zip(r, widths))) + " |" for r in rows]
    return "\n".join([line, sep] + body)


HEADERS = ["workload", "unit", *COLUMNS, "eager vs numpy", "compiled vs numpy",
           "compiled vs best-of(torch.compile, jax.jit)"]


def report(results: list, fw: Frameworks) -> str:
    rows = []
    for r in results:
        t = r.times
        u = r.workload.unit
        cells = [fmt_time(t.get(c), u) if r.notes.get(c) != "wrong" else "WRONG"
                 for c in COLUMNS]
        best = [t[c] for c in ("torch.compile", "jax.jit") if t.get(c) is not None]
        rows.append([r.workload.name, u, *cells, fmt_ratio(t["tracejit eager"], t["numpy"]),
                     fmt_ratio(t["compiled"], t["numpy"]),
                     fmt_ratio(t["compiled"], min(best)) if best else "-"])
    out = [table(HEADERS, rows), "",
           "Times are medians per call (ms, or us where unit says so). Ratios are time / time: "
           "< 1.00x means tracejit is faster."]
    for col, why in fw.why.items():
        out.append(f"  {col}: {why}")
    return "\n".join(out)


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}")


def load_note() -> str:
    try:
        load = os.getloadavg()[0]
    except OSError:
        return "load average unknown"
    note = f"load average {load:.2f} on {os.cpu_count()} CPUs"
    if load > (os.cpu_count() or 1) - 0.5:
        note += (" (busy: other processes compete for the cores; multi-threaded columns "
                 "suffer most)")
    return note


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    p.add_argument("--repeat", type=int, default=None, help="samples per cell (default 15, "
                   "--quick 3)")
    p.add_argument("--only", default="", help="comma-separated workloads or groups: tiny, gelu, "
                   "gelu_pow3, gelu_cube, chain, softmax, layer_norm, mlp, compile (e.g. gelu_4M)")
    p.add_argument("--threads", type=int, default=None,
                   help="limit every thread pool (numba, OpenMP, BLAS, torch, XLA) to N threads "
                        "(re-executes with the environment set); default: each library's own")
    p.add_argument("--no-torch", action="store_true", help="skip the torch columns")
    p.add_argument("--no-jax", action="store_true", help="skip the jax column")
    args = p.parse_args(argv)
    if args.threads is not None and os.environ.get("TJ_BENCH_THREADS") != str(args.threads):
        # thread pools read these when their library loads, so set them and start again
        n = str(max(1, args.threads))
        env = dict(os.environ, TJ_BENCH_THREADS=str(args.threads), NUMBA_NUM_THREADS=n,
                   OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
        if n == "1":
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                " intra_op_parallelism_threads=1").strip()
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__),
                                   *(sys.argv[1:] if argv is None else argv)], env)
    repeat = args.repeat or (3 if args.quick else 15)
    target_s = 0.002 if args.quick else 0.01
    wl = workloads(args.quick)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    known = {w.name for w in wl} | {w.group for w in wl} | {"compile"}
    if only - known:
        p.error(f"--only: unknown {sorted(only - known)}; known: {sorted(known)}")
    selected = [w for w in wl if not only or w.name in only or w.group in only]
    fw = Frameworks(not args.no_torch, not args.no_jax)

    print(f"machine: {machine()}")
    print(f"versions: {fw.versions()}")
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                   if k.startswith(("OMP_", "NUMBA_", "OPENBLAS_", "MKL_", "TRACEJIT_", "XLA_")))
    print(f"environment: {env or '(no OMP_/NUMBA_/OPENBLAS_/MKL_/TRACEJIT_/XLA_ variables)'}")
    print(f"repeat {repeat}{' (quick sizes)' if args.quick else ''}; {load_note()}", flush=True)
    results, failed = [], False
    for w in selected:
        print(f"running {w.name}: {w.desc}", flush=True)
        r = run_workload(w, fw, repeat, target_s)
        first = [f"{k} {v * 1e3:.0f} ms" for k, v in r.notes.items()
                 if k.endswith(" call")]
        if first:
            print("  first calls (trace/compile + run): " + ", ".join(first), flush=True)
        failed |= r.failed
        results.append(r)
    start_rows = []
    if not only or "compile" in only:
        n = 4096
        print(f"running compile: cold compile and warm start of the gelu graph ({n} elements), "
              f"in subprocesses", flush=True)
        start_rows = startup(fw, repeat, n)

    print(f"\n{load_note()}")
    if results:
        print(report(results, fw))
    if start_rows:
        print()
        keys = ["1st call", "2nd call", "1st call -> 2nd result", "import -> 2nd result",
                "process start -> 2nd result"]
        print(table(["start-up (gelu graph, subprocess)", "runs", *keys, "cache"],
                    [[label, n_runs, *(f"{m[k] * 1e3:.0f} ms" for k in keys), note]
                     for label, m, n_runs, note in start_rows]))
        print("\nMedians over runs. tracejit's 1st call traces, lowers and imports the generated "
              "module (and with it numba) and returns the values computed while tracing; its 2nd "
              "call compiles the kernels, or loads their machine code from the cache. "
              "torch.compile and jax.jit compile on the 1st call. 'numba floor' is one "
              "hand-written @njit(cache=True) gelu loop in a module of its own: the least a "
              "numba-compiled function costs in a new process (importing numba, initialising "
              "its target context, loading machine code). 'import' starts before "
              "`import tracejit` (or torch / jax / numba), numpy already imported.")
    if failed:
        print("\nFAILED: a tracejit result disagrees with numpy (see MISMATCH above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
