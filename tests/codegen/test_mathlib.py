"""codegen/mathlib.py: vectorisable float32 exp/expm1/log/log1p/tanh/sigmoid/erf.

Accuracy is checked against float64 references over a dense sweep of the float32 line (a fine
grid on [-100, 100], every 997th bit pattern of all 2^32, the subnormals and the specials), through
a parallel fastmath loop like the ones the CPU code generator emits.
"""

from __future__ import annotations

import math
import re

import numba
import numpy as np
import pytest

from tracejit.codegen import mathlib as M
from tracejit.codegen.mathlib import (
    erf_f32,
    exp_f32,
    expm1_f32,
    f32_as_i32,
    i32_as_f32,
    log1p_f32,
    log_f32,
    sigmoid_f32,
    tanh_f32,
)

F32 = np.float32
NAMES = ["exp", "expm1", "log", "log1p", "tanh", "sigmoid", "erf"]
FUNCS = [exp_f32, expm1_f32, log_f32, log1p_f32, tanh_f32, sigmoid_f32, erf_f32]

# Bounds asserted here = the bounds documented in mathlib's docstring (measured exhaustively
# over all 2^32 inputs, with headroom for CPUs without FMA). ulp: float32 spacing at the exact
# result (subnormal spacing below the normal range).
ULP_BOUND = {"exp": 1.5, "expm1": 2.0, "log": 1.5, "log1p": 3.0, "tanh": 8.0, "sigmoid": 3.5,
             "erf": 8.0}
ABS_BOUND = {"tanh": 5e-7, "sigmoid": 1.5e-7, "erf": 5e-7}

FLT_MAX = float(np.finfo(np.float32).max)
TINY = float(np.finfo(np.float32).smallest_subnormal)


# ------------------------------------------------------------------ kernels under test
@numba.njit(parallel=True, fastmath={"reassoc", "contract"})
def _kernel(x, out):
    for i in numba.prange(x.size):
        v = x[i]
        out[0, i] = exp_f32(v)
        out[1, i] = expm1_f32(v)
        out[2, i] = log_f32(v)
        out[3, i] = log1p_f32(v)
        out[4, i] = tanh_f32(v)
        out[5, i] = sigmoid_f32(v)
        out[6, i] = erf_f32(v)


def _serial(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = (exp_f32(v) + expm1_f32(v) + log_f32(v) + log1p_f32(v) + tanh_f32(v)
                  + sigmoid_f32(v) + erf_f32(v))


@numba.njit
def _bits(x, out_i, back):
    for k in range(x.size):
        out_i[k] = f32_as_i32(x[k])
        back[k] = i32_as_f32(out_i[k])


# ------------------------------------------------------------------ references
def _ref(name: str, x: np.ndarray) -> np.ndarray:
    """float64 reference of a function at float32 points x."""
    with np.errstate(all="ignore"):  # signalling-NaN bit patterns warn in the cast
        d = x.astype(np.float64)
        if name == "exp":
            return np.exp(d)
        if name == "expm1":
            return np.expm1(d)
        if name == "log":
            return np.log(d)
        if name == "log1p":
            return np.log1p(d)
        if name == "tanh":
            return np.tanh(d)
        if name == "sigmoid":
            e = np.exp(-np.abs(d))
            return np.where(d >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        if name == "erf":
            r = np.where(np.abs(d) < 2.0**-12, d * (2 / math.sqrt(math.pi)) * (1 - d * d / 3),
                         np.sign(d))
            mid = (np.abs(d) >= 2.0**-12) & (np.abs(d) < 6.0)
            r[mid] = np.frompyfunc(math.erf, 1, 1)(d[mid]).astype(np.float64)
            return r
    raise AssertionError(name)


def _ulp_error(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|y - ref| in float32 ulps at ref; inf is treated as the value 2^128 just past FLT_MAX,
    so a result that overflows to inf is 1 ulp from FLT_MAX and 0 from a huge reference."""
    big = 2.0**128
    yd = np.clip(y.astype(np.float64), -big, big)
    r = np.clip(ref, -big, big)
    _, e = np.frexp(np.abs(r))
    ulp = np.ldexp(1.0, np.maximum(e - 1, -126) - 23)
    return np.abs(yd - r) / ulp


@pytest.fixture(scope="module")
def sweep():
    """Dense float32 sweep: a 1e-4 grid on [-100, 100], every 997th bit pattern (all binades,
    subnormals, +-inf and NaNs), all subnormals near 0 in a stride, and the specials."""
    grid = np.linspace(-100, 100, 2_000_001).astype(F32)
    bits = (np.arange(0, 2**32, 997, dtype=np.uint64)).astype(np.uint32).view(F32)
    sub = np.arange(0, 2**23, 61, dtype=np.uint32).view(F32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, TINY, -TINY, FLT_MAX, -FLT_MAX,
                         1.0, -1.0, 88.72283, 88.72284, -87.33654, -103.27893, -103.97208,
                         9.1, -9.1, 3.92, -3.92, 0.5, -0.5, 2.0**-126, -(2.0**-126)], F32)
    x = np.concatenate([grid, bits, sub, -sub, specials])
    out = np.empty((len(NAMES), x.size), F32)
    _kernel(x, out)
    return x, out


# ------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("k,name", list(enumerate(NAMES)))
def test_accuracy_sweep(sweep, k, name):
    x, out = sweep
    y = out[k]
    ref = _ref(name, x)
    assert y.dtype == np.float32
    # NaN exactly where the reference is NaN
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref), err_msg=f"{name}: NaN mismatch")
    ok = ~np.isnan(ref)
    # infinities exactly where the correctly rounded reference is infinite (small tolerance
    # at the overflow edge handled by _ulp_error)
    err = _ulp_error(y[ok], ref[ok])
    worst = int(np.argmax(err))
    assert err[worst] <= ULP_BOUND[name], (
        f"{name}: {err[worst]:.3f} ulp at x={x[ok][worst]!r}: got {y[ok][worst]!r}, "
        f"want {ref[ok][worst]!r}")
    if name in ABS_BOUND:
        a = np.abs(y[ok].astype(np.float64) - ref[ok])
        assert a.max() <= ABS_BOUND[name], (
            f"{name}: abs error {a.max():.3g} at {x[ok][a.argmax()]!r}")
        assert np.all(np.abs(y[ok]) <= 1.0), f"{name} leaves [-1, 1]"


@pytest.mark.parametrize("name", ["tanh", "erf"])
def test_odd_exactly(sweep, name):
    """f(-x) == -f(x) bit for bit (the rational forms are symmetric by construction)."""
    x, _ = sweep
    pos = x[(x > 0) & np.isfinite(x)]
    both = np.concatenate([pos, -pos])
    o = np.empty((len(NAMES), both.size), F32)
    _kernel(both, o)
    r = o[NAMES.index(name)]
    np.testing.assert_array_equal(r[pos.size:], -r[: pos.size])


SPECIALS = {
    # name: [(x, expected)] compared exactly (np.array_equal with signed zeros and NaN)
    "exp": [(0.0, 1.0), (-0.0, 1.0), (np.inf, np.inf), (-np.inf, 0.0), (np.nan, np.nan),
            (100.0, np.inf), (89.0, np.inf), (-100.0, F32(math.exp(-100))), (-104.0, 0.0),
            (1e-40, 1.0), (-1e-40, 1.0), (1.0, F32(math.e))],
    "expm1": [(0.0, 0.0), (-0.0, -0.0), (np.inf, np.inf), (-np.inf, -1.0), (np.nan, np.nan),
              (100.0, np.inf), (-100.0, -1.0), (1e-40, F32(1e-40)), (-1e-40, F32(-1e-40))],
    "log": [(0.0, -np.inf), (-0.0, -np.inf), (-1.0, np.nan), (-TINY, np.nan), (np.inf, np.inf),
            (-np.inf, np.nan), (np.nan, np.nan), (1.0, 0.0), (TINY, F32(math.log(TINY))),
            (FLT_MAX, F32(math.log(FLT_MAX))), (2.0, F32(math.log(2.0)))],
    "log1p": [(0.0, 0.0), (-0.0, -0.0), (-1.0, -np.inf), (-2.0, np.nan), (np.inf, np.inf),
              (-np.inf, np.nan), (np.nan, np.nan), (1e-40, F32(1e-40)), (-1e-40, F32(-1e-40)),
              (FLT_MAX, F32(math.log(FLT_MAX)))],
    "tanh": [(0.0, 0.0), (-0.0, -0.0), (np.inf, 1.0), (-np.inf, -1.0), (np.nan, np.nan),
             (20.0, 1.0), (-20.0, -1.0), (1e-40, F32(1e-40)), (-1e-40, F32(-1e-40))],
    "sigmoid": [(0.0, 0.5), (-0.0, 0.5), (np.inf, 1.0), (-np.inf, 0.0), (np.nan, np.nan),
                (100.0, 1.0), (-100.0, F32(math.exp(-100))), (-200.0, 0.0)],
    "erf": [(0.0, 0.0), (-0.0, -0.0), (np.inf, 1.0), (-np.inf, -1.0), (np.nan, np.nan),
            (10.0, 1.0), (-10.0, -1.0), (4.0, 1.0), (-4.0, -1.0)],
}


@pytest.mark.parametrize("name", NAMES)
def test_specials_exact(name):
    xs = np.array([p[0] for p in SPECIALS[name]], F32)
    want = np.array([p[1] for p in SPECIALS[name]], F32)
    out = np.empty((len(NAMES), xs.size), F32)
    _kernel(xs, out)
    got = out[NAMES.index(name)]
    assert np.array_equal(got, want, equal_nan=True), f"{name}({xs}) = {got}, want {want}"
    num = ~np.isnan(want)
    assert np.array_equal(np.signbit(got[num]), np.signbit(want[num])), f"{name}: sign of zero"


# ------------------------------------------------------------------ typing, loops, bit casts
@pytest.mark.parametrize("fn", FUNCS, ids=NAMES)
def test_typed_float32_to_float32(fn):
    # compiled on first use, so which signatures exist depends on what ran before: ask numba's
    # typing instead (another argument type is converted, the result stays float32)
    for arg in (numba.float32, numba.float64):
        fn.compile((arg,))
        assert fn.overloads[(arg,)].signature.return_type == numba.float32
    assert isinstance(fn(F32(0.25)), float)  # callable from Python too


_SMALL = np.concatenate([np.linspace(-12, 12, 301), np.geomspace(1e-30, 90, 50),
                         [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40]]).astype(F32)


def _assert_bitwise(got, want, what):
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32),
                                  err_msg=what)


def test_scalar_calls_match_parallel_loop():
    """Bit for bit the same numbers from a Python-level scalar call and from the vectorised
    parallel reassoc loop: the functions keep their own float flags inside the caller."""
    out = np.empty((len(NAMES), _SMALL.size), F32)
    _kernel(_SMALL, out)
    for k, fn in enumerate(FUNCS):
        _assert_bitwise(out[k], np.array([fn(v) for v in _SMALL], F32), NAMES[k])


def test_fastmath_caller_keeps_nan_and_inf_handling():
    """A caller with fastmath=True (nnan, ninf, reassoc, ...) gets the same bits, NaN and inf
    handling included."""

    @numba.njit(fastmath=True)
    def fast(x, out):
        for i in range(x.size):
            out[0, i] = exp_f32(x[i])
            out[1, i] = log_f32(x[i])
            out[2, i] = tanh_f32(x[i])

    out = np.empty((3, _SMALL.size), F32)
    fast(_SMALL, out)
    for k, fn in enumerate([exp_f32, log_f32, tanh_f32]):
        _assert_bitwise(out[k], np.array([fn(v) for v in _SMALL], F32), fn.__name__)


def test_loop_vectorises_without_float64():
    """A plain loop calling every function is inlined and SIMD-vectorised by LLVM, with no
    float64 arithmetic (every constant stays float32)."""
    fn = numba.njit(fastmath={"reassoc", "contract"})(_serial)
    x = np.linspace(0.1, 5, 64).astype(F32)
    out = np.empty_like(x)
    fn(x, out)
    want = sum(np.asarray(out_k, np.float64) for out_k in _kernel_outputs(x))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    llvm = fn.inspect_llvm(fn.signatures[0])
    m = re.search(r"^define [^\n]*@_ZN[^\s(]*_serial[^\s(]*\(", llvm, re.M)
    assert m, "loop function not found in the LLVM module"
    body = llvm[m.start() :]
    body = body[: body.index("\n}")]
    assert re.search(r"<\d+ x float>", body), "loop calling mathlib did not vectorise"
    assert "double" not in body, "float64 arithmetic in a float32 loop"
    called = set(re.findall(r"call [^@\n]*@(\w+)", body))
    assert not {c for c in called if "_f32" in c}, f"not inlined: {called}"


def _kernel_outputs(x):
    out = np.empty((len(NAMES), x.size), F32)
    _kernel(x, out)
    return list(out)


def test_result_stays_float32_in_callers():
    @numba.njit
    def f(x):
        return exp_f32(x) * F32(2) + tanh_f32(x)

    assert isinstance(f(F32(1.0)), float)
    assert f.nopython_signatures[0].return_type == numba.float32
    # a float64 argument is converted: float32 semantics, float32 result
    assert f(1.0) == f(F32(1.0))
    assert f.nopython_signatures[1].return_type == numba.float32


def test_bit_casts():
    rng = np.random.default_rng(0)
    pats = np.concatenate([rng.integers(0, 2**32, 10_000, dtype=np.uint64).astype(np.uint32),
                           np.array([0, 0x80000000, 0x3F800000, 0x7F800000, 0xFF800000,
                                     0x7FC00001, 0x00000001, 0x807FFFFF], np.uint32)])
    x = pats.view(F32)
    out_i = np.empty(x.size, np.int32)
    back = np.empty_like(x)
    _bits(x, out_i, back)
    np.testing.assert_array_equal(out_i, pats.view(np.int32))
    np.testing.assert_array_equal(back.view(np.uint32), pats)  # NaN payloads too

    @numba.njit
    def low_bits(i):
        return i32_as_f32(i)

    assert low_bits(np.int64(0x1_3F80_0000)) == 1.0  # int64: its low 32 bits
    assert low_bits(np.int32(0x40000000)) == 2.0


def test_bit_cast_rejects_other_types():
    @numba.njit
    def bad(x):
        return f32_as_i32(x)

    with pytest.raises(numba.core.errors.TypingError, match=r"f32_as_i32\(float64\)"):
        bad(1.0)


def test_documented_bounds_match_tests():
    """The docstring table is what the tests assert."""
    doc = M.__doc__
    for name in NAMES:
        row = re.search(rf"^\s*{name}_f32\s.*$", doc, re.M)
        assert row, f"{name}_f32 missing from the error table"
        assert f"{ULP_BOUND[name]:g} ulp" in row.group(0), row.group(0)
        if name in ABS_BOUND:
            assert f"{ABS_BOUND[name]:g} abs" in row.group(0), row.group(0)
