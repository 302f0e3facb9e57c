"""Compiled gradients for a traced function called from eager code (as torch.compile does).

When a traced function's inputs require grad and it does not run ``backward()`` itself, its
outputs need a ``grad_fn``. The first such call builds, from the function's optimised graph:

1. the **joint graph** ``(inputs, cotangents) -> (outputs, input gradients)``: the graph is
   replayed under a tracer and ``autograd.grad`` records the vjp rules after it, then the passes
   run over the whole (CSE shares values between the forward and the vjps);
2. a **partition** of it: nodes that do not depend on a cotangent form the *forward* graph, which
   also returns the values the rest needs (*residuals*: activations, random draws, saved
   transposes); the other nodes form the *backward* graph
   ``(inputs, residuals, cotangents) -> gradients``.

Both are fused and compiled like any graph. A call runs the forward graph; each differentiable
output gets a ``grad_fn`` that hands its gradient to one hub node per call, which holds the
residuals and runs the compiled backward graph once, after all output gradients have arrived
(an output that got none contributes zeros, as in torch.compile). Nothing is computed twice, and
random draws (dropout) reach the backward graph as residuals, so the gradients are those of the
masks the forward pass used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from tracejit import autograd, creation, ops
from tracejit.autograd import TapeNode, enable_grad, grad_mode
from tracejit.dispatch import current_tracer, tracing
from tracejit.ir import Graph, Var
from tracejit.tensor import Tensor

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


def build(graph: Graph, inputs: list, compile_graph, name: str) -> CompiledGrad:
    """Trace the joint graph of ``graph`` at ``inputs`` and split it (``compile_graph(g)`` turns
    a graph into a callable on arrays; ``name`` names the ``grad_fn``)."""
    from tracejit.passes import dce, run_pipeline

    # NOTE: tracing runs the ops, random draws included: the call itself must draw the numbers
    # that eager code would, so the generator is put back afterwards
    rng = creation._rng().bit_generator
    state = rng.state
    try:
        joint, n_out, diff, wrt, n_cot = _joint(graph, inputs)
    finally:
        rng.state = state
    joint = run_pipeline(joint)
    forward, backward = (dce(g) for g in _partition(joint, n_out, n_cot))
    has_random = any(ops.OPS[n.op].impure for n in graph.nodes)
    used = {x.id for n in backward.nodes for x in n.inputs if isinstance(x, Var)} | {
        x.id for x in backward.outputs if isinstance(x, Var)}
    reads = frozenset(i for i, v in enumerate(forward.inputs) if v.id in used)
    return CompiledGrad(forward, backward, _robust(forward, compile_graph),
                        _robust(backward, compile_graph), n_out, diff, wrt, has_random, graph,
                        _OutputOp(name), reads)


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


def _joint(graph: Graph, inputs: list):
    from tracejit.tracing import Tracer

    from .executor import replay

    tracer = Tracer(None, {})
    xs = []
    for name, t in zip(graph.input_names, inputs):
        x = Tensor._make(t._data)
        x.requires_grad = bool(t.requires_grad)
        tracer.add_argument(name, x)
        xs.append(x)
    with tracing(tracer):
        with enable_grad():
            outs = replay(graph, xs)
            diff = [k for k, o in enumerate(outs) if isinstance(o, Tensor) and o.requires_grad]
            cots = []
            for k in diff:
                c = Tensor._make(np.ones_like(outs[k]._data))
                tracer.add_argument(f"grad_out{k}", c)
                cots.append(c)
            wrt = [i for i, x in enumerate(xs) if x.requires_grad]
            grads = autograd.grad([outs[k] for k in diff], [xs[i] for i in wrt], cots,
                                  allow_unused=True) if diff and wrt else []
        # an input the outputs do not depend on gets no gradient (its .grad stays None)
        wrt = [i for i, g in zip(wrt, grads) if g is not None]
        grads = [g for g in grads if g is not None]
        joint, _, _ = tracer.finish(list(outs) + grads)
    return joint, len(outs), diff, wrt, len(cots)


def _partition(joint: Graph, n_out: int, n_cot: int):
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
        if node.op == "const" or ops.OPS[node.op].free_view:
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
            arrays.append(np.zeros(shape, dtype) if c is None else
                          c._data if c._data.flags.c_contiguous else c._data.copy())
        grads = cg.run_backward(*[x._data for x in inputs], *call.residuals, *arrays)
        result = [None] * len(inputs)
        for i, a in zip(cg.wrt, grads):
            result[i] = Tensor._make(np.asarray(a))
        return tuple(result)


@dataclass
class _Call:
    """What one call's backward needs: residuals, output shapes, gradients arrived so far."""

    cg: CompiledGrad
    residuals: tuple
    shapes: list
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
        outs = replay(cg.source_graph, list(inputs))
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
                   [(outs[k].shape, outs[k].dtype) for k in cg.differentiable])
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
    """A callable running ``graph`` on the reference interpreter."""
    return lambda *arrays: interpret(graph, list(arrays))


__all__ = ["CompiledGrad", "build", "call", "interpret_runner"]
