"""Scalar functions that generated CPU kernels call by the names in the op table's ``expr``
templates (``exp({0})``, ``maximum({0}, {1})``, ...). Each is a numba overload, so one name
serves every dtype: float32 uses the vectorisable approximations of ``codegen.mathlib``,
float64 uses libm, integers and bools get exact integer code. ``PRECISE`` is the same set
with libm for float32 too (``trace(precise_math=True)``).

Semantics follow the eager numpy implementations: NaN propagates through maximum, minimum,
relu and clamp; rounding is half to even; integer // and % floor like Python (a zero divisor is
counted by the kernel, which then raises); sign follows torch (sign(nan) is 0).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

try:  # the vectorisable float32 approximations (codegen/mathlib.py)
    from . import mathlib as _ml
except ImportError:  # pragma: no cover - mathlib missing: libm everywhere
    _ml = None


def _fast32(name):
    return getattr(_ml, f"{name}_f32", None) if _ml is not None else None


def _stub(name):
    def fn(*args):
        raise NotImplementedError(f"{name} is only callable inside numba-compiled kernels")
    fn.__name__ = name
    return fn


def _is_float(t):
    return isinstance(t, types.Float)


def _define_transcendental(name, libm, fast_ok=True, precise=False):
    """A float-only unary function: float32 -> fast approximation (unless precise)."""
    stub = _stub(name)
    fast = _fast32(name) if fast_ok and not precise else None

    @overload(stub)
    def _impl(x):
        if x == types.float32:
            if fast is not None:
                return lambda x: fast(x)
            return lambda x: np.float32(libm(x))
        if _is_float(x):
            return lambda x: libm(x)
        return None

    return stub


@numba.njit(inline="always")  # cached by tracejit.runtime.cache.bind_helpers
def _sigmoid64(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _libm(name):
    if name == "sigmoid":
        return _sigmoid64
    if name == "sqrt":
        return np.sqrt
    if name == "log":
        return np.log
    if name == "log1p":
        return np.log1p
    return getattr(math, name)


TRANSCENDENTAL = ("exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tan", "tanh",
                  "sigmoid", "erf")


class _Namespace:
    pass


def _build(precise: bool):
    ns = _Namespace()
    for name in TRANSCENDENTAL:
        setattr(ns, name, _define_transcendental(f"{name}{'_p' if precise else ''}",
                                                 _libm(name), fast_ok=name not in (
                                                     "sqrt", "sin", "cos", "tan"),
                                                 precise=precise))
    return ns


FAST = _build(precise=False)
PRECISE = _build(precise=True)


# ---------------------------------------------------------------- exact helpers (all dtypes)

def relu(x):
    raise NotImplementedError


@overload(relu)
def _relu(x):
    zero = _const(x, 0)
    if isinstance(x, types.Float):
        return lambda x: x if not (x <= 0) else zero  # NaN stays NaN
    return lambda x: x if x > 0 else zero


def _const(t, value):
    """A constant of numba type ``t`` (closure constants keep float32 math in float32)."""
    return numba.np.numpy_support.as_dtype(t).type(value)


def maximum(a, b):
    raise NotImplementedError


def _llvm_float_intrinsic(name: str):
    """A numba intrinsic calling ``llvm.<name>`` on two floats of one type."""

    @intrinsic
    def call(typingctx, a, b):
        if not isinstance(a, types.Float) or a != b:
            return None

        def codegen(context, builder, signature, args):
            t = args[0].type
            fn = builder.module.declare_intrinsic(f"llvm.{name}", [t], ir.FunctionType(t, [t, t]))
            return builder.call(fn, args)

        return a(a, b), codegen

    return call


# NOTE: IEEE 754-2019 maximum/minimum: NaN propagates (numpy's semantics) and, unlike a compare
# and select, LLVM vectorises reductions over them (a row max runs ~10x faster)
_fmaximum = _llvm_float_intrinsic("maximum")
_fminimum = _llvm_float_intrinsic("minimum")


@overload(maximum)
def _maximum(a, b):
    if isinstance(a, types.Float) and a == b:
        return lambda a, b: _fmaximum(a, b)
    return lambda a, b: a if (a > b or a != a) else b


def minimum(a, b):
    raise NotImplementedError


@overload(minimum)
def _minimum(a, b):
    if isinstance(a, types.Float) and a == b:
        return lambda a, b: _fminimum(a, b)
    return lambda a, b: a if (a < b or a != a) else b


def sign(x):
    raise NotImplementedError


@overload(sign)
def _sign(x):
    if x == types.boolean:
        return lambda x: x
    one, minus_one, zero = _const(x, 1), _const(x, -1), _const(x, 0)
    # torch: (x > 0) - (x < 0), so sign(nan) and sign(-0.0) are 0 (numpy: nan and -0.0)
    return lambda x: one if x > 0 else (minus_one if x < 0 else zero)


def _rounding(name, fn):
    stub = _stub(name)

    @overload(stub)
    def _impl(x):
        if _is_float(x):
            return lambda x: fn(x)
        return lambda x: x

    return stub


floor = _rounding("floor", np.floor)
ceil = _rounding("ceil", np.ceil)
round = _rounding("round", np.rint)  # noqa: A001 - half to even, like numpy and torch


def isnan(x):
    raise NotImplementedError


@overload(isnan)
def _isnan(x):
    if _is_float(x):
        return lambda x: x != x
    return lambda x: False


def isfinite(x):
    raise NotImplementedError


@overload(isfinite)
def _isfinite(x):
    if _is_float(x):
        return lambda x: (x - x) == 0  # False for inf and nan
    return lambda x: True


def floordiv(a, b):
    raise NotImplementedError


# NOTE: kernels use error_model='numpy' (1.0 / 0 is inf), under which integer // and % by zero
# answer 0 here; the generated kernel counts zero divisors and raises after its loops, as eager
# tracejit and torch do (an exception raised inside a numba.prange loop would be lost).
@overload(floordiv)
def _floordiv(a, b):
    if _is_float(a):
        zero, one, half = _const(a, 0), _const(a, 1), _const(a, 0.5)

        def impl(a, b):
            # numpy's npy_floor_divide (eager's): floor(a / b) is wrong when a / b rounds up to
            # an integer (1.0 // 0.1 is 9.0) and for infinite operands (-5.0 // inf is -1.0)
            if b == zero:
                return a / b
            mod = np.fmod(a, b)
            div = (a - mod) / b  # nearly an integer: a - mod is a multiple of b
            if mod != zero and (b < zero) != (mod < zero):
                div -= one
            if div == zero:
                return np.copysign(zero, a / b)
            q = np.floor(div)
            if div - q > half:
                q += one
            return q
        return impl
    return lambda a, b: a // b


def remainder(a, b):
    raise NotImplementedError


@overload(remainder)
def _remainder(a, b):
    if _is_float(a):
        zero = _const(a, 0)

        def impl(a, b):
            # numpy's npy_remainder: the divisor's sign, a zero remainder too (-4.0 % 2.0 is 0.0,
            # 4.0 % -2.0 is -0.0); fmod(a, 0) is nan
            r = np.fmod(a, b)
            if b == zero:
                return r
            if r != zero:
                if (r < zero) != (b < zero):
                    r += b
                return r
            return np.copysign(zero, b)
        return impl
    return lambda a, b: a % b


def fmod(a, b):
    raise NotImplementedError


@overload(fmod)
def _fmod(a, b):
    if _is_float(a):
        return lambda a, b: np.fmod(a, b)  # C fmod: the dividend's sign; fmod(a, 0) is nan

    zero = _const(a, 0)

    def impl(a, b):
        # truncated division (numba's % floors); a zero divisor answers 0: the kernel counts
        # it and raises, as for floordiv
        if b == zero:
            return zero
        r = a % b
        if r != zero and (r < zero) != (a < zero):
            r -= b
        return r
    return impl


def power(a, b):
    raise NotImplementedError


@overload(power)
def _power(a, b):
    if _is_float(a):  # C pow: (-inf) ** 0.5 is inf, as numpy's for an array of exponents
        return lambda a, b: a ** b

    one = _const(a, 1)

    def ipow(a, b):
        if b < 0:
            raise ValueError("Integers to negative integer powers are not allowed.")
        r = one
        base, e = a, b
        while e:
            if e & 1:
                r *= base
            base *= base
            e >>= 1
        return r
    return ipow


def power_scalar(a, b):
    raise NotImplementedError


@overload(power_scalar)
def _power_scalar(a, b):
    """``a ** b`` for one exponent shared by every element (a Python number or a 0-d tensor):
    numpy, and torch, take a square root for 0.5, so (-inf) ** 0.5 is nan and (-0.0) ** 0.5 is
    -0.0 where C pow gives inf and 0.0. The test on b is loop-invariant: LLVM hoists it."""
    if _is_float(a):
        def impl(a, b):
            if b == 0.5:
                return np.sqrt(a)
            return a ** b
        return impl
    return lambda a, b: power(a, b)


def rsqrt(x):
    raise NotImplementedError


@overload(rsqrt)
def _rsqrt(x):
    if x == types.float32:
        return lambda x: np.float32(1) / np.sqrt(x)
    return lambda x: 1.0 / np.sqrt(x)
