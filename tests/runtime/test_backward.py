"""Compiled gradients (built by tracing/backward.py and passes/partition.py, run by
runtime/backward.py): a traced function called from eager code with inputs that require grad
returns outputs whose grad_fn runs a compiled backward graph (forward and backward partitioned
from one joint graph)."""

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.autograd import gradcheck

from ..conftest import assert_close


def _grads(params):
    return [None if p.grad is None else p.grad.numpy().copy() for p in params]


def _mlp(dropout=0.0):
    tj.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, 3))


@pytest.mark.parametrize("backend", ["interpret", "cpu"])
def test_traced_model_in_eager_training_matches_eager(backend):
    """model = trace(model); loss = crit(model(x), y); loss.backward(): the eager gradients,
    dropout masks included (the backward graph gets the forward's draws, not new ones)."""
    model = _mlp(dropout=0.3)
    traced = tj.trace(model, backend=backend)
    x, y = tj.randn(5, 4), tj.tensor([0, 1, 2, 1, 0])
    for step in range(4):
        tj.manual_seed(step)
        out = traced(x)
        loss = nn.functional.cross_entropy(out, y)
        model.zero_grad()
        loss.backward()
        got = _grads(model.parameters())
        tj.manual_seed(step)
        want_loss = nn.functional.cross_entropy(model(x), y)
        model.zero_grad()
        want_loss.backward()
        assert_close(loss, want_loss.detach().numpy(), rtol=1e-6)
        for g, w in zip(got, _grads(model.parameters())):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    spec = traced.specs()[-1]  # the last used
    cg = spec.compiled_grad
    assert cg is not None, "the later calls ran the partitioned graphs, not an eager replay"
    assert "uniform" in cg.forward.op_counts() and "uniform" not in cg.backward.op_counts()
    assert out.grad_fn.name() == "CompiledSequentialBackward0"
    # traced once: the graph does not read .grad, so backward() filling it is no reason to
    # trace again
    assert traced.cache_info().misses == 1


def test_partition_saves_activations_not_views():
    @tj.trace(backend="interpret")
    def f(x, w):
        return (x @ w).tanh()

    x, w = tj.randn(3, 4), tj.randn(4, 2, requires_grad=True)
    f(x, w)
    f(x, w).sum().backward()
    cg = f.specs()[0].compiled_grad
    fwd, bwd = cg.forward, cg.backward
    # the forward returns its result and one residual (1 - tanh^2, or tanh itself); the
    # transpose of x the weight gradient needs is taken again in the backward graph
    assert len(fwd.outputs) == 2
    assert "matmul" not in bwd.op_counts() or "permute" in bwd.op_counts()
    assert cg.wrt == [1]  # x does not require grad: no gradient computed for it
    assert_close(w.grad, (x.numpy().T @ (1 - np.tanh(x.numpy() @ w.detach().numpy()) ** 2)),
                 rtol=1e-5)


def test_several_outputs_and_non_differentiable_ones():
    @tj.trace(backend="interpret")
    def f(x, w):
        h = x @ w
        return h.relu(), (h * h).sum(), h.argmax(-1)

    x = tj.randn(4, 3)
    w = tj.randn(3, 5, requires_grad=True)
    for _ in range(2):
        a, b, idx = f(x, w)
        assert a.requires_grad and b.requires_grad and not idx.requires_grad
        w.grad = None
        (a.sum() * 2 + b).backward()
    got = w.grad.numpy().copy()
    w.grad = None
    h = x @ w
    (h.relu().sum() * 2 + (h * h).sum()).backward()
    assert_close(got, w.grad.numpy(), rtol=1e-5)
    # a gradient through one output only: the others get zero cotangents
    w.grad = None
    f(x, w)[1].backward()
    assert_close(w.grad, 2 * x.numpy().T @ (x.numpy() @ w.detach().numpy()), rtol=1e-5)


def test_unused_input_keeps_grad_none():
    @tj.trace(backend="interpret")
    def f(x, unused):
        return x * 3.0

    x, u = tj.randn(3, requires_grad=True), tj.randn(3, requires_grad=True)
    for _ in range(2):
        f(x, u).sum().backward()
    assert u.grad is None
    assert_close(x.grad, np.full(3, 6.0, np.float32))


def test_gradcheck_through_a_compiled_function():
    @tj.trace(backend="cpu")
    def f(x, y):
        return (x.sin() * y).softmax(-1) + x.exp().mean()

    x = tj.randn(3, 4, dtype=tj.float64, requires_grad=True)
    y = tj.randn(4, dtype=tj.float64, requires_grad=True)
    f(x, y)
    assert gradcheck(f, (x, y))
    assert f.specs()[0].compiled_grad is not None


def test_double_backward_replays_the_graph():
    @tj.trace(backend="interpret")
    def f(x):
        return (x ** 3).sum()

    x = tj.tensor([1.0, 2.0, -1.0], requires_grad=True)
    f(x)
    (g,) = tj.autograd.grad(f(x), [x], create_graph=True)
    assert_close(g, 3 * x.detach().numpy() ** 2)
    g.sum().backward()
    assert_close(x.grad, 6 * x.detach().numpy())


def test_double_backward_with_random_draws_is_refused():
    @tj.trace(backend="interpret")
    def f(x):
        return (tj.nn.functional.dropout(x, 0.5) ** 2).sum()

    x = tj.randn(4, requires_grad=True)
    f(x)
    with pytest.raises(NotImplementedError, match="create_graph=True.*random"):
        tj.autograd.grad(f(x), [x], create_graph=True)


def test_inplace_update_after_forward_is_detected():
    @tj.trace(backend="interpret")
    def f(x, w):
        return (x * w).sum()

    x, w = tj.randn(3), tj.randn(3, requires_grad=True)
    f(x, w)
    loss = f(x, w)
    with tj.no_grad():
        w.add_(1.0)  # the backward graph does not read w (d/dw = x): fine, as in torch
    x_before = x.numpy().copy()
    loss.backward(retain_graph=True)
    assert_close(w.grad, x_before)
    x.add_(1.0)  # ... but it reads x
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_second_backward_needs_retain_graph():
    @tj.trace(backend="interpret")
    def f(w):
        return (w * w).sum()

    w = tj.randn(3, requires_grad=True)
    f(w)
    loss = f(w)
    loss.backward(retain_graph=True)
    loss.backward()
    assert_close(w.grad, 4 * w.detach().numpy())
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_one_backward_run_for_all_outputs():
    """Gradients of every output reach one hub; the backward graph runs once per backward()
    and never multiplies a missing gradient's zeros into infinities (0 * 1/x at x = 0)."""
    @tj.trace(backend="interpret")
    def f(x):
        return x.exp(), x.log()

    x = tj.tensor([0.0, 1.0, 2.0], requires_grad=True)
    f(x)
    a, b = f(x)
    cg = f.specs()[0].compiled_grad
    runs = []
    run = cg.run_backward
    cg.run_backward = lambda *arrays: runs.append(1) or run(*arrays)
    (a.sum() + b.sum()).backward()
    assert len(runs) == 1
    assert_close(x.grad, (np.exp([0.0, 1.0, 2.0]) + [np.inf, 1.0, 0.5]).astype(np.float32))


def test_batchnorm_running_stats_with_compiled_backward():
    """A traced model with BatchNorm in training mode updates its running statistics in place
    (written back after each call) and still gets the compiled backward."""
    def make():
        tj.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))

    model, ref = make(), make()
    traced = tj.trace(model, backend="interpret")
    x = tj.randn(8, 4)
    for _ in range(3):
        for m, run in ((model, traced), (ref, ref)):
            m.zero_grad()
            run(x).square().mean().backward()
    for (name, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert traced.specs()[-1].compiled_grad is not None
