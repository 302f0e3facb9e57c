"""Indexing with torch's semantics: ``__getitem__``/``__setitem__``, index_select, gather,
scatter_add and index_put, checked against numpy, with gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit import ops
from tracejit.dispatch import apply
from tracejit.tensor import _parse_index

from .conftest import assert_close, data, gradcheck, leaf64, noncontig

SHAPE = (2, 3, 4)
IDX = np.array([0, 3, 1, 3, 2])  # repeats on purpose

# Keys that numpy and torch agree on. Each is (name, key builder); the builder returns the key
# for tracejit and for numpy (tensors become arrays).
BASIC_KEYS = {
    "int": 1,
    "neg_int": -1,
    "two_ints": (1, -2),
    "three_ints": (-1, 0, 3),
    "slice": slice(1, None),
    "slice_step2": slice(None, None, 2),
    "neg_step": slice(None, None, -1),
    "neg_step2_from_end": (slice(None), slice(None, None, -2)),
    "neg_step_bounds": (slice(None), slice(2, 0, -1)),
    "clamped_stop": slice(0, 100),
    "clamped_start": slice(-100, 1),
    "clamped_both_neg_step": (slice(None), slice(10, -10, -1)),
    "empty_slice": slice(2, 1),
    "none": None,
    "none_middle": (slice(None), None, 1),
    "ellipsis": Ellipsis,
    "ellipsis_int": (Ellipsis, 2),
    "int_ellipsis": (0, Ellipsis),
    "ellipsis_none": (Ellipsis, None),
    "none_ellipsis_slice": (None, Ellipsis, slice(1, 3)),
    "mixed": (1, slice(None, None, -1), None, slice(1, None, 2)),
    "empty_tuple": (),
}


def _np_key(key):
    if isinstance(key, tuple):
        return tuple(_np_key(k) for k in key)
    if isinstance(key, tj.Tensor):
        return key.numpy()
    return key


@pytest.fixture(params=["contig", "noncontig", "transposed"])
def src(request):
    """(tracejit tensor, numpy array) with equal values, in three memory layouts."""
    a = data(SHAPE)
    if request.param == "contig":
        return tj.tensor(a), a
    if request.param == "noncontig":
        b = noncontig(a)
        t = tj.from_numpy(b)
        assert not t.is_contiguous()
        return t, b
    b = np.ascontiguousarray(a.transpose(2, 1, 0)).transpose(2, 1, 0)
    t = tj.from_numpy(b)
    assert not t.is_contiguous()
    return t, b


@pytest.mark.parametrize("key", list(BASIC_KEYS.values()), ids=list(BASIC_KEYS))
def test_getitem_basic(src, key):
    t, a = src
    assert_close(t[key], a[key])


def _adv_keys():
    i1 = tj.tensor(IDX[:3] % 2)
    return {
        "tensor_1d": (tj.tensor(IDX % 2),),
        "tensor_1d_negative": (tj.tensor([-1, 0, -2]),),
        "tensor_2d": (tj.tensor([[0, 1], [1, 1], [0, 0]]),),
        "tensor_0d": (tj.tensor(1),),
        "int32_tensor": (tj.tensor([1, 0], dtype=tj.int32),),
        "list": ([1, 0, 1],),
        "nested_list": ([[1], [0]],),
        "numpy_array": (np.array([1, 0, 0]),),
        "last_dim": (Ellipsis, tj.tensor(IDX)),
        "slice_then_tensor": (slice(None), tj.tensor([2, 0, 2])),
        "two_adjacent": (i1, tj.tensor([2, 1, 0])),
        "two_adjacent_broadcast": (slice(None), tj.tensor([[0], [2]]), tj.tensor([1, 3, 3])),
        "non_adjacent": (tj.tensor([1, 0, 1]), slice(None), tj.tensor([3, 2, 0])),
        "non_adjacent_broadcast": (tj.tensor([[1], [0]]), slice(1, None), tj.tensor([0, 3, 2])),
        "tensor_with_neg_step": (tj.tensor([1, 0]), slice(None, None, -1)),
        "tensor_with_none": (None, tj.tensor([1, 0])),
        "three_tensors": (tj.tensor([1, 0]), tj.tensor([[2], [0]]), tj.tensor([3, 1])),
        "adjacent_ints_and_tensor": (slice(None), 1, tj.tensor([0, 2])),
        "tensor_then_int": (tj.tensor([1, 0, 1]), -1),
        "tensor_slice_int": (tj.tensor(IDX % 2), slice(None), 0),
        "empty_index": (tj.tensor(np.zeros(0, dtype=np.int64)),),
        "empty_list": ([],),
    }


ADV_KEYS = _adv_keys()


@pytest.mark.parametrize("name", list(ADV_KEYS))
def test_getitem_integer_tensors(src, name):
    t, a = src
    key = ADV_KEYS[name]
    r = t[key]
    assert_close(r, a[_np_key(key)])
    assert r.dtype == t.dtype


BOOL_KEYS = {
    "full_mask": lambda a: (a > 0,),
    "leading_two_dims": lambda a: (a[..., 0] > 0,),
    "leading_dim": lambda a: (np.array([True, False]),),
    "bool_list": lambda a: ([False, True],),
    "mask_after_slice": lambda a: (slice(None), a[0, :, 0] > 0),
    "mask_then_slice": lambda a: (np.array([True, True]), slice(1, None, -1)),
    "slice_mask_dims_12": lambda a: (slice(None, None, -1), a[0] > 0),
    "int_and_mask": lambda a: (1, a[0] > 0),
    "all_false": lambda a: (np.zeros(SHAPE[:2], dtype=bool),),
}


@pytest.mark.parametrize("name", list(BOOL_KEYS))
@pytest.mark.parametrize("as_tensor", [True, False], ids=["tensor_mask", "array_mask"])
def test_getitem_bool_mask(src, name, as_tensor):
    t, a = src
    key = BOOL_KEYS[name](a)
    tkey = tuple(tj.tensor(k) if as_tensor and isinstance(k, np.ndarray) else k for k in key)
    assert_close(t[tkey], a[key])


def test_getitem_int_with_tensor_follows_torch_not_numpy(src):
    # torch applies the int first (a basic index), so the tensor index is the only advanced
    # index and stays in place: (3, 5). numpy treats the int as advanced too and moves the
    # broadcast dims to the front: (5, 3).
    t, a = src
    r = t[0, :, tj.tensor(IDX)]
    assert a[0, :, IDX].shape == (5, 3)
    assert r.shape == (3, 5)
    assert_close(r, a[0][:, IDX])
    r2 = t[tj.tensor([1, 0]), 1, tj.tensor([3, 3])]  # ints between tensors: numpy agrees here
    assert_close(r2, a[:, 1][[1, 0], [3, 3]])
    r3 = t[1, tj.tensor([[0], [2]]), None, tj.tensor([1, 2])]
    assert_close(r3, a[1][:, None][[[0], [2]], :, [1, 2]])
    assert r3.shape == (2, 2, 1)


def test_getitem_basic_result_is_a_view_advanced_is_a_copy():
    base = tj.tensor(data(SHAPE))
    v = base[1, ::2]
    with tj.no_grad():
        v.fill_(7.0)
    assert np.all(base.numpy()[1, ::2] == 7.0)
    c = base[tj.tensor([0])]
    c.fill_(-1.0)
    assert not np.any(base.numpy() == -1.0)


@pytest.mark.parametrize("key, exc, match", [
    (2, IndexError, r"index 2 is out of bounds"),
    ((0, 0, 0, 0), IndexError, r"too many indices"),
    ((Ellipsis, 0, Ellipsis), IndexError, r"single ellipsis"),
    (slice(None, None, 0), ValueError, r"step cannot be zero"),
    (1.5, TypeError, r"unsupported index"),
])
def test_getitem_errors(key, exc, match):
    with pytest.raises(exc, match=match):
        tj.tensor(data(SHAPE))[key]


def test_getitem_float_tensor_index_error():
    with pytest.raises(TypeError, match=r"getitem.*long, int or bool"):
        tj.tensor(data(SHAPE))[tj.tensor([0.0])]


def test_getitem_tensor_index_out_of_bounds():
    with pytest.raises(IndexError, match=r"getitem.*out of bounds"):
        tj.tensor(data(SHAPE))[:, tj.tensor([0, 3])]


# ---------------------------------------------------------------------------------- gradients

GRAD_CASES = {
    "basic_slice": lambda t: t[1:, ::2, None, -1],
    "neg_steps": lambda t: t[::-1, 2::-2, 1:3],
    "ellipsis_int": lambda t: t[..., 1],
    "repeated_int_tensor": lambda t: t[tj.tensor([0, 0, 1, 0])],
    "repeated_2d_tensor": lambda t: t[:, tj.tensor([[0, 2], [2, 2]])],
    "non_adjacent_repeated": lambda t: t[tj.tensor([1, 1, 0]), :, tj.tensor([3, 3, 0])],
    "int_with_tensor": lambda t: t[0, :, tj.tensor([1, 1, 2])],
    "bool_mask": lambda t: t[tj.tensor(data(SHAPE) > 0)],
    "bool_mask_leading": lambda t: t[tj.tensor(data(SHAPE)[..., 0] > 0)],
    "mask_and_slice": lambda t: t[:, tj.tensor([True, False, True]), ::-1],
    "index_select_repeated": lambda t: t.index_select(2, tj.tensor([3, 0, 3, 3])),
    "index_select_neg_dim": lambda t: t.index_select(-2, tj.tensor([2, 2])),
    "gather_repeated": lambda t: t.gather(1, tj.tensor([[[0, 1, 2, 0], [0, 0, 2, 2]]] * 2)),
    "gather_smaller_index": lambda t: t.gather(2, tj.tensor([[[3, 3, 0], [1, 1, 1]]])),
}


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_indexing_gradcheck(name):
    assert gradcheck(GRAD_CASES[name], (leaf64(SHAPE),))


def test_repeated_index_gradient_accumulates():
    x = tj.tensor(data((4,), np.float64), requires_grad=True)
    x[tj.tensor([0, 2, 0, 0])].sum().backward()
    assert_close(x.grad, np.array([3.0, 0.0, 1.0, 0.0]))
    y = tj.tensor(data((3, 2), np.float64), requires_grad=True)
    y.index_select(0, tj.tensor([2, 2])).sum().backward()
    assert_close(y.grad, np.array([[0.0, 0.0], [0.0, 0.0], [2.0, 2.0]]))
    z = tj.tensor(data((3,), np.float64), requires_grad=True)
    z.gather(0, tj.tensor([1, 1, 1, 0])).sum().backward()
    assert_close(z.grad, np.array([1.0, 3.0, 0.0]))


def test_bool_mask_gradient_values():
    a = data((3, 4), np.float64)
    x = tj.tensor(a, requires_grad=True)
    mask = a > 0
    (x[tj.tensor(mask)] * 3.0).sum().backward()
    assert_close(x.grad, np.where(mask, 3.0, 0.0))


@pytest.mark.parametrize("src_shape", [(2, 3), (3, 4)], ids=["src_like_index", "src_larger"])
@pytest.mark.parametrize("dim", [0, 1])
def test_scatter_add_gradcheck(src_shape, dim):
    index = tj.tensor([[0, 2, 1], [2, 2, 0]]) if dim == 1 else tj.tensor([[1, 0, 1], [1, 1, 1]])
    x = leaf64((2, 3) if dim == 0 else (2, 3), seed=1)
    s = leaf64(src_shape, seed=2)
    assert gradcheck(lambda a, b: a.scatter_add(dim, index, b), (x, s))


def test_scatter_add_src_larger_gradient_is_zero_outside_index():
    x = tj.zeros(3, dtype=tj.float64, requires_grad=True)
    s = tj.tensor(data((2, 4), np.float64), requires_grad=True)
    index = tj.tensor([[0, 0], [2, 1]])
    w = tj.tensor([[1.0, 2.0, 3.0]], dtype=tj.float64)
    (x.reshape(1, 3).expand(2, 3).scatter_add(1, index, s) * w).sum().backward()
    assert_close(s.grad, np.array([[1.0, 1.0, 0, 0], [3.0, 2.0, 0, 0]]))
    assert_close(x.grad, np.array([2.0, 4.0, 6.0]))


INDEX_PUT_CASES = {
    "int_tensor": ((tj.tensor([1, 0]),), SHAPE, (2, 3, 4)),
    "int_tensor_broadcast_value": ((tj.tensor([1, 0]),), SHAPE, (4,)),
    "slice_and_tensor": ((slice(None), tj.tensor([2, 0])), SHAPE, (2, 2, 1)),
    "two_tensors": ((tj.tensor([1, 0, 2]), tj.tensor([3, 1, 0])), (3, 4), (3,)),
    "bool_mask": ((tj.tensor(data((3, 4)) > 0),), (3, 4), (1,)),
}


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("name", list(INDEX_PUT_CASES))
def test_index_put_gradcheck(name, accumulate):
    idx, xshape, vshape = INDEX_PUT_CASES[name]
    x, v = leaf64(xshape, seed=1), leaf64(vshape, seed=2)
    assert gradcheck(lambda a, b: a.index_put(idx, b, accumulate=accumulate), (x, v))


def test_index_put_accumulate_repeated_values_and_gradients():
    a = data((4,), np.float64)
    x = tj.tensor(a, requires_grad=True)
    v = tj.tensor([1.0, 2.0, 4.0], dtype=tj.float64, requires_grad=True)
    idx = tj.tensor([1, 3, 1])
    r = x.index_put((idx,), v, accumulate=True)
    expected = a.copy()
    np.add.at(expected, [1, 3, 1], [1.0, 2.0, 4.0])
    assert_close(r, expected)
    assert gradcheck(lambda p, q: p.index_put((idx,), q, accumulate=True), (x, v))
    (r * tj.tensor([1.0, 2.0, 3.0, 4.0], dtype=tj.float64)).sum().backward()
    assert_close(x.grad, np.array([1.0, 2.0, 3.0, 4.0]))
    assert_close(v.grad, np.array([2.0, 4.0, 2.0]))


def test_index_put_overwrite_gradient_is_zero_in_overwritten_region():
    x = tj.tensor(data((4,), np.float64), requires_grad=True)
    v = tj.tensor([5.0, 6.0], dtype=tj.float64, requires_grad=True)
    r = x.index_put((tj.tensor([3, 0]),), v)
    assert_close(r, np.array([6.0, *data((4,), np.float64)[1:3], 5.0]))
    r.sum().backward()
    assert_close(x.grad, np.array([0.0, 1.0, 1.0, 0.0]))
    assert_close(v.grad, np.array([1.0, 1.0]))


# ---------------------------------------------------------------------------------- setitem

SETITEM_CASES = {
    "int_scalar": (1, lambda: 5.0),
    "neg_int_scalar": (-1, lambda: -3),
    "slice_tensor": ((slice(None), slice(1, None)), lambda: tj.tensor(data((2, 2, 4), seed=3))),
    "slice_broadcast": ((slice(None), 1), lambda: tj.tensor([1.0, 2.0, 3.0, 4.0])),
    "neg_step_broadcast": ((Ellipsis, slice(None, None, -2)),
                           lambda: tj.tensor([[9.0], [8.0], [7.0]])),
    "none_key": ((None, 0), lambda: tj.tensor(data((1, 3, 4), seed=4))),
    "int_tensor": ((tj.tensor([1, 0]),), lambda: tj.tensor(data((2, 3, 4), seed=5))),
    "int_tensor_scalar": ((slice(None), tj.tensor([2, 0])), lambda: 0.5),
    "two_tensors_broadcast": ((tj.tensor([1, 0]), slice(None), tj.tensor([3, 1])),
                              lambda: tj.tensor([1.0, 2.0, 3.0])),
    "bool_mask": ((tj.tensor(data(SHAPE) > 0),), lambda: 0.0),
    "bool_mask_leading": ((tj.tensor(data(SHAPE)[..., 0] > 0),),
                          lambda: tj.tensor([1.0, 2.0, 3.0, 4.0])),
    "numpy_value": ((0, 0), lambda: np.arange(4, dtype=np.float32)),
    "list_value": ((0, 0), lambda: [4.0, 3.0, 2.0, 1.0]),
}


@pytest.mark.parametrize("name", list(SETITEM_CASES))
@pytest.mark.parametrize("grad", [False, True], ids=["plain", "nonleaf_in_autograd"])
def test_setitem_values(name, grad):
    key, make_value = SETITEM_CASES[name]
    a = data(SHAPE)
    value = make_value()
    expected = a.copy()
    nv = value.numpy() if isinstance(value, tj.Tensor) else value
    expected[_np_key(key)] = nv
    if grad:
        leaf = tj.tensor(a, requires_grad=True)
        t = leaf * 1.0
    else:
        t = tj.tensor(a)
    ptr = t.data_ptr()
    t[key] = value
    assert t.data_ptr() == ptr
    assert_close(t, expected)
    assert t.dtype == np.float32


def test_setitem_int_with_tensor_follows_torch():
    # the target of t[0, :, idx] has torch's shape (3, 5), so a (3, 5) value fits
    t = tj.zeros(SHAPE)
    v = data((3, 4))
    t[0, :, tj.tensor([3, 1, 2, 0])] = tj.tensor(v)
    expected = np.zeros(SHAPE, np.float32)
    expected[0][:, [3, 1, 2, 0]] = v
    assert_close(t, expected)
    with pytest.raises(ValueError, match="broadcast"):
        t[0, :, tj.tensor([3, 1, 2, 0])] = tj.tensor(v.T.copy())


@pytest.mark.parametrize("tdtype, value, expected", [
    (tj.int64, 2.7, 2),
    (tj.int64, -2.7, -2),
    (tj.int32, tj.tensor([1.9]), 1),
    (tj.float32, tj.tensor([1.5], dtype=tj.float64), 1.5),
    (tj.float64, tj.tensor([3]), 3.0),
    (tj.bool_, 1, True),
])
def test_setitem_casts_value_to_tensor_dtype(tdtype, value, expected):
    t = tj.zeros(4, dtype=tdtype)
    t[1:3] = value
    assert t.dtype == tdtype
    assert_close(t, np.array([0, expected, expected, 0], dtype=tdtype))


def test_setitem_value_cast_under_autograd():
    x = tj.tensor(data((3,), np.float64), requires_grad=True)
    y = x * 2
    y[0] = tj.tensor([1.5], dtype=tj.float32)
    assert y.dtype == np.float64
    assert y[0].item() == 1.5


SETITEM_GRAD_KEYS = {
    "basic": (slice(1, None), slice(None, None, -2)),
    "int": (0,),
    "int_tensor_repeat_free": (tj.tensor([2, 0]),),
    "bool_mask": (tj.tensor(data((3, 4)) > 0),),
    "two_tensors": (tj.tensor([1, 2]), tj.tensor([0, 3])),
}


@pytest.mark.parametrize("name", list(SETITEM_GRAD_KEYS))
def test_setitem_nonleaf_gradcheck(name):
    key = SETITEM_GRAD_KEYS[name]
    target = np.zeros((3, 4))[key].shape
    vshape = target[-1:] if target else ()

    def f(x, v):
        y = x * x
        y[key] = v * 3.0
        return y * 2.0

    assert gradcheck(f, (leaf64((3, 4), seed=1), leaf64(vshape, seed=2)))


def test_setitem_nonleaf_gradient_values():
    x = tj.tensor(data((3, 4), np.float64), requires_grad=True)
    v = tj.tensor(data((4,), np.float64, seed=9), requires_grad=True)
    y = x * 2.0
    y[1] = v
    assert y.grad_fn is not None
    y.sum().backward()
    assert_close(x.grad, np.array([[2.0] * 4, [0.0] * 4, [2.0] * 4]))
    assert_close(v.grad, np.ones(4))


def test_setitem_value_requiring_grad_into_plain_tensor():
    t = tj.zeros(2, 3, dtype=tj.float64)
    v = tj.tensor([1.0, 2.0, 3.0], dtype=tj.float64, requires_grad=True)
    t[:, tj.tensor([2, 1, 0])] = v
    assert t.requires_grad
    (t * tj.tensor([[1.0, 2.0, 3.0]], dtype=tj.float64)).sum().backward()
    assert_close(v.grad, np.array([6.0, 4.0, 2.0]))


@pytest.mark.parametrize("key", [0, (slice(None), 1), tj.tensor([0]),
                                 tj.tensor([True, False, True])])
def test_setitem_leaf_requiring_grad_raises(key):
    x = tj.tensor(data((3, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        x[key] = 1.0
    assert_close(x.detach(), data((3, 2)))


def test_setitem_leaf_requiring_grad_allowed_under_no_grad():
    x = tj.tensor(data((3, 2)), requires_grad=True)
    with tj.no_grad():
        x[0] = 1.0
        x[tj.tensor([2])] = tj.tensor([[5.0, 6.0]])
    expected = data((3, 2))
    expected[0] = 1.0
    expected[2] = [5.0, 6.0]
    assert_close(x.detach(), expected)
    assert x.requires_grad and x.is_leaf


def test_setitem_value_shape_mismatch():
    t = tj.zeros(2, 3)
    with pytest.raises(ValueError, match=r"broadcast"):
        t[0] = tj.ones(4)


# --------------------------------------------------------------------- gather / scatter / select

def _gather_ref(a, dim, index):
    # torch allows index to be smaller than the input outside ``dim``: read the leading block
    block = a[tuple(slice(0, n) if d != dim else slice(None) for d, n in enumerate(index.shape))]
    return np.take_along_axis(block, index, axis=dim)


GATHER_CASES = [
    ((3, 4), 0, np.array([[0, 2, 1, 0], [2, 2, 2, 1]])),
    ((3, 4), 1, np.array([[3, 0], [1, 1], [0, 3]])),
    ((3, 4), -1, np.array([[3, 0, 2, 2, 1]])),  # larger along dim, smaller elsewhere
    ((2, 3, 4), 1, np.array([[[2, 0], [1, 1]]])),
    ((2, 3, 4), 2, np.zeros((2, 3, 0), dtype=np.int64)),
    ((5,), 0, np.array([4, 0, 4])),
]


@pytest.mark.parametrize("shape, dim, index", GATHER_CASES)
@pytest.mark.parametrize("layout", ["contig", "noncontig"])
@pytest.mark.parametrize("idtype", [np.int64, np.int32])
def test_gather_vs_numpy(shape, dim, index, layout, idtype):
    a = data(shape)
    t = tj.tensor(a) if layout == "contig" else tj.from_numpy(noncontig(a))
    r = t.gather(dim, tj.tensor(index.astype(idtype)))
    assert_close(r, _gather_ref(a, dim % len(shape), index))
    assert_close(tj.gather(t, dim, tj.tensor(index)), r)


def _scatter_add_ref(a, dim, index, src):
    r = a.copy()
    for pos in np.ndindex(*index.shape):
        tgt = list(pos)
        tgt[dim] = index[pos]
        r[tuple(tgt)] += src[pos]
    return r


SCATTER_CASES = [
    ((3, 4), 0, np.array([[0, 2, 1, 0], [2, 2, 2, 1]]), (2, 4)),
    ((3, 4), 1, np.array([[3, 3], [1, 1], [0, 3]]), (3, 2)),
    ((3, 4), 1, np.array([[3, 3, 3]]), (2, 5)),  # src larger than index
    ((2, 3, 4), 2, np.array([[[0, 0, 0, 1, 1]]]), (2, 3, 5)),
    ((5,), 0, np.array([4, 0, 4, 4]), (6,)),
]


@pytest.mark.parametrize("shape, dim, index, src_shape", SCATTER_CASES)
def test_scatter_add_vs_numpy(shape, dim, index, src_shape):
    a, s = data(shape), data(src_shape, seed=3)
    t = tj.tensor(a)
    r = t.scatter_add(dim, tj.tensor(index), tj.tensor(s))
    assert_close(r, _scatter_add_ref(a, dim, index, s), rtol=1e-6)
    assert_close(t, a)  # out of place
    # np.add.at agrees for the full-size case
    if index.shape == s.shape and dim == 0 and a.ndim == 1:
        e = a.copy()
        np.add.at(e, index, s)
        assert_close(r, e, rtol=1e-6)


@pytest.mark.parametrize("dim, index", [(0, [1, 1, 0]), (1, [2, 0]), (-1, [3, 3, 0, 1, 2]),
                                        (2, []), (1, 2)])
def test_index_select_vs_numpy(src, dim, index):
    t, a = src
    idx = tj.tensor(index, dtype=tj.int64)
    r = t.index_select(dim, idx)
    expected = np.take(a, np.asarray(index, dtype=np.int64).reshape(-1), axis=dim)
    assert_close(r, expected)
    assert_close(tj.index_select(t, dim, idx), expected)


@pytest.mark.parametrize("name, call", [
    ("gather", lambda t, i: t.gather(1, i)),
    ("scatter_add", lambda t, i: t.scatter_add(1, i, tj.ones(2, 2))),
    ("index_select", lambda t, i: t.index_select(1, i.reshape(-1))),
])
def test_float_index_error(name, call):
    t = tj.tensor(data((2, 3)))
    with pytest.raises(TypeError, match=rf"{name}.*integer"):
        call(t, tj.tensor([[0.0, 1.0], [1.0, 0.0]]))


@pytest.mark.parametrize("bad", [3, -1, -4])
@pytest.mark.parametrize("name, call", [
    ("gather", lambda t, i: t.gather(1, i)),
    ("scatter_add", lambda t, i: t.scatter_add(1, i, tj.ones(2, 2))),
    ("index_select", lambda t, i: t.index_select(1, i.reshape(-1))),
])
def test_index_out_of_bounds_error(name, call, bad):
    # torch refuses negative indices in these three (unlike in t[idx])
    t = tj.tensor(data((2, 3)))
    with pytest.raises(IndexError, match=rf"{name}.*out of (bounds|range)"):
        call(t, tj.tensor([[0, bad], [1, 0]]))


@pytest.mark.parametrize("name, call, match", [
    ("gather", lambda t: t.gather(0, tj.tensor([[0, 1, 0, 1]])), r"gather: index of shape"),
    ("gather_rank", lambda t: t.gather(0, tj.tensor([0, 1])), r"gather: index of shape"),
    ("scatter_add_src", lambda t: t.scatter_add(1, tj.tensor([[0, 1]]), tj.ones(1, 1)),
     r"scatter_add: index of shape \(1, 2\) is larger than src"),
    ("index_select_2d", lambda t: t.index_select(0, tj.tensor([[0]])), r"index_select: index"),
    ("dim", lambda t: t.gather(2, tj.tensor([[0]])), r"gather: dimension 2 out of range"),
])
def test_gather_scatter_shape_errors(name, call, match):
    with pytest.raises((ValueError, IndexError), match=match):
        call(tj.tensor(data((2, 3))))


# ------------------------------------------------------------------------ infer agrees with eager

INFER_KEYS = list(BASIC_KEYS.values()) + [v for k, v in ADV_KEYS.items()] + [
    (0, slice(None), tj.tensor(IDX)),
    (tj.tensor(data(SHAPE)[..., 0] > 0),),
    (slice(None), tj.tensor(data(SHAPE)[0] > 0)),
]


def _aval(t):
    return (tuple(t.shape), t.dtype)


@pytest.mark.parametrize("key", INFER_KEYS, ids=list(BASIC_KEYS) + list(ADV_KEYS) +
                         ["int_slice_tensor", "mask_leading", "slice_mask"])
def test_getitem_and_index_put_infer_agree_with_eager(key):
    x = tj.tensor(data(SHAPE))
    spec, idx = _parse_index("getitem", key, x.shape)
    r = x[key]
    avals = [(x.shape, x.dtype), *(_aval(i) for i in idx)]
    if idx or spec != ((), None):
        assert ops.GETITEM.infer(avals, spec=spec) == (r.shape, r.dtype)
    v = tj.tensor(data(r.shape, seed=5), dtype=tj.float64)
    for accumulate in (False, True):
        out = apply(ops.INDEX_PUT, x, v, *idx, spec=spec, accumulate=accumulate)
        inferred = ops.INDEX_PUT.infer([avals[0], _aval(v), *avals[1:]], spec=spec,
                                       accumulate=accumulate)
        assert inferred == (out.shape, out.dtype) == (x.shape, x.dtype)
    assert ops.INDEX_PUT.infer([avals[0], 1.0, *avals[1:]], spec=spec, accumulate=False) == \
        (x.shape, x.dtype)


def test_index_put_infer_rejects_unbroadcastable_value():
    spec, idx = _parse_index("index_put", (tj.tensor([0, 1]),), SHAPE)
    with pytest.raises(ValueError, match="index_put"):
        ops.INDEX_PUT.infer([(SHAPE, np.dtype(np.float32)), ((3, 5), np.dtype(np.float32)),
                             ((2,), np.dtype(np.int64))], spec=spec, accumulate=False)


@pytest.mark.parametrize("shape, dim, index", GATHER_CASES)
def test_gather_infer_agrees_with_eager(shape, dim, index):
    x = tj.tensor(data(shape))
    i = tj.tensor(index)
    d = dim % len(shape)
    r = x.gather(dim, i)
    assert ops.GATHER.infer([_aval(x), _aval(i)], dim=d) == (r.shape, r.dtype)


@pytest.mark.parametrize("shape, dim, index, src_shape", SCATTER_CASES)
def test_scatter_add_infer_agrees_with_eager(shape, dim, index, src_shape):
    x = tj.tensor(data(shape, np.float64))
    i, s = tj.tensor(index), tj.tensor(data(src_shape, np.float64))
    r = x.scatter_add(dim, i, s)
    assert ops.SCATTER_ADD.infer([_aval(x), _aval(i), _aval(s)], dim=dim) == (r.shape, r.dtype)


@pytest.mark.parametrize("grad", [False, True])
def test_setitem_value_with_leading_unit_dims(grad):
    # torch drops leading size-1 dims of the value: x[0] = tensor([v]) and x[0] = ones(1, 1, 3)
    a = data((2, 3), np.float64)
    v = tj.tensor([[[1.0, 2.0, 3.0]]], dtype=tj.float64, requires_grad=grad)
    s = tj.tensor([4.5], dtype=tj.float64, requires_grad=grad)
    x = tj.tensor(a, requires_grad=grad)
    t = x * 1.0
    t[0] = v
    t[1, 2] = s
    assert_close(t, np.array([[1.0, 2.0, 3.0], [a[1, 0], a[1, 1], 4.5]]))
    if grad:
        t.sum().backward()
        assert_close(v.grad, np.ones((1, 1, 3)))
        assert_close(s.grad, np.ones(1))
        assert_close(x.grad, np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
