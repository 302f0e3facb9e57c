"""tracejit.autograd.Function (eager, traced, gradcheck) and tracejit.autograd.functional,
against torch where it is installed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit.autograd import Function, gradcheck, gradgradcheck
from tracejit.autograd.function import once_differentiable
from tracejit.autograd.functional import hessian, hvp, jacobian, jvp, vhp, vjp


def make_functions(lib):
    """The same custom Functions written against ``lib`` (tracejit or torch)."""
    class Exp(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * y

    class MulAdd(lib.autograd.Function):
        """Two outputs, a Python argument, and needs_input_grad."""
        @staticmethod
        def forward(ctx, x, y, alpha):
            ctx.save_for_backward(x, y)
            ctx.alpha = alpha
            ctx.seen = ctx.needs_input_grad
            return x * y, x + alpha * y

        @staticmethod
        def backward(ctx, g1, g2):
            x, y = ctx.saved_tensors
            gx = g1 * y + g2 if ctx.needs_input_grad[0] else None
            gy = g1 * x + ctx.alpha * g2 if ctx.needs_input_grad[1] else None
            return gx, gy, None

    class STE(lib.autograd.Function):
        """Rounding with a straight-through (doubled) gradient: not the true gradient."""
        @staticmethod
        def forward(ctx, x):
            return x.round()

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    class SortValues(lib.autograd.Function):
        """The maximum and its (non-differentiable) index."""
        @staticmethod
        def forward(ctx, x):
            idx = x.argmax()
            ctx.mark_non_differentiable(idx)
            ctx.save_for_backward(x, idx)
            return x.max(), idx

        @staticmethod
        def backward(ctx, g, g_idx):
            x, idx = ctx.saved_tensors
            return g * (lib.arange(x.shape[0]) == idx).to(x.dtype)

    class Cube(lib.autograd.Function):
        """A backward written with differentiable ops: second derivatives work."""
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * g * x ** 2

    return Exp, MulAdd, STE, SortValues, Cube


TJ = make_functions(tj)
X = np.array([0.3, -1.2, 2.5], dtype=np.float64)
Y = np.array([1.5, 0.5, -0.7], dtype=np.float64)


def leaf(a, lib=tj):
    if lib is tj:
        return tj.tensor(a, requires_grad=True)
    return lib.tensor(a, requires_grad=True)


def run_all(lib, fns):
    """Outputs and gradients of every Function on X, Y, as numpy."""
    Exp, MulAdd, STE, SortValues, Cube = fns
    out = {}
    x = leaf(X, lib)
    Exp.apply(x).sum().backward()
    out["exp"] = x.grad
    x, y = leaf(X, lib), leaf(Y, lib)
    a, b = MulAdd.apply(x, y, 0.5)
    (a * 2 + b * 3).sum().backward()
    out["muladd_x"], out["muladd_y"] = x.grad, y.grad
    x = leaf(X, lib)
    (STE.apply(x) * lib.tensor(Y)).sum().backward()
    out["ste"] = x.grad
    x = leaf(X, lib)
    v, idx = SortValues.apply(x)
    (v * 2).backward()
    out["sort"], out["idx"] = x.grad, idx
    x = leaf(X, lib)
    (g,) = lib.autograd.grad(Cube.apply(x).sum(), x, create_graph=True)
    g.sum().backward()
    out["cube_g"], out["cube_gg"] = g, x.grad
    return {k: v.detach().numpy() for k, v in out.items()}


def test_eager_values():
    got = run_all(tj, TJ)
    np.testing.assert_allclose(got["exp"], np.exp(X))
    np.testing.assert_allclose(got["muladd_x"], 2 * Y + 3)
    np.testing.assert_allclose(got["muladd_y"], 2 * X + 1.5)
    np.testing.assert_allclose(got["ste"], 2 * Y)
    np.testing.assert_allclose(got["cube_g"], 3 * X ** 2)
    np.testing.assert_allclose(got["cube_gg"], 6 * X)


@pytest.mark.torch
def test_eager_matches_torch():
    torch = pytest.importorskip("torch")
    got, want = run_all(tj, TJ), run_all(torch, make_functions(torch))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)


def test_grad_fn_needs_input_grad_and_non_differentiable():
    Exp, MulAdd, STE, SortValues, Cube = TJ
    x, y = leaf(X), tj.tensor(Y)
    a, b = MulAdd.apply(x, y, 1.0)
    assert repr(a.grad_fn) == "<MulAddBackward>" and a.requires_grad and b.requires_grad
    assert a.grad_fn.next_functions[0].next_functions == ("AccumulateGrad", None)
    v, idx = SortValues.apply(x)
    assert v.requires_grad and not idx.requires_grad and idx.grad_fn is None
    with tj.no_grad():
        assert Exp.apply(x).grad_fn is None
    assert Exp.apply(tj.tensor(X)).grad_fn is None  # no input needs a gradient

    class Seen(Function):
        @staticmethod
        def forward(ctx, p, q, n):
            Seen.flags = ctx.needs_input_grad
            return p + q

        @staticmethod
        def backward(ctx, g):
            return g, g, None
    Seen.apply(x, y, 3)
    assert Seen.flags == (True, False, False)


def test_gradcheck_and_gradgradcheck():
    Exp, MulAdd, STE, SortValues, Cube = TJ
    x, y = leaf(X), leaf(Y)
    assert gradcheck(Exp.apply, (x,))
    assert gradcheck(lambda p, q: MulAdd.apply(p, q, 0.25), (x, y))
    assert gradcheck(lambda p: SortValues.apply(p)[0], (x,))
    assert gradgradcheck(Cube.apply, (x,))
    with pytest.raises(AssertionError, match="gradient of input 0"):
        gradcheck(STE.apply, (x,))  # its backward is not the true gradient: caught


def test_materialize_grads_and_unused_outputs():
    seen = {}

    class Two(Function):
        @staticmethod
        def forward(ctx, x, materialize):
            ctx.set_materialize_grads(materialize)
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            seen["g2"] = g2
            return g1 * 2 + (0 if g2 is None else g2 * 3), None

    for materialize in (True, False):
        x = leaf(X)
        a, _ = Two.apply(x, materialize)
        a.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), 2.0)
        if materialize:
            np.testing.assert_array_equal(seen["g2"].numpy(), np.zeros(3))
        else:
            assert seen["g2"] is None


def test_setup_context_vjp_once_differentiable_and_returned_input():
    class Scale(Function):  # torch 2 style: forward without ctx
        @staticmethod
        def forward(x, k):
            return x * k

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.k = inputs[1]

        @staticmethod
        def vjp(ctx, g):
            return g * ctx.k, None

    x = leaf(X)
    Scale.apply(x, 4.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 4.0)

    class Ident(Function):
        @staticmethod
        def forward(ctx, x):
            return x  # an input returned as is

        @staticmethod
        @once_differentiable
        def backward(ctx, g):
            assert not tj.is_grad_enabled()
            return g * 5

    x = leaf(X)
    y = Ident.apply(x)
    assert y is not x and y.grad_fn is not None and x.grad_fn is None
    (y * 1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 5.0)


def test_errors_name_the_function():
    class Few(Function):
        @staticmethod
        def forward(ctx, x, y):
            return x * y

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(RuntimeError, match="FewBackward returned an incorrect number of "
                                           "gradients \\(expected 2, got 1\\)"):
        Few.apply(leaf(X), leaf(Y)).sum().backward()

    class Shape(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g[:2]

    with pytest.raises(RuntimeError, match=r"ShapeBackward returned an invalid gradient at "
                                           r"index 0 - got \[2\] but expected shape compatible "
                                           r"with \[3\]"):
        Shape.apply(leaf(X)).sum().backward()

    class NotTensor(Function):
        @staticmethod
        def forward(ctx, x, n):
            return x * n

        @staticmethod
        def backward(ctx, g):
            return g, g

    with pytest.raises(RuntimeError, match="different than None at position 1"):
        NotTensor.apply(leaf(X), 2).sum().backward()

    Exp = TJ[0]
    x = leaf(X)
    y = Exp.apply(x)
    with tj.no_grad():
        y.mul_(2)  # the saved output changes before backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    with pytest.raises(RuntimeError, match="call Exp.apply"):
        Exp()

    class Dirty(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.mark_dirty(x)
            return x

    with pytest.raises(NotImplementedError, match="mark_dirty"):
        Dirty.apply(leaf(X))


# ------------------------------------------------------------------------------ under trace

def test_traced_training_step_uses_the_custom_backward():
    STE = TJ[2]
    w = tj.nn.Parameter(tj.tensor([0.3, 1.7, -2.2]))
    opt = tj.optim.SGD([w], lr=0.1)
    x = tj.tensor([1.0, 2.0, 3.0])

    def step(x):
        opt.zero_grad()
        loss = (STE.apply(w) * x).sum()
        loss.backward()
        opt.step()
        return loss

    traced = tj.trace(step)
    expected = w.detach().clone()
    for _ in range(3):
        traced(x)
        expected = expected - 0.1 * 2 * x  # the straight-through gradient, doubled
        np.testing.assert_allclose(w.detach().numpy(), expected.numpy(), rtol=1e-6)
    info = traced.cache_info()
    assert info.misses == 1 and info.hits == 2 and info.eager_calls == 0
    assert "round" in str(traced.graph(x))


def test_tracejit_grad_of_a_custom_function():
    Exp, _, STE, _, Cube = TJ
    df = tj.grad(lambda x: (STE.apply(x) + Exp.apply(x)).sum())
    for _ in range(2):  # traced, then compiled
        np.testing.assert_allclose(df(tj.tensor(X)).detach().numpy(), 2 + np.exp(X), rtol=1e-12)
    d2f = tj.grad(lambda x: tj.grad(lambda y: Cube.apply(y).sum())(x).sum())
    np.testing.assert_allclose(d2f(tj.tensor(X)).detach().numpy(), 6 * X, rtol=1e-12)


@pytest.mark.parametrize("backend", ["cpu", "interpret"])
def test_traced_model_with_eager_backward_compiles_the_custom_backward(backend):
    """A traced model called from eager code: its compiled grad_fn calls the Functions'
    backward (the graph replays them), and nothing runs eagerly."""
    Exp, _, STE, _, Cube = TJ
    model = tj.nn.Linear(3, 4).to(tj.float64)

    def f(x):
        h = model(x)
        return (STE.apply(h * 3) + Cube.apply(h) + Exp.apply(h)).sum()

    traced = tj.trace(f, backend=backend)
    x = tj.tensor(np.random.default_rng(0).standard_normal((2, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            model.zero_grad()
            traced(x).backward()
    got = model.weight.grad.numpy().copy()
    model.zero_grad()
    f(x).backward()
    np.testing.assert_allclose(got, model.weight.grad.numpy(), rtol=1e-12)
    spec = traced.specs()[0]
    assert spec.compiled_grad not in (None, False) and not spec.eager_grad
    assert traced.cache_info().eager_calls == 0
    # the custom backward (2 * g for STE) is in the compiled backward graph: the true
    # gradient of round() would be zero
    h = model(x).detach()
    want = ((6 + 3 * h.numpy() ** 2 + np.exp(h.numpy())).T @ x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_double_backward_through_a_compiled_grad_fn_calls_backward():
    Cube = TJ[4]
    traced = tj.trace(lambda a: Cube.apply(a).sum())
    for _ in range(2):
        a = leaf(X)
        (g,) = tj.autograd.grad(traced(a), a, create_graph=True)
        (gg,) = tj.autograd.grad(g.sum(), a)
        np.testing.assert_allclose(g.detach().numpy(), 3 * X ** 2, rtol=1e-12)
        np.testing.assert_allclose(gg.numpy(), 6 * X, rtol=1e-12)


def test_a_function_reading_other_tensors_runs_eagerly_with_a_warning():
    scale = tj.tensor(np.array([1.0, 2.0, 3.0]))

    class Scaled(Function):  # forward reads a tensor that is not an argument
        @staticmethod
        def forward(ctx, x):
            return x * scale

        @staticmethod
        def backward(ctx, g):
            return g * scale * 10

    @tj.trace
    def model(x):
        return Scaled.apply(x * 1.5).sum()

    x = leaf(X)
    with pytest.warns(RuntimeWarning, match="runs eagerly .*autograd.Function Scaled"):
        for _ in range(3):
            model(x).backward()
            np.testing.assert_allclose(x.grad.numpy(), 15 * scale.numpy())
            x.grad = None
    assert model.cache_info().eager_calls == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tj.no_grad():  # no gradient needed: the compiled graph runs
            assert model(x).item() == pytest.approx(float((X * 1.5 * [1, 2, 3]).sum()))


def test_a_backward_reading_other_tensors_replays_the_graph_with_a_warning():
    scale = tj.tensor(np.array([1.0, 2.0, 3.0]))

    class B(Function):  # backward reads a tensor neither passed to apply nor saved
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * scale

    @tj.trace
    def model(x):
        return B.apply(x * 1.0).sum()

    x = leaf(X)
    with pytest.warns(RuntimeWarning, match="cannot hold the backward of tracejit.autograd."
                                            "Function B.*replay the graph op by op"):
        for _ in range(3):
            model(x).backward()
            np.testing.assert_allclose(x.grad.numpy(), [1, 2, 3])
            x.grad = None
    assert model.specs()[0].compiled_grad is False and model.cache_info().eager_calls == 0


def test_untraceable_function_raises_a_trace_error_naming_it():
    class NumpySin(Function):
        @staticmethod
        def forward(ctx, x):
            return tj.tensor(np.sin(x.numpy()))

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(tj.TraceError, match="forward of tracejit.autograd.Function NumpySin"):
        tj.trace(lambda x: NumpySin.apply(x))(tj.ones(2))

    class NumpyBackward(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return tj.tensor(np.cos(x.detach().numpy())) * g

    df = tj.grad(lambda x: NumpyBackward.apply(x).sum())
    with pytest.raises(tj.TraceError, match="backward of tracejit.autograd.Function "
                                            "NumpyBackward"):
        df(tj.ones(2))


# ------------------------------------------------------------------------------ functional

def f_vec(x):
    return (x.sin() * x[0]).exp()


def f_two(x, y):
    return x * y.sum(), (x ** 2).sum() + y.prod()


def f_scalar(x, y):
    return (x.exp() * y).sum() + (x ** 2 * y ** 3).sum()


def to_np(r):
    if isinstance(r, tuple):
        return tuple(to_np(x) for x in r)
    return r.detach().numpy()


def check_same(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            check_same(g, w)
        return
    assert not isinstance(got, tuple)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def functional_results(lib, F):
    x, y = lib.tensor(X), lib.tensor(Y)
    v3 = lib.tensor([0.2, -0.4, 1.0], dtype=x.dtype)
    return {
        "jac": F.jacobian(f_vec, x),
        "jac_fwd": F.jacobian(f_vec, x, vectorize=True, strategy="forward-mode"),
        "jac_tuple": F.jacobian(f_two, (x, y)),
        "hess": F.hessian(lambda a: (a.exp() * a).sum(), x),
        "hess_tuple": F.hessian(f_scalar, (x, y)),
        "vjp": F.vjp(f_vec, x, v3),
        "vjp_tuple": F.vjp(f_two, (x, y), (v3, lib.tensor(1.0, dtype=x.dtype))),
        "jvp": F.jvp(f_vec, x, v3),
        "jvp_tuple": F.jvp(f_two, (x, y), (v3, v3)),
        "vhp": F.vhp(f_scalar, (x, y), (v3, v3)),
        "hvp": F.hvp(f_scalar, (x, y), (v3, v3)),
    }


def test_functional_values():
    r = functional_results(tj, tj.autograd.functional)
    xs = X
    want = np.diag(np.exp(np.sin(xs) * xs[0]) * np.cos(xs) * xs[0])
    want[:, 0] += np.exp(np.sin(xs) * xs[0]) * np.sin(xs)
    np.testing.assert_allclose(r["jac"].numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(r["jac_fwd"].numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(r["hess"].numpy(), np.diag(np.exp(xs) * (xs + 2)), rtol=1e-12)
    assert r["jac_tuple"][0][0].shape == (3, 3) and r["hess_tuple"][1][0].shape == (3, 3)


@pytest.mark.torch
def test_functional_matches_torch():
    torch = pytest.importorskip("torch")
    got = functional_results(tj, tj.autograd.functional)
    want = functional_results(torch, torch.autograd.functional)
    for k in want:
        check_same(to_np(got[k]), to_np(want[k]))


@pytest.mark.torch
def test_functional_create_graph_and_strict_match_torch():
    torch = pytest.importorskip("torch")

    def outer(lib, F):
        x = lib.tensor(X, requires_grad=True)
        h = F.hessian(lambda a: (a ** 3 * a.sin()).sum(), x, create_graph=True)
        (g,) = lib.autograd.grad(h.sum(), x)
        _, j = F.jvp(lambda a: a.exp() * a, x, lib.ones_like(x), create_graph=True)
        (g2,) = lib.autograd.grad(j.sum(), x)
        return g.detach().numpy(), g2.detach().numpy(), h.requires_grad

    a, b = outer(tj, tj.autograd.functional), outer(torch, torch.autograd.functional)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-10)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-10)
    assert a[2] and b[2]
    # independent inputs: zeros, or an error in strict mode
    x, y = tj.tensor(X), tj.tensor(Y)
    jac = jacobian(lambda p, q: p * 2, (x, y))
    np.testing.assert_array_equal(jac[1].numpy(), np.zeros((3, 3)))
    with pytest.raises(RuntimeError, match="independent of input 1"):
        jacobian(lambda p, q: p * 2, (x, y), strict=True)
    with pytest.raises(RuntimeError, match="independent of input 1"):
        torch.autograd.functional.jacobian(lambda p, q: p * 2,
                                           (torch.tensor(X), torch.tensor(Y)), strict=True)


def test_functional_results_are_detached_and_errors_are_clear():
    x = tj.tensor(X)
    out, g = vjp(lambda a: (a ** 2).sum(), x)
    assert not out.requires_grad and not g.requires_grad
    np.testing.assert_allclose(g.numpy(), 2 * X)
    _, h = hvp(lambda a: (a ** 3).sum(), x, tj.ones(3, dtype=tj.float64))
    _, h2 = vhp(lambda a: (a ** 3).sum(), x, tj.ones(3, dtype=tj.float64))
    np.testing.assert_allclose(h.numpy(), 6 * X)
    np.testing.assert_allclose(h2.numpy(), 6 * X)
    with pytest.raises(RuntimeError, match="v can only be None"):
        vjp(lambda a: a * 2, x)
    with pytest.raises(TypeError, match="must be a Tensor"):
        jacobian(lambda a: a, [x])
    with pytest.raises(RuntimeError, match="single element"):
        hessian(lambda a: a * 2, x)
    with pytest.raises(ValueError, match="strategy"):
        jacobian(lambda a: a, x, strategy="sideways")
    assert jvp(lambda a: a.sum(), x, tj.ones(3, dtype=tj.float64))[1].item() == 3.0
