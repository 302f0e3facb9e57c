"""The optimised, unfused IR rendered as an ONNX graph (``tracejit.onnx.export`` is the front).

>>> model = render(graph, opset=18, initializers={"self.fc.weight": w})   # doctest: +SKIP

``RULES`` holds one entry per op-table row that exports: a function ``(em, node) -> name`` that
emits ONNX nodes through the ``Emitter`` and returns the name of the value computing ``node.out``.
``REFUSED`` holds the rows that never export, with the reason; every row is in exactly one of
them (tests/onnx/test_table.py). Most rules are one ONNX op plus explicit ``Cast``s where torch's
promotion casts an operand (``ops.elementwise_plan``); where ONNX or onnxruntime computes
something else than tracejit (NaN in Max/ReduceMax/ArgMax, floor division and modulo, integer
division, log1p/expm1 precision), the rule decomposes the op into ones that agree.

A value's dimensions are ints, or ``Dim``s (``k * symbol + c``) for axes exported as dynamic:
rules that spell a shape (reshape, expand, a constant made at the traced size) compute those
dimensions at run time from the graph input that carries the symbol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tracejit import dtypes as D
from tracejit import ops
from tracejit.ir import Graph, Node, Var

MIN_OPSET = 18  # the rules pass Reduce* axes as an input, as opset 18 wants
MAX_OPSET = min(28, onnx.defs.onnx_opset_version())  # the newest onnxruntime 1.32 runs
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


class OnnxExportError(ValueError):
    """An op (or a use of it) that has no ONNX equivalent; the message names it and the line."""


@dataclass(frozen=True)
class Dim:
    """A dynamic dimension: ``k * symbol + c`` (``symbol`` names a dynamic input axis)."""

    symbol: str
    k: int = 1
    c: int = 0

    def __str__(self):
        return self.symbol if (self.k, self.c) == (1, 0) else f"{self.k}*{self.symbol}+{self.c}"


def onnx_dtype(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _refuse(node: Node, why: str):
    where = f" (at {node.loc})" if node.loc else ""
    raise OnnxExportError(f"onnx export: op '{node.op}' {why}{where}")


class Emitter:
    """Builds the node list: names for Vars, constants, casts, shapes of dynamic values."""

    def __init__(self, graph: Graph, opset: int, dims: dict, symbols: dict):
        self.graph = graph
        self.opset = opset
        self.dims = dims  # var id -> tuple of int | Dim (absent: the Var's static shape)
        self.symbols = symbols  # symbol -> (graph input name, axis) that carries it
        self.nodes: list = []
        self.initializers: list = []
        self.names: dict = {v.id: n for v, n in zip(graph.inputs, graph.input_names)}
        self.node = None  # the IR node being rendered (names helpers, goes into errors)
        self._consts: dict = {}
        self._count = 0

    # -- names and nodes
    def fresh(self, hint: str = "t") -> str:
        self._count += 1
        where = f"%{self.node.out.id}" if self.node is not None else "g"
        return f"{where}.{hint}{self._count}"

    def op(self, op_type: str, inputs: list, n_out: int = 1, **attrs):
        """Emit one ONNX node; its output name (or names, for ``n_out > 1``)."""
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        doc = self.node.loc if self.node is not None else ""
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=outs[0],
                                           doc_string=doc, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=None) -> str:
        """An initializer holding ``value`` (shared by every use of the same value)."""
        a = np.asarray(value, dtype=dtype)
        key = (a.dtype.str, a.shape, a.tobytes())
        name = self._consts.get(key)
        if name is None:
            name = f"c{len(self._consts)}"
            self._consts[key] = name
            self.initializers.append(numpy_helper.from_array(a, name))
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64).reshape(-1))

    def value(self, x, dtype=None) -> str:
        """Operand ``x`` (a Var or a Python scalar) as a value of ``dtype`` (cast if needed)."""
        if not isinstance(x, Var):
            with np.errstate(over="ignore"):  # 1e300 as float32 is inf, as numpy gives it
                return self.const(np.asarray(x, dtype=dtype or D.scalar_dtype(x)))
        name = self.names[x.id]
        if dtype is not None and np.dtype(dtype) != x.dtype:
            return self.cast(name, dtype)
        return name

    def cast(self, name: str, dtype) -> str:
        return self.op("Cast", [name], to=onnx_dtype(dtype))

    # -- shapes (static, or computed at run time for dynamic axes)
    def shape_of(self, x: Var) -> tuple:
        return self.dims.get(x.id, x.shape)

    def symbol(self, sym: str) -> str:
        """A 1-element int64 value holding the size of a dynamic symbol (computed once)."""
        key = ("symbol", sym)
        if key not in self._consts:
            inp, axis = self.symbols[sym]
            saved, self.node = self.node, None
            shape = self.op("Shape", [inp], start=axis, end=axis + 1)
            self.node = saved
            self._consts[key] = shape
        return self._consts[key]

    def broadcast(self, name: str, dtype, shape: str) -> str:
        """``name`` broadcast to the run-time shape ``shape`` as ``x + (-0.0)`` (``x or
        False``): the same values, signed zeros too, without Expand (see ``expand``)."""
        fill = -0.0 if _is_float(dtype) else 0
        value = numpy_helper.from_array(np.asarray([fill], dtype=dtype))
        zeros = self.op("ConstantOfShape", [shape], value=value)
        return self.op("Or" if np.dtype(dtype) == np.bool_ else "Add", [name, zeros])

    def expand(self, name: str, dtype, dims) -> str:
        """Expand to ``dims``. NOTE: onnxruntime's optimizer (basic level, 1.32) drops an
        Expand of a size-1 axis to size 0 ((1, 1) -> (1, 0) stays (1, 1)); targets holding a
        0 broadcast by an Add instead."""
        if any(isinstance(d, (int, np.integer)) and d == 0 for d in dims):
            return self.broadcast(name, dtype, self.shape_value(dims))
        return self.op("Expand", [name, self.shape_value(dims)])

    def shape_value(self, dims) -> str:
        """A 1-d int64 value holding the shape ``dims`` (ints and Dims)."""
        if all(isinstance(d, (int, np.integer)) for d in dims):
            return self.ints(dims)
        parts = []
        for d in dims:
            if isinstance(d, Dim):
                v = self.symbol(d.symbol)
                if d.k != 1:
                    v = self.op("Mul", [v, self.ints([d.k])])
                if d.c:
                    v = self.op("Add", [v, self.ints([d.c])])
                parts.append(v)
            else:
                parts.append(self.ints([d]))
        return self.op("Concat", parts, axis=0)


# ----------------------------------------------------------------------------------------------
# elementwise rules


def _plan(node: Node):
    """(dtype each input is cast to, output dtype) under torch's promotion, as ``compute``."""
    keys = tuple((x.dtype, 2 if x.shape else 1) if isinstance(x, Var) else ops._key(x)
                 for x in node.inputs)
    return ops.elementwise_plan(ops.OPS[node.op], keys)


def _operands(em: Emitter, node: Node) -> tuple:
    """The node's operands, each cast to its promoted dtype, and that compute dtype."""
    casts, out = _plan(node)
    return [em.value(x, t) for x, t in zip(node.inputs, casts)], casts, out


def _is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def unary(onnx_op: str, float_only: bool = False):
    """One ONNX op on the promoted operand; ``float_only``: integers and bools pass through
    (floor/ceil/round of an int is the int)."""
    def rule(em, node):
        (a,), (t,), _ = _operands(em, node)
        if float_only and not _is_float(t):
            return em.op("Identity", [a])
        return em.op(onnx_op, [a])
    return rule


def binary(onnx_op: str, bool_op: str | None = None):
    """One ONNX op on promoted operands; ``bool_op`` for bool operands (ONNX arithmetic does not
    take bool: numpy's bool add is logical or, its bool multiply logical and)."""
    def rule(em, node):
        (a, b), (t, _), _ = _operands(em, node)
        if np.dtype(t) == np.bool_:
            if bool_op is None:
                _refuse(node, "on bool operands does not export")
            return em.op(bool_op, [a, b])
        return em.op(onnx_op, [a, b])
    return rule


def compare(onnx_op: str, negate: bool = False):
    def rule(em, node):
        (a, b), (t, _), _ = _operands(em, node)
        if np.dtype(t) == np.bool_ and onnx_op != "Equal":  # ordered compares take numbers
            a, b = em.cast(a, np.int32), em.cast(b, np.int32)
        r = em.op(onnx_op, [a, b])
        return em.op("Not", [r]) if negate else r
    return rule


def logical(onnx_op: str):
    def rule(em, node):
        return em.op(onnx_op, _operands(em, node)[0])
    return rule


def _abs(em, node):
    (a,), (t,), _ = _operands(em, node)
    return em.op("Identity" if np.dtype(t) == np.bool_ else "Abs", [a])


def _neg(em, node):
    (a,), (t,), _ = _operands(em, node)
    if np.dtype(t) == np.bool_:
        _refuse(node, "on bool operands does not export")
    return em.op("Neg", [a])


def _sign(em, node):
    # NOTE: torch's sign is (x > 0) - (x < 0): sign(nan) == 0 (ONNX Sign gives nan)
    (a,), (t,), _ = _operands(em, node)
    if np.dtype(t) == np.bool_:
        return em.op("Identity", [a])
    if not _is_float(t):
        return em.op("Sign", [a])
    zero = em.const(0, t)
    pos = em.cast(em.op("Greater", [a, zero]), t)
    neg = em.cast(em.op("Less", [a, zero]), t)
    return em.op("Sub", [pos, neg])


def _relu(em, node):
    (a,), (t,), _ = _operands(em, node)
    if np.dtype(t) == np.bool_:
        return em.op("Identity", [a])
    return em.op("Relu", [a])


def _f64(onnx_op: str, decompose):
    """An op onnxruntime runs for float32 only: float64 goes through ``decompose(em, x, t)``
    (None: refused; computing it in float32 would lose float64's precision silently)."""
    def rule(em, node):
        (a,), (t,), _ = _operands(em, node)
        if np.dtype(t) != np.float64:
            return em.op(onnx_op, [a])
        if decompose is None:
            _refuse(node, "of float64 does not export (onnxruntime runs it in float32 only)")
        return decompose(em, a, t)
    return rule


def _tan64(em, x, t):
    return em.op("Div", [em.op("Sin", [x]), em.op("Cos", [x])])


def _sinh64(em, x, t):
    # (expm1(x) - expm1(-x)) / 2 keeps a tiny x exact ((e^x - e^-x) / 2 would cancel)
    neg = em.op("Neg", [x])
    diff = em.op("Sub", [_expm1_of(em, x, t), _expm1_of(em, neg, t)])
    return em.op("Mul", [diff, em.const(0.5, t)])


def _cosh64(em, x, t):
    s = em.op("Add", [em.op("Exp", [x]), em.op("Exp", [em.op("Neg", [x])])])
    return em.op("Mul", [s, em.const(0.5, t)])


def _rsqrt(em, node):
    (a,), (t,), _ = _operands(em, node)
    return em.op("Div", [em.const(1, t), em.op("Sqrt", [a])])


def _log1p(em, node):
    # NOTE: log(1 + x) loses every digit of a tiny x; Goldberg's form keeps them:
    # u = 1 + x; log1p(x) = x if u == 1 else log(u) * x / (u - 1) (x itself where u is inf)
    (x,), (t,), _ = _operands(em, node)
    one = em.const(1, t)
    u = em.op("Add", [x, one])
    um1 = em.op("Sub", [u, one])
    r = em.op("Div", [em.op("Mul", [em.op("Log", [u]), x]), um1])
    keep = em.op("Or", [em.op("Equal", [um1, em.const(0, t)]),
                        em.op("IsInf", [u], detect_negative=0)])  # log1p(-inf) is nan
    return _where_signed(em, keep, x, r, t)  # log1p(-0.0) is -0.0


def _expm1(em, node):
    (x,), (t,), _ = _operands(em, node)
    return _expm1_of(em, x, t)


def _expm1_of(em, x: str, t) -> str:
    # NOTE: exp(x) - 1 loses a tiny x; Kahan's form: u = exp(x); x if u == 1, -1 if u - 1 == -1,
    # else (u - 1) * x / log(u); u itself where it is inf (x = inf)
    one = em.const(1, t)
    u = em.op("Exp", [x])
    um1 = em.op("Sub", [u, one])
    r = em.op("Div", [em.op("Mul", [um1, x]), em.op("Log", [u])])
    r = em.op("Where", [em.op("Equal", [um1, em.const(-1, t)]), um1, r])
    r = em.op("Where", [em.op("IsInf", [u]), u, r])
    return _where_signed(em, em.op("Equal", [u, one]), x, r, t)  # expm1(-0.0) is -0.0


def _isnan(em, node):
    (a,), (t,), _ = _operands(em, node)
    if _is_float(t):
        return em.op("IsNaN", [a])
    return _full_like_bool(em, node, False)


def _isfinite(em, node):
    (a,), (t,), _ = _operands(em, node)
    if _is_float(t):
        return em.op("Not", [em.op("Or", [em.op("IsNaN", [a]), em.op("IsInf", [a])])])
    return _full_like_bool(em, node, True)


def _full_like_bool(em, node, value: bool) -> str:
    return em.expand(em.const(value, np.bool_), np.bool_, em.shape_of(node.out))


def _max_nan(em, a: str, b: str, t, fn: str = "Max") -> str:
    """numpy's maximum/minimum (onnxruntime's Max and Min propagate NaN, as numpy does, in
    either operand: tests/onnx check it). Bools: or / and (ONNX Max takes no bool)."""
    if np.dtype(t) == np.bool_:
        return em.op("Or" if fn == "Max" else "And", [a, b])
    return em.op(fn, [a, b])


def extreme(fn: str):
    def rule(em, node):
        (a, b), (t, _), _ = _operands(em, node)
        return _max_nan(em, a, b, t, fn)
    return rule


def _clamp(em, node):
    d = node.attr_dict
    (x,) = node.inputs
    t = ops._clamp_dtype(x.dtype, d.get("min"), d.get("max"))
    r = em.value(x, t)
    if d.get("min") is not None:
        r = _max_nan(em, r, em.const(d["min"], t), t, "Max")
    if d.get("max") is not None:
        r = _max_nan(em, r, em.const(d["max"], t), t, "Min")
    return em.op("Identity", [r]) if r == em.names[x.id] else r


def _signbit(em, x: str, t) -> str:
    """x < 0, or x is -0.0 (1 / -0.0 is -inf)."""
    zero = em.const(0, t)
    return em.op("Or", [em.op("Less", [x, zero]),
                        em.op("Less", [em.op("Div", [em.const(1, t), x]), zero])])


def _sign_factor(em, negative: str, t) -> str:
    return em.op("Where", [negative, em.const(-1, t), em.const(1, t)])


def _copysign_zero(em, sign_of: str, t) -> str:
    """copysign(0, sign_of), made by a Mul (see _where_signed)."""
    return em.op("Mul", [em.const(0, t), _sign_factor(em, _signbit(em, sign_of, t), t)])


def _where_signed(em, c: str, a: str, b: str, t) -> str:
    """Where(c, a, b) keeping the sign of a zero: onnxruntime's Where answers +0.0 where it
    selects -0.0 (measured with 1.32), so the magnitude is selected and the sign put back."""
    r = em.op("Abs", [em.op("Where", [c, a, b])])
    negative = _where_bool(em, c, _signbit(em, a, t), _signbit(em, b, t))
    return em.op("Mul", [r, _sign_factor(em, negative, t)])


def _divmod_float(em, a: str, b: str, t):
    """numpy's npy_divmod (floor division and the divisor-signed remainder), step by step:
    ONNX's floor Mod of floats fails in onnxruntime before opset 28, and floor(a / b) differs
    (1.0 // 0.1 is 9.0, zero remainders take the divisor's sign)."""
    zero = em.const(0, t)
    one = em.const(1, t)
    fmod = em.op("Mod", [a, b], fmod=1)
    div = em.op("Div", [em.op("Sub", [a, fmod]), b])
    nonzero_mod = em.op("Not", [em.op("Equal", [fmod, zero])])
    fix = em.op("And", [nonzero_mod, em.op("Xor", [em.op("Less", [b, zero]),
                                                 em.op("Less", [fmod, zero])])])
    mod = em.op("Where", [fix, em.op("Add", [fmod, b]), fmod])
    mod = _where_signed(em, nonzero_mod, mod, _copysign_zero(em, b, t), t)
    div = em.op("Where", [fix, em.op("Sub", [div, one]), div])
    floor = em.op("Floor", [div])
    up = em.op("Greater", [em.op("Sub", [div, floor]), em.const(0.5, t)])
    floor = em.op("Where", [up, em.op("Add", [floor, one]), floor])
    quot = em.op("Div", [a, b])
    floor = _where_signed(em, em.op("Equal", [div, zero]), _copysign_zero(em, quot, t), floor, t)
    b_zero = em.op("Equal", [b, zero])  # x / 0 and fmod(x, 0): what numpy answers there
    return (_where_signed(em, b_zero, quot, floor, t),
            _where_signed(em, b_zero, fmod, mod, t))


def _floordiv(em, node):
    (a, b), (t, _), _ = _operands(em, node)
    if _is_float(t):
        return _divmod_float(em, a, b, t)[0]
    # integer Div truncates; (a - floor_mod(a, b)) / b is exact and floors. (A zero divisor
    # fails the run, as tracejit raises ZeroDivisionError.)
    return em.op("Div", [em.op("Sub", [a, em.op("Mod", [a, b], fmod=0)]), b])


def _remainder(em, node):
    (a, b), (t, _), _ = _operands(em, node)
    if _is_float(t):
        return _divmod_float(em, a, b, t)[1]
    return em.op("Mod", [a, b], fmod=0)


def _signbit(em, v: str, t) -> str:
    """v < 0, or v is -0.0 (1 / -0.0 is -inf)."""
    zero = em.const(0, t)
    neg_zero = em.op("And", [em.op("Equal", [v, zero]),
                             em.op("Less", [em.op("Div", [em.const(1, t), v]), zero])])
    return em.op("Or", [em.op("Less", [v, zero]), neg_zero])


def _atan2(em, node):
    # Atan(y / x), moved by +-pi where x has its sign bit set (the sign of y choosing), and
    # C's answers where y / x is nan: both zeros (+-0 or +-pi) and both infinite (+-pi/4 or
    # +-3pi/4); NaN stays NaN
    (y, x), (t, _), _ = _operands(em, node)
    if np.dtype(t) == np.float64:
        _refuse(node, "of float64 does not export (onnxruntime runs Atan in float32 only)")
    pi = float(np.pi)
    neg_x, neg_y = _signbit(em, x, t), _signbit(em, y, t)
    turn = em.op("Where", [neg_y, em.const(-pi, t), em.const(pi, t)])
    r = em.op("Atan", [em.op("Div", [y, x])])
    r = em.op("Where", [neg_x, em.op("Add", [r, turn]), r])
    zero = em.const(0, t)
    both_zero = em.op("And", [em.op("Equal", [x, zero]), em.op("Equal", [y, zero])])
    r = em.op("Where", [both_zero, em.op("Where", [neg_x, em.const(pi, t), zero]), r])
    both_inf = em.op("And", [em.op("IsInf", [x]), em.op("IsInf", [y])])
    corner = em.op("Where", [neg_x, em.const(0.75 * pi, t), em.const(0.25 * pi, t)])
    r = em.op("Where", [both_inf, corner, r])
    # NOTE: the result always has y's sign, -0.0 included; onnxruntime's Where answers +0.0
    # where it selects -0.0, so the magnitude is chosen and the sign multiplied in
    sign = em.op("Where", [neg_y, em.const(-1, t), em.const(1, t)])
    return em.op("Mul", [em.op("Abs", [r]), sign])


def _fmod(em, node):
    # ONNX Mod with fmod=1 is C's fmod (the dividend's sign), for floats and integers alike
    return em.op("Mod", _operands(em, node)[0], fmod=1)


def _div(em, node):
    return em.op("Div", _operands(em, node)[0])


def _pow(em, node):
    (a, b), _, _ = _operands(em, node)
    return em.op("Pow", [a, b])


def _where_bool(em, c: str, a: str, b: str) -> str:
    """Where on bools (onnxruntime has no bool Where): (c and a) or (not c and b)."""
    return em.op("Or", [em.op("And", [c, a]), em.op("And", [em.op("Not", [c]), b])])


def _where(em, node):
    (c, a, b), (_, t, _), _ = _operands(em, node)
    if np.dtype(t) == np.bool_:
        return _where_bool(em, c, a, b)
    return em.op("Where", [c, a, b])


def _cast(em, node):
    (x,) = node.inputs
    return em.op("Cast", [em.value(x)], to=onnx_dtype(node.attr_dict["dtype"]))


def _identity(em, node):
    return em.op("Identity", [em.value(node.inputs[0])])


# ----------------------------------------------------------------------------------------------
# reductions


def _axes_input(em, dims) -> str:
    return em.ints(list(dims))


def reduce(onnx_op: str):
    def rule(em, node):
        (x,) = node.inputs
        d = node.attr_dict
        name = em.value(x, node.out.dtype)  # ints and bools accumulate in int64
        if not d["dims"]:  # x.sum() of a 0-d x: the value itself
            return em.op("Identity", [name])
        return em.op(onnx_op, [name, _axes_input(em, d["dims"])], keepdims=int(d["keepdim"]))
    return rule


def extreme_reduce(onnx_op: str):
    def rule(em, node):
        (x,) = node.inputs
        d = node.attr_dict
        if not d["dims"]:
            return em.op("Identity", [em.value(x)])
        return _extreme(em, onnx_op, em.value(x), x.dtype, d["dims"], int(d["keepdim"]))
    return rule


def _extreme(em, onnx_op: str, name: str, dtype, dims, keep: int) -> str:
    """ReduceMax/ReduceMin, with NaN propagated as numpy does (onnxruntime keeps or drops a NaN
    depending on its position)."""
    axes = _axes_input(em, dims)
    if dtype == np.bool_:  # no bool kernel: through int32
        r = em.op(onnx_op, [em.cast(name, np.int32), axes], keepdims=keep)
        return em.cast(r, np.bool_)
    r = em.op(onnx_op, [name, axes], keepdims=keep)
    if not _is_float(dtype):
        return r
    any_nan = em.op("ReduceMax", [em.cast(em.op("IsNaN", [name]), np.int32), axes],
                    keepdims=keep)
    nan = em.op("Greater", [any_nan, em.const(0, np.int32)])
    return em.op("Where", [nan, em.const(np.nan, dtype), r])


def arg_reduce(onnx_op: str):
    def rule(em, node):
        (x,) = node.inputs
        d = node.attr_dict
        name, dim, keep = em.value(x), d["dim"], int(d["keepdim"])
        if dim is None:
            name = em.op("Reshape", [name, em.ints([-1])])
            r = _arg_extreme(em, onnx_op, name, x.dtype, 0, 1)
            return em.op("Reshape", [r, em.ints((1,) * len(x.shape) if keep else ())])
        return _arg_extreme(em, onnx_op, name, x.dtype, ops.norm_dim(node.op, dim, len(x.shape)),
                            keep)
    return rule


def _arg_extreme(em, onnx_op: str, name: str, dtype, axis: int, keep: int) -> str:
    """ArgMax/ArgMin, first occurrence; a NaN is the extreme (numpy), so where a row holds one,
    the answer is the first NaN's position."""
    if dtype == np.bool_ or not _is_float(dtype) and dtype != np.int32:
        name = em.cast(name, np.float64 if dtype.itemsize == 8 else np.float32)
    r = em.op(onnx_op, [name], axis=axis, keepdims=keep)
    if _is_float(dtype):
        isnan = em.cast(em.op("IsNaN", [name]), np.int32)
        first_nan = em.op("ArgMax", [isnan], axis=axis, keepdims=keep)
        any_nan = em.op("ReduceMax", [isnan, em.ints([axis])], keepdims=keep)
        r = em.op("Where", [em.op("Greater", [any_nan, em.const(0, np.int32)]), first_nan, r])
    return r


def _cumsum(em, node):
    (x,) = node.inputs
    name = em.value(x, node.out.dtype)
    if not x.shape:
        return em.op("Identity", [name])
    axis = ops.norm_dim("cumsum", node.attr_dict["dim"], x.shape)
    return em.op("CumSum", [name, em.const(np.int64(axis))])



def _argsort(em, node):
    # TopK over the whole dim: ONNX breaks ties by the lower index, in both directions, as
    # tracejit's stable argsort does
    (x,) = node.inputs
    if not x.shape:
        return em.op("Identity", [em.const(np.int64(0))])
    name = em.value(x, np.int32 if x.dtype == np.bool_ else None)
    axis = ops.norm_dim("argsort", node.attr_dict["dim"], x.shape)
    k = em.op("Shape", [name], start=axis, end=axis + 1)
    _, idx = em.op("TopK", [name, k], n_out=2, axis=axis,
                   largest=int(node.attr_dict["descending"]), sorted=1)
    return idx


# ----------------------------------------------------------------------------------------------
# shape ops


def _reshape(em, node):
    (x,) = node.inputs
    # NOTE: allowzero=1: a 0 in the target is a size-0 dimension, not "copy the input's"
    return em.op("Reshape", [em.value(x), em.shape_value(em.shape_of(node.out))], allowzero=1)


def _permute(em, node):
    return em.op("Transpose", [em.value(node.inputs[0])], perm=list(node.attr_dict["perm"]))


def _expand(em, node):
    x = node.inputs[0]
    return em.expand(em.value(x), x.dtype, em.shape_of(node.out))


def _cat(em, node):
    t = node.out.dtype
    dim = ops.norm_dim("cat", node.attr_dict["dim"], node.out.shape)
    return em.op("Concat", [em.value(x, t) for x in node.inputs], axis=dim)


def _pad(em, node):
    (x,) = node.inputs
    d = node.attr_dict
    widths = ops._pad_widths(len(x.shape), d["pad"])
    pads = [a for a, _ in widths] + [b for _, b in widths]
    with np.errstate(over="ignore", invalid="ignore"):
        fill = em.const(np.asarray(d["value"]).astype(x.dtype))
    return em.op("Pad", [em.value(x), em.ints(pads), fill], mode="constant")


# ----------------------------------------------------------------------------------------------
# indexing


def _basic_index(em, name: str, ndim: int, basic) -> tuple:
    """numpy's basic index (ints, (start, stop, step) slices, None, ...) applied step by step:
    (value name, resulting rank). ONNX Slice clamps bounds as Python slices do, so the bounds
    go in as written (a size-dependent bound would differ between traces: the front refuses)."""
    n_real = sum(1 for b in basic if b is not None and b is not Ellipsis)
    axis = 0
    for b in basic:
        if b is None:
            name = em.op("Unsqueeze", [name, em.ints([axis])])
            ndim += 1
            axis += 1
        elif b is Ellipsis:
            axis += ndim - axis - (n_real - _consumed(basic, b))
        elif isinstance(b, tuple):
            start, stop, step = b
            step = 1 if step is None else step
            if start in (None, 0) and stop is None and step == 1:
                axis += 1  # the whole axis
                continue
            lo = (0 if step > 0 else INT64_MAX) if start is None else start
            hi = (INT64_MAX if step > 0 else INT64_MIN) if stop is None else stop
            name = em.op("Slice", [name, em.ints([lo]), em.ints([hi]), em.ints([axis]),
                                   em.ints([step])])
            axis += 1
        else:  # an int: Gather with a 0-d index drops the axis (and takes negative indices)
            name = em.op("Gather", [name, em.const(np.int64(b))], axis=axis)
            ndim -= 1
    return name, ndim


def _consumed(basic, ellipsis) -> int:
    """Real indices before the Ellipsis."""
    k = 0
    for b in basic:
        if b is ellipsis:
            return k
        if b is not None:
            k += 1
    return k


def _index_tensor(em, idx: Var, data: str, axis: int) -> str:
    """An index tensor as int64, negative entries counted from the end of ``data``'s axis."""
    name = em.value(idx, np.int64)
    n = em.op("Squeeze", [em.op("Shape", [data], start=axis, end=axis + 1)])  # 0-d
    neg = em.op("Less", [name, em.const(0, np.int64)])
    return em.op("Where", [neg, em.op("Add", [name, n]), name])


def _advanced(em, name: str, ndim: int, adv, idx: list) -> str:
    """numpy's integer-array indexing after the basic part: one index tensor is a Gather; more
    are broadcast and stacked for GatherND (their axes first), then the result's index dims go
    back in place when the indexed axes were adjacent (numpy's rule)."""
    pos = [i for i, k in enumerate(adv) if k is not None]
    if len(pos) == 1:
        p = pos[0]
        return em.op("Gather", [name, _index_tensor(em, idx[adv[p]], name, p)], axis=p)
    rest = [i for i in range(ndim) if i not in pos]
    index = [_index_tensor(em, idx[adv[p]], name, p) for p in pos]
    if pos != list(range(len(pos))):
        name = em.op("Transpose", [name], perm=pos + rest)
    bshape = ops.broadcast_shapes("getitem", *(idx[adv[p]].shape for p in pos))
    stacked = [em.op("Unsqueeze", [em.expand(i, np.int64, bshape), em.ints([-1])])
               for i in index]
    r = em.op("GatherND", [name, em.op("Concat", stacked, axis=-1)])
    adjacent = pos == list(range(pos[0], pos[-1] + 1))
    if adjacent and pos[0] > 0:  # the index dims go where the first indexed axis was
        nb, lead = len(bshape), pos[0]
        perm = list(range(nb, nb + lead)) + list(range(nb)) + list(
            range(nb + lead, nb + len(rest)))
        r = em.op("Transpose", [r], perm=perm)
    return r


def _getitem(em, node):
    x, *idx = node.inputs
    basic, adv = node.attr_dict["spec"]
    name, ndim = _basic_index(em, em.value(x), len(x.shape), basic)
    if adv is None:
        return name if name != em.names[x.id] else em.op("Identity", [name])
    return _advanced(em, name, ndim, adv, idx)


def _index_put(em, node):
    # x[idx] = v (or +=): the same index applied to the positions 0..size-1 of x says which
    # elements are written; ScatterElements writes (or adds) v there in the flat x
    x, v, *idx = node.inputs
    d = node.attr_dict
    basic, adv = d["spec"]
    xs = em.value(x)
    shape = em.op("Shape", [xs])
    size = em.op("Size", [xs])
    positions = em.op("Reshape", [em.op("Range", [em.const(np.int64(0)), size,
                                                  em.const(np.int64(1))]), shape], allowzero=1)
    where, ndim = _basic_index(em, positions, len(x.shape), basic)
    if adv is not None:
        where = _advanced(em, where, ndim, adv, idx)
    vals = em.broadcast(em.value(v, x.dtype), x.dtype, em.op("Shape", [where]))
    flat = em.op("Reshape", [xs, em.ints([-1])])
    attrs = {"reduction": "add"} if d["accumulate"] else {}
    out = em.op("ScatterElements", [flat, em.op("Reshape", [where, em.ints([-1])]),
                                    em.op("Reshape", [vals, em.ints([-1])])], axis=0, **attrs)
    return em.op("Reshape", [out, shape], allowzero=1)


def _fit(em, name: str, shape, target, skip: int) -> str:
    """``name`` sliced to ``target``'s sizes on every axis but ``skip`` (torch's gather and
    scatter take an index smaller than the input; ONNX's elements ops want equal sizes)."""
    axes = [i for i, (a, b) in enumerate(zip(shape, target)) if i != skip and a != b]
    if not axes:
        return name
    if any(isinstance(target[i], Dim) or isinstance(shape[i], Dim) for i in axes):
        _refuse(em.node, "with an index smaller than the input along a dynamic axis does not "
                         "export")
    return em.op("Slice", [name, em.ints([0] * len(axes)), em.ints([target[i] for i in axes]),
                           em.ints(axes)])


def _gather(em, node):
    x, index = node.inputs
    if not x.shape:  # a 0-d gather can only pick the one element
        return em.op("Identity", [em.value(x)])
    dim = ops.norm_dim("gather", node.attr_dict["dim"], x.shape)
    xs = _fit(em, em.value(x), em.shape_of(x), em.shape_of(index), dim)
    return em.op("GatherElements", [xs, em.value(index, np.int64)], axis=dim)


def _scatter_add(em, node):
    x, index, src = node.inputs
    if not x.shape:
        return em.op("Add", [em.value(x), em.value(src)])
    dim = ops.norm_dim("scatter_add", node.attr_dict["dim"], x.shape)
    s = _fit(em, em.value(src), em.shape_of(src), em.shape_of(index), -1)
    return em.op("ScatterElements", [em.value(x), em.value(index, np.int64), s], axis=dim,
                 reduction="add")


# ----------------------------------------------------------------------------------------------
# matmul, windows, constants


def _matmul(em, node):
    a, b = node.inputs
    t = node.out.dtype
    if t == np.bool_:
        _refuse(node, "of bool matrices does not export (cast them to a number type first)")
    return em.op("MatMul", [em.value(a, t), em.value(b, t)])


def _windows(em, x, d: dict, fill) -> str:
    """x's windows as (N, C, kh*kw, L): a Gather of the padded, flattened image with a fixed
    index grid, exact for every value (an identity-kernel Conv would turn a NaN or the -inf
    pad of max_pool into NaN); padding taps hold ``fill``."""
    n, c, h, w = em.shape_of(x)
    ph, pw = d["padding"]
    name = em.value(x)
    if ph or pw:
        with np.errstate(over="ignore", invalid="ignore"):
            pad = em.const(np.asarray(fill).astype(x.dtype))
        name = em.op("Pad", [name, em.ints([0, 0, ph, pw, 0, 0, ph, pw]), pad], mode="constant")
    grid, (hp, wp) = _window_grid(d, (h, w))
    flat = em.op("Reshape", [name, em.shape_value([n, c, hp * wp])], allowzero=1)
    return em.op("Gather", [flat, em.const(grid)], axis=2)


def _unfold(em, node):
    (x,) = node.inputs
    d = node.attr_dict
    n, c = em.shape_of(x)[:2]
    kk = d["kernel"][0] * d["kernel"][1]
    got = _windows(em, x, d, d.get("pad_value", 0.0))
    length = _window_grid(d, x.shape[2:])[0].shape[1]
    return em.op("Reshape", [got, em.shape_value([n, c * kk, length])], allowzero=1)


def _max_pool2d(em, node):
    # ReduceMax over the windows (onnxruntime's MaxPool and ReduceMax drop or keep a NaN by
    # its position: extreme_reduce's fix makes a window holding one NaN, as in torch)
    (x,) = node.inputs
    d = node.attr_dict
    n, c = em.shape_of(x)[:2]
    r = _extreme(em, "ReduceMax", _windows(em, x, d, ops.pool_low(x.dtype)), x.dtype, (2,), 0)
    oh, ow = ops._window_out("max_pool2d", x.shape[2:], d["kernel"], d["dilation"],
                             d["padding"], d["stride"])
    return em.op("Reshape", [r, em.shape_value([n, c, oh, ow])], allowzero=1)


def _max_pool2d_grad(em, node):
    # each window's gradient scattered (ScatterElements, adding) to its argmax's position in
    # the padded image, whose padding is then cut off
    g, x = node.inputs
    d = node.attr_dict
    n, c = em.shape_of(x)[:2]
    grid, _ = _window_grid(d, x.shape[2:])
    kk, length = grid.shape
    windows = _windows(em, x, d, ops.pool_low(x.dtype))
    at = _arg_extreme(em, "ArgMax", windows, x.dtype, 2, 1)  # (N, C, 1, L)
    where = em.op("GatherElements", [em.expand(em.const(grid[None, None]), np.int64,
                                               [n, c, kk, length]), at], axis=2)
    where = em.op("Reshape", [where, em.shape_value([n, c, length])], allowzero=1)
    src = em.op("Reshape", [em.value(g), em.shape_value([n, c, length])], allowzero=1)
    return _add_into_image(em, src, where, g.dtype, (n, c), d, x.shape[2:])


def _add_into_image(em, src: str, index: str, dtype, nc: tuple, d: dict, hw: tuple) -> str:
    """ScatterElements adding ``src`` (N, C, M) at flat positions ``index`` of the padded image,
    then the padding cut off: (N, C, H, W)."""
    (ph, pw), (h, w) = d["padding"], hw
    hp, wp = h + 2 * ph, w + 2 * pw
    zeros = em.expand(em.const(0, dtype), dtype, [*nc, hp * wp])
    image = em.op("ScatterElements", [zeros, index, src], axis=2, reduction="add")
    image = em.op("Reshape", [image, em.shape_value([*nc, hp, wp])], allowzero=1)
    if ph or pw:
        image = em.op("Slice", [image, em.ints([ph, pw]), em.ints([ph + h, pw + w]),
                                em.ints([2, 3])])
    return image


def _window_grid(d: dict, hw: tuple) -> tuple:
    """(the flat positions in the padded image of each window element, (kh*kw, L); padded
    size): the index grid both unfold and fold use."""
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = d["kernel"], d["dilation"], d["padding"], d["stride"]
    oh, ow = ops._window_out("unfold", hw, d["kernel"], d["dilation"], d["padding"], d["stride"])
    hp, wp = hw[0] + 2 * ph, hw[1] + 2 * pw
    rows = np.arange(kh)[:, None, None, None] * dh + np.arange(oh)[None, None, :, None] * sh
    cols = np.arange(kw)[None, :, None, None] * dw + np.arange(ow)[None, None, None, :] * sw
    return (rows * wp + cols).reshape(kh * kw, oh * ow).astype(np.int64), (hp, wp)


def _fold(em, node):
    # col2im as ScatterElements adding every column into the flat padded image (onnxruntime's
    # Col2Im runs float32 only), then the padding cut off
    (cols,) = node.inputs
    d = node.attr_dict
    n, ckk, L = em.shape_of(cols)
    kk = d["kernel"][0] * d["kernel"][1]
    c = ckk // kk
    grid, _ = _window_grid(d, d["output_size"])
    src = em.op("Reshape", [em.value(cols), em.shape_value([n, c, kk * L])], allowzero=1)
    index = em.expand(em.const(grid.reshape(1, 1, -1)), np.int64, [n, c, kk * L])
    return _add_into_image(em, src, index, cols.dtype, (n, c), d, d["output_size"])


def _const(em, node):
    a = node.attr_dict["value"].array
    dims = em.shape_of(node.out)
    if any(isinstance(s, Dim) for s in dims):
        # made at the traced size of a dynamic axis (zeros(x.shape[0], h)): only a constant
        # filled with one value can follow the size
        flat = a.reshape(-1)
        if flat.size == 0 or not (flat == flat[0]).all() and not np.isnan(flat).all():
            _refuse(node, "holds values that depend on the size of a dynamic axis")
        return em.expand(em.const(flat[0]), a.dtype, dims)
    return em.op("Identity", [em.const(a)])


# ----------------------------------------------------------------------------------------------
# the table: one entry per op-table row (or a reason in REFUSED)

RULES = {
    "neg": _neg, "abs": _abs, "exp": unary("Exp"), "log": unary("Log"), "log1p": _log1p,
    "expm1": _expm1, "sqrt": unary("Sqrt"), "rsqrt": _rsqrt, "sin": unary("Sin"),
    "cos": unary("Cos"), "tan": _f64("Tan", _tan64), "sinh": _f64("Sinh", _sinh64),
    "cosh": _f64("Cosh", _cosh64),
    "tanh": unary("Tanh"), "sigmoid": unary("Sigmoid"), "erf": _f64("Erf", None), "relu": _relu,
    "sign": _sign, "floor": unary("Floor", True), "ceil": unary("Ceil", True),
    "round": unary("Round", True), "logical_not": logical("Not"), "isnan": _isnan,
    "isfinite": _isfinite, "copy": _identity,
    "add": binary("Add", "Or"), "sub": binary("Sub"), "mul": binary("Mul", "And"), "div": _div,
    "floordiv": _floordiv, "remainder": _remainder, "pow": _pow,
    "maximum": extreme("Max"), "minimum": extreme("Min"),
    "eq": compare("Equal"), "ne": compare("Equal", negate=True), "lt": compare("Less"),
    "le": compare("LessOrEqual"), "gt": compare("Greater"), "ge": compare("GreaterOrEqual"),
    "logical_and": logical("And"), "logical_or": logical("Or"), "logical_xor": logical("Xor"),
    "where": _where, "clamp": _clamp, "cast": _cast,
    "sum": reduce("ReduceSum"), "prod": reduce("ReduceProd"),
    "amax": extreme_reduce("ReduceMax"), "amin": extreme_reduce("ReduceMin"),
    "argmax": arg_reduce("ArgMax"), "argmin": arg_reduce("ArgMin"), "cumsum": _cumsum,
    "reshape": _reshape, "permute": _permute, "expand": _expand, "cat": _cat, "pad": _pad,
    "getitem": _getitem, "index_put": _index_put, "gather": _gather,
    "scatter_add": _scatter_add, "matmul": _matmul, "unfold": _unfold, "fold": _fold,
    "max_pool2d": _max_pool2d, "max_pool2d_grad": _max_pool2d_grad,
    "const": _const, "detach": _identity,
    "asin": _f64("Asin", None), "acos": _f64("Acos", None), "atan": _f64("Atan", None),
    "asinh": _f64("Asinh", None), "acosh": _f64("Acosh", None), "atanh": _f64("Atanh", None),
    "fmod": _fmod, "argsort": _argsort, "atan2": _atan2,
}

_RANDOM = ("draws random numbers, which an exported model cannot repeat: export the model in "
           "eval mode (model.eval(): dropout is then the identity) or take the noise as an input")
REFUSED = {
    "uniform": _RANDOM, "normal": _RANDOM, "randint": _RANDOM,
    "fused": "is a kernel of the fuse pass: export renders the optimised graph before fusion",
    "all_reduce": "is a collective across the ranks of a training job (tracejit.distributed), "
                  "which ONNX cannot express: export the model, not the distributed step",
    "cumprod": "has no ONNX operator (CumSum only): export log/exp of a positive input's "
               "cumsum yourself, or compute it outside the model",
    "logcumsumexp": "has no ONNX operator: compute it outside the exported model",
}


# ----------------------------------------------------------------------------------------------
# patterns: conv2d is traced as unfold + matmul (nn/functional.py); ONNX has Conv


def find_convs(graph: Graph) -> tuple:
    """({id of the final reshape: its Conv rule}, {ids of the nodes the Convs replace}) for
    each ``reshape(matmul(reshape(w), unfold(x)))`` (or its grouped form) that is conv2d."""
    prod = {n.out.id: n for n in graph.nodes}
    users = graph.users()
    rules, covered = {}, set()

    def made(x, op):
        n = prod.get(x.id) if isinstance(x, Var) else None
        return n if n is not None and n.op == op else None

    for out in graph.nodes:
        m = made(out.inputs[0], "matmul") if out.op == "reshape" else None
        if m is None or users.get(m.out.id) != 1 or len(out.out.shape) != 4:
            continue
        wr, cols = m.inputs
        wr = made(wr, "reshape")
        if wr is None or not isinstance(wr.inputs[0], Var) or len(wr.inputs[0].shape) != 4:
            continue
        weight = wr.inputs[0]
        groups, split = 1, None
        u = made(cols, "unfold")
        if u is None and (split := made(cols, "reshape")) is not None:
            u = made(split.inputs[0], "unfold")
            groups = split.out.shape[1] if len(split.out.shape) == 4 else 0
        if u is None or u.attr_dict.get("pad_value", 0.0) != 0.0 or not groups:
            continue
        x, d = u.inputs[0], u.attr_dict
        o, cg, kh, kw = weight.shape
        n, c = x.shape[:2]
        oh, ow = ops._window_out("unfold", x.shape[2:], d["kernel"], d["dilation"],
                                 d["padding"], d["stride"])
        k = cg * kh * kw
        want_w = (o, k) if groups == 1 else (1, groups, o // groups, k)
        if (tuple(d["kernel"]) != (kh, kw) or c != cg * groups or wr.out.shape != want_w
                or out.out.shape != (n, o, oh, ow) or not _is_float(x.dtype)
                or not x.dtype == weight.dtype == m.out.dtype):
            continue
        if split is not None and split.out.shape != (n, groups, k, oh * ow):
            continue
        rules[out.out.id] = _conv_rule(x, weight, d, groups)
        covered.add(m.out.id)
        # the pieces are skipped where the pattern is their only user (else rendered as well)
        if users.get(wr.out.id) == 1:
            covered.add(wr.out.id)
        if split is not None and users.get(split.out.id) == 1:
            covered.add(split.out.id)
        if users.get(u.out.id) == 1 and (split is None or split.out.id in covered):
            covered.add(u.out.id)
    return rules, covered


def _conv_rule(x: Var, weight: Var, d: dict, groups: int):
    def rule(em, node):
        ph, pw = d["padding"]
        return em.op("Conv", [em.value(x), em.value(weight)], kernel_shape=list(d["kernel"]),
                     strides=list(d["stride"]), dilations=list(d["dilation"]),
                     pads=[ph, pw, ph, pw], group=groups)
    return rule


# ----------------------------------------------------------------------------------------------
# graph -> model


def render(graph: Graph, *, opset: int = MIN_OPSET, initializers: dict | None = None,
           output_names: list | None = None, dims: dict | None = None,
           symbols: dict | None = None, name: str = "tracejit") -> onnx.ModelProto:
    """The ONNX model computing ``graph``. Graph inputs named in ``initializers`` (name ->
    array) become initializers; the rest are the model's inputs. ``dims``/``symbols``: dynamic
    axes (see the module docstring)."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"onnx export: opset must be in [{MIN_OPSET}, {MAX_OPSET}] (what the "
                         f"installed onnx and onnxruntime run), got {opset}")
    initializers = initializers or {}
    em = Emitter(graph, opset, dims or {}, symbols or {})
    convs, covered = find_convs(graph)
    for node in graph.nodes:
        if node.out.id in covered:
            continue
        em.node = node
        if node.op in REFUSED:
            _refuse(node, REFUSED[node.op])
        rule = convs.get(node.out.id) or RULES.get(node.op)
        if rule is None:
            _refuse(node, "has no ONNX export rule")
        em.names[node.out.id] = rule(em, node)
    em.node = None

    outputs, out_nodes = [], []
    out_names = list(output_names or [])
    for i, x in enumerate(graph.outputs):
        out = out_names[i] if i < len(out_names) else (
            "output" if len(graph.outputs) == 1 else f"output_{i}")
        src = em.value(x) if isinstance(x, Var) else em.const(np.asarray(x))
        # NOTE: an Identity per output: an output may be an input, or appear twice
        out_nodes.append(helper.make_node("Identity", [src], [out], name=out))
        shape = em.shape_of(x) if isinstance(x, Var) else np.asarray(x).shape
        dtype = x.dtype if isinstance(x, Var) else np.asarray(x).dtype
        outputs.append(_value_info(out, dtype, shape))
    inputs = [_value_info(n, v.dtype, em.shape_of(v)) for v, n in
              zip(graph.inputs, graph.input_names) if n not in initializers]
    inits = [numpy_helper.from_array(np.ascontiguousarray(a), n)
             for n, a in initializers.items()] + em.initializers
    g = helper.make_graph(em.nodes + out_nodes, name, inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(g, opset_imports=opsets, producer_name="tracejit",
                              ir_version=helper.find_min_ir_version_for(opsets))
    return model


def _value_info(name, dtype, shape):
    return helper.make_tensor_value_info(
        name, onnx_dtype(dtype), [str(d) if isinstance(d, Dim) else int(d) for d in shape])


__all__ = ["render", "RULES", "REFUSED", "OnnxExportError", "Dim", "MIN_OPSET", "MAX_OPSET"]
