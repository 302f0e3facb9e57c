"""Gradient transforms on traced graphs, as in JAX: ``grad``, ``value_and_grad``.

>>> df = tracejit.grad(lambda x: (x ** 3).sum())
>>> df(tracejit.tensor([1.0, 2.0]))
tensor([ 3., 12.])

The function is traced; the backward pass is built from the op table's vjp rules *in the same
trace* (the vjp rules are Tensor ops, so running them records them), and the joint graph goes
through the passes (unused gradients are removed by DCE) and the compiler, so backward kernels
are fused like forward ones. Transforms compose: ``grad(grad(f))`` differentiates the recorded
backward pass again.
"""

from __future__ import annotations

from . import autograd
from .errors import ShapeError, user_frame
from .tensor import Tensor


def _argnums(argnums, nargs):
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    for i in nums:
        if not -nargs <= i < nargs:
            raise IndexError(f"grad: argnums {argnums} out of range for {nargs} arguments")
    return single, tuple(i % nargs for i in nums)


def _value_and_grad_fn(f, argnums, has_aux):
    def wrapped(*args):
        single, nums = _argnums(argnums, len(args))
        args = list(args)
        with autograd.enable_grad():
            for i in nums:
                x = args[i]
                if not isinstance(x, Tensor) or x.dtype.kind != "f":
                    raise TypeError(f"grad: argument {i} must be a floating-point tensor, got "
                                    f"{getattr(x, 'dtype', type(x).__name__)}")
                if not x.requires_grad:  # a fresh leaf; an outer grad's variable stays as is
                    args[i] = x.detach().requires_grad_()
            out = f(*args)
            value, aux = (out[0], out[1]) if has_aux else (out, None)
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise ShapeError(
                    f"grad: the function must return a scalar (one-element) tensor"
                    f"{' as the first element of (value, aux)' if has_aux else ''}, got "
                    f"{getattr(value, 'shape', type(value).__name__)}{user_frame()}")
            xs = [args[i] for i in nums]
            # create_graph: an outer transform may differentiate these gradients again
            grads = autograd.grad(value, xs, create_graph=True, allow_unused=True)
        grads = tuple(g if g is not None else x.detach() * 0 for g, x in zip(grads, xs))
        grads = grads[0] if single else grads
        return value, aux, grads

    return wrapped


def value_and_grad(f, argnums=0, has_aux=False, **trace_options):
    """``f(*args)`` and its gradient with respect to ``args[argnums]`` (an int or a tuple),
    traced and compiled. With ``has_aux=True``, ``f`` returns ``(value, aux)`` and the result
    is ``((value, aux), grads)``."""
    from .tracing import trace

    inner = _value_and_grad_fn(f, argnums, has_aux)

    def run(*args):
        value, aux, grads = inner(*args)
        return ((value, aux), grads) if has_aux else (value, grads)

    run.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    run.__wrapped__ = f
    return trace(run, **trace_options)


def grad(f, argnums=0, has_aux=False, **trace_options):
    """The gradient of the scalar function ``f`` with respect to ``args[argnums]``, traced and
    compiled. ``grad(grad(f))`` gives second derivatives."""
    from .tracing import trace

    inner = _value_and_grad_fn(f, argnums, has_aux)

    def run(*args):
        _, aux, grads = inner(*args)
        return (grads, aux) if has_aux else grads

    run.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    run.__wrapped__ = f
    return trace(run, **trace_options)
