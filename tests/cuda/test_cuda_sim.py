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


# ---------------------------------------------------------------------------- the op sweep


def _sweep_ids(all_cases: bool) -> list:
    """Case ids whose graphs the sweep runs: a cover of every op, form and float-or-not dtype
    (test_cuda_ptx.sample), or every unique kernel's case under -m slow; random draws are left
    out (the interpreter and a host round trip draw in different orders)."""
    from .test_cuda_ptx import sample, unique_kernels
    items = list(unique_kernels()[0].values()) if all_cases else sample(by_dtype=False)
    return list(dict.fromkeys(c for c, _, _ in items if "random" not in c))


def _sweep(ids):
    out = run_in_simulator("tests.cuda.programs:run_trace_cases",
                           {"ids": np.frombuffer("\n".join(ids).encode(), np.uint8)},
                           timeout=1200)
    failures = []
    skipped = sum(f"{k}.skipped" in out for k in range(len(ids)))
    assert skipped < len(ids) // 2, f"{skipped} of {len(ids)} cases skipped"
    for k, case_id in enumerate(ids):
        if f"{k}.error" in out:
            text = bytes(out[f"{k}.error"]).decode()
            want = bytes(out[f"{k}.want_error"]).decode() if f"{k}.want_error" in out else None
            if want is None or want.split(":")[0].split()[-1] not in text:
                failures.append(f"{case_id}: CUDA raised {text[:300]} (interpreter: {want})")
            continue
        if f"{k}.want_error" in out:
            failures.append(f"{case_id}: the interpreter raised, CUDA did not")
            continue
        j = 0
        while f"{k}.want.{j}" in out or f"{k}.got.{j}" in out:
            g, w = out.get(f"{k}.got.{j}"), out.get(f"{k}.want.{j}")
            try:
                assert g is not None and w is not None, "output missing"
                assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.dtype)
                if w.dtype.kind == "f":
                    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6, equal_nan=True)
                else:
                    np.testing.assert_array_equal(g, w)
            except AssertionError as e:
                failures.append(f"{case_id}: output {j}: {str(e)[:400]}")
            j += 1
    assert not failures, f"{len(failures)} of {len(ids)} cases differ:\n" + "\n".join(failures)


def test_simulated_op_sweep_matches_the_interpreter():
    _sweep(_sweep_ids(all_cases=False))


@pytest.mark.slow
def test_simulated_op_sweep_of_every_unique_kernel():
    _sweep(_sweep_ids(all_cases=True))
