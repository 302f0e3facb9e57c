"""Eager CUDA ops under numba-cuda's simulator (in process on a real GPU: the first check of a
GPU session): ONE child process runs every case of tests/cuda/device_cases.py on "cuda"
(elementwise with broadcasting and promotion, reductions, views, indexing, matmul, in-place
ops, factories with device=, autograd, an MLP training step with SGD and Adam) and the
CUDA-only checks; here the same cases run on the CPU and must agree."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

from .device_cases import CASES, as_arrays
from .sim import run_in_simulator

pytest.importorskip("numba_cuda")


@pytest.fixture(scope="module")
def simulated():
    if tj.cuda.is_available() and not tj.cuda.is_simulator():
        from .device_cases import run  # a real GPU: the same cases in process
        return run({})
    return run_in_simulator("tests.cuda.device_cases:run", timeout=300)


def _text(simulated, key) -> str:
    return bytes(simulated[key]).decode()


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_cuda_matches_the_cpu(simulated, name):
    assert f"{name}.error" not in simulated, _text(simulated, f"{name}.error")
    want = as_arrays(CASES[name](tj, "cpu"))
    assert f"{name}.{len(want)}" not in simulated
    for k, (w, _) in enumerate(want):
        g = simulated[f"{name}.{k}"]
        assert _text(simulated, f"{name}.{k}.device") == "cuda:0", (name, k)
        assert g.shape == w.shape and g.dtype == w.dtype, (name, k, g.shape, w.shape, g.dtype)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6, err_msg=f"{name}.{k}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{name}.{k}")


@pytest.mark.parametrize("check, expected", [
    ("device", "cuda:0 True cpu False"),
    ("repr", "tensor([0., 1., 2., 3.], device='cuda:0')"),
    ("repr_grad", "tensor([1., 1.], device='cuda:0', requires_grad=True)"),
    ("numpy", "TypeError: can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() "
              "to copy the tensor to host memory first."),
    ("array", "TypeError: can't convert cuda:0 device type tensor to numpy."),
    ("mixed", "RuntimeError: Expected all tensors to be on the same device, but found at least "
              "two devices, cuda:0 and cpu! (when checking argument 1 of add;"),
    ("cuda1", "NotImplementedError: device cuda:1: tracejit runs on one GPU, cuda:0"),
    ("dropout", "True True"),
    ("to_grad", "cpu [0.0, 1.0, 2.0] <ToCopyBackward0>"),
    ("state_dict", "cuda:0 [[2.0]]"),
    ("optimizer_state", "[device(type='cuda', index=0), device(type='cuda', index=0)] True"),
    ("scalar_tensor", "[2.0, 3.0, 4.0, 5.0]"),
    ("item", "6.0"),
    # as_tensor of a numba device array shares it: an in-place add shows in the array
    ("interop", "True [10.0, 11.0, 12.0] [10.0, 11.0, 12.0] True True"),
    ("cache", "1 2"),  # one runner built for x * 3.0, then two cache hits
    ("traced", "[1.0, 3.0, 5.0, 7.0] cuda:0"),  # compiled for CUDA (test_traced_cuda.py)
    ("traced_eager", "[1.0, 3.0, 5.0, 7.0]"),
])
def test_cuda_only_behaviour(simulated, check, expected):
    got = _text(simulated, f"check.{check}")
    assert got.startswith(expected), got
    if check in ("numpy", "mixed"):
        assert "device_cases.py" in got  # the user's line, as every tracejit error names it


@pytest.mark.skipif(tj.cuda.is_available() and not tj.cuda.is_simulator(),
                    reason="a real GPU compiles every kernel on its first run")
def test_simulated_cases_stay_small(simulated):
    seconds = {k: float(v) for k, v in simulated.items() if k.endswith(".seconds")}
    assert sum(seconds.values()) < 60, seconds
