"""Traced functions on CUDA tensors compile to numba.cuda kernels and agree with the same traced
functions on the CPU: ONE simulator child runs every case of tests/cuda/traced_cases.py
(elementwise, row and full reductions, matmul, constants made on the device, in-place updates
written back, a compiled backward called from eager code, an MLP training step, the
interpreter backend) and the CUDA-only checks (in process on a real GPU)."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

from .sim import run_in_simulator
from .traced_cases import CASES, SLOW_CASES, as_arrays

pytest.importorskip("numba_cuda")

_GPU = tj.cuda.is_available() and not tj.cuda.is_simulator()


def _simulate(names):
    inputs = {"names": np.frombuffer(" ".join(names).encode(), np.uint8)}
    if _GPU:
        from .traced_cases import run  # a real GPU: the same cases in process
        return run(inputs)
    return run_in_simulator("tests.cuda.traced_cases:run", inputs, timeout=600)


@pytest.fixture(scope="module")
def simulated():
    return _simulate(list(CASES))


def _text(simulated, key) -> str:
    return bytes(simulated[key]).decode()


def _compare(simulated, name, fn):
    assert f"{name}.error" not in simulated, _text(simulated, f"{name}.error")
    runners = _text(simulated, f"{name}.runners").split()
    want_runner = "NoneType" if "interpret" in name else "CudaRunner"
    assert runners and all(r == f"cuda:0:{want_runner}" for r in runners), runners
    want = as_arrays(fn(tj, "cpu"))
    assert f"{name}.{len(want)}" not in simulated
    for k, (w, _) in enumerate(want):
        g = simulated[f"{name}.{k}"]
        assert _text(simulated, f"{name}.{k}.device") == "cuda:0", (name, k)
        assert g.shape == w.shape and g.dtype == w.dtype, (name, k, g.shape, w.shape, g.dtype)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6, err_msg=f"{name}.{k}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{name}.{k}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_cuda_matches_traced_cpu(simulated, name):
    _compare(simulated, name, CASES[name])


@pytest.mark.slow
def test_traced_cuda_training_steps_slow():
    simulated = _simulate(list(SLOW_CASES))
    for name, fn in SLOW_CASES.items():
        _compare(simulated, name, fn)


@pytest.mark.parametrize("check, expected", [
    # compiled CUDA code that fails: the reference interpreter names the node and the line
    ("index_error", "GraphIndexError: node %2 (getitem) failed: getitem: index 9 is out of "
                    "bounds for axis 0 with size 4"),
    # one specialization per device; each call's results stay on its inputs' device
    ("devices", "cpu cuda:0 cpu cuda:0"),
    ("source", "cuda.jit"),  # fn.source() shows the CUDA kernels
    ("to_cpu", "NotImplementedError: moving a tensor to cpu inside a traced function"),
    # tj.load(device="cuda") of a CPU export: the same losses, weights on the GPU, CPU inputs
    # refused by name; an export traced on the GPU loads on the CPU
    ("export", "True True cuda:0 main: argument 'x' is on cpu, this entry was loaded for cuda:0"),
])
def test_traced_cuda_behaviour(simulated, check, expected):
    got = _text(simulated, f"check.{check}")
    assert got.startswith(expected), got
    if check in ("index_error", "to_cpu"):
        assert "traced_cases.py" in got  # the user's line


@pytest.mark.skipif(_GPU, reason="a real GPU compiles every kernel on its first run")
def test_traced_cases_stay_small(simulated):
    seconds = {k: float(v) for k, v in simulated.items() if k.endswith(".seconds")}
    assert sum(seconds.values()) < 120, sorted(seconds.items(), key=lambda kv: -kv[1])[:3]
