"""Compiled code writes an input's new value straight into its array
(``codegen/memory_plan.write_in_place``) only where that is invisible: the results equal eager
execution's, a failing call leaves its inputs as they were, and inputs sharing memory get
private copies (``runtime/compile.unshared``)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime.compile import unshared

WRITTEN = "the input's new value, written into its array"


def _params(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [tj.tensor(rng.standard_normal(s).astype(np.float32)) for s in shapes]


def _twins(step_fn, make, calls=3):
    """Run ``step_fn`` traced and eagerly on two copies of ``make()``'s tensors; return the
    traced function and both results per call."""
    traced_args, eager_args = make(), make()
    traced = tj.trace(step_fn, compile="sync")
    pairs = []
    for _ in range(calls):
        got = traced(*traced_args)
        with tj.eager():
            want = step_fn(*eager_args)
        pairs.append((got, want))
    for t, e in zip(traced_args, eager_args):
        np.testing.assert_allclose(t.numpy(), e.numpy(), rtol=1e-6, atol=1e-6)
    return traced, traced_args, pairs


def test_an_sgd_update_is_written_into_the_parameters():
    w, b = _params((4, 3), (3,))
    x = tj.tensor(np.ones((2, 4), np.float32))

    @tj.trace(compile="sync")
    def step(x):
        with tj.no_grad():
            y = x @ w + b
            w.sub_(0.1 * (x.T @ y))
            b.sub_(0.1 * y.sum(0))
        return y

    ptr_w, ptr_b = w.data_ptr(), b.data_ptr()
    w0, b0 = w.numpy().copy(), b.numpy().copy()
    with tj.eager():
        y0 = (x.numpy() @ w0 + b0)
    step(x)
    step(x)
    assert step.source(x).count(WRITTEN) >= 1
    assert w.data_ptr() == ptr_w and b.data_ptr() == ptr_b  # same storage, as eager
    w1 = w0 - 0.1 * (x.numpy().T @ y0)
    y1 = x.numpy() @ w1 + (b0 - 0.1 * y0.sum(0))
    np.testing.assert_allclose(w.numpy(), w1 - 0.1 * (x.numpy().T @ y1), rtol=1e-5)


def test_an_old_value_read_after_the_update_is_not_overwritten_early():
    # a * 3 fuses into the kernel of the final sum, scheduled after p's update: that kernel
    # reads p's old value, so p's new value may not go into p's array before it
    def step(p, q):
        a = p * 3
        p.sub_(q)
        return (a * q).sum() + p.sum()

    traced, _, pairs = _twins(step, lambda: _params((64,), (64,), seed=1))
    for got, want in pairs:
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5)


def test_an_update_reading_its_input_transposed_is_not_written_in_place():
    def step(p):
        p.copy_(p.T * 2 + 1)
        return p.sum()

    traced, args, pairs = _twins(step, lambda: _params((5, 5), seed=2))
    assert WRITTEN not in traced.source(*args)
    for got, want in pairs:
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5)


def test_two_inputs_swapping_values_stay_correct():
    def step(a, b):
        t = a * 1
        a.copy_(b)
        b.copy_(t)
        return a.sum()

    _twins(step, lambda: _params((8,), (8,), seed=3), calls=3)


def test_a_failing_call_leaves_the_parameters_unchanged():
    p, = _params((6,))
    x = tj.tensor(np.arange(6, dtype=np.float32))

    @tj.trace(compile="sync")
    def step(x, idx):
        with tj.no_grad():
            p.sub_(x * 0.5)
        return x[idx] + p[idx]

    good = tj.tensor(np.array([0, 5]))
    step(x, good)
    step(x, good)
    before = p.numpy().copy()
    with pytest.raises(IndexError):
        step(x, tj.tensor(np.array([0, 9])))
    np.testing.assert_array_equal(p.numpy(), before)


def test_a_parameter_passed_as_a_view_too_gets_a_private_copy():
    p, = _params((4, 4), seed=4)
    eager_p = tj.tensor(p.numpy().copy())

    def step(view, p):
        s = (view * 2).sum()
        with tj.no_grad():
            p.mul_(0.5)
        return s

    traced = tj.trace(step, compile="sync")
    for _ in range(3):
        got = traced(p.T, p)
        with tj.eager():
            step(eager_p.T, eager_p)
    np.testing.assert_allclose(p.numpy(), eager_p.numpy(), rtol=1e-6)
    # the view is read before the update: the value it had at the start of the last call
    np.testing.assert_allclose(got.item(), eager_p.numpy().sum() * 4, rtol=1e-5)


def test_unshared_copies_only_written_inputs_that_share_memory():
    base = np.arange(12, dtype=np.float32)
    other = np.ones(3, np.float32)
    arrays = (base, other)
    assert unshared(arrays, (0,)) is arrays  # own memory, distinct: as they are

    view = base[2:5]
    got = unshared((base, view), (0,))
    assert got[0] is not base and np.shares_memory(got[1], base)
    np.testing.assert_array_equal(got[0], base)
    halves = (base[:6], base[6:])  # views of one array that do not overlap
    assert all(a is b for a, b in zip(unshared(halves, (0, 1)), halves))

    same = unshared((other, other), (1,))
    assert same[1] is not other and same[0] is other

    frozen = np.ones(3, np.float32)
    frozen.flags.writeable = False
    assert unshared((frozen, other), (0,))[0] is not frozen

    @numba.njit
    def make():
        return np.ones(4, np.float32)
    made = make()  # numba's runtime owns it (its .base is not a numpy array)
    assert unshared((made, other), (0,))[0] is made
    assert unshared((made, made[1:]), (0,))[0] is not made


def test_the_first_call_writes_copies():
    """The first call compiles: a kernel compiled late could fail after another wrote an
    input, so the first call's kernels write copies, copied back after it succeeds."""
    p, = _params((16,), seed=5)
    ptr = p.data_ptr()

    @tj.trace(compile="sync")
    def step():
        with tj.no_grad():
            p.mul_(2.0)
        return p.sum()

    before = p.numpy().copy()
    step()
    np.testing.assert_allclose(p.numpy(), before * 2)
    step()
    np.testing.assert_allclose(p.numpy(), before * 4)
    assert p.data_ptr() == ptr
