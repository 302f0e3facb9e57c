"""Lower a fused graph to readable numba source: one ``@numba.njit`` kernel per fused group (and
per unfold, fold, argmax, gather or scatter_add node, see ``cpu_nodes``) and one entry function
for the whole graph that allocates buffers and calls the kernels (and BLAS, through ``np.dot``,
for matmul), so a compiled call is one dispatch from Python.

The source is generic over sizes: every size that is not 1 is read from the ``sz`` tuple the
entry receives, so a new batch size gives the same source and reuses the compiled machine code.
What the source does depend on — dtypes, ranks, which dims are 1 (broadcasting) — is the kernel
key.

>>> print(lower(fused_graph).source)                                 # doctest: +SKIP
@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def k0_add_relu(a0, a1, out, n0, n1):
    # %3 add, %4 relu
    ...
"""

from __future__ import annotations

import ast
import builtins
import functools
import math
from dataclasses import dataclass, field

import numpy as np

from tracejit import ops
from tracejit.ir import Graph, Node, Var, defined_vars
from tracejit.passes.fuse import reduces
from tracejit.runtime import cache

from . import cpu_nodes, mathlib, prelude

# the source this renderer emits calls these modules' numba functions (see HEADER)
cache.register_helpers(mathlib, prelude)

MAX_JIT_ENTRY_NODES = 200  # larger graphs get a plain Python entry (see lower())
PARALLEL_MIN = 1 << 15  # elements: below this a kernel runs serially (threads cost more)
SUM_BLOCK = 1024  # float32 sums add blocks this long in float32, then the blocks in float64
FASTMATH_DEFAULT = {"reassoc", "contract"}  # keeps NaN/Inf semantics; fastmath=True drops them
# ops LLVM folds in pairs under ``reassoc`` (see _Kernel._reassociates)
_FOLDABLE = frozenset({"exp", "log", "log1p", "expm1", "pow", "sqrt", "rsqrt"})

_NP_DTYPE = {"float32": "np.float32", "float64": "np.float64", "int32": "np.int32",
             "int64": "np.int64", "bool": "np.bool_"}
_SHORT = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "bool"}


def generic_type(v: Var) -> str:
    """A Var's type with sizes erased (1s kept): ``f32[n,1]``."""
    dims = ",".join("1" if d == 1 else "n" for d in v.shape)
    return f"{_SHORT[v.dtype.name]}[{dims}]"


def literal(x, dtype=None) -> str:
    """Source for a Python scalar, typed as ``dtype`` (so float32 math stays float32)."""
    if isinstance(x, (bool, np.bool_)) and (dtype is None or dtype == np.bool_):
        return "True" if x else "False"
    dtype = np.dtype(dtype) if dtype is not None else None
    if dtype is None or dtype.kind == "f":
        v = float(x)
        text = "np.inf" if v == math.inf else "-np.inf" if v == -math.inf else \
            "np.nan" if v != v else repr(v)
        return f"{_NP_DTYPE[(dtype or np.dtype('float64')).name]}({text})"
    if dtype == np.bool_:
        return "True" if x else "False"
    return f"{_NP_DTYPE[dtype.name]}({int(x)})"


class Unsupported(Exception):
    """A node the code generator does not lower (it runs through numpy instead)."""


@dataclass
class Lowered:
    """Generated source and what the runtime passes to its entry function."""

    source: str
    entry: str
    sizes: tuple  # the concrete values of sz[...]
    consts: list  # arrays passed after the graph inputs
    fallbacks: list  # callables the Python entry uses for nodes numba does not run
    jit_entry: bool  # the entry itself is @njit (one dispatch) or plain Python
    kernels: list = field(default_factory=list)
    buffers: list = field(default_factory=list)  # Buffer, in entry-parameter order


class _Sizes:
    """Hands out ``sz[k]`` for each size that is not 1, in emission order (never deduplicated
    by value, so coincidentally equal sizes do not change the source)."""

    def __init__(self):
        self.values: list = []

    def ref(self, n: int) -> str:
        if n == 1:
            return "1"
        self.values.append(int(n))
        return f"sz[{len(self.values) - 1}]"

    def shape(self, shape) -> str:
        refs = [self.ref(n) for n in shape]
        return "(" + ", ".join(refs) + ("," if len(refs) == 1 else "") + ")"


# ---------------------------------------------------------------------------- kernels


class _Kernel:
    """Source of one fused group's kernel."""

    def __init__(self, node: Node, fastmath, parallel: bool):
        attrs = node.attr_dict
        self.name = attrs["kernel"]
        self.body = body = attrs["body"]
        self.fastmath = fastmath
        self.root = body.nodes[-1]
        self.full, self.row_dims = attrs["full"], attrs["row_dims"]
        self.rank = len(self.full)
        # kernels traced at sizes too small for threads are emitted serial only: numba compiles
        # them several times faster (no parfor pass), and a size past the threshold is a
        # different source, compiled once
        self.parallel = parallel and self.rank > 0 and \
            int(np.prod(self.full, dtype=np.int64)) >= PARALLEL_MIN
        self.row_scalar = tuple(1 if i in self.row_dims else n for i, n in enumerate(self.full))
        self.args = [f"a{i}" for i in range(len(body.inputs))]
        self.arg_of = {v.id: a for v, a in zip(body.inputs, self.args)}
        self.producer = {n.out.id: n for n in body.nodes}
        # a multi-output kernel (plain elementwise only) also writes these members
        self.extras = list(body.outputs[1:])
        self.outs = ["out"] + [f"out{k + 1}" for k in range(len(self.extras))]
        # integer // and % by zero: counted in the loops, raised after them (see _flush)
        self.zero_ops: list = []
        self._pending: list = []

    # -- operand access
    def _read(self, v: Var, vector: bool) -> str:
        if v.id in self.arg_of:
            lead = self.rank - len(v.shape)
            if len(v.shape) == 0:  # read once, before the loops (see source())
                return f"s_{self.arg_of[v.id]}"
            idx = []
            for k, n in enumerate(v.shape):
                d = lead + k
                idx.append("0" if n == 1 or (not vector and d in self.row_dims) else f"i{d}")
            return f"{self.arg_of[v.id]}[{', '.join(idx)}]"
        node = self.producer[v.id]
        return f"{'v' if self._is_vector(node) else 'r'}{v.id}"

    def _is_vector(self, node: Node) -> bool:
        if not self.row_dims:
            return True
        if reduces(node):
            return False
        return node.out.shape == self.full and self.full != self.row_scalar

    def _operand(self, x, vector: bool) -> tuple:
        """(source, dtype, rank class) of an operand."""
        if isinstance(x, Var):
            return self._read(x, vector), x.dtype, (2 if x.shape else 1)
        return x, None, 0

    def _expr(self, node: Node, vector: bool) -> str:
        op = ops.OPS[node.op]
        attrs = node.attr_dict
        operands = [self._operand(x, vector) for x in node.inputs]
        out_dt = node.out.dtype
        if node.op in ("copy", "detach"):
            return operands[0][0]
        if node.op == "cast":
            return _cast(operands[0][0], operands[0][1], attrs["dtype"])
        if op.reduction and not reduces(node):
            return _cast(operands[0][0], operands[0][1], out_dt)  # over no dims: x itself
        if node.op == "clamp":
            src, dt, _ = operands[0]
            t = out_dt
            code = _cast(src, dt, t)
            if attrs.get("min") is not None:
                code = f"maximum({code}, {literal(attrs['min'], t)})"
            if attrs.get("max") is not None:
                code = f"minimum({code}, {literal(attrs['max'], t)})"
            return code
        if op.expr is None or op.dtype_rule is None:
            raise Unsupported(node.op)
        keys = tuple((dt, rc) if dt is not None else ops._key(src)
                     for src, dt, rc in operands)
        casts, result = ops.elementwise_plan(op, keys)
        codes = []
        for (src, dt, _), c in zip(operands, casts):
            codes.append(literal(src, c) if dt is None else _cast(src, dt, c))
        expr = spelled(op.expr)
        if node.op == "pow" and operands[1][2] < 2:
            # one exponent for every element: numpy's (and torch's) square root for 0.5
            expr = spelled("power_scalar({0}, {1})")
        code = expr.format(*codes)
        if node.op in ("floordiv", "remainder") and np.dtype(casts[1]).kind in "iu" and \
                not (operands[1][1] is None and operands[1][0] != 0):
            self._pending.append((node.op, codes[1]))
        if result != casts[0] and result != np.bool_:
            code = _cast(code, casts[0], result)
        return code

    def _reassociates(self) -> bool:
        """May this kernel's float arithmetic be reassociated? Only reductions need it (to
        vectorise their accumulation), and only where LLVM has no transcendental pair to fold:
        with ``reassoc`` it rewrites exp(log(x)) to x (nan at x < 0), log(exp(x)) to x (inf past
        overflow) and exp(a) * exp(b) to exp(a + b). Numba applies a kernel's flags to what it
        inlines too, so helpers cannot opt out: the kernel must."""
        if not self.row_dims:
            return False
        def folds(x):
            node = self.producer.get(x.id) if isinstance(x, Var) else None
            return node is not None and node.op in _FOLDABLE
        for node in self.body.nodes:
            if node.op in _FOLDABLE and any(folds(x) for x in node.inputs):
                return False
            if node.op in ("mul", "div") and all(folds(x) for x in node.inputs):
                return False
        return True

    # -- emission
    def source(self) -> str:
        names = " ".join(dict.fromkeys(n.op for n in self.body.nodes))
        comment = ", ".join(f"%{n.out.id} {n.op}" for n in self.body.nodes)
        dims = [f"n{k}" for k in range(self.rank)]
        params = ", ".join(self.args + self.outs + dims)
        fm = "False" if not self.fastmath else \
            "FASTMATH" if self._reassociates() else "FASTMATH_NO_REASSOC"
        # error_model="numpy": 1/0 is inf, as in numpy, not a ZeroDivisionError
        lines = [f"@numba.njit(parallel={self.parallel}, cache=True, fastmath={fm}, "
                 f"error_model='numpy')",
                 f"def {self.name}({params}):",
                 f"    # {names}: {comment}",
                 "    # " + ", ".join(f"a{i}: {generic_type(v)}"
                                       for i, v in enumerate(self.body.inputs)) +
                 " -> " + ", ".join(f"{o}: {generic_type(v)}" for o, v in
                                    zip(self.outs, [self.root.out] + self.extras))]
        for v, a in zip(self.body.inputs, self.args):
            if not v.shape:  # NOTE: numba's parfors cannot index 0-d arrays inside prange
                lines.append(f"    s_{a} = {a}[()]")
        outer = [k for k in range(self.rank) if k not in self.row_dims]
        total = " * ".join(dims) or "1"
        if self.parallel and (outer or self.row_dims):
            body = [f"    if {total} >= {PARALLEL_MIN}:"]
            body += self._loops(outer, parallel=True, indent=8)
            body.append("    else:")
            body += self._loops(outer, parallel=False, indent=8)
        else:
            body = self._loops(outer, parallel=False, indent=4)
        for op in self.zero_ops:
            lines.append(f"    zero_{op} = 0  # integer {op} by zero: counted, raised below")
        lines += body
        for op in self.zero_ops:
            lines.append(f"    if zero_{op}:")
            lines.append(f"        raise RuntimeError('{op}: ZeroDivisionError: integer "
                         f"division by zero')")
        return "\n".join(lines) + "\n"

    def _loops(self, outer, parallel: bool, indent: int) -> list:
        lines = []
        pad = indent
        for j, k in enumerate(outer):
            rng = "numba.prange" if parallel and j == 0 else "range"
            lines.append(" " * pad + f"for i{k} in {rng}(n{k}):")
            pad += 4
        lines += self._row_body(pad, parallel_reduce=parallel and not outer)
        return lines

    def _vector_statements(self, target: Var, pad: int, done: set) -> list:
        """Statements computing the vector values ``target`` needs, innermost loop body."""
        lines = []
        node = self.producer.get(target.id)
        if node is None or not self._is_vector(node) or target.id in done:
            return lines
        for x in node.inputs:
            if isinstance(x, Var):
                lines += self._vector_statements(x, pad, done)
        done.add(target.id)
        lines.append(" " * pad + f"v{node.out.id} = {self._expr(node, True)}  # {node.op}")
        return lines + self._flush(pad)

    def _flush(self, pad: int) -> list:
        """Count the zero divisors of the integer // or % just emitted.

        NOTE: an exception raised inside a numba.prange loop is lost (the kernel returns as if
        nothing happened), so the loops only count, a reduction numba parallelises, and the
        kernel raises after them, as eager does (ops._int_div_checked)."""
        lines = []
        for op, divisor in self._pending:
            if op not in self.zero_ops:
                self.zero_ops.append(op)
            lines.append(" " * pad + f"zero_{op} += {divisor} == 0")
        self._pending.clear()
        return lines

    def _inner(self, pad: int, parallel: bool) -> tuple:
        lines = []
        for j, k in enumerate(self.row_dims):
            rng = "numba.prange" if parallel and j == 0 else "range"
            lines.append(" " * pad + f"for i{k} in {rng}(n{k}):")
            pad += 4
        return lines, pad

    def _out_index(self, vector: bool) -> str:
        out = self.root.out
        if len(out.shape) == 0:
            return "()"
        if vector or len(out.shape) == self.rank:
            idx = [("0" if (not vector and k in self.row_dims) else f"i{k}")
                   for k in range(self.rank)]
        else:  # a reduction without keepdim: the row dims are gone
            idx = [f"i{k}" for k in range(self.rank) if k not in self.row_dims]
        return ", ".join(idx)

    def _row_body(self, pad: int, parallel_reduce: bool) -> list:
        lines = []
        if not self.row_dims:  # plain elementwise
            done: set = set()
            results = [self.root.out] + self.extras
            for v in results:
                lines += self._vector_statements(v, pad, done)
            for o, v in zip(self.outs, results):
                lines.append(" " * pad + f"{o}[{self._out_index(True)}] = v{v.id}")
            return lines
        stash = self._stash()
        for node in self.body.nodes:
            if self._is_vector(node):
                continue
            if reduces(node):
                lines += self._reduction(node, pad, parallel_reduce and node.op in ("sum",
                                                                                    "prod"),
                                         stash if node.inputs[0] is stash else None)
            else:
                lines.append(" " * pad + f"r{node.out.id} = {self._expr(node, False)}  "
                                         f"# {node.op}")
                lines += self._flush(pad)
        if self._is_vector(self.root):
            inner, ipad = self._inner(pad, False)
            lines += inner
            done = set()
            if stash is not None:  # computed by the last reduction's loop: read it back
                lines.append(" " * ipad + f"v{stash.id} = out[{self._out_index(True)}]")
                done.add(stash.id)
            lines += self._vector_statements(self.root.out, ipad, done)
            lines.append(" " * ipad + f"out[{self._out_index(True)}] = v{self.root.out.id}")
        else:
            lines.append(" " * pad + f"out[{self._out_index(False)}] = r{self.root.out.id}")
        return lines

    def _stash(self):
        """A vector value both the last reduction and the output need (softmax's exp): the
        reduction's loop writes it into ``out`` and the output loop reads it back instead of
        computing it again. None when there is no such value."""
        reductions = [n for n in self.body.nodes if reduces(n)]
        if not reductions or not self._is_vector(self.root):
            return None
        x = reductions[-1].inputs[0]
        node = self.producer.get(x.id)
        if node is None or not self._is_vector(node) or x.dtype != self.root.out.dtype:
            return None
        # the root must need x through vector values only
        stack, seen = [self.root.out], set()
        while stack:
            v = stack.pop()
            if v.id == x.id:
                return x
            n = self.producer.get(v.id)
            if n is None or v.id in seen or not self._is_vector(n):
                continue
            seen.add(v.id)
            stack.extend(i for i in n.inputs if isinstance(i, Var))
        return None

    def _reduction(self, node: Node, pad: int, parallel: bool, stash=None,
                   short: bool = False) -> list:
        acc = f"r{node.out.id}"
        dt = node.out.dtype
        x = node.inputs[0]
        init = {"sum": 0, "prod": 1}.get(node.op)
        if init is None:
            if dt.kind == "f":
                init = -math.inf if node.op == "amax" else math.inf
            elif dt == np.bool_:
                init = node.op != "amax"
            else:
                info = np.iinfo(dt)
                init = info.min if node.op == "amax" else info.max
        if node.op == "sum" and dt == np.float32 and not short:
            # a row of one block sums in float32 as below, bit for bit the blocked result
            length = " * ".join(f"n{d}" for d in self.row_dims)
            return ([" " * pad + f"if {length} <= {SUM_BLOCK}:"] +
                    self._reduction(node, pad + 4, parallel, stash, short=True) +
                    [" " * pad + "else:"] +
                    self._blocked_sum(node, pad + 4, parallel, stash))
        lines = [" " * pad + f"{acc} = {literal(init, dt)}  # {node.op} over dims "
                              f"{self.row_dims}"]
        inner, ipad = self._inner(pad, parallel)
        lines += inner
        lines += self._vector_statements(x, ipad, set())
        if stash is not None:
            lines.append(" " * ipad + f"out[{self._out_index(True)}] = v{x.id}  # kept for "
                                      f"the output loop")
        val = _cast(self._read(x, True), x.dtype, dt)
        if node.op == "sum":
            lines.append(" " * ipad + f"{acc} += {val}")
        elif node.op == "prod":
            lines.append(" " * ipad + f"{acc} *= {val}")
        else:
            # the prelude's maximum/minimum: NaN propagates as in numpy, and for floats they are
            # llvm.maximum/minimum, whose reductions LLVM vectorises
            fn = "maximum" if node.op == "amax" else "minimum"
            lines.append(" " * ipad + f"{acc} = {fn}({acc}, {val})")
        return lines

    def _blocked_sum(self, node: Node, pad: int, parallel: bool, stash=None) -> list:
        """A float32 sum: the last row dim walks blocks of SUM_BLOCK elements, each summed in
        float32 (LLVM keeps the block's loop vectorised, several partial sums wide), and the
        block totals are added in float64. One float32 running total over a long row loses
        digits as it grows (relative error ~1e-4 at 1M elements where nothing vectorises, a
        strided or column sum); blocks bound that by the block length, as numpy's pairwise
        sum does. Rows of one block (softmax, layer_norm) take the plain loop (_reduction): the
        block loop's bookkeeping made layer_norm over rows of 64 1.5x slower."""
        k = self.row_dims[-1]
        x = node.inputs[0]
        total, part = f"s{node.out.id}", f"p{node.out.id}"
        lines = [" " * pad + f"{total} = np.float64(0)  # sum over dims {self.row_dims} "
                              f"(blocks of {SUM_BLOCK} in float32, totals in float64)"]
        ipad = pad
        for j, d in enumerate(self.row_dims[:-1]):
            rng = "numba.prange" if parallel and j == 0 else "range"
            lines.append(" " * ipad + f"for i{d} in {rng}(n{d}):")
            ipad += 4
        rng = "numba.prange" if parallel and len(self.row_dims) == 1 else "range"
        # NOTE: unsigned bounds: inside a numba.prange body a signed index computed from the
        # block number keeps numba's negative-index wraparound, and LLVM does not vectorise
        lo, hi = f"b{k} * {SUM_BLOCK}", f"min(b{k} * {SUM_BLOCK} + {SUM_BLOCK}, n{k})"
        lines += [" " * ipad + f"for b{k} in {rng}((n{k} + {SUM_BLOCK - 1}) // {SUM_BLOCK}):",
                  " " * (ipad + 4) + f"{part} = np.float32(0)",
                  " " * (ipad + 4) + f"for i{k} in range(np.uint64({lo}), np.uint64({hi})):"]
        body_pad = ipad + 8
        lines += self._vector_statements(x, body_pad, set())
        if stash is not None:
            lines.append(" " * body_pad + f"out[{self._out_index(True)}] = v{x.id}  # kept for "
                                          f"the output loop")
        lines.append(" " * body_pad + f"{part} += {_cast(self._read(x, True), x.dtype, 'float32')}")
        lines.append(" " * (ipad + 4) + f"{total} += np.float64({part})")
        lines.append(" " * pad + f"r{node.out.id} = np.float32({total})")
        return lines


def _cast(code: str, src, dst) -> str:
    if src is None or np.dtype(src) == np.dtype(dst):
        return code
    dst = np.dtype(dst)
    if dst == np.bool_:
        return f"({code} != 0)"
    return f"{_NP_DTYPE[dst.name]}({code})"


# ---------------------------------------------------------------------------- entry


# NOTE: the header's text is pinned by tests/codegen/golden; the names it binds are checked
# against CALLS below (unbound_calls), which derives them from the op table.
HEADER = '''"""Generated by tracejit (codegen/cpu.py): a kernel per fused group and an entry
function. Kernel comments name the IR nodes they compute; sizes are runtime values (sz)."""
import math

import numba
import numpy as np

from tracejit.codegen.prelude import (ceil, floor, floordiv, isfinite, isnan, maximum, minimum,
                                      power, power_scalar, relu, remainder, round, rsqrt,
                                      sign)
from tracejit.codegen.prelude import {mathset} as _math

exp, log, log1p, expm1, sqrt = _math.exp, _math.log, _math.log1p, _math.expm1, _math.sqrt
sin, cos, tan, tanh = _math.sin, _math.cos, _math.tan, _math.tanh
sigmoid, erf = _math.sigmoid, _math.erf
FASTMATH = {fastmath}
FASTMATH_NO_REASSOC = {no_reassoc}  # kernels without reductions, or with a foldable pair
'''

# How generated source calls each function the op table's ``expr`` templates name
# (``ops.template_calls()``) and the ones this module writes itself (the reductions' and clamp's
# maximum/minimum, pow's power_scalar). Every name is by default the helper of the same name
# the header binds (codegen/prelude.py, or its FAST/PRECISE set for prelude.TRANSCENDENTAL);
# this target's overrides follow. A primitive whose template calls a new name needs one line
# here, or a prelude helper and its name in HEADER.
CALLS: dict = {
    **{name: name for name in ops.template_calls()},
    "maximum": "maximum", "minimum": "minimum", "power_scalar": "power_scalar",
    "clamp": None, "cast": None,  # written out by _Kernel._expr, never called
    "sinh": "math.sinh", "cosh": "math.cosh",  # numba's libm call (sinhf for float32)
}


def _bound_names(header: str) -> frozenset:
    """The names a generated module's header binds (imports and assignments)."""
    bound = set()
    for stmt in ast.parse(header).body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in stmt.names)
        elif isinstance(stmt, ast.Assign):
            bound.update(n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return frozenset(bound)


_BOUND = _bound_names(HEADER.format(mathset="FAST", fastmath="set()", no_reassoc="set()"))


def unbound_calls() -> list:
    """Names a template calls that generated source cannot (no CALLS line, or a spelling the
    header does not bind): each op calling one runs through numpy instead of a kernel."""
    names = list(ops.template_calls()) + [n for n in CALLS if n not in ops.template_calls()]
    return [n for n in names if n not in CALLS or CALLS[n] is not None and
            CALLS[n].split(".")[0] not in _BOUND and not hasattr(builtins, CALLS[n])]


@functools.lru_cache(maxsize=None)
def spelled(template: str) -> str:
    """``template`` with each call spelled as generated source calls it (see CALLS)."""
    bad = set(unbound_calls())

    def one(m):
        name = m.group(1)
        if name in bad or CALLS[name] is None:
            raise Unsupported(name)
        return CALLS[name] + "("
    return ops.CALL.sub(one, template)


def _scipy_available() -> bool:
    # NOTE: numba's np.dot calls BLAS through scipy; without scipy, matmul runs through numpy
    try:
        import scipy.linalg  # noqa: F401
    except ImportError:
        return False
    return True


_HAVE_SCIPY = _scipy_available()
POOLED_OUTPUT_MIN_BYTES = 1 << 20  # outputs at least this large come from the caching allocator


@dataclass
class Buffer:
    """An array the runtime passes to the entry: ``work`` (reused every call, in storage
    ``slot``) or ``out`` (a fresh result from the caching allocator)."""

    kind: str
    shape: tuple
    dtype: np.dtype
    slot: int = -1


def _alias_roots(graph: Graph, lowered_as_view) -> dict:
    """Var id -> ids of the buffers its array may share memory with."""
    roots: dict = {}
    for node in graph.nodes:
        ins = [x for x in node.inputs if isinstance(x, Var)]
        op = ops.OPS[node.op]
        if op.view and lowered_as_view(node):
            roots[node.out.id] = set().union(*(roots.get(x.id, {x.id}) for x in ins[:1]))
        elif not op.fresh:
            # numpy fallbacks may return views of any operand: assume they do
            roots[node.out.id] = {node.out.id}.union(*(roots.get(x.id, {x.id}) for x in ins))
        else:
            for v in defined_vars(node):
                roots[v.id] = {v.id}
    return roots


def lower(graph: Graph, *, fastmath: bool = False, precise_math: bool = False,
          parallel: bool = True) -> Lowered:
    """Source for a fused graph (see ``tracejit.passes.fuse``)."""
    fm = True if fastmath else set(FASTMATH_DEFAULT)
    sizes = _Sizes()
    names = {v.id: f"in{i}" for i, v in enumerate(graph.inputs)}
    kernels, body_lines, consts, fallbacks, buffers = [], [], [], [], []
    # NOTE: numba's compile time grows faster than linearly with a function's length: an
    # unrolled LSTM step as one @njit entry took 74 s to compile against 19 s as a Python entry
    # calling the same compiled kernels (~1 us per call, next to a 130 ms step)
    jit_entry = len(graph.nodes) <= MAX_JIT_ENTRY_NODES
    kernel_names: dict = {}  # kernel source without its name and comments -> name

    # which values may be held in reusable buffers: not outputs, nor anything an output views
    library = {n.out.id: _library(n, [f"x{i}" for i in range(len(n.inputs))], _Sizes())
               for n in graph.nodes if n.op != "fused"}
    roots = _alias_roots(graph, lambda n: library.get(n.out.id) not in (None, "const"))
    escaping = set()
    for x in graph.outputs:
        if isinstance(x, Var):
            escaping |= roots.get(x.id, {x.id})
    position = {v.id: k for k, n in enumerate(graph.nodes) for v in defined_vars(n)}
    last_use: dict = {}
    for k, node in enumerate(graph.nodes):
        for x in node.inputs:
            if isinstance(x, Var):
                for r in roots.get(x.id, {x.id}):
                    last_use[r] = k
    work = []  # (buffer index, nbytes, first, last)

    def buffer_param(v: Var) -> str | None:
        """The entry parameter holding this result, or None to allocate it in place."""
        nbytes = int(np.prod(v.shape, dtype=np.int64)) * v.dtype.itemsize
        if v.id in escaping:
            if nbytes < POOLED_OUTPUT_MIN_BYTES or v.id not in {
                    x.id for x in graph.outputs if isinstance(x, Var)}:
                return None
            buffers.append(Buffer("out", v.shape, v.dtype))
        else:
            buffers.append(Buffer("work", v.shape, v.dtype))
            k = position[v.id]
            work.append((len(buffers) - 1, nbytes, k, last_use.get(v.id, k)))
        return f"b{len(buffers) - 1}"

    def add_kernel(src: str, name: str) -> str:
        """The name to call: identical kernels (an unrolled loop's steps) are generated and
        compiled once."""
        known = kernel_names.setdefault(_kernel_key(src, name), name)
        if known == name:
            kernels.append(src)
        return known

    def allocate(v: Var, t: str) -> None:
        """The result array of a kernel or np.dot: a buffer parameter, or a fresh one."""
        buf = buffer_param(v)
        body_lines.append(f"    {t} = " + (buf if buf else
                          f"np.empty({sizes.shape(v.shape)}, {_NP_DTYPE[v.dtype.name]})"))

    producer = {n.out.id: n for n in graph.nodes}
    for node in graph.nodes:
        t = f"t{node.out.id}"
        names[node.out.id] = t
        arg = [names[x.id] if isinstance(x, Var) else None for x in node.inputs]
        note = f"    # %{node.out.id}: {generic_type(node.out)} = {node.op}"
        if node.op == "fused":
            try:
                kernel = _Kernel(node, fm, parallel)
                src = kernel.source()
            except Unsupported:
                kernel = None
            if kernel is not None:
                kernel.name = add_kernel(src, kernel.name)
                full = ", ".join(sizes.ref(n) for n in kernel.full)
                body_lines.append(note + f" ({kernel.name})")
                results = []
                for v in defined_vars(node):
                    names[v.id] = f"t{v.id}"
                    allocate(v, f"t{v.id}")
                    results.append(f"t{v.id}")
                call_args = ", ".join([a for a in arg] + results + ([full] if full else []))
                body_lines.append(f"    {kernel.name}({call_args})")
                continue
        nk = cpu_nodes.node_kernel(node, parallel, generic_type)
        if nk is not None:
            name = add_kernel(nk.source, nk.name)
            body_lines.append(note + f" ({name})")
            allocate(node.out, t)
            call_args = ", ".join(arg + [t] + [sizes.ref(n) for n in nk.sizes])
            body_lines.append(f"    {name}({call_args})")
            continue
        if _batched_matmul(node):
            body_lines.append(note + " (batched: np.dot per batch element)")
            allocate(node.out, t)
            operands = [_matmul_operand(x, names, producer, library) for x in node.inputs]
            body_lines += _batch_loops(node, t, operands)
            continue
        put = _index_put(node, arg, t) if node.op == "index_put" else None
        if put is not None:
            body_lines.append(note)
            body_lines += put
            continue
        lowered = _library(node, arg, sizes)
        if lowered is None:
            jit_entry = False
            fallbacks.append(_fallback(node))
            operands = ", ".join(a if a is not None else repr(x)
                                 for a, x in zip(arg, node.inputs))
            body_lines.append(note + " (numpy)")
            # a kernel the generator cannot render still defines every value it exports
            results = []
            for v in defined_vars(node):
                names[v.id] = f"t{v.id}"
                results.append(f"t{v.id}")
            target = t if len(results) == 1 else ", ".join(results)
            body_lines.append(f"    {target} = _fallback[{len(fallbacks) - 1}]({operands})")
        elif lowered == "const":
            names[node.out.id] = f"c{len(consts)}"
            consts.append(node.attr_dict["value"].array)
        elif node.op == "matmul" and (buf := buffer_param(node.out)):
            body_lines.append(note)
            body_lines.append(f"    {t} = np.dot({arg[0]}, {arg[1]}, {buf})")
        else:
            body_lines.append(note)
            body_lines.append(f"    {t} = {lowered}")

    for k, slot in enumerate(_memory().plan_slots([w[1:] for w in work])):
        buffers[work[k][0]].slot = slot
    # constants are shared and read-only: results get their own copy, as eager ones would
    outs = [("None" if not isinstance(x, Var) else
             f"{names[x.id]}.copy()" if names[x.id].startswith("c") else names[x.id])
            for x in graph.outputs]
    params = ["sz"] + ([] if jit_entry else ["_fallback"]) + \
        [f"in{i}" for i in range(len(graph.inputs))] + \
        [f"c{i}" for i in range(len(consts))] + [f"b{i}" for i in range(len(buffers))]
    ins = ", ".join(f"in{i}: {generic_type(v)}" for i, v in enumerate(graph.inputs))
    bufs = ", ".join(f"b{i}: {b.kind}" for i, b in enumerate(buffers))
    decorator = "@numba.njit(cache=True, error_model='numpy')\n" if jit_entry else ""
    entry = (decorator + f"def entry({', '.join(params)}):\n"
             f"    # {ins}\n" + (f"    # buffers (reused: work; results: out): {bufs}\n"
                                  if buffers else "") + "\n".join(body_lines) +
             ("\n" if body_lines else "") +
             f"    return ({', '.join(outs)}{',' if len(outs) == 1 else ''})\n")
    def flags(fm) -> str:
        return repr(fm) if isinstance(fm, bool) else "{" + ", ".join(sorted(map(repr, fm))) + "}"

    header = HEADER.format(mathset="PRECISE" if precise_math else "FAST", fastmath=flags(fm),
                           no_reassoc=flags(fm if isinstance(fm, bool) else fm - {"reassoc"}))
    source = header + "\n\n" + "\n\n".join(kernels + [entry])
    return Lowered(source, "entry", tuple(sizes.values), consts, fallbacks, jit_entry,
                   [k.split("def ")[1].split("(")[0] for k in kernels], buffers)


def _batched_matmul(node: Node) -> bool:
    """A matmul with batch dims that runs as one np.dot per batch element (BLAS: floats of
    one dtype, and scipy, through which numba reaches BLAS)."""
    if node.op != "matmul" or not _HAVE_SCIPY or len(node.out.shape) < 3:
        return False
    a, b = node.inputs
    return a.dtype == b.dtype and a.dtype.kind == "f"


def _matmul_operand(x: Var, names: dict, producer: dict, library: dict) -> tuple:
    """(array name, transposed): a batched operand that is ``.mT`` of another array is read as
    ``src[i].T``, an 'F'-layout matrix BLAS takes as is; a slice of numba's transposed view has
    no fixed layout ('A'), and np.dot would copy it first."""
    node = producer.get(x.id)
    rank = len(x.shape)
    if node is not None and node.op == "permute" and rank > 2 and \
            library.get(node.out.id) is not None and \
            tuple(node.attr_dict["perm"]) == tuple(range(rank - 2)) + (rank - 1, rank - 2):
        return names[node.inputs[0].id], True
    return names[x.id], False


def _batch_loops(node: Node, t: str, operands) -> list:
    """Loops over the output's batch dims calling np.dot on each matrix; an operand with fewer
    batch dims or a batch dim of 1 is broadcast (indexed by 0)."""
    batch = len(node.out.shape) - 2
    lines, pad = [], 4
    for d in range(batch):
        lines.append(" " * pad + f"for i{d} in range({t}.shape[{d}]):")
        pad += 4
    slices = []
    for x, (name, transposed) in zip(node.inputs, operands):
        lead = batch - (len(x.shape) - 2)
        idx = ["0" if x.shape[d - lead] == 1 else f"i{d}" for d in range(lead, batch)]
        slices.append((f"{name}[{', '.join(idx)}]" if idx else name) + (".T" if transposed else ""))
    out = f"{t}[{', '.join(f'i{d}' for d in range(batch))}]"
    lines.append(" " * pad + f"np.dot({slices[0]}, {slices[1]}, {out})")
    return lines


def _kernel_key(src: str, name: str) -> str:
    """What a kernel computes: its source without its name, comments and IR value numbers."""
    import re
    lines = [re.sub(r"#.*$", "", line).rstrip() for line in src.splitlines()]
    body = "\n".join(line for line in lines if line).replace(name, "KERNEL")
    return re.sub(r"\b([vr])\d+\b", r"\1_", body)


def _memory():
    from tracejit.runtime import memory
    return memory


def _library(node: Node, arg, sizes: _Sizes):
    """Entry-function code for a non-fused node numba runs natively, 'const', or None."""
    op = node.op
    if op == "const":
        return "const"
    x = arg[0] if arg else None
    attrs = node.attr_dict
    if op == "matmul":
        a, b = node.inputs
        if _HAVE_SCIPY and len(a.shape) == 2 and len(b.shape) == 2 and a.dtype == b.dtype and \
                a.dtype.kind == "f":
            return f"np.dot({arg[0]}, {arg[1]})"
        return None
    if op == "reshape":
        return f"np.ascontiguousarray({x}).reshape({sizes.shape(node.out.shape)})"
    if op == "permute":
        if tuple(attrs["perm"]) == (1, 0):  # 'F' layout for numba (np.transpose's is 'A')
            return f"{x}.T"
        return f"np.transpose({x}, {attrs['perm']!r})"
    if op == "expand":
        return f"np.broadcast_to({x}, {sizes.shape(node.out.shape)})"
    if op == "getitem":
        # NOTE: numba gives a scalar, not a 0-d array, for a full integer index
        index = _basic_index(attrs["spec"])
        return f"{x}[{index}]" if index is not None and node.out.shape else None
    if op == "cat":
        if len({v.dtype for v in node.inputs}) == 1:  # numpy's promotion is not numba's
            return f"np.concatenate(({', '.join(arg)},), axis={attrs['dim']})"
        return None
    if op == "detach":
        return x
    return None


def _basic_index(spec) -> str | None:
    """Source of a basic index (ints and slices; no None, Ellipsis or tensor indices)."""
    basic, adv = spec
    if adv is not None or any(b is None or b is Ellipsis for b in basic):
        return None
    parts = [":".join("" if v is None else str(v) for v in b) if isinstance(b, tuple)
             else str(b) for b in basic]
    return ", ".join(parts) or "..."


def _index_put(node: Node, arg, t: str) -> list | None:
    """Entry statements for ``x[basic] = v`` (or ``+=``) on a copy of x, when the value has
    the slice's exact shape and x's dtype (numba does not broadcast or cast here), else None."""
    attrs = node.attr_dict
    index = _basic_index(attrs["spec"])
    x, v = node.inputs[:2]
    if index is None or len(node.inputs) != 2:
        return None
    if index == "..." and attrs["accumulate"]:
        # NOTE: numba reads no array through ``[...]``: ``+=`` on the whole array is spelt with
        # full slices, and a 0-d x (no slice to spell it with) runs through numpy
        if not x.shape:
            return None
        index = ", ".join([":"] * len(x.shape))
    target = np.broadcast_to(np.empty((), bool), x.shape)[ops._basic(attrs["spec"][0])].shape
    if isinstance(v, Var):
        if v.dtype != x.dtype or v.shape != target or not target:
            return None
        value = arg[1]
    else:
        value = literal(v, x.dtype)
    op = "+=" if attrs["accumulate"] else "="
    return [f"    {t} = {arg[0]}.copy()", f"    {t}[{index}] {op} {value}"]


def _fallback(node: Node):
    op = ops.OPS[node.op]
    attrs = node.attr_dict
    if len(defined_vars(node)) > 1:  # a fused group with extra outputs: all of its results
        from tracejit.runtime.interpret import interpret

        def run_group(*args):
            return tuple(interpret(attrs["body"], list(args)))

        run_group.__name__ = f"numpy_{attrs['kernel']}"
        return run_group

    def run(*args):
        return ops.compute(op, list(args), attrs)

    run.__name__ = f"numpy_{node.op}"
    return run
