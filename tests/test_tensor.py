"""Tensor basics: creation, dtypes, conversion, printing, devices, randomness."""

import numpy as np
import pytest

import tracejit as tj

from .conftest import assert_close


@pytest.mark.parametrize("data, dtype", [
    ([1.0, 2.0], np.float32), ([1, 2], np.int64), ([True, False], np.bool_), (2.5, np.float32),
    (3, np.int64), ([[1, 2.0]], np.float32), (np.arange(3, dtype=np.int32), np.int32),
    (np.ones(2), np.float64),
])
def test_tensor_dtype_inference(data, dtype):
    t = tj.tensor(data)
    assert t.dtype == dtype
    assert_close(t, np.asarray(data, dtype=dtype))


def test_tensor_copies_but_from_numpy_shares():
    a = np.zeros(3, np.float32)
    t, s = tj.tensor(a), tj.from_numpy(a)
    a[0] = 1
    assert t[0].item() == 0 and s[0].item() == 1
    s.add_(1)
    assert a[1] == 1
    assert np.shares_memory(s.numpy(), a)


def test_unsupported_dtypes_are_refused():
    with pytest.raises(TypeError, match="float16 is not supported"):
        tj.from_numpy(np.zeros(2, np.float16))
    with pytest.raises(TypeError, match="could not infer a dtype"):
        tj.tensor(["a"])


def test_dlpack_round_trip():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = tj.from_dlpack(a)
    assert np.shares_memory(np.from_dlpack(t), a)
    assert_close(t, a)


def test_factories():
    assert_close(tj.zeros(2, 3), np.zeros((2, 3), np.float32))
    assert_close(tj.ones((2,), dtype=tj.int32), np.ones(2, np.int32))
    assert_close(tj.full((2, 2), 7), np.full((2, 2), 7, np.int64))
    assert_close(tj.full((2,), 1.5), np.full(2, 1.5, np.float32))
    assert tj.empty(4).shape == (4,)
    assert_close(tj.arange(5), np.arange(5))
    assert_close(tj.arange(1, 2, 0.25), np.array([1, 1.25, 1.5, 1.75], np.float32))
    assert_close(tj.arange(5, 0, -2), np.array([5, 3, 1]))
    assert_close(tj.linspace(0, 1, 5), np.linspace(0, 1, 5).astype(np.float32))
    assert_close(tj.eye(3, 2), np.eye(3, 2, dtype=np.float32))
    x = tj.ones(2, 3, dtype=tj.float64)
    assert tj.zeros_like(x).dtype == np.float64 and tj.full_like(x, 2).sum().item() == 12
    assert x.new_zeros(4).dtype == np.float64


def test_random_is_reproducible_and_distributed():
    tj.manual_seed(123)
    a = tj.randn(1000)
    tj.manual_seed(123)
    b = tj.randn(1000)
    assert_close(a, b.numpy())
    assert a.dtype == np.float32
    assert abs(a.mean().item()) < 0.15 and abs(a.std().item() - 1) < 0.1
    u = tj.rand(1000)
    assert 0 <= u.amin().item() and u.amax().item() < 1
    r = tj.randint(3, 7, (500,))
    assert r.dtype == np.int64 and set(np.unique(r.numpy())) == {3, 4, 5, 6}
    assert sorted(tj.randperm(5).tolist()) == [0, 1, 2, 3, 4]


def test_metadata():
    x = tj.zeros(2, 3, 4)
    assert x.shape == (2, 3, 4) and x.ndim == 3 and x.dim() == 3
    assert x.size() == (2, 3, 4) and x.size(-1) == 4 and x.numel() == 24
    assert x.stride() == (12, 4, 1) and x.transpose(0, 2).stride() == (1, 4, 12)
    assert x.is_contiguous() and not x.transpose(0, 1).is_contiguous()
    assert x.device == "cpu" and str(x.device) == "cpu"
    assert x.element_size() == 4 and x.is_floating_point()


def test_scalar_conversions():
    t = tj.tensor([[2.5]])
    assert t.item() == 2.5 and float(t) == 2.5 and int(t) == 2
    assert tj.tensor([1, 2]).tolist() == [1, 2]
    assert bool(tj.tensor(1.0)) and not bool(tj.tensor([0]))
    assert [1, 2, 3][tj.tensor(1)] == 2
    assert f"{tj.tensor(3.14159):.2f}" == "3.14"
    with pytest.raises(RuntimeError, match="more than one value is ambiguous"):
        bool(tj.ones(2))
    with pytest.raises(RuntimeError, match="cannot be converted to a Python scalar"):
        tj.ones(2).item()
    assert len(tj.ones(3, 2)) == 3
    assert [r.shape for r in tj.ones(3, 2)] == [(2,)] * 3


def test_numpy_interop():
    t = tj.tensor([1.0, 2.0])
    assert isinstance(np.asarray(t), np.ndarray)
    assert_close(np.exp(np.asarray(t)), np.exp([1.0, 2.0]).astype(np.float32))
    r = np.float32(2.0) * t  # numpy scalar on the left still gives a Tensor
    assert isinstance(r, tj.Tensor)
    r = np.ones(2, np.float32) + t
    assert isinstance(r, tj.Tensor) and r.tolist() == [2.0, 3.0]


def test_repr_like_torch():
    assert repr(tj.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(tj.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(tj.tensor([1.0], dtype=tj.float64)) == "tensor([1.], dtype=tracejit.float64)"
    assert repr(tj.tensor([1], dtype=tj.int32)) == "tensor([1], dtype=tracejit.int32)"
    assert repr(tj.tensor(2.0)) == "tensor(2.)"
    assert repr(tj.tensor([True])) == "tensor([True])"
    assert repr(tj.zeros(0)) == "tensor([])"
    assert repr(tj.ones(2, 2)) == "tensor([[1., 1.],\n        [1., 1.]])"


def test_to_and_casts():
    x = tj.tensor([1.7, -1.7])
    assert x.to(tj.float32) is x
    assert x.to(tj.int64).tolist() == [1, -1]
    assert x.long().dtype == np.int64 and x.double().dtype == np.float64
    assert x.int().dtype == np.int32 and x.bool().tolist() == [True, True]
    assert x.to("float64").dtype == np.float64
    assert x.to(tj.ones(1, dtype=tj.int32)).dtype == np.int32
    assert x.to("cpu") is x
    assert x.type() == "tracejit.float32"
    if not tj.cuda.is_available():  # with a GPU, tests/cuda/test_device.py covers it
        with pytest.raises(tj.cuda.CudaUnavailableError, match="Tensor.cuda: CUDA is not"):
            x.to("cuda")
    with pytest.raises(TypeError, match=r"to: .complex128. is neither a device .* nor a dtype"):
        x.to("complex128")


def test_default_dtype_switch():
    try:
        tj.set_default_dtype(tj.float64)
        assert tj.tensor([1.0]).dtype == np.float64
        assert (tj.ones(2, dtype=tj.int32) * 0.5).dtype == np.float64
    finally:
        tj.set_default_dtype(tj.float32)
    assert tj.tensor([1.0]).dtype == np.float32
    assert (tj.ones(2, dtype=tj.int32) * 0.5).dtype == np.float32  # cached plans were dropped


def test_top_level_functions_exist_and_match_methods():
    x = tj.tensor([[0.5, -1.0], [2.0, 3.0]])
    assert_close(tj.exp(x), x.exp())
    assert_close(tj.matmul(x, x), x @ x)
    assert_close(tj.cat([x, x]), np.concatenate([x.numpy()] * 2))
    assert_close(tj.where(x > 0, x, 0.0), np.where(x.numpy() > 0, x.numpy(), 0))
    assert_close(tj.max(x), np.float32(3.0))
    assert tj.max(x, 1).indices.tolist() == [0, 1]
    assert_close(tj.sum(x, dim=0), x.numpy().sum(0))
    for name in ("exp", "log", "tanh", "sigmoid", "relu", "sum", "mean", "softmax", "reshape",
                 "stack", "cat", "where", "matmul", "clamp", "maximum", "gather", "index_select"):
        assert callable(getattr(tj, name))
