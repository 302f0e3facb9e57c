"""``tracejit.autograd.functional``: ``jacobian``, ``hessian``, ``vjp``, ``jvp``, ``vhp``,
``hvp`` with ``torch.autograd.functional``'s signatures and result structures.

>>> from tracejit.autograd.functional import jacobian
>>> jacobian(lambda x: x ** 2, tracejit.tensor([1.0, 2.0]))
tensor([[2., 0.],
        [0., 4.]])

Everything is built on reverse mode (``autograd.grad``): a Jacobian takes one backward pass
per output element (``strategy="reverse-mode"``) or, with ``strategy="forward-mode"``, one
``jvp`` per input element; ``jvp`` uses the double-backward trick (the vjp is linear in its
cotangent, so differentiating it with respect to the cotangent gives the jvp), as torch's does.
``vectorize=True`` is accepted and gives the same values (the passes run one after another).
``create_graph=True`` keeps the results differentiable (the vjp rules are Tensor ops).
"""

from __future__ import annotations

import numpy as np

from . import autograd
from .tensor import Tensor, stack


def _as_tuple(x, what: str, fn: str):
    is_tuple = isinstance(x, tuple)
    xs = x if is_tuple else (x,)
    for i, t in enumerate(xs):
        if not isinstance(t, Tensor):
            where = f"element {i} of the {what}" if is_tuple else f"the {what}"
            raise TypeError(f"{fn}: {where} must be a Tensor (or a tuple of Tensors), got "
                            f"{type(t).__name__}")
    return is_tuple, xs


def _prepare(inputs, create_graph: bool):
    """Inputs the function is differentiated at: fresh leaves, or (create_graph) views that
    keep the link to an outer graph, as torch's ``_grad_preprocess``."""
    out = []
    for x in inputs:
        if create_graph and x.requires_grad:
            out.append(x.view_as(x))
        else:
            out.append(x.detach().requires_grad_(x.dtype.kind == "f"))
    return tuple(out)


def _finish(xs, create_graph: bool):
    if create_graph:
        return xs
    if isinstance(xs, Tensor):
        return xs.detach()
    return tuple(_finish(x, create_graph) for x in xs)


def _grads(outputs, inputs, grad_outputs, create_graph, strict, fn, what="input"):
    """Gradients of ``outputs`` (weighted by ``grad_outputs``) for each of ``inputs``; None
    where one does not depend on them (an error with ``strict``)."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if not pairs:
        res = [None] * len(inputs)
    else:
        res = list(autograd.grad([o for o, _ in pairs], list(inputs), [g for _, g in pairs],
                                 retain_graph=True, create_graph=create_graph,
                                 allow_unused=True))
    if strict:
        for i, r in enumerate(res):
            if r is None:
                raise RuntimeError(f"{fn}: the output of the user-provided function is "
                                   f"independent of {what} {i}. This is not allowed in strict "
                                   f"mode.")
    return res


def _zeros_for(r, like):
    from .creation import zeros_like
    return zeros_like(like) if r is None else r


def _check_v(v, outs, fn: str, what: str):
    if v is None:
        if len(outs) != 1 or outs[0].numel() != 1:
            raise RuntimeError(f"{fn}: the vector v can only be None if the {what} is a single "
                               f"Tensor with a single element")
        from .creation import ones_like
        return (ones_like(outs[0]),)
    _, vs = _as_tuple(v, "v", fn)
    if len(vs) != len(outs):
        raise RuntimeError(f"{fn}: v has {len(vs)} tensors, the {what} has {len(outs)}")
    for i, (a, b) in enumerate(zip(vs, outs)):
        if tuple(a.shape) != tuple(b.shape):
            raise RuntimeError(f"{fn}: entry {i} of v has shape {tuple(a.shape)}, the {what} "
                               f"has shape {tuple(b.shape)}")
    return vs


def _call(func, inputs, fn: str):
    with autograd.enable_grad():
        out = func(*inputs)
    is_tuple, outs = _as_tuple(out, "output of the user-provided function", fn)
    return is_tuple, outs


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(*inputs), v^T J)``: the vector-Jacobian product at ``inputs``.

    >>> vjp(lambda x: x.sum(), tracejit.ones(2))[1]
    tensor([1., 1.])
    """
    in_tuple, xs = _as_tuple(inputs, "inputs", "vjp")
    with autograd.enable_grad():
        xs = _prepare(xs, create_graph)
        out_tuple, outs = _call(func, xs, "vjp")
        vs = _check_v(v, outs, "vjp", "output of the user-provided function")
        res = _grads(outs, xs, vs, create_graph, strict, "vjp")
    res = tuple(_zeros_for(r, x) for r, x in zip(res, xs))
    outs = _finish(outs, create_graph)
    return (outs if out_tuple else outs[0]), _finish(res if in_tuple else res[0], create_graph)


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(*inputs), J v)``: the Jacobian-vector product at ``inputs``.

    >>> jvp(lambda x: x * 3, tracejit.ones(2), tracejit.ones(2))[1]
    tensor([3., 3.])
    """
    from .creation import zeros_like

    in_tuple, xs = _as_tuple(inputs, "inputs", "jvp")
    with autograd.enable_grad():
        xs = _prepare(xs, create_graph)
        vs = _check_v(v, xs, "jvp", "input")
        out_tuple, outs = _call(func, xs, "jvp")
        # the double-backward trick: u -> J^T u is linear, its vjp with v is J v
        us = tuple(zeros_like(o).requires_grad_(True) for o in outs)
        g = _grads(outs, xs, us, True, strict, "jvp")
        pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi is not None and gi.requires_grad]
        if pairs:
            res = autograd.grad([p for p, _ in pairs], list(us), [q for _, q in pairs],
                                create_graph=create_graph, allow_unused=True)
        else:
            res = [None] * len(us)
    if strict:
        for i, r in enumerate(res):
            if r is None:
                raise RuntimeError(f"jvp: output {i} of the user-provided function is "
                                   f"independent of the inputs. This is not allowed in strict "
                                   f"mode.")
    res = tuple(_zeros_for(r, o) for r, o in zip(res, outs))
    outs = _finish(outs, create_graph)
    return (outs if out_tuple else outs[0]), _finish(res if out_tuple else res[0], create_graph)


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False,
             strategy="reverse-mode"):
    """The Jacobian of ``func`` at ``inputs``: for one input and one output a Tensor of shape
    ``output.shape + input.shape``; a tuple (over inputs) for a tuple of inputs, inside a tuple
    (over outputs) for a tuple of outputs, as torch's.

    >>> jacobian(lambda x: x.exp(), tracejit.zeros(2))
    tensor([[1., 0.],
            [0., 1.]])
    """
    del vectorize  # same values; the passes run one after another
    if strategy not in ("reverse-mode", "forward-mode"):
        raise ValueError(f'jacobian: expected strategy to be either "forward-mode" or '
                         f'"reverse-mode", got {strategy!r}')
    in_tuple, xs = _as_tuple(inputs, "inputs", "jacobian")
    from .creation import zeros

    with autograd.enable_grad():
        xs = _prepare(xs, create_graph)
        out_tuple, outs = _call(func, xs, "jacobian")
        # blocks[i][j]: d output i / d input j, shape outs[i].shape + xs[j].shape
        if strategy == "reverse-mode":
            blocks = []
            for o in outs:
                rows = [[] for _ in xs]
                n = o.numel()
                for k in range(n):
                    onehot = np.zeros(n, dtype=o.dtype)
                    onehot[k] = 1
                    g = Tensor._make(onehot.reshape(o.shape))
                    res = _grads([o], xs, [g], create_graph, strict, "jacobian")
                    for j, r in enumerate(res):
                        rows[j].append(_zeros_for(r, xs[j]))
                blocks.append([
                    (stack(r).reshape(tuple(o.shape) + tuple(x.shape)) if r else
                     zeros(tuple(o.shape) + tuple(x.shape), dtype=x.dtype))
                    for r, x in zip(rows, xs)])
        else:
            cols = [[[] for _ in xs] for _ in outs]  # cols[i][j]: one jvp per input element
            for j, x in enumerate(xs):
                for k in range(x.numel()):
                    basis = [zeros(tuple(y.shape), dtype=y.dtype) for y in xs]
                    e = np.zeros(x.numel(), dtype=x.dtype)
                    e[k] = 1
                    basis[j] = Tensor._make(e.reshape(x.shape))
                    _, jv = jvp(func, xs, tuple(basis), create_graph=create_graph,
                                strict=strict)
                    jv = jv if isinstance(jv, tuple) else (jv,)
                    for i, c in enumerate(jv):
                        cols[i][j].append(c)
            blocks = []
            for i, o in enumerate(outs):
                row = []
                for j, x in enumerate(xs):
                    shape = tuple(o.shape) + tuple(x.shape)
                    if cols[i][j]:
                        # stacked along a last axis of input elements, then moved into place
                        t = stack([c.reshape(-1) for c in cols[i][j]], dim=1)
                        row.append(t.reshape(shape))
                    else:
                        row.append(zeros(shape, dtype=o.dtype))
                blocks.append(row)
    blocks = [tuple(_finish(b, create_graph) for b in row) for row in blocks]
    per_output = [row if in_tuple else row[0] for row in blocks]
    return tuple(per_output) if out_tuple else per_output[0]


def hessian(func, inputs, create_graph=False, strict=False, vectorize=False,
            outer_jacobian_strategy="reverse-mode"):
    """The Hessian of the scalar function ``func`` at ``inputs``: a Tensor of shape
    ``input.shape + input.shape``, or a tuple of tuples for a tuple of inputs, as torch's.

    >>> hessian(lambda x: (x ** 3).sum(), tracejit.tensor([1.0, 2.0]))
    tensor([[ 6.,  0.],
            [ 0., 12.]])
    """
    in_tuple, xs = _as_tuple(inputs, "inputs", "hessian")

    def gradient(*ys):
        out = func(*ys)
        _, outs = _as_tuple(out, "output of the user-provided function", "hessian")
        if len(outs) != 1 or outs[0].numel() != 1:
            raise RuntimeError("hessian: the function given to hessian should return a single "
                               "Tensor with a single element")
        g = _grads(outs, ys, [None], True, strict, "hessian")
        g = tuple(_zeros_for(r, y) for r, y in zip(g, ys))
        return g if in_tuple else g[0]

    return jacobian(gradient, xs if in_tuple else xs[0], create_graph=create_graph,
                    strict=strict, vectorize=vectorize, strategy=outer_jacobian_strategy)


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(*inputs), v^T H)`` for a scalar ``func``.

    >>> vhp(lambda x: (x ** 3).sum(), tracejit.ones(2), tracejit.ones(2))[1]
    tensor([6., 6.])
    """
    in_tuple, xs = _as_tuple(inputs, "inputs", "vhp")
    with autograd.enable_grad():
        xs = _prepare(xs, create_graph)
        vs = _check_v(v, xs, "vhp", "input")
        _, outs = _call(func, xs, "vhp")
        if len(outs) != 1 or outs[0].numel() != 1:
            raise RuntimeError("vhp: the function given to vhp should return a single Tensor "
                               "with a single element")
        g = _grads(outs, xs, [None], True, strict, "vhp")
        pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi is not None and gi.requires_grad]
        res = _grads([p for p, _ in pairs], xs, [q for _, q in pairs], create_graph, strict,
                     "vhp") if pairs else [None] * len(xs)
    res = tuple(_zeros_for(r, x) for r, x in zip(res, xs))
    return _finish(outs[0], create_graph), _finish(res if in_tuple else res[0], create_graph)


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(*inputs), H v)`` for a scalar ``func`` (the Hessian is symmetric, so this is
    ``vhp``'s product, as torch's ``hvp`` computes it with one more backward pass)."""
    return vhp(func, inputs, v, create_graph=create_graph, strict=strict)


__all__ = ["vjp", "jvp", "jacobian", "hessian", "vhp", "hvp"]
