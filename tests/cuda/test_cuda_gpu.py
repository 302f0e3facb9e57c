"""On a real GPU (skipped elsewhere, which is every CI machine): the simulator's graphs and the
op sweep run on the device in this process and agree with the reference interpreter. This is
the first check a GPU session runs: ``python -m pytest tests/cuda/test_cuda_gpu.py``."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit.cuda

pytestmark = pytest.mark.skipif(
    not tracejit.cuda.is_available() or tracejit.cuda.is_simulator(),
    reason="needs an NVIDIA GPU")


def test_representative_graphs_on_the_gpu():
    from .programs import run_programs
    from .sim_cases import CASES
    from .test_cuda_sim import _reference

    inputs = {f"{name}.{k}": a for name, (_, args, *_) in CASES().items()
              for k, a in enumerate(args)}
    got = run_programs(inputs)
    for name in sorted(CASES()):
        want, error = _reference(name)
        if error is not None:
            assert f"{name}.error" in got, name
            continue
        for k, w in enumerate(want):
            if isinstance(w, np.ndarray):
                np.testing.assert_allclose(got[f"{name}.{k}"], w, rtol=2e-5, atol=1e-6,
                                           err_msg=f"{name}.{k}")


def test_op_sweep_on_the_gpu(monkeypatch):
    from . import test_cuda_sim
    monkeypatch.setattr(test_cuda_sim, "run_in_simulator",
                        lambda target, inputs, **kw: _in_process(target, inputs))
    test_cuda_sim._sweep(test_cuda_sim._sweep_ids(all_cases=False))


def _in_process(target, inputs):
    import importlib
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(inputs)


def test_a_launcher_checks_each_call_fits_its_compiled_signature():
    from numba import cuda

    from tracejit.runtime.cuda_launcher import Launcher

    @cuda.jit
    def scale(a, out, k, n):
        i = cuda.grid(1)
        if i < n:
            out[i] = a[i] * k

    launch = Launcher(scale, (1, 64))
    x = np.arange(40, dtype=np.float32)
    dx, out = cuda.to_device(x), cuda.device_array(20, np.float32)
    launch(dx[:20], out, 2.0, 20)  # a C-contiguous slice
    np.testing.assert_array_equal(out.copy_to_host(), x[:20] * 2)
    launch(dx[::2], out, 3.0, 20)  # strided: not the compiled "C" signature, another plan
    np.testing.assert_array_equal(out.copy_to_host(), x[::2] * 3)
    launch(dx[1:21], out, 0.5, 20)
    np.testing.assert_array_equal(out.copy_to_host(), x[1:21] * 0.5)
    assert len(launch.plans) == 2
    d64 = cuda.to_device(x.astype(np.float64))
    launch(d64[:20], out, 1.0, 20)  # another dtype: compiled for it
    np.testing.assert_array_equal(out.copy_to_host(), x[:20])
    assert len(launch.plans) == 3


def test_the_allocator_recycles_blocks_only_once_their_arrays_die():
    import gc

    from tracejit.runtime.cuda_runner import DeviceAllocator

    alloc = DeviceAllocator()
    a = alloc.empty((3, 4), np.float32)
    b = alloc.empty((3, 4), np.float32)  # a is alive: another block
    assert a.device_ctypes_pointer.value != b.device_ctypes_pointer.value
    assert (a.shape, a.strides, a.dtype, a.size) == ((3, 4), (16, 4), np.float32, 12)
    a.copy_to_device(np.arange(12, dtype=np.float32).reshape(3, 4))
    b.copy_to_device(np.ones((3, 4), np.float32))
    view = a[1:]  # keeps a's block in use after a dies
    ptr = a.device_ctypes_pointer.value
    del a
    gc.collect()
    c = alloc.empty((2, 6), np.float32)  # same bytes: not the block the view still reads
    assert c.device_ctypes_pointer.value != ptr
    np.testing.assert_array_equal(view.copy_to_host(), np.arange(4, 12).reshape(2, 4))
    hits = alloc.hits
    del view, c
    gc.collect()
    d = alloc.empty((12,), np.float32)
    assert alloc.hits == hits + 1 and d.shape == (12,) and d.strides == (4,)
    class Cycle:  # an array freed by the cyclic gc (autograd graphs are cycles)
        pass
    cyc = Cycle()
    cyc.me, cyc.array = cyc, alloc.empty((5,), np.float32)
    del cyc
    gc.collect()
    e = alloc.empty((5,), np.float32)  # the recycled block's memory is still allocated
    e.copy_to_device(np.ones(5, np.float32))
    np.testing.assert_array_equal(e.copy_to_host(), np.ones(5, np.float32))
