"""cse: nodes computing the same op on the same operands with the same attributes become one.
Impure ops (random draws) are never merged."""

from __future__ import annotations

from ..ir import Graph, Var, rebuild, substitute
from ..ops import OPS


def _operand_key(x):
    # 1, 1.0 and True hash alike in Python but are different operands here, and so are
    # 0.0 and -0.0 (1 / (x * -0.0) has the other sign): floats are keyed by their repr
    if isinstance(x, Var):
        return ("var", x.id)
    return (type(x).__name__, repr(x) if isinstance(x, float) else x)


def cse(graph: Graph) -> Graph:
    seen: dict = {}
    mapping: dict = {}
    nodes = []
    for node in graph.nodes:
        inputs = tuple(substitute(x, mapping) for x in node.inputs)
        if inputs != node.inputs:
            node = type(node)(node.out, node.op, inputs, node.attrs, node.loc)
        if not OPS[node.op].impure:
            key = (node.op, tuple(_operand_key(x) for x in inputs),
                   tuple((k, _operand_key(v)) for k, v in node.attrs), node.out.type)
            prev = seen.get(key)
            if prev is not None:
                mapping[node.out.id] = prev
                continue
            seen[key] = node.out
        nodes.append(node)
    return rebuild(graph, nodes, [substitute(x, mapping) for x in graph.outputs])
