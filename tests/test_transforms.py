"""tracejit.grad / value_and_grad: gradients built on the IR from the op table's vjp rules."""

import math

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

from .conftest import assert_close


@pytest.fixture(autouse=True)
def _interpret(monkeypatch, request):
    # most checks are about the gradients, not the compiler: run them on the reference backend
    if "compiled" not in request.node.name:
        monkeypatch.setenv("TRACEJIT_BACKEND", "interpret")


def _eager_grads(f, args, nums):
    leaves = [a.detach().clone().requires_grad_() if i in nums else a
              for i, a in enumerate(args)]
    out = f(*leaves)
    return tj.autograd.grad(out, [leaves[i] for i in nums])


@pytest.mark.parametrize("name, f, shapes", [
    ("mlp", lambda x, w1, b1, w2: ((x @ w1 + b1).tanh() @ w2).square().mean(),
     [(4, 3), (3, 5), (5,), (5, 2)]),
    ("softmax_ce", lambda x, w: F.cross_entropy(x @ w, tj.tensor([0, 2, 1, 1])),
     [(4, 3), (3, 3)]),
    ("layer_norm", lambda x, w, b: (F.layer_norm(x, (6,), w, b) ** 3).sum(),
     [(3, 6), (6,), (6,)]),
    ("conv", lambda x, w: F.max_pool2d(F.conv2d(x, w, padding=1).relu(), 2).sum(),
     [(1, 2, 4, 4), (3, 2, 3, 3)]),
    ("lstm_cell", lambda x, h, c, wi, wh: _lstm_cell(x, h, c, wi, wh),
     [(2, 3), (2, 4), (2, 4), (16, 3), (16, 4)]),
])
def test_ir_grads_equal_eager_grads_and_finite_differences(name, f, shapes):
    rng = np.random.default_rng(0)
    args = [tj.tensor(rng.standard_normal(s)) for s in shapes]  # float64
    nums = tuple(range(len(args)))
    g = tj.grad(f, argnums=nums)
    g(*args)
    ir = g(*args)  # runs the graph
    eager = _eager_grads(f, args, nums)
    for a, b in zip(ir, eager):
        assert_close(a, b.numpy(), rtol=1e-9, atol=1e-10)
    leaves = [a.detach().clone().requires_grad_() for a in args]
    tj.autograd.gradcheck(f, leaves)


def _lstm_cell(x, h, c, wi, wh):
    gates = x @ wi.T + h @ wh.T
    i, fgate, gg, o = gates.chunk(4, 1)
    c2 = fgate.sigmoid() * c + i.sigmoid() * gg.tanh()
    h2 = o.sigmoid() * c2.tanh()
    return (h2.sum() + c2.square().sum())


def test_value_and_grad_and_has_aux():
    def f(w, x):
        y = (x @ w).tanh()
        return y.square().sum(), y

    vg = tj.value_and_grad(f, argnums=0, has_aux=True)
    w, x = tj.randn(3, 2, dtype=tj.float64), tj.randn(4, 3, dtype=tj.float64)
    vg(w, x)
    (value, aux), gw = vg(w, x)
    w2 = w.detach().clone().requires_grad_()
    loss, y = f(w2, x)
    loss.backward()
    assert value.item() == pytest.approx(loss.item())
    assert_close(aux, y.detach().numpy())
    assert_close(gw, w2.grad.numpy(), rtol=1e-10)
    assert not gw.requires_grad and not value.requires_grad


def test_unused_gradients_are_removed_by_dce():
    def f(a, b):
        return (a.exp() * 2 + (b @ b).sum()).sum()

    a, b = tj.randn(3, dtype=tj.float64), tj.randn(4, 4, dtype=tj.float64)
    only_a = tj.grad(f, argnums=0)
    both = tj.grad(f, argnums=(0, 1))
    only_a(a, b)
    both(a, b)
    # b's branch (a matmul) only matters for b's gradient: gone from a's graph
    assert only_a.graph(a, b).op_counts().get("matmul", 0) == 0
    assert both.graph(a, b).op_counts()["matmul"] >= 2


@pytest.mark.parametrize("f, d2", [
    (lambda x: x.sin() * x ** 2,
     lambda v: -math.sin(v) * v * v + 4 * v * math.cos(v) + 2 * math.sin(v)),
    (lambda x: (x * 3).exp(), lambda v: 9 * math.exp(3 * v)),
    (lambda x: x.tanh(), lambda v: -2 * math.tanh(v) * (1 - math.tanh(v) ** 2)),
    (lambda x: (x ** 2 + 1).log(), lambda v: (2 - 2 * v * v) / (v * v + 1) ** 2),
])
def test_grad_of_grad_matches_analytic(f, d2):
    g2 = tj.grad(tj.grad(f))
    for v in (0.3, -1.2):
        x = tj.tensor(v, dtype=tj.float64)
        g2(x)
        assert g2(x).item() == pytest.approx(d2(v), rel=1e-9)


def test_grad_requires_a_scalar_output():
    g = tj.grad(lambda x: x * 2)
    with pytest.raises(tj.ShapeError, match="must return a scalar"):
        g(tj.ones(3))


def test_grad_compiled_matches_eager():
    f = lambda w, x: F.mse_loss((x @ w).relu(), tj.ones(4, 2))  # noqa: E731
    g = tj.grad(f, backend="cpu")
    w, x = tj.randn(3, 2), tj.randn(4, 3)
    g(w, x)
    got = g(w, x)
    want, = _eager_grads(f, [w, x], (0,))
    assert_close(got, want.numpy(), rtol=1e-5, atol=1e-6)
    assert any(n.op == "fused" for n in g.graph(w, x).nodes)
