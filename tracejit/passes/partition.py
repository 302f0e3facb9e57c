"""partition: split a joint forward+backward graph into a forward graph, which also returns
the values the backward needs (*residuals*), and a backward graph that reads them.

Nodes that do not depend on a cotangent are the forward part. What the backward nodes read from
it is saved as a residual, except constants and free views (reshape, transpose...), which the
backward graph computes again instead: a view costs nothing, a saved one would be a copy.
Used by the compiled gradients of traced functions (``tracing/backward.py``).
"""

from __future__ import annotations

from ..ir import Graph, Var
from ..ops import OPS


def partition(joint: Graph, n_out: int, n_cot: int) -> tuple:
    """(forward, backward) graphs of a joint graph whose last ``n_cot`` inputs are cotangents
    and whose outputs are ``n_out`` results followed by the gradients."""
    n_in = len(joint.inputs) - n_cot
    needs_cot = {v.id for v in joint.inputs[n_in:]}
    for node in joint.nodes:
        if any(isinstance(x, Var) and x.id in needs_cot for x in node.inputs):
            needs_cot.add(node.out.id)
    fwd_nodes = [n for n in joint.nodes if n.out.id not in needs_cot]
    bwd_nodes = [n for n in joint.nodes if n.out.id in needs_cot]
    grads = joint.outputs[n_out:]

    # what the backward nodes read from the forward part is saved (a residual), except
    # constants and views (reshape, transpose...), which the backward graph makes again for free
    produced = {n.out.id: n for n in fwd_nodes}
    copied, residuals = {}, {}
    stack = [x for n in bwd_nodes for x in n.inputs] + list(grads)
    while stack:
        x = stack.pop()
        if not isinstance(x, Var) or x.id not in produced or x.id in residuals or \
                x.id in copied:
            continue
        node = produced[x.id]
        if node.op == "const" or OPS[node.op].free_view:
            copied[x.id] = node
            stack.extend(node.inputs)
        else:
            residuals[x.id] = x
    residuals = list(residuals.values())
    inputs, names = joint.inputs[:n_in], joint.input_names[:n_in]
    forward = Graph(inputs, names, tuple(fwd_nodes),
                    tuple(joint.outputs[:n_out]) + tuple(residuals))
    backward = Graph(inputs + tuple(residuals) + joint.inputs[n_in:],
                     names + tuple(f"saved{v.id}" for v in residuals) +
                     joint.input_names[n_in:],
                     tuple(n for n in fwd_nodes if n.out.id in copied) + tuple(bwd_nodes),
                     tuple(grads))
    return forward, backward
