"""The ops of issue 15's "ops and API details" list: each against numpy (and torch where
installed) eagerly, traced through the reference interpreter and compiled (a few grouped
functions, compiling is slow), and each gradient by gradcheck in float64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit.autograd import gradcheck
from tracejit.errors import ShapeError

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
    # atan2's quadrants, signed zeros and infinities, against numpy (C's atan2)
    v = np.array([0.0, -0.0, 1.0, -1.0, 2.5, -3.0, np.inf, -np.inf, np.nan, 1e-30, 3e38], F32)
    y, x = np.meshgrid(v, v)
    got = run(session(tj.onnx.export(tj.atan2, tj.tensor(y), tj.tensor(x))), [y, x])[0]
    want = np.arctan2(y, x)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_array_equal(np.signbit(got[~np.isnan(want)]),
                                  np.signbit(want[~np.isnan(want)]))
    with pytest.raises(Exception, match="atan2.*float64"):
        tj.onnx.export(tj.atan2, tj.tensor(y).double(), tj.tensor(x).double())


# ----------------------------------------------------------------------------------------------
# the composed ops against torch: name -> fn(lib, x), run on the same float64 data


def _lib_cases():
    inf = float("inf")
    return {
        "isclose": lambda L, x: L.isclose(x, x + 1e-9),
        "isclose_nan": lambda L, x: L.isclose(x / x.abs().amin() * 0 * 0, x * 0, equal_nan=True),
        "roll": lambda L, x: L.roll(x, 2, 1), "roll_neg2": lambda L, x: x.roll((-1, 5), (0, 2)),
        "roll_flat": lambda L, x: L.roll(x, 7),
        "repeat_interleave": lambda L, x: L.repeat_interleave(x, 2, dim=1),
        "repeat_interleave_flat": lambda L, x: x.repeat_interleave(3),
        "diagonal": lambda L, x: L.diagonal(x, 1, 0, 2), "diagonal_neg": lambda L, x:
            x.diagonal(-1, 2, 1), "diag2d": lambda L, x: L.diag(x[0], 1),
        "diag1d": lambda L, x: L.diag(x[0, 0], -2),
        "diag_embed": lambda L, x: L.diag_embed(x), "diag_embed_off": lambda L, x:
            L.diag_embed(x, offset=-1, dim1=0, dim2=2),
        "diag_embed_off2": lambda L, x: x.diag_embed(2, 3, 1),
        "tril": lambda L, x: L.tril(x), "triu": lambda L, x: x.triu(1),
        "tril_neg": lambda L, x: x.tril(-2), "triu_big": lambda L, x: L.triu(x, 7),
        "trace": lambda L, x: x[1].trace(),
        "cumprod": lambda L, x: L.cumprod(x, 1), "cumprod0": lambda L, x: x.cumprod(0),
        "logcumsumexp": lambda L, x: L.logcumsumexp(x * 30, 2),
        "sort": lambda L, x: tuple(L.sort(x, 1)), "sort_desc": lambda L, x:
            tuple(x.sort(-1, descending=True)),
        "argsort": lambda L, x: L.argsort(x, 0, descending=True), "msort": lambda L, x:
            L.msort(x),
        "topk": lambda L, x: tuple(L.topk(x, 2, 1)), "topk_small": lambda L, x:
            tuple(x.topk(3, largest=False)),
        "kthvalue": lambda L, x: tuple(L.kthvalue(x, 2, 1)), "kthvalue_keep": lambda L, x:
            tuple(x.kthvalue(4, -1, True)),
        "median": lambda L, x: L.median(x), "median_dim": lambda L, x: tuple(x.median(1)),
        "median_even": lambda L, x: tuple(L.median(x[:, :2], 1, keepdim=True)),
        "mode": lambda L, x: tuple(L.mode((x * 2).round(), 1)),
        "histc": lambda L, x: L.histc(x, 7), "histc_range": lambda L, x: L.histc(x, 5, -1, 1),
        "baddbmm": lambda L, x: L.baddbmm(x[0, :, :4], x, x.transpose(1, 2), beta=0.5, alpha=2),
        "cdist": lambda L, x: L.cdist(x, x[:, :2] + 0.5), "cdist1": lambda L, x:
            L.cdist(x, x, p=1), "cdist_inf": lambda L, x: L.cdist(x, x * 2, p=inf),
        "cdist3": lambda L, x: L.cdist(x[0], x[1], p=3),
        "std_mean": lambda L, x: tuple(L.std_mean(x, 1)), "var_mean": lambda L, x:
            tuple(L.var_mean(x, (0, 2), keepdim=True, correction=0)),
        "norm": lambda L, x: L.norm(x), "norm_p": lambda L, x: x.norm(3, 1),
        "norm_inf": lambda L, x: x.norm(inf, (0, 2)), "norm_0": lambda L, x: L.norm(x, 0),
        "norm_fro_dims": lambda L, x: L.norm(x, "fro", (1, 2)),
        "vector_norm": lambda L, x: L.linalg.vector_norm(x, 1.5, (0, 1), keepdim=True),
        "vector_norm_ninf": lambda L, x: L.linalg.vector_norm(x, -inf, 2),
        "linalg_norm": lambda L, x: L.linalg.norm(x), "linalg_norm_mat": lambda L, x:
            L.linalg.norm(x[0], 1), "linalg_norm_inf": lambda L, x: L.linalg.norm(x[0], inf),
        "matrix_norm": lambda L, x: L.linalg.matrix_norm(x), "matrix_norm_m1": lambda L, x:
            L.linalg.matrix_norm(x, -1, (0, 2)),
        "einsum_mm": lambda L, x: L.einsum("ij,jk->ik", x[0], x[1].T),
        "einsum_bmm": lambda L, x: L.einsum("bij,bkj->bik", x, x),
        "einsum_outer": lambda L, x: L.einsum("i,j->ij", x[0, 0], x[1, 1]),
        "einsum_trace": lambda L, x: L.einsum("ii", x[0, :3, :3]),
        "einsum_diag": lambda L, x: L.einsum("ii->i", x[1, :3, :3]),
        "einsum_sum": lambda L, x: L.einsum("ijk->j", x),
        "einsum_perm": lambda L, x: L.einsum("ijk->kij", x),
        "einsum_implicit": lambda L, x: L.einsum("ij,jk", x[0], x[1].T),
        "einsum_three": lambda L, x: L.einsum("ab,bc,cd->ad", x[0], x[1].T, x[0]),
        "einsum_dot": lambda L, x: L.einsum("i,i->", x[0, 0], x[0, 1]),
        "einsum_batch_sum": lambda L, x: L.einsum("bij,bij->b", x, x),
        "einsum_broadcast": lambda L, x: L.einsum("bij,jk->bik", x, x[0].T),
        "einsum_list": lambda L, x: L.einsum("ij,ij->i", [x[0], x[1]]),
        "einsum_ellipsis": lambda L, x: L.einsum("...ij,...kj->...ik", x, x[0]),
        "einsum_ellipsis_implicit": lambda L, x: L.einsum("i...,i...", x[:, 0], x[:, 1]),
        "einsum_ellipsis_diag": lambda L, x: L.einsum("...ii->...i", x[..., :4]),
        # on the list and already there: checked against torch too
        "flip": lambda L, x: L.flip(x, (0, 2)), "lerp": lambda L, x: L.lerp(x, x * 2, x.sigmoid()),
        "addcmul": lambda L, x: L.addcmul(x, x, x * 3, value=0.5),
        "addcdiv": lambda L, x: x.addcdiv(x, x.exp(), value=2),
        "logsumexp": lambda L, x: L.logsumexp(x * 50, (0, 2)), "sinh_cosh": lambda L, x:
            (L.sinh(x), L.cosh(x)),
    }


LIB_CASES = _lib_cases()


def _torch_compare(got, want, name):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want), name
    for g, w in zip(got, want):
        if isinstance(w, bool):
            assert g == w, name
            continue
        w = w.numpy()
        g = g.numpy()
        assert g.shape == w.shape, (name, g.shape, w.shape)
        assert g.dtype == w.dtype, (name, g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, equal_nan=True, err_msg=name)


@pytest.mark.parametrize("name", list(LIB_CASES))
def test_composed_ops_match_torch(name):
    torch = pytest.importorskip("torch")
    a = data((3, 4, 5), F64, seed=11)  # no ties: sort-family indices are unambiguous
    fn = LIB_CASES[name]
    _torch_compare(fn(tj, tj.tensor(a)), fn(torch, torch.tensor(a)), name)


def test_composed_ops_trace_like_eager():
    a = data((3, 4, 5), F64, seed=11)
    names = [n for n in LIB_CASES if n not in ("isclose_nan",)]

    def fn(x):
        return tuple(LIB_CASES[n](tj, x) for n in names)

    three_ways(fn, a, rtol=1e-12, atol=1e-12)


def test_composed_ops_compile():
    a = data((3, 4, 5), F32, seed=12)
    names = ["roll", "repeat_interleave", "diagonal", "diag_embed_off", "tril", "triu",
             "trace", "cumprod", "logcumsumexp", "sort_desc", "topk", "median_dim", "mode",
             "histc", "baddbmm", "cdist", "std_mean", "norm_p", "matrix_norm_m1", "einsum_bmm",
             "einsum_three", "einsum_diag"]

    def fn(x):
        return tuple(LIB_CASES[n](tj, x) for n in names)

    three_ways(fn, a, rtol=2e-5, atol=1e-5, compiled=True)


GRAD_CASES = {
    "roll": lambda x: x.roll((1, -2), (0, 1)), "repeat_interleave": lambda x:
        x.repeat_interleave(2, 1), "diagonal": lambda x: x.diagonal(1),
    "diag": lambda x: tj.diag(x[0], -1), "diag_embed": lambda x: x.diag_embed(1, 0, 2),
    "tril": lambda x: x.tril(), "triu": lambda x: x.triu(-1), "trace": lambda x: x.trace(),
    "cumprod": lambda x: x.cumprod(1), "logcumsumexp": lambda x: x.logcumsumexp(1),
    "logcumsumexp0": lambda x: (x * 20).logcumsumexp(0),
    "sort": lambda x: x.sort(1, descending=True).values, "topk": lambda x: x.topk(2).values,
    "kthvalue": lambda x: x.kthvalue(2, 0).values, "median": lambda x: x.median(1).values,
    "median_all": lambda x: x.median(), "mode": lambda x: x.mode(1).values,
    "baddbmm": lambda x: tj.baddbmm(x[:, :3], x.unsqueeze(0), x.T.unsqueeze(0), beta=0.5,
                                    alpha=1.5),
    "cdist": lambda x: tj.cdist(x, x[:2] * 2), "cdist1": lambda x: tj.cdist(x, x[:2] * 2, 1),
    "std_mean": lambda x: tj.std_mean(x, 0)[0] + tj.std_mean(x, 0)[1],
    "norm": lambda x: x.norm(), "norm3": lambda x: x.norm(3, 1), "norm_inf": lambda x:
        tj.linalg.vector_norm(x, float("inf"), 1),
    "matrix_norm_1": lambda x: tj.linalg.matrix_norm(x, 1),
    "einsum": lambda x: tj.einsum("ij,kj,kl->il", x, x, x), "einsum_diag": lambda x:
        tj.einsum("ii->i", x[:, :3]),
}


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_composed_ops_gradcheck(name):
    assert gradcheck(GRAD_CASES[name], (leaf64((3, 4), seed=5),))


def test_cumprod_gradient_with_zeros_matches_torch():
    torch = pytest.importorskip("torch")
    a = np.array([[2.0, 0.0, 3.0, 0.0, 5.0], [0.0, 1.5, -2.0, 4.0, 1.0],
                  [1.0, 2.0, 3.0, 4.0, 0.0]])
    g = data((3, 5), F64, seed=3)
    x = tj.tensor(a, requires_grad=True)
    x.cumprod(1).backward(tj.tensor(g))
    t = torch.tensor(a, requires_grad=True)
    t.cumprod(1).backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    assert gradcheck(lambda u: u.cumprod(1), (tj.tensor(a, requires_grad=True),))


def test_norm_gradient_at_zero_is_zero():
    x = tj.zeros(3, requires_grad=True)
    (x.norm() + tj.cdist(x.reshape(1, 3), x.reshape(1, 3)).sum()).backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]


def test_sort_family_edges():
    x = tj.tensor([3.0, float("nan"), 1.0, 1.0, 2.0])
    v, i = x.sort()
    assert i.tolist() == [2, 3, 4, 0, 1] and np.isnan(v[-1].item())
    assert x.sort(descending=True).indices.tolist() == [1, 0, 4, 2, 3]  # ties keep order
    assert np.isnan(x.median().item()) and x.median(0).indices.item() == 1
    assert tj.tensor([1, 3, 2]).median().item() == 2 and tj.tensor([4, 1]).median().item() == 1
    assert tj.tensor(5.0).sort().values.item() == 5.0
    assert tj.tensor([[True, False]]).argsort(1).tolist() == [[1, 0]]
    with pytest.raises(IndexError, match="topk"):
        x.topk(6)
    with pytest.raises(IndexError, match="kthvalue"):
        x.kthvalue(0)


def test_eager_only_ops_and_their_trace_errors():
    x = tj.tensor([[0, 3, 0], [2, 0, 2]])
    assert x.nonzero().tolist() == [[0, 1], [1, 0], [1, 2]]
    assert [t.tolist() for t in tj.nonzero(x, as_tuple=True)] == [[0, 1, 1], [1, 0, 2]]
    u, inv, cnt = tj.unique(x, return_inverse=True, return_counts=True)
    assert u.tolist() == [0, 2, 3] and inv.tolist() == [[0, 2, 0], [1, 0, 1]]
    assert cnt.tolist() == [3, 2, 1]
    assert tj.bincount(tj.tensor([1, 1, 3]), minlength=6).tolist() == [0, 2, 0, 1, 0, 0]
    assert tj.bincount(tj.tensor([1, 1, 3]), tj.tensor([0.5, 1.0, 2.0])).tolist() == \
        [0.0, 1.5, 0.0, 2.0]
    assert tj.repeat_interleave(tj.tensor([1, 2]), tj.tensor([2, 3])).tolist() == [1, 1, 2, 2, 2]
    for name, fn in [("nonzero", lambda t: t.nonzero()), ("unique", lambda t: t.unique()),
                     ("bincount", lambda t: t.reshape(-1).abs().bincount()),
                     ("repeat_interleave", lambda t: t.reshape(-1).repeat_interleave(
                         t.reshape(-1).abs()))]:
        f = tj.trace(fn, backend="interpret")
        with pytest.raises(tj.TraceError, match=name + r".*\n.*fix"):
            f(x)
    # values made inside the traced function are known: these trace
    f = tj.trace(lambda t: t + tj.tensor([0, 1, 1]).bincount(minlength=3), backend="interpret")
    assert f(x).tolist() == [[1, 5, 0], [3, 2, 2]]
    with pytest.raises(tj.TraceError):
        tj.trace(lambda a, b: tj.allclose(a, b), backend="interpret")(x, x)
    assert tj.allclose(tj.tensor([1.0, 2.0]), tj.tensor([1.0, 2.0 + 1e-9]))
    assert not tj.allclose(tj.tensor([1.0, float("nan")]), tj.tensor([1.0, float("nan")]))


def test_histc_traces_with_data_range():
    torch = pytest.importorskip("torch")
    a = data((50,), F32, -3, 3, seed=8)
    f = tj.trace(lambda t: (t.histc(10), t.histc(4, min=-1, max=1)), backend="interpret")
    for got, want in zip(f(tj.tensor(a)), (torch.histc(torch.tensor(a), 10),
                                           torch.histc(torch.tensor(a), 4, -1, 1))):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert tj.tensor([2.0, 2.0]).histc(3).tolist() == torch.tensor([2.0, 2.0]).histc(3).tolist()


def test_einsum_refusals_name_the_problem():
    x = tj.ones(2, 3)
    with pytest.raises(ValueError, match=r"einsum: output subscripts 'k'"):
        tj.einsum("ij,j->k", x, x[0])
    with pytest.raises(ValueError, match="einsum.*2 operands"):
        tj.einsum("ij,jk->ik", x)
    with pytest.raises(ShapeError, match="einsum"):
        tj.einsum("ijk->i", x)
    with pytest.raises(NotImplementedError, match="nuc.*singular values"):
        tj.linalg.matrix_norm(x, "nuc")


def test_inplace_triangles_and_cumprod():
    x = tj.tensor(data((3, 3), F32))
    want = x.tril().numpy()
    assert x.tril_() is x
    np.testing.assert_array_equal(x.numpy(), want)
    y = tj.tensor([1.0, 2.0, 3.0])
    y.cumprod_(0)
    assert y.tolist() == [1.0, 2.0, 6.0]


def test_axis_and_keepdims_alias_dim_and_keepdim():
    torch = pytest.importorskip("torch")
    a = data((2, 3, 4), F64, seed=2)
    x, t = tj.tensor(a), torch.tensor(a)
    for name, kw in [("sum", dict(axis=1, keepdims=True)), ("mean", dict(axis=(0, 2))),
                     ("amax", dict(axis=-1, keepdims=True)), ("argmax", dict(axis=1)),
                     ("std", dict(axis=0, keepdims=True)), ("logsumexp", dict(axis=2)),
                     ("cumsum", dict(axis=1)), ("softmax", dict(axis=0)),
                     ("prod", dict(axis=2, keepdims=True)), ("all", dict(axis=1))]:
        np.testing.assert_allclose(getattr(x, name)(**kw).numpy(), getattr(t, name)(**kw).numpy(),
                                   rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(getattr(tj, name)(x, **kw).numpy(),
                                   getattr(torch, name)(t, **kw).numpy(), rtol=1e-12)
    assert tj.max(x, axis=1, keepdims=True).indices.tolist() == \
        torch.max(t, axis=1, keepdims=True).indices.tolist()
    assert tj.cat([x, x], axis=2).shape == (2, 3, 8)
    f = tj.trace(lambda u: u.sum(axis=0, keepdims=True) + u.median(axis=1, keepdims=True).values,
                 backend="interpret")
    np.testing.assert_allclose(f(x).numpy(), (x.sum(0, True) + x.median(1, True).values).numpy())
    with pytest.raises(TypeError, match="both dim= and its alias axis="):
        x.sum(dim=0, axis=0)


def test_missing_linalg_names_say_what_to_use():
    with pytest.raises(AttributeError, match=r"'svd'.*numpy\.linalg\.svd"):
        tj.linalg.svd  # noqa: B018
    with pytest.raises(AttributeError, match="vecdot.*sum"):
        tj.linalg.vecdot  # noqa: B018


def test_compiled_backward_of_the_new_ops():
    """One compiled gradient graph through the new rows' vjps (cumprod at a zero, the
    logcumsumexp log-space sums, gather for sort/median) and the compositions."""
    a = data((3, 4), F64, -0.9, 0.9, seed=3)
    a[0, 1] = 0.0
    b = data((4,), F64, 0.5, 2, seed=4)

    def loss(x, y):
        return (x.asin() * x.atan() + x.cumprod(1) + x.sort(1, descending=True).values *
                x.logcumsumexp(0) + tj.atan2(x, y) + tj.fmod(x * 5, y) +
                x.median(0).values.sum() + x.tril().sum() * x.triu(1) +
                tj.einsum("ij,kj->ik", x, x).sum() + tj.cdist(x, x).sum() +
                x.norm(3, 1).unsqueeze(1)).sum()

    g = tj.grad(loss)
    x, y = tj.tensor(a), tj.tensor(b)
    with tj.eager():
        want = g(x, y).detach().numpy()
    f = tj.trace(g, backend="cpu")
    for _ in range(2):
        np.testing.assert_allclose(f(x, y).detach().numpy(), want, rtol=1e-10, atol=1e-12)
    assert f.cache_info().hits == 1


def test_tracejit_trace_of_a_tensor_points_to_the_matrix_trace():
    x = tj.eye(3) * 2
    assert x.trace().item() == 6.0
    with pytest.raises(TypeError, match=r"for torch.trace\(x\).*use x.trace\(\)"):
        tj.trace(x)
