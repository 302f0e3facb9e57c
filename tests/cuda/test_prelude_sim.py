"""The CUDA prelude's helpers, run in tiny kernels under numba-cuda's simulator (one child
process for all of them), give the eager results (``tracejit.ops``, numpy) on special values:
NaN, +-inf, -0.0, halves, negative operands of // and %, zero divisors.

The simulator runs the helpers as Python on numpy scalars, with numpy's ufuncs as the leaf
math (codegen/cuda_prelude.py, ``_leaves``): this checks everything the helpers add to the
leaves (branches, constants, signed zeros, dtypes), which is where they can be wrong; the
leaves on a GPU are libdevice's, with the same C semantics."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cuda.kernels import result_dtype
from tests.cuda.sim import run_in_simulator
from tracejit import ops
from tracejit.codegen import cuda_prelude as cp

nan, inf = np.nan, np.inf

FLOAT_UNARY = [nan, inf, -inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.1, 3.7, -3.7,
               1e-30, 88.0, -100.0, 1e30, 2.0, 0.49999997, -0.49999997, 710.0, -20.0]
INT_UNARY = [0, 1, -1, 2, -2, 7, -7, 100, -123456, 2**31 - 1, -(2**31 - 1)]
BOOLS = [False, True]
# Pairs for // % ** maximum minimum: signs, zeros of both signs, infinities, NaN, inexact 0.1
FLOAT_PAIRS = [(1, 0.1), (-7, 2), (7, -2), (-7, -2), (7, 2), (0, 0), (-0.0, 3), (5, inf),
               (-5, inf), (inf, 2), (-inf, 2), (nan, 1), (1, 0), (0, -3), (-4, 2), (4, -2),
               (1, nan), (3, -inf), (nan, 0), (0.0, -0.0), (-0.0, 0.0), (2.5, 0.5),
               (-2.5, -0.5), (1e30, 3), (-1, inf), (0, -1), (inf, inf), (2, -1), (-8, 1 / 3),
               (0.5, -inf), (-0.0, -0.0), (-inf, 0.5)]
INT_PAIRS = [(7, 2), (-7, 2), (7, -2), (-7, -2), (0, 3), (5, 0), (-5, 0), (0, 0), (1, 1),
             (-1, -1), (3, -4), (-3, 4), (6, 3), (-6, 3), (100, 7), (-100, 7), (2, 10), (9, 9)]
INT_POWERS = [(2, 0), (-2, 3), (3, 4), (0, 0), (0, 5), (1, 7), (-1, 7), (-1, 8), (5, 2),
              (7, 1), (-3, 3), (10, 10), (3, 40), (2, -1), (1, -2), (0, -1), (-2, 31), (2, 62)]
SCALAR_EXPONENTS = [0.5, 2.0, -1.0]
FLOAT_BASES = [nan, inf, -inf, 0.0, -0.0, 1.0, -1.0, 2.0, 4.0, 0.25]
CLAMP_BOUNDS = {"float32": (-1.5, 2.0), "float64": (-1.5, 2.0), "int32": (-2, 3),
                "int64": (-2, 3), "bool": (False, True)}
CAST_FROM = {"float32": [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 0.7, -0.7, 1e6, 3.0e9],
             "float64": [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 0.7, -0.7, 1e6, 1e300],
             "int32": [0, 1, -1, 7, -123456, 2**31 - 1],
             "int64": [0, 1, -1, 7, -123456, 2**31 - 1],
             "bool": BOOLS}
CAST_SPECIALS = [nan, inf, -inf]  # only to float and bool: NaN/inf to int differs by design

# Results compared within a tolerance: numpy's array loops (SIMD) and scalar functions may
# differ in the last bits; everything else must match bit for bit (signed zeros too).
INEXACT = {"exp", "log", "log1p", "expm1", "sin", "cos", "tan", "sinh", "cosh", "tanh",
           "sigmoid", "erf", "power", "power_scalar", "asin", "acos", "atan", "asinh", "acosh",
           "atanh", "atan2"}


def _op_of(call: str):
    name = cp.RENDERER_CALLS.get(call) or ops.template_calls()[call][0]
    return ops.OPS[name]


def _cases() -> dict:
    """``{case: (operands, expected)}`` for every helper."""
    cases = {}
    for (call, dtype) in sorted(cp.HELPERS):
        t = np.dtype(dtype)
        name = cp.helper_name(call, dtype)
        if call == "cast":
            for src, values in CAST_FROM.items():
                if t.kind in "fb" and np.dtype(src).kind == "f":
                    values = values + CAST_SPECIALS
                if t.kind in "iu":  # in range of the destination only (PTX saturates)
                    info = np.iinfo(t)
                    values = [v for v in values if info.min <= v <= info.max]
                x = np.array(values, src)
                with np.errstate(over="ignore"):  # 1e300 to float32 is inf
                    expected = ops.compute(ops.OPS["cast"], [x], {"dtype": t})
                cases[f"{name}-{src}"] = ([x], expected)
            continue
        operands, expected = _operands(call, t)
        cases[name] = (operands, expected)
    return cases


def _operands(call: str, t: np.dtype):
    kind = "float" if t.kind == "f" else "bool" if t == np.bool_ else "int"
    op = _op_of(call)
    with np.errstate(all="ignore"):
        if call == "clamp":
            lo, hi = CLAMP_BOUNDS[t.name]
            x = np.array({"float": FLOAT_UNARY, "int": INT_UNARY, "bool": BOOLS}[kind], t)
            return ([x, np.full_like(x, lo), np.full_like(x, hi)],
                    ops.compute(op, [x], {"min": lo, "max": hi}))
        if cp.ARITY.get(call, 1) == 1:
            x = np.array({"float": FLOAT_UNARY, "int": INT_UNARY, "bool": BOOLS}[kind], t)
            return [x], ops.compute(op, [x], {})
        if call == "power_scalar":
            if kind == "int":
                return _operands("power", t)
            a = np.array(FLOAT_BASES * len(SCALAR_EXPONENTS), t)
            b = np.repeat(np.array(SCALAR_EXPONENTS, t), len(FLOAT_BASES))
            expected = np.concatenate([ops.compute(op, [a[:len(FLOAT_BASES)], float(e)], {})
                                       for e in SCALAR_EXPONENTS])
            return [a, b], expected
        if kind == "bool":  # maximum, minimum
            a, b = np.array([False, False, True, True]), np.array([False, True, False, True])
            return [a, b], ops.compute(op, [a, b], {})
        pairs = FLOAT_PAIRS if kind == "float" else INT_POWERS if call == "power" else INT_PAIRS
        a, b = (np.array(v, t) for v in zip(*pairs))
        if kind == "int" and call in ("floordiv", "remainder", "fmod", "power"):
            # eager raises (ZeroDivisionError, ValueError): the helper answers 0, and the
            # kernel that calls it flags the element
            bad = b < 0 if call == "power" else b == 0
            safe = np.where(bad, 0 if call == "power" else 1, b).astype(t)
            return [a, b], np.where(bad, t.type(0), ops.compute(op, [a, safe], {}))
        return [a, b], ops.compute(op, [a, b], {})


CASES = _cases()


@pytest.fixture(scope="module")
def simulated():
    """Every case's kernel output, from one simulator child."""
    inputs = {f"{case}.{k}": x for case, (operands, _) in CASES.items()
              for k, x in enumerate(operands)}
    assert all(x.size <= 32 for x in inputs.values())
    return run_in_simulator("tests.cuda.kernels:run_prelude_cases", inputs, timeout=240)


def _mismatches(actual: np.ndarray, expected: np.ndarray, exact: bool) -> np.ndarray:
    if actual.dtype.kind != "f":
        return actual != expected
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    nan_differs = np.isnan(a) != np.isnan(e)
    both = ~np.isnan(a) & ~np.isnan(e)
    if exact:
        wrong = (a != e) | (np.signbit(a) != np.signbit(e))
    else:
        rtol = 2e-6 if actual.dtype == np.float32 else 1e-14
        finite = np.isfinite(e)
        with np.errstate(invalid="ignore"):
            wrong = np.where(finite, np.abs(a - e) > rtol * np.abs(e) + 1e-37, a != e)
    return nan_differs | (both & wrong)


@pytest.mark.parametrize("case", sorted(CASES))
def test_helper_matches_eager(case, simulated):
    operands, expected = CASES[case]
    call = cp.PRELUDE_NAMES[case.split("-")[0]][0]
    actual = simulated[case]
    assert actual.dtype == result_dtype(call, cp.PRELUDE_NAMES[case.split("-")[0]][1])
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    bad = np.flatnonzero(_mismatches(actual, expected, call not in INEXACT))
    rows = [f"  {tuple(x[i].item() for x in operands)}: simulated {actual[i]!r}, "
            f"eager {expected[i]!r}" for i in bad[:10]]
    assert not len(bad), f"{case}: {len(bad)} of {actual.size} differ:\n" + "\n".join(rows)


def test_sim_helper_reports_child_failures():
    from tests.cuda.sim import SimulatorError

    with pytest.raises(SimulatorError, match="ZeroDivisionError"):
        run_in_simulator("def main(inputs):\n    return {'x': 1 // 0}\n", timeout=60)


def test_sim_helper_runs_a_snippet_with_arrays():
    snippet = """
        from numba import cuda

        @cuda.jit
        def twice(x, out):
            i = cuda.grid(1)
            if i < out.size:
                out[i] = x[i] * 2

        def main(inputs):
            out = inputs["x"].copy()
            twice[1, out.size](inputs["x"], out)
            return {"out": out}
    """
    x = np.arange(4, dtype=np.float32)
    got = run_in_simulator(snippet, {"x": x}, timeout=60)
    np.testing.assert_array_equal(got["out"], x * 2)
