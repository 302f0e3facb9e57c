"""dce: drop nodes whose values no output needs. Impure ops (random draws) stay, so the
generator advances exactly as it would eagerly."""

from __future__ import annotations

from ..ir import Graph, Var, rebuild
from ..ops import OPS


def dce(graph: Graph) -> Graph:
    live = {x.id for x in graph.outputs if isinstance(x, Var)}
    kept = []
    for node in reversed(graph.nodes):
        if node.out.id in live or OPS[node.op].impure:
            kept.append(node)
            live.update(x.id for x in node.inputs if isinstance(x, Var))
    kept.reverse()
    return rebuild(graph, kept)
