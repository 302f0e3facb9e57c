"""fold: evaluate nodes whose operands are all constants, at trace time, into ``const`` nodes."""

from __future__ import annotations

from ..ir import Const, Graph, Node, Var, rebuild
from ..ops import OPS, compute

MAX_FOLDED_ELEMENTS = 1 << 16  # larger results stay computed at run time (graphs stay small)


def fold(graph: Graph) -> Graph:
    consts: dict = {}  # var id -> array
    nodes = []
    for node in graph.nodes:
        op = OPS[node.op]
        if node.op == "const":
            consts[node.out.id] = node.attr_dict["value"].array
        elif not op.impure and all(not isinstance(x, Var) or x.id in consts
                                       for x in node.inputs) and \
                node.out.shape is not None and _size(node.out.shape) <= MAX_FOLDED_ELEMENTS:
            args = [consts[x.id] if isinstance(x, Var) else x for x in node.inputs]
            value = compute(op, args, node.attr_dict)
            node = Node(node.out, "const", (), (("value", Const(value)),), node.loc)
            consts[node.out.id] = node.attr_dict["value"].array
        nodes.append(node)
    return rebuild(graph, nodes)


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
