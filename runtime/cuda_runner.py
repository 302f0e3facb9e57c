"""Run a CUDA Program (``codegen.lower(graph, target="cuda")``): load its module, configure its
launch list once, and call it on device arrays.

``compile_cuda(program)`` loads the module through ``runtime.compile.load_module`` (the file
in tracejit's cache directory, imported once per process), copies the constants to the device
once and calls the module's ``build(sz, consts, fallbacks)``, which makes every launcher
(``kernel[grid, block]``) for the specialization's sizes. The returned ``CudaRunner`` takes
device arrays (numba ``DeviceNDArray``, or anything with ``__cuda_array_interface__``: cupy,
torch) or host numpy arrays (copied in), and returns device arrays, or host arrays with
``to_host=True``.

Also here: what generated entries call (``rt.*``: device views, the caching allocator, the
error flags, host round trips, the matmul launcher) and ``DeviceAllocator``, a caching
allocator for device memory with free lists by size, like ``runtime/memory.py``'s.

NOTE: numba-cuda kernels are ``@cuda.jit(cache=True)``: numba-cuda keeps their machine code in
the ``__pycache__`` beside the module file, with its own index (not tracejit's verified
cache, which covers the CPU dispatchers: CUDADispatcher is not a numba CPU Dispatcher). Under
the simulator nothing is compiled or cached.
"""

from __future__ import annotations

import builtins
import math
import threading
import weakref

import numpy as np

import tracejit.cuda as tj_cuda

from .compile import load_module

__all__ = ["compile_cuda", "CudaRunner", "DeviceAllocator", "allocator", "HAVE_CUPY"]


def _cuda():
    from numba import cuda
    return cuda


def _simulated() -> bool:
    return tj_cuda.is_simulator()


try:  # cuBLAS through cupy, when it is installed (checked once: importing cupy is slow)
    import importlib.util as _ilu
    HAVE_CUPY = _ilu.find_spec("cupy") is not None
except (ImportError, ValueError):  # pragma: no cover
    HAVE_CUPY = False


# ---------------------------------------------------------------------------- memory


class DeviceAllocator:
    """``empty(shape, dtype)`` on the device from recycled blocks of the same byte size. A
    block returns to its free list when the last array viewing it dies: every handed-out
    array's memory is owned by a fresh token object, which numba's views (slices, reshapes
    and the views below) keep as their owner."""

    def __init__(self, limit_bytes: int = 4 << 30):
        self.limit = limit_bytes
        self._free: dict = {}
        self._lock = threading.Lock()
        self.cached_bytes = 0
        self.hits = 0
        self.misses = 0

    def empty(self, shape, dtype):
        cuda = _cuda()
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        if _simulated():
            return cuda.device_array(shape, dtype)
        nbytes = max(math.prod(shape) * dtype.itemsize, 1)
        with self._lock:
            blocks = self._free.get(nbytes)
            raw = blocks.pop() if blocks else None
            if raw is not None:
                self.cached_bytes -= nbytes
                self.hits += 1
            else:
                self.misses += 1
        if raw is None:
            raw = cuda.device_array(nbytes, np.uint8)
        return _on_block(raw, nbytes, shape, dtype, self._release)

    def _release(self, raw, nbytes) -> None:
        with self._lock:
            if self.cached_bytes + nbytes > self.limit:
                return
            self._free.setdefault(nbytes, []).append(raw)
            self.cached_bytes += nbytes

    def empty_cache(self) -> None:
        with self._lock:
            self._free.clear()
            self.cached_bytes = 0


class _Token:
    """Owner of one hand-out of a block (see DeviceAllocator)."""

    __slots__ = ("raw", "__weakref__")

    def __init__(self, raw):
        self.raw = raw


# (shape, dtype) -> the attributes numba's DeviceNDArray.__init__ computes for a C-contiguous
# array (its dummy array, strides, sizes): a new array copies them instead of computing them
_LAYOUTS: dict = {}


def _on_block(raw, nbytes, shape, dtype, release):
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    from numba.cuda.cudadrv.driver import MemoryPointer
    token = _Token(raw)
    ptr = MemoryPointer(raw.gpu_data.context, raw.gpu_data.device_pointer, nbytes, owner=token)
    # NOTE: not a __del__ on the token: in cyclic garbage (autograd graphs) the gc runs weakref
    # callbacks first, so numba would free ``raw``'s memory before __del__ put it back in the
    # free list; the finalizer's registry keeps ``raw`` out of the garbage
    weakref.finalize(token, release, raw, nbytes)
    key = (shape, dtype)
    layout = _LAYOUTS.get(key)
    if layout is None:
        a = DeviceNDArray(shape, _c_strides(shape, dtype.itemsize), dtype, gpu_data=ptr)
        layout = {k: v for k, v in vars(a).items() if k != "gpu_data"}
        if len(_LAYOUTS) < 4096:
            _LAYOUTS[key] = layout
        return a
    a = DeviceNDArray.__new__(DeviceNDArray)
    a.__dict__.update(layout)
    a.gpu_data = ptr
    return a


def _c_strides(shape, itemsize: int) -> tuple:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


allocator = DeviceAllocator()


def empty(shape, dtype):
    return allocator.empty(shape, dtype)


def work_buffers(buffers) -> list:
    """The reused intermediates of a Program: one device block per storage slot, a view of it
    per ``work`` buffer (``None`` where an ``out`` buffer comes from the allocator per call)."""
    cuda = _cuda()
    sizes: dict = {}
    for b in buffers:
        if b.kind == "work":
            nbytes = int(np.prod(b.shape, dtype=np.int64)) * b.dtype.itemsize
            sizes[b.slot] = max(sizes.get(b.slot, 0), nbytes)
    raw = {slot: cuda.device_array(max(n, 1), np.uint8) for slot, n in sizes.items()}
    out = []
    for b in buffers:
        if b.kind != "work":
            out.append(None)
            continue
        nbytes = int(np.prod(b.shape, dtype=np.int64)) * b.dtype.itemsize
        out.append(_view_bytes(raw[b.slot], nbytes, b.shape, b.dtype))
    return out


def _view_bytes(raw, nbytes, shape, dtype):
    if _simulated():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(raw._ary[:nbytes].view(dtype).reshape(shape))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    return DeviceNDArray(tuple(shape), _c_strides(shape, np.dtype(dtype).itemsize), dtype,
                         gpu_data=raw.gpu_data)


_SimArray = None


def tensor_array(a):
    """``a`` as a CUDA tensor stores it. NOTE: under the simulator a FakeCUDAArray's shape is a
    FakeShape, a tuple that refuses negative indices (``x.shape[-1]`` raises, where a real
    DeviceNDArray's shape is a plain tuple): tensors hold a subclass whose shape is a tuple,
    so Python code (nn layers) runs under the simulator as on a GPU."""
    global _SimArray
    if not _simulated() or not _is_device(a):
        return a
    if _SimArray is None:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        class _SimArray(FakeCUDAArray):
            @property
            def shape(self):
                return self._ary.shape

            @property
            def __cuda_array_interface__(self):  # the host memory standing in for the device's
                ai = self._ary.__array_interface__
                return {"shape": ai["shape"], "typestr": ai["typestr"], "data": ai["data"],
                        "strides": ai["strides"], "version": 3, "stream": None}
    return a if type(a) is _SimArray else _SimArray(a._ary)


# ---------------------------------------------------------------------------- views


def _strided(x, shape, strides):
    """A view of device array ``x`` with these shape and byte strides (same first element)."""
    if _simulated():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(np.lib.stride_tricks.as_strided(x._ary, shape, strides))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    return DeviceNDArray(tuple(shape), tuple(strides), x.dtype, gpu_data=x.gpu_data)


def permute(x, perm):
    return _strided(x, [x.shape[p] for p in perm], [x.strides[p] for p in perm])


def pad(x, k: int):
    """``x`` with ``k`` size-1 dims in front, a view for any strides (a rank-generic kernel's
    operand, codegen/kernel.py ``padded``)."""
    return _strided(x, (1,) * k + tuple(x.shape), (0,) * k + tuple(x.strides))


def expand(x, shape):
    lead = len(shape) - len(x.shape)
    strides = [0] * lead + [0 if n == 1 and m != 1 else s
                            for n, m, s in zip(x.shape, shape[lead:], x.strides)]
    return _strided(x, shape, strides)


def _contiguous(x) -> bool:
    if _simulated():
        return x._ary.flags.c_contiguous
    return x.is_c_contiguous()


def reshape(x, shape):
    """A view when ``x`` is C-contiguous, else a contiguous copy, reshaped."""
    if not _contiguous(x):
        x = contiguous(x)
    return _strided(x, shape, _c_strides(shape, x.dtype.itemsize))


_copy_kernels: dict = {}


def _copy_kernel(ndim: int):
    """A grid-stride copy ``out[idx] = x[idx]`` for any strides, one per rank."""
    k = _copy_kernels.get(ndim)
    if k is None:
        cuda = _cuda()
        names = [f"i{d}" for d in range(ndim)]
        split = ["        r_ = e"] + [f"        {names[d]} = r_ % out.shape[{d}]\n"
                                       f"        r_ //= out.shape[{d}]"
                                       for d in reversed(range(1, ndim))] + \
            [f"        {names[0]} = r_"] if ndim else []
        at = ", ".join(names) or "()"
        src = ("def copy(x, out, n):\n"
               "    for e in range(cuda.grid(1), n, cuda.gridsize(1)):\n" + "\n".join(split) +
               f"\n        out[{at}] = x[{at}]\n")
        namespace = {"cuda": cuda}
        exec(compile(src, f"<tracejit strided copy, rank {ndim}>", "exec"), namespace)
        k = _copy_kernels[ndim] = cuda.jit(namespace["copy"])
    return k


_copy_launchers: dict = {}  # (rank, blocks) -> a launcher of the copy kernel (on a GPU)


def copy_into(x, out) -> None:
    from .cuda_launch import THREADS, grid
    n = math.prod(out.shape)
    if not n:
        return
    kernel = _copy_kernel(len(out.shape))
    if _simulated():  # NOTE: a simulated kernel[...] configures the kernel itself: no cache
        kernel[grid(n), THREADS](x, out, n)
        return
    key = (len(out.shape), grid(n))
    launch = _copy_launchers.get(key)
    if launch is None:
        from .cuda_launcher import Launcher
        launch = Launcher(kernel, (key[1], THREADS))
        if len(_copy_launchers) < 1024:
            _copy_launchers[key] = launch
    launch(x, out, n)


def contiguous(x):
    out = empty(x.shape, x.dtype)
    copy_into(x, out)
    return out


def copy(x):
    return contiguous(x)


# ---------------------------------------------------------------------------- errors, host


def flags(n: int):
    return _cuda().to_device(np.zeros(n, np.int64))


def clear(f) -> None:
    f.copy_to_device(np.zeros(f.shape, np.int64))


def raise_flagged(f, errors) -> None:
    """Raise the first error whose slot a kernel counted (waits for the launches)."""
    counts = f.copy_to_host()
    for count, (exc, message) in zip(counts, errors):
        if count:
            raise getattr(builtins, exc)(message)


def to_host(x):
    if not _contiguous(x):
        x = contiguous(x)
    return x.copy_to_host()


def on_host(fn, *args) -> tuple:
    """HOST ROUND TRIP: copy device arguments to the host, run ``fn`` (numpy), copy results
    back. Slow by design; the generated source marks each use."""
    cuda = _cuda()
    host = [to_host(a) if _is_device(a) else a for a in args]
    res = fn(*host)
    res = res if isinstance(res, tuple) else (res,)
    return tuple(cuda.to_device(_c_order(r)) if isinstance(r, np.ndarray) else r
                 for r in res)


def _c_order(x) -> np.ndarray:
    """``x`` as a C-contiguous array of its own rank (np.ascontiguousarray makes 0-d 1-d)."""
    x = np.asarray(x)
    return x if x.flags.c_contiguous else x.copy(order="C")


def _is_device(x) -> bool:
    return hasattr(x, "copy_to_host") or hasattr(x, "__cuda_array_interface__")


def matmul_launcher(kernel, grid3):
    """cuBLAS (cupy.matmul into ``out``) when cupy is importable, else ``kernel`` (the tiled
    matmul) configured for the grid ``(tiles of n, tiles of m, batch)``."""
    from .cuda_launch import TILE, tiles
    if HAVE_CUPY and not _simulated():
        import cupy

        def cublas(a, b, out, *sizes):
            cupy.matmul(cupy.asarray(a), cupy.asarray(b), out=cupy.asarray(out))
        return cublas
    n, m, batch = grid3
    return kernel[(tiles(n), tiles(m), batch), (TILE, TILE)]


# ---------------------------------------------------------------------------- the runner


def as_device(x):
    """A device array for ``x``: device arrays as they are, host arrays copied in."""
    cuda = _cuda()
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return cuda.to_device(_c_order(x))
    if hasattr(x, "copy_to_host"):
        return x
    if hasattr(x, "__cuda_array_interface__"):
        return cuda.as_cuda_array(x)
    return cuda.to_device(_c_order(np.asarray(x)))


class CudaRunner:
    """Calls a CUDA Program's entry: ``runner(*arrays, to_host=False)`` -> one device array
    (host array with ``to_host``) per graph output, None for Python-valued outputs."""

    def __init__(self, program, module):
        self.program = program
        self.module = module
        self.consts = [as_device(c) for c in program.consts]
        self.entry = module.build(program.sizes, self.consts, program.fallbacks)
        self.buffers = work_buffers(program.buffers) if program.buffers else []
        self.outs = [(k, b.shape, b.dtype) for k, b in enumerate(program.buffers)
                     if b.kind == "out"]
        self.compiled = False

    def __call__(self, *arrays, to_host: bool = False):
        args = [as_device(a) for a in arrays]
        bufs = self.buffers
        if self.outs:
            bufs = list(bufs)
            for k, shape, dtype in self.outs:
                bufs[k] = allocator.empty(shape, dtype)
        if self.compiled:
            results = self.entry(*args, *bufs)
        else:
            results = self._first_call(args, bufs)
        if to_host:
            return tuple(globals()["to_host"](r) if _is_device(r) else r for r in results)
        return tuple(tensor_array(r) for r in results)

    def _first_call(self, args, bufs):
        """The first launch compiles every kernel: numba's errors then are tracejit's
        CompileError (a bug of ours, never the user's), as on the CPU (runtime/compile.py)."""
        import numba

        from .compile import CompileError
        try:
            results = self.entry(*args, *bufs)
        except (numba.core.errors.NumbaError, ImportError) as e:
            raise CompileError(f"{type(e).__name__}: {e}\nin {self.module.__file__}") from e
        self.compiled = True
        return results


def compile_cuda(program) -> CudaRunner:
    """A runner for ``program`` (``lower(graph, target="cuda")``); tracejit's message when
    there is no GPU (``tracejit.cuda.require``)."""
    tj_cuda.require("running a compiled graph on CUDA")
    module = load_module(program.source)
    if _simulated():
        _separate_launchers(module)
    else:
        from .cuda_launcher import wrap_kernels
        wrap_kernels(module)
    return CudaRunner(program, module)


class _SimLaunch:
    """A simulated kernel configured for one launch geometry (see _separate_launchers)."""

    __slots__ = ("kernel", "config")

    def __init__(self, kernel, config):
        self.kernel, self.config = kernel, config

    def __call__(self, *args):
        return self.kernel[self.config](*args)


class _SimKernel:
    """A simulated kernel whose ``[grid, block]`` makes a new launcher, as on a GPU."""

    __slots__ = ("kernel",)

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, config):
        return _SimLaunch(self.kernel, config)


def _separate_launchers(module) -> None:
    """NOTE: the simulator's ``kernel[grid, block]`` configures the kernel object itself and
    returns it, so two launchers of one kernel (a module's two matmuls, one module's runners
    at two shapes) would all launch with the last geometry configured. On a GPU each is a new
    object: make the simulator's kernels behave so (once per module; device functions, called
    from kernels, stay as they are)."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel
    for name, value in list(vars(module).items()):
        if isinstance(value, FakeCUDAKernel) and not value._device:
            setattr(module, name, _SimKernel(value))
