"""torch.compile and TorchScript spellings of ``tracejit.trace``: ``tracejit.compile(fn)`` and
``tracejit.jit.trace(model, example_inputs)``.

>>> fast = tracejit.compile(model)                                   # doctest: +SKIP
>>> traced = tracejit.jit.trace(model, tracejit.randn(8, 4))         # doctest: +SKIP

tracejit traces on the first call per input signature and keeps one compiled graph per
signature, guarded; torch's graph-break, dynamic-shape and mode options have no equivalent and
are accepted and ignored (``dynamic=True`` is the exception: see ``tracejit.dynamic``).
"""

from __future__ import annotations

import numpy as np

from .tensor import Tensor
from .tracing import trace as _trace
from .tracing.front import backends as _backends

__all__ = ["compile", "trace", "script", "save", "load", "ignore", "unused", "export"]

_TORCH_BACKENDS = ("inductor", "aot_eager", "eager", "cudagraphs", "onnxrt", "tvm", "openxla")


def compile(model=None, *, fullgraph: bool = False, dynamic=None, backend="inductor",  # noqa: A001
            mode=None, options=None, disable: bool = False):
    """``torch.compile``'s signature over ``tracejit.trace``: usable as ``compile(fn)``,
    ``@compile`` or ``@compile(...)``. ``backend`` is tracejit's ("cpu", "interpret") or one
    of torch's names, which mean the default backend; ``disable=True`` returns ``model``."""
    if model is None:
        return lambda m: compile(m, fullgraph=fullgraph, dynamic=dynamic, backend=backend,
                                 mode=mode, options=options, disable=disable)
    if disable:
        return model
    if callable(backend):
        raise NotImplementedError("compile(backend=<callable>): custom torch.compile backends "
                                  "receive FX graphs, which tracejit does not produce; use "
                                  "backend='cpu' or 'interpret'")
    if backend in _TORCH_BACKENDS:
        backend = None
    elif backend not in _backends():
        raise ValueError(f"compile: backend must be one of {', '.join(map(repr, _backends()))} "
                         f"(or one of torch's names, meaning the default), got {backend!r}")
    if dynamic:
        raise NotImplementedError(
            "compile(dynamic=True): tracejit specializes on shapes; mark the dims that vary "
            "with tracejit.dynamic(x, dim) before the call, or leave dynamic=None")
    return _trace(model, backend=backend)


def _as_tuple(example_inputs):
    if example_inputs is None:
        return None
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def _flat(out) -> list:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat(v)]
    return []


def trace(func, example_inputs=None, optimize=None, check_trace: bool = True,
          check_inputs=None, check_tolerance: float = 1e-5, strict: bool = True,
          _force_outplace: bool = False, _module_class=None, _compilation_unit=None,
          example_kwarg_inputs=None, _store_inputs: bool = True):
    """``torch.jit.trace``: returns the traced ``func`` (a module keeps its attributes),
    already traced and compiled for ``example_inputs``; ``check_trace`` compares that first
    compiled call with eager execution (and so do ``check_inputs``, a list of input tuples)."""
    traced = _trace(func)
    if example_kwarg_inputs is not None:
        raise NotImplementedError("jit.trace(example_kwarg_inputs=...): pass the inputs "
                                  "positionally as example_inputs")
    runs = [_as_tuple(example_inputs)] if example_inputs is not None else []
    runs += [_as_tuple(c) for c in (check_inputs or [])]
    for i, args in enumerate(runs):
        got = _flat(traced(*args))
        if not (check_trace or i > 0):
            continue
        want = _flat(func(*args))
        for g, w in zip(got, want):
            a, b = g.detach().numpy(), w.detach().numpy()
            if a.shape != b.shape or not np.allclose(a, b, rtol=check_tolerance,
                                                     atol=check_tolerance, equal_nan=True):
                raise RuntimeError(
                    f"jit.trace: the traced {getattr(func, '__name__', type(func).__name__)} "
                    f"disagrees with eager execution on example input {i} (shapes {a.shape} "
                    f"vs {b.shape}); it may depend on Python state tracing cannot see")
    return traced


def script(obj, *args, **kwargs):
    raise NotImplementedError(
        "jit.script: TorchScript compiles Python source; tracejit traces. Use "
        "tracejit.jit.trace(model, example_inputs) or tracejit.compile(model); data-dependent "
        "Python control flow runs eagerly around traced pieces")


def save(m, f, *args, **kwargs):
    raise NotImplementedError(
        "jit.save: a traced module is saved as a data-only graph file with "
        "tracejit.export(model, *example_inputs).save(path) and loaded with "
        "tracejit.load(path)")


def load(f, *args, **kwargs):
    raise NotImplementedError(
        "jit.load: TorchScript archives hold code and are not read; load a graph written by "
        "tracejit.export with tracejit.load(path)")


def export(fn):
    """``@torch.jit.export``: a no-op marker here (every method can be called)."""
    return fn


def ignore(drop=False, **kwargs):
    """``@torch.jit.ignore``: a no-op marker here."""
    if callable(drop):
        return drop
    return lambda fn: fn


unused = ignore


from . import _torch_names  # noqa: E402

# a torch name tracejit lacks raises an AttributeError naming the alternative
__getattr__ = _torch_names.install(__name__)
