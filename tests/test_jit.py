"""tracejit.compile (torch.compile's spelling of trace) and tracejit.jit.trace (TorchScript's)."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.tracing import TracedFunction


def _np(t):
    return t.detach().numpy()


def test_compile_forms():
    model = tj.nn.Sequential(tj.nn.Linear(3, 4), tj.nn.ReLU())
    x = tj.randn(2, 3)
    fast = tj.compile(model, backend="interpret")
    assert isinstance(fast, TracedFunction) and fast.backend == "interpret"
    np.testing.assert_allclose(_np(fast(x)), _np(model(x)), rtol=1e-6)
    assert fast.module is model and fast.training  # the module's attributes stay reachable

    @tj.compile(mode="max-autotune", fullgraph=True)  # torch's options are accepted
    def f(a):
        return a.sin() * 2
    assert isinstance(f, TracedFunction)
    np.testing.assert_allclose(_np(f(x)), _np(x.sin() * 2), rtol=1e-5)

    @tj.compile
    def g(a):
        return a + 1
    assert isinstance(g, TracedFunction)
    assert tj.compile(model, disable=True) is model


def test_compile_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="backend must be one of"):
        tj.compile(lambda a: a, backend="nonsense")
    with pytest.raises(NotImplementedError, match="tracejit.dynamic"):
        tj.compile(lambda a: a, dynamic=True)
    with pytest.raises(NotImplementedError, match="FX graphs"):
        tj.compile(lambda a: a, backend=lambda gm, ex: gm)


def test_jit_trace_returns_traced_module():
    model = tj.nn.Linear(3, 2)
    x = tj.randn(4, 3)
    traced = tj.jit.trace(model, x)
    assert isinstance(traced, TracedFunction) and traced.cache_info().misses == 1
    np.testing.assert_allclose(_np(traced(x)), _np(model(x)), rtol=1e-6)
    assert traced.cache_info().misses == 1  # traced once, for the example input
    assert traced.weight is model.weight
    traced2 = tj.jit.trace(lambda a, b: a @ b, (x, tj.randn(3, 5)),
                           check_inputs=[(tj.randn(2, 3), tj.randn(3, 1))])
    assert traced2.cache_info().misses == 2


def test_jit_trace_check_catches_hidden_state():
    state = {"k": 1.0}

    def f(a):
        state["k"] += 1.0  # Python state the graph cannot see
        return a * state["k"]
    with pytest.raises(RuntimeError, match="disagrees with eager"):
        tj.jit.trace(f, tj.ones(2))


def test_jit_other_names_point_to_alternatives():
    with pytest.raises(NotImplementedError, match="jit.trace"):
        tj.jit.script(tj.nn.Linear(2, 2))
    with pytest.raises(NotImplementedError, match="tracejit.export"):
        tj.jit.save(None, "m.pt")
    with pytest.raises(NotImplementedError, match="tracejit.load"):
        tj.jit.load("m.pt")

    @tj.jit.ignore
    def h():
        return 1
    assert h() == 1 and tj.jit.export(h) is h
