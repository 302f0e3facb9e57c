"""Tensor.register_post_accumulate_grad_hook (as torch): the hook runs once per backward pass,
after the leaf's .grad holds all of that pass's gradient (DistributedDataParallel's readiness)."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj


def _recorder(log):
    def hook(t):
        log.append(t.grad.numpy().copy())
    return hook


def test_runs_once_after_every_use_of_the_leaf_is_accumulated():
    w = tj.tensor([1.0, 2.0, 3.0], requires_grad=True)
    log = []
    w.register_post_accumulate_grad_hook(_recorder(log))
    ((w * 2).sum() + (w * w).sum() + w.sum()).backward()  # three uses of w
    assert len(log) == 1
    np.testing.assert_allclose(log[0], 2 + 2 * w.detach().numpy() + 1)
    (w * 3).sum().backward()  # a second pass: accumulated, hook once more
    assert len(log) == 2
    np.testing.assert_allclose(log[1], log[0] + 3)


def test_a_leaf_used_in_a_loop_and_an_edge_without_gradient():
    w = tj.tensor([0.5, -1.0], requires_grad=True)
    log = []
    w.register_post_accumulate_grad_hook(_recorder(log))
    h = tj.ones(2)
    for _ in range(5):  # an unrolled recurrence: w reaches the loss through 5 nodes
        h = (h * w).tanh()
    # w also feeds a branch no gradient flows back through (its output is not in the loss)
    _ = w * 7
    (h.sum() + (w.detach() * 0).sum()).backward()
    assert len(log) == 1
    ref = tj.tensor([0.5, -1.0], requires_grad=True)
    h = tj.ones(2)
    for _ in range(5):
        h = (h * ref).tanh()
    h.sum().backward()
    np.testing.assert_allclose(log[0], ref.grad.numpy(), rtol=1e-6)


def test_traced_model_delivers_each_parameter_once():
    net = tj.nn.Linear(4, 3)
    model = tj.trace(net)
    seen = []
    for p in net.parameters():
        p.register_post_accumulate_grad_hook(lambda t: seen.append(tuple(t.shape)))
    for _ in range(3):  # trace, then the compiled backward
        model(tj.randn(2, 4)).sum().backward()
    assert sorted(seen) == sorted([(3, 4), (3,)] * 3)


def test_remove_and_errors():
    w = tj.ones(2, requires_grad=True)
    log = []
    handle = w.register_post_accumulate_grad_hook(_recorder(log))
    handle.remove()
    (w * 2).sum().backward()
    assert log == []
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(_recorder(log))
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        tj.ones(2).register_post_accumulate_grad_hook(_recorder(log))


def test_autograd_grad_runs_no_post_accumulate_hooks():
    w = tj.ones(2, requires_grad=True)
    log = []
    w.register_post_accumulate_grad_hook(_recorder(log))
    tj.autograd.grad((w * 2).sum(), w)  # nothing is accumulated into .grad
    assert log == [] and w.grad is None
