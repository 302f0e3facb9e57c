"""The op table: one ``OpDef`` row per primitive (``dispatch.apply`` runs or records them).

A row holds everything about a primitive: its numpy implementation (used eagerly and by the
reference interpreter), its shape/dtype rule (``infer``), its vector-Jacobian product written
with Tensor operations (so the same rule differentiates eagerly, on the IR and to higher
order), for elementwise ops the expression code generation emits, and the facts every pass
reads (``view``, ``reduction``, ``fresh``, ``impure``, ...): no pass keeps its own list of names.

Higher-level functions (softmax, layer_norm, conv2d, ...) are compositions of these rows and
live in ``tensor.py`` / ``functional.py``.

>>> from tracejit import ops
>>> ops.OPS["mul"].kind
'elementwise'
"""

from __future__ import annotations

import dis
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import dtypes as D
from .errors import DTypeError, ShapeError, called_as, with_location
from .ir import Var

ELEMENTWISE = "elementwise"
REDUCE = "reduce"
SHAPE = "shape"
INDEX = "index"
LINALG = "linalg"  # BLAS contractions (matmul)
WINDOW = "window"


@dataclass(eq=False)
class OpDef:
    """One primitive. ``impl(*arrays, **attrs)`` computes it with numpy; ``infer(avals, **attrs)``
    gives the output ``(shape, dtype)`` from input avals (``(shape, dtype)`` pairs, or Python
    scalars); ``vjp(g, out, *inputs, **attrs)`` returns one gradient (or None) per input."""

    name: str
    kind: str
    impl: Callable
    infer: Callable
    vjp: Callable | None = None
    expr: str | None = None  # elementwise codegen template, ``{0}``, ``{1}`` are the operands
    dtype_rule: str | None = None  # elementwise only: how inputs are promoted (see _DTYPE_RULES)
    view: bool = False  # the numpy impl may return a view of input 0
    noisy: bool = False  # numpy may warn (log(0), 1/0): such warnings are silenced, as in torch
    # facts the passes, code generation and the runtime read (never lists of op names):
    reduction: bool = False  # a reduction over ``dims`` a kernel walks rows for (fuse, simplify)
    free_view: bool = False  # a view made from attributes alone: the backward graph re-makes it
    fresh: bool = False  # the result is always a new array, never a view of an operand (codegen)
    impure: bool = False  # has effects (draws random numbers): dce, cse and fold keep every call
    # ``impl(..., donated=True)`` may write its result into input 0's array: the compiled entry
    # passes it only for a temporary of the graph that dies at this node (memory_plan.donations)
    donates: bool = False
    int_zero_division: bool = False  # an integer zero divisor raises ZeroDivisionError (kernels)
    _plans: dict = field(default_factory=dict, repr=False)
    saves_out: bool = field(init=False, default=False)  # the vjp reads ``out`` (set below)

    def __post_init__(self):
        # NOTE: as in torch, changing an op's output in place only invalidates the op's backward
        # when its vjp reads ``out`` (exp, sigmoid, div, ...); found from the rule's code so a new
        # row cannot forget it. Anything that is not plain Python code counts as reading it.
        code = getattr(self.vjp, "__code__", None)
        self.saves_out = self.vjp is not None and (code is None or "out" in code.co_cellvars or any(
            "out" in (i.argval if isinstance(i.argval, tuple) else (i.argval,))
            for i in dis.get_instructions(code) if i.opname.startswith("LOAD_")))
        if self.free_view and not self.view:
            raise ValueError(f"op {self.name!r}: a free view is a view")

    def __repr__(self) -> str:
        return f"OpDef({self.name})"


OPS: dict[str, OpDef] = {}


def _forget_plans():
    for op in OPS.values():
        op._plans.clear()


D.on_default_dtype_change.append(_forget_plans)


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} registered twice")
    OPS[op.name] = op
    return op


# A Python scalar's key only needs its category: result_type maps it to the default dtype.
_SCALAR_KEYS = {bool: (D.bool_, 0), int: (D.int64, 0), float: (D.float64, 0)}


def _key(x):
    """Promotion key of an operand: an array's ``(dtype, rank class)``, or a scalar's."""
    if isinstance(x, np.ndarray):
        return (x.dtype, 2 if x.ndim else 1)
    k = _SCALAR_KEYS.get(type(x))
    if k is None:
        if isinstance(x, (bool, int, float, np.number, np.bool_)):
            return (D.scalar_dtype(x), 0)
        raise TypeError(f"expected a Tensor or a number, got {type(x).__name__}")
    return k


def elementwise_plan(op: OpDef, keys: tuple) -> tuple:
    """(dtype each input is cast to, output dtype) for operand keys; cached per op."""
    plan = op._plans.get(keys)
    if plan is None:
        plan = _run_rule(op.name, op.dtype_rule, keys)
        op._plans[keys] = plan
    return plan


def compute(op: OpDef, args: list, attrs: dict) -> np.ndarray:
    """``op`` on numpy arrays and Python scalars, with torch's promotion for elementwise ops.
    Eager execution and the reference interpreter both come through here."""
    orig = args
    if op.dtype_rule is not None:
        keys = tuple([_key(a) for a in args])
        plan = op._plans.get(keys)
        if plan is None:
            try:
                plan = elementwise_plan(op, keys)
            except DTypeError as e:  # name the operand shapes and the user's line too
                raise op_error(op, orig, attrs, e) from None
        cast = plan[0]
        if any(isinstance(a, np.ndarray) and a.dtype != c for a, c in zip(args, cast)):
            with np.errstate(over="ignore", invalid="ignore"):  # 1e300 to float32 is inf, as
                args = [a.astype(c) if isinstance(a, np.ndarray) and a.dtype != c else a
                        for a, c in zip(args, cast)]  # torch gives it, without a warning
    try:
        if op.noisy:
            with np.errstate(all="ignore"):
                res = op.impl(*args, **attrs)
        else:
            res = op.impl(*args, **attrs)
    except Exception as e:  # turn numpy's message into one that names the op and shapes
        raise op_error(op, orig, attrs, e) from e
    res = res if type(res) is np.ndarray else np.asarray(res)
    if op.dtype_rule is not None and res.dtype != op._plans[keys][1]:
        # NOTE: numpy widens all-Python-scalar operands: where(c, 1.0, 0.0) would be float64
        res = res.astype(op._plans[keys][1])
    return res


def op_error(op: OpDef, inputs, attrs, exc: Exception) -> Exception:
    """The clearest error for a failed op: the shape rule's own message when it objects,
    otherwise numpy's, in both cases naming the op, the operand shapes and the user's line."""
    avals = [(x.shape, x.dtype) if isinstance(x, np.ndarray) else x for x in inputs]
    shapes = operand_text(avals)
    if isinstance(exc, (ShapeError, DTypeError)):  # a dtype rule's (see compute)
        rule_error = exc
    else:
        try:
            op.infer(avals, **attrs)
            rule_error = None
        except (ShapeError, DTypeError) as e:
            rule_error = e
        except Exception:
            rule_error = None
    if rule_error is not None:
        msg = str(rule_error)
        if msg.startswith(op.name + ":"):
            msg = called_as(op.name) + msg[len(op.name):]
        if not _SHAPE_TEXT.search(msg.partition("\n")[0]):  # the rule named no shapes
            msg = _before_location(msg, f" (operands {shapes})")
        rule_error.args = (with_location(msg),)
        return rule_error
    cls = type(exc) if isinstance(exc, (IndexError, TypeError, ValueError)) else RuntimeError
    msg = with_location(f"{called_as(op.name)}: {exc} (operands {shapes})")
    try:
        return cls(msg)
    except Exception:
        return RuntimeError(msg)


_SHAPE_TEXT = re.compile(r"\(\d+(, \d+)*,?\)")  # (3,), (2, 3)


def operand_text(avals) -> str:
    """``(2, 3):float32, (4,):int64, 1.0``: operand shapes and dtypes for messages."""
    return ", ".join(
        f"{tuple(a[0])}:{a[1]}" if isinstance(a, tuple) else repr(a) for a in avals)


def _before_location(msg: str, extra: str) -> str:
    """``extra`` inserted at the end of the message's first paragraph (before its location)."""
    head, sep, tail = msg.partition("\n")
    return head + extra + sep + tail


# ----------------------------------------------------------------------------------------------
# shape helpers shared by infer rules


def broadcast_shapes(op: str, *shapes) -> tuple:
    """numpy broadcasting, with an error that names the op and the clashing dimension."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(-ndim, 0):
        size = 1
        for s in shapes:
            if len(s) >= -i:
                n = s[i]
                if n != 1:
                    if size != 1 and size != n:
                        shown = " and ".join(str(tuple(s)) for s in shapes)
                        raise ShapeError(
                            f"{op}: shapes {shown} cannot be broadcast together "
                            f"(dimension {ndim + i}: {size} vs {n})")
                    size = n
        out.append(size)
    return tuple(out)


def norm_dim(op: str, dim: int, ndim) -> int:
    """``dim`` as a non-negative axis of a tensor of ``ndim`` dims, or of shape ``ndim`` (a
    tuple: the error then names it, ``sum: dimension 5 out of range for a tensor of shape
    (2, 3) ...``)."""
    shape = None
    if not isinstance(ndim, (int, np.integer)):
        shape, ndim = tuple(ndim), len(ndim)
    lim = max(ndim, 1)
    if not -lim <= dim < lim:
        what = f"a {ndim}-d tensor" if shape is None else f"a tensor of shape {shape}"
        raise IndexError(with_location(
            f"{called_as(op)}: dimension {dim} out of range for {what} "
            f"(expected to be in [{-lim}, {lim - 1}])"))
    return dim % lim


def norm_dims(op: str, dim, ndim) -> tuple:
    """Normalise ``dim`` (None, int or sequence) to a sorted tuple of non-negative axes of a
    tensor of ``ndim`` dims or of shape ``ndim`` (see ``norm_dim``)."""
    rank = ndim if isinstance(ndim, (int, np.integer)) else len(ndim)
    if dim is None:
        return tuple(range(rank))
    if isinstance(dim, (int, np.integer)):
        dim = (dim,)
    normed = [norm_dim(op, int(d), ndim) for d in dim]
    dims = tuple(sorted(set(normed)))
    if len(dims) != len(normed):  # torch refuses, rather than reducing a dim once
        dup = next(d for d in normed if normed.count(d) > 1)
        raise ShapeError(with_location(
            f"{called_as(op)}: dim {dup} appears multiple times in the list of dims {dim}"))
    if rank == 0:
        return ()
    return dims


def _shape_of(a):
    return a[0] if isinstance(a, tuple) else ()


def _dtype_of(a):
    return a[1] if isinstance(a, tuple) else D.scalar_dtype(a)


# ----------------------------------------------------------------------------------------------
# elementwise ops

def _rule_promote(keys):
    t = D.result_type(*keys)
    return (t,) * len(keys), t


def _rule_float(keys):
    t = D.result_type(*keys)
    if not D.is_floating(t):
        t = D.get_default_dtype()
    return (t,) * len(keys), t


def _rule_compare(keys):
    t = D.result_type(*keys)
    return (t,) * len(keys), D.bool_


def _rule_logical(keys):
    return (D.bool_,) * len(keys), D.bool_


def _rule_test(keys):
    return tuple(k[0] for k in keys), D.bool_


def _rule_where(keys):
    if keys[0][0] != D.bool_:
        raise DTypeError(f"where: condition must be a bool tensor, got {keys[0][0]}")
    t = D.result_type(*keys[1:])
    return (D.bool_, t, t), t


def _rule_no_bool(keys):
    t = D.result_type(*keys)
    if t == D.bool_:  # numpy would answer in int8, which tracejit does not have
        raise DTypeError("not implemented for bool operands (as in torch); cast with .long() "
                         "or .float() first")
    return (t,) * len(keys), t


_DTYPE_RULES = {
    "promote": _rule_promote, "float": _rule_float, "compare": _rule_compare,
    "logical": _rule_logical, "test": _rule_test, "where": _rule_where,
    "no_bool": _rule_no_bool,
}


def _run_rule(name, rule, keys):
    """The dtype rule's plan; its errors name the op."""
    try:
        return _DTYPE_RULES[rule](keys)
    except DTypeError as e:
        if str(e).startswith(name + ":"):
            raise
        raise DTypeError(f"{name}: {e}") from None


def _ew_infer(name, rule):
    def infer(avals, **attrs):
        shape = broadcast_shapes(name, *(_shape_of(a) for a in avals))
        keys = tuple((_dtype_of(a), 0 if not isinstance(a, tuple) else (2 if a[0] else 1))
                     for a in avals)
        return shape, _run_rule(name, rule, keys)[1]
    return infer


def elementwise(name, impl, expr, vjp=None, rule="promote", noisy=False,
                int_zero_division=False):
    # fresh: numpy's ufuncs (and ``compute``'s asarray of a scalar) always return a new array,
    # as a fused kernel writes a new buffer
    return register(OpDef(name, ELEMENTWISE, impl, _ew_infer(name, rule), vjp, expr,
                          dtype_rule=rule, noisy=noisy, int_zero_division=int_zero_division,
                          fresh=True))


def _apply(op: OpDef, *inputs, **attrs):
    """``dispatch.apply``, for the vjp rules that build gradients from other rows (they run on
    Tensors, a layer above this table: hence the import at call time)."""
    from .dispatch import apply
    return apply(op, *inputs, **attrs)


def _is_scalar(x) -> bool:
    """A Python (or numpy) number: what elementwise ops take beside Tensors. (The op table does
    not know the Tensor class: tensor.py builds on it.)"""
    return isinstance(x, (bool, int, float, np.number, np.bool_))


def _req(x) -> bool:
    """Does input ``x`` need a gradient? (lets vjp rules skip work for constants)."""
    return not _is_scalar(x) and x.requires_grad


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _rounding(fn):
    return lambda x: fn(x) if x.dtype.kind == "f" else x.copy()


_erf_ufunc = None


def _erf(x):
    # numpy has no erf; a numba ufunc over libm's erf is exact and fast (compiled once, cached)
    global _erf_ufunc
    if _erf_ufunc is None:
        import math
        import sys

        # NOTE: built on first use, maybe while a function is being traced: the tracer's watch
        # for file reads (sys.setprofile) must not take numba's import or cache lookup for the
        # user's
        profiler = sys.getprofile()
        sys.setprofile(None)
        try:
            import numba

            @numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
            def erf(v):
                return math.erf(v)
        finally:
            sys.setprofile(profiler)
        _erf_ufunc = erf
    return _erf_ufunc(x)


NEG = elementwise("neg", np.negative, "(-{0})", lambda g, out, x: (-g,))
ABS = elementwise("abs", np.abs, "abs({0})", lambda g, out, x: (g * x.sign(),))
EXP = elementwise("exp", np.exp, "exp({0})", lambda g, out, x: (g * out,), "float", True)
LOG = elementwise("log", np.log, "log({0})", lambda g, out, x: (g / x,), "float", True)
LOG1P = elementwise("log1p", np.log1p, "log1p({0})", lambda g, out, x: (g / (x + 1),),
                    "float", True)
EXPM1 = elementwise("expm1", np.expm1, "expm1({0})", lambda g, out, x: (g * (out + 1),),
                    "float", True)
SQRT = elementwise("sqrt", np.sqrt, "sqrt({0})", lambda g, out, x: (g * 0.5 / out,),
                   "float", True)
RSQRT = elementwise("rsqrt", lambda x: 1 / np.sqrt(x), "rsqrt({0})",
                    lambda g, out, x: (g * -0.5 * out * out * out,), "float", True)
SIN = elementwise("sin", np.sin, "sin({0})", lambda g, out, x: (g * x.cos(),), "float",
                  True)  # sin(inf) is nan, silently (numpy warns)
COS = elementwise("cos", np.cos, "cos({0})", lambda g, out, x: (-g * x.sin(),), "float",
                  True)
TAN = elementwise("tan", np.tan, "tan({0})", lambda g, out, x: (g * (out * out + 1),),
                  "float", True)
SINH = elementwise("sinh", np.sinh, "sinh({0})", lambda g, out, x: (g * x.cosh(),), "float",
                   True)  # sinh(89.0) is inf in float32, silently (numpy warns)
COSH = elementwise("cosh", np.cosh, "cosh({0})", lambda g, out, x: (g * x.sinh(),), "float",
                   True)
# inverse trigonometric and hyperbolic functions: nan outside their domain, silently as torch
ASIN = elementwise("asin", np.arcsin, "asin({0})",
                   lambda g, out, x: (g * (1 - x * x).rsqrt(),), "float", True)
ACOS = elementwise("acos", np.arccos, "acos({0})",
                   lambda g, out, x: (-g * (1 - x * x).rsqrt(),), "float", True)
ATAN = elementwise("atan", np.arctan, "atan({0})", lambda g, out, x: (g / (x * x + 1),),
                   "float", True)
ASINH = elementwise("asinh", np.arcsinh, "asinh({0})",
                    lambda g, out, x: (g * (x * x + 1).rsqrt(),), "float", True)
ACOSH = elementwise("acosh", np.arccosh, "acosh({0})",
                    lambda g, out, x: (g * (x * x - 1).rsqrt(),), "float", True)
ATANH = elementwise("atanh", np.arctanh, "atanh({0})", lambda g, out, x: (g / (1 - x * x),),
                    "float", True)
TANH = elementwise("tanh", np.tanh, "tanh({0})", lambda g, out, x: (g * (1 - out * out),),
                   "float")
SIGMOID = elementwise("sigmoid", _sigmoid, "sigmoid({0})",
                      lambda g, out, x: (g * out * (1 - out),), "float", True)
ERF = elementwise("erf", _erf, "erf({0})",
                  lambda g, out, x: (g * (2 / np.sqrt(np.pi)) * (-x * x).exp(),), "float")
RELU = elementwise("relu", lambda x: np.maximum(x, x.dtype.type(0)), "relu({0})",
                   lambda g, out, x: (g * (out > 0),))
def _sign(x):
    # torch's sign is (x > 0) - (x < 0): sign(nan) and sign(-0.0) are 0 (numpy: nan, -0.0);
    # numpy has no sign for bool, torch's is the identity there
    if x.dtype == np.bool_:
        return x.copy()
    if x.dtype.kind == "f":
        return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)
    return np.sign(x)


SIGN = elementwise("sign", _sign, "sign({0})", lambda g, out, x: (g * 0,))
FLOOR = elementwise("floor", _rounding(np.floor), "floor({0})", lambda g, out, x: (g * 0,))
CEIL = elementwise("ceil", _rounding(np.ceil), "ceil({0})", lambda g, out, x: (g * 0,))
ROUND = elementwise("round", _rounding(np.round), "round({0})", lambda g, out, x: (g * 0,))
LOGICAL_NOT = elementwise("logical_not", np.logical_not, "(not {0})", rule="logical")
ISNAN = elementwise("isnan", np.isnan, "isnan({0})", rule="test")
ISFINITE = elementwise("isfinite", np.isfinite, "isfinite({0})", rule="test")
COPY = elementwise("copy", lambda x: np.array(x, order="C"), "{0}", lambda g, out, x: (g,))

# add/sub/mul are noisy too: inf - inf and 0 * inf are nan, silently, as in torch
ADD = elementwise("add", np.add, "({0} + {1})", lambda g, out, x, y: (g, g), noisy=True)
SUB = elementwise("sub", np.subtract, "({0} - {1})", lambda g, out, x, y: (g, -g), noisy=True)
MUL = elementwise("mul", np.multiply, "({0} * {1})",
                  lambda g, out, x, y: (g * y if _req(x) else None, g * x if _req(y) else None),
                  noisy=True)
DIV = elementwise("div", np.true_divide, "({0} / {1})",
                  lambda g, out, x, y: (g / y if _req(x) else None,
                                        -g * out / y if _req(y) else None), "float", True)
def _int_div_checked(fn):
    """numpy answers 0 for integer division by zero; torch raises ZeroDivisionError."""
    def impl(x, y):
        r = fn(x, y)
        if r.dtype.kind in "iu" and not np.all(y):
            raise ZeroDivisionError("ZeroDivisionError: integer division by zero")
        return r
    return impl


FLOORDIV = elementwise("floordiv", _int_div_checked(np.floor_divide), "floordiv({0}, {1})",
                       rule="no_bool", noisy=True, int_zero_division=True)
REMAINDER = elementwise("remainder", _int_div_checked(np.remainder), "remainder({0}, {1})",
                        lambda g, out, x, y: (g, -g * (x / y).floor() if _req(y) else None),
                        "no_bool", noisy=True, int_zero_division=True)



def _atan2_vjp(g, out, y, x):
    r = y * y + x * x
    return (g * x / r if _req(y) else None, -g * y / r if _req(x) else None)


# atan2(y, x): the angle of (x, y), in (-pi, pi]; fmod: C's remainder (the dividend's sign)
ATAN2 = elementwise("atan2", np.arctan2, "atan2({0}, {1})", _atan2_vjp, "float", True)
FMOD = elementwise("fmod", _int_div_checked(np.fmod), "fmod({0}, {1})",
                   lambda g, out, x, y: (g, -g * (x / y).trunc() if _req(y) else None),
                   "no_bool", noisy=True, int_zero_division=True)

def _pow_vjp(g, out, x, y):
    gx = None
    if _req(x):  # torch masks exponent == 0 to 0 (else 0 * 0 ** -1 is nan at x == 0)
        if not _is_scalar(y):
            from .tensor import where
            with np.errstate(divide="ignore", invalid="ignore"):
                gx = where(y == 0, 0.0, g * y * x ** (y - 1))
        else:
            gx = g * 0 if y == 0 else g * y * x ** (y - 1)
    gy = None
    if _req(y):
        from .tensor import where
        if not _is_scalar(x):
            with np.errstate(invalid="ignore"):  # 0 * log(0) is masked just below
                gy = where((x == 0) & (y >= 0), 0.0, g * out * x.log())
        else:  # a Python scalar base, as in ``2.0 ** y``
            with np.errstate(all="ignore"):
                lx = float(np.log(np.float64(x)))
            gy = where(y >= 0, 0.0, g * out * lx) if x == 0 else g * out * lx
    return gx, gy


def _power(x, y):
    """np.power, with the spellings of the compiled graph (passes/simplify.py ``_power``, which
    are torch's) for the exponents users write: ``x ** 3`` is ``x * x * x`` here too, 20x
    faster than np.power on float32 and bit-identical to the compiled step."""
    if type(y) not in (int, float) or not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
        return np.power(x, y)
    if y == 2:
        return x * x
    if y in (3, 4):
        sq = x * x
        return sq * x if y == 3 else sq * sq
    if x.dtype.kind != "f":
        return np.power(x, y)
    if y == 0.5:
        return np.sqrt(x)
    if y == -0.5:  # pow's specials at +-0 and -inf (the compiled graph selects them too)
        r = 1 / np.sqrt(x)
        return np.where(x == float("-inf"), x.dtype.type(0), np.where(x == 0, x.dtype.type(
            np.inf), r))
    if y == -1:
        return 1 / x
    if y == -2:
        return 1 / (x * x)
    return np.power(x, y)


POW = elementwise("pow", _power, "power({0}, {1})", _pow_vjp, "no_bool", noisy=True)


def _max_weight(x, y):
    from .tensor import where
    return where(x > y, 1.0, where(x == y, 0.5, 0.0))


MAXIMUM = elementwise("maximum", np.maximum, "maximum({0}, {1})",
                      lambda g, out, x, y: (g * _max_weight(x, y), g * _max_weight(y, x)))
MINIMUM = elementwise("minimum", np.minimum, "minimum({0}, {1})",
                      lambda g, out, x, y: (g * _max_weight(y, x), g * _max_weight(x, y)))
EQ = elementwise("eq", np.equal, "({0} == {1})", rule="compare")
NE = elementwise("ne", np.not_equal, "({0} != {1})", rule="compare")
LT = elementwise("lt", np.less, "({0} < {1})", rule="compare")
LE = elementwise("le", np.less_equal, "({0} <= {1})", rule="compare")
GT = elementwise("gt", np.greater, "({0} > {1})", rule="compare")
GE = elementwise("ge", np.greater_equal, "({0} >= {1})", rule="compare")
LOGICAL_AND = elementwise("logical_and", np.logical_and, "({0} and {1})", rule="logical")
LOGICAL_OR = elementwise("logical_or", np.logical_or, "({0} or {1})", rule="logical")
LOGICAL_XOR = elementwise("logical_xor", np.logical_xor, "({0} != {1})", rule="logical")


def _where_vjp(g, out, c, x, y):
    from .tensor import where
    return (None, where(c, g, 0.0) if _req(x) else None,
            where(c, 0.0, g) if _req(y) else None)


WHERE = elementwise("where", np.where, "({1} if {0} else {2})", _where_vjp, rule="where")


# clamp keeps its bounds as attributes; tensor bounds compose maximum/minimum instead.
def _clamp_dtype(dtype, lo, hi):
    keys = [(dtype, 2)] + [(D.scalar_dtype(b), 0) for b in (lo, hi) if b is not None]
    return D.result_type(*keys)


def _clamp_impl(x, min=None, max=None):
    t = _clamp_dtype(x.dtype, min, max)
    x = x.astype(t, copy=False)
    if min is not None:
        x = np.maximum(x, t.type(min))
    if max is not None:
        x = np.minimum(x, t.type(max))
    return x if min is not None or max is not None else x.copy()


def _clamp_infer(avals, min=None, max=None):
    (shape, dtype), = avals
    return shape, _clamp_dtype(dtype, min, max)


def _clamp_vjp(g, out, x, min=None, max=None):
    keep = True
    if min is not None:
        keep = x >= min
    if max is not None:
        keep = (x <= max) if keep is True else keep & (x <= max)
    return (g * keep,)


CLAMP = register(OpDef("clamp", ELEMENTWISE, _clamp_impl, _clamp_infer, _clamp_vjp,
                       expr="clamp({0}, {min}, {max})", fresh=True))


def _cast_infer(avals, dtype):
    return avals[0][0], dtype


CAST = register(OpDef(
    "cast", ELEMENTWISE, lambda x, dtype: x.astype(dtype), _cast_infer,
    lambda g, out, x, dtype: (g.to(x.dtype) if x.dtype.kind == "f" else None,),
    # noisy: 1e300 to float32 is inf, silently as in torch
    expr="cast({0}, {dtype})", noisy=True, fresh=True))


# ----------------------------------------------------------------------------------------------
# reductions: attrs ``dims`` (normalised tuple) and ``keepdim``


def _reduce_infer(name, dtype_fn):
    def infer(avals, dims, keepdim):
        (shape, dtype), = avals
        for d in dims:
            norm_dim(name, d, shape)
        if keepdim:
            out = tuple(1 if i in dims else n for i, n in enumerate(shape))
        else:
            out = tuple(n for i, n in enumerate(shape) if i not in dims)
        return out, dtype_fn(dtype)
    return infer


def _acc_dtype(dtype):
    return dtype if D.is_floating(dtype) else D.int64


def unreduce(g, shape, dims, keepdim):
    """Broadcast a reduction's gradient (or output) back to the input's shape."""
    if not keepdim:
        g = g.reshape(tuple(1 if i in dims else n for i, n in enumerate(shape)))
    return g.expand(shape)


def _sum_impl(x, dims, keepdim):
    return np.sum(x, axis=dims, keepdims=keepdim, dtype=_acc_dtype(x.dtype))


def _prod_impl(x, dims, keepdim):
    return np.prod(x, axis=dims, keepdims=keepdim, dtype=_acc_dtype(x.dtype))


def _prod_vjp(g, out, x, dims, keepdim):
    # prod of the other elements, exact when x holds zeros (out / x would give nan)
    from .tensor import where
    zero = x == 0
    nonzero = where(zero, 1.0, x)
    p = nonzero.prod(dims, keepdim=True)
    nzeros = zero.sum(dims, keepdim=True)
    others = where(nzeros == 0, p / nonzero, where((nzeros == 1) & zero, p, 0.0))
    return (unreduce(g, x.shape, dims, keepdim) * others,)


def _extreme_vjp(g, out, x, dims, keepdim):
    # ties share the gradient evenly, as torch's amax/amin do
    hit = x == unreduce(out.detach(), x.shape, dims, keepdim)
    count = hit.sum(dims, keepdim=True)
    return (unreduce(g, x.shape, dims, keepdim) * hit / count,)


def _extreme_impl(fn):
    def impl(x, dims, keepdim):
        if x.size == 0 and any(x.shape[d] == 0 for d in dims):
            raise ValueError("cannot reduce over a zero-size dimension: there is no identity")
        return fn(x, axis=dims, keepdims=keepdim)
    return impl


# noisy: float sums and products overflow to inf (and inf - inf is nan) silently, as in torch
SUM = register(OpDef("sum", REDUCE, _sum_impl, _reduce_infer("sum", _acc_dtype),
                     lambda g, out, x, dims, keepdim: (unreduce(g, x.shape, dims, keepdim),),
                     noisy=True, reduction=True))
PROD = register(OpDef("prod", REDUCE, _prod_impl, _reduce_infer("prod", _acc_dtype), _prod_vjp,
                      noisy=True, reduction=True))
AMAX = register(OpDef("amax", REDUCE, _extreme_impl(np.amax), _reduce_infer("amax", lambda d: d),
                      _extreme_vjp, reduction=True))
AMIN = register(OpDef("amin", REDUCE, _extreme_impl(np.amin), _reduce_infer("amin", lambda d: d),
                      _extreme_vjp, reduction=True))


def _arg_impl(fn):
    def impl(x, dim, keepdim):
        if dim is None:
            r = fn(x.reshape(-1))
            return np.reshape(r, (1,) * x.ndim) if keepdim else np.asarray(r)
        return fn(x, axis=dim, keepdims=keepdim)
    return impl


def _arg_infer(name):
    def infer(avals, dim, keepdim):
        (shape, _), = avals
        if dim is None:
            return ((1,) * len(shape) if keepdim else ()), D.int64
        dim = norm_dim(name, dim, shape)
        if shape and shape[dim] == 0:
            raise ShapeError(f"{name}: cannot reduce over a zero-size dimension {dim} of {shape}")
        out = tuple(1 if i == dim else n for i, n in enumerate(shape)) if keepdim else \
            tuple(n for i, n in enumerate(shape) if i != dim)
        return out, D.int64
    return infer


# NOTE: argmax/argmin (and cumsum) are not ``reduction`` rows: each is a kernel of its own
ARGMAX = register(OpDef("argmax", REDUCE, _arg_impl(np.argmax), _arg_infer("argmax"), fresh=True))
ARGMIN = register(OpDef("argmin", REDUCE, _arg_impl(np.argmin), _arg_infer("argmin"), fresh=True))


def _cumsum_infer(avals, dim):
    (shape, dtype), = avals
    norm_dim("cumsum", dim, shape)
    return shape, _acc_dtype(dtype)


def _flip(t, dim):
    return t[(slice(None),) * dim + (slice(None, None, -1),)]


CUMSUM = register(OpDef(
    "cumsum", REDUCE,
    lambda x, dim: np.cumsum(x, axis=dim, dtype=_acc_dtype(x.dtype)) if x.ndim else x.copy(),
    _cumsum_infer,
    lambda g, out, x, dim: (_flip(_flip(g, dim).cumsum(dim), dim) if x.ndim else g,),
    noisy=True))



def _rev_cumsum(t, dim):
    return _flip(_flip(t, dim).cumsum(dim), dim)


def _cumprod_vjp(g, out, x, dim):
    # exact with zeros (out / x would be nan): before the first zero of a row the gradient is
    # revcumsum(g * out) / x; at the first zero it is revcumsum(g * cumprod(x with that zero
    # set to 1)); after it, 0
    if not x.ndim:
        return (g,)
    from .tensor import where
    zero = x == 0
    seen = zero.cumsum(dim)
    before, first = seen == 0, zero & (seen == 1)
    g_before = _rev_cumsum(g * out, dim) / where(before, x, 1.0)
    g_first = _rev_cumsum(g * where(first, 1.0, x).cumprod(dim), dim)
    return (where(before, g_before, where(first, g_first, 0.0)),)


CUMPROD = register(OpDef(
    "cumprod", REDUCE,
    lambda x, dim: np.cumprod(x, axis=dim, dtype=_acc_dtype(x.dtype)) if x.ndim else x.copy(),
    _cumsum_infer, _cumprod_vjp, noisy=True))


def _logcumsumexp_impl(x, dim):
    if not D.is_floating(x.dtype):
        x = x.astype(D.get_default_dtype())
    return np.logaddexp.accumulate(x, axis=dim) if x.ndim else x.copy()


def _logcumsumexp_infer(avals, dim):
    (shape, dtype), = avals
    norm_dim("logcumsumexp", dim, shape)
    return shape, dtype if D.is_floating(dtype) else D.get_default_dtype()


def _logcumsumexp_vjp(g, out, x, dim):
    # grad_i = sum_{j >= i} g_j exp(x_i - out_j), summed in log space for the positive and the
    # negative parts of g separately (torch's way: no overflow of exp(-out))
    if not x.ndim:
        return (g,)
    from .tensor import where
    log_g = g.abs().log() - out

    def part(mask):
        t = where(mask, log_g, -np.inf)
        return (_flip(_flip(t, dim).logcumsumexp(dim), dim) + x).exp()
    return (part(g > 0) - part(g < 0),)


LOGCUMSUMEXP = register(OpDef("logcumsumexp", REDUCE, _logcumsumexp_impl, _logcumsumexp_infer,
                              _logcumsumexp_vjp, noisy=True))


def _argsort_impl(x, dim, descending):
    """Stable: equal elements keep their order (also descending); NaN sorts as the largest."""
    if not x.ndim:
        return np.zeros((), np.int64)
    if not descending:
        return np.argsort(x, axis=dim, kind="stable").astype(np.int64, copy=False)
    # sorting the reversed row ascending and reading it backwards keeps ties in order
    r = np.argsort(np.flip(x, dim), axis=dim, kind="stable")
    return (x.shape[dim] - 1 - np.flip(r, dim)).astype(np.int64)


def _argsort_infer(avals, dim, descending):
    (shape, _), = avals
    if shape:
        norm_dim("argsort", dim, shape)
    return tuple(shape), D.int64


# sort, topk, kthvalue, median and mode gather their values with these indices (tensor.py), so
# their gradient is gather's
ARGSORT = register(OpDef("argsort", REDUCE, _argsort_impl, _argsort_infer, fresh=True))


# ----------------------------------------------------------------------------------------------
# shape ops (views where numpy can make one)


def _reshape_infer(avals, shape):
    (ishape, dtype), = avals
    if int(np.prod(ishape)) != int(np.prod(shape)):
        raise ShapeError(f"reshape: shape {tuple(shape)} is invalid for input of shape "
                         f"{tuple(ishape)} ({int(np.prod(ishape))} elements)")
    return tuple(shape), dtype


def _permute_infer(avals, perm):
    (shape, dtype), = avals
    if sorted(perm) != list(range(len(shape))):
        raise ShapeError(f"permute: {perm} is not a permutation of the {len(shape)} dims of "
                         f"shape {tuple(shape)}")
    return tuple(shape[p] for p in perm), dtype


def _expand_infer(avals, shape):
    (ishape, dtype), = avals
    lead = len(shape) - len(ishape)
    if lead < 0 or any(n != m and n != 1 for n, m in zip(ishape, shape[lead:])):
        raise ShapeError(f"expand: cannot expand shape {tuple(ishape)} to {tuple(shape)}")
    return tuple(shape), dtype


RESHAPE = register(OpDef("reshape", SHAPE, lambda x, shape: np.reshape(x, shape),
                         _reshape_infer, lambda g, out, x, shape: (g.reshape(x.shape),),
                         view=True, free_view=True))
PERMUTE = register(OpDef("permute", SHAPE, lambda x, perm: np.transpose(x, perm), _permute_infer,
                         lambda g, out, x, perm: (g.permute(tuple(np.argsort(perm))),),
                         view=True, free_view=True))
EXPAND = register(OpDef("expand", SHAPE, lambda x, shape: np.broadcast_to(x, shape),
                        _expand_infer, lambda g, out, x, shape: (g.sum_to_shape(x.shape),),
                        view=True, free_view=True))


def _cat_infer(avals, dim):
    shapes = [a[0] for a in avals]
    ref = shapes[0]
    d = norm_dim("cat", dim, ref)
    for s in shapes[1:]:
        if len(s) != len(ref) or any(a != b for i, (a, b) in enumerate(zip(s, ref)) if i != d):
            raise ShapeError(f"cat: shapes {', '.join(str(tuple(s)) for s in shapes)} must match "
                             f"except in dimension {d}")
    out = list(ref)
    out[d] = sum(s[d] for s in shapes)
    return tuple(out), D.result_type(*((a[1], 2) for a in avals))


def _cat_impl(*xs, dim):
    t = D.result_type(*((x.dtype, 2) for x in xs))
    return np.concatenate(xs, axis=dim, dtype=t)


def _cat_vjp(g, out, *xs, dim):
    grads, start = [], 0
    for x in xs:
        n = x.shape[dim]
        grads.append(g[(slice(None),) * dim + (slice(start, start + n),)] if _req(x) else None)
        start += n
    return tuple(grads)


CAT = register(OpDef("cat", SHAPE, _cat_impl, _cat_infer, _cat_vjp, fresh=True))  # a copy


def _pad_infer(avals, pad, value):
    (shape, dtype), = avals
    if len(pad) % 2 or len(pad) // 2 > len(shape):
        raise ShapeError(f"pad: padding {pad} needs pairs for at most {len(shape)} dims")
    out = list(shape)
    for i in range(len(pad) // 2):
        out[len(shape) - 1 - i] += pad[2 * i] + pad[2 * i + 1]
    return tuple(out), dtype


def _pad_widths(ndim, pad):
    widths = [(0, 0)] * ndim
    for i in range(len(pad) // 2):
        widths[ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return widths


def _pad_impl(x, pad, value):
    _pad_infer([(x.shape, x.dtype)], pad, value)  # else extra pairs silently wrap around
    return np.pad(x, _pad_widths(x.ndim, pad), constant_values=value)


def _pad_vjp(g, out, x, pad, value):
    idx = tuple(slice(a, a + n) for (a, _), n in zip(_pad_widths(x.ndim, pad), x.shape))
    return (g[idx],)


PAD = register(OpDef("pad", SHAPE, _pad_impl, _pad_infer, _pad_vjp))


# ----------------------------------------------------------------------------------------------
# indexing. ``spec = (basic, adv)``: ``basic`` is a numpy basic index (ints, slices as
# (start, stop, step) triples, None, Ellipsis) applied first, as torch does; ``adv`` (or None)
# then indexes the result with integer tensors: an entry k takes index tensor k, None keeps a dim.


def _basic(basic):
    return tuple(slice(*b) if isinstance(b, tuple) else b for b in basic)


def _adv(adv, idx):
    return tuple(slice(None) if k is None else idx[k] for k in adv)


def _getitem_impl(x, *idx, spec):
    basic, adv = spec
    v = x[_basic(basic)]
    return v if adv is None else v[_adv(adv, idx)]


def _basic_shape(shape, basic):
    out, i = [], 0
    n_real = sum(1 for b in basic if b is not None and b is not Ellipsis)
    for b in basic:
        if b is None:
            out.append(1)
        elif b is Ellipsis:
            k = len(shape) - n_real
            out.extend(shape[i:i + k])
            i += k
        elif isinstance(b, tuple):
            if i >= len(shape):
                raise IndexError(f"getitem: too many indices for a tensor of shape {tuple(shape)}")
            out.append(len(range(*slice(*b).indices(shape[i]))))
            i += 1
        else:
            if i >= len(shape):
                raise IndexError(f"getitem: too many indices for a tensor of shape {tuple(shape)}")
            if not -shape[i] <= b < shape[i]:
                raise IndexError(f"getitem: index {b} is out of bounds for dimension {i} "
                                 f"with size {shape[i]}")
            i += 1
    return out + list(shape[i:])


def _getitem_infer(avals, spec):
    (shape, dtype), *idx = avals
    basic, adv = spec
    out = _basic_shape(shape, basic)
    if adv is None:
        return tuple(out), dtype
    for a in idx:
        if a[1].kind not in "iu":
            raise DTypeError(f"getitem: tensors used as indices must be integer or bool tensors, "
                             f"got {a[1]}")
    bshape = broadcast_shapes("getitem", *(a[0] for a in idx))
    pos = [i for i, k in enumerate(adv) if k is not None]
    rest = [n for i, n in enumerate(out) if i >= len(adv) or adv[i] is None]
    if pos == list(range(pos[0], pos[-1] + 1)):  # adjacent advanced indices stay in place
        before = [n for i, n in enumerate(out[:pos[0]])]
        after = [n for i, n in enumerate(out) if i > pos[-1]]
        return tuple(before) + bshape + tuple(after), dtype
    return bshape + tuple(rest), dtype


def _getitem_vjp(g, out, x, *idx, spec):
    from .tensor import zeros
    grads = _apply(INDEX_PUT, zeros(x.shape, dtype=g.dtype, device=g.device), g,
                   *idx, spec=spec, accumulate=True)
    return (grads,) + (None,) * len(idx)


def _index_put_impl(x, v, *idx, spec, accumulate):
    basic, adv = spec
    r = x.copy()
    if isinstance(v, np.ndarray) and v.dtype != r.dtype:
        v = v.astype(r.dtype)
    if adv is None:  # basic indices never repeat an element, so += is exact
        if accumulate:
            r[_basic(basic)] += v
        else:
            r[_basic(basic)] = v
        return r
    view = r[_basic(basic)]
    if accumulate:
        np.add.at(view, _adv(adv, idx), v)
    else:
        view[_adv(adv, idx)] = v
    return r


def _index_put_infer(avals, spec, accumulate):
    x, v, *idx = avals
    target, _ = _getitem_infer([x, *idx], spec=spec)
    broadcast_shapes("index_put", _shape_of(v), target)
    if tuple(broadcast_shapes("index_put", _shape_of(v), target)) != tuple(target):
        raise ShapeError(f"index_put: value of shape {_shape_of(v)} cannot be broadcast to the "
                         f"indexed shape {target}")
    return x[0], x[1]


def _index_put_vjp(g, out, x, v, *idx, spec, accumulate):
    gx = g if accumulate else _apply(INDEX_PUT, g, 0.0, *idx, spec=spec, accumulate=False)
    gv = _apply(GETITEM, g, *idx, spec=spec).sum_to_shape(v.shape) if _req(v) else None
    return (gx, gv) + (None,) * len(idx)


GETITEM = register(OpDef("getitem", INDEX, _getitem_impl, _getitem_infer, _getitem_vjp,
                         view=True))
INDEX_PUT = register(OpDef("index_put", INDEX, _index_put_impl, _index_put_infer,
                           _index_put_vjp))


def _check_index(name, x, index, dim):
    """Eager checks of gather/scatter_add's index: the shape rule (numpy would silently
    broadcast a misfit index) and the bounds (numpy would wrap negatives; torch refuses them)."""
    _check_index_aval(name, x.shape, index.shape, index.dtype, dim)
    size = x.shape[dim] if x.ndim else 1
    if index.size and not 0 <= index.min() <= index.max() < size:
        bad = index.min() if index.min() < 0 else index.max()
        raise IndexError(f"index {bad} is out of bounds for dimension {dim} with size {size}")


def _along(index, dim):
    """Full integer index tuple addressing ``index``'s positions, with ``index`` along ``dim``."""
    grids = np.indices(index.shape, sparse=True)
    return tuple(index if d == dim else grids[d] for d in range(index.ndim))


def _gather_impl(x, index, dim):
    _check_index("gather", x, index, dim)
    return x[_along(index, dim)]


def _gather_infer(avals, dim):
    (shape, dtype), (ishape, idtype) = avals
    _check_index_aval("gather", shape, ishape, idtype, dim)
    return tuple(ishape), dtype


def _check_index_aval(name, shape, ishape, idtype, dim):
    if idtype.kind not in "iu":
        raise DTypeError(f"{name}: index must be an integer tensor (int64 or int32), got {idtype}")
    d = norm_dim(name, dim, shape)
    if len(ishape) != len(shape) or any(
            i != d and a > b for i, (a, b) in enumerate(zip(ishape, shape))):
        raise ShapeError(f"{name}: index of shape {tuple(ishape)} does not fit input of shape "
                         f"{tuple(shape)} (same rank, no larger outside dim {d})")


def _scatter_add_impl(x, index, src, dim):
    _scatter_add_infer([(x.shape, x.dtype), (index.shape, index.dtype), (src.shape, src.dtype)],
                       dim)
    _check_index("scatter_add", x, index, dim)
    r = x.copy()
    np.add.at(r, _along(index, dim), src[tuple(slice(0, n) for n in index.shape)])
    return r


def _scatter_add_infer(avals, dim):
    (shape, dtype), (ishape, idtype), (sshape, _) = avals
    _check_index_aval("scatter_add", shape, ishape, idtype, dim)
    if len(sshape) != len(ishape) or any(a > b for a, b in zip(ishape, sshape)):
        raise ShapeError(f"scatter_add: index of shape {tuple(ishape)} is larger than src of "
                         f"shape {tuple(sshape)}")
    return tuple(shape), dtype


def _scatter_add_vjp(g, out, x, index, src, dim):
    gsrc = None
    if _req(src):
        gsrc = g.gather(dim, index)
        if tuple(src.shape) != tuple(index.shape):
            pad = []
            for n, m in zip(reversed(index.shape), reversed(src.shape)):
                pad += [0, m - n]
            gsrc = gsrc.pad(tuple(pad))
    return g, None, gsrc


def _gather_vjp(g, out, x, index, dim):
    dim = norm_dim("gather", dim, len(x.shape)) if x.shape else 0
    picks_one = len(index.shape) > 0 and index.shape[dim] == 1 and all(
        n == m for d, (n, m) in enumerate(zip(index.shape, x.shape)) if d != dim)
    if not picks_one:
        return _scatter_add_zeros(g, x.shape, index, dim), None
    # one pick per row (nll_loss): no two picks add up, so the scatter is a select, which fuses
    # with its neighbours where a scatter_add is a kernel of its own (the forward gather has
    # checked the indices already)
    from .creation import arange
    from .tensor import where
    along = [1] * len(x.shape)
    along[dim] = x.shape[dim]
    iota = arange(x.shape[dim], dtype=index.dtype, device=g.device).reshape(along)
    return where(iota == index, g, 0), None


GATHER = register(OpDef("gather", INDEX, _gather_impl, _gather_infer, _gather_vjp, fresh=True))
SCATTER_ADD = register(OpDef("scatter_add", INDEX, _scatter_add_impl, _scatter_add_infer,
                             _scatter_add_vjp, fresh=True))


def _scatter_add_zeros(g, shape, index, dim):
    from .tensor import zeros
    return _apply(SCATTER_ADD, zeros(shape, dtype=g.dtype, device=g.device), index, g,
                  dim=dim)


# ----------------------------------------------------------------------------------------------
# matmul (operands of rank >= 2; 1-d operands are handled in tensor.matmul by reshapes)


def _matmul_infer(avals):
    (a, ta), (b, tb) = avals
    if len(a) < 2 or len(b) < 2:
        raise ShapeError(f"matmul: operands must have at least 2 dims, got {tuple(a)} @ {tuple(b)}")
    if a[-1] != b[-2]:
        raise ShapeError(f"matmul: inner dimensions do not match: {tuple(a)} @ {tuple(b)} "
                         f"({a[-1]} != {b[-2]})")
    batch = broadcast_shapes("matmul", a[:-2], b[:-2])
    return batch + (a[-2], b[-1]), D.promote_types(ta, tb)


def _matmul_impl(a, b):
    t = D.promote_types(a.dtype, b.dtype)
    return np.matmul(a.astype(t, copy=False), b.astype(t, copy=False))


def _matmul_vjp(g, out, a, b):
    ga = gb = None
    if _req(a):
        ga = _summed(g, b, left=True) if a.ndim == 2 and b.ndim > 2 else \
            (g @ b.mT).sum_to_shape(a.shape)
    if _req(b):
        if b.ndim == 2 and a.ndim > 2:
            gb = _summed(a, g, left=False, transposed=_transposed(b))
        elif b.ndim == 2 and a.ndim == 2 and _transposed(b):
            gb = (g.mT @ a).mT
        else:
            gb = (a.mT @ g).sum_to_shape(b.shape)
    return ga, gb


def _transposed(t) -> bool:
    """Is ``t`` the transpose of a row-major matrix (``x @ w.T``, a Linear's weight)? Its
    gradient is then computed as ``(g.T @ a).T``: the transpose of the weight's gradient is a
    row-major product, so the weight's ``.grad`` is row-major, as torch's is (no strided copy
    for an optimizer or a DDP bucket). Eager and traced code take the same rule, so they stay
    bit-identical to each other."""
    flags = getattr(t._data, "flags", None)
    if isinstance(flags, dict):  # a numba-cuda device array's flags are a dict
        return flags.get("F_CONTIGUOUS", False) and not flags.get("C_CONTIGUOUS", False)
    return flags is not None and flags.f_contiguous and not flags.c_contiguous


def _summed(p, q, left: bool, transposed: bool = False):
    """The gradient of a 2-d operand shared by a batch of products (conv2d's weight, a Linear
    over a sequence), summed over the batch as one 2-d product instead of a batched one and a
    sum: ``sum_n g_n @ b_n.T`` (left: p = g, q = b; matrices move to the front) or
    ``sum_n a_n.T @ g_n`` (p = a, q = g; the batch folds into the rows). The other operand
    is 2-d, so g's batch dims are exactly the batched operand's. ``transposed``: the 2-d
    operand is a transposed matrix (``_transposed``), so the product is spelled transposed."""
    if not left:
        p2, q2 = p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1])
        return (q2.mT @ p2).mT if transposed else p2.mT @ q2
    nd = p.ndim
    front = (nd - 2,) + tuple(range(nd - 2)) + (nd - 1,)
    return p.permute(front).reshape(p.shape[-2], -1) @ \
        q.permute(front).reshape(q.shape[-2], -1).mT


# noisy: inf * 0 inside a product is nan, silently, as in torch
MATMUL = register(OpDef("matmul", LINALG, _matmul_impl, _matmul_infer, _matmul_vjp,
                        noisy=True, fresh=True))


# ----------------------------------------------------------------------------------------------
# sliding windows: unfold (im2col) and fold (col2im), each the other's vjp. conv2d and the
# poolings are compositions of these with matmul and reductions.


def _window_out(name, hw, kernel, dilation, padding, stride):
    out = []
    for n, k, d, p, s in zip(hw, kernel, dilation, padding, stride):
        m = (n + 2 * p - d * (k - 1) - 1) // s + 1
        if m <= 0:
            raise ShapeError(f"{name}: input of spatial size {tuple(hw)} is too small for kernel "
                             f"{tuple(kernel)} with dilation {tuple(dilation)} and padding "
                             f"{tuple(padding)}")
        out.append(m)
    return tuple(out)


def _unfold_infer(avals, kernel, dilation, padding, stride, pad_value=0.0):
    (shape, dtype), = avals
    if len(shape) != 4:
        raise ShapeError(f"unfold: expected a 4-d (N, C, H, W) input, got shape {tuple(shape)}")
    oh, ow = _window_out("unfold", shape[2:], kernel, dilation, padding, stride)
    return (shape[0], shape[1] * kernel[0] * kernel[1], oh * ow), dtype


def _unfold_impl(x, kernel, dilation, padding, stride, pad_value=0.0):
    n, c, h, w = x.shape
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel, dilation, padding, stride
    oh, ow = _window_out("unfold", (h, w), kernel, dilation, padding, stride)
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                                 j * dw: j * dw + sw * (ow - 1) + 1: sw]
    return cols.reshape(n, c * kh * kw, oh * ow)


def _fold_infer(avals, output_size, kernel, dilation, padding, stride):
    (shape, dtype), = avals
    kk = kernel[0] * kernel[1]
    oh, ow = _window_out("fold", output_size, kernel, dilation, padding, stride)
    if len(shape) != 3 or shape[1] % kk or shape[2] != oh * ow:
        raise ShapeError(f"fold: input of shape {tuple(shape)} does not match kernel "
                         f"{tuple(kernel)} and output size {tuple(output_size)}")
    return (shape[0], shape[1] // kk) + tuple(output_size), dtype


def _fold_impl(cols, output_size, kernel, dilation, padding, stride):
    n, ckk, _ = cols.shape
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel, dilation, padding, stride
    h, w = output_size
    oh, ow = _window_out("fold", output_size, kernel, dilation, padding, stride)
    c = ckk // (kh * kw)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    out = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                j * dw: j * dw + sw * (ow - 1) + 1: sw] += cols[:, :, i, j]
    return out[:, :, ph: ph + h, pw: pw + w]


def _unfold_vjp(g, out, x, kernel, dilation, padding, stride, pad_value=0.0):
    return (_apply(FOLD, g, output_size=tuple(x.shape[2:]), kernel=kernel, dilation=dilation,
                  padding=padding, stride=stride),)


def _fold_vjp(g, out, cols, output_size, kernel, dilation, padding, stride):
    return (_apply(UNFOLD, g, kernel=kernel, dilation=dilation, padding=padding, stride=stride),)


UNFOLD = register(OpDef("unfold", WINDOW, _unfold_impl, _unfold_infer, _unfold_vjp, fresh=True))
FOLD = register(OpDef("fold", WINDOW, _fold_impl, _fold_infer, _fold_vjp, fresh=True))


# max pooling: one kernel each way instead of unfold + argmax + gather (and scatter_add + fold
# for the gradient), which cost the small CNN five numba compiles. The gradient recomputes each
# window's argmax from x (no index array to keep); ties and NaN as torch: the first maximal
# element (in (i, j) tap order, padding taps holding the dtype's lowest value), or the first NaN.


def pool_low(dtype):
    """The value of max_pool's padding taps: -inf, or an integer type's minimum."""
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _pool_windows(x, kernel, dilation, padding, stride):
    """x's windows as (N, C, kh*kw, OH, OW), padding taps holding ``pool_low``."""
    n, c, h, w = x.shape
    oh, ow = _window_out("max_pool2d", (h, w), kernel, dilation, padding, stride)
    cols = _unfold_impl(x.reshape(n * c, 1, h, w), kernel, dilation, padding, stride,
                        pad_value=pool_low(x.dtype))
    return cols.reshape(n, c, kernel[0] * kernel[1], oh, ow)


def _max_pool2d_infer(avals, kernel, dilation, padding, stride):
    (shape, dtype), = avals
    if len(shape) != 4:
        raise ShapeError(f"max_pool2d: expected a 4-d (N, C, H, W) input, got shape "
                         f"{tuple(shape)}")
    if np.dtype(dtype) == np.bool_:
        raise DTypeError("max_pool2d: bool input is not supported; cast it to a number type")
    oh, ow = _window_out("max_pool2d", shape[2:], kernel, dilation, padding, stride)
    return (shape[0], shape[1], oh, ow), dtype


def _max_pool2d_impl(x, kernel, dilation, padding, stride):
    return _pool_windows(x, kernel, dilation, padding, stride).max(axis=2)


def _max_pool2d_vjp(g, out, x, kernel, dilation, padding, stride):
    return (_apply(MAX_POOL2D_GRAD, g, x, kernel=kernel, dilation=dilation, padding=padding,
                   stride=stride),)


def _max_pool2d_grad_infer(avals, kernel, dilation, padding, stride):
    (gshape, gdtype), (shape, _) = avals
    want, _ = _max_pool2d_infer(avals[1:], kernel, dilation, padding, stride)
    if tuple(gshape) != tuple(want):
        raise ShapeError(f"max_pool2d_grad: gradient of shape {tuple(gshape)} does not match "
                         f"the pooled shape {tuple(want)} of input {tuple(shape)}")
    return tuple(shape), gdtype


def _max_pool2d_grad_impl(g, x, kernel, dilation, padding, stride):
    """Each window's gradient lands on its argmax (numpy's: the first maximum or NaN)."""
    win = _pool_windows(x, kernel, dilation, padding, stride)
    n, c, kk, oh, ow = win.shape
    at = win.reshape(n * c, kk, oh * ow).argmax(axis=1)[:, None]
    cols = np.zeros((n * c, kk, oh * ow), dtype=g.dtype)
    np.put_along_axis(cols, at, g.reshape(n * c, 1, oh * ow), axis=1)
    return _fold_impl(cols, x.shape[2:], kernel, dilation, padding, stride).reshape(x.shape)


def _max_pool2d_grad_vjp(gg, out, g, x, kernel, dilation, padding, stride):
    """Only g's (a double backward): the gradient was g scattered to each window's argmax, so
    its transpose reads gg there (composed from unfold, argmax and gather)."""
    if not _req(g):
        return None, None
    n, c, h, w = x.shape
    win = {"kernel": kernel, "dilation": dilation, "padding": padding, "stride": stride}

    def windows(t, fill):
        return _apply(UNFOLD, _apply(RESHAPE, t, shape=(n * c, 1, h, w)), pad_value=fill, **win)
    at = _apply(ARGMAX, windows(x, pool_low(x.dtype)), dim=1, keepdim=True)
    picked = _apply(GATHER, windows(gg, 0.0), at, dim=1)
    return _apply(RESHAPE, picked, shape=tuple(g.shape)), None


MAX_POOL2D = register(OpDef("max_pool2d", WINDOW, _max_pool2d_impl, _max_pool2d_infer,
                            _max_pool2d_vjp, fresh=True))
MAX_POOL2D_GRAD = register(OpDef("max_pool2d_grad", WINDOW, _max_pool2d_grad_impl,
                                 _max_pool2d_grad_infer, _max_pool2d_grad_vjp, fresh=True))


# ----------------------------------------------------------------------------------------------
# graph-only and source ops: constants, stop-gradient, random draws


CONST = register(OpDef("const", "const", lambda value: value.array,
                       lambda avals, value: (value.array.shape, value.array.dtype), fresh=True))
# ``detach`` inside a traced function: the same values, no gradient (a view, like eager detach)
DETACH = register(OpDef("detach", SHAPE, lambda x: x.view(), lambda avals: avals[0], view=True,
                        free_view=True))

RANDOM = "random"  # impure: draws from tracejit's generator, in program order


def _draw(kind):
    def impl(shape, dtype, **params):
        from .creation import _rng
        rng = _rng()
        if kind == "uniform":
            return rng.random(shape, dtype=dtype)
        if kind == "normal":
            return rng.standard_normal(shape, dtype=dtype)
        return rng.integers(params["low"], params["high"], shape).astype(dtype)
    return impl


def _random_infer(avals, shape, dtype, **params):
    return tuple(shape), dtype


UNIFORM = register(OpDef("uniform", RANDOM, _draw("uniform"), _random_infer, impure=True))
NORMAL = register(OpDef("normal", RANDOM, _draw("normal"), _random_infer, impure=True))
RANDINT = register(OpDef("randint", RANDOM, _draw("randint"), _random_infer, impure=True))


def _fused_impl(*args, body, **loop):
    """The group's first result, its body computed row by row. (The reference interpreter walks
    bodies itself, so an error names the inner node that failed.)"""
    env = {v.id: a for v, a in zip(body.inputs, args)}
    for node in body.nodes:
        vals = [env[x.id] if isinstance(x, Var) else x for x in node.inputs]
        env[node.out.id] = compute(OPS[node.op], vals, node.attr_dict)
    out = body.outputs[0]
    return env[out.id] if isinstance(out, Var) else out


def _fused_infer(avals, body, **loop):
    out = body.outputs[0]
    return out.shape, out.dtype


# A kernel made by the fuse pass: ``body`` is the subgraph it computes (interpretable, so fused
# graphs run on the reference backend too).
FUSED = register(OpDef("fused", "fused", _fused_impl, _fused_infer, fresh=True))


# ----------------------------------------------------------------------------------------------
# the functions expr templates call: what each code generator provides (codegen/cpu.py CALLS)


CALL = re.compile(r"\b([A-Za-z_]\w*)\(")  # ``name(`` in a template: a call of ``name``


def template_calls() -> dict:
    """Each function name an ``expr`` template calls, with the ops whose template calls it, in
    table order (``{"abs": ["abs"], ..., "maximum": ["maximum"], ...}``)."""
    calls: dict = {}
    for op in OPS.values():
        for name in dict.fromkeys(CALL.findall(op.expr or "")):
            calls.setdefault(name, []).append(op.name)
    return calls


# ----------------------------------------------------------------------------------------------
# facts about a node read by more than one layer (fuse groups rows by it, codegen walks them)


def reduces(node) -> bool:
    """Is ``node`` a reduction a kernel walks rows for? One over no dims (``x.sum()`` of a 0-d
    x, which simplify normally removes) is elementwise: a cast to its result type."""
    return OPS[node.op].reduction and bool(node.attr_dict["dims"])


__all__ = ["OpDef", "OPS", "register", "compute", "broadcast_shapes", "norm_dim", "norm_dims",
           "unreduce", "reduces"]


# ----------------------------------------------------------------------------------------------
# collectives (tracejit.distributed): a traced training step all-reduces its gradients

COLLECTIVE = "collective"  # impure: talks to the other ranks, in program order on every rank

# The process group's collectives on numpy arrays (tracejit/distributed/_group.py), set by
# ``tracejit.distributed.init_process_group`` and cleared by ``destroy_process_group``.
# NOTE: a slot, not an import: the op table never imports mpi4py.
collective_backend = None


def _all_reduce_impl(x, reduce, donated=False):
    if collective_backend is None:
        raise RuntimeError(
            "all_reduce: the default process group is not initialized; call "
            "tracejit.distributed.init_process_group() first")
    return collective_backend.all_reduce_array(x, reduce, in_place=donated)


def _all_reduce_infer(avals, reduce, donated=False):
    (shape, dtype), = avals
    if reduce not in ("sum", "avg", "max", "min", "product"):
        raise ValueError(f"all_reduce: unknown reduction {reduce!r} (sum, avg, max, min, "
                         f"product)")
    return tuple(shape), dtype


def _all_reduce_vjp(g, out, x, reduce):
    # every rank's output is the reduction of all inputs: the gradient of a sum (or mean) is
    # the sum (or mean) of the output gradients of all ranks
    if reduce not in ("sum", "avg"):
        raise NotImplementedError(
            f"all_reduce: no gradient for op={reduce!r} (only sum and avg are differentiable); "
            f"all-reduce a detached tensor")
    from .dispatch import apply
    return (apply(ALL_REDUCE, g, reduce=reduce),)


# an all-reduce of one array across the process group: never merged, folded or removed, never
# fused (a kernel boundary); the compiled entry calls it between kernels. Donated (a bucket's
# concatenated gradients, dead after it), MPI reduces in place: an out-of-place exchange of
# 0.8 MB took 0.24 ms between two local ranks against 0.15 ms in place
ALL_REDUCE = register(OpDef("all_reduce", COLLECTIVE, _all_reduce_impl, _all_reduce_infer,
                            _all_reduce_vjp, impure=True, fresh=True, donates=True))
