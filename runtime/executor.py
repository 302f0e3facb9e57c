"""Runs a specialization's graph on tensors: the compiled runner when a backend provided one,
else the reference interpreter. When the outputs need a ``grad_fn`` (inputs require grad and the
function runs no backward itself), the specialization's forward and backward graphs run
instead (``runtime/backward.py``); a function that also sets ``.grad`` or updates in place an
input that requires grad is replayed op by op through eager autograd."""

from __future__ import annotations

import warnings

import numpy as np

from tracejit import ops
from tracejit.autograd import grad_mode
from tracejit.ir import Var
from tracejit.tensor import Tensor

from . import backward
from .compile import CompileError
from .interpret import GraphRuntimeError, interpret


def replay(graph, inputs: list) -> list:
    """Run ``graph`` op by op on Tensors through ``ops.apply``: autograd records it, and so
    does a tracer, if one is active (a graph replayed inside a traced function)."""
    tracer = ops.state.tracer
    env = {v.id: t for v, t in zip(graph.inputs, inputs)}
    for node in graph.nodes:
        if node.op == "const":
            t = Tensor._make(np.array(node.attr_dict["value"].array))
            env[node.out.id] = t if tracer is None else tracer.constant(t)
            continue
        args = [env[x.id] if isinstance(x, Var) else x for x in node.inputs]
        try:
            env[node.out.id] = ops.apply(ops.OPS[node.op], *args, **node.attr_dict)
        except Exception as e:
            where = f"\n  created at {node.loc}" if node.loc else ""
            raise GraphRuntimeError(f"node %{node.out.id} ({node.op}) failed: {e}{where}") from e
    return [env[x.id] if isinstance(x, Var) else x for x in graph.outputs]


def execute(spec, inputs: list) -> list:
    """Outputs (Tensors, or Python values for constant outputs) of ``spec.graph``."""
    graph = spec.graph
    if grad_mode.enabled and not spec.ran_backward and any(t.requires_grad for t in inputs):
        # in-place updates of inputs that carry no gradient (BatchNorm's running statistics)
        # are ordinary outputs of the forward graph, written back after the call
        if spec.grad_writes or spec.compile_graph is None or any(
                inputs[i].requires_grad for i, _ in spec.mutated):
            return replay(spec.optimized, inputs)  # the unfused graph: its ops have vjps
        if spec.compiled_grad is None:
            spec.compiled_grad = backward.build(spec.optimized, inputs, spec.compile_graph,
                                                spec.name)
        if not any(i in spec.compiled_grad.reads for i, _ in spec.mutated):
            return backward.call(spec.compiled_grad, inputs)
        return replay(spec.optimized, inputs)  # the backward reads an input updated in place
    arrays = None
    if spec.runner is not None:
        try:
            arrays = spec.runner(*[t._data for t in inputs])
        except CompileError as e:  # our bug, never the user's: fall back, loudly, never wrong
            warnings.warn(f"tracejit: compiling a graph failed, it runs on the reference "
                          f"interpreter instead: {e}", RuntimeWarning, stacklevel=4)
            spec.runner = None
    if arrays is None:
        arrays = interpret(graph, [t._data for t in inputs])
    return [Tensor._make(a) if isinstance(x, Var) else x for a, x in zip(arrays, graph.outputs)]
