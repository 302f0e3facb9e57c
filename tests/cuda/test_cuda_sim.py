"""Traced graphs lowered for CUDA run under numba-cuda's simulator and agree with the reference
interpreter: one child process runs every case of tests/cuda/sim_cases.py (an elementwise
chain with broadcasting, gelu, softmax, layer_norm, full sums, the tiled matmul, a conv step
through unfold + batched matmul + max pooling, an MLP training step, integer // by zero)."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime.interpret import interpret

from .programs import fused_graph
from .sim import run_in_simulator
from .sim_cases import CASES

pytest.importorskip("numba_cuda")


@pytest.fixture(scope="module")
def simulated():
    inputs = {f"{name}.{k}": a for name, (_, args, *_) in CASES().items()
              for k, a in enumerate(args)}
    return run_in_simulator("tests.cuda.programs:run_programs", inputs, timeout=300)


def _reference(name):
    fn, args, *trace_args = CASES()[name]
    tensors = [tj.from_numpy(np.array(a)) for a in (trace_args[0] if trace_args else args)]
    graph = fused_graph(fn, *tensors)
    try:
        return interpret(graph, [np.array(a) for a in args]), None
    except Exception as e:
        return None, e


@pytest.mark.parametrize("name", sorted(CASES()))
def test_simulated_cuda_matches_the_interpreter(simulated, name):
    want, error = _reference(name)
    if error is not None:  # the CUDA entry raised the same kind of error, with the CPU's text
        got = simulated.get(f"{name}.error")
        assert got is not None, f"{name}: the interpreter raised {error!r}, CUDA did not"
        text = bytes(got).decode()
        assert "integer division by zero" in str(error) and \
            text == "RuntimeError: floordiv: ZeroDivisionError: integer division by zero", text
        return
    assert f"{name}.error" not in simulated, bytes(simulated[f"{name}.error"]).decode()
    for k, w in enumerate(want):
        if not isinstance(w, np.ndarray):
            continue
        g = simulated[f"{name}.{k}"]
        assert g.shape == w.shape and g.dtype == w.dtype, (name, k, g.shape, g.dtype, w.dtype)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6, err_msg=f"{name}.{k}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{name}.{k}")
