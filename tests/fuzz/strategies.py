"""Hypothesis strategies for random programs (tests/fuzz/program.py) built from the op table.

``programs()`` draws inputs (0-d, size-0, size-1 and odd shapes; float32/float64/int32/int64/bool;
contiguous, transposed, strided, offset and reversed layouts; NaN, +-inf, -0.0, huge and
denormal floats), then steps: every row of ``tracejit.ops.OPS`` whose kind a builder below knows
(elementwise rows by their ``expr`` arity and ``dtype_rule``, reductions, shape ops, indexing,
matmul, windows, random draws), Tensor-level indexing (``x[key]``, ``x.index_put``) and in-place
updates (``add_``, ``mul_``, ``copy_``, ``x[key] = v``, ...) of inputs, of clones and of views of
either. Each step is run eagerly while it is drawn: a step the ops refuse is not kept, and the
real values decide what is safe (no integer division by zero or overflow, no float-to-int cast
out of range).

What differs between executors on purpose is tracked per value: ``exact`` says every executor
must produce the same bits (integers, and floats made only by exact ops such as abs, where,
max or indexing); float arithmetic, libm functions and reductions are not exact (FMA
contraction, fast float32 math, summation order). Discontinuous ops (comparisons, floor, round,
casts to integers, argmax, floor division, index tensors) only ever read exact values, so their
results stay comparable bit for bit; the tolerance of inexact floats is estimated per element by
``executors.tolerance``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import strategies as st

from tracejit import dtypes as D
from tracejit import ops
from tracejit import random as tj_random
from tracejit.errors import DTypeError, ShapeError
from tracejit.tensor import Tensor

from .executors import SEED
from .program import In, P, S, V, replay, run_step

F32, F64, I32, I64, B = (np.dtype(n) for n in ("float32", "float64", "int32", "int64", "bool"))
DTYPES = [F32, F64, I64, I32, B]
INT_LIMIT = {I32: 2.0 ** 30, I64: 2.0 ** 60}  # estimated |values| beyond these are refused

# float ops whose result is the same in every executor when their operands are
EXACT_OPS = {
    "neg", "abs", "relu", "sign", "floor", "ceil", "round", "copy", "maximum", "minimum",
    "where", "clamp", "cast", "eq", "ne", "lt", "le", "gt", "ge", "isnan", "isfinite",
    "logical_not", "logical_and", "logical_or", "logical_xor", "reshape", "permute", "expand",
    "cat", "pad", "detach", "getitem", "gather", "amax", "amin", "argmax", "argmin", "max_pool2d",
    "uniform", "normal", "randint", "tensor", ".clone", ".contiguous", ".__getitem__",
    ".copy_", ".__setitem__", ".fill_", ".zero_", ".clamp_", ".masked_fill_", ".detach",
    ".transpose", ".unsqueeze", ".flatten", ".T",
}
# ops with a jump: they may only read exact values
DISCRETE_OPS = {"eq", "ne", "lt", "le", "gt", "ge", "isnan", "isfinite", "floor", "ceil",
                "round", "sign", "argmax", "argmin", "floordiv", "remainder", "fmod", "atan2",
                "argsort"}
# differentiable and smooth everywhere we evaluate them (the finite-difference check's ops)
SMOOTH_OPS = {"neg", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tan", "tanh",
              "sinh", "cosh", "sigmoid", "erf", "copy", "add", "sub", "mul", "div", "pow", "where",
              "sum", "prod", "cumsum", "reshape", "permute", "expand", "cat", "pad", "getitem",
              "index_put", "gather", "scatter_add", "matmul", "unfold", "fold", "cast"}
KINKED_OPS = {"abs", "relu", "maximum", "minimum", "amax", "amin", "clamp",  # grad, not FD
              "max_pool2d", "max_pool2d_grad"}
POSITIVE_DOMAIN = {"log", "sqrt", "rsqrt"}  # in gradient programs their operand is x*x + 0.5
# known, fixed elsewhere (test_regressions.test_0d_value_feeding_sum_and_another_op): a 0-d
# value that feeds a reduction and anything else fails to lower; set False once fixed
SKIP_0D_REDUCTIONS = False
# known (test_regressions.test_index_put_accumulate_empty_key): x.index_put((), v,
# accumulate=True) does not compile; set False once fixed
SKIP_EMPTY_KEY_ACCUMULATE = False
# known (test_regressions.test_inplace_result_wider_than_target): x.mul_(y) whose result dtype
# is wider than x's (float32 x, float64 y) traces as the wider value; set False once fixed
SKIP_INPLACE_WIDENING = False
KNOWN_KINDS = {ops.ELEMENTWISE, ops.REDUCE, ops.SHAPE, ops.INDEX, ops.LINALG, ops.WINDOW,
               "random", "const", "fused", "collective"}

_SPECIALS = {
    F32: [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.0, float("nan"), float("inf"), float("-inf"),
          1e30, -3e38, 1e-40, -1e-45, 1e-38, 16777217.0],
    F64: [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.0, float("nan"), float("inf"), float("-inf"),
          1e300, -1.7e308, 5e-324, -1e-310, 2.0 ** 53 + 1],
}


@dataclass
class Info:
    """What the generator knows about a value."""
    shape: tuple
    dtype: np.dtype
    exact: bool = True  # every executor must give these very bits
    special: bool = False  # holds nan or inf
    root: int | None = None  # the value (an input or a clone) whose memory this is
    view: str | None = None  # "view": shares root's memory; "maybe": a reshape (view or copy)
    writeable: bool = True
    alive: bool = True  # False: its base was written in place while it was a maybe-view

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def arity(op: ops.OpDef) -> int:
    """Operands of an elementwise row: the numbered placeholders of its ``expr``."""
    return len(set(re.findall(r"\{(\d+)\}", op.expr or "")))


def rows(kind: str) -> list:
    return [name for name, op in ops.OPS.items() if op.kind == kind]


# ----------------------------------------------------------------------------------------------
# inputs

DIMS = [2, 1, 3, 0, 4, 5]


@st.composite
def shapes(draw, max_rank=3, allow_empty=True):
    rank = draw(st.sampled_from([1, 2, 0, 3][:max_rank + 1]))
    dims = DIMS if allow_empty else [d for d in DIMS if d]
    return tuple(draw(st.sampled_from(dims)) for _ in range(rank))


def float_elements(dtype, special: bool, low=-3.0, high=3.0):
    width = 32 if dtype == F32 else 64
    plain = st.one_of(st.floats(low, high, width=width),
                      st.integers(int(low), int(high)).map(float))
    if not special:
        return plain
    return st.one_of(plain, st.sampled_from(_SPECIALS[dtype]))


def elements(dtype, special: bool):
    if dtype == B:
        return st.booleans()
    if dtype.kind in "iu":
        return st.integers(-4, 4)
    return float_elements(dtype, special)


@st.composite
def input_specs(draw, dtype=None, shape=None, special=None):
    shape = draw(shapes()) if shape is None else shape
    dtype = draw(st.sampled_from(DTYPES)) if dtype is None else dtype
    special = draw(st.booleans()) if special is None else special
    values = draw(hnp.arrays(dtype, shape, elements=elements(dtype, special)))
    layouts = ["c"] + (["T"] if len(shape) >= 2 else []) + (["s", "r"] if shape else []) + ["o"]
    layout = draw(st.sampled_from(layouts))
    return In(tuple(shape), dtype.name, layout, values.tolist())


# ----------------------------------------------------------------------------------------------
# the generator: pool of values, each step checked eagerly


class Reject(Exception):
    """This step cannot be built from the current pool."""


class Gen:
    def __init__(self, draw, inputs, grad: str | None = None):
        self.draw = draw
        self.grad = grad  # None (forward fuzzing), "smooth" (FD-checkable), "any" (vjps only)
        self.prog = P(inputs=list(inputs), steps=[], outputs=[])
        self.infos = []
        for i, inp in enumerate(inputs):
            a = inp.array()
            self.infos.append(Info(a.shape, a.dtype, special=_special(a), root=i))
        # random draws while generating are the ones the executors make (each seeds SEED, then
        # runs the steps in order): generation reads values, so it must not depend on what ran
        # before in this process (hypothesis replays an example and expects the same draws)
        tj_random.manual_seed(SEED)
        self.env = self.prog.make_args()
        self.stats = {"steps": [], "rejected": 0}

    # -- pool
    def live(self, pred=lambda i: True) -> list:
        return [V(k) for k, inf in enumerate(self.infos) if inf.alive and pred(inf)]

    def pick(self, pred=lambda i: True) -> V:
        cands = self.live(pred)
        if not cands:
            raise Reject
        return self.draw(st.sampled_from(cands[::-1]))  # shrinks toward the latest value

    def value(self, ref) -> np.ndarray:
        return self.env[ref]._data

    # -- adding a step
    def add(self, step: S, info_fn=None) -> V:
        """Run ``step`` eagerly; keep it when the ops accept it. ``info_fn(result)`` may adjust
        the new value's Info (which starts from the operands')."""
        env = list(self.env)
        try:
            with np.errstate(all="ignore"):
                res = replay(P(self.prog.inputs, [step], [V(len(env))]), env)[0]
        except (ShapeError, DTypeError, IndexError, ValueError, TypeError, RuntimeError,
                NotImplementedError, ZeroDivisionError):
            # a refused in-place step may have written part of a tensor: start again
            self.env = self._rebuild()
            raise Reject from None
        if self.grad and isinstance(res, Tensor) and res.dtype.kind == "f" and (
                _special(res._data) or _maxabs(res._data) > 1e4):
            self.env = self._rebuild()
            raise Reject  # gradient programs stay in a tame range (finite differences work)
        if self.grad == "smooth" and step.op == "tan" and np.any(
                np.abs(np.cos(self.value(step.args[0]))) < 0.2):
            self.env = self._rebuild()
            raise Reject  # near a pole
        self.env.append(res)
        self.prog.steps.append(step)
        ref = V(len(self.infos))
        self.infos.append(self._info(step, res))
        if info_fn is not None:
            info_fn(self.infos[ref])
        self.stats["steps"].append(step.op)
        return ref

    def _rebuild(self):
        """The eager values of the steps kept so far, computed afresh (the generator's draws
        replayed too, so a rejected step's draws are forgotten)."""
        tj_random.manual_seed(SEED)
        env = list(self.prog.make_args())
        for s in self.prog.steps:
            env.append(run_step(s, env))
        return env

    def _info(self, step, res) -> Info:
        refs = _refs(step.args)
        operands = [self.infos[r] for r in refs]
        a = res._data
        exact = all(i.exact for i in operands) and (
            a.dtype.kind != "f" or step.op in EXACT_OPS or
            (step.op == "index_put" and not step.attr_dict.get("accumulate")) or
            (step.op == ".index_put" and not step.attr_dict.get("accumulate")))
        return Info(a.shape, a.dtype, exact=exact, special=_special(a))

    def mark_view(self, ref, of, kind="view", writeable=True):
        base = self.infos[of]
        info = self.infos[ref]
        info.root = base.root if base.root is not None else of
        info.view = kind if base.view in (None, "view") else "maybe"
        info.writeable = writeable and base.writeable
        if not base.alive:
            info.alive = False

    def wrote(self, target: V, step_ref: V):
        """``target`` was written in place by step ``step_ref``: every value sharing its memory
        now holds what eager execution left there."""
        tinfo = self.infos[target]
        new = self.infos[step_ref]
        root = tinfo.root
        for k, inf in enumerate(self.infos):
            if k == step_ref or not inf.alive:
                continue
            if k == target or (root is not None and (inf.root == root or k == root)):
                if inf.view is not None and k != target:
                    # NOTE: tracing refuses views read after their base changed in place (a
                    # clear TraceError: clone the view first); reshapes may be copies or views
                    inf.alive = False
                    continue
                inf.exact = inf.exact and new.exact
                inf.special = _special(self.env[k]._data)
        self.infos[step_ref] = replace(tinfo, exact=tinfo.exact and new.exact,
                                       special=_special(self.env[step_ref]._data))


def _special(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" and a.size > 0 and not bool(np.isfinite(a).all())


def _refs(args) -> list:
    out = []
    for a in args:
        if isinstance(a, V):
            out.append(a)
        elif isinstance(a, tuple):
            out.extend(_refs(a))
    return out


def _maxabs(a) -> float:
    a = np.asarray(a)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a.astype(np.float64))))


# ----------------------------------------------------------------------------------------------
# builders: one per op family; each draws operands from the pool and adds steps

def _scalar(draw, kinds=("int", "float", "bool")):
    kind = draw(st.sampled_from(kinds))
    if kind == "int":
        return draw(st.integers(-3, 3))
    if kind == "bool":
        return draw(st.booleans())
    return draw(st.sampled_from([0.5, 2.0, -1.5, 0.0, -0.0, 1.0, 3.25, float("inf"),
                                 float("nan"), 1e-3]))


def _broadcastable(shape):
    def pred(i):
        try:
            ops.broadcast_shapes("fuzz", shape, i.shape)
            return True
        except ShapeError:
            return False
    return pred


def _int_bound_ok(name, vals, out_dtype, g: Gen) -> bool:
    """Would integer ``name`` on these operands stay far from overflow?"""
    if out_dtype.kind not in "iu":
        return True
    m = [_maxabs(g.value(v)) if isinstance(v, V) else abs(float(v)) for v in vals]
    if name in ("add", "sub", "maximum", "minimum"):
        est = sum(m)
    elif name == "mul":
        est = math.prod(m)  # Python floats: overflows to inf without a numpy warning
    elif name == "pow":
        est = m[0] ** m[1] if len(m) > 1 else m[0]
    else:
        est = max(m) + 1 if m else 0
    return est < INT_LIMIT.get(out_dtype, 2.0 ** 30)


def build_elementwise(g: Gen, name: str):
    op = ops.OPS[name]
    draw = g.draw
    n = arity(op)
    if g.grad:
        if name not in SMOOTH_OPS and (g.grad == "smooth" or name not in KINKED_OPS):
            raise Reject
    if name == "cast":
        x = g.pick()
        dtype = draw(st.sampled_from(DTYPES if not g.grad else [F64]))
        xi, xv = g.infos[x], g.value(x)
        if xi.dtype.kind == "f" and dtype.kind in "iub":
            if not xi.exact or xi.special or _maxabs(xv) >= 2.0 ** 30:
                raise Reject  # float -> int of nan/inf/huge values is undefined
        return g.add(S("cast", x, dtype=dtype))
    if name == "clamp":
        x = g.pick()
        isint = g.infos[x].dtype.kind in "iub"
        bound = st.integers(-3, 3) if isint else st.sampled_from([-1.0, 0.5, 2.0, -0.0])
        lo = draw(st.one_of(st.none(), bound))
        hi = draw(st.one_of(st.none(), bound)) if lo is not None else draw(bound)
        return g.add(S("clamp", x, min=lo, max=hi))
    if name == "where":
        if g.grad:  # a fixed condition: where is smooth in its values
            c = _const(g, (draw(shapes()) if draw(st.booleans()) else ()), B)
        else:
            c = g.pick(lambda i: i.dtype == B)
        cshape = g.infos[c].shape
        args = [c]
        for _ in range(2):
            args.append(_operand(g, cshape, name))
        return g.add(S("where", *args))
    x = g.pick(_grad_ok(g)) if g.grad else g.pick()
    args = [x]
    shape = g.infos[x].shape
    for _ in range(n - 1):
        args.append(_operand(g, shape, name))
    if n == 2 and draw(st.booleans()) and not g.grad:
        args.reverse()  # a scalar may come first (2.0 - x)
    if not any(isinstance(a, V) for a in args):
        raise Reject
    _check_elementwise(g, name, args)
    if g.grad and name in POSITIVE_DOMAIN | {"pow", "div"}:
        args = [_positive(g, a) if isinstance(a, V) and (i == 0 or name == "div") else a
                for i, a in enumerate(args)]
    if g.grad == "smooth" and name == "pow" and isinstance(args[1], V):
        raise Reject
    return g.add(S(name, *args))


def _grad_ok(g):
    return lambda i: i.dtype == F64


def _operand(g: Gen, shape, name):
    """A second operand for an elementwise op on a value of ``shape``: a pool value that
    broadcasts with it, or a Python scalar."""
    draw = g.draw
    if g.grad:
        if draw(st.booleans()):
            return draw(st.sampled_from([0.5, 2.0, -1.5, 3]))
        return g.pick(lambda i: i.dtype == F64 and _broadcastable(shape)(i))
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return _scalar(draw)
    if choice == 1:  # a fresh constant that broadcasts: a suffix of the shape, some dims 1
        sub = shape[draw(st.integers(0, len(shape))):]
        sub = tuple(1 if draw(st.booleans()) else n for n in sub)
        if draw(st.booleans()) and len(sub) < 3:
            sub = (draw(st.sampled_from([2, 1])),) + sub  # or one dim more: the result grows
        return _const(g, sub, draw(st.sampled_from(DTYPES)))
    return g.pick(_broadcastable(shape))


def _check_elementwise(g: Gen, name, args):
    """Refuse operands whose results would legitimately differ (or crash) between executors."""
    op = ops.OPS[name]
    avals = [(g.infos[a].shape, g.infos[a].dtype) if isinstance(a, V) else a for a in args]
    try:
        _, out_dtype = op.infer(avals)
    except (ShapeError, DTypeError):
        raise Reject from None
    infos = [g.infos[a] for a in args if isinstance(a, V)]
    if name in DISCRETE_OPS and not all(i.exact for i in infos):
        raise Reject
    vals = [g.value(a) if isinstance(a, V) else a for a in args]
    if name == "sign" and any(np.isnan(np.asarray(v, dtype=np.float64)).any()
                              for v in vals if np.asarray(v).dtype.kind == "f"):
        raise Reject  # known, fixed elsewhere: sign(nan)
    if name == "pow":
        if any(np.isneginf(np.asarray(v, dtype=np.float64)).any() for v in vals[:1]):
            raise Reject  # known, fixed elsewhere: (-inf) ** 0.5
        if out_dtype.kind in "iu":
            e = np.asarray(vals[1])
            if e.size and (e.min() < 0 or e.max() > 4):
                raise Reject  # integers to negative powers raise; big ones overflow
    if name in ("floordiv", "remainder") and out_dtype.kind in "iu":
        d = np.asarray(vals[1])
        if d.size and not np.all(d):
            raise Reject  # known, fixed elsewhere: integer division by zero
    if name in ("sub", "neg") and out_dtype == B:
        raise Reject
    if not _int_bound_ok(name, args, out_dtype, g):
        raise Reject


def _positive(g: Gen, x: V) -> V:
    """x * x + 0.5: a smooth operand bounded away from zero (for log, sqrt, division)."""
    sq = g.add(S("mul", x, x))
    return g.add(S("add", sq, 0.5))


def _const(g: Gen, shape, dtype, low=-3, high=3) -> V:
    draw = g.draw
    if dtype == B:
        elems = st.booleans()
    elif dtype.kind in "iu":
        elems = st.integers(low, high)
    else:
        elems = float_elements(dtype, special=False)
    value = draw(hnp.arrays(dtype, tuple(shape), elements=elems))
    return g.add(S("tensor", value=value))


def build_reduce(g: Gen, name: str):
    draw = g.draw
    if g.grad and name not in SMOOTH_OPS and (g.grad == "smooth" or name not in KINKED_OPS):
        raise Reject
    x = g.pick(_grad_ok(g)) if g.grad else g.pick()
    info = g.infos[x]
    nd = len(info.shape)
    if nd == 0 and SKIP_0D_REDUCTIONS:
        raise Reject
    if name in ("argmax", "argmin"):
        if not info.exact or info.size == 0:
            raise Reject
        dim = draw(st.one_of(st.none(), st.integers(0, nd - 1))) if nd else None
        if dim is not None and info.shape[dim] == 0:
            raise Reject
        return g.add(S(name, x, dim=dim, keepdim=draw(st.booleans())))
    if name == "argsort":
        if not info.exact:
            raise Reject
        dim = draw(st.integers(0, nd - 1)) if nd else 0
        return g.add(S(name, x, dim=dim, descending=draw(st.booleans())))
    if name in ("cumprod", "logcumsumexp"):
        if nd == 0:
            raise Reject
        dim = draw(st.integers(0, nd - 1))
        if name == "cumprod" and info.dtype.kind in "iub" and \
                _maxabs(g.value(x)) ** max(info.shape[dim], 1) > 2 ** 30:
            raise Reject
        return g.add(S(name, x, dim=dim))
    if name == "cumsum":
        if nd == 0:
            raise Reject
        if info.dtype.kind in "iub" and _maxabs(g.value(x)) * max(info.shape) > 2 ** 30:
            raise Reject
        return g.add(S(name, x, dim=draw(st.integers(0, nd - 1))))
    if nd:
        dims = tuple(sorted(draw(st.sets(st.integers(0, nd - 1), min_size=1))))
    else:
        dims = ()
    keepdim = draw(st.booleans())
    n = int(np.prod([info.shape[d] for d in dims], dtype=np.int64)) if dims else 1
    if name in ("amax", "amin") and n == 0:
        raise Reject
    if info.dtype.kind in "iub":
        m = _maxabs(g.value(x))
        est = m * n if name == "sum" else (m ** n if name == "prod" else m)
        if est >= 2.0 ** 60:
            raise Reject
    if g.grad == "smooth" and name == "prod" and n > 4:
        raise Reject
    return g.add(S(name, x, dims=dims, keepdim=keepdim))


def _factor_shape(draw, numel):
    """A random shape with ``numel`` elements."""
    if numel == 0:
        rank = draw(st.integers(1, 3))
        shape = [draw(st.sampled_from([1, 2, 3])) for _ in range(rank)]
        shape[draw(st.integers(0, rank - 1))] = 0
        return tuple(shape)
    factors = []
    n, p = numel, 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    rank = draw(st.integers(max(1 if factors else 0, 0), min(3, max(len(factors), 1))))
    if rank == 0:
        return ()
    shape = [1] * rank
    for f in factors:
        shape[draw(st.integers(0, rank - 1))] *= f
    if draw(st.booleans()) and rank < 3:
        shape.insert(draw(st.integers(0, rank)), 1)
    return tuple(shape)


def build_shape(g: Gen, name: str):
    draw = g.draw
    if g.grad and name not in SMOOTH_OPS:
        raise Reject
    pred = _grad_ok(g) if g.grad else (lambda i: True)
    x = g.pick(pred)
    info = g.infos[x]
    nd = len(info.shape)
    if name == "reshape":
        ref = g.add(S("reshape", x, shape=_factor_shape(draw, info.size)))
        g.mark_view(ref, x, "maybe")
        return ref
    if name == "permute":
        if nd < 2:
            raise Reject
        perm = tuple(draw(st.permutations(range(nd))))
        ref = g.add(S("permute", x, perm=perm))
        g.mark_view(ref, x)
        return ref
    if name == "expand":
        lead = tuple(draw(st.lists(st.sampled_from([2, 1, 3, 0]), max_size=2)))
        shape = lead + tuple(draw(st.sampled_from([1, 2, 3, 0])) if n == 1 else n
                             for n in info.shape)
        if shape == info.shape:
            raise Reject
        ref = g.add(S("expand", x, shape=shape))
        g.mark_view(ref, x, writeable=False)
        return ref
    if name == "cat":
        if nd == 0:
            raise Reject
        d = draw(st.integers(0, nd - 1))
        parts = [x]
        for _ in range(draw(st.integers(1, 2))):
            def fits(i):
                return i.dtype == info.dtype and len(i.shape) == nd and all(
                    a == b for k, (a, b) in enumerate(zip(i.shape, info.shape)) if k != d)
            if draw(st.booleans()) and g.live(fits):
                parts.append(g.pick(fits))
            else:
                shape = list(info.shape)
                shape[d] = draw(st.sampled_from([1, 2, 0]))
                parts.append(_const(g, shape, info.dtype))
        return g.add(S("cat", *parts, dim=d))
    if name == "pad":
        if nd == 0:
            raise Reject
        k = draw(st.integers(1, min(nd, 2)))
        pad = tuple(draw(st.integers(0, 2)) for _ in range(2 * k))
        value = draw(st.sampled_from([0.0, 1.5, -1.0])) if info.dtype.kind == "f" else 0
        if info.dtype == B:
            value = False
        return g.add(S("pad", x, pad=pad, value=value))
    if name == "detach":
        ref = g.add(S("detach", x))
        g.mark_view(ref, x)
        return ref
    raise Reject


def _basic_key(draw, shape, allow_tensor_of=None):
    """A basic index for ``shape``: ints, slices (negative steps too), None, Ellipsis."""
    key = []
    nd = len(shape)
    ndims_used = draw(st.integers(0, nd))
    used_ellipsis = False
    for d in range(ndims_used):
        n = shape[d]
        kind = draw(st.sampled_from(["slice", "int", "none", "ellipsis"] if n else
                                    ["slice", "none"]))
        if kind == "int":
            key.append(draw(st.integers(-n, n - 1)))
        elif kind == "none":
            key.append(None)
            key.append(slice(None, None, None))
        elif kind == "ellipsis" and not used_ellipsis:
            used_ellipsis = True
            key.append(Ellipsis)
            break
        else:
            start = draw(st.one_of(st.none(), st.integers(-n - 1, n + 1)))
            stop = draw(st.one_of(st.none(), st.integers(-n - 1, n + 1)))
            step = draw(st.sampled_from([None, 1, 2, -1, -2, 3]))
            key.append(slice(start, stop, step))
    if draw(st.integers(0, 4)) == 0:
        key.append(None)
    return tuple(key)


def build_index(g: Gen, name: str):
    draw = g.draw
    if g.grad and name not in SMOOTH_OPS:
        raise Reject
    pred = _grad_ok(g) if g.grad else (lambda i: True)
    x = g.pick(pred)
    info = g.infos[x]
    nd = len(info.shape)
    if name == "getitem":
        key = list(_basic_key(draw, info.shape))
        advanced = draw(st.booleans()) and nd > 0
        if advanced:  # replace one or two leading basic entries by int index tensors
            key = key[:0]
            ishape = draw(shapes(max_rank=2))
            for d in range(draw(st.integers(1, min(nd, 2)))):
                n = info.shape[d]
                if n == 0:
                    raise Reject
                key.append(_const(g, ishape, draw(st.sampled_from([I64, I32])), -n, n - 1))
        key = tuple(key)
        ref = g.add(S(".__getitem__", x, key))
        if not advanced:
            g.mark_view(ref, x)
        return ref
    if name == "index_put":
        key, target, uniq = _key_and_target(g, x)
        v = _value_for(g, target, info.dtype)
        acc = draw(st.booleans()) or not uniq  # which duplicate wins is unspecified
        if acc and key == () and SKIP_EMPTY_KEY_ACCUMULATE:
            raise Reject
        return g.add(S(".index_put", x, key, v, accumulate=acc))
    if name in ("gather", "scatter_add"):
        if nd == 0:
            raise Reject
        d = draw(st.integers(0, nd - 1))
        if name == "gather":
            ishape = tuple(draw(st.integers(0, n)) if k != d else draw(st.integers(0, 3))
                           for k, n in enumerate(info.shape))
            src = None
        else:
            src = g.pick(lambda i: len(i.shape) == nd and (
                i.dtype == info.dtype if not g.grad else i.dtype == F64))
            sshape = g.infos[src].shape
            ishape = tuple(draw(st.integers(0, min(s, n) if k != d else s))
                           for k, (s, n) in enumerate(zip(sshape, info.shape)))
        if info.shape[d] == 0 and int(np.prod(ishape)):
            raise Reject
        idx = _const(g, ishape, draw(st.sampled_from([I64, I32])), 0, max(info.shape[d] - 1, 0))
        if name == "gather":
            return g.add(S("gather", x, idx, dim=d))
        if info.dtype.kind in "iu" and _maxabs(g.value(x)) + _maxabs(g.value(src)) * 4 > 2 ** 30:
            raise Reject
        return g.add(S("scatter_add", x, idx, src, dim=d))
    raise Reject


def _key_and_target(g: Gen, x: V):
    """An index key into ``x`` (basic, or with int tensors) and the indexed shape."""
    draw = g.draw
    info = g.infos[x]
    nd = len(info.shape)
    if nd and draw(st.booleans()) and info.shape[0]:
        n = info.shape[0]
        uniq = draw(st.booleans())
        if uniq:  # distinct positions: assignment order cannot matter
            k = draw(st.integers(0, n))
            vals = np.array(draw(st.permutations(range(n)))[:k], dtype=np.int64)
            idx = g.add(S("tensor", value=vals))
        else:
            idx = _const(g, draw(shapes(max_rank=1)), I64, -n, n - 1)
            vals = g.value(idx) % n
            uniq = len(np.unique(vals.reshape(-1))) == vals.size
        key = (idx,)
    else:
        key, uniq = _basic_key(draw, info.shape), True
    try:
        target = g.env[x][_resolve_key(g, key)].shape
    except Exception:
        raise Reject from None
    return key, target, uniq


def _resolve_key(g, key):
    return tuple(g.env[k] if isinstance(k, V) else k for k in key)


def _value_for(g: Gen, target, dtype):
    """A value that broadcasts to ``target``: a scalar, a pool value or a fresh constant."""
    draw = g.draw
    choice = draw(st.integers(0, 2))
    if choice == 0 and not g.grad:
        return _scalar(draw, ("int", "bool") if dtype.kind in "iub" else ("int", "float"))
    if choice == 1:
        def fits(i):
            try:
                return ops.broadcast_shapes("fuzz", i.shape, target) == tuple(target) and (
                    not g.grad or i.dtype == F64)
            except ShapeError:
                return False
        if g.live(fits):
            return g.pick(fits)
    shape = tuple(target[draw(st.integers(0, len(target))):])
    return _const(g, shape, dtype if not g.grad else F64)


def build_matmul(g: Gen, name: str):
    draw = g.draw
    pred = (lambda i: i.dtype == F64 and len(i.shape) >= 1) if g.grad else (
        lambda i: len(i.shape) >= 1 and i.dtype != B)
    a = g.pick(pred)
    ia = g.infos[a]
    k = ia.shape[-1]
    choice = draw(st.integers(0, 2))
    if choice == 0 and len(ia.shape) >= 2:
        b = g.add(S("permute", a, perm=tuple(range(len(ia.shape) - 2)) +
                    (len(ia.shape) - 1, len(ia.shape) - 2)))
        g.mark_view(b, a)
    else:
        def fits(i):
            return len(i.shape) >= 1 and (i.shape[0] if len(i.shape) == 1 else i.shape[-2]) == k \
                and (i.dtype == F64 if g.grad else i.dtype != B)
        if choice == 1 and g.live(fits):
            b = g.pick(fits)
        else:
            shape = draw(st.sampled_from([(k,), (k, 2), (k, 3), (2, k, 1)]))
            b = _const(g, shape, F64 if g.grad else draw(st.sampled_from([ia.dtype, F32, I64])))
    ib = g.infos[b]
    if D.promote_types(ia.dtype, ib.dtype).kind in "iu":
        if _maxabs(g.value(a)) * _maxabs(g.value(b)) * max(k, 1) > 2 ** 30:
            raise Reject
    return g.add(S(".__matmul__", a, b))


def _four_d(g: Gen) -> V:
    """A 4-d (N, C, H, W) value: one from the pool, or a reshape of one."""
    pred = (lambda i: i.dtype == F64) if g.grad else (lambda i: True)
    four = g.live(lambda i: len(i.shape) == 4 and pred(i))
    if four and g.draw(st.booleans()):
        return g.pick(lambda i: len(i.shape) == 4 and pred(i))
    x = g.pick(lambda i: i.size > 0 and pred(i))
    n = g.infos[x].size
    h = g.draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    c = g.draw(st.sampled_from([d for d in range(1, h + 1) if h % d == 0]))
    ref = g.add(S("reshape", x, shape=(1, c, h // c, n // h)))
    g.mark_view(ref, x, "maybe")
    return ref


def _unfold(g: Gen) -> V:
    draw = g.draw
    x = _four_d(g)
    attrs = dict(kernel=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
                 dilation=(draw(st.integers(1, 2)),) * 2, padding=(draw(st.integers(0, 1)),) * 2,
                 stride=(draw(st.integers(1, 2)),) * 2)
    return g.add(S("unfold", x, **attrs))


def _max_pool(g: Gen, name: str) -> V:
    """max_pool2d, or its gradient: of the pooled values (a gradient of the right shape) with
    respect to an exact image (which window element is the maximum may not differ by rounding)."""
    draw = g.draw
    if g.grad == "smooth":
        raise Reject
    x = _four_d(g)
    if g.infos[x].dtype == B or name == "max_pool2d_grad" and (
            not g.infos[x].exact or g.infos[x].dtype.kind != "f"):
        raise Reject
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    attrs = dict(kernel=kernel, dilation=(draw(st.integers(1, 2)),) * 2,
                 padding=tuple(draw(st.integers(0, k // 2)) for k in kernel),
                 stride=(draw(st.integers(1, 2)),) * 2)
    try:
        ops.OPS["max_pool2d"].infer([(g.infos[x].shape, g.infos[x].dtype)], **attrs)
    except ShapeError:
        raise Reject from None
    pooled = g.add(S("max_pool2d", x, **attrs))
    if name == "max_pool2d":
        return pooled
    return g.add(S("max_pool2d_grad", pooled, x, **attrs))


def build_window(g: Gen, name: str):
    draw = g.draw
    if name == "unfold":
        return _unfold(g)
    if name in ("max_pool2d", "max_pool2d_grad"):
        return _max_pool(g, name)
    three = lambda i: len(i.shape) == 3 and (i.dtype == F64 if g.grad else True)  # noqa: E731
    x = g.pick(three) if g.live(three) and draw(st.booleans()) else _unfold(g)
    n, ckk, L = g.infos[x].shape
    combos = []
    for kh in (1, 2):
        for kw in (1, 2):
            if ckk % (kh * kw):
                continue
            for h in range(1, 6):
                for w in range(1, 6):
                    for s in (1, 2):
                        for p in (0, 1):
                            try:
                                ops.OPS["fold"].infer([((n, ckk, L), F32)], output_size=(h, w),
                                                      kernel=(kh, kw), dilation=(1, 1),
                                                      padding=(p, p), stride=(s, s))
                            except ShapeError:
                                continue
                            combos.append(((h, w), (kh, kw), (p, p), (s, s)))
    if not combos:
        raise Reject
    out, kernel, pad, stride = draw(st.sampled_from(combos))
    return g.add(S("fold", x, output_size=out, kernel=kernel, dilation=(1, 1), padding=pad,
                   stride=stride))


def build_random(g: Gen, name: str):
    if g.grad:
        raise Reject
    draw = g.draw
    shape = draw(shapes())
    if name == "randint":
        return g.add(S("randint", shape=shape, dtype=draw(st.sampled_from([I64, I32])), low=-3,
                       high=4))
    return g.add(S(name, shape=shape, dtype=draw(st.sampled_from([F32, F64]))))


INPLACE = [".add_", ".sub_", ".mul_", ".div_", ".clamp_", ".copy_", ".fill_", ".zero_",
           ".__setitem__", ".masked_fill_"]


def build_inplace(g: Gen, name: str):
    """An in-place update of an input, a clone, or a view of either."""
    draw = g.draw
    # NOTE: in-place updates of views are refused inside traced functions (a clear TraceError:
    # write through the base instead), so views are only ever written through their base
    where = draw(st.sampled_from(["clone", "input"] if not g.grad else ["clone"]))
    writable = lambda i: i.writeable and i.view != "maybe" and i.alive  # noqa: E731
    if where == "input":
        cands = [V(k) for k in range(len(g.prog.inputs)) if writable(g.infos[k])]
        if not cands:
            raise Reject
        t = draw(st.sampled_from(cands))
    elif where == "clone":
        src = g.pick(_grad_ok(g)) if g.grad else g.pick()
        t = g.add(S(".clone", src))
        g.infos[t].root = t
    else:
        base = g.pick(lambda i: writable(i) and i.root is not None and len(i.shape) >= 1)
        t = g.add(S(".__getitem__", base, _basic_key(draw, g.infos[base].shape)))
        g.mark_view(t, base)
    info = g.infos[t]
    if name in (".add_", ".sub_", ".mul_", ".div_"):
        other = _operand(g, info.shape, name[1:-1])
        if g.grad and isinstance(other, V) and other == t:
            raise Reject  # c.add_(c): eager autograd refuses it (test_autograd's strict xfail)
        args = [t, other]
        _check_elementwise(g, name[1:-1], args)
        avals = [(g.infos[a].shape, g.infos[a].dtype) if isinstance(a, V) else a for a in args]
        if SKIP_INPLACE_WIDENING and ops.OPS[name[1:-1]].infer(avals)[1] != info.dtype:
            raise Reject
        if g.grad and name == ".div_":
            args[1] = _positive(g, other) if isinstance(other, V) else 2.0
        step = S(name, *args)
    elif name == ".clamp_":
        lo = draw(st.sampled_from([-1, 0, 0.5] if info.dtype.kind == "f" else [-1, 0, 2]))
        step = S(name, t, min=lo)
    elif name == ".copy_":
        src = g.pick(lambda i: len(i.shape) <= len(info.shape) and _broadcastable(info.shape)(i)
                     and (i.dtype == F64 if g.grad else True) and (
                         i.root is None or i.root != info.root))  # x.copy_(x): see regressions
        si = g.infos[src]
        if si.dtype.kind == "f" and info.dtype.kind in "iub" and (
                not si.exact or si.special or _maxabs(g.value(src)) >= 2 ** 30):
            raise Reject
        step = S(name, t, src)
    elif name == ".fill_":
        step = S(name, t, _scalar(draw, ("int",) if info.dtype.kind in "iub" else ("float",)))
    elif name == ".zero_":
        step = S(name, t)
    elif name == ".masked_fill_":
        bools = lambda i: i.dtype == B and _broadcastable(info.shape)(i)  # noqa: E731
        mask = g.pick(bools) if g.live(bools) and draw(st.booleans()) else _const(
            g, info.shape[draw(st.integers(0, len(info.shape))):], B)
        step = S(name, t, mask, _scalar(draw, ("int",) if info.dtype.kind in "iub" else
                                         ("float",)))
    else:  # x[key] = value
        key, target, uniq = _key_and_target(g, t)
        if not uniq:
            raise Reject  # which of the duplicate positions' values wins is unspecified
        step = S(name, t, key, _value_for(g, target, info.dtype))
    ref = g.add(step)
    g.wrote(t, ref)
    return ref


BUILDERS = {
    ops.ELEMENTWISE: build_elementwise, ops.REDUCE: build_reduce, ops.SHAPE: build_shape,
    ops.INDEX: build_index, ops.LINALG: build_matmul, ops.WINDOW: build_window,
    "random": build_random,
}
# how often each family is drawn (in-place updates and constants are families too)
WEIGHTS = {ops.ELEMENTWISE: 10, ops.REDUCE: 4, ops.SHAPE: 4, ops.INDEX: 4, ops.LINALG: 1,
           ops.WINDOW: 1, "random": 1, "inplace": 4, "const": 1}


# rows drawn through Tensor methods: the step that applies them
_STEP_OPS = {"getitem": ".__getitem__", "index_put": ".index_put", "matmul": ".__matmul__"}


def step_op(name: str) -> str:
    return _STEP_OPS.get(name, name)


def family_names(kind: str) -> list:
    if kind == "inplace":
        return INPLACE
    if kind == "const":
        return ["tensor"]
    return [n for n in rows(kind) if n not in NOT_BUILT]


# rows no builder draws: graph-only ops (const is the "tensor" step, fused is made by the fuse
# pass); test_differential.test_every_row_is_reached checks the rest are all reached
# all_reduce needs a process group: tests/distributed runs it on two ranks
NOT_BUILT = {"const", "fused", "all_reduce"}
_KINDS = [k for k, w in WEIGHTS.items() for _ in range(w)]


@st.composite
def programs(draw, max_steps=6, grad: str | None = None, first: str | None = None):
    """A random program (see the module docstring). ``grad``: None for forward fuzzing,
    ``"smooth"`` for float64 programs of smooth ops (finite differences apply), ``"any"`` for
    float64 programs of differentiable ops (kinks allowed: vjps are compared, not FD).
    ``first``: a (kind, name) family member tried first (a few times) before the random steps."""
    if grad:
        n_in = draw(st.integers(1, 2))
        inputs = []
        for _ in range(n_in):
            shape = draw(shapes(allow_empty=False))
            values = draw(hnp.arrays(F64, shape, elements=st.floats(-2, 2).filter(
                lambda v: abs(v) > 0.1 and all(abs(v - k) > 0.05 for k in (-1, 1)))))
            inputs.append(In(shape, "float64", draw(st.sampled_from(["c", "T", "s", "o"])),
                             values.tolist()))
    else:
        inputs = draw(st.lists(input_specs(), min_size=1, max_size=3))
    g = Gen(draw, inputs, grad)
    n_steps = draw(st.integers(1, max_steps))
    tries = 0
    while len([s for s in g.stats["steps"]]) < n_steps and tries < 4 * max_steps:
        tries += 1
        if first is not None and tries <= 8 and step_op(first[1]) not in g.stats["steps"]:
            kind, name = first
        else:
            kind = draw(st.sampled_from(_KINDS))
            name = draw(st.sampled_from(family_names(kind)))
        try:
            if kind == "inplace":
                build_inplace(g, name)
            elif kind == "const":
                if g.grad:
                    raise Reject
                dtype = draw(st.sampled_from(DTYPES))
                _const(g, draw(shapes()), dtype)
            else:
                builder = BUILDERS.get(kind)
                if builder is None:
                    raise Reject
                builder(g, name)
        except Reject:
            g.stats["rejected"] += 1
            g.stats.setdefault("rejects", []).append(name)
    _choose_outputs(g)
    g.prog.meta = g.stats
    g.prog.meta["infos"] = g.infos
    return g.prog


def _feeds_sum(g: Gen, ref) -> bool:
    return any(ops.OPS.get(s.op) is not None and ops.OPS[s.op].kind == ops.REDUCE and
               ref in _refs(s.args) for s in g.prog.steps)


def _choose_outputs(g: Gen):
    draw = g.draw
    cands = g.live(lambda i: not (g.grad and i.dtype != F64))
    if not cands:
        cands = [V(0)]
    last = V(len(g.infos) - 1)
    n = draw(st.integers(1, 3))
    outs = [last] if last in cands else []
    while len(outs) < n:
        r = draw(st.sampled_from(cands))
        outs.append(r)
    if len(outs) > 1:
        # known, fixed elsewhere: a 0-d output that also feeds a sum in a multi-output graph
        outs = [r for r in outs if not (g.infos[r].shape == () and _feeds_sum(g, r))] or outs[:1]
    g.prog.outputs = outs
    g.prog.bare = len(outs) == 1 and draw(st.booleans())
