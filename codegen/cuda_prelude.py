"""Device functions that generated CUDA kernels call for the names in the op table's ``expr``
templates (``exp({0})``, ``maximum({0}, {1})``, ...): the CUDA counterpart of
``codegen/prelude.py``.

One helper per template call and operand dtype, named ``<call>_<suffix>`` with the suffixes of
``SUFFIX`` (``sigmoid_f32``, ``floordiv_i64``, ``isnan_b``, ...): the renderer knows each
operand's dtype after the op's dtype rule (``ops.elementwise_plan``) and spells the call
``helper_name(call, dtype)``; a generated module imports the names it uses::

    from tracejit.codegen.cuda_prelude import maximum_f32, sigmoid_f32

    @cuda.jit
    def k1_add_sigmoid(x, y, out, n):
        i = cuda.grid(1)
        if i < n:
            out[i] = sigmoid_f32(maximum_f32(x[i], y[i]))

Why one name per dtype, not one overloaded name as on the CPU: ``numba.extending.overload``
and non-inline device functions ask the driver for the current device, so they cannot compile
to PTX without a GPU (CI has none). Every helper is ``@cuda.jit(device=True,
inline="always")`` and calls only other such helpers, ``math.*`` and ``numba.cuda.libdevice``,
so a kernel using them compiles with ``compile_ptx(..., cc=...)`` anywhere.

Semantics are the eager numpy implementations' (``tracejit.ops``), checked under the simulator
by tests/cuda/test_prelude_sim.py:

- float32 math stays float32: constants are closure values of the helper's dtype (an untyped
  ``1.0`` would promote the arithmetic to float64) and ``math.*`` on a float32 is libdevice's
  ``f`` variant.
- maximum/minimum propagate NaN and pick like numpy, ``a if (a > b or a != a) else b``: that
  also gives numpy's signed zeros (maximum(0.0, -0.0) is -0.0). No ``llvm.maximum``: NVVM
  leaves it an unresolved extern.
- relu keeps NaN and maps -0.0 to 0.0; sign(nan) and sign(-0.0) are 0 (torch); round is half
  to even (``rint``); floor, ceil, round, abs, relu, sign are the identity on bools.
- floordiv and remainder on floats are numpy's ``npy_divmod`` (fmod, then a correction to the
  divisor's sign, the quotient snapped to an integer): 1.0 // 0.1 is 9.0, not floor(10.0);
  -5.0 % inf is inf; a zero remainder takes the divisor's sign. On integers they floor like
  Python, and a zero divisor answers 0 (numpy's value): eager tracejit raises
  ZeroDivisionError there, so the kernel must count zero divisors and the launcher raise.
- power on integers is exact (square and multiply, wrapping like numpy); a negative exponent
  answers 0, and numpy raises: the kernel must flag it as for zero divisors. power on floats is
  C ``pow``; ``power_scalar`` (one exponent for every element) takes the square root for 0.5
  as numpy and torch do ((-inf) ** 0.5 is nan, (-0.0) ** 0.5 is -0.0).
- cast_<dst> converts any source like numpy's ``astype`` for values in range (to bool: x != 0,
  NaN is True). Out-of-range and NaN float to int differ: PTX saturates (NaN is 0) where numpy
  gives INT_MIN.
- clamp_<dt>(x, lo, hi) is minimum(maximum(x, lo), hi) (NaN kept); a one-sided clamp is one
  maximum or minimum.

NOTE: compile kernels with ``fastmath=False`` (numba-cuda's default) for eager-equal
results. numba-cuda's fastmath is all or nothing: it flushes subnormals to zero, approximates
division, sqrt and tanh, and sets LLVM's ``fast`` flags, whose ``nnan``/``ninf`` allow folding
the ``x != x`` tests that keep NaN in maximum, minimum, relu, isnan and isfinite (measured with
numba-cuda 0.30.4: the tests survive, as ``setp.nan.ftz.f32``, but nothing promises it).

NOTE: under the simulator (``NUMBA_ENABLE_CUDASIM=1``) kernels are plain Python on numpy
scalars, where ``math.log(-1.0)`` and ``math.exp(1000.0)`` raise and ``math.floor`` answers a
Python int. The leaf functions (``_leaves``) are then numpy's ufuncs, which answer as libdevice
does (C semantics, nan/inf, float32 kept); everything above the leaves is the same code on the
device and in the simulator.
"""

from __future__ import annotations

import itertools
import math
import string
from types import SimpleNamespace

import numpy as np
from numba import cuda

from tracejit.cuda import simulator_requested

SUFFIX = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "b"}
FLOATS = ("float32", "float64")
INTS = ("int32", "int64")
ALL = FLOATS + INTS + ("bool",)

# Helpers the renderer writes that no ``expr`` template names, with the op whose operand
# dtypes they take (codegen/cpu.py calls power_scalar for pow with one exponent).
RENDERER_CALLS = {"power_scalar": "pow"}

# Number of operands of each helper (cast_<dst> takes one value of any dtype).
ARITY = {"floordiv": 2, "remainder": 2, "fmod": 2, "atan2": 2, "power": 2, "power_scalar": 2,
         "maximum": 2, "minimum": 2, "clamp": 3}

HELPERS: dict = {}  # (call, dtype name) -> device function; dtype is the operands' dtype
PRELUDE_NAMES: dict = {}  # helper name ("sigmoid_f32") -> (call, dtype name)


def helper_name(call: str, dtype) -> str:
    """The prelude name generated source calls: ``helper_name("exp", "float32") == "exp_f32"``."""
    return f"{call}_{SUFFIX[np.dtype(dtype).name]}"


SIMULATOR = simulator_requested()  # numba.cuda runs kernels as Python (see the NOTE above)


def _leaves(dtype: str) -> SimpleNamespace:
    """The scalar math the helpers are built on, for one float dtype."""
    if SIMULATOR:
        t = np.dtype(dtype).type

        def erf(x):  # numpy has no erf; libm's, rounded to the argument's dtype
            return t(math.erf(x))

        def power(a, b):  # C pow, as numpy's array loop; its scalar power takes sqrt for 0.5
            return np.power(np.array([a]), np.array([b]))[0]

        return SimpleNamespace(
            exp=np.exp, log=np.log, log1p=np.log1p, expm1=np.expm1, sqrt=np.sqrt, sin=np.sin,
            cos=np.cos, tan=np.tan, sinh=np.sinh, cosh=np.cosh, tanh=np.tanh, erf=erf,
            floor=np.floor, ceil=np.ceil, rint=np.rint, fmod=np.fmod, copysign=np.copysign,
            pow=power, asin=np.arcsin, acos=np.arccos, atan=np.arctan, asinh=np.arcsinh,
            acosh=np.arccosh, atanh=np.arctanh, atan2=np.arctan2)
    from numba.cuda import libdevice

    return SimpleNamespace(
        exp=math.exp, log=math.log, log1p=math.log1p, expm1=math.expm1, sqrt=math.sqrt,
        sin=math.sin, cos=math.cos, tan=math.tan, sinh=math.sinh, cosh=math.cosh,
        tanh=math.tanh, erf=math.erf, floor=math.floor, ceil=math.ceil,
        rint=libdevice.rintf if dtype == "float32" else libdevice.rint, fmod=math.fmod,
        copysign=math.copysign, pow=math.pow, asin=math.asin, acos=math.acos, atan=math.atan,
        asinh=math.asinh, acosh=math.acosh, atanh=math.atanh, atan2=math.atan2)


_device = cuda.jit(device=True, inline="always")


def _export(call: str, dtype: str, fn):
    name = helper_name(call, dtype)
    fn.__name__ = fn.__qualname__ = name
    helper = _device(fn)
    HELPERS[(call, dtype)] = helper
    PRELUDE_NAMES[name] = (call, dtype)
    globals()[name] = helper
    return helper


# ------------------------------------------------------------------ float-only (float rule)

def _float_math(dtype: str) -> None:
    m = _leaves(dtype)
    t = np.dtype(dtype).type
    one = t(1)
    exp, log, log1p, expm1, sqrt = m.exp, m.log, m.log1p, m.expm1, m.sqrt
    sin, cos, tan, sinh, cosh, tanh, erf = m.sin, m.cos, m.tan, m.sinh, m.cosh, m.tanh, m.erf

    _export("exp", dtype, lambda x: exp(x))
    _export("log", dtype, lambda x: log(x))
    _export("log1p", dtype, lambda x: log1p(x))
    _export("expm1", dtype, lambda x: expm1(x))
    _export("sqrt", dtype, lambda x: sqrt(x))
    _export("rsqrt", dtype, lambda x: one / sqrt(x))  # not libdevice's rsqrt (2 ulp)
    _export("sin", dtype, lambda x: sin(x))
    _export("cos", dtype, lambda x: cos(x))
    _export("tan", dtype, lambda x: tan(x))
    _export("sinh", dtype, lambda x: sinh(x))
    _export("cosh", dtype, lambda x: cosh(x))
    _export("tanh", dtype, lambda x: tanh(x))
    _export("erf", dtype, lambda x: erf(x))

    def sigmoid(x):
        # e^-|x| never overflows; e / (1 + e) below 0 keeps the small results accurate
        e = exp(-abs(x))
        if x >= 0:
            return one / (one + e)
        return e / (one + e)  # NaN comes here and stays NaN

    _export("sigmoid", dtype, sigmoid)
    asin, acos, atan, asinh, acosh, atanh, atan2 = (
        m.asin, m.acos, m.atan, m.asinh, m.acosh, m.atanh, m.atan2)
    _export("asin", dtype, lambda x: asin(x))
    _export("acos", dtype, lambda x: acos(x))
    _export("atan", dtype, lambda x: atan(x))
    _export("asinh", dtype, lambda x: asinh(x))
    _export("acosh", dtype, lambda x: acosh(x))
    _export("atanh", dtype, lambda x: atanh(x))
    _export("atan2", dtype, lambda y, x: atan2(y, x))


# ------------------------------------------------------------------ every dtype

def _float_exact(dtype: str) -> None:
    m = _leaves(dtype)
    t = np.dtype(dtype).type
    zero, one, minus_one, half = t(0), t(1), t(-1), t(0.5)
    floor, ceil, rint, fmod, copysign = m.floor, m.ceil, m.rint, m.fmod, m.copysign
    pow_, sqrt = m.pow, m.sqrt

    _export("abs", dtype, lambda x: abs(x))
    _export("relu", dtype, lambda x: x if not (x <= zero) else zero)  # NaN stays NaN
    # torch: (x > 0) - (x < 0), so sign(nan) and sign(-0.0) are 0
    _export("sign", dtype, lambda x: one if x > zero else (minus_one if x < zero else zero))
    _export("floor", dtype, lambda x: floor(x))
    _export("ceil", dtype, lambda x: ceil(x))
    _export("round", dtype, lambda x: rint(x))  # half to even
    _export("isnan", dtype, lambda x: x != x)
    _export("isfinite", dtype, lambda x: (x - x) == zero)  # inf - inf and nan are nan

    def floordiv(a, b):
        # numpy's npy_floor_divide: a zero divisor gives a / b (inf or nan), else npy_divmod
        if b == zero:
            return a / b
        mod = fmod(a, b)
        div = (a - mod) / b  # nearly an integer: a - mod is a multiple of b
        if mod != zero and (b < zero) != (mod < zero):
            div -= one
        if div == zero:
            return copysign(zero, a / b)
        q = floor(div)
        if div - q > half:
            q += one
        return q

    def remainder(a, b):
        # numpy's npy_remainder: fmod(a, 0) is nan; otherwise the divisor's sign, also on 0
        mod = fmod(a, b)
        if b == zero:
            return mod
        if mod != zero:
            if (b < zero) != (mod < zero):
                mod += b
            return mod
        return copysign(zero, b)

    _export("floordiv", dtype, floordiv)
    _export("remainder", dtype, remainder)
    _export("fmod", dtype, lambda a, b: fmod(a, b))  # C fmod; fmod(a, 0) is nan
    _export("power", dtype, lambda a, b: pow_(a, b))  # C pow: (-inf) ** 0.5 is inf

    def power_scalar(a, b):
        if b == half:  # numpy and torch take a square root for 0.5
            return sqrt(a)
        return pow_(a, b)

    _export("power_scalar", dtype, power_scalar)


def _int_exact(dtype: str) -> None:
    t = np.dtype(dtype).type
    zero, one, minus_one = t(0), t(1), t(-1)

    _export("abs", dtype, lambda x: abs(x))  # abs(INT_MIN) wraps, as in numpy
    _export("relu", dtype, lambda x: x if x > zero else zero)
    _export("sign", dtype, lambda x: one if x > zero else (minus_one if x < zero else zero))
    for name in ("floor", "ceil", "round"):
        _export(name, dtype, lambda x: x)
    _export("isnan", dtype, lambda x: x != x)  # False, typed bool (a literal False is not)
    _export("isfinite", dtype, lambda x: x == x)
    # NOTE: numba computes int32 arithmetic in int64: every int32 result is cast back.
    # Python's floor semantics (numba's // and %); a zero divisor answers 0: see the docstring
    _export("floordiv", dtype, lambda a, b: t(a // b) if b != zero else zero)
    _export("remainder", dtype, lambda a, b: t(a % b) if b != zero else zero)

    def fmod(a, b):  # truncated: the dividend's sign; a zero divisor is flagged, as floordiv
        if b == zero:
            return zero
        r = t(a % b)
        if r != zero and (r < zero) != (a < zero):
            r = t(r - b)
        return r

    _export("fmod", dtype, fmod)

    def power(a, b):
        if b < zero:  # numpy raises; the kernel flags it (see the docstring)
            return zero
        r, base, e = one, a, b
        while e != zero:
            if e & one:
                r = t(r * base)
            base = t(base * base)
            e = t(e >> one)
        return r

    _export("power", dtype, power)
    _export("power_scalar", dtype, power)


def _bool_exact() -> None:
    for name in ("abs", "relu", "sign", "floor", "ceil", "round"):
        _export(name, "bool", lambda x: x)  # torch's sign and numpy's abs of a bool are x
    _export("isnan", "bool", lambda x: x != x)
    _export("isfinite", "bool", lambda x: x == x)


def _compare(dtype: str) -> None:
    def maximum(a, b):
        return a if (a > b or a != a) else b

    def minimum(a, b):
        return a if (a < b or a != a) else b

    hi = _export("maximum", dtype, maximum)
    lo = _export("minimum", dtype, minimum)
    _export("clamp", dtype, lambda x, a, b: lo(hi(x, a), b))


def _cast(dtype: str) -> None:
    if dtype == "bool":
        _export("cast", dtype, lambda x: x != 0)  # NaN is True, as numpy's astype(bool)
        return
    t = np.dtype(dtype).type
    _export("cast", dtype, lambda x: t(x))


for _dt in FLOATS:
    _float_math(_dt)
    _float_exact(_dt)
for _dt in INTS:
    _int_exact(_dt)
_bool_exact()
for _dt in ALL:
    _compare(_dt)
    _cast(_dt)
del _dt


# ------------------------------------------------------------------ completeness

def _operand_dtypes(op) -> set:
    """The dtypes an elementwise op's operands can have after its dtype rule."""
    from tracejit import dtypes as D
    from tracejit import ops
    from tracejit.errors import DTypeError

    if op.dtype_rule is None:  # clamp and cast: any tensor dtype
        return {np.dtype(d).name for d in D.SUPPORTED}
    tensor_keys = [(d, 2) for d in D.SUPPORTED]
    scalar_keys = list(ops._SCALAR_KEYS.values())
    arity = len({f for _, f, _, _ in string.Formatter().parse(op.expr or "{0}")
                 if f is not None and f.isdigit()})
    found = set()
    for keys in itertools.product(tensor_keys + scalar_keys, repeat=arity):
        if not any(k[1] for k in keys):  # at least one tensor operand
            continue
        try:
            casts, _ = ops.elementwise_plan(op, keys)
        except DTypeError:
            continue
        found.update(np.dtype(c).name for c in casts)
    return found


def required_helpers() -> dict:
    """``{call: dtype names}`` the CUDA renderer may need: every function name an ``expr``
    template calls (``ops.template_calls()``) and those in ``RENDERER_CALLS``, at every dtype
    the calling ops' dtype rules can give their operands."""
    from tracejit import ops

    calls = dict(ops.template_calls())
    for call, op_name in RENDERER_CALLS.items():
        calls.setdefault(call, [op_name])
    return {call: set().union(*(_operand_dtypes(ops.OPS[n]) for n in op_names))
            for call, op_names in calls.items()}


def missing_helpers() -> list:
    """``(call, dtype)`` pairs the renderer may need and this prelude lacks (must be empty)."""
    return sorted((call, dt) for call, dts in required_helpers().items() for dt in dts
                  if (call, dt) not in HELPERS)


__all__ = ["SUFFIX", "HELPERS", "PRELUDE_NAMES", "RENDERER_CALLS", "ARITY", "helper_name",
           "required_helpers", "missing_helpers", *PRELUDE_NAMES]
