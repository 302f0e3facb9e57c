"""Where every op goes: ``apply(op, *inputs, **attrs)`` runs it eagerly (numpy, recording the
autograd tape) or, inside a traced function, hands it to the tracer recording the graph.

The tracer slot is a ``contextvars.ContextVar``: each thread (and asyncio task, and
data-parallel worker thread) sees only its own tracer, so two threads tracing at once never
record into each other's graphs, nor does eager code see another thread's tracer.

>>> from tracejit import dispatch, ops
>>> dispatch.apply(ops.OPS["neg"], tracejit.ones(2)).tolist()     # doctest: +SKIP
[-1.0, -1.0]
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np

from . import autograd
from .ops import OpDef, compute

_TRACER: contextvars.ContextVar = contextvars.ContextVar("tracejit.tracer", default=None)
current_tracer = _TRACER.get  # the hot path: one C call (~40 ns), no attribute lookups


@contextlib.contextmanager
def tracing(tracer):
    """Send this context's ops to ``tracer`` (None: run them eagerly) until the block ends."""
    token = _TRACER.set(tracer)
    try:
        yield tracer
    finally:
        _TRACER.reset(token)


def apply(op: OpDef, *inputs, **attrs):
    """Run ``op`` on ``inputs`` (Tensors, or Python scalars for elementwise ops)."""
    tracer = current_tracer()
    if tracer is not None:
        return tracer.record(op, inputs, attrs)
    return eager(op, inputs, attrs)


# True once a CUDA tensor has existed in this process (set by tracejit.tensor). Until then
# CPU ops pay one global check for devices, not a look at every input.
cuda_in_use = False

# The CUDA backend of eager ops and device copies (runtime/cuda_eager.py), registered by
# tracejit.cuda_ops when tracejit is imported. NOTE: a slot, not an import: core modules never
# import the runtime (tests/test_layers.py).
cuda_backend = None


def _on_cuda(inputs) -> bool:
    ndarray = np.ndarray
    for x in inputs:
        d = getattr(x, "_data", None)
        if d is not None and type(d) is not ndarray and not isinstance(d, ndarray):
            return True
    return False


def eager(op: OpDef, inputs: tuple, attrs: dict):
    """``op`` computed now on numpy (or, for CUDA inputs, by a generated kernel:
    runtime/cuda_eager.py); the result joins the autograd tape when it needs to."""
    if cuda_in_use and _on_cuda(inputs):
        return cuda_backend.eager(op, inputs, attrs)
    Tensor = _tensor.Tensor
    res = compute(op, [x._data if isinstance(x, Tensor) else x for x in inputs], attrs)
    # NOTE: numpy's reshape of a non-contiguous array is a copy that still has a .base
    view = op.view and res.base is not None and np.may_share_memory(res, inputs[0]._data)
    return result(op, inputs, attrs, res, view)


def result(op: OpDef, inputs: tuple, attrs: dict, res, view: bool):
    """The Tensor of ``op``'s computed array ``res`` (numpy, or a CUDA device array): a view of
    input 0 shares its base and version counter; on the autograd tape when it needs to be."""
    Tensor = _tensor.Tensor
    out = Tensor._make(res)
    if view:
        base = inputs[0]._base if inputs[0]._base is not None else inputs[0]
        out._base = base
        out._version = base._version
    if op.vjp is not None and autograd.grad_mode.enabled and res.dtype.kind == "f":
        for x in inputs:
            if isinstance(x, Tensor) and x.requires_grad:
                out._grad_fn = autograd.TapeNode(op, inputs, attrs, res, out._version)
                out.requires_grad = True
                break
    return out


# NOTE: tensor.py builds Tensor on ``apply`` above and eager results are Tensors: the module is
# imported last, by name, so either module may be imported first
from . import tensor as _tensor  # noqa: E402

__all__ = ["apply", "eager", "current_tracer", "tracing", "cuda_in_use"]
