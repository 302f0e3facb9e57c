"""Eager ops on CUDA tensors: each op runs a small generated kernel, made from the same op-table
row the CPU uses, through the CUDA renderer (installed as ``tracejit.runtime.cuda_eager``).

``dispatch.eager`` sends an op here (``dispatch.cuda_backend``) when one of its inputs lives on
the device. ``tracejit.cuda_ops.build_runner`` (registered here when tracejit is imported: the
runtime imports no passes or codegen) makes the op a one-node graph at the inputs' types, runs
``passes.COMPILE_PIPELINE`` and ``codegen.lower(graph, target="cuda")``, and
``cuda_runner.compile_cuda`` compiles it. Runners are
cached per (op, attributes, input types, scalar operands): a training loop pays for lowering
once per op and signature, then one cache look-up and the launches per call. The generated
module takes sizes as arguments, so every shape of one op and dtype signature shares one
module (``runtime.compile.load_module`` keys modules by source); only the launch list is
per shape.

Also here: host <-> device copies for ``Tensor.to``, device copies for in-place ops, and the
error for an op mixing devices (torch's wording).

>>> x = tracejit.ones(3).cuda()                    # doctest: +SKIP
>>> (x + 1).cpu()
tensor([2., 2., 2.])
"""

from __future__ import annotations

import threading

import numpy as np

import tracejit.cuda as tj_cuda
from tracejit import dispatch
from tracejit.errors import user_frame
from tracejit.ir import freeze_attrs

from . import cuda_runner as rt

__all__ = ["eager", "tensor_array", "to_device", "to_host", "copy_into", "is_device_array",
           "device_error", "cache_info"]

# (op name, attrs, input signature) -> CudaRunner. NOTE: bounded, because scalar operands are
# part of the key (they are literals in the kernel): a loop over changing Python floats would
# otherwise grow it forever. Dropping everything at the bound keeps the code simple; the
# modules stay loaded, so a re-made runner costs a lowering, not a compile.
_RUNNERS: dict = {}
_MAX_RUNNERS = 4096
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def is_device_array(a) -> bool:
    """True for a numba device array (or anything else with ``__cuda_array_interface__``; the
    simulator's FakeCUDAArray has ``copy_to_host`` only)."""
    return not isinstance(a, np.ndarray) and rt._is_device(a)


tensor_array = rt.tensor_array  # ``a`` as a CUDA tensor stores it


def to_device(arr: np.ndarray, what: str = "Tensor.cuda"):
    """A device copy of host array ``arr`` (C order), from the runner's caching allocator."""
    tj_cuda.require(what)
    arr = rt._c_order(arr)
    out = rt.allocator.empty(arr.shape, arr.dtype)
    if arr.size:
        out.copy_to_device(arr)
    return rt.tensor_array(out)


def to_host(a) -> np.ndarray:
    """A host copy of device array ``a`` (any strides)."""
    return rt.to_host(a)


def copy_into(src, dst) -> None:
    """``dst[...] = src`` on the device; ``src`` has ``dst``'s shape and dtype."""
    rt.copy_into(src, dst)


def clone(a):
    return rt.tensor_array(rt.contiguous(a))


def _extent(a) -> tuple:
    """(lowest, highest) byte address ``a`` may touch."""
    cai = a.__cuda_array_interface__
    start = cai["data"][0]
    lo = hi = start
    itemsize = np.dtype(cai["typestr"]).itemsize
    strides = cai.get("strides") or rt._c_strides(cai["shape"], itemsize)
    for n, s in zip(cai["shape"], strides):
        if n == 0:
            return start, start
        if s > 0:
            hi += (n - 1) * s
        else:
            lo += (n - 1) * s
    return lo, hi + itemsize


def shares_memory(a, b) -> bool:
    """Whether device arrays ``a`` and ``b`` may overlap (for view tracking)."""
    if tj_cuda.is_simulator():  # FakeCUDAArray: a numpy array inside
        return np.may_share_memory(a._ary, b._ary)
    (lo1, hi1), (lo2, hi2) = _extent(a), _extent(b)
    return lo1 < hi2 and lo2 < hi1


def device_error(op_name: str, devices: list, index: int) -> RuntimeError:
    """torch's message for an op whose tensors are on different devices."""
    a, b = devices[0], next(d for d in devices if d != devices[0])
    return RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                        f"devices, {a} and {b}! (when checking argument {index} of {op_name}; "
                        f"move them with .to(device), .cuda() or .cpu()){user_frame(3)}")


_INDEX_FROM = {"getitem": 1, "index_put": 2}  # where each op's index tensors start


def _operands(op, inputs) -> list:
    """Device arrays and scalars for ``inputs``; 0-d CPU tensors and CPU index tensors move to
    the device (torch lets them join CUDA ops); anything else on the CPU is an error naming both
    devices."""
    from tracejit.tensor import Tensor
    args = []
    for k, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            args.append(x)
            continue
        a = x._data
        if is_device_array(a):
            args.append(a)
        elif a.ndim == 0 or (k >= _INDEX_FROM.get(op.name, len(inputs)) and a.dtype.kind in "iub"):
            # CPU scalars, and CPU index tensors of getitem/index_put (x[[0, 2]]), as torch
            args.append(to_device(a, op.name))
        else:
            devices = [str(t.device) for t in inputs if isinstance(t, Tensor)]
            raise device_error(op.name, devices, k)
    return args


def _scalar_key(x):
    # NOTE: repr, not the value: -0.0 == 0.0 and nan != nan, but both change a kernel's result
    return (type(x).__name__, repr(x))


def _signature(args) -> tuple:
    return tuple((tuple(a.shape), a.dtype.str) if is_device_array(a) else _scalar_key(a)
                 for a in args)


def is_contiguous(a) -> bool:
    return rt._contiguous(a)


def build_runner(op, args, attrs):
    """A runner for ``op`` at these operands (device arrays and scalars): set by
    tracejit.cuda_ops, which lowers a one-node graph (the runtime imports no codegen)."""
    raise NotImplementedError("tracejit.cuda_ops registers the eager CUDA kernel builder")


def _runner(op, args, attrs):
    try:
        key = (op.name, freeze_attrs(attrs), _signature(args))
        hash(key)
    except TypeError:  # an unhashable attribute: build without caching
        return build_runner(op, args, attrs)
    runner = _RUNNERS.get(key)
    if runner is not None:
        _stats["hits"] += 1
        return runner
    runner = build_runner(op, args, attrs)
    with _lock:
        if len(_RUNNERS) >= _MAX_RUNNERS:
            _RUNNERS.clear()
        _RUNNERS[key] = runner
        _stats["misses"] += 1
    return runner


def compute(op, inputs, attrs):
    """``op`` on the device: the device array of its result."""
    if op.impure:  # random draws: a host round trip would draw in another order than the CPU
        raise NotImplementedError(
            f"{op.name} on CUDA tensors: random draws have no CUDA kernel yet; draw on the CPU "
            f"and move the result (tracejit.rand(..., device='cuda') does){user_frame(3)}")
    args = _operands(op, inputs)
    device_args = [a for a in args if is_device_array(a)]
    res, = _runner(op, args, attrs)(*device_args)
    return res


def eager(op, inputs, attrs):
    """``dispatch.eager`` for ops with a CUDA input: the result Tensor, on the tape as on CPU."""
    res = compute(op, inputs, attrs)
    return dispatch.result(op, inputs, attrs, res, op.view and shares_memory(res, inputs[0]._data))


def cache_info() -> dict:
    """How many eager CUDA runners exist, and cache hits and misses so far."""
    return {"runners": len(_RUNNERS), **_stats}
