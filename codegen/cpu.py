"""The CPU renderer: kernel and entry plans (``codegen/kernel.py``, ``codegen/entry.py``) as
readable numba source. One ``@numba.njit`` kernel per kernel plan (``numba.prange`` over the
outer loop when the domain is large enough for threads; the node kernels' bodies are in
``cpu_node_kernels``) and one entry function for the whole graph that allocates buffers and
calls the kernels (and BLAS, through ``np.dot``, for matmul), so a compiled call is one
dispatch from Python. Nodes no kernel renders run through numpy (then the entry is plain
Python). ``CpuTarget`` is what the neutral planning asks of this target and its renderer.

The source is generic over sizes: every size that is not 1 is read from the ``sz`` tuple the
entry receives, so a new batch size gives the same source and reuses the compiled machine code.

>>> print(tracejit.codegen.lower(fused_graph, target="cpu").source)  # doctest: +SKIP
@numba.njit(parallel=False, cache=True, fastmath=FASTMATH_NO_REASSOC, error_model='numpy')
def k0_add_relu(a0, a1, out, n0, n1):
    # add relu: %2 add, %3 relu
    ...
"""

from __future__ import annotations

import ast
import builtins
import functools
import glob
import importlib.util
import math
import os
import textwrap

import numpy as np

from tracejit import ops
from tracejit.ir import Node, Var
from tracejit.runtime import cache

from . import cpu_node_kernels, mathlib, prelude
from .entry import EntryPlan, Sizes
from .kernel import (
    SUM_BLOCK,
    Arg,
    Const,
    KernelPlan,
    Reduction,
    Scalar,
    Unsupported,
    Write,
    param_comment,
)
from .program import Program

# the source this renderer emits calls these modules' numba functions (see HEADER)
cache.register_helpers(mathlib, prelude)

MAX_JIT_ENTRY_NODES = 200  # larger graphs get a plain Python entry (see CpuTarget.render)
# ... and so do graphs whose values hold more elements than this in all: their kernels' work
# hides the ~1 us Python call into each, and the @njit entry doubled the cold compile
JIT_ENTRY_MAX_ELEMENTS = 1 << 18
# elements: below this a kernel runs serially (a threaded kernel costs numba ~1 s to compile
# against ~0.15 s serial). Measured on 2 cores (docs/compiler.md): the MLP training step's
# kernels threaded from 2**15 elements compiled in 10.8 s and ran 2.72 ms a step, serial up to
# 2**20 in 6.3 s and 2.65 ms; the CNN step's eight kernels of 2**20-2.25*2**20 elements
# threaded compiled in 12.4 s and ran 24.0 ms, serial in 6.2 s and 23.0 ms; a 2**22-element
# elementwise kernel runs 1.6-1.9x faster threaded (0.74 vs 1.21 ms for (2x + 1).relu())
PARALLEL_MIN = 1 << 22
FASTMATH_DEFAULT = {"reassoc", "contract"}  # keeps NaN/Inf semantics; fastmath=True drops them
__all__ = ["CpuTarget", "Unsupported", "SUM_BLOCK", "PARALLEL_MIN", "literal", "generic_type"]

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


# ---------------------------------------------------------------------------- kernels


def _index(index: tuple) -> str:
    """``i0, 0, i2`` for a plan's index (a loop dim, or None for 0); ``()`` for a 0-d array."""
    return ", ".join("0" if d is None else f"i{d}" for d in index) if index else "()"


class _Kernel:
    """Source of one fused group's kernel, from its plan."""

    def __init__(self, plan: KernelPlan, fastmath, parallel: bool):
        self.plan = plan
        self.name = plan.name
        self.fastmath = fastmath
        self.rank = len(plan.domain)
        self.row_dims = plan.row_dims
        # kernels traced at sizes too small for threads are emitted serial only: numba compiles
        # them several times faster (no parfor pass), and a size past the threshold is a
        # different source, compiled once
        self.parallel = parallel and plan.work >= PARALLEL_MIN
        self.args = [f"a{i}" for i in range(len(plan.inputs))]
        self.outs = ["out"] + [f"out{k}" for k in range(1, len(plan.outputs))]

    # -- operands and statements
    def _read(self, o) -> str:
        if isinstance(o, Scalar):  # read once, before the loops (see source())
            return f"s_a{o.k}"
        if isinstance(o, Arg):
            return f"a{o.k}[{_index(o.index)}]"
        return f"{'v' if o.vector else 'r'}{o.id}"

    def _expr(self, e) -> tuple:
        """(source, operand sources) of a neutral expression."""
        codes = [literal(o.value, dst) if isinstance(o, Const) else _cast(self._read(o), src, dst)
                 for o, (src, dst) in zip(e.operands, e.casts)]
        code = spelled(e.template).format(*codes)
        if e.result_cast is not None:
            code = _cast(code, *e.result_cast)
        return code, codes

    def _stmt(self, s, pad: int) -> list:
        code, codes = self._expr(s.expr)
        lines = [" " * pad + f"{'v' if s.vector else 'r'}{s.id} = {code}  # {s.op}"]
        if s.expr.zero_check:
            # NOTE: an exception raised inside a numba.prange loop is lost (the kernel returns
            # as if nothing happened), so the loops only count, a reduction numba parallelises,
            # and the kernel raises after them, as eager does (ops._int_div_checked)
            lines.append(" " * pad + f"zero_{s.expr.zero_check} += {codes[1]} == 0")
        return lines

    def _stmts(self, stmts, pad: int) -> list:
        return [line for s in stmts for line in self._stmt(s, pad)]

    # -- emission
    def source(self) -> str:
        plan = self.plan
        names = " ".join(dict.fromkeys(op for _, op in plan.nodes))
        comment = ", ".join(f"%{i} {op}" for i, op in plan.nodes)
        dims = [f"n{k}" for k in range(self.rank)]
        params = ", ".join(self.args + self.outs + dims)
        fm = "False" if not self.fastmath else \
            "FASTMATH" if plan.reassociates else "FASTMATH_NO_REASSOC"
        # error_model="numpy": 1/0 is inf, as in numpy, not a ZeroDivisionError
        lines = [f"@numba.njit(parallel={self.parallel}, cache=True, fastmath={fm}, "
                 f"error_model='numpy')",
                 f"def {self.name}({params}):",
                 f"    # {names}: {comment}", *param_comment(plan, self.outs, _SHORT)]
        for v, a in zip(plan.inputs, self.args):
            if not v.shape:  # NOTE: numba's parfors cannot index 0-d arrays inside prange
                lines.append(f"    s_{a} = {a}[()]")
        outer = list(plan.outer)
        total = " * ".join(dims) or "1"
        if self.parallel and (outer or self.row_dims):
            body = [f"    if {total} >= {PARALLEL_MIN}:"]
            body += self._loops(outer, parallel=True, indent=8)
            body.append("    else:")
            body += self._loops(outer, parallel=False, indent=8)
        else:
            body = self._loops(outer, parallel=False, indent=4)
        for op in plan.zero_ops:
            lines.append(f"    zero_{op} = 0  # integer {op} by zero: counted, raised below")
        lines += body
        for op in plan.zero_ops:
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

    def _inner(self, pad: int, parallel: bool) -> tuple:
        lines = []
        for j, k in enumerate(self.row_dims):
            rng = "numba.prange" if parallel and j == 0 else "range"
            lines.append(" " * pad + f"for i{k} in {rng}(n{k}):")
            pad += 4
        return lines, pad

    def _row_body(self, pad: int, parallel_reduce: bool) -> list:
        plan = self.plan
        if not self.row_dims:  # plain elementwise
            lines = self._stmts(plan.stmts, pad)
            for o, v in zip(self.outs, plan.outputs):
                lines.append(" " * pad + f"{o}[{_index(plan.out_index)}] = v{v.id}")
            return lines
        lines = []
        for step in plan.steps:
            if isinstance(step, Reduction):
                lines += self._reduction(step, pad, parallel_reduce and step.op in ("sum",
                                                                                    "prod"))
            elif isinstance(step, Write):  # a row-scalar extra output, once per row
                lines += self._writes([step], pad)
            else:
                lines += self._stmt(step, pad)
        root = plan.outputs[0]
        if plan.root_vector:
            inner, ipad = self._inner(pad, False)
            lines += inner
            if plan.stash is not None:  # computed by the last reduction's loop: read it back
                lines.append(" " * ipad + f"v{plan.stash} = out[{_index(plan.out_index)}]")
            lines += self._stmts(plan.tail, ipad)
            lines.append(" " * ipad + f"out[{_index(plan.out_index)}] = v{root.id}")
            lines += self._writes(plan.tail_writes, ipad)
        else:
            lines.append(" " * pad + f"out[{_index(plan.row_out_index)}] = r{root.id}")
        return lines

    def _writes(self, writes, pad: int) -> list:
        return [" " * pad + f"{self.outs[w.k]}[{_index(w.index)}] = "
                            f"{'v' if w.vector else 'r'}{w.id}" for w in writes]

    def _keep(self, red: Reduction, pad: int) -> list:
        """What a reduction's row loop writes besides its total: the stash and its exports."""
        lines = self._writes(red.writes, pad)
        if red.stash is None:
            return lines
        return lines + [" " * pad + f"out[{_index(self.plan.out_index)}] = v{red.stash}  "
                                    f"# kept for the output loop"]

    def _reduction(self, red: Reduction, pad: int, parallel: bool, short: bool = False) -> list:
        acc = f"r{red.id}"
        dt = red.dtype
        if red.blocked and not short:
            # a row of one block sums in float32 as below, bit for bit the blocked result
            length = " * ".join(f"n{d}" for d in self.row_dims)
            return ([" " * pad + f"if {length} <= {SUM_BLOCK}:"] +
                    self._reduction(red, pad + 4, parallel, short=True) +
                    [" " * pad + "else:"] +
                    self._blocked_sum(red, pad + 4, parallel))
        lines = [" " * pad + f"{acc} = {literal(red.init, dt)}  # {red.op} over dims "
                              f"{self.row_dims}"]
        inner, ipad = self._inner(pad, parallel)
        lines += inner
        lines += self._stmts(red.stmts, ipad)
        lines += self._keep(red, ipad)
        val = _cast(self._read(red.source), red.source_dtype, dt)
        if red.op == "sum":
            lines.append(" " * ipad + f"{acc} += {val}")
        elif red.op == "prod":
            lines.append(" " * ipad + f"{acc} *= {val}")
        else:
            # the prelude's maximum/minimum: NaN propagates as in numpy, and for floats they are
            # llvm.maximum/minimum, whose reductions LLVM vectorises
            fn = "maximum" if red.op == "amax" else "minimum"
            lines.append(" " * ipad + f"{acc} = {fn}({acc}, {val})")
        return lines

    def _blocked_sum(self, red: Reduction, pad: int, parallel: bool) -> list:
        """A float32 sum: the last row dim walks blocks of SUM_BLOCK elements, each summed in
        float32 (LLVM keeps the block's loop vectorised, several partial sums wide), and the
        block totals are added in float64. One float32 running total over a long row loses
        digits as it grows (relative error ~1e-4 at 1M elements where nothing vectorises, a
        strided or column sum); blocks bound that by the block length, as numpy's pairwise
        sum does. Rows of one block (softmax, layer_norm) take the plain loop (_reduction): the
        block loop's bookkeeping made layer_norm over rows of 64 1.5x slower."""
        k = self.row_dims[-1]
        total, part = f"s{red.id}", f"p{red.id}"
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
        lines += self._stmts(red.stmts, body_pad)
        lines += self._keep(red, body_pad)
        lines.append(" " * body_pad +
                     f"{part} += {_cast(self._read(red.source), red.source_dtype, 'float32')}")
        lines.append(" " * (ipad + 4) + f"{total} += np.float64({part})")
        lines.append(" " * pad + f"r{red.id} = np.float32({total})")
        return lines

def _cast(code: str, src, dst) -> str:
    if src is None or np.dtype(src) == np.dtype(dst):
        return code
    dst = np.dtype(dst)
    if dst == np.bool_:
        return f"({code} != 0)"
    return f"{_NP_DTYPE[dst.name]}({code})"


# ---------------------------------------------------------------------------- module header


# How generated source calls each function the op table's ``expr`` templates name
# (``ops.template_calls()``) and the ones this module writes itself (the reductions' and clamp's
# maximum/minimum, pow's power_scalar). Every name is by default the prelude helper of the same
# name (codegen/prelude.py; for prelude.TRANSCENDENTAL, from its FAST or PRECISE set), which the
# header binds (_bindings); this target's overrides follow. A primitive whose template calls a
# new name needs its prelude helper, or one line here.
CALLS: dict = {
    **{name: name for name in ops.template_calls()},
    "maximum": "maximum", "minimum": "minimum", "power_scalar": "power_scalar",
    "clamp": None, "cast": None,  # planned as other templates by codegen/kernel.py, never called
    "sinh": "math.sinh", "cosh": "math.cosh",  # numba's libm call (sinhf for float32)
    "asin": "math.asin", "acos": "math.acos", "atan": "math.atan", "asinh": "math.asinh",
    "acosh": "math.acosh", "atanh": "math.atanh", "atan2": "math.atan2",  # libm's, as sinh
}


def _bindings() -> str:
    """The header lines binding each prelude helper CALLS spells (a name the prelude lacks
    stays unbound: ``unbound_calls`` reports it, and its ops run through numpy)."""
    names = sorted({c for c in CALLS.values() if c and "." not in c and
                    (c in prelude.TRANSCENDENTAL or callable(getattr(prelude, c, None)))})
    direct = [n for n in names if n not in prelude.TRANSCENDENTAL]
    lead = "from tracejit.codegen.prelude import ("
    lines = textwrap.wrap(", ".join(direct) + ")", 100, initial_indent=lead,
                          subsequent_indent=" " * len(lead))
    lines.append("from tracejit.codegen.prelude import {mathset} as _math\n")
    rows: list = [[]]
    for n in (n for n in prelude.TRANSCENDENTAL if n in names):
        row = rows[-1] + [n]
        if len(", ".join(row) + " = " + ", ".join(f"_math.{m}" for m in row)) > 100:
            rows.append(row := [n])
        rows[-1] = row
    lines += [", ".join(r) + " = " + ", ".join(f"_math.{m}" for m in r) for r in rows if r]
    return "\n".join(lines) + "\n"


# NOTE: the header's text is pinned by tests/codegen/golden
HEADER = '''"""Generated by tracejit (codegen/cpu.py): a kernel per fused group and an entry
function. Kernel comments name the IR nodes they compute; sizes are runtime values (sz)."""
import math

import numba
import numpy as np

''' + _bindings() + '''FASTMATH = {fastmath}
FASTMATH_NO_REASSOC = {no_reassoc}  # kernels without reductions, or with a foldable pair
'''


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
    called = ops.template_calls()  # (walks the op table: once, not once per name)
    names = list(called) + [n for n in CALLS if n not in called]
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
    """Whether scipy's BLAS bindings are installed, found without importing scipy (0.2 s in a
    new process whose machine code loads from the cache and whose matmuls numpy runs)."""
    # NOTE: numba's np.dot calls BLAS through scipy.linalg.cython_blas, which numba imports
    # when it compiles such code, or its helpers when cached code first calls BLAS; without
    # scipy, matmul runs through numpy
    spec = importlib.util.find_spec("scipy")
    return spec is not None and any(
        glob.glob(os.path.join(location, "linalg", "cython_blas*"))
        for location in spec.submodule_search_locations or ())


_HAVE_SCIPY = _scipy_available()


# ---------------------------------------------------------------------------- the target


class CpuTarget:
    """The CPU target: what it runs natively (``entry.Target``) and its renderer.

    ``fastmath``: numba's flags (False: ``FASTMATH_DEFAULT``, which keeps NaN/Inf; True: all);
    ``precise_math``: the prelude's PRECISE transcendentals instead of the vectorisable FAST
    ones; ``parallel``: may kernels use threads (``numba.prange``)."""

    name = "cpu"
    writes_inputs = True  # inputs' new values may go straight into their arrays (memory_plan)
    places_pieces = True  # a 1-d cat's pieces may be computed straight into its array

    def __init__(self, fastmath: bool = False, precise_math: bool = False,
                 parallel: bool = True):
        self.fastmath = True if fastmath else set(FASTMATH_DEFAULT)
        self.precise_math = precise_math
        self.parallel = parallel
        self._sources: dict = {}  # kernel name -> source, rendered when first asked about

    # -- capabilities (entry.Target)
    def renders(self, plan: KernelPlan) -> bool:
        try:
            self._sources[plan.name] = self._kernel_source(plan)
        except Unsupported:
            return False
        return True

    def kernel_variant(self, plan: KernelPlan) -> bool:
        return self.parallel and plan.work >= PARALLEL_MIN  # serial and parallel differ

    def pad_at(self, plan: KernelPlan) -> int | None:
        # serial kernels take the size-1 dims in front: the innermost loop stays the real last
        # dim (it vectorises), and numba types ``a[None, None]`` of a 'C' array as 'C' (an @njit
        # entry passes it without a copy or a new layout); a threaded kernel spreads its dim 0
        # over the threads, so they go after it, and a 1-d one keeps its rank (its one dim must
        # be both). Threaded kernels have Python entries, where the view is numpy's.
        if not self.kernel_variant(plan):
            return 0
        return 1 if len(plan.domain) >= 2 else None

    def runs_natively(self, node: Node) -> str | None:
        if _batched_matmul(node):
            return "batched_matmul"
        args = [f"x{i}" for i in range(len(node.inputs))]
        if node.op == "index_put":
            return "index_put" if _index_put(node, args, "t") is not None else None
        if node.op == "fused" or _library(node, args, Sizes()) is None:
            return None
        return "matmul" if node.op == "matmul" else "call"

    def _kernel_source(self, plan: KernelPlan) -> str:
        if plan.kind == "fused":
            return _Kernel(plan, self.fastmath, self.parallel).source()
        return cpu_node_kernels.source(plan, self.parallel and plan.work >= PARALLEL_MIN)

    # -- rendering
    def render(self, entry: EntryPlan) -> Program:
        """The module source and what the runtime passes to its entry function."""
        graph = entry.graph
        sizes = Sizes()
        names = {v.id: f"in{i}" for i, v in enumerate(graph.inputs)}
        # NOTE: numba's compile time grows faster than linearly with a function's length: an
        # unrolled LSTM step as one @njit entry took 74 s to compile against 19 s as a Python
        # entry calling the same compiled kernels (~1 us per call, next to a 130 ms step)
        # NOTE: nor when it calls a threaded (prange) kernel: numba links a callee's machine
        # code into its caller's, and a cached entry built over threaded kernels that were
        # themselves loaded from the cache (another process compiled them: two ranks, two
        # compile workers) crashes the next process that loads it (numba issues 4807, 10128).
        # A threaded kernel has >= PARALLEL_MIN elements of work, so the Python call into it
        # (~1 us) is noise, and each kernel keeps its own cached code.
        jit_entry = (len(graph.nodes) <= MAX_JIT_ENTRY_NODES and not entry.fallbacks and
                     sum(math.prod(n.out.shape) for n in graph.nodes) <= JIT_ENTRY_MAX_ELEMENTS
                     and not any(self.kernel_variant(k) for k in entry.kernels))
        producer = {n.out.id: n for n in graph.nodes}
        kinds = {s.node.out.id: s.kind for s in entry.steps}
        lines: list = []

        placed = set()  # the cats whose array is made (their pieces go into it)

        def allocate(v: Var, t: str) -> None:
            """The result array of a kernel or np.dot: a buffer parameter, the array of the
            input it is the new value of, its slice of a cat's array, or a fresh one."""
            k = entry.storage.get(v.id)
            if v.id in entry.pieces and not jit_entry:
                cat, off = entry.pieces[v.id]
                c = producer[cat].out
                if cat not in placed:
                    placed.add(cat)
                    lines.append(f"    t{cat} = np.empty({sizes.shape(c.shape)}, "
                                 f"{_NP_DTYPE[c.dtype.name]})  # %{cat}: cat, its pieces "
                                 f"are computed into it")
                end = off + math.prod(v.shape)
                lines.append(f"    {t} = t{cat}[{sizes.ref(off)}:{sizes.ref(end)}]"
                             f".reshape({sizes.shape(v.shape)})")
                return
            if v.id in entry.written:
                lines.append(f"    {t} = in{entry.written[v.id]}  # the input's new value, "
                             f"written into its array")
                return
            lines.append(f"    {t} = " + (f"b{k}" if k is not None else
                         f"np.empty({sizes.shape(v.shape)}, {_NP_DTYPE[v.dtype.name]})"))

        for step in entry.steps:
            node = step.node
            t = f"t{node.out.id}"
            names[node.out.id] = t
            arg = [names[x.id] if isinstance(x, Var) else None for x in node.inputs]
            note = f"    # %{node.out.id}: {generic_type(node.out)} = {node.op}"
            if step.kind == "launch" and step.plan.kind == "fused":
                refs = [sizes.ref(n) for n in step.plan.sizes]
                if jit_entry and step.plan.generic_rank:
                    # NOTE: inside an @njit entry a literal 1 is typed Literal[int](1), a
                    # signature of its own beside the int64 other calls pass: one more compile
                    # of the kernel a rank-generic kernel is there to save
                    refs = ["np.int64(1)" if r == "1" else r for r in refs]
                full = ", ".join(refs)
                lines.append(note + f" ({step.call})")
                results = []
                for v in step.results:
                    names[v.id] = f"t{v.id}"
                    allocate(v, f"t{v.id}")
                    results.append(f"t{v.id}")
                arrays = [x for x in node.inputs if isinstance(x, Var)] + list(step.results)
                arrays = [_padded(a, x, step.plan) for a, x in
                          zip([a for a in arg if a is not None] + results, arrays)]
                call_args = ", ".join(arrays + ([full] if full else []))
                lines.append(f"    {step.call}({call_args})")
            elif step.kind == "launch":
                lines.append(note + f" ({step.call})")
                allocate(node.out, t)
                call_args = ", ".join(arg + [t] + [sizes.ref(n) for n in step.plan.sizes])
                lines.append(f"    {step.call}({call_args})")
            elif step.kind == "batched_matmul":
                lines.append(note + " (batched: np.dot per batch element)")
                allocate(node.out, t)
                operands = [_matmul_operand(x, names, producer, kinds) for x in node.inputs]
                lines += _batch_loops(node, t, operands)
            elif step.kind == "index_put":
                lines.append(note)
                lines += _index_put(node, arg, t)
            elif step.kind == "fallback":
                operands = ", ".join(a for a in arg if a is not None)  # see entry.fallback
                lines.append(note + (" (numpy, into its donated input's array)" if step.donated
                                     else " (numpy)"))
                results = []
                for v in step.results:
                    names[v.id] = f"t{v.id}"
                    results.append(f"t{v.id}")
                target = ", ".join(results)
                lines.append(f"    {target} = _fallback[{step.index}]({operands})")
            elif step.kind == "const":
                names[node.out.id] = f"c{step.index}"
            elif step.kind == "matmul" and node.out.id in entry.pieces and not jit_entry:
                lines.append(note)
                allocate(node.out, t)
                lines.append(f"    np.dot({arg[0]}, {arg[1]}, {t})")
            elif step.kind == "matmul" and node.out.id in entry.storage:
                lines.append(note)
                lines.append(f"    {t} = np.dot({arg[0]}, {arg[1]}, b{entry.storage[node.out.id]})")
            elif node.out.id in placed:
                lines.append(note + " (its pieces were computed into it)")
            else:
                lines.append(note)
                lines.append(f"    {t} = {_library(node, arg, sizes)}")

        # constants are shared and read-only: results get their own copy, as eager ones would
        outs = [("None" if not isinstance(x, Var) else
                 f"{names[x.id]}.copy()" if names[x.id].startswith("c") else names[x.id])
                for x in graph.outputs]
        params = ["sz"] + (["_fallback"] if entry.fallbacks else []) + \
            [f"in{i}" for i in range(len(graph.inputs))] + \
            [f"c{i}" for i in range(len(entry.consts))] + \
            [f"b{i}" for i in range(len(entry.buffers))]
        ins = ", ".join(f"in{i}: {generic_type(v)}" for i, v in enumerate(graph.inputs))
        bufs = ", ".join(f"b{i}: {b.kind}" for i, b in enumerate(entry.buffers))
        decorator = "@numba.njit(cache=True, error_model='numpy')\n" if jit_entry else ""
        source = (decorator + f"def entry({', '.join(params)}):\n"
                  f"    # {ins}\n" + (f"    # buffers (reused: work; results: out): {bufs}\n"
                                      if entry.buffers else "") + "\n".join(lines) +
                  ("\n" if lines else "") +
                  f"    return ({', '.join(outs)}{',' if len(outs) == 1 else ''})\n")
        kernels = [self._sources[k.name] for k in entry.kernels]
        source = self._header() + "\n\n" + "\n\n".join(kernels + [source])
        return Program(source, "entry", tuple(sizes.values), entry.consts, entry.fallbacks,
                       jit_entry, [k.name for k in entry.kernels], entry.buffers,
                       tuple(sorted(set(entry.written.values()))))

    def _header(self) -> str:
        def flags(fm) -> str:
            return repr(fm) if isinstance(fm, bool) else \
                "{" + ", ".join(sorted(map(repr, fm))) + "}"
        fm = self.fastmath
        return HEADER.format(mathset="PRECISE" if self.precise_math else "FAST",
                             fastmath=flags(fm),
                             no_reassoc=flags(fm if isinstance(fm, bool) else fm - {"reassoc"}))



def _padded(name: str, v: Var, plan: KernelPlan) -> str:
    """A rank-generic kernel's operand (``kernel.padded``): a view with the plan's size-1 dims
    inserted, which indexing with None makes for any strides (a parameter updated in place is
    written through it); a 0-d operand as it is."""
    if not plan.padding or not v.shape:
        return name
    new = ", ".join(["None"] * plan.padding)
    return f"{name}[{new}]" if plan.pad_at == 0 else \
        f"{name}[{', '.join([':'] * plan.pad_at)}, {new}]"


# ---------------------------------------------------------------------------- library calls


def _batched_matmul(node: Node) -> bool:
    """A matmul with batch dims that runs as one np.dot per batch element (BLAS: floats of
    one dtype, and scipy, through which numba reaches BLAS)."""
    if node.op != "matmul" or not _HAVE_SCIPY or len(node.out.shape) < 3:
        return False
    a, b = node.inputs
    return a.dtype == b.dtype and a.dtype.kind == "f"


def _matmul_operand(x: Var, names: dict, producer: dict, kinds: dict) -> tuple:
    """(array name, transposed): a batched operand that is ``.mT`` of another array is read as
    ``src[i].T``, an 'F'-layout matrix BLAS takes as is; a slice of numba's transposed view has
    no fixed layout ('A'), and np.dot would copy it first."""
    node = producer.get(x.id)
    rank = len(x.shape)
    if node is not None and node.op == "permute" and rank > 2 and \
            kinds.get(node.out.id) == "call" and \
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




def _library(node: Node, arg, sizes: Sizes):
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


