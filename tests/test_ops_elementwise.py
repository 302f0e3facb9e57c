"""Elementwise ops: every ELEMENTWISE row of the op table and the Tensor-level compositions.

Values are checked against numpy (or a written-out formula) over SHAPES, non-contiguous inputs
and BROADCAST_PAIRS; dtypes against torch's promotion rules; ``OpDef.infer`` against the eager
result; gradients against central finite differences (first and second order); edge semantics
and error messages against torch's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tracejit as tj
from tracejit import ops
from tracejit.dispatch import apply
from tracejit.errors import DTypeError, ShapeError

from .conftest import (
    BROADCAST_PAIRS,
    SHAPES,
    assert_close,
    data,
    gradcheck,
    gradgradcheck,
    leaf64,
    noncontig,
)

F32, F64, I32, I64, B = np.float32, np.float64, np.int32, np.int64, np.bool_

_erf_np = np.vectorize(math.erf, otypes=[np.float64])


def _np_erf(a):
    return _erf_np(a).astype(a.dtype)


def _np_sigmoid(a):
    return (1 / (1 + np.exp(-a.astype(np.float64)))).astype(a.dtype)


def _np_gelu(a):
    return 0.5 * a * (1 + _np_erf(a / np.sqrt(2)))


def _np_gelu_tanh(a):
    return 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))


def _np_softplus(a, beta=1.0, threshold=20.0):
    a64 = a.astype(np.float64)
    soft = np.log1p(np.exp(beta * a64)) / beta
    return np.where(beta * a64 > threshold, a64, soft).astype(a.dtype)


# ----------------------------------------------------------------------------------------------
# unary primitives: name -> (tracejit fn, numpy reference, input domain)

UNARY = {
    "neg": (lambda x: -x, np.negative, (-2, 2)),
    "abs": (lambda x: x.abs(), np.abs, (-2, 2)),
    "exp": (lambda x: x.exp(), np.exp, (-2, 2)),
    "log": (lambda x: x.log(), np.log, (0.1, 3)),
    "log1p": (lambda x: x.log1p(), np.log1p, (-0.9, 3)),
    "expm1": (lambda x: x.expm1(), np.expm1, (-2, 2)),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, (0.1, 3)),
    "rsqrt": (lambda x: x.rsqrt(), lambda a: 1 / np.sqrt(a), (0.1, 3)),
    "sin": (lambda x: x.sin(), np.sin, (-3, 3)),
    "cos": (lambda x: x.cos(), np.cos, (-3, 3)),
    "tan": (lambda x: x.tan(), np.tan, (-1.2, 1.2)),
    "sinh": (lambda x: x.sinh(), np.sinh, (-3, 3)),
    "cosh": (lambda x: x.cosh(), np.cosh, (-3, 3)),
    "asin": (lambda x: x.asin(), np.arcsin, (-0.95, 0.95)),
    "acos": (lambda x: x.acos(), np.arccos, (-0.95, 0.95)),
    "atan": (lambda x: x.atan(), np.arctan, (-3, 3)),
    "asinh": (lambda x: x.asinh(), np.arcsinh, (-3, 3)),
    "acosh": (lambda x: x.acosh(), np.arccosh, (1.05, 4)),
    "atanh": (lambda x: x.atanh(), np.arctanh, (-0.95, 0.95)),
    "tanh": (lambda x: x.tanh(), np.tanh, (-3, 3)),
    "sigmoid": (lambda x: x.sigmoid(), _np_sigmoid, (-5, 5)),
    "erf": (lambda x: x.erf(), _np_erf, (-2, 2)),
    "relu": (lambda x: x.relu(), lambda a: np.maximum(a, 0), (-2, 2)),
    "sign": (lambda x: x.sign(), np.sign, (-2, 2)),
    "floor": (lambda x: x.floor(), np.floor, (-3, 3)),
    "ceil": (lambda x: x.ceil(), np.ceil, (-3, 3)),
    "round": (lambda x: x.round(), np.round, (-3, 3)),
    "copy": (lambda x: x.clone(), np.copy, (-2, 2)),
}
UNARY_BOOL_OUT = {
    "logical_not": (lambda x: x.logical_not(), np.logical_not),
    "isnan": (lambda x: x.isnan(), np.isnan),
    "isfinite": (lambda x: x.isfinite(), np.isfinite),
}

# Tensor-level compositions of primitives
COMPOSED = {
    "gelu": (lambda x: x.gelu(), _np_gelu, (-3, 3)),
    "gelu_tanh": (lambda x: x.gelu(approximate="tanh"), _np_gelu_tanh, (-3, 3)),
    "silu": (lambda x: x.silu(), lambda a: a * _np_sigmoid(a), (-3, 3)),
    "softplus": (lambda x: x.softplus(), _np_softplus, (-3, 3)),
    "softplus_beta": (lambda x: x.softplus(beta=2.0), lambda a: _np_softplus(a, 2.0), (-3, 3)),
    "softplus_thresh": (lambda x: x.softplus(beta=1.5, threshold=1.0),
                        lambda a: _np_softplus(a, 1.5, 1.0), (-3, 3)),
    "trunc": (lambda x: x.trunc(), np.trunc, (-3, 3)),
    "square": (lambda x: x.square(), np.square, (-2, 2)),
    "reciprocal": (lambda x: x.reciprocal(), np.reciprocal, (0.5, 2)),
    "log2": (lambda x: x.log2(), np.log2, (0.1, 3)),
    "log10": (lambda x: x.log10(), np.log10, (0.1, 3)),
    "exp2": (lambda x: x.exp2(), np.exp2, (-2, 2)),
    "clamp": (lambda x: x.clamp(-0.5, 0.7), lambda a: np.clip(a, -0.5, 0.7), (-2, 2)),
    "clamp_min": (lambda x: x.clamp(min=0.3), lambda a: np.maximum(a, np.float32(0.3)), (-2, 2)),
    "clamp_max": (lambda x: x.clamp(max=0.3), lambda a: np.minimum(a, np.float32(0.3)), (-2, 2)),
    "add_alpha": (lambda x: x.add(x, alpha=2), lambda a: a + 2 * a, (-2, 2)),
    "sub_alpha": (lambda x: x.sub(1.5, alpha=3), lambda a: a - np.float32(4.5), (-2, 2)),
    "pow_scalar": (lambda x: x ** 3, lambda a: a ** 3, (-2, 2)),
    "rpow_scalar": (lambda x: 2.5 ** x, lambda a: np.float32(2.5) ** a, (-2, 2)),
    "lerp_scalar": (lambda x: x.lerp(tj.ones_like(x), 0.25), lambda a: a + 0.25 * (1 - a),
                    (-2, 2)),
}


def _t(a):
    """A tensor viewing ``a`` (keeps non-contiguous strides)."""
    return tj.from_numpy(np.asarray(a))


@pytest.mark.parametrize("contig", [True, False], ids=["contig", "noncontig"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(UNARY) + list(COMPOSED))
def test_unary_values(name, shape, contig):
    fn, ref, (lo, hi) = {**UNARY, **COMPOSED}[name]
    a = data(shape, F32, lo, hi)
    x = _t(a if contig else noncontig(a))
    if not contig and a.size > 1:
        assert not x.is_contiguous()
    out = fn(x)
    assert_close(out, ref(a).astype(F32), rtol=2e-5, atol=2e-6)
    assert not out.requires_grad


@pytest.mark.parametrize("contig", [True, False], ids=["contig", "noncontig"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3)], ids=str)
@pytest.mark.parametrize("name", list(UNARY_BOOL_OUT))
def test_unary_bool_out_values(name, shape, contig):
    fn, ref = UNARY_BOOL_OUT[name]
    a = data(shape, F32)
    if a.size:
        a.reshape(-1)[0] = np.nan
        a.reshape(-1)[-1] = np.inf
    if name == "logical_not":
        a = a > 0
    x = _t(a if contig else noncontig(a))
    assert_close(fn(x), ref(a))


def test_isinf():
    x = tj.tensor([1.0, np.inf, -np.inf, np.nan, 0.0])
    r = x.isinf()
    assert r.dtype == tj.bool_
    assert r.tolist() == [False, True, True, False, False]
    assert tj.isinf(tj.tensor([3, 4])).tolist() == [False, False]


@pytest.mark.parametrize("name", ["neg", "abs", "sign", "floor", "ceil", "round", "relu",
                                  "square", "trunc"])
def test_unary_int_keeps_int(name):
    fn, ref, _ = {**UNARY, **COMPOSED}[name]
    a = np.array([-3, -1, 0, 2, 5], dtype=I32)
    out = fn(tj.tensor(a))
    assert_close(out, ref(a).astype(I32))


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "sinh", "tanh", "sigmoid", "erf",
                                  "log2", "exp2", "reciprocal", "rsqrt"])
def test_unary_int_to_float(name):
    fn, ref, _ = {**UNARY, **COMPOSED}[name]
    a = np.array([1, 2, 3], dtype=I64)
    out = fn(tj.tensor(a))
    assert_close(out, ref(a.astype(F32)).astype(F32))


# ----------------------------------------------------------------------------------------------
# binary primitives: name -> (fn, numpy reference, domain a, domain b, input dtype)

def _smallints(shape, seed=0):
    return data(shape, F32, -2, 2, seed).round()


BINARY = {
    "add": (lambda x, y: x + y, np.add, (-2, 2), (-2, 2)),
    "sub": (lambda x, y: x - y, np.subtract, (-2, 2), (-2, 2)),
    "mul": (lambda x, y: x * y, np.multiply, (-2, 2), (-2, 2)),
    "div": (lambda x, y: x / y, np.true_divide, (-2, 2), (0.5, 2)),
    "floordiv": (lambda x, y: x // y, np.floor_divide, (-4, 4), (0.5, 2)),
    "remainder": (lambda x, y: x % y, np.remainder, (-4, 4), (0.5, 2)),
    "pow": (lambda x, y: x ** y, np.power, (0.2, 2), (-2, 2)),
    "maximum": (lambda x, y: tj.maximum(x, y), np.maximum, (-2, 2), (-2, 2)),
    "minimum": (lambda x, y: tj.minimum(x, y), np.minimum, (-2, 2), (-2, 2)),
    "atan2": (lambda x, y: tj.atan2(x, y), np.arctan2, (-2, 2), (-2, 2)),
    "fmod": (lambda x, y: tj.fmod(x, y), np.fmod, (-4, 4), (0.5, 2)),
    "eq": (lambda x, y: x == y, np.equal, None, None),
    "ne": (lambda x, y: x != y, np.not_equal, None, None),
    "lt": (lambda x, y: x < y, np.less, None, None),
    "le": (lambda x, y: x <= y, np.less_equal, None, None),
    "gt": (lambda x, y: x > y, np.greater, None, None),
    "ge": (lambda x, y: x >= y, np.greater_equal, None, None),
    "logical_and": (lambda x, y: x & y, np.logical_and, "bool", "bool"),
    "logical_or": (lambda x, y: x | y, np.logical_or, "bool", "bool"),
    "logical_xor": (lambda x, y: x ^ y, np.logical_xor, "bool", "bool"),
}
# compositions of binary primitives
BINARY_COMPOSED = {
    "div_floor": (lambda x, y: x.div(y, rounding_mode="floor"), np.floor_divide, (-4, 4),
                  (0.5, 2)),
    "div_trunc": (lambda x, y: x.div(y, rounding_mode="trunc"), lambda a, b: np.trunc(a / b),
                  (-4, 4), (0.5, 2)),
    "sub_alpha": (lambda x, y: x.sub(y, alpha=2), lambda a, b: a - 2 * b, (-2, 2), (-2, 2)),
    "add_alpha": (lambda x, y: tj.add(x, y, alpha=0.5), lambda a, b: a + 0.5 * b, (-2, 2),
                  (-2, 2)),
    "lerp": (lambda x, y: x.lerp(y, 0.3), lambda a, b: a + np.float32(0.3) * (b - a), (-2, 2),
             (-2, 2)),
    "clamp_tensor_min": (lambda x, y: x.clamp(min=y), np.maximum, (-2, 2), (-2, 2)),
    "clamp_tensor_max": (lambda x, y: x.clamp(max=y), np.minimum, (-2, 2), (-2, 2)),
}


def _binary_data(dom, shape, seed):
    if dom is None:
        return _smallints(shape, seed)
    if dom == "bool":
        return data(shape, B, seed=seed)
    return data(shape, F32, dom[0], dom[1], seed)


def _check_binary(name, sa, sb, contig=True):
    fn, ref, da, db = {**BINARY, **BINARY_COMPOSED}[name]
    a, b = _binary_data(da, sa, 1), _binary_data(db, sb, 2)
    if not contig:
        a, b = noncontig(a), noncontig(b)
    out = fn(_t(a), _t(b))
    expected = ref(a, b)
    assert_close(out, expected, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("pair", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", list(BINARY) + list(BINARY_COMPOSED))
def test_binary_broadcast_values(name, pair):
    _check_binary(name, *pair)
    _check_binary(name, *reversed(pair))


@pytest.mark.parametrize("contig", [True, False], ids=["contig", "noncontig"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(BINARY) + list(BINARY_COMPOSED))
def test_binary_same_shape_values(name, shape, contig):
    _check_binary(name, shape, shape, contig)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_where_values(shape):
    c = data(shape, B, seed=3)
    a, b = data(shape, F32, seed=4), data(shape, F32, seed=5)
    assert_close(tj.where(_t(c), _t(a), _t(b)), np.where(c, a, b))
    assert_close(tj.where(_t(noncontig(c)), _t(noncontig(a)), _t(noncontig(b))),
                 np.where(c, a, b))


@pytest.mark.parametrize("pair", BROADCAST_PAIRS, ids=str)
def test_where_broadcast(pair):
    sc, sx = pair
    c, a, b = data(sc, B, seed=3), data(sx, F32, seed=4), data((), F32, seed=5)
    assert_close(tj.where(_t(c), _t(a), _t(b)), np.where(c, a, b))
    assert_close(tj.where(_t(a) > 0, _t(c), False), np.where(a > 0, c, False))


def test_where_with_scalars():
    c = tj.tensor([True, False, True])
    x = tj.tensor([1.0, 2.0, 3.0])
    assert_close(tj.where(c, x, 0.0), np.array([1, 0, 3], F32))
    assert_close(tj.where(c, 5, x), np.array([5, 2, 5], F32))
    assert_close(tj.where(c, 1.0, 0.0), np.array([1, 0, 1], F32))  # default dtype, not float64
    assert_close(tj.where(c, 1, 0), np.array([1, 0, 1], I64))
    assert_close(tj.where(c, tj.tensor([1, 2, 3], dtype=tj.int32), 7),
                 np.array([1, 7, 3], I32))
    assert_close(tj.where(c, tj.tensor([1, 2, 3]), 0.5), np.array([1, 0.5, 3], F32))
    assert_close(x.where(c, -1.0), np.array([1, -1, 3], F32))


def test_masked_fill():
    x = tj.tensor([[1.0, 2.0], [3.0, 4.0]])
    m = tj.tensor([True, False])  # broadcast over rows
    assert_close(x.masked_fill(m, -1.0), np.array([[-1, 2], [-1, 4]], F32))
    assert_close(tj.masked_fill(x, x > 2, 0), np.array([[1, 2], [0, 0]], F32))
    # torch keeps self's dtype: the fill value is cast to it
    xi = tj.tensor([1, 2, 3])
    assert_close(xi.masked_fill(tj.tensor([True, False, False]), 7), np.array([7, 2, 3], I64))
    assert_close(xi.masked_fill(tj.tensor([False, True, False]), 2.0), np.array([1, 2, 3], I64))
    x64 = tj.tensor([1.0, 2.0], dtype=tj.float64)
    assert x64.masked_fill(tj.tensor([True, False]), 0.5).dtype == tj.float64
    xi.masked_fill_(tj.tensor([True, False, True]), 9.0)  # in place: same rule
    assert xi.dtype == tj.int64 and xi.tolist() == [9, 2, 9]
    with pytest.raises(DTypeError, match="where: condition must be a bool tensor"):
        x.masked_fill(tj.tensor([1, 0]), 0.0)


def test_masked_fill_gradient():
    x = leaf64((2, 3))
    m = tj.tensor([True, False, True])
    assert gradcheck(lambda t: t.masked_fill(m, 3.0), (x,))
    g, = tj.autograd.grad(x.masked_fill(m, 3.0).sum(), x)
    assert_close(g, np.array([[0, 1, 0], [0, 1, 0]], F64))


def test_clamp_tensor_bounds():
    x = tj.tensor([[-3.0, 0.2, 4.0], [0.5, -0.5, 9.0]])
    lo = tj.tensor([-1.0, 0.0, 1.0])
    hi = tj.tensor(2.0)
    expected = np.clip(x.numpy(), lo.numpy(), hi.numpy())
    assert_close(x.clamp(lo, hi), expected)
    assert_close(tj.clamp(x, min=lo, max=hi), expected)
    # min > max: torch sets every element to max
    assert_close(x.clamp(tj.tensor(3.0), tj.tensor(1.0)), np.full((2, 3), 1.0, F32))
    assert_close(x.clamp(3.0, 1.0), np.full((2, 3), 1.0, F32))
    assert_close(x.clip(-1, 1), np.clip(x.numpy(), -1, 1))
    assert_close(x.clamp_min(0.0), np.maximum(x.numpy(), 0))
    assert_close(x.clamp_max(0.0), np.minimum(x.numpy(), 0))


def test_clamp_needs_a_bound():
    with pytest.raises(ValueError, match="at least one of min and max"):
        tj.ones(3).clamp()


def test_clamp_int_and_float_bounds():
    xi = tj.tensor([1, 2, 3])
    assert_close(xi.clamp(0, 2), np.array([1, 2, 2], I64))
    assert_close(xi.clamp(0.5, 2.5), np.array([1.0, 2.0, 2.5], F32))  # scalar bounds promote


def test_lerp_tensor_weight():
    a, b, w = data((2, 3), F32, seed=1), data((2, 3), F32, seed=2), data((3,), F32, 0, 1, 3)
    assert_close(tj.lerp(_t(a), _t(b), _t(w)), a + w * (b - a))


@pytest.mark.parametrize("mode", [None, "floor", "trunc"])
def test_div_rounding_modes(mode):
    ai, bi = np.array([-7, -6, 5, 7], I64), np.array([2, -4, 3, -2], I64)
    af, bf = ai.astype(F32) + 0.5, bi.astype(F32)
    ref = {None: np.true_divide, "floor": np.floor_divide,
           "trunc": lambda a, b: np.trunc(a / b)}[mode]
    out_i = tj.tensor(ai).div(tj.tensor(bi), rounding_mode=mode)
    assert_close(out_i, ref(ai, bi).astype(F32 if mode is None else I64))
    assert_close(tj.div(tj.tensor(af), tj.tensor(bf), rounding_mode=mode), ref(af, bf))
    assert_close(tj.tensor(ai).div(3, rounding_mode=mode),
                 ref(ai, np.int64(3)).astype(F32 if mode is None else I64))
    assert_close(tj.tensor(ai).div(2.5, rounding_mode=mode), ref(ai, 2.5).astype(F32))


def test_div_trunc_integers_exact():
    # a float32 quotient would round 2**30 + 1 to 2**30
    a = [2 ** 30 + 1, -7, 7, -6, -1, 0, 2 ** 40 + 3]
    b = [1, 2, -2, 3, 5, 3, -1]
    out = tj.tensor(a).div(tj.tensor(b), rounding_mode="trunc")
    assert out.dtype == tj.int64
    trunc = [abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
             for x, y in zip(a, b, strict=True)]
    assert out.tolist() == trunc
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        tj.tensor([1, 2]).div(0, rounding_mode="trunc")
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        tj.tensor([1, 2]).div(tj.tensor([1, 0]), rounding_mode="floor")


def test_div_bad_rounding_mode():
    with pytest.raises(ValueError, match="rounding_mode must be None, 'floor' or 'trunc'"):
        tj.ones(2).div(2, rounding_mode="round")


# ----------------------------------------------------------------------------------------------
# Python operators, both orders, against Python semantics

ARITH = {
    "+": (lambda a, b: a + b), "-": (lambda a, b: a - b), "*": (lambda a, b: a * b),
    "/": (lambda a, b: a / b), "//": (lambda a, b: a // b), "%": (lambda a, b: a % b),
    "**": (lambda a, b: a ** b),
}
COMPARE = {
    "<": (lambda a, b: a < b), "<=": (lambda a, b: a <= b), ">": (lambda a, b: a > b),
    ">=": (lambda a, b: a >= b), "==": (lambda a, b: a == b), "!=": (lambda a, b: a != b),
}


def _python_elementwise(fn, a, b):
    """Apply a Python operator element by element on Python numbers (the semantic reference)."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    if fn is ARITH["**"] and (a.dtype.kind == "f" or b.dtype.kind == "f"):
        with np.errstate(invalid="ignore"):  # negative ** fractional is nan, not complex
            return np.power(a.astype(np.float64), b.astype(np.float64))
    return np.array([fn(x, y) for x, y in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True)]
                    ).reshape(a.shape)


@pytest.mark.parametrize("scalar", [3, -3, 1.5, -2.0])
@pytest.mark.parametrize("sym", list(ARITH))
def test_operators_float_tensor(sym, scalar):
    fn = ARITH[sym]
    a = np.array([-2.5, -1.0, 0.5, 3.0, 4.25], F32)
    if sym == "**":
        a = np.abs(a)  # negative bases to fractional powers are nan
    x = tj.tensor(a)
    for out, expected in ((fn(x, scalar), _python_elementwise(fn, a, scalar)),
                          (fn(scalar, x), _python_elementwise(fn, scalar, a))):
        assert out.dtype == tj.float32
        assert_close(out, expected.astype(F32), rtol=1e-5, check_dtype=False)


@pytest.mark.parametrize("scalar", [3, -3, 2.5])
@pytest.mark.parametrize("sym", list(ARITH))
def test_operators_int_tensor(sym, scalar):
    fn = ARITH[sym]
    a = np.array([-7, -2, 3, 8, 1], I64)
    x = tj.tensor(a)
    is_float = isinstance(scalar, float) or sym == "/"
    want = tj.float32 if is_float else tj.int64
    cases = [(lambda: fn(x, scalar), a, scalar), (lambda: fn(scalar, x), scalar, a)]
    if sym == "**" and not is_float:
        cases = [(lambda: fn(x, abs(scalar)), a, abs(scalar)),
                 (lambda: fn(scalar, tj.tensor(np.abs(a))), scalar, np.abs(a))]
    for call, pa, pb in cases:
        out = call()
        assert out.dtype == want, (sym, scalar, out.dtype)
        expected = _python_elementwise(fn, pa, pb)
        assert_close(out, expected.astype(out.dtype), rtol=1e-5, check_dtype=False)


@pytest.mark.parametrize("sym", list(ARITH))
def test_operators_tensor_tensor(sym):
    fn = ARITH[sym]
    a = np.array([[-7.5, -2.0, 3.0], [8.0, 1.5, 0.25]], F32)
    b = np.array([2.0, -3.0, 0.75], F32)
    if sym == "**":
        a = np.abs(a)
    assert_close(fn(tj.tensor(a), tj.tensor(b)), _python_elementwise(fn, a, b).astype(F32),
                 rtol=1e-5)
    ai, bi = np.array([[-7, -2, 3], [8, 1, 0]], I64), np.array([2, -3, 5], I64)
    if sym == "**":
        ai, bi = np.abs(ai), np.abs(bi)
    out = fn(tj.tensor(ai), tj.tensor(bi))
    assert out.dtype == (tj.float32 if sym == "/" else tj.int64)
    assert_close(out, _python_elementwise(fn, ai, bi).astype(out.dtype), rtol=1e-6)


@pytest.mark.parametrize("scalar", [0.5, 1, -1.0])
@pytest.mark.parametrize("sym", list(COMPARE))
def test_comparison_operators(sym, scalar):
    fn = COMPARE[sym]
    a = np.array([-1.0, 0.5, 1.0, 2.0], F32)
    x = tj.tensor(a)
    for out, expected in ((fn(x, scalar), fn(a, scalar)), (fn(scalar, x), fn(scalar, a)),
                          (fn(x, tj.tensor(a[::-1].copy())), fn(a, a[::-1]))):
        assert_close(out, expected)
    xi = tj.tensor([-1, 0, 1, 2])
    assert_close(fn(xi, scalar), fn(np.array([-1, 0, 1, 2]), scalar))


@pytest.mark.parametrize("other", [True, False, "tensor"])
def test_bool_bitwise_operators(other):
    a = np.array([True, False, True, False])
    o = np.array([True, True, False, False]) if other == "tensor" else other
    x = tj.tensor(a)
    t_o = tj.tensor(o) if other == "tensor" else o
    for sym, ref in (("&", np.logical_and), ("|", np.logical_or), ("^", np.logical_xor)):
        fn = {"&": lambda p, q: p & q, "|": lambda p, q: p | q, "^": lambda p, q: p ^ q}[sym]
        assert_close(fn(x, t_o), ref(a, o))
        assert_close(fn(t_o, x), ref(o, a))
    assert_close(~x, ~a)


def test_bitwise_on_ints_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="logical .bool tensors only"):
        tj.tensor([1, 2]) & 1
    with pytest.raises(NotImplementedError, match="only bool tensors"):
        ~tj.tensor([1, 2])


def test_unary_operators():
    x = tj.tensor([-1.5, 2.0])
    assert_close(-x, np.array([1.5, -2.0], F32))
    assert_close(+x, np.array([-1.5, 2.0], F32))
    assert_close(abs(x), np.array([1.5, 2.0], F32))


def test_numpy_array_on_the_left_defers_to_tensor():
    out = np.ones(3, F32) + tj.ones(3)
    assert isinstance(out, tj.Tensor)
    assert_close(out, np.full(3, 2.0, F32))


# ----------------------------------------------------------------------------------------------
# dtype promotion (torch's rules)

def _f(*v, dtype=None):
    return tj.tensor(list(v), dtype=dtype)


PROMOTION = [
    ("f32 + py float", lambda: _f(1.0, 2.0) + 2.5, tj.float32),
    ("f64 + py float", lambda: _f(1.0, dtype=tj.float64) + 2.5, tj.float64),
    ("f32 + py int", lambda: _f(1.0) + 2, tj.float32),
    ("i32 * 2.5", lambda: _f(1, 2, dtype=tj.int32) * 2.5, tj.float32),
    ("i32 * 2", lambda: _f(1, 2, dtype=tj.int32) * 2, tj.int32),
    ("i64 + i32", lambda: _f(1, 2) + _f(1, 2, dtype=tj.int32), tj.int64),
    ("i32 + i64", lambda: _f(1, 2, dtype=tj.int32) + _f(1, 2), tj.int64),
    ("f32 + f64", lambda: _f(1.0) + _f(1.0, dtype=tj.float64), tj.float64),
    ("i64 + f32", lambda: _f(1) + _f(1.0), tj.float32),
    ("i64 / i64", lambda: _f(1, 2) / _f(2, 2), tj.float32),
    ("i32 / py int", lambda: _f(1, 2, dtype=tj.int32) / 2, tj.float32),
    ("py int / i64", lambda: 1 / _f(1, 2), tj.float32),
    ("i64 // i64", lambda: _f(5, 2) // _f(2, 2), tj.int64),
    ("bool + py int", lambda: _f(True, False) + 1, tj.int64),
    ("bool + py float", lambda: _f(True, False) + 1.0, tj.float32),
    ("bool + bool", lambda: _f(True) + _f(False), tj.bool_),
    ("bool * i32", lambda: _f(True) * _f(3, dtype=tj.int32), tj.int32),
    ("f32[3] + f64 0-d", lambda: _f(1.0, 2.0, 3.0) + tj.tensor(1.0, dtype=tj.float64), tj.float32),
    ("i32[3] + f64 0-d", lambda: _f(1, 2, 3, dtype=tj.int32) + tj.tensor(1.0, dtype=tj.float64),
     tj.float64),
    ("i32[3] + i64 0-d", lambda: _f(1, 2, 3, dtype=tj.int32) + tj.tensor(1), tj.int32),
    ("0-d f32 + 0-d f64", lambda: tj.tensor(1.0) + tj.tensor(1.0, dtype=tj.float64), tj.float64),
    ("0-d i64 + py float", lambda: tj.tensor(1) + 1.5, tj.float32),
    ("f32 == f64", lambda: _f(1.0) == _f(1.0, dtype=tj.float64), tj.bool_),
    ("i64 < py float", lambda: _f(1) < 1.5, tj.bool_),
    ("bool != bool", lambda: _f(True) != _f(False), tj.bool_),
    ("exp(i64)", lambda: _f(1, 2).exp(), tj.float32),
    ("sqrt(i32)", lambda: _f(1, 2, dtype=tj.int32).sqrt(), tj.float32),
    ("sigmoid(bool)", lambda: _f(True).sigmoid(), tj.float32),
    ("exp(f64)", lambda: _f(1.0, dtype=tj.float64).exp(), tj.float64),
    ("floor(i64)", lambda: _f(1, 2).floor(), tj.int64),
    ("round(i32)", lambda: _f(1, 2, dtype=tj.int32).round(), tj.int32),
    ("abs(i32)", lambda: _f(-1, 2, dtype=tj.int32).abs(), tj.int32),
    ("neg(i64)", lambda: -_f(-1, 2), tj.int64),
    ("maximum(i32, f32)", lambda: tj.maximum(_f(1, dtype=tj.int32), _f(0.5)), tj.float32),
    ("maximum(i64, 2.5)", lambda: tj.maximum(_f(1), 2.5), tj.float32),
    ("pow(i64, 2)", lambda: _f(1, 2) ** 2, tj.int64),
    ("pow(i64, 0.5)", lambda: _f(1, 2) ** 0.5, tj.float32),
    ("pow(2.0, i64)", lambda: 2.0 ** _f(1, 2), tj.float32),
    ("remainder(i32, 2)", lambda: _f(5, dtype=tj.int32) % 2, tj.int32),
    ("isnan(i64)", lambda: _f(1).isnan(), tj.bool_),
    ("logical_not(f32)", lambda: _f(1.0).logical_not(), tj.bool_),
    ("where(b, i32, py int)", lambda: tj.where(_f(True), _f(1, dtype=tj.int32), 2), tj.int32),
    ("where(b, i32, f64 0-d)",
     lambda: tj.where(_f(True), _f(1, dtype=tj.int32), tj.tensor(2.0, dtype=tj.float64)),
     tj.float64),
    ("where(b, py float, py float)", lambda: tj.where(_f(True, False), 1.0, 0.0), tj.float32),
    (".to(float64)", lambda: _f(1).to(tj.float64), tj.float64),
    (".to('int32')", lambda: _f(1.5).to("int32"), tj.int32),
    (".to(tensor)", lambda: _f(1).to(tj.tensor(1.0, dtype=tj.float64)), tj.float64),
    (".float()", lambda: _f(1).float(), tj.float32),
    (".double()", lambda: _f(1).double(), tj.float64),
    (".long()", lambda: _f(1.7).long(), tj.int64),
    (".int()", lambda: _f(1.7).int(), tj.int32),
    (".bool()", lambda: _f(0.0, 2.0).bool(), tj.bool_),
]


@pytest.mark.parametrize("expr,fn,want", PROMOTION, ids=[p[0] for p in PROMOTION])
def test_dtype_promotion(expr, fn, want):
    out = fn()
    assert out.dtype == want, f"{expr}: got {out.dtype}, torch gives {want}"


def test_default_dtype_float64_changes_scalar_promotion():
    tj.set_default_dtype(tj.float64)
    try:
        assert (tj.tensor([1, 2]) * 2.5).dtype == tj.float64
        assert (tj.tensor([1, 2]) / 2).dtype == tj.float64
        assert tj.tensor([1, 2]).exp().dtype == tj.float64
        assert (tj.tensor([1.0], dtype=tj.float32) + 2.5).dtype == tj.float32
    finally:
        tj.set_default_dtype(tj.float32)


def test_cast_values():
    x = tj.tensor([-1.7, -0.2, 0.0, 2.9])
    assert_close(x.long(), np.array([-1, 0, 0, 2], I64))  # truncation toward zero
    assert_close(x.int(), np.array([-1, 0, 0, 2], I32))
    assert_close(x.bool(), np.array([True, True, False, True]))
    assert_close(tj.tensor([True, False]).float(), np.array([1, 0], F32))
    assert x.to(tj.float32) is x  # no-op cast returns self, as torch
    y = x.to(tj.float32, copy=True)
    assert y is not x and y.data_ptr() != x.data_ptr()
    assert x.type() == "tracejit.float32"
    assert x.type(tj.float64).dtype == tj.float64


# ----------------------------------------------------------------------------------------------
# infer agrees with eager, for every elementwise op over dtypes, ranks and scalar operands

EW_OPS = [o for o in ops.OPS.values() if o.kind == ops.ELEMENTWISE]
DTYPES = [F32, F64, I32, I64, B]


def _aval_input(aval):
    """An eager operand for an aval: a tensor of ones of that (shape, dtype), or the scalar."""
    if isinstance(aval, tuple):
        shape, dtype = aval
        return tj.tensor(np.ones(shape, dtype))
    return aval


def _aval_cases(op):
    """(avals, attrs) combinations exercising promotion, 0-d tensors and Python scalars."""
    shapes = [(), (2, 3)]
    if op.name == "clamp":
        return [([(s, np.dtype(d))], dict(min=lo, max=hi)) for s in shapes for d in DTYPES
                for lo, hi in ((0, 2), (0.5, None), (None, 2), (-1.5, 2.5))]
    if op.name == "cast":
        return [([((2, 3), np.dtype(d))], dict(dtype=np.dtype(t))) for d in DTYPES
                for t in DTYPES]
    operands = [((2, 3), np.dtype(d)) for d in DTYPES] + [((), np.dtype(d)) for d in DTYPES] + \
        [2, 2.5, True]
    n = _arity(op)
    if n == 1:
        return [([a], {}) for a in operands if isinstance(a, tuple)]
    if n == 2:
        return [([a, b], {}) for a in operands for b in operands
                if isinstance(a, tuple) or isinstance(b, tuple)]
    conds = [((2, 3), np.dtype(B)), ((3,), np.dtype(B)), ((), np.dtype(B))]
    return [([c, a, b], {}) for c in conds for a in operands[::2] + [2.5, 2]
            for b in operands[1::3] + [True, 2.5]]


def _arity(op):
    """Operand count, read off the codegen template (``{0}``, ``{1}``, ``{2}``)."""
    return 3 if "{2}" in op.expr else 2 if "{1}" in op.expr else 1


@pytest.mark.parametrize("op", EW_OPS, ids=lambda o: o.name)
def test_infer_matches_eager(op):
    checked = 0
    for avals, attrs in _aval_cases(op):
        inputs = [_aval_input(a) for a in avals]
        try:
            out = apply(op, *inputs, **attrs)
        except (TypeError, ValueError, RuntimeError) as e:
            # ops torch refuses too (neg of bool, bool ** bool ...) raise; nothing to compare
            assert op.name in str(e), f"error does not name the op: {e}"
            continue
        shape, dtype = op.infer(avals, **attrs)
        assert tuple(shape) == out.shape, (op.name, avals, attrs)
        assert np.dtype(dtype) == out.dtype, (op.name, avals, attrs, dtype, out.dtype)
        checked += 1
    assert checked >= 5, f"{op.name}: too few valid cases ({checked})"


def test_infer_accepts_broadcast_and_names_op():
    assert ops.OPS["add"].infer([((2, 1), np.dtype(F32)), ((3,), np.dtype(I64))]) == \
        ((2, 3), np.dtype(F32))
    assert ops.OPS["mul"].infer([((4, 1, 3), np.dtype(I32)), 2.5]) == ((4, 1, 3), np.dtype(F32))
    assert ops.OPS["div"].infer([((0,), np.dtype(I64)), ((1,), np.dtype(I64))]) == \
        ((0,), np.dtype(F32))
    with pytest.raises(ShapeError, match=r"maximum.*\(2, 3\).*\(4,\)"):
        ops.OPS["maximum"].infer([((2, 3), np.dtype(F32)), ((4,), np.dtype(F32))])


def test_every_elementwise_op_is_covered():
    covered = set(UNARY) | set(UNARY_BOOL_OUT) | set(BINARY) | {"where", "clamp", "cast"}
    missing = {o.name for o in EW_OPS} - covered
    assert not missing, f"elementwise ops without value tests: {sorted(missing)}"


# ----------------------------------------------------------------------------------------------
# gradients: float64 central differences

GRAD_UNARY = {
    "neg": (lambda x: -x, (-2, 2)),
    "abs": (lambda x: x.abs(), (-2, 2)),
    "exp": (lambda x: x.exp(), (-2, 2)),
    "log": (lambda x: x.log(), (0.2, 3)),
    "log1p": (lambda x: x.log1p(), (-0.5, 3)),
    "expm1": (lambda x: x.expm1(), (-2, 2)),
    "sqrt": (lambda x: x.sqrt(), (0.2, 3)),
    "rsqrt": (lambda x: x.rsqrt(), (0.2, 3)),
    "sin": (lambda x: x.sin(), (-3, 3)),
    "cos": (lambda x: x.cos(), (-3, 3)),
    "tan": (lambda x: x.tan(), (-1.2, 1.2)),
    "sinh": (lambda x: x.sinh(), (-2, 2)),
    "cosh": (lambda x: x.cosh(), (-2, 2)),
    "asin": (lambda x: x.asin(), (-0.9, 0.9)),
    "acos": (lambda x: x.acos(), (-0.9, 0.9)),
    "atan": (lambda x: x.atan(), (-3, 3)),
    "asinh": (lambda x: x.asinh(), (-3, 3)),
    "acosh": (lambda x: x.acosh(), (1.1, 4)),
    "atanh": (lambda x: x.atanh(), (-0.9, 0.9)),
    "tanh": (lambda x: x.tanh(), (-2, 2)),
    "sigmoid": (lambda x: x.sigmoid(), (-4, 4)),
    "erf": (lambda x: x.erf(), (-2, 2)),
    "relu": (lambda x: x.relu(), (-2, 2)),
    "sign": (lambda x: x.sign(), (-2, 2)),
    "floor": (lambda x: x.floor(), (-3, 3)),
    "ceil": (lambda x: x.ceil(), (-3, 3)),
    "round": (lambda x: x.round(), (-3, 3)),
    "copy": (lambda x: x.clone(), (-2, 2)),
    "gelu": (lambda x: x.gelu(), (-3, 3)),
    "gelu_tanh": (lambda x: x.gelu(approximate="tanh"), (-3, 3)),
    "silu": (lambda x: x.silu(), (-3, 3)),
    "softplus": (lambda x: x.softplus(), (-3, 3)),
    "softplus_beta": (lambda x: x.softplus(beta=2.0), (-3, 3)),
    "softplus_thresh": (lambda x: x.softplus(beta=1.5, threshold=1.0), (-3, 3)),
    "trunc": (lambda x: x.trunc(), (-3, 3)),
    "square": (lambda x: x.square(), (-2, 2)),
    "reciprocal": (lambda x: x.reciprocal(), (0.5, 2)),
    "log2": (lambda x: x.log2(), (0.2, 3)),
    "log10": (lambda x: x.log10(), (0.2, 3)),
    "exp2": (lambda x: x.exp2(), (-2, 2)),
    "clamp": (lambda x: x.clamp(-0.5, 0.7), (-2, 2)),
    "clamp_min": (lambda x: x.clamp(min=0.3), (-2, 2)),
    "clamp_max": (lambda x: x.clamp(max=0.3), (-2, 2)),
    "pow_scalar": (lambda x: x ** 3, (-2, 2)),
    "pow_half": (lambda x: x ** 0.5, (0.2, 2)),
    "rpow_scalar": (lambda x: 2.5 ** x, (-2, 2)),
    "div_rscalar": (lambda x: 3.0 / x, (0.5, 2)),
    "rsub_scalar": (lambda x: 1.5 - x, (-2, 2)),
    "remainder_scalar": (lambda x: x % 1.5, (0.1, 1.4)),
    "masked_fill": (lambda x: x.masked_fill(x > 0, 2.0), (-2, 2)),
    "where_scalar": (lambda x: tj.where(x > 0, x * x, 0.5), (-2, 2)),
}


@pytest.mark.parametrize("shape", [(), (2, 3)], ids=str)
@pytest.mark.parametrize("name", list(GRAD_UNARY))
def test_gradcheck_unary(name, shape):
    fn, (lo, hi) = GRAD_UNARY[name]
    x = leaf64(shape, lo, hi, seed=7)
    assert gradcheck(fn, (x,))


GRAD_BINARY = {
    "add": (lambda x, y: x + y, (-2, 2), (-2, 2)),
    "sub": (lambda x, y: x - y, (-2, 2), (-2, 2)),
    "mul": (lambda x, y: x * y, (-2, 2), (-2, 2)),
    "div": (lambda x, y: x / y, (-2, 2), (0.5, 2)),
    "pow": (lambda x, y: x ** y, (0.3, 2), (-2, 2)),
    "remainder": (lambda x, y: x % y, (3.1, 3.9), (2.1, 2.9)),
    "fmod": (lambda x, y: tj.fmod(x, y), (3.1, 3.9), (2.1, 2.9)),
    "atan2": (lambda x, y: tj.atan2(x, y), (-2, 2), (0.5, 2)),
    "maximum": (lambda x, y: tj.maximum(x, y), (-2, 2), (-2, 2)),
    "minimum": (lambda x, y: tj.minimum(x, y), (-2, 2), (-2, 2)),
    "add_alpha": (lambda x, y: x.add(y, alpha=2.5), (-2, 2), (-2, 2)),
    "sub_alpha": (lambda x, y: x.sub(y, alpha=-0.5), (-2, 2), (-2, 2)),
    "lerp": (lambda x, y: x.lerp(y, 0.3), (-2, 2), (-2, 2)),
    "lerp_weight": (lambda x, w: tj.ones_like(x).lerp(x * 2, w), (-2, 2), (0, 1)),
    "where": (lambda x, y: tj.where(x > 0, x, y), (-2, 2), (-2, 2)),
    "clamp_min_tensor": (lambda x, y: x.clamp(min=y), (-2, 2), (-2, 2)),
    "clamp_max_tensor": (lambda x, y: x.clamp(max=y), (-2, 2), (-2, 2)),
}
GRAD_SHAPES = [((2, 3), (2, 3)), ((2, 3), (3,)), ((3,), (2, 3)), ((2, 3), ()), ((), (2, 3)),
               ((2, 1), (1, 3))]


@pytest.mark.parametrize("shapes", GRAD_SHAPES, ids=str)
@pytest.mark.parametrize("name", list(GRAD_BINARY))
def test_gradcheck_binary(name, shapes):
    fn, da, db = GRAD_BINARY[name]
    x, y = leaf64(shapes[0], *da, seed=1), leaf64(shapes[1], *db, seed=2)
    assert gradcheck(fn, (x, y))


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow", "maximum", "minimum"])
def test_gradcheck_binary_scalar_operand(name):
    fn, da, db = GRAD_BINARY[name]
    x = leaf64((2, 3), *da, seed=1)
    y = leaf64((2, 3), *db, seed=2)
    sa, sb = float(np.mean(da)), float(np.mean(db))
    assert gradcheck(lambda t: fn(t, sb), (x,))
    assert gradcheck(lambda t: fn(sa, t), (y,))


def test_gradcheck_only_one_input_requires_grad():
    x = leaf64((2, 3), 0.3, 2, seed=1)
    y = tj.tensor(data((3,), F64, -2, 2, seed=2))  # constant
    assert gradcheck(lambda t: t ** y, (x,))
    assert gradcheck(lambda t: y ** 2 / t, (x,))


def test_gradcheck_clamp_tensor_bounds_all_inputs():
    x = leaf64((2, 3), -2, 2, seed=1)
    lo = leaf64((3,), -1.5, -0.1, seed=2)
    hi = leaf64((), 0.2, 1.0, seed=3)
    assert gradcheck(lambda a, b, c: a.clamp(b, c), (x, lo, hi))


def test_gradcheck_where_all_inputs_broadcast():
    c = tj.tensor([True, False, True])
    x, y = leaf64((2, 3), seed=1), leaf64((2, 1), seed=2)
    assert gradcheck(lambda a, b: tj.where(c, a, b), (x, y))


def test_gradcheck_cast():
    # through float32 and back: finite differences need a coarser step
    x = leaf64((2, 3), seed=3)
    assert gradcheck(lambda t: t.float().double() * t, (x,), eps=1e-3, atol=1e-3)
    assert gradcheck(lambda t: t.to(tj.float32) * 2, (x,), eps=1e-3, atol=1e-3)


def test_every_differentiable_op_is_gradchecked():
    names = {n.removesuffix("_scalar") for n in GRAD_UNARY} | set(GRAD_BINARY)
    names |= {"where", "clamp", "cast"}  # where_scalar/clamp entries, test_gradcheck_cast
    missing = {o.name for o in EW_OPS if o.vjp is not None} - names
    assert not missing, f"differentiable elementwise ops without gradcheck: {sorted(missing)}"


def test_grad_of_cast():
    x = leaf64((3,))
    y = x.float()
    assert y.dtype == tj.float32 and y.requires_grad
    (y * 2).sum().backward()
    assert x.grad.dtype == tj.float64
    assert_close(x.grad, np.full(3, 2.0))
    z = leaf64((3,)).long()
    assert not z.requires_grad  # integer results carry no gradient, as torch


def test_no_grad_through_comparisons_and_integer_results():
    x = leaf64((3,))
    for out in (x > 0, x == x, x.isnan(), x.isfinite(), (x > 0).logical_not(), x.long(),
                x.bool(), x.isinf()):
        assert not out.requires_grad and out.grad_fn is None, out
    assert (x * 2).requires_grad and (x * 2).grad_fn is not None


GRADGRAD = {
    "exp": (lambda x: x.exp(), (-2, 2)),
    "asin": (lambda x: x.asin(), (-0.8, 0.8)),
    "atan": (lambda x: x.atan(), (-2, 2)),
    "acosh": (lambda x: x.acosh(), (1.2, 3)),
    "log": (lambda x: x.log(), (0.3, 3)),
    "log1p": (lambda x: x.log1p(), (-0.5, 3)),
    "expm1": (lambda x: x.expm1(), (-2, 2)),
    "sin": (lambda x: x.sin(), (-3, 3)),
    "cos": (lambda x: x.cos(), (-3, 3)),
    "tan": (lambda x: x.tan(), (-1, 1)),
    "sinh": (lambda x: x.sinh(), (-2, 2)),
    "cosh": (lambda x: x.cosh(), (-2, 2)),
    "tanh": (lambda x: x.tanh(), (-2, 2)),
    "sigmoid": (lambda x: x.sigmoid(), (-4, 4)),
    "erf": (lambda x: x.erf(), (-2, 2)),
    "sqrt": (lambda x: x.sqrt(), (0.3, 3)),
    "rsqrt": (lambda x: x.rsqrt(), (0.3, 3)),
    "abs": (lambda x: x.abs() * x, (-2, 2)),
    "relu": (lambda x: x.relu() * x, (-2, 2)),
    "gelu": (lambda x: x.gelu(), (-3, 3)),
    "gelu_tanh": (lambda x: x.gelu(approximate="tanh"), (-3, 3)),
    "silu": (lambda x: x.silu(), (-3, 3)),
    "softplus": (lambda x: x.softplus(), (-3, 3)),
    "softplus_beta": (lambda x: x.softplus(beta=2.0, threshold=3.0), (-3, 3)),
    "reciprocal": (lambda x: x.reciprocal(), (0.5, 2)),
    "pow_scalar": (lambda x: x ** 3.5, (0.3, 2)),
    "clamp": (lambda x: x.clamp(-0.5, 0.7) * x, (-2, 2)),
}


@pytest.mark.parametrize("name", list(GRADGRAD))
def test_gradgradcheck_unary(name):
    fn, (lo, hi) = GRADGRAD[name]
    assert gradgradcheck(fn, (leaf64((2, 3), lo, hi, seed=5),))


GRADGRAD_BINARY = {
    "atan2": (lambda x, y: tj.atan2(x, y), (-2, 2), (0.5, 2)),
    "mul": (lambda x, y: x * y, (-2, 2), (-2, 2)),
    "div": (lambda x, y: x / y, (-2, 2), (0.5, 2)),
    "pow": (lambda x, y: x ** y, (0.3, 2), (-2, 2)),
    "add_sub": (lambda x, y: (x + y) * (x - y), (-2, 2), (-2, 2)),
    "maximum": (lambda x, y: tj.maximum(x, y) * x, (-2, 2), (-2, 2)),
    "where": (lambda x, y: tj.where(x > y, x * y, y * y), (-2, 2), (-2, 2)),
    "remainder": (lambda x, y: (x % y) * y, (3.1, 3.9), (2.1, 2.9)),
}


@pytest.mark.parametrize("shapes", [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 3), ())], ids=str)
@pytest.mark.parametrize("name", list(GRADGRAD_BINARY))
def test_gradgradcheck_binary(name, shapes):
    fn, da, db = GRADGRAD_BINARY[name]
    x, y = leaf64(shapes[0], *da, seed=1), leaf64(shapes[1], *db, seed=2)
    assert gradgradcheck(fn, (x, y))


# ----------------------------------------------------------------------------------------------
# edge semantics (torch's conventions)

def _grad(fn, *xs):
    xs = [tj.tensor(x, dtype=tj.float64, requires_grad=True) for x in xs]
    out = fn(*xs)
    return [g.numpy() for g in tj.autograd.grad(out.sum(), xs)]


def test_relu_and_abs_gradient_at_zero():
    assert _grad(lambda x: x.relu(), [0.0, -1.0, 2.0])[0].tolist() == [0.0, 0.0, 1.0]
    assert _grad(lambda x: x.abs(), [0.0, -1.0, 2.0])[0].tolist() == [0.0, -1.0, 1.0]
    assert _grad(lambda x: x.sign(), [0.0, -1.0])[0].tolist() == [0.0, 0.0]


def test_maximum_minimum_split_gradient_at_ties():
    ga, gb = _grad(tj.maximum, [1.0, 2.0, 3.0], [1.0, 5.0, 0.0])
    assert ga.tolist() == [0.5, 0.0, 1.0] and gb.tolist() == [0.5, 1.0, 0.0]
    ga, gb = _grad(tj.minimum, [1.0, 2.0, 3.0], [1.0, 5.0, 0.0])
    assert ga.tolist() == [0.5, 1.0, 0.0] and gb.tolist() == [0.5, 0.0, 1.0]
    # a broadcast tie sums the halves back onto the smaller operand
    ga, gb = _grad(tj.maximum, [1.0, 1.0, 0.0], 1.0)
    assert ga.tolist() == [0.5, 0.5, 0.0] and gb.tolist() == 2.0


def test_clamp_gradient_is_one_at_the_boundary():
    g, = _grad(lambda x: x.clamp(0.0, 1.0), [-0.5, 0.0, 0.5, 1.0, 1.5])
    assert g.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    g, = _grad(lambda x: x.clamp(min=0.0), [0.0, -1.0])
    assert g.tolist() == [1.0, 0.0]
    g, = _grad(lambda x: x.clamp(max=0.0), [0.0, 1.0])
    assert g.tolist() == [1.0, 0.0]
    # tensor bounds follow the same (inclusive) rule
    g, = _grad(lambda x: x.clamp(tj.tensor(0.0, dtype=tj.float64),
                                 tj.tensor(1.0, dtype=tj.float64)), [-0.5, 0.0, 0.5, 1.0, 1.5])
    assert g.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_pow_gradients_at_zero():
    gx, ge = _grad(lambda x, e: x ** e, [0.0, 0.0, 2.0, 0.0], [2.0, 0.0, 1.0, 0.5])
    # d/de x**e at x == 0 is 0 (torch masks 0 * log(0)), never nan
    assert ge[:2].tolist() == [0.0, 0.0]
    assert ge[2] == pytest.approx(2 * math.log(2))
    # d/dx x**e at e == 0 is 0 (torch masks 0 * 0**-1)
    assert gx[:3].tolist() == [0.0, 0.0, 1.0]
    assert gx[3] == np.inf
    g, = _grad(lambda x: x ** 0, [0.0, 3.0])
    assert g.tolist() == [0.0, 0.0]
    g, = _grad(lambda x: x ** 2, [0.0, 3.0])
    assert g.tolist() == [0.0, 6.0]


def test_softplus_large_inputs():
    x = tj.tensor([-100.0, -30.0, 0.0, 30.0, 100.0, 1000.0], requires_grad=True)
    y = x.softplus()
    assert np.all(np.isfinite(y.detach().numpy()))
    assert_close(y[3:], np.array([30.0, 100.0, 1000.0], F32))
    assert y[2].item() == pytest.approx(math.log(2))
    y.sum().backward()
    g = x.grad.numpy()
    assert not np.any(np.isnan(g))
    assert g.tolist()[2:] == [0.5, 1.0, 1.0, 1.0]
    assert 0 <= g[0] < 1e-30
    # beta and threshold: x*beta above threshold is linear
    xb = tj.tensor([5.0, 0.5], dtype=tj.float64)
    assert_close(xb.softplus(beta=2.0, threshold=4.0), np.array([5.0, np.log1p(np.e) / 2]))


def test_sigmoid_large_inputs_finite():
    x = tj.tensor([-1000.0, -100.0, -20.0, 0.0, 20.0, 100.0, 1000.0], requires_grad=True)
    y = x.sigmoid()
    v = y.detach().numpy()
    assert np.all(np.isfinite(v))
    assert v[0] == 0.0 and v[-1] == 1.0 and v[3] == 0.5
    assert v[2] == pytest.approx(math.exp(-20) / (1 + math.exp(-20)), rel=1e-6)
    assert 0 < v[1] < 1e-43  # exp(-100) is a float32 denormal, not 0 and not nan
    y.sum().backward()
    assert np.all(np.isfinite(x.grad.numpy()))
    xd = tj.tensor([-700.0, 700.0], dtype=tj.float64)
    assert xd.sigmoid().numpy()[0] == pytest.approx(math.exp(-700), rel=1e-12)
    assert xd.sigmoid().numpy()[1] == 1.0


def test_tanh_exp_extremes():
    assert tj.tensor([-1000.0, 1000.0]).tanh().tolist() == [-1.0, 1.0]
    assert tj.tensor([-1000.0, 1000.0]).exp().tolist() == [0.0, math.inf]
    assert tj.tensor([0.0, -1.0]).log().tolist()[0] == -math.inf
    assert math.isnan(tj.tensor([-1.0]).log().item())
    assert math.isnan(tj.tensor([-1.0]).sqrt().item())


def test_nan_propagation():
    nan = float("nan")
    x = tj.tensor([nan, 1.0, -1.0])
    assert np.isnan(x.relu().numpy()[0])
    assert np.isnan(tj.maximum(x, tj.tensor(0.0)).numpy()[0])
    assert np.isnan(tj.maximum(tj.tensor(0.0), x).numpy()[0])
    assert np.isnan(tj.minimum(x, 0.0).numpy()[0])
    assert np.isnan(x.clamp(0.0, 0.5).numpy()[0])
    assert np.isnan(x.clamp(tj.tensor(0.0), tj.tensor(0.5)).numpy()[0])
    assert_close(x.clamp(0.0, 0.5)[1:], np.array([0.5, 0.0], F32))
    assert np.isnan(x.sigmoid().numpy()[0]) and np.isnan(x.tanh().numpy()[0])
    assert (x != x).tolist() == [True, False, False]


def test_remainder_and_floordiv_follow_python_signs():
    a = [-7, -7, 7, 7, -6, 0]
    b = [3, -3, 3, -3, 3, -4]
    ta, tb = tj.tensor(a), tj.tensor(b)
    assert (ta % tb).tolist() == [x % y for x, y in zip(a, b, strict=True)]
    assert (ta // tb).tolist() == [x // y for x, y in zip(a, b, strict=True)]
    assert tj.remainder(ta, tb).tolist() == [x % y for x, y in zip(a, b, strict=True)]
    fa = [-7.5, -7.5, 7.5, 7.5, -0.5]
    fb = [2.0, -2.0, 2.0, -2.0, 0.25]
    tfa, tfb = tj.tensor(fa, dtype=tj.float64), tj.tensor(fb, dtype=tj.float64)
    assert (tfa % tfb).tolist() == [x % y for x, y in zip(fa, fb, strict=True)]
    assert (tfa // tfb).tolist() == [x // y for x, y in zip(fa, fb, strict=True)]
    assert (-7 % tj.tensor([3, -3])).tolist() == [-7 % 3, -7 % -3]
    assert (-7 // tj.tensor([2, -2])).tolist() == [-7 // 2, -7 // -2]


def test_float_division_by_zero():
    x = tj.tensor([1.0, -1.0, 0.0])
    r = (x / 0.0).tolist()
    assert r[:2] == [math.inf, -math.inf] and math.isnan(r[2])
    r = (x // 0.0).tolist()
    assert r[:2] == [math.inf, -math.inf] and math.isnan(r[2])
    assert all(math.isnan(v) for v in (x % 0.0).tolist())
    assert (tj.tensor([1, 2]) / 0).tolist() == [math.inf, math.inf]


@pytest.mark.parametrize("sym,name", [("//", "floordiv"), ("%", "remainder")])
def test_integer_division_by_zero_raises(sym, name):
    # torch raises ZeroDivisionError; numpy would silently answer 0
    fn = ARITH[sym]
    with pytest.raises(RuntimeError, match=f"{name}: ZeroDivisionError"):
        fn(tj.tensor([1, 2]), 0)
    with pytest.raises(RuntimeError, match=f"{name}: ZeroDivisionError"):
        fn(tj.tensor([1, 2], dtype=tj.int32), tj.tensor([3, 0], dtype=tj.int32))
    with pytest.raises(RuntimeError, match=f"{name}: ZeroDivisionError"):
        fn(7, tj.tensor([0, 1]))
    assert fn(tj.tensor([7, -7]), tj.tensor([2, 2])).tolist() == [fn(7, 2), fn(-7, 2)]
    assert fn(tj.tensor([1.0]), 0).dtype == tj.float32  # float division by zero is inf/nan
    assert fn(tj.tensor([1]), 0.0).dtype == tj.float32


def test_round_half_to_even():
    x = tj.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    assert x.round().tolist() == [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0]
    assert x.trunc().tolist() == [-2.0, -1.0, -0.0, 0.0, 1.0, 2.0]


def test_ops_do_not_modify_inputs_or_alias_outputs():
    a = data((2, 3), F32)
    keep = a.copy()
    x = tj.from_numpy(a)
    for out in (x.clone(), x + 0, x.relu(), x.abs(), x.clamp(-10, 10), x * 1):
        assert not np.shares_memory(out.numpy(), a)
    np.testing.assert_array_equal(a, keep)


# ----------------------------------------------------------------------------------------------
# errors

def test_broadcast_mismatch_names_op_and_shapes():
    with pytest.raises(ShapeError, match=r"add.*\(2, 3\).*\(4,\)"):
        tj.ones(2, 3) + tj.ones(4)
    with pytest.raises(ShapeError, match=r"mul.*\(3,\).*\(2, 2\)"):
        tj.ones(3) * tj.ones(2, 2)
    with pytest.raises(ShapeError, match=r"maximum.*\(2,\).*\(3,\)"):
        tj.maximum(tj.ones(2), tj.ones(3))
    with pytest.raises(ShapeError, match=r"lt.*\(2,\).*\(3,\)"):
        _ = tj.ones(2) < tj.ones(3)
    with pytest.raises(ShapeError, match=r"where.*\(2,\).*\(3,\)"):
        tj.where(tj.ones(2) > 0, tj.ones(3), 0.0)


def test_broadcast_error_message_points_at_user_line():
    with pytest.raises(ShapeError) as info:
        tj.ones(2, 3) - tj.ones(4)
    assert "test_ops_elementwise.py" in str(info.value)
    assert "sub" in str(info.value)


def test_where_condition_must_be_bool():
    with pytest.raises(DTypeError, match="where: condition must be a bool tensor, got float32"):
        tj.where(tj.ones(3), tj.ones(3), tj.zeros(3))
    with pytest.raises(DTypeError, match="condition must be a bool tensor, got int64"):
        tj.where(tj.tensor([1, 0]), 1.0, 0.0)


def test_inplace_add_broadcast_must_fit_self():
    x = tj.ones(3)
    with pytest.raises(ShapeError, match=r"add_.*\(3,\).*\(2, 3\)"):
        x.add_(tj.ones(2, 3))
    assert x.tolist() == [1.0, 1.0, 1.0]  # untouched
    y = tj.ones(2, 3)
    y.add_(tj.tensor([1.0, 2.0, 3.0]))  # broadcast into self is fine
    assert_close(y, np.array([[2, 3, 4], [2, 3, 4]], F32))


def test_inplace_int_add_float_cannot_be_cast():
    x = tj.tensor([1, 2])
    with pytest.raises(DTypeError, match="can't be cast"):
        x.add_(1.5)
    with pytest.raises(DTypeError, match="can't be cast"):
        x += tj.tensor([0.5, 0.5])
    assert x.tolist() == [1, 2]
    x.add_(tj.tensor([1, 1], dtype=tj.int32))
    assert x.dtype == tj.int64 and x.tolist() == [2, 3]
    x += 1
    assert x.tolist() == [3, 4]
    f = tj.ones(2)
    f.mul_(tj.tensor([2.0, 3.0], dtype=tj.float64))  # float64 into float32 is fine
    assert f.dtype == tj.float32 and f.tolist() == [2.0, 3.0]


@pytest.mark.parametrize("sym", ["//", "%", "**"])
def test_bool_floordiv_remainder_pow_refused(sym):
    # torch has no bool kernels for these; numpy would answer in int8
    name = {"//": "floordiv", "%": "remainder", "**": "pow"}[sym]
    b = tj.tensor([True, False])
    with pytest.raises(DTypeError, match=f"{name}: not implemented for bool operands"):
        ARITH[sym](b, b)
    with pytest.raises(DTypeError, match=f"{name}: not implemented for bool"):
        ops.OPS[name].infer([((2,), np.dtype(B)), True])
    assert ARITH[sym](b, 1).dtype == tj.int64  # with an int operand it is integer arithmetic


def test_int_pow_negative_exponent_error():
    with pytest.raises(ValueError, match="pow.*negative integer powers"):
        tj.tensor([1, 2]) ** -1


def test_numpy_erf_reference_sanity():
    # guard the reference used above against silent breakage
    assert _np_erf(np.array([0.0, 1.0]))[1] == pytest.approx(0.8427007929497149)


def test_every_row_is_named_after_its_op():
    # ops.NAME is the row of op "name" (the in-place methods find their rows so)
    assert [n for n, o in ops.OPS.items() if getattr(ops, n.upper(), None) is not o] == []


@pytest.mark.parametrize("y", [2, 3, 4, -1, -2, 0.5, -0.5])
def test_eager_small_powers_are_the_compiled_spellings(y):
    """Eager ``x ** 3`` multiplies as the compiled graph does (bit-identical; not np.power,
    20x slower on float32), specials included."""
    x = np.concatenate([np.random.default_rng(1).standard_normal(300).astype(np.float32),
                        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30], np.float32)])
    eager = (tj.tensor(x) ** y).numpy()
    f = tj.trace(lambda t: t ** y)
    f(tj.tensor(x))  # traces (runs eagerly)
    compiled = f(tj.tensor(x)).numpy()
    assert "pow" not in {n.op for n in f.specs()[0].compiled.optimized.nodes}
    np.testing.assert_array_equal(eager, compiled)
    np.testing.assert_array_equal(np.signbit(eager), np.signbit(compiled))
    with np.errstate(all="ignore"):
        want = np.power(x.astype(np.float64), y)
        finite = np.isfinite(want.astype(np.float32)) & (np.abs(want) > 1e-30)
    np.testing.assert_allclose(eager[finite], want[finite], rtol=3e-7)
