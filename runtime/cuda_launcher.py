"""Launchers configured once: a generated entry's ``kernel[grid, block](*args)`` without numba's
per-call dispatch (installed as ``tracejit.runtime.cuda_launcher``).

numba-cuda's ``kernel[grid, block](*args)`` types every argument, looks the overload up, builds
a ``cuda.core`` launch configuration and marshals each array through two shim objects on every
call: 24-44 µs a launch on the hosts of the H200 machines measured, against 9-15 µs here
(docs/benchmarks.md, "CUDA on an H200"). A generated entry launches the same kernels with
arguments of the same types call after call, so ``wrap_kernels(module)`` replaces each kernel
of a loaded module by a ``Kernel`` whose launchers keep, per argument-type signature, the
compiled function and the configuration, and marshal the arguments as numba does
(``_Kernel._prepare_args``: an array is meminfo, parent, size, itemsize, pointer, shape,
strides). Each call checks that the arrays still fit the signature (type, dtype, dimensions,
layout); any other argument, or a kernel numba compiled with debug, extensions or cooperative
launch, takes numba's own launcher. Only on a GPU: the simulator's kernels are Python.
"""

from __future__ import annotations

import ctypes
import warnings

import numpy as np

__all__ = ["wrap_kernels", "Kernel", "Launcher"]


_NUMBA = None
_INTS, _FLOATS = (int, np.integer), (float, np.floating)


def _numba():
    """(numba-cuda's dispatcher module, DeviceNDArray), imported once."""
    global _NUMBA
    if _NUMBA is None:
        from numba.cuda import dispatcher
        from numba.cuda.cudadrv.devicearray import DeviceNDArray
        _NUMBA = dispatcher, DeviceNDArray
    return _NUMBA


class _Plan:
    """One compiled overload: how to marshal its arguments, and the launch it makes."""

    __slots__ = ("specs", "function", "config", "stream")

    def __init__(self, kernel, numba_launch, dispatcher_module, device_array):
        types = dispatcher_module.types
        specs = []
        for ty in kernel.argument_types:
            if isinstance(ty, types.Array):
                specs.append((device_array, ty.dtype, ty.ndim, ty.layout))
            elif isinstance(ty, types.Integer):
                specs.append((getattr(ctypes, f"c_{ty}"), _INTS))
            elif ty == types.float32:
                specs.append((ctypes.c_float, _FLOATS))
            elif ty == types.float64:
                specs.append((ctypes.c_double, _FLOATS))
            else:
                raise NotImplementedError(ty)  # numba's launcher marshals the rest
        self.specs = specs
        self.function = kernel._codelibrary.get_cufunc().kernel
        self.config = dispatcher_module.LaunchConfig(
            grid=numba_launch.griddim, block=numba_launch.blockdim,
            shmem_size=numba_launch.sharedmem)
        self.stream = numba_launch.stream

    def marshal(self, args):
        """The kernel's parameters for ``args``, or None where they do not fit this plan."""
        if len(args) != len(self.specs):
            return None
        out = []
        for spec, a in zip(self.specs, args):
            if len(spec) == 2:  # a number: of the kind numba typed it as (a bool is not an int)
                if not isinstance(a, spec[1]) or isinstance(a, bool):
                    return None
                out.append(spec[0](a))
                continue
            cls, dtype, ndim, layout = spec
            if not isinstance(a, cls) or a.ndim != ndim or a.dtype != _dtypes[dtype]:
                return None
            strides = a.strides
            if layout != "A" and a.size and 0 in strides:
                return None  # a broadcast view is typed "A"
            if layout == "C" and not a.is_c_contiguous():
                return None
            if layout == "F" and not a.is_f_contiguous():
                return None
            out += (0, 0, a.size, a.dtype.itemsize, a.device_ctypes_pointer.value, *a.shape,
                    *strides)
        return out


class _Dtypes(dict):
    """numba scalar type -> numpy dtype, filled on first use."""

    def __missing__(self, ty):
        from numba.cuda.np import numpy_support
        value = self[ty] = numpy_support.as_dtype(ty)
        return value


_dtypes = _Dtypes()


class Launcher:
    """``kernel[grid, block]``: call it with the kernel's arguments."""

    __slots__ = ("dispatcher", "numba_launch", "plans")

    def __init__(self, dispatcher, config):
        self.dispatcher = dispatcher
        with warnings.catch_warnings():  # NOTE: tracejit sizes its grids; numba warns of any
            warnings.simplefilter("ignore")  # grid under 128 blocks, every time one is made
            self.numba_launch = dispatcher[config]
        self.plans = []

    def __call__(self, *args):
        dispatcher_module, _ = _numba()
        for plan in self.plans:
            params = plan.marshal(args)
            if params is not None:
                dispatcher_module.launch(plan.stream, plan.config, plan.function, *params)
                return
        plan = self._plan(args)
        if plan is None:
            self.numba_launch(*args)
            return
        self.plans.append(plan)
        dispatcher_module.launch(plan.stream, plan.config, plan.function, *plan.marshal(args))

    def _plan(self, args):
        """A plan for these arguments' types (compiled now if they are new), or None where
        numba's own launcher must run: arguments other than device arrays and numbers, or a
        kernel built with options that launch differently."""
        dispatcher_module, device_array = _numba()
        disp = self.dispatcher
        if any(not isinstance(a, (device_array, *_INTS, *_FLOATS)) for a in args):
            return None
        kernel = disp.compile(tuple(disp.typeof_pyval(a) for a in args))
        if kernel.debug or kernel.extensions or kernel.cooperative:
            return None
        try:
            plan = _Plan(kernel, self.numba_launch, dispatcher_module, device_array)
        except NotImplementedError:
            return None
        return plan if plan.marshal(args) is not None else None


class Kernel:
    """A module's kernel whose ``[grid, block]`` makes a ``Launcher``."""

    __slots__ = ("dispatcher",)

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def __getitem__(self, config):
        return Launcher(self.dispatcher, config)


def wrap_kernels(module) -> None:
    """Each kernel of a loaded generated module, wrapped (once; device functions, which
    kernels call, stay as they are)."""
    dispatcher_module, _ = _numba()
    for name, value in list(vars(module).items()):
        if (isinstance(value, dispatcher_module.CUDADispatcher)
                and not value.targetoptions.get("device", False)
                and getattr(value.py_func, "__module__", None) == module.__name__):
            setattr(module, name, Kernel(value))
