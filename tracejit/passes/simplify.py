"""simplify: algebraic identities that remove work without changing any result, and small
powers computed without pow (within an ulp or two of numpy's np.power, see ``_power``).

x+0, x-0, x*1, x/1, x**1 -> x; x**2 -> x*x, x**3 -> x*x*x, x**4 -> (x*x)*(x*x), and for floats
x**-1 -> 1/x, x**-2 -> 1/(x*x), x**0.5 -> sqrt(x), x**-0.5 -> rsqrt(x) with pow's special
values, as torch's CPU kernel computes them; x*0 -> 0 for integers only (a float x may be inf
or nan); neg(neg x) -> x; permute of permute -> one permute (or none); reshape of reshape ->
one reshape; no-op casts, reshapes, expands and permutes disappear; a copy that only ops
writing new arrays read (and no output) is its input; a sum/prod/amax/amin over
no dims (``(loss * 0.7).sum()`` of a 0-d loss) is x itself, or a cast where the result type
differs (the sum of ints or bools is int64).
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
    fresh = _Fresh(graph)
    producers: dict = {}
    mapping: dict = {}  # var id -> replacement Var
    input_ids = {v.id for v in graph.inputs}
    output_ids = {x.id for x in graph.outputs if isinstance(x, Var)}
    readers: dict = {}  # var id -> the nodes reading it
    for node in graph.nodes:
        for x in node.inputs:
            if isinstance(x, Var):
                readers.setdefault(x.id, []).append(node)
    nodes = []

    for node in graph.nodes:
        inputs = tuple(substitute(x, mapping) for x in node.inputs)
        node = Node(node.out, node.op, inputs, node.attrs, node.loc)
        if node.op == "copy" and _copy_unneeded(node.out.id, readers, output_ids):
            mapping[node.out.id] = node.inputs[0]
            continue
        replacement = _rewrite(node, producers, fresh)
        if isinstance(replacement, list):  # new nodes, the last one binding node.out
            for extra in replacement[:-1]:
                producers[extra.out.id] = extra
                nodes.append(extra)
            replacement = replacement[-1]
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
    outputs = [substitute(x, mapping) for x in graph.outputs]
    if fresh.used:
        return _in_program_order(graph, nodes, outputs)
    return rebuild(graph, nodes, outputs)


def _copy_unneeded(vid: int, readers: dict, output_ids: set) -> bool:
    """A copy only ops that write new arrays read (directly or through views of it), and that
    is no output, is its input: nothing can tell the storage apart. (A gradient stored into
    ``.grad`` is a copy; when DDP then reads it only into its bucket's ``cat``, the copy was a
    kernel and a pass over every gradient of its own.)"""
    if vid in output_ids:
        return False
    for reader in readers.get(vid, ()):
        op = OPS[reader.op]
        if op.view:
            if not _copy_unneeded(reader.out.id, readers, output_ids):
                return False
        elif not op.fresh or op.donates or op.impure:
            return False
    return True


def _in_program_order(graph: Graph, nodes: list, outputs: list) -> Graph:
    """Renumber node values so ids increase in program order again after a rewrite added
    intermediates with new ids (fusion orders a group's nodes by id)."""
    next_id = max([v.id for v in graph.inputs] + [n.out.id for n in nodes], default=-1) + 1
    mapping: dict = {}
    renumbered = []
    for n in nodes:
        out = Var(next_id, n.out.shape, n.out.dtype, n.out.device)
        next_id += 1
        ins = tuple(substitute(x, mapping) for x in n.inputs)
        mapping[n.out.id] = out
        renumbered.append(Node(out, n.op, ins, n.attrs, n.loc))
    return rebuild(graph, renumbered, [substitute(x, mapping) for x in outputs])


class _Fresh:
    """New Var ids for the intermediates of a rewrite (above every id in the graph)."""

    def __init__(self, graph: Graph):
        ids = [v.id for v in graph.inputs] + [n.out.id for n in graph.nodes]
        self.next = max(ids, default=-1) + 1
        self.used = False

    def like(self, v: Var) -> Var:
        var = Var(self.next, v.shape, v.dtype, v.device)
        self.next += 1
        self.used = True
        return var

    def like_bool(self, v: Var) -> Var:
        return self.like(Var(v.id, v.shape, np.dtype(np.bool_), v.device))


def _power(node: Node, fresh: _Fresh):
    """``x ** y`` for a Python-number exponent y in {2, 3, 4, -1, -2, 0.5, -0.5}, without pow:
    the Node or the list of Nodes computing it, or None.

    These are the spellings torch's CPU kernel uses (pow_tensor_scalar_optimized_kernel), and
    they vectorise like any multiplication, where C pow is a library call per element. x*x,
    1/x and sqrt(x) are exactly numpy's np.power; x*x*x, (x*x)*(x*x), 1/(x*x) and 1/sqrt(x)
    round twice and differ from it by an ulp in about a third of the elements (np.power itself
    is not correctly rounded: float32 ** 3 is 1 ulp off the exact result in ~10% of elements).
    Special values are numpy's: x ** -0.5 selects pow's inf at +-0 and 0 at -inf (1/sqrt, and
    torch, give -inf at -0.0 and nan at -inf); (-inf) ** 0.5 is nan, as numpy's power takes a
    square root for 0.5.
    NOTE: only when x has the result's type (int ** 2.0 is float, int * int is not), and
    negative powers only for floats (integers to negative powers raise).
    """
    x, y = node.inputs
    out, loc = node.out, node.loc
    if not isinstance(x, Var) or x.dtype != out.dtype or isinstance(y, (Var, bool)):
        return None
    is_float = out.dtype.kind == "f"
    if y == 2:
        return Node(out, "mul", (x, x), (), loc)
    if y in (3, 4):
        sq = Node(fresh.like(out), "mul", (x, x), (), loc)
        last = (sq.out, x) if y == 3 else (sq.out, sq.out)
        return [sq, Node(out, "mul", last, (), loc)]
    if not is_float:
        return None
    if y == 0.5:
        return Node(out, "sqrt", (x,), (), loc)
    if y == -0.5:
        # NOTE: C pow's (-0.0) ** -0.5 is inf and (-inf) ** -0.5 is 0, where 1/sqrt gives -inf
        # and nan (torch's values): two selects keep numpy's, still no pow
        r = Node(fresh.like(out), "rsqrt", (x,), (), loc)
        zero = Node(fresh.like_bool(out), "eq", (x, 0.0), (), loc)
        at_zero = Node(fresh.like(out), "where", (zero.out, float("inf"), r.out), (), loc)
        neg_inf = Node(fresh.like_bool(out), "eq", (x, float("-inf")), (), loc)
        return [r, zero, at_zero, neg_inf,
                Node(out, "where", (neg_inf.out, 0.0, at_zero.out), (), loc)]
    if y == -1:
        return Node(out, "div", (1.0, x), (), loc)
    if y == -2:
        sq = Node(fresh.like(out), "mul", (x, x), (), loc)
        return [sq, Node(out, "div", (1.0, sq.out), (), loc)]
    return None


def _rewrite(node: Node, producers, fresh: _Fresh):
    """A Var that already holds the node's value, a cheaper Node (or a list of Nodes, the last
    binding the node's value), or None."""
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
        return _power(node, fresh)
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
