"""The reference backend: run a Graph node by node with the op table's numpy implementations.

Every other backend is tested against this one.

>>> interpret(graph, [np.ones((2, 3), np.float32)])   # doctest: +SKIP
[array(...)]
"""

from __future__ import annotations

import numpy as np

from tracejit import ops
from tracejit.errors import GraphRuntimeError, enter_node, exit_node, graph_error
from tracejit.ir import Graph, Var, defined_vars

__all__ = ["GraphRuntimeError", "interpret", "node_error", "run_node"]


def node_error(node, exc: BaseException) -> GraphRuntimeError:
    """The error of a graph node that failed: names the node (``%3 gather``), and the user line
    that created it (``node.loc``); of ``exc``'s type as well (see ``errors.graph_error``)."""
    if isinstance(exc, GraphRuntimeError):
        return exc
    msg = str(exc)
    where = f"\n  created at {node.loc}" if node.loc and node.loc not in msg else ""
    return graph_error(f"node %{node.out.id} ({node.op}) failed: {msg}{where}", exc)


def run_node(node, values: list) -> np.ndarray:
    if node.op == "const":
        return node.attr_dict["value"].array
    op = ops.OPS[node.op]
    token = enter_node(node.loc)  # op errors point at the line that created the node
    try:
        out = ops.compute(op, values, node.attr_dict)
    except Exception as e:
        raise node_error(node, e) from e
    finally:
        exit_node(token)
    if out.shape != node.out.shape or out.dtype != node.out.dtype:
        raise GraphRuntimeError(
            f"node %{node.out.id} ({node.op}) produced {out.dtype}{list(out.shape)} but the graph "
            f"says {node.out.type}: the op's shape/dtype rule and implementation disagree")
    return out


def interpret(graph: Graph, args) -> list:
    """Outputs of ``graph`` for input arrays ``args`` (one per graph input)."""
    if len(args) != len(graph.inputs):
        raise ValueError(f"graph takes {len(graph.inputs)} inputs, got {len(args)}")
    env = {}
    for v, a in zip(graph.inputs, args):
        env[v.id] = a
    for node in graph.nodes:
        vals = [env[x.id] if isinstance(x, Var) else x for x in node.inputs]
        if node.op == "fused":  # a kernel: its body node by node (errors name the inner node)
            results = interpret(node.attr_dict["body"], vals)
            for v, r in zip(defined_vars(node), results):
                env[v.id] = r
            continue
        env[node.out.id] = run_node(node, vals)
    outs = [env[x.id] if isinstance(x, Var) else x for x in graph.outputs]
    # constants are shared and read-only: results get their own copy, as eager ones would
    return [o.copy() if isinstance(o, np.ndarray) and not o.flags.writeable else o
            for o in outs]
