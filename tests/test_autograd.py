"""Eager autograd: backward, grad, accumulation, graph lifetime, hooks, grad modes, higher order."""

import math

import numpy as np
import pytest

import tracejit as tj
from tracejit.autograd import GradcheckError

from .conftest import assert_close, gradcheck, gradgradcheck, leaf64


def test_backward_accumulates_into_leaves():
    x = tj.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    assert_close(x.grad, np.array([2.0, 4.0, 6.0], np.float32))
    (x * 3).sum().backward()
    assert_close(x.grad, np.array([5.0, 7.0, 9.0], np.float32))
    x.grad = None
    x.sum().backward()
    assert_close(x.grad, np.ones(3, np.float32))


def test_grad_keeps_param_dtype_and_does_not_alias():
    w = tj.ones(3, dtype=tj.float64, requires_grad=True)
    b = tj.ones(3, dtype=tj.float64, requires_grad=True)
    (w + b).sum().backward()  # add's vjp hands the same tensor to both inputs
    assert w.grad.dtype == np.float64
    w.grad.zero_()
    assert_close(b.grad, np.ones(3))


def test_backward_with_gradient_argument():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    y.backward(tj.tensor([1.0, 0.5]))
    assert_close(x.grad, np.array([2.0, 2.0], np.float32))


def test_backward_nonscalar_without_gradient_errors():
    x = tj.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"only for scalar outputs.*\(2, 3\)"):
        (x * 2).backward()


def test_backward_on_tensor_without_grad_errors():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tj.ones(2).sum().backward()


def test_second_backward_needs_retain_graph():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert_close(x.grad, 2 * (np.exp([1.0, 2.0]) * np.array([2.0, 3.0])).astype(np.float32),
                 rtol=1e-5)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_shared_subgraph_gradients_sum():
    x = leaf64((3,))
    gradcheck(lambda t: (lambda h: h * h + h.sin())(t * 3.0), (x,))


def test_autograd_grad_leaves_dot_grad_untouched():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    y = tj.tensor([3.0, 4.0], requires_grad=True)
    gx, = tj.autograd.grad((x * y).sum(), x)
    assert_close(gx, np.array([3.0, 4.0], np.float32))
    assert x.grad is None and y.grad is None


def test_autograd_grad_of_intermediate():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    y = (h * h).sum()
    gh, gx = tj.autograd.grad(y, [h, x])
    assert_close(gh, np.array([4.0, 8.0], np.float32))
    assert_close(gx, np.array([8.0, 16.0], np.float32))


def test_autograd_grad_unused_input():
    x = tj.tensor([1.0], requires_grad=True)
    z = tj.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        tj.autograd.grad((x * 2).sum(), [x, z])
    gx, gz = tj.autograd.grad((x * 2).sum(), [x, z], allow_unused=True)
    assert gz is None and gx.item() == 2.0


def test_create_graph_gives_higher_order():
    x = tj.tensor(0.7, dtype=tj.float64, requires_grad=True)
    y = x.sin() * x ** 3
    g1, = tj.autograd.grad(y, x, create_graph=True)
    g2, = tj.autograd.grad(g1, x, create_graph=True)
    g3, = tj.autograd.grad(g2, x)
    v = 0.7
    d1 = math.cos(v) * v ** 3 + 3 * v ** 2 * math.sin(v)
    d2 = -math.sin(v) * v ** 3 + 6 * v ** 2 * math.cos(v) + 6 * v * math.sin(v)
    d3 = (-math.cos(v) * v ** 3 - 9 * v ** 2 * math.sin(v) + 18 * v * math.cos(v)
          + 6 * math.sin(v))
    assert g1.item() == pytest.approx(d1)
    assert g2.item() == pytest.approx(d2)
    assert g3.item() == pytest.approx(d3)


def test_backward_create_graph_then_grad_of_grad():
    x = tj.tensor([1.0, 2.0], dtype=tj.float64, requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    gg, = tj.autograd.grad(x.grad.sum(), x)
    assert_close(gg, np.array([6.0, 12.0]))


@pytest.mark.parametrize("fn", [
    lambda a, b: (a @ b).tanh(),
    lambda a, b: (a.unsqueeze(-1) * b).sum(0).softmax(-1),
    lambda a, b: (a @ b).log_softmax(1),
])
def test_gradgradcheck_composites(fn):
    gradgradcheck(fn, (leaf64((2, 3)), leaf64((3, 2), seed=1)))


def test_no_grad_and_enable_grad():
    x = tj.ones(2, requires_grad=True)
    with tj.no_grad():
        y = x * 2
        with tj.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None
    assert tj.is_grad_enabled()

    @tj.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad
    with tj.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert tj.is_grad_enabled()


def test_detach_cuts_graph_and_shares_data():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    y = (x * d).sum()
    y.backward()
    assert_close(x.grad, np.array([2.0, 4.0], np.float32))
    base = tj.ones(3)
    base.detach()[0] = 5.0
    assert base[0].item() == 5.0


def test_retain_grad_and_is_leaf():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    assert x.is_leaf and not h.is_leaf
    (h * h).sum().backward()
    assert_close(h.grad, np.array([6.0, 12.0], np.float32))


def test_hooks_modify_gradients():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    h = x * 2
    h.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 10)
    x.register_hook(lambda g: g + 1)
    h.sum().backward()
    assert_close(seen[0], np.ones(2, np.float32))
    assert_close(x.grad, np.array([21.0, 21.0], np.float32))


def test_requires_grad_rules():
    with pytest.raises(RuntimeError, match="floating point"):
        tj.tensor([1, 2], requires_grad=True)
    x = tj.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf variables"):
        (x * 2).requires_grad_(False)
    assert not (x > 0).requires_grad  # comparisons are not differentiable
    assert not x.argmax().requires_grad
    assert not x.long().requires_grad


def test_grad_fn_names_and_repr():
    x = tj.ones(2, requires_grad=True)
    y = x * 2
    assert y.grad_fn.name() == "MulBackward0"
    assert "grad_fn=<MulBackward0>" in repr(y)
    assert "requires_grad=True" in repr(x)


def test_numpy_refuses_requires_grad():
    x = tj.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"detach\(\).numpy\(\)"):
        x.numpy()
    assert x.detach().numpy().shape == (2,)


def test_gradcheck_catches_a_wrong_rule(monkeypatch):
    from tracejit import ops
    monkeypatch.setattr(ops.SIN, "vjp", lambda g, out, x: (g * x.sin(),))  # wrong on purpose
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(lambda t: t.sin(), (leaf64((3,)),))


def test_gradcheck_requires_float64():
    with pytest.raises(ValueError, match="float64"):
        gradcheck(lambda t: t * 2, (tj.ones(2, requires_grad=True),))


def test_mlp_and_softmax_cross_entropy_gradients():
    import tracejit.nn.functional as F
    x = leaf64((4, 3))
    w1, b1 = leaf64((5, 3), seed=1), leaf64((5,), seed=2)
    w2, b2 = leaf64((3, 5), seed=3), leaf64((3,), seed=4)
    target = tj.tensor([0, 2, 1, 2])
    gradcheck(lambda x, w1, b1, w2, b2: F.cross_entropy(
        F.linear(F.linear(x, w1, b1).relu(), w2, b2), target), (x, w1, b1, w2, b2))


def test_weight_gradients_are_c_ordered():
    # torch's AccumulateGrad gives a gradient its leaf's layout: a Linear weight's gradient is
    # computed transposed (the vjp of x @ w.T), eagerly and by a compiled backward
    net = tj.nn.Linear(6, 4)
    x = tj.randn(8, 6)
    net(x).sum().backward()
    eager = net.weight.grad.numpy().copy()
    assert net.weight.grad.numpy().flags.c_contiguous
    f = tj.trace(lambda x: net(x).sum(), compile="sync")
    for _ in range(2):
        net.weight.grad = None
        f(x).backward()
        assert net.weight.grad.numpy().flags.c_contiguous
        np.testing.assert_allclose(net.weight.grad.numpy(), eager, rtol=1e-5, atol=1e-6)
