"""Compiled gradients for a traced function called from eager code (as torch.compile does):
building the graphs.

When a traced function's inputs require grad and it does not run ``backward()`` itself, its
outputs need a ``grad_fn``. The first such call builds, from the function's optimised graph:

1. the **joint graph** ``(inputs, cotangents) -> (outputs, input gradients)``: the graph is
   replayed under a tracer and ``autograd.grad`` records the vjp rules after it, then the passes
   run over the whole (CSE shares values between the forward and the vjps);
2. a **partition** of it (``passes/partition.py``): nodes that do not depend on a cotangent form
   the *forward* graph, which also returns the values the rest needs (*residuals*: activations,
   random draws, saved transposes); the other nodes form the *backward* graph
   ``(inputs, residuals, cotangents) -> gradients``.

Both are compiled like any graph, and run, by ``runtime/backward.py``. This is front-end work
(it traces), so it lives here: the runtime never imports the tracer or the passes.
"""

from __future__ import annotations

import numpy as np

from .. import autograd, creation
from ..autograd import enable_grad
from ..dispatch import tracing
from ..ir import Graph
from ..passes import dce, run_pipeline
from ..passes.partition import partition
from ..runtime.backward import CompiledGrad, compile_grad
from ..runtime.executor import replay
from ..tensor import Tensor, _host_data
from .tracer import Tracer


class NotCompilable(Exception):
    """The joint graph reached tensors that are not graph inputs: an autograd.Function's
    backward (or what its forward saved) reads a tensor from elsewhere (a closure, a global),
    which the compiled backward could not be given on later calls."""


def build(graph: Graph, inputs: list, compile_graph, name: str,
          regions: tuple = ()) -> CompiledGrad:
    """Trace the joint graph of ``graph`` at ``inputs`` and split it (``compile_graph(g)`` turns
    a graph into a callable on arrays; ``name`` names the ``grad_fn``; ``regions``: the
    autograd.Functions in ``graph``, called by the replay so their backward is recorded)."""
    # NOTE: tracing runs the ops, random draws included: the call itself must draw the numbers
    # that eager code would, so the generator is put back afterwards
    rng = creation._rng().bit_generator
    state = rng.state
    try:
        joint, n_out, diff, wrt, n_cot = _joint(graph, inputs, regions)
    finally:
        rng.state = state
    joint = run_pipeline(joint)
    forward, backward = (dce(g) for g in partition(joint, n_out, n_cot))
    return compile_grad(forward, backward, graph, n_out, diff, wrt, compile_graph, name,
                        regions)


def _joint(graph: Graph, inputs: list, regions: tuple = ()):
    """The joint graph ``(inputs, cotangents) -> (outputs, gradients)`` of ``graph`` at
    ``inputs``; how many outputs, which are differentiable, which inputs get gradients, and
    how many cotangents."""
    tracer = Tracer(None, {})
    xs = []
    for name, t in zip(graph.input_names, inputs):
        # the graph is the same on every device: CUDA inputs are traced as host copies
        x = Tensor._make(_host_data(t))
        x.requires_grad = bool(t.requires_grad)
        tracer.add_argument(name, x)
        xs.append(x)
    with tracing(tracer):
        with enable_grad():
            outs = replay(graph, xs, regions)
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
        if tracer.captured:  # see NotCompilable
            raise NotCompilable(", ".join(sorted({r.fn.__name__ for r in regions})))
        joint, _, _ = tracer.finish(list(outs) + grads)
    return joint, len(outs), diff, wrt, len(cots)
