"""Tensor factories and the random number generator (``manual_seed`` makes runs reproducible).

>>> tracejit.manual_seed(0); tracejit.rand(2, 3).shape
(2, 3)
"""

from __future__ import annotations

import numpy as np

from . import dispatch, ops
from . import dtypes as D
from .dispatch import apply, current_tracer
from .errors import user_frame
from .tensor import Tensor, _check_device, _host_data, _shape_arg

_GEN = [np.random.default_rng(0)]


def manual_seed(seed: int) -> None:
    """Seed tracejit's generator (rand, randn, randint, dropout, parameter init)."""
    _GEN[0] = np.random.default_rng(int(seed))


def seed() -> int:
    """Seed the generator from OS entropy; returns the seed used."""
    s = int(np.random.SeedSequence().entropy % (2 ** 63))
    manual_seed(s)
    return s


def _rng() -> np.random.Generator:
    return _GEN[0]


def _to_array(data, dtype=None) -> np.ndarray:
    """Convert data to a fresh array with torch's dtype inference (floats -> float32)."""
    if isinstance(data, Tensor):
        arr = _host_data(data)  # a CUDA tensor's values are copied to the host
    elif isinstance(data, (np.ndarray, np.generic)):
        arr = np.asarray(data)
        if dtype is None and arr.dtype not in D.SUPPORTED:
            D.as_dtype(arr.dtype)  # raises a clear error for unsupported dtypes
    else:
        try:
            arr = np.array(data)
        except ValueError as e:
            raise ValueError(f"tensor: could not build a tensor from the data: {e}") from None
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise TypeError(f"tensor: could not infer a dtype for the data "
                            f"(got numpy dtype {arr.dtype}); pass numbers")
        if dtype is None:
            kind = arr.dtype.kind
            dtype = D.get_default_dtype() if kind == "f" else D.int64 if kind in "iu" else D.bool_
    if dtype is not None:
        return np.array(arr, dtype=D.as_dtype(dtype))
    return np.array(arr)


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new tensor holding a copy of ``data`` (lists, numbers, arrays, tensors).

    >>> tracejit.tensor([1, 2]).dtype, tracejit.tensor([1.0]).dtype
    (dtype('int64'), dtype('float32'))
    """
    if isinstance(data, Tensor) and (current_tracer() is not None or data.is_cuda):
        t = data.detach().clone() if dtype is None else data.detach().to(dtype, copy=True)
        if device is not None:
            t = t.to(device)
        return t.requires_grad_(True) if requires_grad else t
    if _cuda_array(data):
        return tensor(as_tensor(data), dtype, device, requires_grad)
    return _new(_to_array(data, dtype), device, requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """``data`` as a tensor: CUDA arrays (cupy, torch CUDA tensors, numba device arrays:
    anything with ``__cuda_array_interface__``) are shared without a copy; other data is
    copied as ``tensor`` does."""
    if isinstance(data, Tensor):
        return data.to(dtype=dtype, device=device)
    if _cuda_array(data):
        return _from_cuda_array(data, "as_tensor").to(dtype=dtype, device=device)
    return tensor(data, dtype, device)


def _cuda_array(obj) -> bool:
    # NOTE: numba's device arrays have copy_to_host; under the simulator that is all they have
    return not isinstance(obj, (Tensor, np.ndarray)) and (
        hasattr(obj, "__cuda_array_interface__") or hasattr(obj, "copy_to_host"))


def _from_cuda_array(obj, what) -> Tensor:
    """A CUDA tensor viewing ``obj``'s device memory (zero-copy; ``obj`` stays its owner)."""
    from . import cuda
    numba_cuda = cuda.require(what)
    arr = obj if hasattr(obj, "copy_to_host") else numba_cuda.as_cuda_array(obj)
    D.as_dtype(arr.dtype)
    dispatch.cuda_in_use = True
    cuda_eager = dispatch.cuda_backend
    return Tensor._make(cuda_eager.tensor_array(arr))


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with ``array`` (zero-copy)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects an np.ndarray, got {type(array).__name__}")
    D.as_dtype(array.dtype)
    return Tensor._make(array)


def from_dlpack(obj) -> Tensor:
    """A tensor sharing memory with any DLPack producer (numpy arrays, torch CPU tensors...)."""
    if isinstance(obj, Tensor):  # as torch.from_dlpack(t): shares t's memory, no gradient
        return obj.detach()  # (traced: the same value, never the tracing call's array)
    if _cuda_array(obj):  # cupy arrays, torch CUDA tensors: shared through the CUDA interface
        return _from_cuda_array(obj, "from_dlpack")
    return from_numpy(np.from_dlpack(obj))


def _new(arr: np.ndarray, device=None, requires_grad=False) -> Tensor:
    t = Tensor._make(arr)
    if current_tracer() is not None:  # made from Python data inside a traced function
        current_tracer().constant(t)
    if device is not None and _check_device(device).type == "cuda":
        # made on the host and copied: the values (random draws included) match the CPU's
        t = t.cuda()
    if requires_grad:
        t.requires_grad_(True)
    return t


def _factory(fill):
    def make(*size, dtype=None, device=None, requires_grad=False):
        return _new(fill(_shape_arg(size, fill.__name__), D.as_dtype(dtype)), device,
                    requires_grad)
    return make


zeros = _factory(np.zeros)
ones = _factory(np.ones)
empty = _factory(np.empty)


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    if isinstance(fill_value, Tensor) and fill_value.ndim == 0:
        fill_value = fill_value.item()
    if not isinstance(fill_value, (bool, int, float, np.number, np.bool_)):
        raise TypeError(f"full: fill_value must be a number, got {type(fill_value).__name__} "
                        f"{fill_value!r}{user_frame()}")
    if dtype is None:
        dtype = D.scalar_dtype(fill_value)
    size = _shape_arg(size if isinstance(size, (tuple, list)) else (size,), "full")
    return _new(np.full(size, fill_value, dtype=D.as_dtype(dtype)), device, requires_grad)


def _like(factory):
    def make(t, dtype=None, device=None, requires_grad=False):
        device = device if device is not None else _device_of(t)
        return factory(t.shape, dtype=dtype or t.dtype, device=device,
                       requires_grad=requires_grad)
    return make


zeros_like = _like(zeros)
ones_like = _like(ones)
empty_like = _like(empty)


def _device_of(t):
    """*_like factories follow their tensor's device, as torch's do (None: the CPU)."""
    return "cuda" if isinstance(t, Tensor) and t.is_cuda else None


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    device = device if device is not None else _device_of(t)
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device,
                requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None):
    return rand(t.shape, dtype=dtype or t.dtype, device=device or _device_of(t))


def randn_like(t, dtype=None, device=None):
    return randn(t.shape, dtype=dtype or t.dtype, device=device or _device_of(t))


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Values in [start, end) by step; integers give int64, any float gives float32."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError(f"arange: step must be nonzero{user_frame()}")
    if dtype is None:
        floats = any(isinstance(v, float) for v in (start, end, step))
        dtype = D.get_default_dtype() if floats else D.int64
    dtype = D.as_dtype(dtype)
    n = max(0, int(np.ceil((end - start) / step)))
    data = (start + step * np.arange(n, dtype=np.float64)).astype(dtype) if dtype.kind == "f" \
        else np.arange(start, end, step, dtype=dtype)
    return _new(data, device, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _new(np.linspace(start, end, int(steps)).astype(D.as_dtype(dtype)), device,
                requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _new(np.eye(n, m, dtype=D.as_dtype(dtype)), device, requires_grad)


class _Using:
    """Draw from ``generator`` (a tracejit.Generator) instead of the global one, eagerly."""

    def __init__(self, generator, who: str) -> None:
        self.rng = None
        if generator is not None:
            rng = getattr(generator, "numpy_generator", generator)  # a tracejit.Generator
            if not isinstance(rng, np.random.Generator):
                raise TypeError(f"{who}: generator must be a tracejit.Generator, got "
                                f"{type(generator).__name__}")
            if rng is not _GEN[0]:  # not tracejit.default_generator
                if current_tracer() is not None:
                    raise NotImplementedError(
                        f"{who}(generator=...) inside a traced function: a traced graph "
                        f"draws from tracejit's global generator; seed it with "
                        f"tracejit.manual_seed, or draw outside and pass the tensor in")
                self.rng = rng

    def __enter__(self):
        if self.rng is not None:
            self.saved, _GEN[0] = _GEN[0], self.rng

    def __exit__(self, *exc):
        if self.rng is not None:
            _GEN[0] = self.saved


def _random(op, size, dtype, device, requires_grad, generator=None, **params):
    dev = _check_device(device) if device is not None else None
    with _Using(generator, op.name):
        t = apply(op, shape=_shape_arg(size, op.name), dtype=D.as_dtype(dtype), **params)
    if dev is not None and dev.type == "cuda":  # drawn on the host: the CPU's numbers, copied
        t = t.cuda()
    return t.requires_grad_(True) if requires_grad else t


def rand(*size, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    """Uniform samples in [0, 1)."""
    return _random(ops.UNIFORM, size, dtype, device, requires_grad, generator)


def randn(*size, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    """Standard normal samples."""
    return _random(ops.NORMAL, size, dtype, device, requires_grad, generator)


def randint(low, high=None, size=(), dtype=None, device=None, generator=None) -> Tensor:
    """Integers in [low, high) (``randint(high, size)`` also works, as in torch)."""
    if high is None or isinstance(high, (tuple, list)):
        low, high, size = 0, low, high if high is not None else size
    dtype = D.int64 if dtype is None else dtype
    return _random(ops.RANDINT, (tuple(size),), dtype, device, False, generator, low=int(low),
                   high=int(high))


def randperm(n, dtype=None, device=None, generator=None) -> Tensor:
    if current_tracer() is not None:
        raise NotImplementedError("randperm inside a traced function is not supported; draw the "
                                  "permutation outside and pass it as an argument")
    dtype = D.int64 if dtype is None else D.as_dtype(dtype)
    with _Using(generator, "randperm"):
        return _new(_rng().permutation(n).astype(dtype), device)
