"""Gradients of random float64 programs (tests/fuzz/strategies.py, ``grad=...``).

- ``test_gradients_agree``: programs of differentiable ops, kinks included (abs, relu, max,
  clamp: ties and zeros are deterministic, so every path must pick the same subgradient).
  The gradient of a weighted sum of the outputs from eager autograd must equal the gradient
  through ``backward`` of a traced function called from eager code (the compiled forward and
  backward graphs, runtime/backward.py; first and second call) and through ``tracejit.grad``
  (forward and vjps in one compiled graph). Tolerance: rtol 1e-7, atol 1e-9 (float64; the
  compiled graphs reassociate sums and contract multiply-adds).
- ``test_gradients_match_finite_differences``: programs of smooth ops only, values away from
  poles and domain edges (log, sqrt and division read ``x * x + 0.5``): eager autograd and the
  traced function both pass ``gradcheck`` (central differences).

Run more examples with ``TRACEJIT_FUZZ_EXAMPLES=N`` (see test_differential.py).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, note, reject

import tracejit as tj
from tracejit.autograd import gradcheck

from .conftest import fuzz_settings
from .strategies import programs

RTOL, ATOL = 1e-7, 1e-9


def _outs(p, out):
    return [out] if p.bare else list(out)


def _weights(outs):
    rng = np.random.default_rng(0)
    return [rng.uniform(0.5, 1.5, o.shape) for o in outs]


def _loss(outs, weights):
    total = None
    for o, w in zip(outs, weights):
        if isinstance(o, tj.Tensor) and o.dtype == np.float64 and o.requires_grad:
            term = (o * tj.from_numpy(w.copy()).to(o.device)).sum()
            total = term if total is None else total + term
    return total


def _grads(loss, args):
    return tj.autograd.grad(loss, args, allow_unused=True)


def _close(got, want, what):
    for i, (g, w) in enumerate(zip(got, want)):
        g = np.zeros_like(w) if g is None and w is not None else g
        if w is None:
            w = np.zeros_like(g._data if isinstance(g, tj.Tensor) else g)
        ga = g.detach().numpy() if isinstance(g, tj.Tensor) else np.asarray(g)
        wa = w.detach().numpy() if isinstance(w, tj.Tensor) else np.asarray(w)
        np.testing.assert_allclose(ga, wa, rtol=RTOL, atol=ATOL, err_msg=f"{what}: input {i}")


@fuzz_settings(8)
@given(programs(grad="any", max_steps=5))
def test_gradients_agree(p):
    note(repr(p))
    check_gradients(p)


def eager_gradients(p):
    """(loss, gradient of each input) from eager autograd, or None where ``p`` has no float64
    output that requires grad; rejects the example where eager refuses."""
    fn = p.function()
    args = p.make_args(requires_grad=True)
    outs = _outs(p, fn(*args))
    loss = _loss(outs, _weights(outs))
    if loss is None:
        return None
    try:
        grads = _grads(loss, args)
    except RuntimeError as e:
        # a value saved for backward was updated in place: eager refuses, as torch does (and
        # more often: tracejit checks every saved operand, see test_autograd's strict xfail)
        assert "modified by an inplace operation" in str(e)
        reject()
    return loss, [w if w is not None else tj.zeros_like(a) for w, a in zip(grads, args)]


def _args(p, device, requires_grad=False):
    args = [a.to(device) for a in p.make_args()]  # (on the CPU: the same tensors)
    return [a.requires_grad_(True) if requires_grad and a.dtype.kind == "f" else a for a in args]


def traced_gradients(p, device="cpu"):
    """[(what, loss, gradients)]: the backward of a traced function called from eager code and
    ``tracejit.grad``, each on its first and second call, on input tensors on ``device``."""
    fn = p.function()
    weights = None
    found = []
    f = tj.trace(fn)
    for call in ("first call", "second call"):
        args = _args(p, device, requires_grad=True)
        outs = _outs(p, f(*args))
        weights = weights or _weights(outs)
        loss = _loss(outs, weights)
        found.append((f"traced, {call}", loss, _grads(loss, args)))
    assert f.specs()[0].compiled_grad is not None, "the grad_fn ran an eager replay"

    def scalar(*xs):
        return _loss(_outs(p, fn(*xs)), weights)

    g = tj.grad(scalar, argnums=tuple(range(len(p.inputs))))
    for call in ("first call", "second call"):
        got = g(*_args(p, device))
        found.append((f"tracejit.grad, {call}", None, got if isinstance(got, tuple) else (got,)))
    return found


def check_gradients(p):
    """Eager autograd, a traced function's compiled backward and tracejit.grad agree on ``p``."""
    eager = eager_gradients(p)
    if eager is None:
        return
    loss, want = eager
    for what, got_loss, grads in traced_gradients(p):
        if got_loss is not None:
            np.testing.assert_allclose(got_loss.item(), loss.item(), rtol=RTOL, atol=ATOL)
        _close(grads, want, what)


@fuzz_settings(5)
@given(programs(grad="smooth", max_steps=4))
def test_gradients_match_finite_differences(p):
    note(repr(p))
    check_finite_differences(p)


def check_finite_differences(p):
    fn = p.function()
    args = p.make_args(requires_grad=True)
    outs = _outs(p, fn(*args))
    if not any(isinstance(o, tj.Tensor) and o.requires_grad for o in outs):
        return
    try:
        _grads(_loss(outs, _weights(outs)), args)
    except RuntimeError as e:  # as in check_gradients
        assert "modified by an inplace operation" in str(e)
        reject()

    def contiguous():  # gradcheck perturbs inputs in place: it wants them contiguous
        return tuple(tj.tensor(np.ascontiguousarray(a.detach().numpy()), requires_grad=True)
                     for a in p.make_args())

    assert gradcheck(fn, contiguous())
    assert gradcheck(tj.trace(fn), contiguous())
