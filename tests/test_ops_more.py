"""The ops of issue 15's "ops and API details" list: each against numpy (and torch where
installed) eagerly, traced through the reference interpreter and compiled (a few grouped
functions, compiling is slow), and each gradient by gradcheck in float64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit.autograd import gradcheck

from .conftest import data, leaf64

F32, F64, I64 = np.float32, np.float64, np.int64


def _np(t):
    return t.detach().numpy() if isinstance(t, tj.Tensor) else np.asarray(t)


def _leaves(obj):
    if isinstance(obj, (tuple, list)):
        return [x for o in obj for x in _leaves(o)]
    return [obj]


def three_ways(fn, *args, rtol=1e-6, atol=1e-6, compiled=False):
    """``fn`` eagerly, traced (interpreter) and optionally compiled: the same numbers."""
    tensors = [tj.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    with tj.eager():
        want = _leaves(fn(*tensors))
    backends = ["interpret"] + (["cpu"] if compiled else [])
    for backend in backends:
        f = tj.trace(fn, backend=backend)
        for call in range(2):
            got = _leaves(f(*tensors))
            assert len(got) == len(want)
            for k, (g, w) in enumerate(zip(got, want)):
                g, w = _np(g), _np(w)
                assert g.shape == w.shape and g.dtype == w.dtype, (backend, k, g.shape, w.shape)
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True,
                                           err_msg=f"{backend} call {call} output {k}")
    return want


# ----------------------------------------------------------------------------------------------
# elementwise math

UNARY = {
    "asin": (np.arcsin, (-0.99, 0.99)), "acos": (np.arccos, (-0.99, 0.99)),
    "atan": (np.arctan, (-4, 4)), "asinh": (np.arcsinh, (-4, 4)),
    "acosh": (np.arccosh, (1.01, 5)), "atanh": (np.arctanh, (-0.99, 0.99)),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_inverse_trig_values_and_aliases(name):
    ref, (lo, hi) = UNARY[name]
    a = data((3, 4), F32, lo, hi)
    x = tj.tensor(a)
    np.testing.assert_allclose(getattr(x, name)().numpy(), ref(a), rtol=2e-6, atol=1e-7)
    alias = "arc" + name[1:]
    np.testing.assert_array_equal(getattr(tj, alias)(x).numpy(), getattr(tj, name)(x).numpy())
    assert getattr(tj, name)(tj.tensor([1, 0])).dtype == tj.float32  # ints give float32
    y = x.clone()
    getattr(y, name + "_")()
    np.testing.assert_array_equal(y.numpy(), getattr(x, name)().numpy())


def test_atan2_and_fmod_values():
    y, x = data((3, 4), F32, -3, 3, seed=1), data((4,), F32, -3, 3, seed=2)
    np.testing.assert_allclose(tj.atan2(tj.tensor(y), tj.tensor(x)).numpy(), np.arctan2(y, x),
                               rtol=2e-6)
    quadrants = tj.atan2(tj.tensor([0.0, -0.0, 1.0, -1.0]), tj.tensor([-1.0, -1.0, 0.0, 0.0]))
    np.testing.assert_allclose(quadrants.numpy(), [np.pi, -np.pi, np.pi / 2, -np.pi / 2])
    a = tj.tensor([-7.5, 7.5, -7, 7, 0.0])
    np.testing.assert_array_equal(a.fmod(2).numpy(), np.fmod(a.numpy(), 2))
    np.testing.assert_array_equal(tj.fmod(tj.tensor([-7, 7, -7, 7]), tj.tensor([2, 2, -2, -2]))
                                  .numpy(), [-1, 1, -1, 1])
    assert (a % 2).tolist()[0] == 0.5 and a.fmod(2).tolist()[0] == -1.5  # remainder differs
    with pytest.raises(RuntimeError, match="fmod.*ZeroDivisionError"):
        tj.fmod(tj.tensor([3]), tj.tensor([0]))
    assert np.isnan(tj.fmod(tj.tensor([3.0]), 0.0).item())


def test_elementwise_math_traced_and_compiled():
    a = data((4, 5), F32, -0.9, 0.9)
    b = data((5,), F32, 0.5, 2, seed=3)
    i = np.array([-7, 7, 5, -3, 9])
    j = np.array([2, -2, 3, 3, -4])

    def fn(x, y, i, j):
        return (x.asin(), x.acos(), x.atan(), x.asinh(), (x.abs() + 1).acosh(), x.atanh(),
                tj.atan2(x, y), tj.fmod(x * 7, y), tj.fmod(i, j), x.double().asin())

    three_ways(fn, a, b, i, j, rtol=2e-6, atol=1e-7, compiled=True)


def test_compiled_integer_fmod_by_zero_raises():
    f = tj.trace(lambda i, j: tj.fmod(i, j) + 1, backend="cpu")
    f(tj.tensor([5, 6]), tj.tensor([2, 4]))
    with pytest.raises(Exception, match="fmod.*ZeroDivisionError"):
        f(tj.tensor([5, 6]), tj.tensor([2, 0]))


@pytest.mark.parametrize("name", list(UNARY))
def test_inverse_trig_gradcheck(name):
    _, (lo, hi) = UNARY[name]
    lo, hi = (lo * 0.9, hi * 0.9) if name != "acosh" else (1.2, 4)
    assert gradcheck(lambda t: getattr(t, name)(), (leaf64((2, 3), lo, hi),))


def test_atan2_fmod_gradcheck():
    y, x = leaf64((2, 3), -2, 2, seed=1), leaf64((3,), 0.5, 2, seed=2)
    assert gradcheck(lambda a, b: tj.atan2(a, b), (y, x))
    assert gradcheck(lambda a, b: tj.atan2(b, a), (y, x))  # x < 0 half plane too
    a, b = leaf64((2, 3), 3.1, 3.9, seed=3), leaf64((2, 3), 1.1, 1.4, seed=4)
    assert gradcheck(lambda u, v: tj.fmod(u, v), (a, b))
    assert gradcheck(lambda u, v: tj.fmod(-u, v), (a, b))


def test_eager_elementwise_ops_on_inf_and_nan_are_silent():
    x = tj.tensor([np.inf, -np.inf, np.nan, 0.0, -1.0, 2.0, 1e30])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ["exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tan",
                     "sinh", "cosh", "tanh", "sigmoid", "erf", "asin", "acos", "atan", "asinh",
                     "acosh", "atanh", "reciprocal", "log2", "square", "floor", "sign"]:
            getattr(x, name)()
        for name in ["add", "sub", "mul", "div", "pow", "remainder", "fmod", "atan2",
                     "maximum", "__floordiv__"]:
            getattr(x, name)(x)
        x.float().long(), (x * 0).sum(), x.prod(), x.cumsum(0), x.softmax(0), x.logsumexp(0)


def test_inverse_trig_match_torch():
    torch = pytest.importorskip("torch")
    a = data((3, 4), F64, -0.99, 0.99)
    for name in ["asin", "acos", "atan", "asinh", "atanh"]:
        np.testing.assert_allclose(getattr(tj.tensor(a), name)().numpy(),
                                   getattr(torch.tensor(a), name)().numpy(), rtol=1e-12)
    b = a + 2
    np.testing.assert_allclose(tj.tensor(b).acosh().numpy(), torch.tensor(b).acosh().numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(tj.atan2(tj.tensor(a), tj.tensor(b - 2.5)).numpy(),
                               torch.atan2(torch.tensor(a), torch.tensor(b - 2.5)).numpy())
    np.testing.assert_array_equal(tj.fmod(tj.tensor(a * 9), 2.0).numpy(),
                                  torch.fmod(torch.tensor(a * 9), 2.0).numpy())


def test_elementwise_math_exports_to_onnx():
    pytest.importorskip("onnxruntime")
    from .onnx.harness import assert_close, run, session

    x = data((3, 4), F32, -0.9, 0.9)
    i, j = np.array([-7, 7, 5, -3]), np.array([2, -2, 3, 3])

    def fn(t, a, b):
        return (t.asin(), t.acos(), t.atan(), t.asinh(), (t.abs() + 1).acosh(), t.atanh(),
                tj.fmod(t * 7, 0.5), tj.fmod(a, b))

    args = [tj.tensor(x), tj.tensor(i), tj.tensor(j)]
    sess = session(tj.onnx.export(fn, *args))
    with tj.eager():
        want = fn(*args)
    for k, (g, w) in enumerate(zip(run(sess, [x, i, j]), want)):
        assert_close(g, w, f"output {k}")
    with pytest.raises(Exception, match="atan2"):
        tj.onnx.export(lambda a: tj.atan2(a, a + 1), args[0])
