"""Host or device arrays: the few operations the executor, write-backs and the compiled backward
need on both (installed as ``tracejit.runtime.arrays``).

A traced function's graph runs on the device its tensors live on: numpy arrays on the CPU,
numba-cuda device arrays on the GPU (``runtime/cuda_runner.py``). Everything here takes
either and keeps results on the same side; CUDA is imported only when a device array is seen.
"""

from __future__ import annotations

import numpy as np

__all__ = ["on_device", "host", "like", "copy", "copy_into", "contiguous", "zeros",
           "host_runner"]


def on_device(a) -> bool:
    """True for a CUDA device array (numba's, the simulator's, or any with
    ``__cuda_array_interface__``)."""
    return not isinstance(a, np.ndarray) and (
        hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__"))


def _rt():
    from . import cuda_runner
    return cuda_runner


def host(a):
    """``a`` as a host value: device arrays are copied, anything else returned as is."""
    return _rt().to_host(a) if on_device(a) else a


def like(a, device: bool):
    """Host array ``a`` moved to the device when ``device`` (results of a host fallback)."""
    if device and isinstance(a, np.ndarray):
        return _rt().tensor_array(_rt().as_device(a))
    return a


def copy(a):
    """A private copy of ``a``, on its side."""
    return _rt().tensor_array(_rt().contiguous(a)) if on_device(a) else np.array(a)


def contiguous(a):
    """``a`` itself when C-contiguous, else a C-contiguous copy (a 0-d array stays 0-d)."""
    if on_device(a):
        return a if _rt()._contiguous(a) else _rt().tensor_array(_rt().contiguous(a))
    return a if a.flags.c_contiguous else a.copy()


def zeros(shape, dtype, device: bool):
    z = np.zeros(shape, dtype)
    return like(z, True) if device else z


def copy_into(dst, src) -> None:
    """``dst[...] = src`` as ``np.copyto(dst, src, casting="unsafe")`` does, on either side
    (a device destination takes host or device sources of any broadcastable shape)."""
    if type(dst) is np.ndarray and type(src) is np.ndarray or not on_device(dst):
        np.copyto(dst, host(src), casting="unsafe")
        return
    rt = _rt()
    if not on_device(src) or tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
        value = np.broadcast_to(np.asarray(host(src)).astype(dst.dtype, copy=False), dst.shape)
        src = rt.as_device(value)
    rt.copy_into(src, dst)


def host_runner(runner, device: bool):
    """``runner`` (a callable on host arrays: the interpreter) for arrays on the device when
    ``device``: inputs are copied to the host and results back (a slow path, used where no
    kernel exists: ``backend="interpret"``, or a graph that failed to compile)."""
    if not device:
        return runner

    def run(*arrays):
        return tuple(like(r, True) for r in runner(*[host(a) for a in arrays]))
    return run
