"""Tensor: a numpy array with torch's API. Every method is ``dispatch.apply`` of a primitive from
the op table or a short composition of other methods, so eager evaluation, autograd and tracing
all see the same primitives.

>>> x = tracejit.tensor([[1.0, 2.0], [3.0, 4.0]])
>>> (x @ x.T).softmax(-1).shape
(2, 2)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from . import autograd, dispatch, ops, return_types
from . import dtypes as D
from .autograd import grad_mode
from .dispatch import apply, current_tracer
from .errors import DTypeError, ShapeError, user_frame
from .ops import norm_dim, norm_dims

_PRINT_FIX = ("print outside the traced function (return the value), or, to debug, run it op "
              "by op: `with tracejit.eager(): f(...)`, tracejit.set_mode('eager') or "
              "TRACEJIT_DISABLE=1")

_NUMPY_ON_CUDA = ("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
                  "tensor to host memory first.")


def _device_copy(a):
    cuda_eager = dispatch.cuda_backend
    return cuda_eager.clone(a)


def device_mismatch(what, devices):
    cuda_eager = dispatch.cuda_backend
    return cuda_eager.device_error(what, devices, 1)




class device:
    """A device name, as ``torch.device``: ``tracejit.device("cpu")``."""

    __slots__ = ("type", "index")

    def __init__(self, spec="cpu", index=None):
        if isinstance(spec, device):
            spec, index = spec.type, spec.index
        kind, _, num = str(spec).partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {spec!r}; expected 'cpu' or 'cuda'{user_frame()}")
        self.type = kind
        self.index = int(num) if num else index

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device(type='{self.type}')" if self.index is None else \
            f"device(type='{self.type}', index={self.index})"

    def __eq__(self, other):
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


CPU = device("cpu")
CUDA0 = device("cuda", 0)


def parse_to_args(args, dtype=None, dev=None, with_device=False):
    """The dtype asked for by ``.to(...)`` arguments (a dtype, a tensor, a device name), and
    with ``with_device`` the device too (None: unchanged)."""
    for a in args:
        if isinstance(a, Tensor):
            dtype = a.dtype
            dev = a.device
        elif isinstance(a, device) or isinstance(a, str) and a.split(":")[0] in ("cpu", "cuda"):
            dev = a
        elif isinstance(a, str):
            try:
                dtype = D.as_dtype(a)
            except TypeError:
                raise TypeError(f"to: {a!r} is neither a device ('cpu', 'cuda', 'cuda:0') nor "
                                f"a dtype ({', '.join(n.name for n in D.SUPPORTED)})"
                                f"{user_frame()}") from None
        else:
            dtype = a
    if dev is not None:
        dev = _check_device(dev)
    return (dtype, dev) if with_device else dtype


def _check_device(dev, what="Tensor.cuda"):
    """The device ``dev`` names; for CUDA, tracejit's error when no GPU can run it (and only
    cuda:0 for now: one device per process)."""
    d = device(dev)
    if d.type == "cuda":
        from . import cuda
        cuda.require(what)
        if d.index not in (None, 0):
            raise NotImplementedError(f"device {d}: tracejit runs on one GPU, cuda:0, for now"
                                      f"{user_frame()}")
        return CUDA0
    return CPU


def _is_host(a) -> bool:
    return isinstance(a, np.ndarray)


def _to_copy_vjp(g, out, x, device):
    return (g.cpu() if _is_host(x._data) else g.cuda(),)


# A copy across devices on the autograd tape (torch's ToCopyBackward0): the gradient goes back
# to the source's device. Not an op-table row: it never reaches the tracer or a kernel.
_TO_COPY = ops.OpDef("_to_copy", ops.SHAPE, impl=None, infer=None, vjp=_to_copy_vjp)


def _to_device(t, dev):
    """``t`` on device ``dev`` (itself when it is there already), else a copy; differentiable,
    as torch's ``t.to(device)``."""
    if (dev.type == "cuda") == (not _is_host(t._data)):
        return t
    tracer = current_tracer()
    if tracer is not None:
        if dev.type == "cuda" and tracer.on_cuda and not t.requires_grad:
            # a graph runs on one device: in one on the GPU, a value made inside (a constant,
            # a draw) moved there is the same graph value (the runner puts constants there)
            out = Tensor._make(dispatch.cuda_backend.to_device(t._data))
            tracer.alias(out, t)
            return out
        raise NotImplementedError(f"moving a tensor to {dev} inside a traced function: a "
                                  f"traced graph runs on the device of its tensor arguments; "
                                  f"move the arguments before the call{user_frame(2)}")
    cuda_eager = dispatch.cuda_backend
    if dev.type == "cuda":
        data = cuda_eager.to_device(t._data)
        dispatch.cuda_in_use = True
    else:
        data = cuda_eager.to_host(t._data)
    out = Tensor._make(data)
    if t.requires_grad and grad_mode.enabled:
        out._grad_fn = autograd.TapeNode(_TO_COPY, (t,), {"device": str(dev)}, data,
                                         out._version)
        out.requires_grad = True
    return out


def _host_data(t) -> np.ndarray:
    """The values of ``t`` as a host array (a copy for CUDA tensors)."""
    if _is_host(t._data):
        return t._data
    cuda_eager = dispatch.cuda_backend
    return cuda_eager.to_host(t._data)


def _shape_arg(shape, what: str = "size") -> tuple:
    """Accept ``f(2, 3)`` and ``f((2, 3))`` as torch does."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    try:
        if any(isinstance(s, (str, bytes)) for s in shape):
            raise TypeError
        return tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        bad = [s for s in shape if not isinstance(s, (int, np.integer))][0]
        raise TypeError(f"{what}: sizes must be integers, got {bad!r} ({type(bad).__name__}) "
                        f"in {tuple(shape)!r}{user_frame()}") from None


def _wrap(x, like=None):
    """Python scalars stay scalars (weak types); everything else becomes a Tensor."""
    if isinstance(x, (Tensor, bool, int, float)):
        return x
    if isinstance(x, (np.number, np.bool_)):
        return x.item()
    from .creation import tensor
    return tensor(x)


def _req(x) -> bool:
    return isinstance(x, Tensor) and x.requires_grad


class Tensor:
    """An n-dimensional array with autograd, backed by a numpy array."""

    __slots__ = ("_data", "requires_grad", "_grad", "_grad_fn", "_version", "_base", "_hooks",
                 "__weakref__")
    __array_priority__ = 1000  # numpy defers to our operators (ndarray + Tensor -> Tensor)

    def __init__(self, data, dtype=None, requires_grad=False):
        from .creation import _to_array
        self._init(_to_array(data, dtype))
        if requires_grad:
            self.requires_grad_(True)

    def _init(self, arr):
        self._data = arr
        self.requires_grad = False
        self._grad = None
        self._grad_fn = None
        self._version = [0]
        self._base = None
        self._hooks = None

    @classmethod
    def _make(cls, arr: np.ndarray) -> "Tensor":
        t = object.__new__(cls)
        t._data = arr
        t.requires_grad = False
        t._grad = None
        t._grad_fn = None
        t._version = [0]
        t._base = None
        t._hooks = None
        return t

    # ------------------------------------------------------------------ metadata
    @property
    def grad(self):
        """The gradient accumulated by ``backward()`` (None until then)."""
        tracer = current_tracer()
        if tracer is not None:  # the graph depends on whether gradients exist (see tracing)
            tracer.grad_read = True
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad = value

    @property
    def shape(self) -> tuple:
        return self._data.shape

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def is_cuda(self) -> bool:
        return not _is_host(self._data)

    @property
    def __cuda_array_interface__(self) -> dict:
        """Zero-copy export of a CUDA tensor (cupy.asarray(t), torch.as_tensor(t, ...))."""
        if _is_host(self._data):
            raise AttributeError("__cuda_array_interface__: this tensor is on the CPU; move it "
                                 "with .cuda() first")
        return self._data.__cuda_array_interface__

    @property
    def device(self) -> device:
        return CPU if _is_host(self._data) else CUDA0

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    def size(self, dim: int | None = None):
        if dim is None:
            return self._data.shape
        return self._data.shape[norm_dim("size", dim, self.shape)]

    def numel(self) -> int:
        return self._data.size

    def element_size(self) -> int:
        return self._data.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self._data.size * self._data.dtype.itemsize

    def stride(self, dim: int | None = None):
        s = tuple(b // self._data.dtype.itemsize for b in self._data.strides)
        return s if dim is None else s[norm_dim("stride", dim, self.shape)]

    def is_contiguous(self) -> bool:
        if not _is_host(self._data):
            return dispatch.cuda_backend.is_contiguous(self._data)
        return self._data.flags.c_contiguous

    def is_floating_point(self) -> bool:
        return self._data.dtype.kind == "f"

    def data_ptr(self) -> int:
        if not _is_host(self._data):
            return self._data.__cuda_array_interface__["data"][0]
        return self._data.ctypes.data

    @property
    def is_leaf(self) -> bool:
        return self._grad_fn is None

    @property
    def grad_fn(self):
        return self._grad_fn

    @property
    def data(self) -> "Tensor":
        return self.detach()

    @data.setter
    def data(self, value: "Tensor"):
        self._data = value._data

    # ------------------------------------------------------------------ conversion
    def numpy(self, force: bool = False) -> np.ndarray:
        """The underlying array (no copy). Like torch, refuses tensors that require grad."""
        self._guard_data("t.numpy()")
        if not _is_host(self._data):
            raise TypeError(_NUMPY_ON_CUDA + user_frame())
        if self.requires_grad and not force:
            raise RuntimeError(f"Can't call numpy() on Tensor that requires grad (shape "
                               f"{tuple(self.shape)}). Use tensor.detach().numpy() instead."
                               f"{user_frame()}")
        return self._data

    def __array__(self, dtype=None, copy=None):
        self._guard_data("converting a tensor to a numpy array")
        if not _is_host(self._data):
            raise TypeError(_NUMPY_ON_CUDA + user_frame())
        if dtype is not None and dtype != self._data.dtype:
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def __dlpack__(self, *args, **kwargs):
        self._guard_data("exporting a tensor through DLPack (t.__dlpack__())")
        if not _is_host(self._data):
            raise NotImplementedError("__dlpack__ of a CUDA tensor: numba device arrays have no "
                                      "DLPack export; use __cuda_array_interface__ "
                                      "(cupy.asarray(t), torch.as_tensor(t, device='cuda'))")
        return self._data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        if not _is_host(self._data):
            return (2, 0)  # kDLCUDA, device 0
        return self._data.__dlpack_device__()

    def _guard_data(self, what, fix=None):
        """Inside a traced function, reading a traced tensor's values is untraceable."""
        tracer = current_tracer()
        if tracer is not None:
            tracer.check_data_access(self, what, fix)

    def item(self):
        self._guard_data("t.item()")
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to "
                               f"a Python scalar (item() needs exactly one){user_frame()}")
        return _host_data(self).item()  # a CUDA tensor: a copy to the host (and a wait)

    def tolist(self):
        self._guard_data("t.tolist()")
        return _host_data(self).tolist()

    def __float__(self):
        self._guard_data("float(t)")
        return float(self.item())

    def __int__(self):
        self._guard_data("int(t)")
        return int(self.item())

    def __index__(self):
        self._guard_data("using a tensor as an index (t.__index__)")
        if self.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors of a single element can be converted to an "
                            f"index (got {self.dtype}, shape {tuple(self.shape)}){user_frame()}")
        return int(self.item())

    def __bool__(self):
        self._guard_data("bool(t) (an `if`/`while`/`and`/`or` on a tensor)")
        if self._data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with more than one value is ambiguous "
                               f"(shape {tuple(self.shape)}){user_frame()}")
        return bool(_host_data(self).item())

    def __len__(self):
        if self.ndim == 0:
            raise TypeError(f"len() of a 0-d tensor{user_frame()}")
        return self._data.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError(f"iteration over a 0-d tensor{user_frame()}")
        return (self[i] for i in range(self._data.shape[0]))

    __hash__ = object.__hash__

    def __format__(self, spec):
        self._guard_data("formatting a tensor (f\"{t}\", format(t), print(t))", _PRINT_FIX)
        if self.ndim == 0 and spec:
            return format(self.item(), spec)
        return format(repr(self), spec)

    def __repr__(self):
        self._guard_data("printing a tensor (print(t), str(t), repr(t))", _PRINT_FIX)
        from .printing import tensor_repr
        if not _is_host(self._data):  # torch: the values (copied to the host) and the device
            host = Tensor._make(_host_data(self))
            host._grad_fn, host.requires_grad = self._grad_fn, self.requires_grad
            return tensor_repr(host, device=self.device)
        return tensor_repr(self)

    # NOTE: copy.copy and copy.deepcopy are traced (an alias of the same value, a clone); with
    # the default protocol the copy would be a new object the tracer never saw, so the graph
    # would reuse the tracing call's copy, values and all, on every later call
    def __copy__(self):
        import copy
        new = copy._reconstruct(self, None, *object.__reduce_ex__(self, 4))
        tracer = current_tracer()
        if tracer is not None:
            tracer.alias(new, self)  # the same array and version counter: the same value
        return new

    def __deepcopy__(self, memo):
        tracer = current_tracer()
        if tracer is None:
            import copy
            return copy._reconstruct(self, memo, *object.__reduce_ex__(self, 4))
        new = self.detach().clone()  # torch: a deep copy is a new leaf, cut from the graph
        if self.requires_grad and self.is_leaf:
            new.requires_grad_(True)
        memo[id(self)] = new
        return new

    def __reduce_ex__(self, protocol):
        self._guard_data("pickling a tensor", "pickle or save tensors outside the traced "
                         "function (or run it eagerly: tracejit.eager() / TRACEJIT_DISABLE=1)")
        return object.__reduce_ex__(self, protocol)

    # ------------------------------------------------------------------ autograd
    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if self._grad_fn is not None:
            raise RuntimeError(f"you can only change requires_grad flags of leaf variables (this "
                               f"tensor of shape {tuple(self.shape)} was computed by "
                               f"{self._grad_fn.name()}); use .detach(){user_frame()}")
        if requires_grad and self.dtype.kind != "f":
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients "
                               f"(got {self.dtype}, shape {tuple(self.shape)}){user_frame()}")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self) -> "Tensor":
        """A tensor sharing this one's data, cut from the autograd graph."""
        if current_tracer() is not None:
            return apply(ops.DETACH, self)
        t = Tensor._make(self._data)
        t._version = self._version
        return t

    def detach_(self) -> "Tensor":
        self._grad_fn = None
        self.requires_grad = False
        return self

    def retain_grad(self) -> None:
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self._grad_fn is not None:
            autograd.register_retain(self)

    def register_hook(self, hook):
        """``hook(grad)`` runs when this tensor's gradient is computed; it may return a new one."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._grad_fn is not None:
            self._grad_fn.hooks = (self._grad_fn.hooks or []) + [hook]
        else:
            self._hooks = (self._hooks or []) + [hook]
        return hook

    def register_post_accumulate_grad_hook(self, hook):
        """``hook(tensor)`` runs after a backward pass has accumulated this leaf's ``.grad``
        (as torch; DistributedDataParallel starts a gradient bucket's exchange from it)."""
        return autograd.register_post_accumulate_grad_hook(self, hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into each leaf's ``.grad``."""
        if inputs is not None:
            grads = autograd.grad(self, inputs, gradient, retain_graph, create_graph,
                                  allow_unused=True)
            for t, g in zip(inputs, grads):
                if g is not None:
                    autograd._store_grad(t, g, create_graph)
            return
        autograd.run_backward([self], [gradient], None, retain_graph, create_graph)

    # ------------------------------------------------------------------ dtype / device
    def to(self, *args, dtype=None, device=None, copy=False) -> "Tensor":
        """A tensor of this dtype on this device: ``t.to("cuda")``, ``t.to(tj.float64)``."""
        dtype, dev = parse_to_args(args, dtype, device, with_device=True)
        t = self
        if dev is not None:
            moved = _to_device(self, dev)
            copy = copy and moved is self
            t = moved
        if dtype is None:
            return t.clone() if copy else t
        dtype = D.as_dtype(dtype)
        if dtype == t.dtype and not copy:
            return t
        return apply(ops.CAST, t, dtype=dtype)

    def type(self, dtype=None):
        if dtype is None:
            return f"tracejit.{self.dtype.name}"
        return self.to(dtype)

    def type_as(self, other: "Tensor") -> "Tensor":
        return self.to(other.dtype)

    def float(self):
        return self.to(D.float32)

    def double(self):
        return self.to(D.float64)

    def int(self):
        return self.to(D.int32)

    def long(self):
        return self.to(D.int64)

    def bool(self):
        return self.to(D.bool_)

    def cpu(self):
        """This tensor on the host (itself when it is there)."""
        return _to_device(self, CPU)

    def cuda(self, device=None, non_blocking=False):
        """This tensor on the GPU: ``CudaUnavailableError`` without one."""
        return _to_device(self, _check_device("cuda" if device is None else device))

    def clone(self) -> "Tensor":
        return apply(ops.COPY, self)

    def contiguous(self) -> "Tensor":
        return self if self.is_contiguous() else apply(ops.COPY, self)

    # ------------------------------------------------------------------ arithmetic operators
    def __add__(self, o):
        return apply(ops.ADD, self, _wrap(o))

    def __radd__(self, o):
        return apply(ops.ADD, _wrap(o), self)

    def __sub__(self, o):
        return apply(ops.SUB, self, _wrap(o))

    def __rsub__(self, o):
        return apply(ops.SUB, _wrap(o), self)

    def __mul__(self, o):
        return apply(ops.MUL, self, _wrap(o))

    def __rmul__(self, o):
        return apply(ops.MUL, _wrap(o), self)

    def __truediv__(self, o):
        return apply(ops.DIV, self, _wrap(o))

    def __rtruediv__(self, o):
        return apply(ops.DIV, _wrap(o), self)

    def __floordiv__(self, o):
        return apply(ops.FLOORDIV, self, _wrap(o))

    def __rfloordiv__(self, o):
        return apply(ops.FLOORDIV, _wrap(o), self)

    def __mod__(self, o):
        return apply(ops.REMAINDER, self, _wrap(o))

    def __rmod__(self, o):
        return apply(ops.REMAINDER, _wrap(o), self)

    def __pow__(self, o):
        return apply(ops.POW, self, _wrap(o))

    def __rpow__(self, o):
        return apply(ops.POW, _wrap(o), self)

    def __matmul__(self, o):
        return matmul(self, o)

    def __rmatmul__(self, o):
        return matmul(o, self)

    def __neg__(self):
        return apply(ops.NEG, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return apply(ops.ABS, self)

    def __eq__(self, o):
        return apply(ops.EQ, self, _wrap(o))

    def __ne__(self, o):
        return apply(ops.NE, self, _wrap(o))

    def __lt__(self, o):
        return apply(ops.LT, self, _wrap(o))

    def __le__(self, o):
        return apply(ops.LE, self, _wrap(o))

    def __gt__(self, o):
        return apply(ops.GT, self, _wrap(o))

    def __ge__(self, o):
        return apply(ops.GE, self, _wrap(o))

    def _logical(self, op, o, sym):
        o = _wrap(o)
        for x in (self, o):
            if D.scalar_dtype(x) if not isinstance(x, Tensor) else x.dtype != D.bool_:
                if isinstance(x, Tensor) or not isinstance(x, bool):
                    raise NotImplementedError(
                        f"{sym} on {x.dtype if isinstance(x, Tensor) else type(x).__name__} "
                        f"operands (shapes {tuple(self.shape)} and {tuple(getattr(o, 'shape', ()))}"
                        f"): tracejit's {sym} is logical (bool tensors only); bitwise "
                        f"integer ops are not supported. Use tracejit.logical_and/or/xor on "
                        f"bool tensors.{user_frame()}")
        return apply(op, self, o)

    def __and__(self, o):
        return self._logical(ops.LOGICAL_AND, o, "&")

    __rand__ = __and__

    def __or__(self, o):
        return self._logical(ops.LOGICAL_OR, o, "|")

    __ror__ = __or__

    def __xor__(self, o):
        return self._logical(ops.LOGICAL_XOR, o, "^")

    __rxor__ = __xor__

    def __invert__(self):
        if self.dtype != D.bool_:
            raise NotImplementedError(f"~ on a {self.dtype} tensor of shape {tuple(self.shape)}: "
                                      f"only bool tensors (logical not) are supported"
                                      f"{user_frame()}")
        return apply(ops.LOGICAL_NOT, self)

    # in-place operators are torch's in-place ops
    def __iadd__(self, o):
        return self.add_(o)

    def __isub__(self, o):
        return self.sub_(o)

    def __imul__(self, o):
        return self.mul_(o)

    def __itruediv__(self, o):
        return self.div_(o)

    # ------------------------------------------------------------------ named elementwise
    def add(self, other, alpha=1):
        return self + (other if alpha == 1 else _wrap(other) * alpha)

    def sub(self, other, alpha=1):
        return self - (other if alpha == 1 else _wrap(other) * alpha)

    def mul(self, other):
        return self * other

    def div(self, other, rounding_mode=None):
        if rounding_mode is None:
            return self / other
        if rounding_mode == "floor":
            return self // other
        if rounding_mode == "trunc":
            if self.is_floating_point() or _is_float(other):
                return (self / other).trunc()
            # integers: exact (a float32 quotient loses digits), and // raises on zero, as torch
            q = self // other
            return where((q < 0) & (q * other != self), q + 1, q)
        raise ValueError(f"div: rounding_mode must be None, 'floor' or 'trunc', got "
                         f"{rounding_mode!r}{user_frame()}")

    def trunc(self):
        return where(self < 0, self.ceil(), self.floor())

    def pow(self, e):
        return self ** e

    def remainder(self, o):
        return self % o

    def neg(self):
        return apply(ops.NEG, self)

    def abs(self):
        return apply(ops.ABS, self)

    def exp(self):
        return apply(ops.EXP, self)

    def log(self):
        return apply(ops.LOG, self)

    def log1p(self):
        return apply(ops.LOG1P, self)

    def expm1(self):
        return apply(ops.EXPM1, self)

    def sqrt(self):
        return apply(ops.SQRT, self)

    def rsqrt(self):
        return apply(ops.RSQRT, self)

    def sin(self):
        return apply(ops.SIN, self)

    def cos(self):
        return apply(ops.COS, self)

    def tan(self):
        return apply(ops.TAN, self)

    def sinh(self):
        return apply(ops.SINH, self)

    def cosh(self):
        return apply(ops.COSH, self)

    def asin(self):
        return apply(ops.ASIN, self)

    def acos(self):
        return apply(ops.ACOS, self)

    def atan(self):
        return apply(ops.ATAN, self)

    def asinh(self):
        return apply(ops.ASINH, self)

    def acosh(self):
        return apply(ops.ACOSH, self)

    def atanh(self):
        return apply(ops.ATANH, self)

    arcsin, arccos, arctan, arcsinh, arccosh, arctanh = asin, acos, atan, asinh, acosh, atanh

    def atan2(self, other):
        """The angle of the point ``(other, self)``: ``atan2(y, x)`` as in C and torch."""
        return apply(ops.ATAN2, self, _wrap(other))

    arctan2 = atan2

    def fmod(self, other):
        """C's ``fmod``: the remainder of truncated division, with the dividend's sign
        (``remainder``/``%`` takes the divisor's)."""
        return apply(ops.FMOD, self, _wrap(other))

    def tanh(self):
        return apply(ops.TANH, self)

    def sigmoid(self):
        return apply(ops.SIGMOID, self)

    def erf(self):
        return apply(ops.ERF, self)

    def relu(self):
        return apply(ops.RELU, self)

    def sign(self):
        return apply(ops.SIGN, self)

    def floor(self):
        return apply(ops.FLOOR, self)

    def ceil(self):
        return apply(ops.CEIL, self)

    def round(self):
        return apply(ops.ROUND, self)

    def square(self):
        return self * self

    def reciprocal(self):
        return 1 / self

    def log2(self):
        return self.log() / math.log(2)

    def log10(self):
        return self.log() / math.log(10)

    def exp2(self):
        return (self * math.log(2)).exp()

    def gelu(self, approximate: str = "none"):
        if approximate == "tanh":
            inner = (self + 0.044715 * self * self * self) * math.sqrt(2 / math.pi)
            return 0.5 * self * (1 + inner.tanh())
        if approximate == "none":
            return 0.5 * self * (1 + (self * (1 / math.sqrt(2))).erf())
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}"
                         f"{user_frame()}")

    def silu(self):
        return self * self.sigmoid()

    def softplus(self, beta=1.0, threshold=20.0):
        bx = self * beta if beta != 1 else self
        # maximum (not relu) so the gradient at 0 is sigmoid(0) = 0.5: its tie splits 0.5/0.5
        stable = maximum(bx, 0.0) + (-bx.abs()).exp().log1p()
        if beta != 1:
            stable = stable / beta
        return where(bx > threshold, self, stable)

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError(f"clamp: at least one of min and max must be given{user_frame()}")
        if isinstance(min, Tensor) or isinstance(max, Tensor):
            # where, not maximum/minimum: torch's gradient is 1 on the (inclusive) boundary
            r = self
            if min is not None:
                r = where(r < min, min, r)
            if max is not None:
                r = where(r > max, max, r)
            return r
        return apply(ops.CLAMP, self, min=min, max=max)

    clip = clamp

    def clamp_min(self, min):
        return self.clamp(min=min)

    def clamp_max(self, max):
        return self.clamp(max=max)

    def maximum(self, other):
        return maximum(self, other)

    def minimum(self, other):
        return minimum(self, other)

    def where(self, condition, other):
        return where(condition, self, other)

    def masked_fill(self, mask, value):
        r = where(mask, value, self)
        return r if r.dtype == self.dtype else r.to(self.dtype)  # torch keeps self's dtype

    def lerp(self, end, weight):
        return self + weight * (end - self)

    def addcmul(self, tensor1, tensor2, value=1):
        """``self + value * tensor1 * tensor2`` (torch's evaluation order)."""
        t1 = _wrap(tensor1)
        return self + (t1 if _is_one(value) else t1 * value) * _wrap(tensor2)

    def addcdiv(self, tensor1, tensor2, value=1):
        """``self + value * tensor1 / tensor2`` (torch's evaluation order)."""
        t1 = _wrap(tensor1)
        return self + (t1 if _is_one(value) else t1 * value) / _wrap(tensor2)

    def eq(self, o):
        return self == o

    def ne(self, o):
        return self != o

    def lt(self, o):
        return self < o

    def le(self, o):
        return self <= o

    def gt(self, o):
        return self > o

    def ge(self, o):
        return self >= o

    def logical_not(self):
        return apply(ops.LOGICAL_NOT, self)

    def logical_and(self, o):
        return apply(ops.LOGICAL_AND, self, _wrap(o))

    def logical_or(self, o):
        return apply(ops.LOGICAL_OR, self, _wrap(o))

    def logical_xor(self, o):
        return apply(ops.LOGICAL_XOR, self, _wrap(o))

    def isnan(self):
        return apply(ops.ISNAN, self)

    def isfinite(self):
        return apply(ops.ISFINITE, self)

    def isinf(self):
        return ~(self.isfinite() | self.isnan())

    # ------------------------------------------------------------------ reductions
    def sum(self, dim=None, keepdim=False, dtype=None):
        r = apply(ops.SUM, self, dims=norm_dims("sum", dim, self.shape), keepdim=keepdim)
        return r if dtype is None else r.to(dtype)

    def mean(self, dim=None, keepdim=False, dtype=None):
        x = self if dtype is None else self.to(dtype)
        if x.dtype.kind != "f":
            raise DTypeError(
                f"mean(): could not infer output dtype. Input dtype must be a floating point "
                f"dtype, got {x.dtype} (use .float() first or pass dtype=){user_frame()}")
        dims = norm_dims("mean", dim, x.shape)
        n = math.prod(x.shape[d] for d in dims)
        # keepdim, divide, then drop the dims: the division fuses into the reduction's kernel
        return _drop_dims(apply(ops.SUM, x, dims=dims, keepdim=True) / n, dims, keepdim)

    def prod(self, dim=None, keepdim=False, dtype=None):
        r = apply(ops.PROD, self, dims=norm_dims("prod", dim, self.shape), keepdim=keepdim)
        return r if dtype is None else r.to(dtype)

    def amax(self, dim=(), keepdim=False):
        dims = norm_dims("amax", None if dim == () else dim, self.shape)
        return apply(ops.AMAX, self, dims=dims, keepdim=keepdim)

    def amin(self, dim=(), keepdim=False):
        dims = norm_dims("amin", None if dim == () else dim, self.shape)
        return apply(ops.AMIN, self, dims=dims, keepdim=keepdim)

    def _extreme(self, dim, keepdim, argfn, fullfn, name):
        if dim is None:
            return fullfn()
        if isinstance(dim, Tensor):  # torch.max(a, b) is maximum
            return maximum(self, dim) if name == "max" else minimum(self, dim)
        indices = argfn(dim, keepdim=True)
        values = self.gather(norm_dim(name, dim, self.shape) if self.ndim else 0, indices) \
            if self.ndim else self.clone()
        if not keepdim and self.ndim:
            values, indices = values.squeeze(dim), indices.squeeze(dim)
        return getattr(return_types, name)(values, indices)

    def max(self, dim=None, keepdim=False):
        return self._extreme(dim, keepdim, self.argmax, self.amax, "max")

    def min(self, dim=None, keepdim=False):
        return self._extreme(dim, keepdim, self.argmin, self.amin, "min")

    def argmax(self, dim=None, keepdim=False):
        if dim is not None:
            dim = norm_dim("argmax", dim, self.shape) if self.ndim else None
        return apply(ops.ARGMAX, self, dim=dim, keepdim=keepdim)

    def argmin(self, dim=None, keepdim=False):
        if dim is not None:
            dim = norm_dim("argmin", dim, self.shape) if self.ndim else None
        return apply(ops.ARGMIN, self, dim=dim, keepdim=keepdim)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        if unbiased is not None and correction is not None:
            raise ValueError("var: pass either unbiased or correction, not both")
        if correction is None:
            correction = 1 if unbiased is None or unbiased else 0
        dims = norm_dims("var", dim, self.shape)
        n = math.prod(self.shape[d] for d in dims)
        d = self - self.mean(dims, keepdim=True)
        return _drop_dims((d * d).sum(dims, keepdim=True) / max(n - correction, 0), dims,
                          keepdim)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return self.var(dim, unbiased, keepdim, correction=correction).sqrt()

    def logsumexp(self, dim, keepdim=False):
        dims = norm_dims("logsumexp", dim, self.shape)
        if self.numel() == 0:  # no max to shift by (amax would raise); log(0) = -inf, as torch
            r = self.exp().sum(dims, keepdim=True).log()
            return r if keepdim else r.squeeze(dims)
        m = self.amax(dims, keepdim=True).detach()
        m = where(m.isfinite(), m, 0.0)
        r = (self - m).exp().sum(dims, keepdim=True).log() + m
        return r if keepdim else r.squeeze(dims)

    def softmax(self, dim):
        shift = self.amax(dim, keepdim=True).detach() if self.numel() else 0.0  # empty: no max
        e = (self - shift).exp()
        return e / e.sum(dim, keepdim=True)

    def log_softmax(self, dim):
        """``x - max - log(sum(exp(x - max)))`` over ``dim``, as torch computes it: a row holding
        +inf is all nan (``x - logsumexp(x)`` would give -inf beside a nan), and so is a row of
        -inf; a finite row is the same either way."""
        x = self if D.is_floating(self.dtype) else self.to(D.get_default_dtype())  # as exp
        shift = x.amax(dim, keepdim=True).detach() if x.numel() else 0.0  # empty: no max
        shifted = x - shift
        return shifted - shifted.exp().sum(dim, keepdim=True).log()

    def cumsum(self, dim):
        return apply(ops.CUMSUM, self, dim=norm_dim("cumsum", dim, self.shape) if self.ndim else 0)

    def all(self, dim=None, keepdim=False):
        return self.bool().logical_not().sum(dim, keepdim) == 0

    def any(self, dim=None, keepdim=False):
        return self.bool().sum(dim, keepdim) > 0

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        """torch.norm: see ``tracejit.linalg`` (the zero subgradient at 0, as torch)."""
        from .linalg import tensor_norm
        return tensor_norm(self, p, dim, keepdim, dtype)

    def sum_to_shape(self, shape) -> "Tensor":
        """Sum broadcast dimensions away so the result has ``shape`` (undoes broadcasting)."""
        shape = tuple(shape)
        if self.shape == shape:
            return self
        lead = self.ndim - len(shape)
        dims = tuple(range(lead)) + tuple(
            lead + i for i, n in enumerate(shape) if n == 1 and self.shape[lead + i] != 1)
        r = self.sum(dims, keepdim=True) if dims else self
        return r.reshape(shape) if r.shape != shape else r

    # ------------------------------------------------------------------ shape
    def reshape(self, *shape) -> "Tensor":
        shape = _infer_size(_shape_arg(shape, "reshape"), self.numel(), self.shape)
        if shape == self.shape:
            return self if self._grad_fn is None and not self.requires_grad else \
                apply(ops.RESHAPE, self, shape=shape)
        return apply(ops.RESHAPE, self, shape=shape)

    def view(self, *shape) -> "Tensor":
        if len(shape) == 1 and not isinstance(shape[0], (int, tuple, list)):
            return self.to(shape[0])
        return self.reshape(*shape)

    def view_as(self, other):
        return self.reshape(other.shape)

    reshape_as = view_as

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = norm_dim("flatten", start_dim, self.shape), norm_dim("flatten", end_dim, self.shape)
        if s > e:
            raise ValueError(f"flatten: start_dim cannot come after end_dim ({s} > {e}, shape "
                             f"{tuple(self.shape)}){user_frame()}")
        shape = self.shape[:s] + (math.prod(self.shape[s:e + 1]),) + self.shape[e + 1:]
        return self.reshape(shape)

    def unflatten(self, dim, sizes):
        d = norm_dim("unflatten", dim, self.shape)
        sizes = _infer_size(tuple(sizes), self.shape[d], self.shape)
        return self.reshape(self.shape[:d] + sizes + self.shape[d + 1:])

    def squeeze(self, dim=None):
        if dim is None:
            dims = tuple(i for i, n in enumerate(self.shape) if n == 1)
        else:
            dims = norm_dims("squeeze", dim, self.shape)
        shape = tuple(n for i, n in enumerate(self.shape) if not (i in dims and n == 1))
        return self.reshape(shape) if shape != self.shape else self

    def unsqueeze(self, dim):
        d = norm_dim("unsqueeze", dim, self.ndim + 1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def permute(self, *dims):
        perm = tuple(norm_dim("permute", d, self.shape) for d in _shape_arg(dims, "permute"))
        if len(perm) != self.ndim or sorted(perm) != list(range(self.ndim)):
            raise ShapeError(f"permute: {perm} is not a permutation of the dims of a tensor of "
                             f"shape {tuple(self.shape)}{user_frame()}")
        if perm == tuple(range(self.ndim)):
            return self
        return apply(ops.PERMUTE, self, perm=perm)

    def transpose(self, dim0, dim1):
        if self.ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
            return self
        a, b = norm_dim("transpose", dim0, self.shape), norm_dim("transpose", dim1, self.shape)
        perm = list(range(self.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return self.permute(perm)

    swapaxes = transpose

    def t(self):
        if self.ndim > 2:
            raise ShapeError(f"t() expects a tensor with <= 2 dimensions, got {self.ndim} (shape "
                             f"{tuple(self.shape)}){user_frame()}")
        return self.transpose(0, -1) if self.ndim == 2 else self

    @property
    def T(self):
        return self.permute(tuple(range(self.ndim - 1, -1, -1)))

    @property
    def mT(self):
        if self.ndim < 2:
            raise ShapeError(f"mT needs at least 2 dims, got shape {tuple(self.shape)}"
                             f"{user_frame()}")
        return self.transpose(-2, -1)

    def expand(self, *sizes):
        sizes = _shape_arg(sizes, "expand")
        lead = len(sizes) - self.ndim
        if lead < 0:
            raise ShapeError(f"expand: the number of sizes provided ({len(sizes)}) must be at "
                             f"least the number of dims ({self.ndim}){user_frame()}")
        shape = tuple(self.shape[i - lead] if s == -1 and i >= lead else s
                      for i, s in enumerate(sizes))
        if shape == self.shape:
            return self
        return apply(ops.EXPAND, self, shape=shape)

    def expand_as(self, other):
        return self.expand(other.shape)

    broadcast_to = expand

    def repeat(self, *sizes):
        sizes = _shape_arg(sizes, "repeat")
        if len(sizes) < self.ndim:
            raise ShapeError(f"repeat: number of repeat dims ({len(sizes)}) can not be smaller "
                             f"than the number of dims of the tensor ({self.ndim}){user_frame()}")
        x = self.reshape((1,) * (len(sizes) - self.ndim) + self.shape)
        inter = []
        for r, n in zip(sizes, x.shape):
            inter += [r, n]
        y = x.reshape(tuple(v for n in x.shape for v in (1, n))).expand(inter)
        r = y.reshape(tuple(r * n for r, n in zip(sizes, x.shape)))
        # torch's repeat always copies; numpy's reshape may still give a view (or a stride-0
        # broadcast view) of self here, e.g. for repeat(1, 1) or a size-1 dim repeated
        return r.clone() if r._base is not None else r

    def split(self, split_size_or_sections, dim=0):
        d = norm_dim("split", dim, self.shape)
        n = self.shape[d]
        if isinstance(split_size_or_sections, int):
            step = split_size_or_sections
            if step <= 0:
                raise ValueError(f"split: split_size must be positive, got {step}")
            sizes = [min(step, n - s) for s in range(0, n, step)] or [0]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ShapeError(f"split: sections {sizes} do not add up to the size {n} of "
                                 f"dimension {d}{user_frame()}")
        out, start = [], 0
        for s in sizes:
            out.append(self[(slice(None),) * d + (slice(start, start + s),)])
            start += s
        return tuple(out)

    def chunk(self, chunks, dim=0):
        n = self.shape[norm_dim("chunk", dim, self.shape)]
        return self.split(max(1, -(-n // chunks)), dim)

    def unbind(self, dim=0):
        d = norm_dim("unbind", dim, self.shape)
        return tuple(self[(slice(None),) * d + (i,)] for i in range(self.shape[d]))

    def flip(self, dims):
        dims = norm_dims("flip", dims, self.shape)
        return self[tuple(slice(None, None, -1) if i in dims else slice(None)
                          for i in range(self.ndim))]

    # ------------------------------------------------------------------ indexing
    def __getitem__(self, key):
        spec, idx = _parse_index("getitem", key, self.shape)
        if spec == ((), None):
            if self.requires_grad or current_tracer() is not None:
                return apply(ops.RESHAPE, self, shape=self.shape)
            return _alias(self)
        return apply(ops.GETITEM, self, *idx, spec=spec)

    def __setitem__(self, key, value):
        spec, idx = _parse_index("setitem", key, self.shape)
        value = _wrap(value)
        if isinstance(value, Tensor) and value.is_cuda != self.is_cuda:
            value = value.to(self.device)  # as copy_, setitem crosses devices
        elif not isinstance(value, Tensor) and self.is_cuda:
            # NOTE: a 0-d device value: the CUDA renderer's host round trip for index_put passes
            # a scalar operand where its fallback expects arrays only
            from .creation import full
            value = full((), value, dtype=self.dtype, device="cuda")
        if isinstance(value, Tensor) and value.ndim and value.shape[0] == 1:
            # torch drops the value's leading size-1 dims: x[0] = tensor([1.5]) works
            lead = next((i for i, n in enumerate(value.shape) if n != 1), value.ndim)
            value = value.reshape(value.shape[lead:])
        if current_tracer() is None and _is_host(self._data) and not (grad_mode.enabled and (
                self.requires_grad or _req(value))):
            basic, adv = spec
            v = value._data if isinstance(value, Tensor) else value
            try:
                if adv is None:
                    self._data[ops._basic(basic)] = v
                else:
                    self._data[ops._basic(basic)][ops._adv(adv, [i._data for i in idx])] = v
            except (IndexError, ValueError, TypeError) as e:  # name the op, shapes and line
                raise ops.op_error(ops.INDEX_PUT, [self._data, v] + [i._data for i in idx],
                                   dict(spec=spec, accumulate=False), e) from e
            self._version[0] += 1
            return
        self._inplace(ops.INDEX_PUT, value, *idx, spec=spec, accumulate=False)

    def index_select(self, dim, index):
        index = _wrap(index)
        if index.ndim > 1:
            raise ShapeError(f"index_select: index must be 0-d or 1-d, got shape "
                             f"{tuple(index.shape)}{user_frame()}")
        if index.dtype.kind not in "iu":  # t[idx] would take a bool mask; torch refuses it here
            raise DTypeError(f"index_select: index must be an integer tensor (int64 or int32), "
                             f"got {index.dtype}{user_frame()}")
        d = norm_dim("index_select", dim, self.shape)
        n = self.shape[d] if self.ndim else 1
        if current_tracer() is None and index.numel() and not index.is_cuda and not (
                0 <= index._data.min() <= index._data.max() < n):  # no negative wrap, as torch
            bad = index._data.min() if index._data.min() < 0 else index._data.max()
            raise IndexError(f"index_select: index {bad} is out of range for dimension {d} "
                             f"with size {n}{user_frame()}")
        return self[(slice(None),) * d + (index.reshape(-1),)]

    def gather(self, dim, index):
        return apply(ops.GATHER, self, _wrap(index), dim=norm_dim("gather", dim, self.shape))

    def scatter_add(self, dim, index, src):
        return apply(ops.SCATTER_ADD, self, _wrap(index), _wrap(src),
                     dim=norm_dim("scatter_add", dim, self.shape))

    def index_put(self, indices, values, accumulate=False):
        spec, idx = _parse_index("index_put", tuple(indices), self.shape)
        return apply(ops.INDEX_PUT, self, _wrap(values), *idx, spec=spec, accumulate=accumulate)

    def pad(self, pad, value=0.0):
        pad = tuple(int(p) for p in pad)
        if any(p < 0 for p in pad):
            raise NotImplementedError(f"pad: negative padding {tuple(pad)} (cropping) is not "
                                      f"supported; slice the tensor instead{user_frame()}")
        return apply(ops.PAD, self, pad=pad, value=value)

    def matmul(self, other):
        return matmul(self, other)

    def mm(self, other):
        return matmul(self, other)

    def dot(self, other):
        return matmul(self, other)

    # ------------------------------------------------------------------ in-place
    def _check_inplace(self, name):
        if self._grad_fn is None and self.requires_grad:
            raise RuntimeError(
                f"a leaf Variable that requires grad is being used in an in-place operation "
                f"({name}_ on a tensor of shape {tuple(self.shape)}); do it under "
                f"tracejit.no_grad() or use the out-of-place {name}{user_frame(2)}")
        if self._base is not None:
            raise NotImplementedError(
                f"{name}_ on a view (of a tensor of shape {tuple(self._base.shape)}) while "
                f"recording gradients: in-place ops on views are not tracked by tracejit's "
                f"autograd; apply it to the base tensor, call .clone() first, or use the "
                f"out-of-place {name}{user_frame(2)}")

    def _snapshot(self, name, grad):
        """The tensor an in-place op reads: ``self``, or, while recording gradients, a copy of
        the old value carrying the old ``grad_fn`` (the op's vjp may need it)."""
        if not grad:
            return self
        self._check_inplace(name)
        src = Tensor._make(self._data.copy() if _is_host(self._data) else _device_copy(self._data))
        src._grad_fn, src.requires_grad = self._grad_fn, self.requires_grad
        if current_tracer() is not None:
            current_tracer().alias(src, self)
        return src

    def _inplace(self, op, *args, **attrs):
        """Run ``op(self, *args)`` and write the result into ``self`` (torch's in-place rules)."""
        grad = grad_mode.enabled and op.vjp is not None and (
            self.requires_grad or any(_req(a) for a in args))
        src = self._snapshot(op.name, grad)
        return self._assign(apply(op, src, *args, **attrs), op.name, grad)

    def _assign(self, res, name, grad):
        if res.shape != self.shape:
            raise ShapeError(f"{name}_: output with shape {tuple(self.shape)} doesn't match the "
                             f"broadcast shape {tuple(res.shape)}{user_frame(2)}")
        if res.dtype != self.dtype and D.category(res.dtype) > D.category(self.dtype):
            raise DTypeError(f"{name}_: result type {res.dtype} can't be cast to the desired "
                             f"output type {self.dtype}{user_frame(2)}")
        if _is_host(self._data):
            if not self._data.flags.writeable:
                raise RuntimeError(f"{name}_: this tensor is a broadcast (expanded) view and "
                                   f"cannot be written in place; call .clone() first"
                                   f"{user_frame(2)}")
        elif _is_host(res._data):
            raise device_mismatch(f"{name}_", [str(self.device), "cpu"])
        elif any(s == 0 for s in self._data.strides) and self.numel() > 1:
            raise RuntimeError(f"{name}_: this tensor is a broadcast (expanded) view and cannot be "
                               f"written in place; call .clone() first{user_frame(2)}")
        if res.dtype != self.dtype:  # float64 into float32: a cast the graph records too
            res = res.to(self.dtype)
        if _is_host(self._data):
            np.copyto(self._data, res._data)
        else:  # a device copy into this tensor's memory
            dispatch.cuda_backend.copy_into(res._data, self._data)
        self._version[0] += 1
        if current_tracer() is not None:
            current_tracer().assign(self, res)
        if grad:
            # the old value is gone: so is its history (a copy of a constant has no gradient)
            self._grad_fn, self.requires_grad = res._grad_fn, res.requires_grad
        return self

    def add_(self, other, alpha=1):
        other = _wrap(other)
        if alpha != 1:
            other = other * alpha
        return self._inplace(ops.ADD, other)

    def sub_(self, other, alpha=1):
        other = _wrap(other)
        if alpha != 1:
            other = other * alpha
        return self._inplace(ops.SUB, other)

    def mul_(self, other):
        return self._inplace(ops.MUL, _wrap(other))

    def div_(self, other):
        return self._inplace(ops.DIV, _wrap(other))

    def pow_(self, other):
        return self._inplace(ops.POW, _wrap(other))

    def clamp_(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError(f"clamp_: at least one of min and max must be given{user_frame()}")
        return self._inplace(ops.CLAMP, min=min, max=max)

    def copy_(self, src):
        src = _wrap(src)
        grad = grad_mode.enabled and (self.requires_grad or _req(src))
        if grad:
            self._check_inplace("copy")
        if not isinstance(src, Tensor):
            from .creation import tensor
            src = tensor(src, dtype=self.dtype)
        if src.is_cuda != self.is_cuda:  # copy_ crosses devices, as torch's does
            src = src.to(self.device)
        if src.ndim > self.ndim:
            raise ShapeError(f"copy_: source of shape {tuple(src.shape)} cannot be broadcast to "
                             f"{tuple(self.shape)}{user_frame()}")
        res = src.to(self.dtype).expand(self.shape) if src.shape != self.shape else \
            src.to(self.dtype)
        if res is src:
            # x.copy_(x) is a no-op in value, but the tracer must see a value distinct from
            # the tensor being overwritten (its old version)
            res = src.clone() if grad or src is self else src
        return self._assign(res, "copy", grad)

    def fill_(self, value):
        if isinstance(value, Tensor):
            return self.copy_(value.expand(self.shape))
        grad = grad_mode.enabled and self.requires_grad
        if grad or current_tracer() is not None:
            # NOTE: not ``x * 0 + value``: inf * 0 is nan. where() also gives a zero gradient.
            from .creation import tensor
            res = where(tensor(True), value, self._snapshot("fill", grad))
            return self._assign(res.to(self.dtype), "fill", grad)
        if not _is_host(self._data):  # a full of the value on the device, then a copy
            from .creation import full
            return self._assign(full(self.shape, value, dtype=self.dtype, device="cuda"),
                                "fill", False)
        self._data.fill(value)
        self._version[0] += 1
        return self

    def zero_(self):
        return self.fill_(0)

    def masked_fill_(self, mask, value):
        grad = grad_mode.enabled and (self.requires_grad or _req(value))
        return self._assign(self._snapshot("masked_fill", grad).masked_fill(mask, value),
                            "masked_fill", grad)

    def addcmul_(self, tensor1, tensor2, value=1):
        grad = grad_mode.enabled and (self.requires_grad or _req(tensor1) or _req(tensor2))
        return self._assign(self._snapshot("addcmul", grad).addcmul(tensor1, tensor2, value),
                            "addcmul", grad)

    def addcdiv_(self, tensor1, tensor2, value=1):
        grad = grad_mode.enabled and (self.requires_grad or _req(tensor1) or _req(tensor2))
        return self._assign(self._snapshot("addcdiv", grad).addcdiv(tensor1, tensor2, value),
                            "addcdiv", grad)

    def uniform_(self, a=0.0, b=1.0):
        """Fill with uniform samples from [a, b) (tracejit's generator)."""
        from .creation import rand
        if autograd.is_grad_enabled():
            self._check_inplace("uniform")
        with autograd.no_grad():
            return self.copy_(rand(self.shape, dtype=self.dtype) * (b - a) + a)

    def normal_(self, mean=0.0, std=1.0):
        """Fill with normal samples of the given mean and standard deviation."""
        from .creation import randn
        if autograd.is_grad_enabled():
            self._check_inplace("normal")
        with autograd.no_grad():
            return self.copy_(randn(self.shape, dtype=self.dtype) * std + mean)

    def _new_device(self):  # new_* factories follow this tensor's device, as torch's do
        return "cuda" if self.is_cuda else None

    def new_tensor(self, data, dtype=None):
        from .creation import tensor
        return tensor(data, dtype=dtype or self.dtype, device=self._new_device())

    def new_zeros(self, *size, dtype=None):
        from .creation import zeros
        return zeros(*size, dtype=dtype or self.dtype, device=self._new_device())

    def new_ones(self, *size, dtype=None):
        from .creation import ones
        return ones(*size, dtype=dtype or self.dtype, device=self._new_device())

    def new_full(self, size, fill_value, dtype=None):
        from .creation import full
        return full(size, fill_value, dtype=dtype or self.dtype, device=self._new_device())

    def new_empty(self, *size, dtype=None):
        from .creation import empty
        return empty(*size, dtype=dtype or self.dtype, device=self._new_device())


def _make_unary_inplace(name):
    def method(self):
        return self._inplace(getattr(ops, name.upper()))
    method.__name__ = name + "_"
    method.__doc__ = f"In-place {name}."
    return method


for _name in ("neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos",
              "tan", "sinh", "cosh", "tanh", "sigmoid", "relu", "sign", "floor", "ceil", "round"):
    setattr(Tensor, _name + "_", _make_unary_inplace(_name))


for _name in ("asin", "acos", "atan", "asinh", "acosh", "atanh"):
    setattr(Tensor, _name + "_", _make_unary_inplace(_name))


def _binary_inplace(name):
    def method(self, other):
        return self._inplace(getattr(ops, name.upper()), _wrap(other))
    method.__name__ = name + "_"
    method.__doc__ = f"In-place {name}."
    return method


for _name in ("atan2", "fmod"):
    setattr(Tensor, _name + "_", _binary_inplace(_name))


def _is_one(value) -> bool:
    """Is ``value`` the Python number 1? (a tensor may be 1 too, but comparing it is a tensor op)"""
    return not isinstance(value, Tensor) and value == 1


def _drop_dims(t, dims, keepdim):
    """A keepdim reduction's result with the reduced dims removed unless ``keepdim``."""
    if keepdim or not dims:
        return t
    return t.reshape(tuple(n for i, n in enumerate(t.shape) if i not in dims))


def _is_float(x):
    return isinstance(x, float) or (isinstance(x, Tensor) and x.dtype.kind == "f")


def _alias(t):
    r = Tensor._make(t._data)
    r._version = t._version
    r._base = t._base if t._base is not None else t
    return r


def _infer_size(shape: tuple, numel: int, orig: tuple) -> tuple:
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: only one dimension can be inferred (-1), got {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or numel % known:
            raise ShapeError(f"reshape: shape {shape} is invalid for input of shape {tuple(orig)} "
                             f"({numel} elements){user_frame()}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    if math.prod(shape) != numel or any(s < 0 for s in shape):
        raise ShapeError(f"reshape: shape {shape} is invalid for input of shape {tuple(orig)} "
                         f"({numel} elements){user_frame()}")
    return shape


def _parse_index(name: str, key, shape: Sequence[int]):
    """Turn a Python index into (spec, index tensors); see ops.GETITEM for the spec."""
    if not isinstance(key, tuple):
        key = (key,)
    items = []
    for k in key:
        if isinstance(k, (list, np.ndarray)):
            from .creation import tensor
            k = tensor(k) if not (isinstance(k, list) and not k) else \
                tensor(np.zeros(0, dtype=np.int64))
        if isinstance(k, Tensor):
            if k.dtype == D.bool_:
                if current_tracer() is not None:
                    current_tracer().data_dependent("boolean-mask indexing")
                if k.ndim == 0:
                    raise NotImplementedError(f"{name}: indexing with a 0-d bool tensor is not "
                                              f"supported; use tracejit.where")
                items.extend(("T", Tensor._make(a)) for a in np.nonzero(_host_data(k)))
            elif k.dtype.kind in "iu":
                items.append(("T", k))
            else:
                raise DTypeError(f"{name}: tensors used as indices must be long, int or bool "
                                 f"tensors, got {k.dtype}{user_frame(2)}")
        elif k is None or k is Ellipsis:
            items.append(k)
        elif isinstance(k, slice):
            items.append(("S", tuple(None if v is None else int(v)
                                     for v in (k.start, k.stop, k.step))))
        elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            items.append(int(k))
        else:
            raise TypeError(f"{name}: unsupported index {k!r} of type {type(k).__name__}")
    n_real = sum(1 for k in items if k is not None and k is not Ellipsis)
    if n_real > len(shape):
        raise IndexError(f"{name}: too many indices for a tensor of dimension {len(shape)} "
                         f"(got {n_real}){user_frame(2)}")
    if sum(1 for k in items if k is Ellipsis) > 1:
        raise IndexError(f"{name}: an index can only have a single ellipsis ('...')")
    basic, adv, tensors = [], [], []
    for k in items:
        if k is None:
            basic.append(None)
            adv.append(None)
        elif k is Ellipsis:
            basic.append(Ellipsis)
            adv.extend([None] * (len(shape) - n_real))
        elif isinstance(k, int):
            basic.append(k)
        elif k[0] == "S":
            if k[1][2] is not None and k[1][2] == 0:
                raise ValueError(f"{name}: slice step cannot be zero")
            basic.append(k[1])
            adv.append(None)
        else:
            basic.append((None, None, None))
            adv.append(len(tensors))
            tensors.append(k[1])
    if not tensors:
        return (tuple(basic), None), ()
    while adv and adv[-1] is None:
        adv.pop()
    return (tuple(basic), tuple(adv)), tuple(tensors)


# ---------------------------------------------------------------------- functions on tensors

def _t(x) -> Tensor:
    if isinstance(x, Tensor):
        return x
    from .creation import tensor
    return tensor(x)


def matmul(a, b) -> Tensor:
    """Matrix product with numpy/torch semantics (1-d operands, broadcast batch dims)."""
    a, b = _t(a), _t(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: both arguments need at least 1 dimension, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}{user_frame()}")
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != inner_b:
        raise ShapeError(f"matmul: inner dimensions do not match: {tuple(a.shape)} @ "
                         f"{tuple(b.shape)} ({a.shape[-1]} != {inner_b}){user_frame()}")
    if a.ndim == 1 and b.ndim == 1:
        return apply(ops.MATMUL, a.reshape(1, -1), b.reshape(-1, 1)).reshape(())
    if a.ndim == 1:
        return apply(ops.MATMUL, a.unsqueeze(0), b).squeeze(-2)
    if b.ndim == 1:
        return apply(ops.MATMUL, a, b.unsqueeze(1)).squeeze(-1)
    return apply(ops.MATMUL, a, b)


def where(condition, x, y) -> Tensor:
    """``x`` where ``condition`` holds, else ``y`` (broadcast; scalars allowed)."""
    return apply(ops.WHERE, _t(condition), _wrap(x), _wrap(y))


def maximum(a, b) -> Tensor:
    return apply(ops.MAXIMUM, _wrap(a), _wrap(b))


def minimum(a, b) -> Tensor:
    return apply(ops.MINIMUM, _wrap(a), _wrap(b))


def zeros(shape, dtype=None, device=None) -> Tensor:
    from .creation import zeros as make
    return make(shape, dtype=dtype, device=device)


def cat(tensors, dim=0) -> Tensor:
    tensors = [_t(t) for t in tensors]
    if not tensors:
        raise ValueError(f"cat: expected a non-empty list of tensors{user_frame()}")
    # torch skips 1-d empty tensors in cat (legacy behaviour users rely on), but they still
    # take part in dtype promotion: cat([tensor([]), tensor([1, 2])]) is float32
    dtype = D.result_type(*((t.dtype, 2) for t in tensors))
    nonempty = [t.to(dtype) for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or \
        [tensors[0].to(dtype)]
    ref = nonempty[0]
    if ref.ndim == 0:
        raise ShapeError("cat: zero-dimensional tensors cannot be concatenated; use stack")
    if len(nonempty) == 1:
        norm_dim("cat", dim, ref.shape)
        return ref.clone()
    for t in nonempty[1:]:
        if t.ndim != ref.ndim:
            raise ShapeError(f"cat: tensors must have the same number of dimensions: got "
                             f"{', '.join(str(tuple(t.shape)) for t in nonempty)}{user_frame()}")
    return apply(ops.CAT, *nonempty, dim=norm_dim("cat", dim, ref.shape))


def stack(tensors, dim=0) -> Tensor:
    tensors = [_t(t) for t in tensors]
    if not tensors:
        raise ValueError(f"stack: expected a non-empty list of tensors{user_frame()}")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ShapeError(f"stack: expects each tensor to be equal size, got "
                         f"{', '.join(str(tuple(t.shape)) for t in tensors)}{user_frame()}")
    d = norm_dim("stack", dim, tensors[0].ndim + 1)
    return apply(ops.CAT, *(t.unsqueeze(d) for t in tensors), dim=d)



# numpy's axis= / keepdims= wherever dim= / keepdim= are taken, as torch accepts them
from ._aliases import add_aliases as _add_aliases  # noqa: E402
from ._aliases import add_method_aliases as _add_method_aliases  # noqa: E402

_add_method_aliases(Tensor)
_add_aliases(globals(), ("cat", "stack"))

# a torch Tensor attribute tracejit lacks raises an AttributeError naming the alternative
# (reached only when normal lookup fails; tracejit/_torch_names.py)
from ._torch_names import tensor_getattr as _tensor_getattr  # noqa: E402

Tensor.__getattr__ = _tensor_getattr
