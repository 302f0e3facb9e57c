"""Gradients of every traced op case (tests/test_trace_ops.py's CASES): the gradient graphs built
on the IR — the forward/backward partition behind a traced function's grad_fn
(runtime/backward.py) and ``tracejit.grad`` — give the eager gradients. Eager gradients are
checked against finite differences op by op in the op tests."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

from .test_trace_ops import CASES, _leaves, _make, _seed

FLOATS = (np.float32, np.float64)


def _differentiable(case) -> bool:
    return not case.may_raise and any(
        isinstance(a, np.ndarray) and a.dtype in FLOATS and a.size for a in case.args)


GRAD_CASES = [c for c in CASES if _differentiable(c)]


def _leaf_args(case):
    args = _make(case)
    return [a.requires_grad_() if isinstance(a, tj.Tensor) and a.dtype in FLOATS else a
            for a in args]


def _weighted_sum(out, weights=None):
    """A scalar from every float output, with fixed random weights (None when no output
    carries a gradient)."""
    outs = [o for o in _leaves(out) if isinstance(o, tj.Tensor) and o.dtype in FLOATS]
    if not any(o.requires_grad for o in outs):
        return None, weights
    if weights is None:
        rng = np.random.default_rng(0)
        weights = [tj.tensor(rng.uniform(0.5, 1.5, o.shape).astype(o.dtype)) for o in outs]
    total = None
    for o, w in zip(outs, weights):
        term = (o * w).sum().double()
        total = term if total is None else total + term
    return total, weights


def _grads(loss, args):
    leaves = [a for a in args if isinstance(a, tj.Tensor) and a.requires_grad]
    return tj.autograd.grad(loss, leaves, allow_unused=True)


def _close(got, want, case, what):
    tol = 2e-4 if case.tol else 1e-6  # float32 cases; vjps may reassociate sums
    for i, (g, w) in enumerate(zip(got, want)):
        assert (g is None) == (w is None), f"{case.id}: {what}: gradient {i} presence differs"
        if g is not None:
            np.testing.assert_allclose(g.detach().numpy(), w.detach().numpy(), rtol=tol, atol=tol,
                                       err_msg=f"{case.id}: {what}: gradient {i}")


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_ir_gradients_match_eager(case):
    args = _leaf_args(case)
    _seed(case)
    try:
        out = case.fn(*args)
    except RuntimeError as e:  # in-place updates of leaves that require grad, as in torch
        assert "requires grad" in str(e) or "leaf" in str(e)
        return
    loss, weights = _weighted_sum(out)
    if loss is None:
        return  # no output carries a gradient (integer results, comparisons...)
    try:
        want = _grads(loss, args)
    except RuntimeError as e:
        # a value saved for backward was updated in place: tracejit checks every saved operand
        # (torch only those the vjp reads; see test_autograd's strict xfail)
        assert "modified by an inplace operation" in str(e)
        return

    # a traced function called from eager code: the 2nd call runs the partitioned graphs
    f = tj.trace(case.fn, backend="interpret")
    for call in ("tracing call", "graph call"):
        args = _leaf_args(case)
        _seed(case)
        got_loss, _ = _weighted_sum(f(*args), weights)
        np.testing.assert_allclose(got_loss.detach().numpy(), loss.detach().numpy(),
                                   rtol=1e-5, atol=1e-6)
        _close(_grads(got_loss, args), want, case, call)
    spec = f.specs()[0]
    assert spec.compiled_grad is not None or spec.mutated, "the grad_fn ran an eager replay"

    # tracejit.grad: forward and vjps in one traced graph
    nums = tuple(i for i, a in enumerate(args) if isinstance(a, tj.Tensor) and a.requires_grad)

    def scalar(*xs):
        return _weighted_sum(case.fn(*xs), weights)[0]

    g = tj.grad(scalar, argnums=nums, backend="interpret")
    args = _leaf_args(case)
    _seed(case)
    got = g(*[a.detach() if isinstance(a, tj.Tensor) else a for a in args])
    # grad gives zeros where eager autograd gives None (an input the result does not use)
    want_dense = [w if w is not None else tj.zeros_like(args[i]) for i, w in zip(nums, want)]
    _close(got, want_dense, case, "tracejit.grad")
