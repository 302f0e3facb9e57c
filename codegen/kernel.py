"""Kernels as target-neutral plans: what a kernel computes, before any target spells it.

A fused group (``tracejit.passes.fuse``) becomes a ``KernelPlan``: its loop domain (the dims,
which of them a row reduction walks, the sizes the call passes), how each operand is read (a
0-d scalar read once, an array read at the loop indices with broadcast dims pinned to 0), one
statement per IR node as a neutral expression (the op table's ``expr`` template, its operands
and the casts the dtype rules ask for), the reductions with their init values, the softmax
stash, where each extra output is written (``Write``) and the integer ``//`` / ``%`` divisors
to count. The single nodes that have a kernel but never fuse (unfold, fold, argmax/argmin,
gather, scatter_add) become a ``KernelPlan`` too, with their structural facts (window geometry,
the dim) in ``facts``.

No target text lives here except the op ``expr`` templates, which every target shares (each
spells the calls in them its own way: ``codegen/cpu.py`` CALLS). A renderer turns a plan into
source; ``KernelPlan.key()`` is what two kernels must share to be generated once.

>>> print(plan_kernel(fused_node))                # (x + b).relu()   # doctest: +SKIP
kernel k0_add_relu: domain (4, 8), elementwise
  v2 = (a0[i0, i1] + a1[i1])
  v3 = relu(v2)
  outputs %3
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from tracejit import ops
from tracejit.ir import Graph, Node, Var

SUM_BLOCK = 1024  # float32 sums add blocks this long in float32, then the blocks in float64
# ops LLVM-like optimisers fold in pairs when float math may be reassociated (see _reassociates)
_FOLDABLE = frozenset({"exp", "log", "log1p", "expm1", "pow", "sqrt", "rsqrt"})


class Unsupported(Exception):
    """A node the code generator does not lower (it runs through numpy instead)."""


# ---------------------------------------------------------------------------- operands


@dataclass(frozen=True)
class Arg:
    """Kernel input ``k`` read at ``index``: per dim of the array a loop dim, or None for 0
    (a broadcast dim of size 1, or a row dim read once per row)."""

    k: int
    index: tuple


@dataclass(frozen=True)
class Scalar:
    """A 0-d kernel input ``k``, read once before the loops."""

    k: int


@dataclass(frozen=True)
class Value:
    """The value statement ``id`` computed: per element (``vector``) or once per row."""

    id: int
    vector: bool


@dataclass(frozen=True)
class Const:
    """A Python scalar of the graph, typed by the cast its operand slot gets."""

    value: object


@dataclass(frozen=True)
class Expr:
    """``template.format(*operands)`` after each operand is cast ``casts[k] = (from, to)``
    (from None: a Const, rendered as a literal of type ``to``), and the whole result cast by
    ``result_cast`` when the dtype rule asks. ``zero_check``: an integer ``floordiv`` or
    ``remainder`` whose divisor (operand 1) is counted when 0, and raised after the loops."""

    template: str
    operands: tuple
    casts: tuple
    result_cast: tuple | None = None
    zero_check: str | None = None


@dataclass(frozen=True)
class Stmt:
    """One IR node of the group: ``value id = expr`` (``vector``: in the innermost loop)."""

    id: int
    op: str = field(metadata={"comment": True})  # only named in comments: not in the key
    vector: bool
    expr: Expr


@dataclass(frozen=True)
class Write:
    """A row kernel's extra output ``k`` (1 for the first) gets value ``id`` at ``index``: a
    vector value in the one loop of the kernel that writes it (the output loop or a reduction's),
    a row scalar (a step of its own) once per row, after the step that computes it."""

    k: int
    id: int
    vector: bool
    index: tuple


@dataclass(frozen=True)
class Reduction:
    """``id = op(source over the row dims)``, starting from ``init``; ``stmts`` are the vector
    statements its row loop computes first. ``stash``: the loop also writes that value into
    ``out`` for the output loop to read back (softmax's exp). ``blocked``: a float32 sum that
    adds blocks of SUM_BLOCK in float32 and the block totals in float64. ``writes``: the
    vector ``Write``s of extra outputs its loop makes."""

    id: int
    op: str
    dtype: np.dtype
    init: object
    source: object
    source_dtype: np.dtype
    stmts: tuple
    stash: int | None
    blocked: bool
    writes: tuple = ()


@dataclass
class KernelPlan:
    """One kernel, target-neutral. ``kind`` is "fused" or the op of a node kernel."""

    name: str
    kind: str
    nodes: tuple  # (value id, op) of the IR nodes it computes, for comments
    inputs: tuple  # Var per array parameter
    outputs: tuple  # Var per result: the root first, then a group's extra outputs
    domain: tuple  # loop sizes (fused: the group's full shape)
    sizes: tuple  # the size arguments a call passes after the arrays
    work: int  # elements the outer loop spreads over (0: no loop to spread)
    row_dims: tuple = ()
    reassociates: bool = False  # may float math be reassociated (only reductions gain)
    stmts: tuple = ()  # elementwise kernels: the vector statements, in order
    steps: tuple = ()  # row kernels: row statements, reductions and row-scalar Writes, in order
    tail: tuple = ()  # row kernels: vector statements of the output loop
    tail_writes: tuple = ()  # row kernels: the vector Writes of extra outputs the output loop
    #                          makes
    stash: int | None = None
    root_vector: bool = True  # the root is written per element (else once per row)
    out_index: tuple = ()  # index of every output in the innermost loop
    row_out_index: tuple = ()  # index of a per-row root
    zero_ops: tuple = ()  # integer ops counting zero divisors, in order of first use
    facts: dict = field(default_factory=dict)  # node kernels: geometry, dims
    # rank-generic (``pad_ranks``): the kernel takes every array with this many dims, all of
    # them generic; a call passes views of its operands with size-1 dims inserted at ``pad_at``
    generic_rank: int = 0
    pad_at: int = 0  # call-side only: not in the key

    @property
    def padding(self) -> int:
        """Size-1 dims a call inserts into each array operand (0 unless rank-generic)."""
        return self.generic_rank - len(self.outputs[0].shape) if self.generic_rank else 0

    @property
    def outer(self) -> tuple:
        return tuple(k for k in range(len(self.domain)) if k not in self.row_dims)

    @property
    def ids(self) -> tuple:
        return tuple(i for i, _ in self.nodes)

    def key(self) -> tuple:
        """What the kernel computes, without its name, IR numbers and sizes: equal keys render
        equal source (an unrolled loop's steps are one kernel)."""
        ids: dict = {}
        skip = {"name", "nodes", "domain", "sizes", "work", "pad_at"}
        if self.generic_rank:
            # every dim is generic, a padded or a real size-1 one too: the loop runs over its
            # size argument, and each array is read at the loop indices (see pad_ranks)
            def shape(v):
                return (v.dtype, (-1,) * len(self.domain) if v.shape else ())
            generic = {"inputs": tuple(shape(v) for v in self.inputs),
                       "outputs": tuple(shape(v) for v in self.outputs)}
            return tuple((f.name, generic[f.name] if f.name in generic else
                          _canonical(getattr(self, f.name), ids))
                         for f in dataclasses.fields(self) if f.name not in skip) + \
                (("domain", (-1,) * len(self.domain)),)
        return tuple((f.name, _canonical(getattr(self, f.name), ids))
                     for f in dataclasses.fields(self) if f.name not in skip) + \
            (("domain", tuple(1 if n == 1 else -1 for n in self.domain)),)

    def __str__(self) -> str:
        return describe(self)


def _canonical(x, ids: dict):
    """``x`` with value ids renumbered in order of appearance and Vars reduced to their type.
    (Every kernel's key is built when a graph is lowered, on a training step's second call:
    this dispatches on the exact type first.)"""
    t = type(x)
    if t is tuple or t is list:
        return tuple([_canonical(v, ids) for v in x])
    if t in _PLAIN:
        return (t, x)
    if t is float:  # by its text: nan keys equal
        return (t, repr(x))
    fields = _FIELDS.get(t)
    if fields is None:
        if isinstance(x, Var):  # before the dataclass case: a Var is one, and its sizes go
            return (x.dtype, tuple(1 if n == 1 else -1 for n in x.shape))
        if not (dataclasses.is_dataclass(x) and not isinstance(x, type)):
            if isinstance(x, dict):
                return tuple((k, _canonical(v, ids)) for k, v in x.items())
            if isinstance(x, np.dtype):
                return x
            return (type(x).__name__, repr(x))
        fields = _FIELDS[t] = tuple((f.name, f.name in ("id", "stash"))
                                    for f in dataclasses.fields(x)
                                    if not f.metadata.get("comment"))
    return (t.__name__,) + tuple([_renumber(getattr(x, name), ids) if renumbered else
                                  _canonical(getattr(x, name), ids)
                                  for name, renumbered in fields])


_PLAIN = frozenset({int, bool, str, type(None)})
_FIELDS: dict = {}  # dataclass type -> (field name, renumbered) of the fields a key holds


def _renumber(i, ids: dict):
    return None if i is None else ids.setdefault(i, len(ids))


# ---------------------------------------------------------------------------- fused groups


class _Planner:
    """Builds the plan of one fused group."""

    def __init__(self, node: Node):
        attrs = node.attr_dict
        self.name = attrs["kernel"]
        self.body = body = attrs["body"]
        self.root = body.nodes[-1]
        self.full, self.row_dims = tuple(attrs["full"]), tuple(attrs["row_dims"])
        self.rank = len(self.full)
        self.row_scalar = tuple(1 if i in self.row_dims else n for i, n in enumerate(self.full))
        self.arg_of = {v.id: k for k, v in enumerate(body.inputs)}
        self.producer = {n.out.id: n for n in body.nodes}
        # a multi-output kernel also writes these members (outputs out1, out2, ...)
        self.extras = tuple(body.outputs[1:])

    # -- operands
    def read(self, v: Var, vector: bool):
        if v.id in self.arg_of:
            k = self.arg_of[v.id]
            if not v.shape:  # read once, before the loops
                return Scalar(k)
            lead = self.rank - len(v.shape)
            return Arg(k, tuple(None if n == 1 or (not vector and lead + j in self.row_dims)
                                else lead + j for j, n in enumerate(v.shape)))
        return Value(v.id, self.is_vector(self.producer[v.id]))

    def is_vector(self, node: Node) -> bool:
        """Is ``node`` computed per element (else once per row of a row kernel)?"""
        if not self.row_dims:
            return True
        if ops.reduces(node):
            return False
        return node.out.shape == self.full and self.full != self.row_scalar

    def expr(self, node: Node, vector: bool) -> Expr:
        op = ops.OPS[node.op]
        attrs = node.attr_dict
        # (operand, dtype or None for a Python scalar, rank class)
        operands = [(self.read(x, vector), x.dtype, 2 if x.shape else 1) if isinstance(x, Var)
                    else (Const(x), None, 0) for x in node.inputs]
        src, dt, _ = operands[0]
        out_dt = node.out.dtype
        if node.op in ("copy", "detach"):
            return Expr("{0}", (src,), ((None, None),))
        if node.op == "cast":
            return Expr("{0}", (src,), ((dt, np.dtype(attrs["dtype"])),))
        if op.reduction and not ops.reduces(node):
            return Expr("{0}", (src,), ((dt, out_dt),))  # over no dims: x itself
        if node.op == "clamp":
            template, args, casts = "{0}", [src], [(dt, out_dt)]
            for bound, fn in (("min", "maximum"), ("max", "minimum")):
                if attrs.get(bound) is not None:
                    template = f"{fn}({template}, {{{len(args)}}})"
                    args.append(Const(attrs[bound]))
                    casts.append((None, out_dt))
            return Expr(template, tuple(args), tuple(casts))
        if op.expr is None or op.dtype_rule is None:
            raise Unsupported(node.op)
        keys = tuple((d, rc) if d is not None else ops._key(o.value) for o, d, rc in operands)
        casts, result = ops.elementwise_plan(op, keys)
        template = op.expr
        if node.op == "pow" and operands[1][2] < 2:
            # one exponent for every element: numpy's (and torch's) square root for 0.5
            template = "power_scalar({0}, {1})"
        zero = None
        if op.int_zero_division and np.dtype(casts[1]).kind in "iu" and \
                not (operands[1][1] is None and operands[1][0].value != 0):
            zero = node.op
        result_cast = (casts[0], result) if result != casts[0] and result != np.bool_ else None
        return Expr(template, tuple(o for o, _, _ in operands),
                    tuple((d, c) for (_, d, _), c in zip(operands, casts)), result_cast, zero)

    def vector_stmts(self, target: Var, done: set) -> list:
        """The vector statements computing ``target``, dependencies first (once each)."""
        node = self.producer.get(target.id)
        if node is None or not self.is_vector(node) or target.id in done:
            return []
        stmts = []
        for x in node.inputs:
            if isinstance(x, Var):
                stmts += self.vector_stmts(x, done)
        done.add(target.id)
        stmts.append(Stmt(node.out.id, node.op, True, self.expr(node, True)))
        return stmts

    def reassociates(self) -> bool:
        """May this kernel's float arithmetic be reassociated? Only reductions need it (to
        vectorise their accumulation), and only where the optimiser has no transcendental pair
        to fold: with ``reassoc`` LLVM rewrites exp(log(x)) to x (nan at x < 0), log(exp(x))
        to x (inf past overflow) and exp(a) * exp(b) to exp(a + b)."""
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

    def stash(self):
        """A vector value both the last reduction and the output need (softmax's exp): the
        reduction's loop writes it into ``out`` and the output loop reads it back instead of
        computing it again. None when there is no such value."""
        reductions = [n for n in self.body.nodes if ops.reduces(n)]
        if not reductions or not self.is_vector(self.root):
            return None
        x = reductions[-1].inputs[0]
        node = self.producer.get(x.id)
        if node is None or not self.is_vector(node) or x.dtype != self.root.out.dtype:
            return None
        # the root must need x through vector values only
        stack, seen = [self.root.out], set()
        while stack:
            v = stack.pop()
            if v.id == x.id:
                return x
            n = self.producer.get(v.id)
            if n is None or v.id in seen or not self.is_vector(n):
                continue
            seen.add(v.id)
            stack.extend(i for i in n.inputs if isinstance(i, Var))
        return None

    def reduction(self, node: Node, stash) -> Reduction:
        dt = node.out.dtype
        x = node.inputs[0]
        init = {"sum": 0, "prod": 1}.get(node.op)
        if init is None:  # amax / amin: the identity of maximum / minimum
            if dt.kind == "f":
                init = -math.inf if node.op == "amax" else math.inf
            elif dt == np.bool_:
                init = node.op != "amax"
            else:
                info = np.iinfo(dt)
                init = info.min if node.op == "amax" else info.max
        return Reduction(node.out.id, node.op, dt, init, self.read(x, True), x.dtype,
                         tuple(self.vector_stmts(x, set())),
                         x.id if stash is not None and x is stash else None,
                         node.op == "sum" and dt == np.float32)

    def out_index(self, vector: bool, out: Var | None = None) -> tuple:
        """The index ``out`` (default: the root) is written at, per element or once per row."""
        out = self.root.out if out is None else out
        if len(out.shape) == 0:
            return ()
        if vector or len(out.shape) == self.rank:
            return tuple(None if (not vector and k in self.row_dims) else k
                         for k in range(self.rank))
        return tuple(k for k in range(self.rank) if k not in self.row_dims)  # no keepdim

    def vector_writes(self, plan: KernelPlan, steps: list, slot: dict) -> tuple:
        """``steps`` with each vector export written by exactly one loop that computes it (a
        value can be computed again by several: layer_norm's x - mean by the variance's loop and
        the output loop): the output loop if it does (the stash it reads back included), else
        the last reduction's loop that does (plan.tail_writes, Reduction.writes)."""
        tail = {s.id for s in plan.tail} | ({plan.stash} if plan.stash is not None else set())
        writes: dict = {}  # step position (len(steps): the output loop) -> Writes
        for v in self.extras:
            if not self.is_vector(self.producer[v.id]):
                continue
            loops = [k for k, s in enumerate(steps) if isinstance(s, Reduction) and
                     any(t.id == v.id for t in s.stmts)]
            at = len(steps) if v.id in tail else loops[-1]  # every vector member is in a loop
            write = Write(slot[v.id], v.id, True, self.out_index(True, v))
            writes.setdefault(at, []).append(write)
        plan.tail_writes = tuple(writes.get(len(steps), ()))
        return tuple(dataclasses.replace(s, writes=tuple(writes[k])) if k in writes else s
                     for k, s in enumerate(steps))

    def plan(self) -> KernelPlan:
        nodes = tuple((n.out.id, n.op) for n in self.body.nodes)
        work = int(np.prod(self.full, dtype=np.int64)) if self.rank else 0
        plan = KernelPlan(self.name, "fused", nodes, tuple(self.body.inputs),
                          (self.root.out,) + self.extras, self.full, self.full, work,
                          self.row_dims, self.reassociates(), out_index=self.out_index(True),
                          row_out_index=self.out_index(False))
        if not self.row_dims:  # plain elementwise
            done: set = set()
            plan.stmts = tuple(s for v in plan.outputs for s in self.vector_stmts(v, done))
        else:
            stash = self.stash()
            slot = {v.id: k for k, v in enumerate(self.extras, 1)}
            steps = []
            for node in self.body.nodes:
                if self.is_vector(node):
                    continue
                steps.append(self.reduction(node, stash) if ops.reduces(node) else
                             Stmt(node.out.id, node.op, False, self.expr(node, False)))
                if node.out.id in slot:  # a row-scalar export: written once per row
                    steps.append(Write(slot[node.out.id], node.out.id, False,
                                       self.out_index(False, node.out)))
            plan.root_vector = self.is_vector(self.root)
            if plan.root_vector:
                done = set() if stash is None else {stash.id}
                plan.stash = None if stash is None else stash.id
                plan.tail = tuple(self.vector_stmts(self.root.out, done))
            plan.steps = self.vector_writes(plan, steps, slot)
        plan.zero_ops = tuple(dict.fromkeys(s.expr.zero_check for s in statements(plan)
                                            if s.expr.zero_check))
        return plan


def statements(plan: KernelPlan):
    """Every statement of a fused plan, in the order a renderer emits them."""
    yield from plan.stmts
    for step in plan.steps:
        if isinstance(step, Reduction):
            yield from step.stmts
        elif isinstance(step, Stmt):
            yield step
    yield from plan.tail


def rank_paddable(plan: KernelPlan) -> bool:
    """Could ``plan`` run at a higher rank, unchanged but for size-1 dims added to every
    operand? Plain elementwise kernels (no row dims) whose every array has the full shape or
    is 0-d: no broadcasting pins a dim of an operand to the domain's dims."""
    full = plan.domain
    return plan.kind == "fused" and not plan.row_dims and len(full) > 0 and \
        all(v.shape in ((), full) for v in plan.inputs) and \
        all(v.shape == full for v in plan.outputs)


def padded(plan: KernelPlan, rank: int, at: int = 0) -> KernelPlan:
    """``plan`` (``rank_paddable``) as a rank-generic kernel over ``rank`` dims: a call inserts
    size-1 dims at position ``at`` of each array operand (views, free for any strides) and
    passes size 1 for them. The loops visit the real elements in the same order."""
    pad = rank - len(plan.domain)
    assert pad >= 0 and rank_paddable(plan), (plan.name, rank)
    domain = plan.domain[:at] + (1,) * pad + plan.domain[at:]
    every = tuple(range(rank))  # a real size-1 dim is read at its loop index too (always 0)

    def operand(o):
        return Arg(o.k, every) if isinstance(o, Arg) else o
    stmts = tuple(dataclasses.replace(s, expr=dataclasses.replace(
        s.expr, operands=tuple(operand(o) for o in s.expr.operands))) for s in plan.stmts)
    return dataclasses.replace(plan, domain=domain, sizes=domain, stmts=stmts,
                               out_index=every, row_out_index=every, generic_rank=rank,
                               pad_at=at)


def pad_ranks(plans: dict, pad_at, variant) -> dict:
    """``plans`` (value id -> KernelPlan) with the elementwise kernels that differ only in
    their rank (an optimizer's update of 4-d, 2-d and 1-d parameters) made rank-generic
    (``padded``) to the largest rank among them, so that their keys, hence their source, are
    equal and one kernel serves them all. ``pad_at(plan)``: where the target lets a call insert
    the size-1 dims (None: this plan keeps its rank); ``variant(plan)``: the target's
    ``kernel_variant`` (kernels are shared within one variant only). A class of plans that
    already share one key is left as it is."""
    candidates = {i: (p, at) for i, p in plans.items()
                  if rank_paddable(p) and (at := pad_at(p)) is not None}
    if not candidates:
        return plans
    top = max(len(p.domain) for p, _ in candidates.values())
    classes: dict = {}  # (the key at the largest rank, variant) -> value ids
    for i, (p, at) in candidates.items():
        classes.setdefault((padded(p, top, at).key(), variant(p)), []).append(i)
    out = dict(plans)
    for members in classes.values():
        if len({plans[i].key() for i in members}) < 2:
            continue  # one kernel already (or one plan): nothing to share
        rank = max(len(plans[i].domain) for i in members)
        for i in members:
            out[i] = padded(plans[i], rank, candidates[i][1])
    return out


def param_comment(plan: KernelPlan, outs, short: dict) -> list:
    """A kernel's comment lines on its parameters, ``# a0: f32[n,1], a1: f32[] -> out: f32[n,1]``
    (sizes erased, 1s kept; ``short``: the target's dtype abbreviations); a rank-generic
    kernel's say first how its callers pad, and every array has ``generic_rank`` dims."""
    def type_of(v):
        dims = ["n"] * plan.generic_rank if plan.generic_rank and v.shape else \
            ["1" if d == 1 else "n" for d in v.shape]
        return f"{short[v.dtype.name]}[{','.join(dims)}]"
    lines = [f"    # rank-generic: callers pad every array to {plan.generic_rank} dims (views "
             f"with size-1 dims added)"] if plan.generic_rank else []
    lines.append("    # " + ", ".join(f"a{i}: {type_of(v)}" for i, v in enumerate(plan.inputs)) +
                 " -> " + ", ".join(f"{o}: {type_of(v)}" for o, v in zip(outs, plan.outputs)))
    return lines


def plan_kernel(node: Node) -> KernelPlan:
    """The plan of a fused node's kernel; Unsupported when a node in it has no template."""
    return _Planner(node).plan()


# ---------------------------------------------------------------------------- node kernels


def _window(node: Node, image_shape) -> tuple:
    """An unfold/fold node's geometry (the facts: output position (oh, ow) and kernel tap (i, j)
    read input pixel (h, w) = (oh * sh + i * dh - ph, ow * sw + j * dw - pw)) and its output
    positions (OH, OW): sizes, which stay out of the facts (and so out of the kernel's key: the
    same layer on a smaller image is the same kernel)."""
    a = node.attr_dict
    oh, ow = ops._window_out(node.op, image_shape[2:], a["kernel"], a["dilation"],
                             a["padding"], a["stride"])
    return {"kernel": a["kernel"], "dilation": a["dilation"], "padding": a["padding"],
            "stride": a["stride"]}, [oh, ow]


def _elements(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def plan_node_kernel(node: Node) -> KernelPlan | None:
    """The plan of an unfold/fold/max_pool2d(_grad)/argmax/argmin/gather/scatter_add node's
    kernel, or None when it has none (it then runs through numpy)."""
    op, a, out = node.op, node.attr_dict, node.out
    name = f"{op}{out.id}"
    arrays = tuple(x for x in node.inputs if isinstance(x, Var))

    def plan(sizes, work, **facts):
        return KernelPlan(name, op, ((out.id, op),), arrays, (out,), tuple(sizes), tuple(sizes),
                          work, facts=facts)

    if op == "unfold":
        x = arrays[0]
        win, positions = _window(node, x.shape)
        return plan(list(x.shape) + positions, _elements(out.shape), **win,
                    pad_value=a.get("pad_value", 0.0))
    if op == "fold":
        win, positions = _window(node, out.shape)
        return plan(list(out.shape) + positions, _elements(arrays[0].shape), **win)
    if op in ("max_pool2d", "max_pool2d_grad"):
        x = arrays[-1]  # the image (max_pool2d_grad: after the gradient)
        win, positions = _window(node, x.shape)
        kk = a["kernel"][0] * a["kernel"][1]
        return plan(list(x.shape) + positions, _elements(positions) * x.shape[0] * x.shape[1]
                    * kk, **win)
    if op in ("argmax", "argmin"):
        x = arrays[0]
        if a["dim"] is None or len(x.shape) < 2:  # whole-array arg-reductions stay on numpy
            return None
        dim = ops.norm_dim(op, a["dim"], len(x.shape))
        return plan(x.shape, _elements(x.shape), dim=dim, keepdim=bool(a["keepdim"]))
    if op in ("gather", "scatter_add"):
        x, index = arrays[:2]
        rank = len(index.shape)
        if rank == 0:
            return None
        dim = ops.norm_dim(op, a["dim"], rank)
        sizes = list(index.shape) + [x.shape[dim]]
        if op == "gather":
            return plan(sizes, _elements(out.shape), dim=dim)
        # the loop over dim is innermost (two of its steps could add to one element), so a
        # rank-1 index has no loop to spread
        return plan(sizes, _elements(index.shape) if rank > 1 else 0, dim=dim)
    return None


def plan_kernels(graph: Graph) -> dict:
    """Value id -> KernelPlan for each fused node and node kernel of ``graph`` that has one."""
    plans = {}
    for node in graph.nodes:
        try:
            plan = plan_kernel(node) if node.op == "fused" else plan_node_kernel(node)
        except Unsupported:
            plan = None
        if plan is not None:
            plans[node.out.id] = plan
    return plans


# ---------------------------------------------------------------------------- printing


def _operand(o, casts) -> str:
    src, dst = casts
    if isinstance(o, Const):
        text = repr(o.value)
    elif isinstance(o, Arg):
        text = f"a{o.k}[{', '.join('0' if d is None else f'i{d}' for d in o.index)}]"
    elif isinstance(o, Scalar):
        text = f"a{o.k}"
    else:
        text = f"{'v' if o.vector else 'r'}{o.id}"
    return f"{text}:{np.dtype(dst).name}" if dst is not None and src != dst else text


def describe_expr(e: Expr) -> str:
    """A neutral expression, for people: ``add(a0[i0, i1], a1[i1])``."""
    text = e.template.format(*(_operand(o, c) for o, c in zip(e.operands, e.casts)))
    return f"{text}:{np.dtype(e.result_cast[1]).name}" if e.result_cast else text


def describe(plan: KernelPlan) -> str:
    """A plan, for people (``TRACEJIT_DEBUG=passes`` prints it)."""
    head = f"kernel {plan.name}: domain {plan.domain}"
    if plan.kind != "fused":
        return head + f", {plan.kind} {plan.facts}"
    lines = [head + (f", rows over dims {plan.row_dims}" if plan.row_dims else ", elementwise") +
             (f", rank-generic (calls add {plan.padding} size-1 dims at {plan.pad_at})"
              if plan.generic_rank else "")]

    def stmt(s, pad="  "):
        lines.append(f"{pad}{'v' if s.vector else 'r'}{s.id} = {describe_expr(s.expr)}")

    def write(w, pad="  "):
        index = ", ".join("0" if d is None else f"i{d}" for d in w.index)
        lines.append(f"{pad}out{w.k}[{index}] = {'v' if w.vector else 'r'}{w.id}")
    for s in plan.stmts:
        stmt(s)
    for step in plan.steps:
        if isinstance(step, Reduction):
            source = _operand(step.source, (step.source_dtype, step.dtype))
            lines.append(f"  r{step.id} = {step.op}({source}) over rows from {step.init!r}" +
                         (" (blocked)" if step.blocked else "") +
                         (f", stash v{step.stash}" if step.stash is not None else "") +
                         (":" if step.stmts else ""))
            for s in step.stmts:
                stmt(s, "    ")
            for w in step.writes:
                write(w, "    ")
        elif isinstance(step, Write):
            write(step)
        else:
            stmt(step)
    if plan.steps and plan.root_vector:
        lines.append("  output loop" + (f" (v{plan.stash} read back from out)"
                                        if plan.stash is not None else "") + ":")
    for s in plan.tail:
        stmt(s, "    ")
    for w in plan.tail_writes:
        write(w, "    ")
    lines.append(f"  outputs {', '.join(f'%{v.id}' for v in plan.outputs)}")
    return "\n".join(lines)
