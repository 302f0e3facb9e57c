"""tracing/compiled.py: a specialization's CompiledGraph is plain data that describes the graph's
inputs (arguments and captured weights), outputs (results, in-place updates), result structure
and guards, and is all the executor needs to run it."""

import collections
import dataclasses
import types

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.ir import Graph
from tracejit.runtime.executor import execute, write_back
from tracejit.runtime.interpret import interpret
from tracejit.tracing import CompiledGraph, GuardSpec, InputSpec, OutputSpec

Pair = collections.namedtuple("Pair", ["a", "b"])


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TRACEJIT_VERIFY", "1")
    monkeypatch.setenv("TRACEJIT_BACKEND", "interpret")  # the cpu test asks for its backend
    monkeypatch.delenv("TRACEJIT_DISABLE", raising=False)
    monkeypatch.delenv("TRACEJIT_DEBUG", raising=False)
    tj.set_mode("trace")


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.scale = 0.5

    def forward(self, x, acc):
        acc.add_(x.sum(0))  # an in-place update of an argument: written back after each call
        y = self.fc(x) * self.scale
        return y, y.sum()


def _traced():
    model = Model()
    f = tj.trace(model)
    x, acc = tj.randn(4, 3), tj.zeros(3)
    with tj.no_grad():
        f(x, acc)
        f(x, acc)  # the graph runs
    (spec,) = f.specs()
    return model, f, spec, x, acc


_PLAIN = (str, int, float, bool, type(None), np.dtype, Graph)


def _walk(obj, path="cg"):
    """Every leaf of ``obj`` that is not plain data, with its path."""
    if isinstance(obj, _PLAIN):
        return []
    if isinstance(obj, (tuple, list)):
        return [bad for i, v in enumerate(obj) for bad in _walk(v, f"{path}[{i}]")]
    if isinstance(obj, dict):
        return [bad for k, v in obj.items() for bad in _walk(k, f"{path} key") +
                _walk(v, f"{path}[{k!r}]")]
    if dataclasses.is_dataclass(obj) and isinstance(obj, (CompiledGraph, InputSpec, OutputSpec,
                                                          GuardSpec)):
        return [bad for f in dataclasses.fields(obj)
                for bad in _walk(getattr(obj, f.name), f"{path}.{f.name}")]
    return [(path, type(obj).__name__)]


def test_compiled_graph_is_plain_data():
    _, _, spec, _, _ = _traced()
    cg = spec.compiled
    assert isinstance(cg, CompiledGraph)
    assert _walk(cg) == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        cg.n_results = 3


def test_namedtuple_results_are_described_as_data():
    @tj.trace
    def f(x):
        return Pair(x + 1, {"twice": x * 2})

    f(tj.ones(2))
    out = f(tj.ones(2))
    assert isinstance(out, Pair) and out.b["twice"].tolist() == [2.0, 2.0]  # the live tree
    cg = f.specs()[0].compiled
    assert cg.out_tree == ("namedtuple", f"{__name__}.Pair", ("a", "b"),
                           ("*", ("dict", (("twice", "*"),))))
    assert _walk(cg) == []


def test_describes_inputs_outputs_and_guards():
    model, _, spec, x, acc = _traced()
    cg = spec.compiled
    args = [s for s in cg.inputs if s.kind == "argument"]
    assert [(s.shape, s.dtype, s.position) for s in args] == [
        ((4, 3), np.dtype("float32"), 0), ((3,), np.dtype("float32"), 1)]
    assert cg.arg_positions == (0, 1)
    assert [(s.name, s.weight, s.shape, s.requires_grad) for s in cg.weights] == [
        ("self.fc.weight", "self.fc.weight", (2, 3), True),
        ("self.fc.bias", "self.fc.bias", (2,), True)]
    assert [s.name for s in cg.inputs] == list(cg.raw.input_names)
    # two results, then the new value of acc (graph input 1)
    assert [(o.kind, o.shape, o.input) for o in cg.outputs] == [
        ("result", (4, 2), None), ("result", (), None), ("mutation", (3,), 1)]
    assert cg.n_results == 2 and cg.mutated == ((1, 2),) and cg.grad_writes == ()
    assert cg.out_tree == ("tuple", ("*", "*")) and not cg.single_tensor_result
    assert not cg.ran_backward and cg.passthrough == ()
    guards = {g.what: g.value for g in cg.guards}
    assert guards["Model attributes"] == (("training", True), ("scale", 0.5))
    assert dict(guards["Linear attributes"])["in_features"] == 3
    # the live parts hold what the data describes
    assert [c.tensor for c in spec.captured] == [model.fc.weight, model.fc.bias]
    assert [what for _, _, what in spec.guards] == [g.what for g in cg.guards]
    text = cg.describe()
    for line in ("CompiledGraph of Model: 2 arguments, 2 weights -> 3 outputs",
                 "self.fc.weight: f32[2,3]  weight, requires grad", "argument 1",
                 "2: f32[3]  in-place update of", "Model attributes == (('training', True), "
                 "('scale', 0.5))", "result structure: ('tuple', ('*', '*'))", "graph("):
        assert line in text, text
    assert repr(cg) == "<CompiledGraph of Model: 4 inputs, %d nodes, 3 outputs>" % len(cg.graph)


def test_executor_runs_from_the_compiled_graph():
    """The graph facts are all in the CompiledGraph: a bare object holding it (and no runner)
    runs on the interpreter, and write_back updates acc as eager code would."""
    model, _, spec, x, acc = _traced()
    cg = spec.compiled
    bare = types.SimpleNamespace(compiled=cg, runner=None, compile_graph=None,
                                 compiled_grad=None)
    acc2 = tj.zeros(3)
    inputs = [x, acc2, model.fc.weight, model.fc.bias]
    with tj.no_grad():
        outs = execute(bare, inputs)
        y = model.fc(x) * 0.5
    np.testing.assert_allclose(outs[0].numpy(), y.numpy(), rtol=1e-6)
    np.testing.assert_allclose(outs[1].item(), y.sum().item(), rtol=1e-6)
    write_back(cg, inputs, [o._data for o in outs])
    np.testing.assert_allclose(acc2.numpy(), x.sum(0).numpy(), rtol=1e-6)
    # the unfused graphs compute the same
    arrays = [t._data for t in inputs]
    for graph in (cg.raw, cg.optimized):
        np.testing.assert_allclose(interpret(graph, arrays)[0], y.numpy(), rtol=1e-6)


def test_a_compiled_specialization_keeps_the_fused_and_unfused_graphs():
    @tj.trace(backend="cpu")
    def f(x, w):
        return (x @ w).relu() + 1

    x, w = tj.randn(2, 3), tj.randn(3, 4)
    f(x, w)
    spec = f.specs()[0]
    cg = spec.compiled
    assert "fused" in cg.graph.op_counts() and "fused" not in cg.optimized.op_counts()
    assert spec.runner is not None and spec.lowered is not None  # live parts, not data
    assert _walk(cg) == []
    np.testing.assert_allclose(f(x, w).numpy(), ((x @ w).relu() + 1).numpy(), rtol=1e-6)
