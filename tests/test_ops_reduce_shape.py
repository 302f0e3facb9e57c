"""Reductions, shape ops and matmul: values against numpy, dtypes and errors as in torch,
gradients against finite differences, and each primitive's ``infer`` rule against eager."""

import warnings

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit import ops
from tracejit.dispatch import apply

from .conftest import assert_close, data, gradcheck, gradgradcheck, leaf64, noncontig

F32, F64, I32, I64, B = (np.dtype(t) for t in ("float32", "float64", "int32", "int64", "bool"))


def _np_quiet(fn, *args, **kwargs):
    """numpy reference without its warnings (var of one element, mean of nothing, ...)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ============================================================================================
# reductions: values


def _lse(a, axis, keepdims):
    a64 = a.astype(np.float64)
    return np.log(np.sum(np.exp(a64), axis=axis, keepdims=keepdims)).astype(a.dtype)


def _pnorm(p):
    def ref(a, axis, keepdims):
        return (np.sum(np.abs(a) ** p, axis=axis, keepdims=keepdims) ** (1.0 / p)).astype(a.dtype)
    return ref


# name: (tracejit call, numpy reference), both taking (array-or-tensor, dim, keepdim)
REDUCTIONS = {
    "sum": (lambda t, d, k: t.sum(d, keepdim=k), lambda a, d, k: np.sum(a, d, keepdims=k)),
    "mean": (lambda t, d, k: t.mean(d, keepdim=k), lambda a, d, k: np.mean(a, d, keepdims=k)),
    "prod": (lambda t, d, k: t.prod(d, keepdim=k), lambda a, d, k: np.prod(a, d, keepdims=k)),
    "amax": (lambda t, d, k: t.amax(() if d is None else d, keepdim=k),
             lambda a, d, k: np.amax(a, d, keepdims=k)),
    "amin": (lambda t, d, k: t.amin(() if d is None else d, keepdim=k),
             lambda a, d, k: np.amin(a, d, keepdims=k)),
    "var": (lambda t, d, k: t.var(d, keepdim=k), lambda a, d, k: np.var(a, d, ddof=1, keepdims=k)),
    "var_correction0": (lambda t, d, k: t.var(d, keepdim=k, correction=0),
                        lambda a, d, k: np.var(a, d, ddof=0, keepdims=k)),
    "var_correction2": (lambda t, d, k: t.var(d, keepdim=k, correction=2),
                        lambda a, d, k: np.var(a, d, ddof=2, keepdims=k)),
    "std": (lambda t, d, k: t.std(d, keepdim=k), lambda a, d, k: np.std(a, d, ddof=1, keepdims=k)),
    "std_biased": (lambda t, d, k: t.std(d, False, k),
                   lambda a, d, k: np.std(a, d, ddof=0, keepdims=k)),
    "logsumexp": (lambda t, d, k: t.logsumexp(d, keepdim=k), _lse),
    "norm": (lambda t, d, k: t.norm(dim=d, keepdim=k), _pnorm(2)),
    "norm1": (lambda t, d, k: t.norm(1, d, k), _pnorm(1)),
    "norm3": (lambda t, d, k: t.norm(3, dim=d, keepdim=k), _pnorm(3)),
    "all": (lambda t, d, k: (t > -1).all(d, keepdim=k),
            lambda a, d, k: np.all(a > -1, d, keepdims=k)),
    "any": (lambda t, d, k: (t > 1.5).any(d, keepdim=k),
            lambda a, d, k: np.any(a > 1.5, d, keepdims=k)),
}

# (shape, dim): 0-d, size-1, 1-d, 2-d and 3-d with int, negative int, tuple and None dims
DIM_CASES = [
    ((), None), ((), 0), ((), -1), ((1,), None), ((1,), 0), ((5,), -1), ((5,), None),
    ((2, 3), None), ((2, 3), 0), ((2, 3), -1), ((2, 3), (0, 1)), ((3, 1), 1),
    ((2, 3, 4), 1), ((2, 3, 4), (0, 2)), ((2, 3, 4), (-1, 0)), ((2, 3, 4), None),
]


def _np_dim(shape, dim):
    if not shape:  # torch accepts dim 0 / -1 on a 0-d tensor; numpy wants axis=None
        return None
    return dim


@pytest.mark.parametrize("layout", ["contiguous", "noncontig"])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("shape, dim", DIM_CASES)
@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reduction_values(name, shape, dim, keepdim, layout):
    fn, ref = REDUCTIONS[name]
    a = data(shape)
    if layout == "noncontig":
        a = noncontig(a)
    expected = np.asarray(_np_quiet(ref, a, _np_dim(shape, dim), keepdim))
    out = _np_quiet(fn, tj.tensor(a) if layout == "contiguous" else tj.from_numpy(a), dim, keepdim)
    assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, dim", [
    ((), None), ((), 0), ((1,), 0), ((5,), 0), ((5,), -1), ((2, 3), 0), ((2, 3), -1),
    ((2, 3, 4), 1), ((2, 3, 4), -3),
])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("which", ["max", "min"])
def test_max_min_dim_values_and_indices(which, shape, dim, keepdim):
    a = noncontig(data(shape, seed=3))
    t = tj.from_numpy(a)
    if dim is None:  # full form: one tensor, not a tuple
        out = getattr(t, which)()
        assert isinstance(out, tj.Tensor)
        assert_close(out, getattr(np, "a" + which)(a))
        assert_close(getattr(tj, which)(t), getattr(np, "a" + which)(a))
        return
    res = getattr(t, which)(dim, keepdim=keepdim)
    values, indices = res
    assert res.values is values and res.indices is indices
    assert indices.dtype == I64
    ax = None if not shape else dim
    exp_i = getattr(np, "arg" + which)(a, axis=ax, keepdims=keepdim) if shape else np.array(0)
    exp_v = getattr(np, "a" + which)(a, axis=ax, keepdims=keepdim)
    assert_close(values, exp_v)
    assert_close(indices, np.asarray(exp_i, dtype=np.int64))
    fn_res = getattr(tj, which)(t, dim, keepdim)
    assert_close(fn_res.values, exp_v)


@pytest.mark.parametrize("shape, dim", [((), None), ((), 0), ((5,), None), ((5,), 0),
                                        ((2, 3), None), ((2, 3), 1), ((2, 3, 4), -2)])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("which", ["argmax", "argmin"])
def test_argmax_argmin(which, shape, dim, keepdim):
    a = noncontig(data(shape, seed=5))
    out = getattr(tj.from_numpy(a), which)(dim, keepdim=keepdim)
    assert out.dtype == I64
    np_fn = getattr(np, which)
    if dim is None or not shape:
        flat = np_fn(a.reshape(-1))
        expected = np.full((1,) * a.ndim if keepdim else (), flat, dtype=np.int64)
    else:
        expected = np_fn(a, axis=dim, keepdims=keepdim).astype(np.int64)
    assert_close(out, expected)


def test_argmax_first_of_ties_and_int_input():
    t = tj.tensor([[1, 7, 7], [7, 2, 7]])
    assert_close(t.argmax(1), np.array([1, 0]))
    assert_close(t.argmax(), np.array(1))
    assert_close(t.argmin(0), np.array([0, 1, 0]))


@pytest.mark.parametrize("shape, dim", [((), 0), ((), -1), ((5,), 0), ((5,), -1), ((2, 3), 0),
                                        ((2, 3), 1), ((2, 3, 4), -2), ((2, 0, 3), 1)])
def test_cumsum_values(shape, dim):
    a = noncontig(data(shape))
    out = tj.from_numpy(a).cumsum(dim)
    expected = a.copy() if not shape else np.cumsum(a, axis=dim)
    assert_close(out, expected)
    assert_close(tj.cumsum(tj.from_numpy(a), dim), expected)


@pytest.mark.parametrize("shape, dim", [((), 0), ((4,), 0), ((2, 3), 0), ((2, 3), 1),
                                        ((2, 3, 4), -1), ((2, 3, 4), 1)])
@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
def test_softmax_values(which, shape, dim):
    a = noncontig(data(shape, low=-5, high=5))
    a64 = a.astype(np.float64)
    ax = dim if shape else None
    e = np.exp(a64 - np.max(a64, axis=ax, keepdims=True))
    sm = e / e.sum(axis=ax, keepdims=True)
    expected = (sm if which == "softmax" else np.log(sm)).astype(np.float32)
    out = getattr(tj.from_numpy(a), which)(dim)
    assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert_close(getattr(F, which)(tj.from_numpy(a), dim), expected, rtol=1e-5, atol=1e-6)


def test_softmax_is_stable_for_large_inputs():
    t = tj.tensor([1000.0, 1001.0, -1000.0])
    e = np.exp(np.array([-1.0, 0.0, -2001.0]))
    assert_close(t.softmax(0), (e / e.sum()).astype(np.float32))
    assert_close(t.logsumexp(0), np.float32(1001.0 + np.log1p(np.exp(-1.0))))


def test_logsumexp_with_minus_inf_entries():
    t = tj.tensor([[-np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf]], dtype=tj.float64)
    assert_close(t.logsumexp(1), np.array([np.log(1 + np.e), -np.inf]))
    assert_close(t[0].log_softmax(0), np.array([-np.inf, -np.log(1 + np.e), 1 - np.log(1 + np.e)]))


def test_tensor_and_function_forms_agree():
    a = data((2, 3))
    t = tj.tensor(a)
    assert_close(tj.sum(t, 1), a.sum(1))
    assert_close(tj.mean(t, dim=0, keepdim=True), a.mean(0, keepdims=True))
    assert_close(tj.prod(t), np.prod(a))
    assert_close(tj.amax(t, -1), a.max(-1))
    assert_close(tj.argmax(t, 0), a.argmax(0).astype(np.int64))
    assert_close(tj.var(t, 1, keepdim=True), np.var(a, 1, ddof=1, keepdims=True), rtol=1e-5)
    assert_close(tj.logsumexp(t, 1), _lse(a, 1, False), rtol=1e-5)
    assert_close(tj.norm(t), np.float32(np.linalg.norm(a)), rtol=1e-5)
    assert_close(t.sum(dim=1, dtype=tj.float64), a.astype(np.float64).sum(1))
    assert_close(t.mean(dtype=tj.float64), a.astype(np.float64).mean())


# --------------------------------------------------------------------------------------------
# reductions: dtypes


@pytest.mark.parametrize("dtype", [I32, I64, B])
@pytest.mark.parametrize("which", ["sum", "prod", "cumsum"])
def test_int_and_bool_accumulate_in_int64(which, dtype):
    a = data((2, 3), dtype, low=-3, high=3)
    t = tj.tensor(a)
    if which == "cumsum":
        out, expected = t.cumsum(1), np.cumsum(a, 1, dtype=np.int64)
    else:
        out = getattr(t, which)()
        expected = getattr(np, which)(a, dtype=np.int64)
        dim_out = getattr(t, which)(0)
        assert_close(dim_out, getattr(np, which)(a, 0, dtype=np.int64))
    assert out.dtype == I64
    assert_close(out, expected)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_float_reductions_keep_dtype(dtype):
    t = tj.tensor(data((2, 3), dtype))
    for out in (t.sum(), t.mean(1), t.prod(0), t.amax(), t.var(), t.std(0), t.logsumexp(1),
                t.softmax(0), t.log_softmax(1), t.cumsum(0), t.norm(), t.max(1).values):
        assert out.dtype == dtype


@pytest.mark.parametrize("dtype", [I32, I64, B])
def test_amax_argmax_all_any_dtypes_on_ints(dtype):
    a = data((2, 3), dtype, low=-3, high=3)
    t = tj.tensor(a)
    assert t.amax().dtype == dtype and t.amin(0).dtype == dtype
    assert_close(t.amax(1), a.max(1))
    assert t.argmax().dtype == I64 and t.argmin(1).dtype == I64
    assert t.max(0).values.dtype == dtype and t.max(0).indices.dtype == I64
    assert t.all().dtype == B and t.any(1).dtype == B
    assert_close(t.all(1), a.astype(bool).all(1))
    assert_close(t.any(0), a.astype(bool).any(0))


@pytest.mark.parametrize("dtype", [I32, I64, B])
def test_mean_of_int_raises_with_hint(dtype):
    t = tj.tensor(data((3,), dtype))
    with pytest.raises(TypeError, match="floating point dtype"):
        t.mean()
    assert_close(t.mean(dtype=tj.float32), data((3,), dtype).astype(np.float32).mean())
    assert_close(t.float().mean(), data((3,), dtype).astype(np.float32).mean())


# --------------------------------------------------------------------------------------------
# reductions: size 0


def test_empty_reductions_like_torch():
    e = tj.zeros(0)
    assert_close(e.sum(), np.float32(0))
    assert_close(e.prod(), np.float32(1))
    assert_close(_np_quiet(e.mean), np.float32(np.nan))
    assert_close(_np_quiet(e.var), np.float32(np.nan))
    assert_close(e.norm(), np.float32(0))
    assert_close(e.cumsum(0), np.zeros(0, np.float32))
    assert_close(e.logsumexp(0), np.float32(-np.inf))
    assert_close(e.softmax(0), np.zeros(0, np.float32))
    assert e.all().item() is True and e.any().item() is False
    assert_close(tj.zeros(0, dtype=tj.int64).sum(), np.int64(0))


def test_empty_dim_reductions():
    z = tj.zeros(2, 0, 3)
    assert_close(z.sum(1), np.zeros((2, 3), np.float32))
    assert_close(z.sum(), np.float32(0))
    assert_close(z.prod(1, keepdim=True), np.ones((2, 1, 3), np.float32))
    assert_close(_np_quiet(z.mean, 1), np.full((2, 3), np.nan, np.float32))
    assert_close(z.logsumexp(1), np.full((2, 3), -np.inf, np.float32))
    assert_close(z.log_softmax(1), np.zeros((2, 0, 3), np.float32))
    # reducing a dim of nonzero size of an empty tensor is fine: the result is empty
    assert_close(z.amax(0), np.zeros((0, 3), np.float32))
    assert_close(z.amin(2, keepdim=True), np.zeros((2, 0, 1), np.float32))
    assert z.argmax(2).shape == (2, 0) and z.argmax(2).dtype == I64
    m = z.max(0)
    assert m.values.shape == (0, 3) and m.indices.shape == (0, 3) and m.indices.dtype == I64


@pytest.mark.parametrize("call", [
    lambda z: z.amax(1), lambda z: z.amin(), lambda z: z.amax((0, 1)), lambda z: z.max(1),
    lambda z: z.min(1), lambda z: z.max(), lambda z: z.argmax(1), lambda z: z.argmin(1),
])
def test_extremes_over_empty_dim_raise(call):
    with pytest.raises((ValueError, RuntimeError),
                       match=r"(amax|amin|argmax|argmin).*(zero-size|empty)"):
        call(tj.zeros(3, 0))


# --------------------------------------------------------------------------------------------
# reductions: gradients


GRAD_REDUCTIONS = {
    "sum": lambda t: t.sum((0, 2)),
    "sum_keep": lambda t: t.sum(-1, keepdim=True),
    "sum_all": lambda t: t.sum(),
    "mean": lambda t: t.mean(1),
    "mean_all_keep": lambda t: t.mean(None, keepdim=True),
    "prod": lambda t: t.prod(1),
    "prod_all": lambda t: t.prod(),
    "amax": lambda t: t.amax(-1),
    "amin_tuple": lambda t: t.amin((0, 1), keepdim=True),
    "max_dim": lambda t: t.max(1).values,
    "min_dim_keep": lambda t: t.min(-1, keepdim=True).values,
    "max_full": lambda t: t.max(),
    "var": lambda t: t.var(1),
    "var_c0_keep": lambda t: t.var((0, 2), keepdim=True, correction=0),
    "std": lambda t: t.std(),
    "std_biased": lambda t: t.std(2, unbiased=False),
    "logsumexp": lambda t: t.logsumexp(1),
    "logsumexp_tuple": lambda t: t.logsumexp((0, -1), keepdim=True),
    "cumsum0": lambda t: t.cumsum(0),
    "cumsum_neg": lambda t: t.cumsum(-1),
    "norm": lambda t: t.norm(),
    "norm_dim": lambda t: t.norm(dim=1, keepdim=True),
    "norm1": lambda t: t.norm(1, dim=-1),
    "norm3": lambda t: t.norm(3, dim=0),
}


@pytest.mark.parametrize("name", list(GRAD_REDUCTIONS))
def test_reduction_gradcheck(name):
    # distinct values away from zero: extremes have no ties, norms are differentiable
    x = leaf64((2, 3, 2), low=0.5, high=2.0, seed=11)
    assert gradcheck(GRAD_REDUCTIONS[name], (x,))


@pytest.mark.parametrize("fn", [lambda t: t.sum(), lambda t: t.prod(), lambda t: t.cumsum(0),
                                lambda t: t.logsumexp(0), lambda t: t.softmax(0),
                                lambda t: t.amax()])
def test_reduction_gradcheck_0d(fn):
    assert gradcheck(fn, (tj.tensor(1.3, dtype=tj.float64, requires_grad=True),))


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
def test_softmax_gradcheck_each_dim(which, dim):
    x = leaf64((2, 3, 2), seed=2)
    assert gradcheck(lambda t: getattr(t, which)(dim), (x,))


@pytest.mark.parametrize("zeros", [1, 2])
@pytest.mark.parametrize("form", ["all", "dim", "keepdim"])
def test_prod_gradient_with_zeros(zeros, form):
    a = np.array([[2.0, 0.0, 3.0, 0.5], [1.5, -2.0, 0.7, 1.1]])
    if zeros == 2:
        a[0, 3] = 0.0
    x = tj.tensor(a, requires_grad=True)
    fn = {"all": lambda t: t.prod(), "dim": lambda t: t.prod(1),
          "keepdim": lambda t: t.prod(-1, keepdim=True)}[form]
    assert gradcheck(fn, (x,))
    fn(x).sum().backward()
    row0 = np.array([0.0, 2 * 3 * 0.5, 0.0, 0.0]) if zeros == 1 else np.zeros(4)
    if form == "all":
        row0 = row0 * np.prod(a[1])
        row1 = np.zeros(4)  # the product has a zero factor in row 0
    else:
        row1 = np.prod(a[1]) / a[1]
    assert_close(x.grad, np.stack([row0, row1]), rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(x.grad.numpy()))


def test_prod_gradient_all_zeros_and_one_zero_0d_and_1elem():
    x = tj.tensor([0.0], dtype=tj.float64, requires_grad=True)
    x.prod().backward()
    assert_close(x.grad, np.array([1.0]))
    y = tj.tensor(0.0, dtype=tj.float64, requires_grad=True)
    y.prod().backward()
    assert_close(y.grad, np.array(1.0))


@pytest.mark.parametrize("which", ["amax", "amin"])
def test_amax_amin_ties_share_gradient_evenly(which):
    sign = 1.0 if which == "amax" else -1.0
    x = tj.tensor(sign * np.array([[1.0, 3.0, 3.0, 2.0], [3.0, 3.0, 3.0, 0.0]]),
                  requires_grad=True)
    getattr(x, which)(1).sum().backward()
    assert_close(x.grad, np.array([[0, 0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3, 0]]))
    x.grad = None
    getattr(x, which)().backward()
    assert_close(x.grad, np.array([[0, 1, 1, 0], [1, 1, 1, 0]]) / 5.0)
    x.grad = None
    getattr(x, which[1:])().backward()  # full max()/min() behave like amax/amin
    assert_close(x.grad, np.array([[0, 1, 1, 0], [1, 1, 1, 0]]) / 5.0)


@pytest.mark.parametrize("which", ["max", "min"])
def test_max_dim_gradient_goes_to_one_element(which):
    sign = 1.0 if which == "max" else -1.0
    x = tj.tensor(sign * np.array([[1.0, 3.0, 3.0, 2.0], [3.0, 3.0, 3.0, 0.0]]),
                  requires_grad=True)
    values, indices = getattr(x, which)(1)
    (values * tj.tensor([2.0, 5.0], dtype=tj.float64)).sum().backward()
    g = x.grad.numpy()
    assert np.count_nonzero(g) == 2
    for row, (i, w) in enumerate(zip(indices.tolist(), (2.0, 5.0))):
        assert g[row, i] == w
        assert sign * x.detach().numpy()[row, i] == 3.0


def test_logsumexp_gradient_with_minus_inf():
    x = tj.tensor([[-np.inf, 0.0, 1.0], [0.5, -np.inf, -1.0]], dtype=tj.float64,
                  requires_grad=True)
    assert gradcheck(lambda t: t.logsumexp(1), (x,))
    x.logsumexp(1).sum().backward()
    e = np.exp(np.array([[-np.inf, 0.0, 1.0], [0.5, -np.inf, -1.0]]))
    assert_close(x.grad, e / e.sum(1, keepdims=True))
    # finite outputs only (finite differences of a -inf output are nan)
    y = tj.tensor([[-np.inf, 0.0, 1.0], [-np.inf, 0.5, -1.0]], dtype=tj.float64,
                  requires_grad=True)
    assert gradcheck(lambda t: t.log_softmax(1)[:, 1:], (y,))
    assert gradcheck(lambda t: t.softmax(1), (y,))


@pytest.mark.parametrize("fn", [
    lambda t: t.sum(1), lambda t: t.mean((0, 1)), lambda t: t.softmax(-1),
    lambda t: t.log_softmax(0), lambda t: t.logsumexp(1), lambda t: t.var(0),
    lambda t: t.var(1, correction=0, keepdim=True),
], ids=["sum", "mean", "softmax", "log_softmax", "logsumexp", "var", "var_c0"])
def test_reduction_gradgradcheck(fn):
    assert gradgradcheck(fn, (leaf64((2, 3), seed=4),))


# ============================================================================================
# shape ops: values


A234 = np.arange(24, dtype=np.float32).reshape(2, 3, 4)

# name: (tracejit call on a (2, 3, 4) tensor, numpy reference on the same array)
SHAPE_CASES = {
    "reshape": (lambda t: t.reshape(4, 6), lambda a: a.reshape(4, 6)),
    "reshape_tuple_neg1": (lambda t: t.reshape((-1, 4)), lambda a: a.reshape(-1, 4)),
    "view_neg1": (lambda t: t.view(2, -1), lambda a: a.reshape(2, -1)),
    "view_0d": (lambda t: t[0, 0, :1].view(()), lambda a: a[0, 0, :1].reshape(())),
    "view_as": (lambda t: t.view_as(tj.zeros(6, 4)), lambda a: a.reshape(6, 4)),
    "flatten": (lambda t: t.flatten(), lambda a: a.reshape(-1)),
    "flatten_start": (lambda t: t.flatten(1), lambda a: a.reshape(2, 12)),
    "flatten_start_end": (lambda t: t.flatten(0, 1), lambda a: a.reshape(6, 4)),
    "flatten_neg": (lambda t: t.flatten(-2, -1), lambda a: a.reshape(2, 12)),
    "flatten_0d": (lambda t: t[0, 0, 0].flatten(), lambda a: a[0, 0, 0].reshape(1)),
    "unflatten": (lambda t: t.unflatten(2, (2, 2)), lambda a: a.reshape(2, 3, 2, 2)),
    "unflatten_neg": (lambda t: t.unflatten(-1, (-1, 2)), lambda a: a.reshape(2, 3, 2, 2)),
    "squeeze_all": (lambda t: t.reshape(1, 2, 1, 12).squeeze(), lambda a: a.reshape(2, 12)),
    "squeeze_dim": (lambda t: t.reshape(1, 2, 1, 12).squeeze(2), lambda a: a.reshape(1, 2, 12)),
    "squeeze_neg_dim": (lambda t: t.reshape(1, 2, 1, 12).squeeze(-4),
                        lambda a: a.reshape(2, 1, 12)),
    "squeeze_non1_dim": (lambda t: t.squeeze(1), lambda a: a),
    "squeeze_tuple": (lambda t: t.reshape(1, 2, 1, 12).squeeze((0, 2)),
                      lambda a: a.reshape(2, 12)),
    "unsqueeze": (lambda t: t.unsqueeze(1), lambda a: a[:, None]),
    "unsqueeze_neg1": (lambda t: t.unsqueeze(-1), lambda a: a[..., None]),
    "unsqueeze_neg4": (lambda t: t.unsqueeze(-4), lambda a: a[None]),
    "unsqueeze_neg2": (lambda t: t.unsqueeze(-2), lambda a: a[:, :, None]),
    "permute": (lambda t: t.permute(2, 0, 1), lambda a: a.transpose(2, 0, 1)),
    "permute_tuple_neg": (lambda t: t.permute((-1, -3, -2)), lambda a: a.transpose(2, 0, 1)),
    "transpose": (lambda t: t.transpose(0, 2), lambda a: a.swapaxes(0, 2)),
    "transpose_neg": (lambda t: t.transpose(-1, -2), lambda a: a.swapaxes(1, 2)),
    "t": (lambda t: t[0].t(), lambda a: a[0].T),
    "t_1d": (lambda t: t[0, 0].t(), lambda a: a[0, 0]),
    "T": (lambda t: t.T, lambda a: a.transpose(2, 1, 0)),
    "mT": (lambda t: t.mT, lambda a: a.swapaxes(-1, -2)),
    "expand": (lambda t: t[:, :1].expand(2, 5, 4), lambda a: np.broadcast_to(a[:, :1], (2, 5, 4))),
    "expand_neg1_new_dim": (lambda t: t[:, :1].expand(3, -1, 2, -1),
                            lambda a: np.broadcast_to(a[:, :1], (3, 2, 2, 4))),
    "expand_as": (lambda t: t[0, :, :1].expand_as(t),
                  lambda a: np.broadcast_to(a[0, :, :1], (2, 3, 4))),
    "broadcast_to": (lambda t: t[0, 0].broadcast_to((3, 4)),
                     lambda a: np.broadcast_to(a[0, 0], (3, 4))),
    "broadcast_to_fn": (lambda t: tj.broadcast_to(t[:, :1, :1], (2, 3, 4)),
                        lambda a: np.broadcast_to(a[:, :1, :1], (2, 3, 4))),
    "repeat": (lambda t: t.repeat(2, 1, 3), lambda a: np.tile(a, (2, 1, 3))),
    "repeat_more_dims": (lambda t: t[0].repeat(2, 1, 2), lambda a: np.tile(a[0], (2, 1, 2))),
    "repeat_fn": (lambda t: tj.repeat(t[0, 0], 3), lambda a: np.tile(a[0, 0], 3)),
    "flip0": (lambda t: t.flip(0), lambda a: a[::-1]),
    "flip_tuple": (lambda t: t.flip((0, -1)), lambda a: a[::-1, :, ::-1]),
    "flip_fn": (lambda t: tj.flip(t, [1]), lambda a: a[:, ::-1]),
    "pad_last": (lambda t: F.pad(t, (1, 2)),
                 lambda a: np.pad(a, ((0, 0), (0, 0), (1, 2)))),
    "pad_value_2d": (lambda t: F.pad(t, (1, 0, 2, 1), value=-3.5),
                     lambda a: np.pad(a, ((0, 0), (2, 1), (1, 0)), constant_values=-3.5)),
    "pad_3d": (lambda t: F.pad(t, (0, 1, 1, 0, 1, 1), value=7.0),
               lambda a: np.pad(a, ((1, 1), (1, 0), (0, 1)), constant_values=7.0)),
    "pad_method_zero": (lambda t: t.pad((0, 0, 1, 1)),
                        lambda a: np.pad(a, ((0, 0), (1, 1), (0, 0)))),
    "contiguous": (lambda t: t.transpose(0, 1).contiguous(), lambda a: a.swapaxes(0, 1)),
    "clone": (lambda t: t.clone(), lambda a: a),
}


@pytest.mark.parametrize("layout", ["contiguous", "noncontig"])
@pytest.mark.parametrize("name", list(SHAPE_CASES))
def test_shape_op_values(name, layout):
    fn, ref = SHAPE_CASES[name]
    a = A234 if layout == "contiguous" else noncontig(A234)
    out = fn(tj.tensor(a) if layout == "contiguous" else tj.from_numpy(a))
    assert_close(out, ref(a))


@pytest.mark.parametrize("dtype", [I64, B, F64])
def test_shape_ops_keep_dtype(dtype):
    t = tj.tensor(data((2, 3), dtype))
    for out in (t.reshape(-1), t.T, t.unsqueeze(0), t[:1].expand(4, 3), t.repeat(2, 1),
                t.flip(0), F.pad(t, (1, 1)), t.flatten(), t.clone()):
        assert out.dtype == dtype


def test_pad_int_tensor_with_value():
    t = tj.tensor([[1, 2]])
    assert_close(F.pad(t, (1, 1, 1, 0), value=9), np.array([[9, 9, 9, 9], [9, 1, 2, 9]]))


# cat / stack


@pytest.mark.parametrize("shapes, dim", [
    ([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 2)], 1), ([(2, 3), (2, 2)], -1),
    ([(1, 2, 3), (1, 2, 3)], -2), ([(3,), (0,), (2,)], 0), ([(2, 0), (2, 3)], 1),
])
def test_cat_values(shapes, dim):
    arrays = [data(s, seed=i) for i, s in enumerate(shapes)]
    expected = np.concatenate(arrays, axis=dim)
    assert_close(tj.cat([tj.tensor(a) for a in arrays], dim), expected)
    assert_close(tj.cat(tuple(tj.from_numpy(noncontig(a)) for a in arrays), dim=dim), expected)


@pytest.mark.parametrize("dtypes, expected", [
    ((I64, F32), F32), ((I32, I64), I64), ((B, I32), I32), ((F32, F64), F64),
    ((B, B), B), ((I64, B, F64), F64),
])
def test_cat_dtype_promotion(dtypes, expected):
    arrays = [data((2,), d, seed=i) for i, d in enumerate(dtypes)]
    out = tj.cat([tj.tensor(a) for a in arrays])
    assert out.dtype == expected
    assert_close(out, np.concatenate([a.astype(expected) for a in arrays]))


def test_cat_skips_1d_empty_tensors_like_torch():
    t = tj.tensor(data((2, 3)))
    e = tj.tensor([])
    out = tj.cat([e, t, e], dim=0)
    assert_close(out, data((2, 3)))
    assert_close(tj.cat([t, e], dim=1), data((2, 3)))
    assert_close(tj.cat([e, e]), np.zeros(0, np.float32))
    # the skipped tensors still take part in dtype promotion, as in torch
    out = tj.cat([e, tj.tensor([1, 2])])
    assert out.dtype == F32
    assert_close(out, np.array([1.0, 2.0], np.float32))
    # the result is a new tensor, not the input itself
    single = tj.cat([t, e])
    assert single is not t and not np.shares_memory(single.numpy(), t.numpy())


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_stack_values(dim):
    arrays = [data((2, 3), seed=i) for i in range(3)]
    out = tj.stack([tj.tensor(a) for a in arrays], dim)
    assert_close(out, np.stack(arrays, axis=dim))


def test_stack_0d_and_promotion():
    out = tj.stack([tj.tensor(1), tj.tensor(2.5)])
    assert out.dtype == F32
    assert_close(out, np.array([1.0, 2.5], np.float32))


# split / chunk / unbind


@pytest.mark.parametrize("arg, dim, expected_sizes", [
    (2, 0, [2]), (1, 0, [1, 1]), (2, 1, [2, 1]), (3, -1, [3, 1]), (4, 2, [4]), (5, 2, [4]),
    ([1, 2], 1, [1, 2]), ([3, 0, 1], -1, [3, 0, 1]), ((2,), 0, [2]),
])
def test_split_values(arg, dim, expected_sizes):
    t = tj.tensor(A234)
    parts = t.split(arg, dim)
    assert isinstance(parts, tuple)
    assert [p.shape[dim] for p in parts] == expected_sizes
    bounds = np.cumsum(expected_sizes)[:-1]
    for p, e in zip(parts, np.split(A234, bounds, axis=dim)):
        assert_close(p, e)
    assert all(a.shape == b.shape for a, b in zip(tj.split(t, arg, dim), parts))


@pytest.mark.parametrize("chunks, dim, expected_sizes", [
    (2, 0, [1, 1]), (2, 1, [2, 1]), (3, 1, [1, 1, 1]), (3, -1, [2, 2]), (4, -1, [1, 1, 1, 1]),
    (10, 1, [1, 1, 1]),
])
def test_chunk_values(chunks, dim, expected_sizes):
    parts = tj.tensor(A234).chunk(chunks, dim)
    assert [p.shape[dim] for p in parts] == expected_sizes
    bounds = np.cumsum(expected_sizes)[:-1]
    for p, e in zip(parts, np.split(A234, bounds, axis=dim)):
        assert_close(p, e)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_unbind_values(dim):
    parts = tj.tensor(A234).unbind(dim)
    assert len(parts) == A234.shape[dim]
    for i, p in enumerate(parts):
        assert_close(p, np.take(A234, i, axis=dim))
    assert len(tj.unbind(tj.tensor(A234), dim)) == len(parts)


# views, memory and contiguity


def test_transpose_is_not_contiguous_and_contiguous_copies():
    t = tj.tensor(A234)
    assert t.is_contiguous()
    tt = t.transpose(0, 1)
    assert not tt.is_contiguous() and not t.permute(2, 1, 0).is_contiguous()
    assert not t.mT.is_contiguous() and not t[0].t().is_contiguous()
    c = tt.contiguous()
    assert c.is_contiguous() and c.shape == (3, 2, 4)
    assert not np.shares_memory(c.numpy(), t.numpy())
    assert t.contiguous() is t  # already contiguous: the same tensor, as torch
    assert tt.transpose(0, 1).is_contiguous()
    assert tt.stride() == (4, 12, 1)


@pytest.mark.parametrize("make_view", [
    lambda b: b.reshape(6), lambda b: b.view(3, 2), lambda b: b.flatten(),
    lambda b: b.unsqueeze(0), lambda b: b.T, lambda b: b.transpose(0, 1),
    lambda b: b.permute(1, 0), lambda b: b[:1].squeeze(0), lambda b: b.unflatten(1, (3, 1)),
    lambda b: b.split(1)[1], lambda b: b.chunk(3, 1)[2], lambda b: b.unbind(1)[0],
    lambda b: b[:1].expand(4, 3), lambda b: b.mT, lambda b: b.view_as(tj.zeros(3, 2)),
], ids=["reshape", "view", "flatten", "unsqueeze", "T", "transpose", "permute", "squeeze",
        "unflatten", "split", "chunk", "unbind", "expand", "mT", "view_as"])
def test_views_share_memory_with_base(make_view):
    base = tj.zeros(2, 3)
    v = make_view(base)
    assert np.shares_memory(v.numpy(), base.numpy())
    base[0, 0] = 5.0
    base.add_(1.0)
    expected_base = np.ones((2, 3), np.float32)
    expected_base[0, 0] = 6.0
    assert_close(base, expected_base)
    assert_close(v, make_view(tj.tensor(expected_base)))


def test_write_through_reshape_view_reaches_base():
    base = tj.zeros(2, 3)
    v = base.reshape(6)
    v[4] = 3.0
    v.mul_(2.0)
    assert_close(base, np.array([[0, 0, 0], [0, 6, 0]], np.float32))


def test_copying_ops_do_not_share_memory():
    base = tj.tensor(A234)
    for out in (base.clone(), base.transpose(0, 1).reshape(-1), base.repeat(1, 1, 1),
                base.flip(0).contiguous(), tj.cat([base, base]), tj.stack([base]),
                F.pad(base, (1, 1))):
        assert not np.shares_memory(out.numpy(), base.numpy())
    c = base.clone()
    c.add_(1.0)
    assert_close(base, A234)


@pytest.mark.parametrize("shape, sizes", [((2, 3), (1, 1)), ((3, 1), (1, 4)), ((3,), (2, 1))])
def test_repeat_returns_a_new_writable_tensor(shape, sizes):
    base = tj.ones(*shape)
    r = base.repeat(*sizes)
    assert not np.shares_memory(r.numpy(), base.numpy())
    r.add_(1.0)
    assert_close(r, np.full(r.shape, 2.0, np.float32))
    assert_close(base, np.ones(shape, np.float32))


def test_reshape_of_noncontiguous_copy_is_independent_of_base():
    x = tj.ones(2, 3, requires_grad=True)
    y = x * 1.0
    z = y.T.reshape(6)  # a copy: later in-place on it or on y must not confuse autograd
    z.mul_(2.0)
    z.sum().backward()
    assert_close(x.grad, np.full((2, 3), 2.0, np.float32))
    assert_close(y, np.ones((2, 3), np.float32))


# --------------------------------------------------------------------------------------------
# shape ops: gradients

GRAD_SHAPE = {
    "reshape": lambda t: t.reshape(3, 4) * tj.arange(4, dtype=tj.float64),
    "view_neg1": lambda t: t.view(-1, 2).exp(),
    "flatten": lambda t: t.flatten(1).sin(),
    "unflatten": lambda t: t.unflatten(1, (3, 2)).exp(),
    "squeeze": lambda t: t.reshape(1, 2, 1, 6).squeeze((0, 2)).exp(),
    "unsqueeze": lambda t: t.unsqueeze(-2) * tj.ones(3, 1, dtype=tj.float64),
    "permute": lambda t: t.reshape(2, 3, 2).permute(2, 0, 1).cumsum(0),
    "transpose": lambda t: t.transpose(0, 1).cumsum(1),
    "t": lambda t: t.t().cumsum(0),
    "T": lambda t: t.T.exp(),
    "mT": lambda t: t.reshape(2, 3, 2).mT.cumsum(-1),
    "expand": lambda t: t[:, :1].expand(2, 5) * tj.arange(5, dtype=tj.float64),
    "expand_neg1": lambda t: t.unsqueeze(1).expand(-1, 3, -1).cumsum(1),
    "expand_as": lambda t: t[:1].expand_as(t).sin(),
    "broadcast_to": lambda t: t.broadcast_to((3, 2, 6)).cumsum(0),
    "repeat": lambda t: t.repeat(2, 1, 2).cumsum(-1),
    "cat": lambda t: tj.cat([t, t.exp(), t[:, :2]], 1).cumsum(1),
    "cat_neg_dim": lambda t: tj.cat([t, t * 2], -2).cumsum(0),
    "stack": lambda t: tj.stack([t, t.sin()], 1).cumsum(1),
    "split_int": lambda t: tuple(p.exp() for p in t.split(4, 1)),
    "split_sections": lambda t: tuple(p.cumsum(1) for p in t.split([1, 5], 1)),
    "chunk": lambda t: tuple(p * (i + 1) for i, p in enumerate(t.chunk(3, -1))),
    "unbind": lambda t: tuple(p.exp() * i for i, p in enumerate(t.unbind(1))),
    "flip": lambda t: t.flip((0, 1)).cumsum(1),
    "pad": lambda t: F.pad(t, (1, 2, 1, 0), value=3.0).cumsum(1),
    "contiguous": lambda t: t.T.contiguous().cumsum(0),
    "clone": lambda t: t.clone().exp(),
}


@pytest.mark.parametrize("name", list(GRAD_SHAPE))
def test_shape_op_gradcheck(name):
    x = leaf64((2, 6), seed=8)
    assert gradcheck(GRAD_SHAPE[name], (x,))


def test_cat_stack_gradcheck_two_inputs():
    a, b = leaf64((2, 3), seed=1), leaf64((2, 2), seed=2)
    assert gradcheck(lambda x, y: tj.cat([x, y], 1).exp(), (a, b))
    c = leaf64((2, 3), seed=3)
    assert gradcheck(lambda x, y: tj.stack([x, y], -1).sin(), (a, c))
    e = tj.tensor([], dtype=tj.float64, requires_grad=True)
    assert gradcheck(lambda x, y: tj.cat([y, x]).exp(), (a[0].detach().requires_grad_(), e))


# ============================================================================================
# matmul


MATMUL_SHAPES = [
    ((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((2, 2, 3), (2, 3, 4)),
    ((2, 1, 3, 4), (5, 4, 2)), ((2, 3), (4, 3, 2)), ((4, 2, 3), (3,)), ((3,), (4, 3, 2)),
    ((1, 3), (3, 1)), ((2, 0), (0, 3)), ((0, 3), (3, 2)),
    # a 2-d operand shared by a batch: its gradient is one 2-d product (ops._summed)
    ((2, 3, 4), (4, 2)), ((3, 4), (2, 2, 4, 5)),
]


@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES)
def test_matmul_values(sa, sb):
    a, b = data(sa, seed=1), data(sb, seed=2)
    expected = np.matmul(a, b)
    ta, tb = tj.tensor(a), tj.tensor(b)
    for out in (ta @ tb, ta.matmul(tb), tj.matmul(ta, tb), tj.matmul(a, b)):
        assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out = tj.from_numpy(noncontig(a)) @ tj.from_numpy(noncontig(b))
    assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_rmatmul_with_numpy_left_operand():
    a, b = data((2, 3)), data((3, 2))
    assert_close(a @ tj.tensor(b), a @ b, rtol=1e-5)


def test_mm_and_dot():
    a, b = data((2, 3), seed=1), data((3, 4), seed=2)
    assert_close(tj.tensor(a).mm(tj.tensor(b)), a @ b, rtol=1e-5)
    u, v = data((5,), seed=3), data((5,), seed=4)
    out = tj.tensor(u).dot(tj.tensor(v))
    assert out.shape == ()
    assert_close(out, np.float32(np.dot(u, v)), rtol=1e-5)


@pytest.mark.parametrize("dtype", [I32, I64])
@pytest.mark.parametrize("sa, sb", [((3,), (3,)), ((2, 3), (3, 4)), ((2, 2, 3), (3,))])
def test_int_matmul(dtype, sa, sb):
    a, b = data(sa, dtype, low=-5, high=5, seed=1), data(sb, dtype, low=-5, high=5, seed=2)
    out = tj.tensor(a) @ tj.tensor(b)
    assert out.dtype == dtype
    assert_close(out, np.matmul(a, b))


def test_matmul_promotes_float_dtypes():
    out = tj.ones(2, 3, dtype=tj.float32) @ tj.ones(3, dtype=tj.float64)
    assert out.dtype == F64
    assert_close(out, np.full(2, 3.0))


@pytest.mark.parametrize("sa, sb", [s for s in MATMUL_SHAPES if 0 not in s[0] + s[1]])
def test_matmul_gradcheck(sa, sb):
    a, b = leaf64(sa, seed=1), leaf64(sb, seed=2)
    assert gradcheck(lambda x, y: x @ y, (a, b))
    # one side constant
    assert gradcheck(lambda x: x @ b.detach(), (a,))


def test_mm_dot_gradcheck():
    assert gradcheck(lambda x, y: x.mm(y), (leaf64((2, 3), seed=1), leaf64((3, 2), seed=2)))
    assert gradcheck(lambda x, y: x.dot(y), (leaf64((4,), seed=1), leaf64((4,), seed=2)))
    assert gradcheck(lambda x, y: tj.matmul(x, y), (leaf64((2, 3), seed=1), leaf64((3,), seed=2)))


@pytest.mark.parametrize("sa, sb", [((2, 3), (3, 2)), ((2, 2, 3), (2, 3, 2)),
                                    ((2, 1, 2, 3), (3, 3, 2)), ((2, 3), (2, 3, 2)),
                                    ((2, 2, 3), (3, 2))])
def test_matmul_gradgradcheck(sa, sb):
    assert gradgradcheck(lambda x, y: x @ y, (leaf64(sa, seed=1), leaf64(sb, seed=2)))


def test_matmul_gradient_values():
    a = tj.tensor(data((2, 3), np.float64, seed=1), requires_grad=True)
    b = tj.tensor(data((3, 4), np.float64, seed=2), requires_grad=True)
    (a @ b).sum().backward()
    assert_close(a.grad, np.ones((2, 4)) @ b.detach().numpy().T)
    assert_close(b.grad, a.detach().numpy().T @ np.ones((2, 4)))


# ============================================================================================
# infer rules agree with eager results


def _aval(a):
    return (a.shape, a.dtype)


INFER_CASES = [
    ("sum", [((2, 3, 4), F32)], dict(dims=(0, 2), keepdim=False)),
    ("sum", [((2, 3), I32)], dict(dims=(1,), keepdim=True)),
    ("sum", [((2, 3), B)], dict(dims=(0, 1), keepdim=False)),
    ("sum", [((), F64)], dict(dims=(), keepdim=False)),
    ("sum", [((2, 0), F32)], dict(dims=(1,), keepdim=False)),
    ("prod", [((2, 3), I64)], dict(dims=(0,), keepdim=False)),
    ("prod", [((2, 3, 4), F64)], dict(dims=(1, 2), keepdim=True)),
    ("prod", [((3,), B)], dict(dims=(0,), keepdim=False)),
    ("amax", [((2, 3, 4), F32)], dict(dims=(1,), keepdim=True)),
    ("amax", [((2, 3), I32)], dict(dims=(0, 1), keepdim=False)),
    ("amin", [((2, 3, 4), F64)], dict(dims=(0, 2), keepdim=False)),
    ("amin", [((4,), I64)], dict(dims=(0,), keepdim=True)),
    ("argmax", [((2, 3, 4), F32)], dict(dim=1, keepdim=False)),
    ("argmax", [((2, 3), I32)], dict(dim=None, keepdim=True)),
    ("argmax", [((2, 3), F64)], dict(dim=None, keepdim=False)),
    ("argmin", [((2, 3, 4), F32)], dict(dim=2, keepdim=True)),
    ("argmin", [((5,), B)], dict(dim=0, keepdim=False)),
    ("cumsum", [((2, 3), F32)], dict(dim=1)),
    ("cumsum", [((2, 3), I32)], dict(dim=0)),
    ("cumsum", [((4,), B)], dict(dim=0)),
    ("reshape", [((2, 3, 4), F32)], dict(shape=(6, 4))),
    ("reshape", [((6,), I64)], dict(shape=(1, 2, 3))),
    ("reshape", [((1,), B)], dict(shape=())),
    ("permute", [((2, 3, 4), F32)], dict(perm=(2, 0, 1))),
    ("permute", [((2, 3), I32)], dict(perm=(1, 0))),
    ("expand", [((3, 1), F32)], dict(shape=(2, 3, 4))),
    ("expand", [((1,), I64)], dict(shape=(5,))),
    ("cat", [((2, 3), F32), ((2, 1), F32)], dict(dim=1)),
    ("cat", [((2, 3), I64), ((1, 3), F32), ((4, 3), I32)], dict(dim=0)),
    ("cat", [((2, 3), B), ((2, 3), I32)], dict(dim=0)),
    ("pad", [((2, 3), F32)], dict(pad=(1, 2), value=0.0)),
    ("pad", [((2, 3, 4), I64)], dict(pad=(0, 1, 2, 3), value=5)),
    ("matmul", [((2, 3), F32), ((3, 4), F32)], {}),
    ("matmul", [((2, 1, 3, 4), F64), ((5, 4, 2), F64)], {}),
    ("matmul", [((2, 3), F32), ((4, 3, 2), F64)], {}),
    ("matmul", [((2, 3), I32), ((3, 2), I64)], {}),
]


@pytest.mark.parametrize("name, avals, attrs", INFER_CASES)
def test_infer_matches_eager(name, avals, attrs):
    op = ops.OPS[name]
    inputs = [tj.tensor(data(s, d, seed=i)) for i, (s, d) in enumerate(avals)]
    out = apply(op, *inputs, **attrs)
    shape, dtype = op.infer([(s, np.dtype(d)) for s, d in avals], **attrs)
    assert tuple(shape) == out.shape
    assert np.dtype(dtype) == out.dtype


@pytest.mark.parametrize("name, avals, attrs, match", [
    ("reshape", [((2, 3), F32)], dict(shape=(4, 2)), r"\(4, 2\).*\(2, 3\).*6 elements"),
    ("permute", [((2, 3), F32)], dict(perm=(0, 0)), "not a permutation"),
    ("expand", [((3, 2), F32)], dict(shape=(3, 4)), r"cannot expand shape \(3, 2\) to \(3, 4\)"),
    ("cat", [((2, 3), F32), ((3, 2), F32)], dict(dim=0), "must match except in dimension 0"),
    ("matmul", [((2, 3), F32), ((4, 2), F32)], {}, r"\(2, 3\) @ \(4, 2\)"),
    ("matmul", [((2, 2, 3), F32), ((3, 3, 2), F32)], {}, "cannot be broadcast"),
    ("argmax", [((2, 0), F32)], dict(dim=1, keepdim=False), "zero-size dimension"),
    ("sum", [((2, 3), F32)], dict(dims=(2,), keepdim=False), r"dimension 2 out of range"),
    ("pad", [((3,), F32)], dict(pad=(1, 1, 1, 1), value=0.0), "at most 1 dims"),
])
def test_infer_rejects_bad_avals(name, avals, attrs, match):
    with pytest.raises((tj.ShapeError, IndexError), match=match):
        ops.OPS[name].infer(avals, **attrs)


# ============================================================================================
# errors


@pytest.mark.parametrize("sa, sb", [((2, 3), (4, 2)), ((3,), (4,)), ((2, 2, 3), (2, 4, 5)),
                                    ((3,), (2, 4)), ((2, 5), (3,))])
def test_matmul_inner_dim_mismatch_names_both_shapes(sa, sb):
    with pytest.raises(tj.ShapeError, match=rf"{sa} @ {sb}".replace("(", r"\(")
                       .replace(")", r"\)").replace(",)", ",\\)")):
        tj.ones(*sa) @ tj.ones(*sb)
    with pytest.raises(RuntimeError, match="inner dimensions do not match"):
        tj.matmul(tj.ones(*sa), tj.ones(*sb))


def test_matmul_batch_mismatch_and_0d():
    with pytest.raises(tj.ShapeError, match=r"\(2,\).*\(3,\).*cannot be broadcast"):
        tj.ones(2, 2, 3) @ tj.ones(3, 3, 2)
    with pytest.raises(tj.ShapeError, match=r"at least 1 dimension.*\(\) and \(3,\)"):
        tj.tensor(2.0) @ tj.ones(3)


@pytest.mark.parametrize("call, match", [
    (lambda t: t.reshape(4, 2), r"shape \(4, 2\) is invalid for input of shape \(2, 3\) "
                                r"\(6 elements\)"),
    (lambda t: t.view(-1, 4), r"shape \(-1, 4\) is invalid for input of shape \(2, 3\) "
                              r"\(6 elements\)"),
    (lambda t: t.reshape(7), r"shape \(7,\) is invalid for input of shape \(2, 3\)"),
    (lambda t: t.reshape(-1, -1), "only one dimension can be inferred"),
    (lambda t: t.unflatten(1, (2, 2)), r"\(2, 2\) is invalid .* \(2, 3\)"),
])
def test_reshape_wrong_size(call, match):
    with pytest.raises(RuntimeError, match=match):
        call(tj.ones(2, 3))


def test_cat_errors():
    with pytest.raises(RuntimeError, match=r"cat: shapes \(2, 3\), \(2, 4\) must match except in "
                                           r"dimension 0"):
        tj.cat([tj.ones(2, 3), tj.ones(2, 4)])
    with pytest.raises(RuntimeError, match=r"same number of dimensions.*\(2, 3\), \(2, 3, 1\)"):
        tj.cat([tj.ones(2, 3), tj.ones(2, 3, 1)], 1)
    with pytest.raises(RuntimeError, match="zero-dimensional tensors cannot be concatenated"):
        tj.cat([tj.tensor(1.0), tj.tensor(2.0)])
    with pytest.raises(RuntimeError, match="zero-dimensional tensors cannot be concatenated"):
        tj.cat([tj.tensor(1.0)])
    with pytest.raises(ValueError, match="non-empty list"):
        tj.cat([])
    with pytest.raises(IndexError, match=r"cat: dimension 2 out of range .*\[-2, 1\]"):
        tj.cat([tj.ones(2, 3), tj.ones(2, 3)], 2)
    with pytest.raises(IndexError, match=r"cat: dimension 2 out of range"):
        tj.cat([tj.ones(2, 3)], 2)


def test_stack_errors():
    with pytest.raises(RuntimeError, match=r"stack: expects each tensor to be equal size, got "
                                           r"\(2, 3\), \(2, 4\)"):
        tj.stack([tj.ones(2, 3), tj.ones(2, 4)])
    with pytest.raises(IndexError, match=r"stack: dimension 3 out of range .*\[-3, 2\]"):
        tj.stack([tj.ones(2, 3), tj.ones(2, 3)], 3)
    with pytest.raises(ValueError, match="non-empty list"):
        tj.stack([])


@pytest.mark.parametrize("name, call, dim, rng", [
    ("sum", lambda t: t.sum(2), 2, r"\[-2, 1\]"),
    ("mean", lambda t: t.mean(-3), -3, r"\[-2, 1\]"),
    ("prod", lambda t: t.prod((0, 5)), 5, r"\[-2, 1\]"),
    ("amax", lambda t: t.amax(3), 3, r"\[-2, 1\]"),
    ("argmax", lambda t: t.argmax(2), 2, r"\[-2, 1\]"),
    ("argmin", lambda t: t.argmin(-3), -3, r"\[-2, 1\]"),
    ("cumsum", lambda t: t.cumsum(2), 2, r"\[-2, 1\]"),
    ("var", lambda t: t.var(2), 2, r"\[-2, 1\]"),
    ("logsumexp", lambda t: t.logsumexp(4), 4, r"\[-2, 1\]"),
    ("amax", lambda t: t.softmax(2), 2, r"\[-2, 1\]"),
    ("argmax", lambda t: t.max(2), 2, r"\[-2, 1\]"),
    ("transpose", lambda t: t.transpose(0, 2), 2, r"\[-2, 1\]"),
    ("permute", lambda t: t.permute(0, 2), 2, r"\[-2, 1\]"),
    ("flatten", lambda t: t.flatten(0, 2), 2, r"\[-2, 1\]"),
    ("squeeze", lambda t: t.squeeze(2), 2, r"\[-2, 1\]"),
    ("unsqueeze", lambda t: t.unsqueeze(3), 3, r"\[-3, 2\]"),
    ("split", lambda t: t.split(1, 2), 2, r"\[-2, 1\]"),
    ("chunk", lambda t: t.chunk(2, -3), -3, r"\[-2, 1\]"),
    ("unbind", lambda t: t.unbind(2), 2, r"\[-2, 1\]"),
    ("flip", lambda t: t.flip(2), 2, r"\[-2, 1\]"),
    ("size", lambda t: t.size(2), 2, r"\[-2, 1\]"),
])
def test_dim_out_of_range_names_dim_and_range(name, call, dim, rng):
    with pytest.raises(IndexError, match=rf"{name}: dimension {dim} out of range.*{rng}"):
        call(tj.ones(2, 3))


def test_dim_out_of_range_on_0d():
    with pytest.raises(IndexError, match=r"sum: dimension 1 out of range .*\[-1, 0\]"):
        tj.tensor(1.0).sum(1)


@pytest.mark.parametrize("call, dim", [(lambda t: t.sum((0, -2)), 0), (lambda t: t.amax((1, 1)), 1),
                                       (lambda t: t.flip((0, 0)), 0),
                                       (lambda t: t.squeeze((0, -2)), 0),
                                       (lambda t: t.logsumexp((-1, 1)), 1)])
def test_repeated_dims_are_refused_like_torch(call, dim):
    with pytest.raises(RuntimeError, match=f"dim {dim} appears multiple times"):
        call(tj.ones(2, 3))


def test_split_sections_must_sum_to_size():
    with pytest.raises(RuntimeError, match=r"split: sections \[1, 1\] do not add up to the size 3 "
                                           r"of dimension 1"):
        tj.ones(2, 3).split([1, 1], 1)
    with pytest.raises(RuntimeError, match=r"sections \[2, 2\] do not add up to the size 2"):
        tj.ones(2, 3).split([2, 2])
    with pytest.raises(ValueError, match="split_size must be positive, got 0"):
        tj.ones(2, 3).split(0)


def test_other_shape_errors():
    with pytest.raises(RuntimeError, match=r"permute: .* not a permutation .*\(2, 3\)"):
        tj.ones(2, 3).permute(0, 0)
    with pytest.raises(RuntimeError, match=r"permute: .* not a permutation"):
        tj.ones(2, 3).permute(0)
    with pytest.raises(RuntimeError, match=r"expand: cannot expand shape \(3, 2\) to \(3, 4\)"):
        tj.ones(3, 2).expand(3, 4)
    with pytest.raises(RuntimeError, match=r"expand: the number of sizes provided \(1\) must be at "
                                           r"least the number of dims \(2\)"):
        tj.ones(3, 2).expand(4)
    with pytest.raises(RuntimeError, match=r"t\(\) expects a tensor with <= 2 dimensions, got 3"):
        tj.ones(2, 3, 4).t()
    with pytest.raises(RuntimeError, match=r"mT needs at least 2 dims"):
        _ = tj.ones(3).mT
    with pytest.raises(ValueError, match="start_dim cannot come after end_dim"):
        tj.ones(2, 3, 4).flatten(2, 1)
    with pytest.raises(RuntimeError, match=r"pad: padding \(1, 1, 1, 1\) needs pairs for at most "
                                           r"1 dims"):
        F.pad(tj.ones(3), (1, 1, 1, 1))
    with pytest.raises(RuntimeError, match=r"pad: padding \(1, 1, 1\) needs pairs"):
        F.pad(tj.ones(2, 3), (1, 1, 1))
    with pytest.raises(RuntimeError, match=r"repeat: number of repeat dims \(1\) can not be "
                                           r"smaller than the number of dims of the tensor \(2\)"):
        tj.ones(2, 3).repeat(2)
    with pytest.raises(NotImplementedError, match="negative padding"):
        F.pad(tj.ones(3), (-1, 0))
    with pytest.raises(NotImplementedError, match="mode 'reflect' is not supported"):
        F.pad(tj.ones(1, 3), (1, 1), mode="reflect")
