"""Memory planning: which results of an entry plan get a buffer, and which buffers share storage.

Fresh arrays are expensive (a new large array is an mmap whose pages fault on first touch), so
an intermediate lives in a ``work`` buffer the runtime keeps per thread and reuses every call,
and buffers whose lifetimes do not overlap share one storage slot. What escapes the call — an
output, or anything an output may be a view of — never lives in reused storage: a large output
is an ``out`` buffer from the caching allocator (``runtime/memory.py``), a small one a fresh
array. Whether a step's result is a view of its input depends on how the target runs it
(``EntryPlan`` step kinds), so this runs on the entry plan, not the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracejit import ops
from tracejit.ir import Var, defined_vars

from .entry import EntryPlan, Step

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
        if op.view and step.kind == "call":  # a view the target makes: of its first input
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


def plan_memory(entry: EntryPlan) -> EntryPlan:
    """Fill ``entry.buffers`` and ``entry.storage`` (value id -> buffer index); a stored result
    without a buffer is a fresh array."""
    graph = entry.graph
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
