"""Compiled gradients for a traced function called from eager code: running them.

When a traced function's inputs require grad and it does not run ``backward()`` itself, its
outputs need a ``grad_fn``. ``tracing/backward.py`` builds, on the first such call, the joint
graph of the forward and the vjps and partitions it into a *forward* graph (which also returns
the *residuals* the rest needs: activations, random draws, saved transposes) and a *backward*
graph ``(inputs, residuals, cotangents) -> gradients``; ``compile_grad`` here compiles both.

A call (``call``) runs the forward graph; each differentiable output gets a ``grad_fn`` that
hands its gradient to one hub node per call, which holds the residuals and runs the compiled
backward graph once, after all output gradients have arrived (an output that got none
contributes zeros, as in torch.compile). Nothing is computed twice, and random draws (dropout)
reach the backward graph as residuals, so the gradients are those of the masks the forward pass
used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from tracejit import autograd, ops
from tracejit.autograd import TapeNode, enable_grad, grad_mode
from tracejit.dispatch import current_tracer
from tracejit.ir import Graph, Var
from tracejit.tensor import Tensor

from . import arrays as A
from .interpret import interpret


@dataclass
class CompiledGrad:
    """A specialization's forward and backward graphs, compiled, and how their values line up."""

    forward: Graph  # inputs -> outputs + residuals
    backward: Graph  # inputs + residuals + cotangents -> gradients
    run_forward: object  # arrays -> arrays
    run_backward: object
    n_outputs: int
    differentiable: list  # output positions that get a grad_fn (one cotangent each)
    wrt: list  # input positions the gradients are for, in backward-output order
    has_random: bool  # the graph draws random numbers (no replay for double backward)
    source_graph: Graph  # the unfused forward graph (replayed for double backward)
    op: object  # the autograd op of the outputs' grad_fn (see _OutputOp)
    reads: frozenset  # positions of the inputs the backward graph reads
    regions: tuple = ()  # autograd.Function regions of source_graph (executor.replay)


def compile_grad(forward: Graph, backward: Graph, source_graph: Graph, n_outputs: int,
                 differentiable: list, wrt: list, compile_graph, name: str,
                 regions: tuple = ()) -> CompiledGrad:
    """Partitioned forward and backward graphs (``tracing/backward.py`` builds them from the
    optimised graph ``source_graph``) compiled for calls: ``compile_graph(g)`` turns a graph into
    a callable on arrays, ``name`` names the ``grad_fn``."""
    has_random = any(ops.OPS[n.op].impure for n in source_graph.nodes)
    used = {x.id for n in backward.nodes for x in n.inputs if isinstance(x, Var)} | {
        x.id for x in backward.outputs if isinstance(x, Var)}
    reads = frozenset(i for i, v in enumerate(forward.inputs) if v.id in used)
    return CompiledGrad(forward, backward, _robust(forward, compile_graph),
                        _robust(backward, compile_graph), n_outputs, differentiable, wrt,
                        has_random, source_graph, _OutputOp(name), reads, tuple(regions))


def _robust(graph: Graph, compile_graph):
    """``graph`` compiled; a compile failure (our bug, never the user's) falls back, loudly, to
    the reference interpreter."""
    from .compile import CompileError

    runner = compile_graph(graph)

    def run(*arrays):
        nonlocal runner
        try:
            return runner(*arrays)
        except CompileError as e:
            warnings.warn(f"tracejit: compiling a gradient graph failed, it runs on the "
                          f"reference interpreter instead: {e}", RuntimeWarning, stacklevel=2)
            runner = interpret_runner(graph)
            return runner(*arrays)

    return run


class _OutputOp:
    """The autograd op of each differentiable output (its ``grad_fn``): it hands the output's
    gradient to the call's hub and passes a dummy gradient on to it."""

    saves_out = False

    def __init__(self, name: str):
        self.name = "compiled_" + "".join(c if c.isalnum() else "_" for c in name)

    @staticmethod
    def vjp(g, out, hub, k: int, call):
        prev = call.cots.get(k)
        call.cots[k] = g if prev is None else prev + g
        return (Tensor._make(np.zeros((), hub.dtype)),)


class _HubOp:
    """The autograd op behind all outputs of one call: the engine reaches it after every
    output's node, so the backward graph runs once with all output gradients."""

    name = "compiled_graph_backward"
    saves_out = False

    @staticmethod
    def vjp(g, out, *inputs, call):
        cg = call.cg
        cots, call.cots = call.cots, {}
        if grad_mode.enabled or current_tracer() is not None:
            return _differentiable_vjp(cg, inputs, cots)
        arrays = []
        for k, (shape, dtype) in zip(cg.differentiable, call.shapes):
            c = cots.get(k)
            # an output no gradient came through gets zeros, as in torch.compile
            # NOTE: a broadcast (zero-stride) gradient is copied: kernels expect real layouts
            # (np.ascontiguousarray would also turn a 0-d gradient into a 1-d one)
            arrays.append(A.zeros(shape, dtype, call.device) if c is None else
                          A.contiguous(c._data))
        grads = cg.run_backward(*[x._data for x in inputs], *call.residuals, *arrays)
        result = [None] * len(inputs)
        for i, a in zip(cg.wrt, grads):
            result[i] = Tensor._make(a if A.on_device(a) else np.asarray(a))
        return tuple(result)


@dataclass
class _Call:
    """What one call's backward needs: residuals, output shapes, gradients arrived so far."""

    cg: CompiledGrad
    residuals: tuple
    shapes: list
    device: bool  # the arrays live on the GPU
    cots: dict = field(default_factory=dict)  # output position -> its gradient


def _differentiable_vjp(cg: CompiledGrad, inputs, cots: dict):
    """The backward pass recorded for a higher derivative (``create_graph=True``) or inside a
    trace: replay the forward graph through eager autograd and differentiate it."""
    from .executor import replay

    if cg.has_random:
        raise NotImplementedError(
            "backward(create_graph=True) through a traced function that draws random numbers "
            "(dropout, randn...) is not supported: the replayed forward pass would draw new "
            "numbers. Run the function eagerly (tracejit.eager()) for higher derivatives.")
    with enable_grad():
        outs = replay(cg.source_graph, list(inputs), cg.regions)
        wrt = [inputs[i] for i in cg.wrt]
        grads = autograd.grad([outs[k] for k in cots], wrt, list(cots.values()),
                              create_graph=True, allow_unused=True)
    result = [None] * len(inputs)
    for i, gx in zip(cg.wrt, grads):
        result[i] = gx
    return tuple(result)


def call(cg: CompiledGrad, inputs: list) -> list:
    """Run the forward graph; differentiable outputs get a ``grad_fn`` leading to one hub node
    whose backward runs the compiled backward graph."""
    arrays = cg.run_forward(*[t._data for t in inputs])
    outs = arrays[:cg.n_outputs]
    results = [Tensor._make(a) if isinstance(x, Var) else x
               for a, x in zip(outs, cg.forward.outputs[:cg.n_outputs])]
    if not cg.differentiable:
        return results
    record = _Call(cg, tuple(arrays[cg.n_outputs:]),
                   [(tuple(outs[k].shape), outs[k].dtype) for k in cg.differentiable],
                   A.on_device(outs[cg.differentiable[0]]))
    hub = Tensor._make(np.zeros((), results[cg.differentiable[0]].dtype))
    hub._grad_fn = node = TapeNode(_HubOp, list(inputs), {"call": record}, hub._data, hub._version)
    # the hub checks the versions of what the backward graph reads, as eager autograd checks
    # saved tensors; the other inputs may be updated in place (written back) meanwhile
    read = {id(inputs[i]._version) for i in cg.reads}
    node.versions = [(counter, seen) for counter, seen in node.versions if id(counter) in read]
    hub.requires_grad = True
    for k in cg.differentiable:
        out = results[k]
        out._grad_fn = TapeNode(cg.op, [hub], {"k": k, "call": record}, out._data, out._version)
        out.requires_grad = True
    return results


def interpret_runner(graph: Graph):
    """A callable running ``graph`` on the reference interpreter (device arrays: on host
    copies, the results copied back)."""
    def on_host(*arrays):
        return interpret(graph, list(arrays))

    def run(*arrays):
        if any(A.on_device(a) for a in arrays):
            return A.host_runner(on_host, True)(*arrays)
        return on_host(*arrays)
    return run


__all__ = ["CompiledGrad", "call", "compile_grad", "interpret_runner"]
