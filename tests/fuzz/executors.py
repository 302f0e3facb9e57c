"""Every way tracejit can run a program, in one table, and how their results are compared.

``EXECUTORS`` maps a name to ``run(program) -> Result``: the outputs, and every input tensor as
the call left it (in-place updates of inputs must be visible to the caller identically). A new
executor joins the differential tests by adding a row. CUDA is the exception: numba-cuda's
simulator must start in a process of its own, so test_cuda_differential.py runs a batch of
programs in one simulator child (cuda_child.py) and compares them here with ``compare``.

Tolerances (``tolerance``/``compare``): integer and bool results must be identical. Floats:
NaN positions identical, infinities identical (with their sign), and finite values within

    atol + rtol * |eager| + K * max(|perturbed - eager|)        K = 4

with (rtol, atol) = (1e-5, 1e-6) for float32 and (1e-12, 1e-12) for float64. The last term
scales the tolerance to the program: the program is run eagerly twice more with every inexact
float op's result nudged by a random amount of the size of its legitimate implementation
error (a few ulp of the result for libm functions and arithmetic, reassociated in sums:
``eps * n * sum|x|`` for reductions and matmul), so error amplified by later ops (cancellation,
exp of a sum) is allowed exactly where it arises. Positions where a nudge changes NaN-ness or
infinity are ill-conditioned and not compared; a discrete output that a nudge changes (it
should not: see strategies.DISCRETE_OPS) is not compared either.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

import tracejit as tj
from tracejit import ops
from tracejit.runtime.executor import write_back
from tracejit.runtime.interpret import interpret

from .program import P, S, V, run_step

RTOL = {np.dtype("float32"): 1e-5, np.dtype("float64"): 1e-12}
ATOL = {np.dtype("float32"): 1e-6, np.dtype("float64"): 1e-12}
K = 4.0
SEED = 0


@dataclass
class Result:
    outputs: list  # numpy arrays (or Python values)
    inputs: list  # numpy arrays: the input tensors after the call


def _arrays(outs) -> list:
    return [np.array(o._data) if isinstance(o, tj.Tensor) else o for o in outs]


def _leaves(p: P, out) -> list:
    return [out] if p.bare else list(out)


def run_eager(p: P, hook=None) -> Result:
    tj.manual_seed(SEED)
    args = p.make_args()
    with tj.eager():
        out = p.function(hook)(*args)
    return Result(_arrays(_leaves(p, out)), _arrays(args))


def _traced(p: P, backend: str):
    return tj.trace(p.function(), backend=backend)


def run_interpret(p: P) -> Result:
    """Traced with the reference backend; the second call runs the optimised graph on the
    interpreter (the first returns the values the tracer computed on the way)."""
    f = _traced(p, "interpret")
    for _ in range(2):
        tj.manual_seed(SEED)
        args = p.make_args()
        out = f(*args)
    info = f.cache_info()
    assert (info.misses, info.hits) == (1, 1), f"expected one trace and one hit, got {info}"
    return Result(_arrays(_leaves(p, out)), _arrays(args))


def _run_graph(p: P, which: str) -> Result:
    """``interpret`` called directly on the traced graph (raw or optimised); in-place updates
    of inputs are the graph's extra outputs, written back here as the tracer would."""
    f = _traced(p, "interpret")
    args = p.make_args()
    tj.manual_seed(SEED)
    f(*args)
    spec = f.specs()[0]
    graph = spec.raw_graph if which == "raw" else spec.optimized
    args = p.make_args()
    arrays = [a._data for a in args]
    assert len(graph.inputs) == len(arrays) + len(spec.captured)
    tj.manual_seed(SEED)
    outs = interpret(graph, arrays + [c.tensor._data for c in spec.captured])
    write_back(spec.compiled, args, outs)  # as the tracer does
    return Result([np.array(o) for o in outs[:spec.n_results]], [np.array(a) for a in arrays])


_LAST_COMPILED: dict = {}  # id(program) -> (first call, second call): both rows, one trace


def _compiled_calls(p: P):
    """The CPU backend. The first call traces (its results are the values the tracer computed
    on the way, eager ones) and compiles; the second takes the fast path and must run the
    compiled entry."""
    hit = _LAST_COMPILED.get(id(p))
    if hit is not None and hit[0] is p:
        return hit[1]
    f = _traced(p, "cpu")
    results = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            tj.manual_seed(SEED)
            args = p.make_args()
            out = f(*args)
            results.append(Result(_arrays(_leaves(p, out)), _arrays(args)))
    fallbacks = [str(w.message) for w in caught if "tracejit" in str(w.message)]
    assert not fallbacks, f"compiled call warned: {fallbacks}"
    info = f.cache_info()
    assert (info.misses, info.hits) == (1, 1), f"expected one trace and one hit, got {info}"
    spec = f.specs()[0]
    assert spec.runner is not None, "the specialization has no compiled runner"
    assert getattr(spec.runner, "compiled", True), "the compiled entry never ran"
    _LAST_COMPILED.clear()
    _LAST_COMPILED[id(p)] = (p, results)
    return results


def run_export_load(p: P) -> Result:
    """``tj.export`` the program's function for its example arguments, save, load, run: the
    loaded graph is lowered again from the file (its kernels' source matches the compiled
    row's, so the in-process module cache makes this cheap)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        tj.manual_seed(SEED)
        tj.export(tj.trace(p.function(), backend="cpu"), *p.make_args()).save(Path(d) / "p.tjit")
        loaded = tj.load(Path(d) / "p.tjit")
    tj.manual_seed(SEED)
    args = p.make_args()
    out = loaded(*args)
    return Result(_arrays(_leaves(p, out)), _arrays(args))


class Unsupported(Exception):
    """An executor cannot run this program (the reason is counted, the row skipped)."""


def run_onnxruntime(p: P) -> Result:
    """Exported with ``tj.onnx.export`` and run in onnxruntime. Programs it refuses (random
    draws, float64 erf) and programs that update their inputs in place (an exported model
    computes its results only) are skipped with the reason."""
    import onnxruntime as ort

    from tracejit.codegen.onnx import OnnxExportError

    before = _arrays(p.make_args())
    args = p.make_args()
    with tj.eager():
        p.function()(*args)
    if any(not np.array_equal(b, a, equal_nan=b.dtype.kind == "f")
           for b, a in zip(before, _arrays(args))):
        raise Unsupported("updates an input in place")
    try:
        model = tj.onnx.export(p.function(), *p.make_args())
    except OnnxExportError as e:
        raise Unsupported(str(e).split(" (at ")[0]) from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    feed = {i.name: np.array(a, order="C") for i, a in zip(sess.get_inputs(), before)}
    return Result(list(sess.run(None, feed)), before)


def _onnx_installed() -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


EXECUTORS = {
    "interpret": run_interpret,
    "interpret_raw": lambda p: _run_graph(p, "raw"),
    "interpret_opt": lambda p: _run_graph(p, "optimized"),
    "tracing_call": lambda p: _compiled_calls(p)[0],
    "compiled": lambda p: _compiled_calls(p)[1],
    "export_load": run_export_load,
    **({"onnxruntime": run_onnxruntime} if _onnx_installed() else {}),
}
SKIPPED: dict = {}  # (executor, reason) -> programs it did not run


# ----------------------------------------------------------------------------------------------
# tolerances

EPS = {np.dtype("float32"): float(np.finfo(np.float32).eps),
       np.dtype("float64"): float(np.finfo(np.float64).eps)}
ULPS = {np.dtype("float32"): 8.0, np.dtype("float64"): 4.0}  # libm / fast-math functions
_EXACT = None


def _op_name(step: S) -> str:
    name = step.op.lstrip(".")
    if name.endswith("_") and not name.startswith("__"):
        name = name[:-1]
    return {"__matmul__": "matmul"}.get(name, name)


def _f64(x):
    if isinstance(x, tj.Tensor):
        return x._data.astype(np.float64)
    return np.asarray(x, dtype=np.float64)


def _noise(step: S, env: list, res) -> np.ndarray | None:
    """Bound of the implementation error of a float step's result (None: exact)."""
    from .strategies import EXACT_OPS, _refs
    out = res._data
    if out.dtype.kind != "f" or out.size == 0:
        return None
    name = _op_name(step)
    if step.op in EXACT_OPS or name in EXACT_OPS:
        return None
    if name == "index_put" and not step.attr_dict.get("accumulate"):
        return None
    eps = EPS[out.dtype]
    o = out.astype(np.float64)
    operands = [a for a in step.args if not isinstance(a, tuple)]
    xs = [_f64(env[a]) if isinstance(a, V) else _f64(a) for a in operands]
    with np.errstate(all="ignore"):
        if name in ("sum", "cumsum", "matmul", "index_put", "scatter_add", "fold", "unfold",
                    "max_pool2d_grad"):
            # reassociated: eps * n * (the same op on |operands|)
            n = max([out.size] + [env[r]._data.size for r in _refs(step.args)])
            absenv = [tj.from_numpy(np.asarray(np.abs(t._data))) if isinstance(t, tj.Tensor) and
                      t.dtype.kind == "f" else t for t in env]
            with tj.no_grad():
                mag = run_step(step, absenv)._data.astype(np.float64)
            return 2 * eps * n * np.abs(mag)
        if name in ("prod", "cumprod"):
            return 2 * eps * max(env[step.args[0]]._data.size, 1) * np.abs(o)
        x = xs[0] if xs else o
        if name in ("add", "sub"):
            return 2 * eps * (np.abs(xs[0]) + (np.abs(xs[1]) if len(xs) > 1 else 0) + np.abs(o))
        if name in ("mul", "div", "floordiv"):
            return 2 * eps * np.abs(o)
        if name in ("remainder", "fmod"):
            return 2 * eps * (np.abs(xs[0]) + np.abs(o))
        if name == "pow":
            y = xs[1] if len(xs) > 1 else 1.0
            return ULPS[out.dtype] * eps * np.abs(o) * (
                1 + np.abs(y) + np.abs(y * np.log(np.abs(x))))
        deriv = {
            "exp": lambda: np.abs(x * o), "expm1": lambda: np.abs(x * (o + 1)),
            "log": lambda: np.ones_like(o), "log1p": lambda: np.abs(x / (1 + x)),
            "sqrt": lambda: 0.5 * np.abs(o), "rsqrt": lambda: 0.5 * np.abs(o),
            "sin": lambda: np.abs(x * np.cos(x)), "cos": lambda: np.abs(x * np.sin(x)),
            "sinh": lambda: np.abs(x * np.cosh(x)), "cosh": lambda: np.abs(x * np.sinh(x)),
            "tan": lambda: np.abs(x) * (1 + o * o), "tanh": lambda: np.abs(x) * (1 - o * o),
            "sigmoid": lambda: np.abs(x) * o * (1 - o),
            "erf": lambda: np.abs(x) * 1.1284 * np.exp(-x * x),
            "asin": lambda: np.abs(x) / np.sqrt(1 - x * x),
            "acos": lambda: np.abs(x) / np.sqrt(1 - x * x),
            "atan": lambda: np.abs(x) / (1 + x * x),
            "asinh": lambda: np.abs(x) / np.sqrt(1 + x * x),
            "acosh": lambda: np.abs(x) / np.sqrt(x * x - 1),
            "atanh": lambda: np.abs(x) / (1 - x * x),
            "atan2": lambda: np.ones_like(o),
        }.get(name)
        cond = deriv() if deriv is not None else np.zeros_like(o)
        return ULPS[out.dtype] * eps * (np.abs(o) + cond)


def _perturber(seed: int):
    rng = np.random.default_rng(seed)

    def hook(step, env, res):
        if not isinstance(res, tj.Tensor):
            return res
        bound = _noise(step, env, res)
        if bound is None:
            return res
        bound = np.broadcast_to(np.where(np.isfinite(bound), bound, 0.0), res.shape)
        u = rng.uniform(-1, 1, res.shape)
        with np.errstate(all="ignore"):
            nudged = np.asarray((res._data.astype(np.float64) + u * bound).astype(res.dtype))
        if step.op.endswith("_") or step.op == ".__setitem__":
            np.copyto(res._data, nudged)  # in place: the stored value carries the error
            return res
        return tj.from_numpy(nudged)

    return hook


@dataclass
class Tolerance:
    want: Result
    allow_out: list  # per output: array of allowed |diff| (floats), or None (exact / skip)
    allow_in: list
    skip_out: list  # per output: boolean mask of positions not compared, or True: whole output
    skip_in: list


def tolerance(p: P, want: Result) -> Tolerance:
    perturbed = [run_eager(p, _perturber(s)) for s in (1, 2)]
    allow_out, skip_out = _allow(want.outputs, [r.outputs for r in perturbed])
    allow_in, skip_in = _allow(want.inputs, [r.inputs for r in perturbed])
    return Tolerance(want, allow_out, allow_in, skip_out, skip_in)


def _allow(wants, perturbed):
    allows, skips = [], []
    for i, w in enumerate(wants):
        w = np.asarray(w)
        others = [np.asarray(r[i]) for r in perturbed]
        if w.dtype.kind != "f":
            differs = any(o.shape != w.shape or not np.array_equal(o, w) for o in others)
            allows.append(None)
            skips.append(True if differs else None)
            continue
        skip = np.zeros(w.shape, dtype=bool)
        spread = np.zeros(w.shape, dtype=np.float64)
        for o in others:
            skip |= np.isnan(o) != np.isnan(w)
            skip |= np.isinf(o) != np.isinf(w)
            with np.errstate(all="ignore"):
                d = np.abs(o.astype(np.float64) - w.astype(np.float64))
            spread = np.fmax(spread, np.where(np.isfinite(d), d, 0.0))
        with np.errstate(all="ignore"):
            allow = ATOL[w.dtype] + RTOL[w.dtype] * np.abs(w.astype(np.float64)) + K * spread
        allows.append(allow)
        skips.append(skip)
    return allows, skips


def compare(got: Result, tol: Tolerance, name: str, stats: dict | None = None) -> None:
    want = tol.want
    assert len(got.outputs) == len(want.outputs), f"{name}: output count"
    for what, gs, ws, allows, skips in (
            ("output", got.outputs, want.outputs, tol.allow_out, tol.skip_out),
            ("input", got.inputs, want.inputs, tol.allow_in, tol.skip_in)):
        for i, (g, w, allow, skip) in enumerate(zip(gs, ws, allows, skips)):
            label = f"{name}: {what} {i}"
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape, f"{label}: shape {g.shape} != eager {w.shape}"
            assert g.dtype == w.dtype, f"{label}: dtype {g.dtype} != eager {w.dtype}"
            if skip is True:
                if stats is not None:
                    stats["skipped_discrete"] = stats.get("skipped_discrete", 0) + 1
                continue
            if allow is None:
                np.testing.assert_array_equal(g, w, err_msg=label)
                continue
            keep = ~skip
            if stats is not None and skip.any():
                stats["skipped_positions"] = stats.get("skipped_positions", 0) + int(skip.sum())
            gk, wk = g[keep], w[keep]
            bad_nan = np.isnan(gk) != np.isnan(wk)
            assert not bad_nan.any(), f"{label}: NaN positions differ\n got {g}\nwant {w}"
            inf = np.isinf(wk) | np.isinf(gk)
            assert np.array_equal(gk[inf], wk[inf]), \
                f"{label}: infinities differ\n got {g}\nwant {w}"
            fin = np.isfinite(wk) & np.isfinite(gk)
            with np.errstate(all="ignore"):
                diff = np.abs(gk[fin].astype(np.float64) - wk[fin].astype(np.float64))
            lim = allow[keep][fin]
            if (diff > lim).any():
                j = int(np.argmax(diff - lim))
                raise AssertionError(
                    f"{label}: |diff| {diff[j]:.3g} > allowed {lim[j]:.3g} "
                    f"(got {gk[fin][j]!r}, eager {wk[fin][j]!r})\n got {g}\nwant {w}")


def check_all(p: P, executors=None, stats: dict | None = None) -> None:
    """Run ``p`` eagerly and on every executor; all must agree (see the module docstring)."""
    want = run_eager(p)
    tol = tolerance(p, want)
    for name, run in (executors or EXECUTORS).items():
        try:
            got = run(p)
        except Unsupported as e:
            SKIPPED[name, str(e)] = SKIPPED.get((name, str(e)), 0) + 1
            if stats is not None:
                stats[f"skipped {name}"] = stats.get(f"skipped {name}", 0) + 1
            continue
        except AssertionError:
            raise
        except Exception as e:
            raise AssertionError(f"{name} raised {type(e).__name__}: {e}") from e
        compare(got, tol, name, stats)


__all__ = ["EXECUTORS", "Result", "run_eager", "tolerance", "compare", "check_all", "ops"]
