"""The CUDA renderer: the neutral kernel and entry plans (``codegen/kernel.py``,
``codegen/entry.py``) as readable numba-cuda source, for ``lower(graph, target="cuda")``.

- An elementwise group is a ``@cuda.jit`` kernel with a grid-stride loop over the flat index
  of its domain, split into the loop indices (``i0 .. ik``) the plan's reads use, so
  broadcasting and strided inputs read exactly as on the CPU.
- A row kernel (softmax, layer_norm, a sum over the last dims) runs one block per row: each
  thread walks the row with stride ``blockDim.x``, and every reduction ends in a block
  reduction (``codegen/cuda_block.py``: warp shuffles on a GPU, a shared-memory tree under the
  simulator) whose result every thread gets. The softmax stash is written and read back by the
  same thread. A full reduction is a row kernel of one row (one block; see docs/gpu.md).
- unfold/fold/gather/scatter_add/argmax are node kernels (``cuda_node_kernels``); matmul is
  cuBLAS through cupy when it is importable, else a tiled shared-memory kernel generated here.
- Integer ``//``/``%`` by zero, integer ``**`` with a negative exponent and gather/scatter
  indices out of range are counted with atomics into a small device array; the entry raises
  the error the CPU path raises after its launches.
- The entry is a launch list: ``build(sz, consts)`` configures every launcher once
  (``kernel[grid, block]``) for a specialization's sizes and returns ``entry(*inputs, *buffers)``.
  Views (reshape, permute, expand, basic getitem) are device views (``runtime.cuda_runner``);
  other nodes are numpy fallbacks run as a host round trip, marked in the source.

numba-cuda is never imported by this module: generated modules import it when they load.
Every device function a kernel calls is ``inline="always"`` (the prelude's and the block
helpers), so kernels compile to PTX without a GPU (tests/cuda/test_cuda_ptx.py).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tracejit import ops
from tracejit.ir import Node, Var

from . import cuda_node_kernels
from .entry import EntryPlan, Sizes
from .kernel import Arg, Const, KernelPlan, Reduction, Scalar, Unsupported, Write, param_comment
from .program import Program

SUFFIX = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "b"}
NP = {"float32": "np.float32", "float64": "np.float64", "int32": "np.int32",
      "int64": "np.int64", "bool": "np.bool_"}
NB = {"float32": "float32", "float64": "float64", "int32": "int32", "int64": "int64",
      "bool": "boolean"}
_ARITH = ("(-{0})", "({0} + {1})", "({0} - {1})", "({0} * {1})")
VIEW_OPS = ("reshape", "permute", "expand", "getitem", "detach")
# a full reduction over at least this many elements runs in two stages (see two_stage)
TWO_STAGE_MIN = 1 << 16


def two_stage(plan: KernelPlan) -> bool:
    """Does this kernel reduce in two stages? A full reduction (one row) whose first step is
    its only reduction and whose result is per row (``x.sum()``, a mean, a loss): one block
    would use one SM, so stage 1 runs PARTIALS blocks that each reduce a grid-stride share of
    the row to one partial, and stage 2 (the kernel itself, one block) reduces the partials in
    a fixed order and computes the rest. Deterministic, unlike atomics. Not when that loop
    also writes an extra output (stage 1 has no outputs): one block walks the row instead."""
    reductions = [s for s in plan.steps if isinstance(s, Reduction)]
    return (plan.kind == "fused" and bool(plan.row_dims) and not plan.outer and
            not plan.root_vector and len(reductions) == 1 and plan.steps[0] is reductions[0]
            and not reductions[0].writes and plan.work >= TWO_STAGE_MIN)

# error slots: the message of each, raised after the launches (as the CPU kernels raise them)
ZERO_ERRORS = {name: ("RuntimeError", f"{name}: ZeroDivisionError: integer division by zero")
               for name, row in ops.OPS.items() if row.int_zero_division}
ZERO_ERRORS["pow"] = ("ValueError", "Integers to negative integer powers are not allowed.")


@dataclass
class CudaProgram(Program):
    """A CUDA Program: ``entry`` is the name of ``build(sz, consts)``; ``signatures`` gives
    each kernel's numba argument types as (dtype name, ndim) per array and "int64" per size,
    for compiling it ahead of time (PTX tests, warm-up)."""

    signatures: dict = field(default_factory=dict)
    host_round_trips: list = field(default_factory=list)  # ops the entry runs on the host


def literal(x, dtype) -> str:
    """A Python scalar as source of ``dtype`` (typed: untyped floats widen float32 math)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return "True" if x else "False"
    if dtype.kind == "f":
        v = float(x)
        text = "np.inf" if v == math.inf else "-np.inf" if v == -math.inf else \
            "np.nan" if v != v else repr(v)
        return f"{NP[dtype.name]}({text})"
    return f"{NP[dtype.name]}({int(x)})"


def cast(code: str, src, dst) -> str:
    if src is None or np.dtype(src) == np.dtype(dst):
        return code
    return f"cast_{SUFFIX[np.dtype(dst).name]}({code})"


def _index(index: tuple) -> str:
    return ", ".join("0" if d is None else f"i{d}" for d in index) if index else "()"


def _split(flat: str, dims, pad: str, index: str = "i", size: str = "n") -> list:
    """Statements splitting ``flat`` into the loop indices ``i{d}`` of ``dims`` (C order)."""
    dims = list(dims)
    if not dims:
        return []
    if len(dims) == 1:
        return [pad + f"{index}{dims[0]} = {flat}"]
    lines = [pad + f"r_ = {flat}"]
    for d in reversed(dims[1:]):
        lines += [pad + f"{index}{d} = r_ % {size}{d}", pad + f"r_ //= {size}{d}"]
    return lines + [pad + f"{index}{dims[0]} = r_"]


class Helpers:
    """The names a module imports from the prelude and the block helpers."""

    def __init__(self):
        self.prelude: set = set()
        self.block: set = set()

    def call(self, name: str, dtype) -> str:
        n = f"{name}_{SUFFIX[np.dtype(dtype).name]}"
        self.prelude.add(n)
        return n


class _Kernel:
    """Source of one fused group's kernel."""

    def __init__(self, plan: KernelPlan, helpers: Helpers, fastmath: bool):
        self.plan = plan
        self.h = helpers
        self.fastmath = fastmath
        self.rank = len(plan.domain)
        self.outs = ["out"] + [f"out{k}" for k in range(1, len(plan.outputs))]
        self.errors: list = []  # error slot kinds, in order (index into the flags argument)
        self.shared: set = set()  # dtypes of the block reductions' shared arrays
        self.two_stage = two_stage(plan)
        self.stage1: list = []  # a two-stage kernel's first stage: its reduction loop

    def _read(self, o) -> str:
        if isinstance(o, Scalar):
            return f"s_a{o.k}"
        if isinstance(o, Arg):
            return f"a{o.k}[{_index(o.index)}]"
        return f"{'v' if o.vector else 'r'}{o.id}"

    def _slot(self, kind: str) -> int:
        if kind not in self.errors:
            self.errors.append(kind)
        return self.errors.index(kind)

    def _expr(self, e) -> tuple:
        codes = [literal(o.value, dst) if isinstance(o, Const) else cast(self._read(o), src, dst)
                 for o, (src, dst) in zip(e.operands, e.casts)]
        dt = np.dtype(e.casts[0][1]) if e.casts and e.casts[0][1] is not None else None

        def spell(m):
            name = m.group(1)
            if name in ("clamp", "cast") or dt is None:
                raise Unsupported(name)
            if name not in ("abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin",
                            "cos", "tan", "sinh", "cosh", "tanh", "sigmoid", "erf", "relu",
                            "sign", "floor", "ceil", "round", "isnan", "isfinite", "floordiv",
                            "remainder", "power", "power_scalar", "maximum", "minimum",
                            "asin", "acos", "atan", "asinh", "acosh", "atanh", "atan2", "fmod"):
                raise Unsupported(name)
            return self.h.call(name, dt) + "("
        code = ops.CALL.sub(spell, e.template).format(*codes)
        if e.template in _ARITH and dt is not None and dt.name in ("int32", "bool"):
            # NOTE: numba computes int32 (and bool) arithmetic in int64: back to the dtype
            code = f"np.int32({code})" if dt.name == "int32" else f"cast_b({code})"
            if dt.name == "bool":
                self.h.prelude.add("cast_b")
        if e.result_cast is not None:
            code = cast(code, *e.result_cast)
            self.h.prelude.add(f"cast_{SUFFIX[np.dtype(e.result_cast[1]).name]}")
        for (src, dst) in e.casts:
            if src is not None and dst is not None and np.dtype(src) != np.dtype(dst):
                self.h.prelude.add(f"cast_{SUFFIX[np.dtype(dst).name]}")
        return code, codes, dt

    def _stmt(self, s, pad: str) -> list:
        code, codes, dt = self._expr(s.expr)
        lines = [pad + f"{'v' if s.vector else 'r'}{s.id} = {code}  # {s.op}"]
        check = s.expr.zero_check
        if check:
            lines += [pad + f"if {codes[1]} == 0:  # counted; the entry raises",
                      pad + f"    cuda.atomic.add(flags, {self._slot(check)}, 1)"]
        if s.op == "pow" and dt is not None and dt.kind in "iu" and \
                not (isinstance(s.expr.operands[1], Const) and s.expr.operands[1].value >= 0):
            lines += [pad + f"if {codes[1]} < 0:  # negative integer power: the entry raises",
                      pad + f"    cuda.atomic.add(flags, {self._slot('pow')}, 1)"]
        return lines

    def _stmts(self, stmts, pad: str) -> list:
        return [line for s in stmts for line in self._stmt(s, pad)]

    def source(self) -> str:
        plan = self.plan
        body = self._row_kernel() if plan.row_dims else self._elementwise()
        names = " ".join(dict.fromkeys(op for _, op in plan.nodes))
        comment = ", ".join(f"%{i} {op}" for i, op in plan.nodes)
        dims = [f"n{k}" for k in range(self.rank)]
        args = [f"a{i}" for i in range(len(plan.inputs))]
        params = args + self.outs + (["flags"] if self.errors else []) + dims
        if self.two_stage:
            params.insert(len(args) + len(self.outs), "part")
        fm = ", fastmath=True" if self.fastmath else ""
        head = param_comment(plan, self.outs, SUFFIX)
        for dt in sorted(self.shared):
            head.append(f"    sh_{SUFFIX[dt]} = cuda.shared.array(ROW_THREADS, {NB[dt]})")
        for k, v in enumerate(plan.inputs):
            if not v.shape:
                head.append(f"    s_a{k} = a{k}[()]")
        lines = [f"@cuda.jit(cache=True{fm})",
                 f"def {plan.name}({', '.join(params)}):",
                 f"    # {names}: {comment}" +
                 (" (stage 2: the partials, then the rest)" if self.two_stage else "")]
        source = "\n".join(lines + head + body) + "\n"
        if not self.two_stage:
            return source
        params1 = args + ["part"] + (["flags"] if self.errors else []) + dims
        lines1 = [f"@cuda.jit(cache=True{fm})",
                  f"def {plan.name}_part({', '.join(params1)}):",
                  f"    # {names}: {comment} (stage 1: one partial per block)"]
        return "\n".join(lines1 + head + self.stage1) + "\n\n\n" + source

    def _elementwise(self) -> list:
        plan = self.plan
        total = " * ".join(f"n{k}" for k in range(self.rank)) or "1"
        lines = [f"    for e in range(cuda.grid(1), {total}, cuda.gridsize(1)):"]
        lines += _split("e", range(self.rank), " " * 8)
        lines += self._stmts(plan.stmts, " " * 8)
        for o, v in zip(self.outs, plan.outputs):
            lines.append(" " * 8 + f"{o}[{_index(plan.out_index)}] = v{v.id}")
        return lines

    def _row_kernel(self) -> list:
        plan = self.plan
        outer, rows = plan.outer, plan.row_dims
        n_rows = " * ".join(f"n{k}" for k in outer) or "1"
        length = " * ".join(f"n{k}" for k in rows)
        lines = ["    t = cuda.threadIdx.x",
                 f"    for row in range(cuda.blockIdx.x, {n_rows}, cuda.gridDim.x):  "
                 f"# one block per row"]
        lines += _split("row", outer, " " * 8)
        pad = " " * 8
        for step in plan.steps:
            if isinstance(step, Reduction):
                lines += self._reduction(step, length)
            elif isinstance(step, Write):  # a row-scalar extra output: every thread has it
                lines += [pad + "if t == 0:"] + self._writes([step], pad + "    ")
            else:
                lines += self._stmt(step, pad)
        root = plan.outputs[0]
        if plan.root_vector:
            lines.append(pad + f"for e in range(t, {length}, cuda.blockDim.x):  # output loop")
            lines += _split("e", rows, pad + "    ")
            if plan.stash is not None:  # this thread wrote it in the last reduction's loop
                lines.append(pad + f"    v{plan.stash} = out[{_index(plan.out_index)}]")
            lines += self._stmts(plan.tail, pad + "    ")
            lines.append(pad + f"    out[{_index(plan.out_index)}] = v{root.id}")
            lines += self._writes(plan.tail_writes, pad + "    ")
        else:
            lines += [pad + "if t == 0:",
                      pad + f"    out[{_index(plan.row_out_index)}] = r{root.id}"]
        return lines

    def _writes(self, writes, pad: str) -> list:
        return [pad + f"{self.outs[w.k]}[{_index(w.index)}] = {'v' if w.vector else 'r'}{w.id}"
                for w in writes]

    def _reduction(self, red: Reduction, length: str) -> list:
        pad = " " * 8
        dt = np.dtype(red.dtype).name
        acc = f"p{red.id}"
        self.shared.add(dt)
        block = f"block_{red.op}_{SUFFIX[dt]}"
        self.h.block.add(block)
        lines = [pad + f"{acc} = {literal(red.init, dt)}  # {red.op} over dims "
                       f"{self.plan.row_dims}: this thread's part",
                 pad + f"for e in range(t, {length}, cuda.blockDim.x):"]
        inner = pad + "    "
        lines += _split("e", self.plan.row_dims, inner)
        lines += self._stmts(red.stmts, inner)
        lines += self._writes(red.writes, inner)  # each element by the one thread that visits it
        if red.stash is not None:
            lines.append(inner + f"out[{_index(self.plan.out_index)}] = v{red.stash}  "
                                 f"# kept for the output loop")
        val = cast(self._read(red.source), red.source_dtype, dt)
        if red.source_dtype is not None and np.dtype(red.source_dtype) != np.dtype(dt):
            self.h.prelude.add(f"cast_{SUFFIX[dt]}")
        if red.op == "sum":
            step = f"{acc} + {val}"
        elif red.op == "prod":
            step = f"{acc} * {val}"
        else:
            step = self.h.call("maximum" if red.op == "amax" else "minimum", dt) + \
                f"({acc}, {val})"
        if dt == "int32" and red.op in ("sum", "prod"):
            step = f"np.int32({step})"
        lines.append(inner + f"{acc} = {step}")
        lines.append(pad + f"r{red.id} = {block}(sh_{SUFFIX[dt]}, {acc})  # the whole row's")
        if not self.two_stage:
            return lines
        # stage 1 is this loop over a grid-stride share of the row, one partial per block;
        # stage 2 (the kernel) reduces the partials instead, in a fixed order
        self.stage1 = ["    t = cuda.threadIdx.x"] + [line[4:] for line in lines[:-1]] + [
            f"    r{red.id} = {block}(sh_{SUFFIX[dt]}, {acc})",
            "    if t == 0:",
            f"        part[cuda.blockIdx.x] = r{red.id}"]
        self.stage1[2] = f"    for e in range(cuda.grid(1), {length}, cuda.gridsize(1)):"
        combine = step.replace(val, "part[e]")
        return [lines[0], pad + "for e in range(t, part.shape[0], cuda.blockDim.x):",
                inner + f"{acc} = {combine}  # the partials of stage 1", lines[-1]]


def _type(v: Var) -> str:
    dims = ",".join("1" if d == 1 else "n" for d in v.shape)
    return f"{SUFFIX[v.dtype.name]}[{dims}]"


def signature(plan: KernelPlan, errors: bool, stage: int = 0) -> tuple:
    """(dtype name, ndim) per array parameter, "int64" per size, as the kernel is called
    (``stage`` 1 or 2: the stages of a two-stage reduction)."""
    def ndim(v):  # a rank-generic kernel takes every array padded to its rank
        return plan.generic_rank if plan.generic_rank and v.shape else len(v.shape)
    arrays = [(v.dtype.name, ndim(v)) for v in plan.inputs]
    if stage != 1:
        arrays += [(v.dtype.name, ndim(v)) for v in plan.outputs]
    if stage:
        arrays.append((_reduction_dtype(plan), 1))
    if errors:
        arrays.append(("int64", 1))
    return tuple(arrays) + ("int64",) * len(plan.sizes)


def _reduction_dtype(plan: KernelPlan) -> str:
    return next(np.dtype(s.dtype).name for s in plan.steps if isinstance(s, Reduction))


# ---------------------------------------------------------------------------- the target


@functools.lru_cache(maxsize=None)
def helpers_digest() -> str:
    """A hash of the device helpers generated kernels inline. NOTE: numba-cuda's cache checks
    only the module's own file, so the header carries this: editing a helper changes the
    source, hence the module's name, and no stale machine code is loaded."""
    from tracejit.runtime import cuda_launch  # the geometry kernels are compiled with

    digest = hashlib.sha256()
    for path in (Path(__file__).parent / "cuda_prelude.py", Path(__file__).parent / "cuda_block.py",
                 Path(cuda_launch.__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


HEADER = '''"""Generated by tracejit (codegen/cuda.py): a CUDA kernel per fused group and node
kernel, and build(sz, consts), which configures each launch once and returns the entry (a
fixed launch list). Kernel comments name the IR nodes; sizes are runtime values (sz)."""
# device helpers: {digest}
import numpy as np
from numba import boolean, cuda, float32, float64, int32, int64  # noqa: F401

from tracejit.runtime.cuda_launch import (MAX_BLOCKS, PARTIALS, ROW_THREADS, THREADS,  # noqa
                                          TILE, grid, row_grid, tiles)
from tracejit.runtime import cuda_runner as rt
'''


class CudaTarget:
    """The CUDA target: what it runs natively (``entry.Target``) and its renderer.

    ``fastmath``: numba-cuda's all-or-nothing fastmath (flush-to-zero, approximate division
    and transcendentals); ``host_fallback``: may nodes without a CUDA kernel run as a host
    round trip (numpy between two copies)? Without it they raise NotImplementedError."""

    name = "cuda"

    def __init__(self, fastmath: bool = False, host_fallback: bool = True, **_ignored):
        self.fastmath = bool(fastmath)
        self.host_fallback = host_fallback
        self.helpers = Helpers()
        self._sources: dict = {}  # kernel name -> (source, error kinds)

    # -- capabilities (entry.Target)
    def renders(self, plan: KernelPlan) -> bool:
        try:
            if plan.kind == "fused":
                k = _Kernel(plan, self.helpers, self.fastmath)
                self._sources[plan.name] = (k.source(), tuple(k.errors))
            else:
                self._sources[plan.name] = cuda_node_kernels.source(plan, self.helpers)
        except Unsupported:
            return False
        return True

    def kernel_variant(self, plan: KernelPlan):
        return two_stage(plan)  # else one source serves every size

    def pad_at(self, plan: KernelPlan) -> int:
        # the grid-stride loop splits one flat index into all dims, so any dims may be added;
        # in front, consecutive threads still take consecutive elements of the last dim
        return 0

    def runs_natively(self, node: Node) -> str | None:
        if node.op == "matmul":
            a, b = node.inputs
            if a.dtype != b.dtype or a.dtype == np.bool_ or len(a.shape) < 2 or \
                    len(b.shape) < 2:
                return None
            return "matmul" if len(node.out.shape) == 2 else "batched_matmul"
        if node.op in VIEW_OPS:
            if node.op == "getitem" and (_basic_index(node.attr_dict["spec"]) is None or
                                         not node.out.shape):
                return None
            return "call"
        return None

    # -- rendering
    def render(self, entry: EntryPlan) -> CudaProgram:
        return _Entry(self, entry).program()


class _Entry:
    """The module: kernels, matmul kernels, and build(sz, consts) -> entry."""

    def __init__(self, target: CudaTarget, entry: EntryPlan):
        self.t = target
        self.entry = entry
        self.sizes = Sizes()
        self.setup: list = []  # build()'s lines: launchers configured once
        self.body: list = []  # entry()'s lines
        self.extra_kernels: dict = {}  # source -> name (matmul kernels, shared by text)
        self.signatures: dict = {}
        self.errors: list = []  # (exception name, message) per flag slot of the entry
        self.round_trips: list = []

    def _new_array(self, v: Var) -> str:
        k = self.entry.storage.get(v.id)
        if k is not None:
            return f"b{k}"
        return f"rt.empty({self.sizes.shape(v.shape)}, {NP[v.dtype.name]})"

    def _flags(self, kinds) -> str:
        """Slice of the entry's flag array for a kernel's error slots."""
        start = len(self.errors)
        for kind in kinds:
            self.errors.append(ZERO_ERRORS[kind] if kind in ZERO_ERRORS else kind)
        return f"flags[{start}:{start + len(kinds)}]"

    def program(self) -> CudaProgram:
        entry, sizes = self.entry, self.sizes
        graph = entry.graph
        names = {v.id: f"in{i}" for i, v in enumerate(graph.inputs)}
        launchers: dict = {}  # the launch line of each configured launcher -> its name
        for step in entry.steps:
            node = step.node
            t = f"t{node.out.id}"
            names[node.out.id] = t
            arg = [names[x.id] if isinstance(x, Var) else None for x in node.inputs]
            note = f"        # %{node.out.id}: {_type(node.out)} = {node.op}"
            if step.kind == "launch":
                plan = step.plan
                src, kinds = self.t._sources[step.call]
                if two_stage(plan):
                    self._two_stage(step, plan, arg, names, kinds, note)
                    continue
                self.signatures.setdefault(step.call, signature(plan, bool(kinds)))
                config = self._config(plan)
                key = f"{step.call}[{config}]"
                lname = launchers.get(key)
                if lname is None:  # one launcher per kernel and configuration
                    lname = launchers[key] = f"L{len(launchers)}"
                    self.setup.append(f"    {lname} = {key}")
                results = []
                for v in step.results:
                    names[v.id] = f"t{v.id}"
                    self.body.append(f"        t{v.id} = {self._new_array(v)}")
                    results.append(f"t{v.id}")
                flags = [self._flags(kinds)] if kinds else []
                dims = [sizes.ref(n) for n in plan.sizes]
                if plan.padding:  # a rank-generic kernel: views with size-1 dims in front
                    def padded(a, v, k=plan.padding):
                        return f"rt.pad({a}, {k})" if v.shape else a
                    arg = [padded(a, x) for a, x in zip(arg, node.inputs)]
                    results = [padded(a, v) for a, v in zip(results, step.results)]
                if plan.kind == "scatter_add":  # out starts as a copy of x
                    self.body.append(f"        rt.copy_into({arg[0]}, {results[0]})")
                self.body.append(note + f" ({step.call})")
                self.body.append(f"        {lname}({', '.join(arg + results + flags + dims)})")
            elif step.kind in ("matmul", "batched_matmul"):
                self._matmul(step, arg, t, note)
            elif step.kind == "call":
                self.body.append(note + " (a device view)")
                self.body.append(f"        {t} = {self._view(node, arg[0])}")
            elif step.kind == "const":
                names[node.out.id] = f"c{step.index}"
            else:  # a numpy fallback
                if not self.t.host_fallback:
                    raise NotImplementedError(
                        f"the CUDA backend has no kernel for %{node.out.id} {node.op} "
                        f"({_type(node.out)}); use the CPU backend (backend='cpu'), or "
                        f"host_fallback=True to run it on the host between copies")
                self.round_trips.append(node.op)
                # array operands only: the fallback keeps the node's scalars (entry.fallback)
                operands = ", ".join(a for a in arg if a is not None)
                results = [f"t{v.id}" for v in step.results]
                for v in step.results:
                    names[v.id] = f"t{v.id}"
                self.body.append(note + " -- HOST ROUND TRIP: device -> numpy -> device")
                self.body.append(f"        {', '.join(results)}, = rt.on_host("
                                 f"_fallback[{step.index}], {operands})")
        return self._module(names)

    def _two_stage(self, step, plan, arg, names, kinds, note) -> None:
        """Launch both stages of a two-stage reduction (see two_stage) into a partials buffer
        made once in build()."""
        call, k = step.call, len(self.setup)
        errors = bool(kinds)
        self.signatures.setdefault(f"{call}_part", signature(plan, errors, stage=1))
        self.signatures.setdefault(call, signature(plan, errors, stage=2))
        dt = NP[_reduction_dtype(plan)]
        self.setup += [f"    P{k} = rt.empty((PARTIALS,), {dt})  # stage 1's partials",
                       f"    L{k}a = {call}_part[PARTIALS, ROW_THREADS]",
                       f"    L{k}b = {call}[1, ROW_THREADS]"]
        (out,) = step.results
        t = names[out.id] = f"t{out.id}"
        self.body.append(f"        {t} = {self._new_array(out)}")
        flags = [self._flags(kinds)] if kinds else []
        dims = [self.sizes.ref(n) for n in plan.sizes]
        self.body.append(note + f" ({call}, two stages)")
        self.body.append(f"        L{k}a({', '.join(arg + [f'P{k}'] + flags + dims)})")
        self.body.append(f"        L{k}b({', '.join(arg + [t, f'P{k}'] + flags + dims)})")

    def _config(self, plan: KernelPlan) -> str:
        sizes = self.sizes
        if plan.kind == "fused" and plan.row_dims:
            rows = " * ".join(sizes.ref(plan.domain[k]) for k in plan.outer) or "1"
            return f"row_grid({rows}), ROW_THREADS"
        work = " * ".join(sizes.ref(n) for n in cuda_node_kernels.threads(plan)) or "1"
        return f"grid({work}), THREADS"

    def _view(self, node: Node, x: str) -> str:
        attrs = node.attr_dict
        if node.op == "reshape":
            return f"rt.reshape({x}, {self.sizes.shape(node.out.shape)})"
        if node.op == "permute":
            return f"rt.permute({x}, {tuple(attrs['perm'])!r})"
        if node.op == "expand":
            return f"rt.expand({x}, {self.sizes.shape(node.out.shape)})"
        if node.op == "getitem":
            return f"{x}[{_basic_index(attrs['spec'])}]"
        return x  # detach

    def _matmul(self, step, arg, t, note) -> None:
        node = step.node
        a, b = node.inputs
        out = node.out
        src, name = _matmul_kernel(a, b, out)
        name = self.extra_kernels.setdefault(src, name)
        batch = len(out.shape) - 2
        sig = tuple((v.dtype.name, len(v.shape)) for v in (a, b, out)) + \
            ("int64",) * (3 + batch)
        self.signatures.setdefault(name, sig)
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        dims = [self.sizes.ref(m), self.sizes.ref(n), self.sizes.ref(k)]
        bdims = [self.sizes.ref(d) for d in out.shape[:batch]]
        nb = " * ".join(bdims) or "1"
        lname = f"M{out.id}"
        self.setup.append(f"    {lname} = rt.matmul_launcher({name}, ({dims[1]}, {dims[0]}, "
                          f"{nb}))  # cuBLAS when cupy is importable, else the tiled kernel")
        self.body.append(f"        {t} = {self._new_array(out)}")
        self.body.append(note + f" (cuBLAS or {name})")
        self.body.append(f"        {lname}({arg[0]}, {arg[1]}, {t}, "
                         f"{', '.join(dims + bdims)})")

    def _module(self, names) -> CudaProgram:
        entry, graph = self.entry, self.entry.graph
        outs = [("None" if not isinstance(x, Var) else
                 f"rt.copy({names[x.id]})" if names[x.id].startswith("c") else names[x.id])
                for x in graph.outputs]
        params = [f"in{i}" for i in range(len(graph.inputs))] + \
            [f"b{i}" for i in range(len(entry.buffers))]
        ins = ", ".join(f"in{i}: {_type(v)}" for i, v in enumerate(graph.inputs))
        lines = ["def build(sz, consts, _fallback):",
                 '    """The launch list for the sizes sz: every launcher configured once."""']
        if entry.consts:
            lines.append("    " + ", ".join(f"c{i}" for i in range(len(entry.consts))) +
                         ", = consts  # on the device, copied once")
        if self.errors:
            lines.append(f"    flags = rt.flags({len(self.errors)})  # error counts, per slot")
            lines.append(f"    errors = {self.errors!r}")
        lines += self.setup
        lines.append("")
        lines.append(f"    def entry({', '.join(params)}):")
        lines.append(f"        # {ins}")
        if entry.buffers:
            lines.append("        # buffers (reused: work; results: out): " +
                         ", ".join(f"b{i}: {b.kind}" for i, b in enumerate(entry.buffers)))
        if self.errors:
            lines.append("        rt.clear(flags)")
        lines += self.body
        if self.errors:
            lines.append("        rt.raise_flagged(flags, errors)  # waits for the launches")
        lines.append(f"        return ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
        lines.append("    return entry")
        kernels = [self.t._sources[k.name][0] for k in entry.kernels] + list(self.extra_kernels)
        prelude = sorted(self.t.helpers.prelude)
        block = sorted(self.t.helpers.block)
        header = HEADER.format(digest=helpers_digest())
        if prelude:
            header += _import("tracejit.codegen.cuda_prelude", prelude)
        if block:
            header += _import("tracejit.codegen.cuda_block", block)
        source = header + "\n\n" + "\n\n".join(kernels + ["\n".join(lines) + "\n"])
        return CudaProgram(source, "build", tuple(self.sizes.values), entry.consts,
                           entry.fallbacks, False,
                           [k.name for k in entry.kernels] + list(self.extra_kernels.values()),
                           entry.buffers, signatures=self.signatures,
                           host_round_trips=self.round_trips)


def _import(module: str, names: list) -> str:
    lines, line = [], f"from {module} import ("
    indent = " " * len(line)
    for n in names:
        piece = n + ", "
        if len(line) + len(piece) > 99:
            lines.append(line.rstrip())
            line = indent
        line += piece
    lines.append(line.rstrip().rstrip(",") + ")")
    return "\n".join(lines) + "\n"


def _basic_index(spec) -> str | None:
    """Source of a basic index (ints and slices; no None, Ellipsis or tensor indices)."""
    basic, adv = spec
    if adv is not None or any(b is None or b is Ellipsis for b in basic):
        return None
    parts = [":".join("" if v is None else str(v) for v in b) if isinstance(b, tuple)
             else str(b) for b in basic]
    return ", ".join(parts) or "..."


def _matmul_kernel(a: Var, b: Var, out: Var) -> tuple:
    """(source, name) of a tiled shared-memory matmul kernel for these operand types: each
    block computes a TILE x TILE tile of out, stepping through K a tile at a time; a batched
    matmul takes its batch index from blockIdx.z (broadcast batch dims read index 0)."""
    dt = out.dtype.name
    batch = len(out.shape) - 2
    bnames = [f"q{d}" for d in range(batch)]

    def lead(v: Var) -> str:
        extra = batch - (len(v.shape) - 2)
        idx = ["0" if v.shape[d - extra] == 1 else f"q{d}" for d in range(extra, batch)]
        return "".join(f"{i}, " for i in idx)

    pa, pb = lead(a), lead(b)
    shape_key = "".join("1" if v.shape[i] == 1 else "n" for v in (a, b)
                        for i in range(len(v.shape) - 2))
    name = f"matmul_{SUFFIX[dt]}" + (f"_b{batch}_{shape_key}" if batch else "")
    acc_t = NP[dt]
    split = _split("cuda.blockIdx.z", range(batch), "    ", "q", "nb")
    params = ["a", "b", "out", "m", "n", "k"] + [f"nb{d}" for d in range(batch)]
    lines = [
        "@cuda.jit(cache=True)",
        f"def {name}({', '.join(params)}):",
        f"    # matmul {_type(a)} @ {_type(b)} -> {_type(out)}: a TILE x TILE tile of out "
        "per block, K a tile at a time",
        f"    sa = cuda.shared.array((TILE, TILE), {NB[dt]})",
        f"    sb = cuda.shared.array((TILE, TILE), {NB[dt]})",
        "    tx = cuda.threadIdx.x",
        "    ty = cuda.threadIdx.y",
        "    i = cuda.blockIdx.y * TILE + ty",
        "    j = cuda.blockIdx.x * TILE + tx",
    ] + split + [
        f"    acc = {acc_t}(0)",
        "    for k0 in range(0, k, TILE):",
        f"        sa[ty, tx] = a[{pa}i, k0 + tx] if i < m and k0 + tx < k else {acc_t}(0)",
        f"        sb[ty, tx] = b[{pb}k0 + ty, j] if k0 + ty < k and j < n else {acc_t}(0)",
        "        cuda.syncthreads()",
        "        for kk in range(TILE):",
        "            acc = " + ("np.int32(acc + sa[ty, kk] * sb[kk, tx])" if dt == "int32"
                               else "acc + sa[ty, kk] * sb[kk, tx]"),
        "        cuda.syncthreads()",
        "    if i < m and j < n:",
        f"        out[{''.join(f'{q}, ' for q in bnames)}i, j] = acc",
    ]
    return "\n".join(lines) + "\n", name


__all__ = ["CudaTarget", "CudaProgram", "literal", "signature"]
