"""verify: the graph is well formed — SSA, every use defined before it, and every node's type
what its op's shape/dtype rule says."""

from __future__ import annotations

from ..ir import Graph, Var, defined_vars
from ..ops import OPS


class IRError(ValueError):
    """A malformed graph."""


def verify(graph: Graph, after: str | None = None) -> Graph:
    """Check ``graph``; raise ``IRError`` naming the node and the problem. Returns the graph."""
    ctx = f" (after pass {after})" if after else ""
    defined: dict = {}

    def check_use(x, where):
        if isinstance(x, Var):
            d = defined.get(x.id)
            if d is None:
                raise IRError(f"{where}: uses %{x.id}, which is not defined before it{ctx}")
            if d != x:
                raise IRError(f"{where}: uses %{x.id} as {x.type} but it is defined as "
                              f"{d.type}{ctx}")

    if len(graph.inputs) != len(graph.input_names):
        raise IRError(f"graph has {len(graph.inputs)} inputs but {len(graph.input_names)} names"
                      f"{ctx}")
    for v in graph.inputs:
        if v.id in defined:
            raise IRError(f"input %{v.id} is defined twice{ctx}")
        defined[v.id] = v
    for node in graph.nodes:
        where = f"node %{node.out.id} ({node.op})"
        for v in defined_vars(node):
            if v.id in defined:
                raise IRError(f"{where}: %{v.id} is assigned twice (not SSA){ctx}")
        op = OPS.get(node.op)
        if op is None:
            raise IRError(f"{where}: unknown op {node.op!r}{ctx}")
        for x in node.inputs:
            check_use(x, where)
        avals = [(x.shape, x.dtype) if isinstance(x, Var) else x for x in node.inputs]
        try:
            shape, dtype = op.infer(avals, **node.attr_dict)
        except Exception as e:
            raise IRError(f"{where}: its operands do not fit the op: {e}{ctx}") from e
        if tuple(shape) != node.out.shape or dtype != node.out.dtype:
            raise IRError(f"{where}: declared {node.out.type} but the op gives "
                          f"{Var(0, tuple(shape), dtype).type}{ctx}")
        for v in defined_vars(node):  # a multi-output kernel defines several
            defined[v.id] = v
    for i, x in enumerate(graph.outputs):
        check_use(x, f"output {i}")
    return graph
