"""simplify: algebraic identities that remove work without changing any result.

x+0, x-0, x*1, x/1, x**1 -> x; x**2 -> x*x; x**0.5 -> sqrt(x) for floats (numpy and torch
take a square root there too, so (-inf)**0.5 is nan, not C pow's inf); x*0 -> 0 for integers
only (a float x may be inf or nan); neg(neg x) -> x; permute of permute -> one permute (or
none); reshape of reshape -> one reshape; no-op casts, reshapes, expands and permutes disappear;
a sum/prod/amax/amin over no dims (``(loss * 0.7).sum()`` of a 0-d loss) is x itself, or a cast
where the result type differs (the sum of ints or bools is int64).
A node is only replaced by a value of exactly its type, and never so that a graph output
becomes an alias of a graph input.
"""

from __future__ import annotations

import numpy as np

from ..ir import Const, Graph, Node, Var, rebuild, substitute
from ..ops import OPS


def _is_scalar(x, value) -> bool:
    if isinstance(x, Var) or isinstance(x, bool):
        return False
    return x == value


def _const_value(x, producers):
    if isinstance(x, Var):
        node = producers.get(x.id)
        if node is not None and node.op == "const":
            return node.attr_dict["value"].array
    return None


def _is(x, value, producers) -> bool:
    """Is operand ``x`` the number ``value`` (a Python scalar, or a constant filled with it)?"""
    if _is_scalar(x, value):
        return True
    arr = _const_value(x, producers)
    return arr is not None and arr.dtype != np.bool_ and arr.size > 0 and bool(np.all(arr == value))


def simplify(graph: Graph) -> Graph:
    producers: dict = {}
    mapping: dict = {}  # var id -> replacement Var
    input_ids = {v.id for v in graph.inputs}
    output_ids = {x.id for x in graph.outputs if isinstance(x, Var)}
    nodes = []

    for node in graph.nodes:
        inputs = tuple(substitute(x, mapping) for x in node.inputs)
        node = Node(node.out, node.op, inputs, node.attrs, node.loc)
        replacement = _rewrite(node, producers)
        if isinstance(replacement, Var):
            ok = replacement.shape == node.out.shape and replacement.dtype == node.out.dtype
            if ok and not (node.out.id in output_ids and replacement.id in input_ids):
                mapping[node.out.id] = replacement
                continue
            if ok and OPS[node.op].reduction:  # an identity reduction that must stay a value
                node = Node(node.out, "copy", (replacement,), (), node.loc)
        elif isinstance(replacement, Node):
            node = replacement
        producers[node.out.id] = node
        nodes.append(node)
    return rebuild(graph, nodes, [substitute(x, mapping) for x in graph.outputs])


def _rewrite(node: Node, producers):
    """A Var that already holds the node's value, a cheaper Node, or None."""
    op, ins, out = node.op, node.inputs, node.out
    attrs = node.attr_dict
    if op == "add":
        if _is(ins[1], 0, producers):
            return ins[0]
        if _is(ins[0], 0, producers):
            return ins[1]
    elif op == "sub" and _is(ins[1], 0, producers):
        return ins[0]
    elif op == "mul":
        for a, b in ((ins[0], ins[1]), (ins[1], ins[0])):
            if _is(b, 1, producers):
                return a
            if _is(b, 0, producers) and out.dtype.kind in "iub":
                return Node(out, "const", (), (("value", Const(np.zeros(out.shape, out.dtype))),),
                            node.loc)
    elif op == "div" and _is(ins[1], 1, producers):
        return ins[0]
    elif op == "pow":
        if _is(ins[1], 1, producers):
            return ins[0]
        # NOTE: only when x has the result's type: int ** 2.0 is float, int * int is not
        if _is_scalar(ins[1], 2) and isinstance(ins[0], Var) and ins[0].dtype == out.dtype:
            return Node(out, "mul", (ins[0], ins[0]), (), node.loc)
        if _is_scalar(ins[1], 0.5) and isinstance(ins[0], Var) and ins[0].dtype == out.dtype \
                and out.dtype.kind == "f":
            return Node(out, "sqrt", (ins[0],), (), node.loc)
    elif OPS[op].reduction and not attrs["dims"]:
        # NOTE: a reduction over no dims has no row for a kernel to walk: it is elementwise
        x = ins[0]
        if x.dtype == out.dtype:
            return x
        return Node(out, "cast", (x,), (("dtype", out.dtype),), node.loc)
    elif op == "neg":
        inner = producers.get(ins[0].id) if isinstance(ins[0], Var) else None
        if inner is not None and inner.op == "neg":
            return inner.inputs[0]
    elif op in ("cast", "reshape", "expand", "permute"):
        x = ins[0]
        if op == "cast" and x.dtype == attrs["dtype"]:
            return x
        if op in ("reshape", "expand") and x.shape == out.shape:
            return x
        if op == "permute":
            perm = attrs["perm"]
            inner = producers.get(x.id)
            if inner is not None and inner.op == "permute":
                inner_perm = inner.attr_dict["perm"]
                perm = tuple(inner_perm[p] for p in perm)
                x = inner.inputs[0]
                if perm == tuple(range(len(perm))):
                    return x
                return Node(out, "permute", (x,), (("perm", perm),), node.loc)
            if perm == tuple(range(len(perm))):
                return x
        if op == "reshape":
            inner = producers.get(x.id)
            if inner is not None and inner.op == "reshape":
                src = inner.inputs[0]
                if src.shape == out.shape:
                    return src
                return Node(out, "reshape", (src,), (("shape", out.shape),), node.loc)
    return None
