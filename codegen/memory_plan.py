"""Memory planning: which results of an entry plan get a buffer, and which buffers share storage.

Fresh arrays are expensive (a new large array is an mmap whose pages fault on first touch), so
an intermediate lives in a ``work`` buffer the runtime keeps per thread and reuses every call,
and buffers whose lifetimes do not overlap share one storage slot. What escapes the call — an
output, or anything an output may be a view of — never lives in reused storage: a large output
is an ``out`` buffer from the caching allocator (``runtime/memory.py``), a small one a fresh
array. Whether a step's result is a view of its input depends on how the target runs it
(``EntryPlan`` step kinds), so this runs on the entry plan, not the graph.

An input the graph updates in place (an optimizer's parameter, ``p -= lr * p.grad``) can have
its new value written straight into its own array by the elementwise kernel computing it
(``write_in_place``), instead of into a fresh array the runtime copies back after the call:
when nothing reads the old value after that kernel, the kernel reads it only at the index it
writes, and no step after it can raise (a failed call must leave the inputs as they were: the
executor re-runs the graph on them to name the failing node). Whether two input arrays share
memory is known only at run time: the runtime passes a private copy of a written input that
does (``runtime/compile.py`` ``Runner``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracejit import ops
from tracejit.ir import Var, defined_vars

from .entry import EntryPlan, Step
from .kernel import Arg, Scalar, statements

POOLED_OUTPUT_MIN_BYTES = 1 << 20  # outputs at least this large come from the caching allocator


@dataclass
class Buffer:
    """An array the runtime passes to the entry: ``work`` (reused every call, in storage
    ``slot``) or ``out`` (a fresh result from the caching allocator)."""

    kind: str
    shape: tuple
    dtype: np.dtype
    slot: int = -1


def alias_roots(entry: EntryPlan) -> dict:
    """Var id -> ids of the buffers its array may share memory with."""
    roots: dict = {}
    for step in entry.steps:
        node = step.node
        ins = [x for x in node.inputs if isinstance(x, Var)]
        op = ops.OPS[node.op]
        if op.view and step.kind == "call" or step.donated:
            # a view the target makes, or a result written into a donated array: input 0's
            roots[node.out.id] = set().union(*(roots.get(x.id, {x.id}) for x in ins[:1]))
        elif not op.fresh:
            # numpy fallbacks may return views of any operand: assume they do
            roots[node.out.id] = {node.out.id}.union(*(roots.get(x.id, {x.id}) for x in ins))
        else:
            for v in defined_vars(node):
                roots[v.id] = {v.id}
    return roots


def stored(step: Step) -> tuple:
    """The results a step writes into an array it is given (kernels and np.dot's ``out``)."""
    if step.kind == "launch":
        return step.results
    if step.kind in ("matmul", "batched_matmul"):
        return (step.node.out,)
    return ()


def donations(entry: EntryPlan) -> None:
    """Mark the fallback steps whose op ``donates`` (its impl may write the result into input
    0's array) and whose input 0 is a fresh array of this entry that no later step, result or
    view reads: an all-reduce of a bucket's concatenated gradients then reduces in place."""
    graph = entry.graph
    roots = alias_roots(entry)
    made = {v.id for s in entry.steps if s.kind != "const" for v in s.results}  # not inputs
    # what each array root is still read through after each step: any value rooted in it
    readers: dict = {}
    for k, step in enumerate(entry.steps):
        for x in step.node.inputs:
            if isinstance(x, Var):
                for r in roots.get(x.id, {x.id}):
                    readers[r] = k
    for x in graph.outputs:
        if isinstance(x, Var):
            for r in roots.get(x.id, {x.id}):
                readers[r] = len(entry.steps)
    for k, step in enumerate(entry.steps):
        x = step.node.inputs[0] if step.node.inputs else None
        if step.kind != "fallback" or not ops.OPS[step.node.op].donates or \
                not isinstance(x, Var) or roots.get(x.id) != {x.id} or x.id not in made:
            continue
        if readers.get(x.id) == k and sum(isinstance(i, Var) and i.id == x.id
                                          for i in step.node.inputs) == 1:
            step.donated = True
            entry.fallbacks[step.index].donated = True


def may_raise(step: Step) -> bool:
    """Can running this step raise (numpy, a node kernel's index checks, an integer division
    by zero or an integer negative power a fused kernel counts)?"""
    if step.kind == "fallback":
        return True
    if step.kind != "launch":
        return False  # library calls on static shapes
    plan = step.plan
    return plan.kind != "fused" or bool(plan.zero_ops) or any(
        op == "pow" for _, op in plan.nodes) and any(v.dtype.kind in "iub" for v in plan.inputs)


def _reads_at_its_index(plan, k: int, out: Var) -> bool:
    """Does elementwise ``plan`` read its array input ``k`` only at the element it writes
    ``out`` at (a 0-d one once, before anything is written)?"""
    if not out.shape:  # read into a scalar before the loops, if at all
        return not plan.domain
    same = plan.out_index
    for s in statements(plan):
        for o in s.expr.operands:
            if isinstance(o, Scalar) and o.k == k:
                return False
            if isinstance(o, Arg) and o.k == k and (len(o.index) != len(same) or any(
                    i != d and not (i is None and plan.domain[d] == 1)
                    for i, d in zip(o.index, same))):
                return False
    return True


def write_in_place(entry: EntryPlan, updates) -> None:
    """Fill ``entry.written`` (value id -> graph input position): the new values of inputs
    updated in place (``updates``: (input position, output position) pairs, a CompiledGraph's
    ``mutated``) that their kernel writes into the input's own array (see the module
    docstring). The entry then returns that array as the output, and the runtime's write-back
    finds nothing to copy."""
    graph = entry.graph
    roots = alias_roots(entry)
    readers: dict = {}  # array root -> the steps reading it (len(steps): an output)
    for k, step in enumerate(entry.steps):
        for x in step.node.inputs:
            if isinstance(x, Var):
                for r in roots.get(x.id, {x.id}):
                    readers.setdefault(r, set()).add(k)
    for x in graph.outputs:
        if isinstance(x, Var):
            for r in roots.get(x.id, {x.id}):
                readers.setdefault(r, set()).add(len(entry.steps))
    made_at = {v.id: k for k, s in enumerate(entry.steps) for v in s.results}
    last_raise = max((k for k, s in enumerate(entry.steps) if may_raise(s)), default=-1)
    uses = [x.id for x in graph.outputs if isinstance(x, Var)]
    for inp, pos in updates:
        x, v = graph.inputs[inp], graph.outputs[pos]
        k = made_at.get(v.id) if isinstance(v, Var) else None
        if k is None or k <= last_raise or uses.count(v.id) != 1 or v.shape != x.shape or \
                v.dtype != x.dtype or roots.get(v.id) != {v.id}:
            continue
        step = entry.steps[k]
        plan = step.plan
        if step.kind != "launch" or plan.kind != "fused" or plan.row_dims or step.donated:
            continue
        if any(j > k for j in readers.get(x.id, ())):
            continue  # the old value is read later
        arrays = [a for a in step.node.inputs if isinstance(a, Var)]
        at = [j for j, a in enumerate(arrays) if a.id == x.id]
        if any(x.id in roots.get(a.id, {a.id}) and a.id != x.id for a in arrays) or \
                len(at) > 1 or at and not _reads_at_its_index(plan, at[0], v):
            continue  # read through a view, twice, or at another index
        entry.written[v.id] = inp


def place_pieces(entry: EntryPlan) -> None:
    """Fill ``entry.pieces``: the inputs of a 1-d ``cat`` (DDP's bucket of flattened
    gradients) whose producing kernel or matmul can write them straight into the cat's array,
    so the cat copies nothing. Each piece is a stored result (or its reshape to 1-d) of the
    cat's dtype that nothing else reads, a fresh array of this entry; the cat's array is then
    made before the first of them is computed. All of a cat's inputs qualify, or none is
    placed."""
    uses = entry.graph.users()  # a piece is used once: by its cat (or its reshape), no output
    roots = alias_roots(entry)
    steps = {s.node.out.id: s for s in entry.steps}
    stored_ids = {v.id for s in entry.steps for v in stored(s)}

    def source(x: Var):
        """The stored result that cat input ``x`` is, or is the reshape of (read by that
        reshape alone); None where it is neither."""
        step = steps.get(x.id)
        if step is not None and step.kind == "call" and step.node.op == "reshape":
            y = step.node.inputs[0]
            if not isinstance(y, Var) or uses.get(y.id) != 1:
                return None
            x = y
        if x.id in stored_ids and x.id not in entry.written and roots.get(x.id) == {x.id}:
            return x
        return None

    for step in entry.steps:
        node = step.node
        if node.op != "cat" or step.kind != "call" or len(node.out.shape) != 1:
            continue
        placed, offset = {}, 0
        for x in node.inputs:
            src = source(x) if isinstance(x, Var) and uses.get(x.id) == 1 else None
            if src is None or src.dtype != node.out.dtype or src.id in placed:
                break
            placed[src.id] = offset
            offset += int(np.prod(src.shape, dtype=np.int64))
        else:
            for vid, off in placed.items():
                entry.pieces[vid] = (node.out.id, off)


def plan_memory(entry: EntryPlan, updates=(), pieces: bool = False) -> EntryPlan:
    """Fill ``entry.buffers`` and ``entry.storage`` (value id -> buffer index); a stored result
    without a buffer is a fresh array. Marks donated arrays first (``donations``), then the
    new values of ``updates`` written into their inputs' arrays (``write_in_place``) and, with
    ``pieces``, the cats' pieces written into the cat's array (``place_pieces``): neither gets
    a buffer."""
    graph = entry.graph
    donations(entry)
    if updates:
        write_in_place(entry, updates)
    if pieces:
        place_pieces(entry)
    roots = alias_roots(entry)
    outputs = {x.id for x in graph.outputs if isinstance(x, Var)}
    # which values may be held in reusable buffers: not outputs, nor anything an output views
    escaping = set()
    for i in outputs:
        escaping |= roots.get(i, {i})
    position = {v.id: k for k, n in enumerate(graph.nodes) for v in defined_vars(n)}
    last_use: dict = {}
    for k, node in enumerate(graph.nodes):
        for x in node.inputs:
            if isinstance(x, Var):
                for r in roots.get(x.id, {x.id}):
                    last_use[r] = k
    entry.buffers, entry.storage = [], {}
    work = []  # (buffer index, nbytes, first, last)
    for step in entry.steps:
        for v in stored(step):
            if v.id in entry.written or v.id in entry.pieces:
                continue
            nbytes = int(np.prod(v.shape, dtype=np.int64)) * v.dtype.itemsize
            if v.id in escaping:
                if nbytes < POOLED_OUTPUT_MIN_BYTES or v.id not in outputs:
                    continue  # a fresh array
                entry.buffers.append(Buffer("out", v.shape, v.dtype))
            else:
                entry.buffers.append(Buffer("work", v.shape, v.dtype))
                k = position[v.id]
                work.append((len(entry.buffers) - 1, nbytes, k, last_use.get(v.id, k)))
            entry.storage[v.id] = len(entry.buffers) - 1
    for (index, *_), slot in zip(work, plan_slots([w[1:] for w in work])):
        entry.buffers[index].slot = slot
    return entry


def plan_slots(buffers) -> list:
    """Assign workspace buffers to storage slots by liveness.

    ``buffers``: (nbytes, first_def, last_use) in definition order. Returns one slot index per
    buffer; two buffers share a slot only if one's last use comes strictly before the other's
    definition (a kernel never writes storage it is still reading).
    """
    slots: list = []  # [size, free_after]
    assignment = []
    for nbytes, first, last in buffers:
        best = None
        for k, (size, free_after) in enumerate(slots):
            if free_after < first and (best is None or abs(size - nbytes) <
                                       abs(slots[best][0] - nbytes)):
                best = k
        if best is None:
            slots.append([nbytes, last])
            best = len(slots) - 1
        else:
            slots[best][0] = max(slots[best][0], nbytes)
            slots[best][1] = last
        assignment.append(best)
    return assignment
