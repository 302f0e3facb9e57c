"""@trace: recording, guards and retracing, captured parameters, input mutation, untraceable
Python, eager switches, check_trace."""

import functools
import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime.interpret import GraphRuntimeError

from .conftest import assert_close

THIS_FILE = __file__


@pytest.fixture(autouse=True)
def _verify_between_passes(monkeypatch, request):
    monkeypatch.setenv("TRACEJIT_VERIFY", "1")
    # tracing semantics run on the reference backend (fast); tests/codegen covers compiling
    if "compiled" not in request.keywords:
        monkeypatch.setenv("TRACEJIT_BACKEND", "interpret")
    monkeypatch.delenv("TRACEJIT_DISABLE", raising=False)
    monkeypatch.delenv("TRACEJIT_DEBUG", raising=False)
    tj.set_mode("trace")


def _counting(fn):
    """Wrap fn so calls of its Python body are counted (they only happen while tracing)."""
    calls = []

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    wrapper.calls = calls
    return wrapper


def test_first_call_traces_later_calls_run_the_graph():
    body = _counting(lambda x, w: (x @ w).relu() + 1.0)
    f = tj.trace(body)
    x, w = tj.randn(2, 3), tj.randn(3, 4)
    expected = np.maximum(x.numpy() @ w.numpy(), 0) + 1
    for _ in range(3):
        assert_close(f(x, w), expected, rtol=1e-5)
    assert len(body.calls) == 1
    info = f.cache_info()
    assert (info.hits, info.misses, info.specializations) == (2, 1, 1)
    x2 = tj.randn(2, 3)  # new values, same signature: no retrace
    assert_close(f(x2, w), np.maximum(x2.numpy() @ w.numpy(), 0) + 1, rtol=1e-5)
    assert len(body.calls) == 1


def test_decorator_forms():
    @tj.trace
    def a(x):
        return x * 2

    @tj.trace(check_trace=True, max_specializations=3)
    def b(x):
        return x * 3

    x = tj.ones(2)
    assert a(x).tolist() == [2, 2] and a(x).tolist() == [2, 2]
    assert b(x).tolist() == [3, 3] and b(x).tolist() == [3, 3]
    assert b.cache_info().max_specializations == 3
    assert tj.trace(a) is a


@pytest.mark.parametrize("change, reason", [
    (lambda x: tj.randn(4, 3), "x: shape changed from (2, 3) to (4, 3)"),
    (lambda x: x.double(), "x: dtype changed from float32 to float64"),
    (lambda x: x.detach().clone().requires_grad_(), "x: requires_grad changed from False to True"),
])
def test_guards_retrace_and_say_why(change, reason, monkeypatch, capsys):
    body = _counting(lambda x, k: x * k)
    f = tj.trace(body)
    x = tj.randn(2, 3)
    f(x, 2.0)
    f(x, 2.0)
    monkeypatch.setenv("TRACEJIT_DEBUG", "recompiles")
    y = change(x)
    assert_close(f(y, 2.0), y.detach().numpy() * 2)
    assert len(body.calls) == 2 and f.cache_info().specializations == 2
    assert reason in capsys.readouterr().err
    f(x, 2.0)  # the old specialization is still there
    assert len(body.calls) == 2


def test_non_tensor_argument_values_are_guarded(monkeypatch, capsys):
    body = _counting(lambda x, k, flag=False: x * k if flag else x + k)
    f = tj.trace(body)
    x = tj.ones(2)
    assert f(x, 2.0).tolist() == [3, 3]
    monkeypatch.setenv("TRACEJIT_DEBUG", "recompiles")
    assert f(x, 5.0).tolist() == [6, 6]
    assert "k: value changed from 2.0 to 5.0" in capsys.readouterr().err
    assert f(x, 5.0, flag=True).tolist() == [5, 5]
    assert len(body.calls) == 3


def test_argument_structure_is_guarded():
    f = tj.trace(_counting(lambda xs: sum(xs[1:], xs[0]) if isinstance(xs, (list, tuple))
                           else xs["a"] - xs["b"]))
    a, b = tj.ones(2), tj.full((2,), 3.0)
    assert f((a, b)).tolist() == [4, 4]
    assert f([a, b, b]).tolist() == [7, 7]
    assert f({"a": a, "b": b}).tolist() == [-2, -2]
    assert f.cache_info().specializations == 3


def test_specialization_limit_warns_once_and_runs_eagerly():
    body = _counting(lambda x: x + 1)
    f = tj.trace(body, max_specializations=2)
    f(tj.ones(1))
    f(tj.ones(2))
    with pytest.warns(RuntimeWarning, match="limit of 2 specializations"):
        assert f(tj.ones(3)).tolist() == [2, 2, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f(tj.ones(4)).tolist() == [2] * 4
    info = f.cache_info()
    assert info.specializations == 2 and info.eager_calls == 2
    f(tj.ones(1))  # existing specializations keep working
    assert f.cache_info().hits == 1


W = tj.ones(3)  # a global parameter


def test_globals_closures_and_self_are_inputs_not_constants():
    b = tj.zeros(3)

    @tj.trace
    def f(x):
        return x * W + b

    x = tj.full((3,), 2.0)
    assert f(x).tolist() == [2, 2, 2]
    with tj.no_grad():
        W.add_(1.0)   # optimizer-style in-place update
        b.fill_(0.5)
    assert f(x).tolist() == [4.5, 4.5, 4.5]
    assert f.cache_info().misses == 1
    names = f.graph(x).input_names
    assert "W" in names and "b" in names
    with tj.no_grad():
        W.fill_(1.0)


class Affine:
    def __init__(self):
        self.weight = tj.ones(2, 2)
        self.bias = tj.zeros(2)
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return x @ self.weight.T + self.bias


def test_module_like_objects_and_reassigned_attributes():
    m = Affine()
    f = tj.trace(m)
    x = tj.tensor([[1.0, 2.0]])
    assert f(x).tolist() == [[3.0, 3.0]]
    m.bias = tj.tensor([10.0, 20.0])  # a new object, reached through self.bias
    assert f(x).tolist() == [[13.0, 23.0]]
    assert m.calls == 1
    assert "self.weight" in f.graph(x).input_names
    assert f.weight is m.weight  # the traced object still exposes its attributes


class Net:
    def __init__(self):
        self.w = tj.full((2,), 2.0)

    @tj.trace
    def forward(self, x):
        return x * self.w


def test_trace_as_method_decorator():
    n = Net()
    x = tj.ones(2)
    assert n.forward(x).tolist() == [2, 2]
    n.w = tj.full((2,), 3.0)
    assert n.forward(x).tolist() == [3, 3]


def test_input_mutation_is_written_back():
    @tj.trace
    def step(x, acc):
        acc.add_(x)
        acc[0] = 0.0
        return acc.sum()

    x, acc = tj.ones(3), tj.zeros(3)
    for i in range(1, 4):
        total = step(x, acc)
        assert acc.tolist() == [0.0, float(i), float(i)]
        assert total.item() == 2.0 * i
    g = step.graph(x, acc)
    assert len(g.outputs) == 2  # the result, then acc's new value


def test_captured_buffer_mutation_is_written_back():
    counter = tj.zeros(())

    @tj.trace
    def f(x):
        counter.add_(1)
        return x + counter

    x = tj.zeros(2)
    assert f(x).tolist() == [1, 1]
    assert f(x).tolist() == [2, 2]
    assert counter.item() == 2


def test_nested_outputs_and_python_values():
    @tj.trace
    def f(x):
        return {"y": [x * 2, (x + 1, 3)], "mx": x.max(0), "n": x.shape[0]}

    x = tj.tensor([1.0, 5.0])
    for _ in range(2):
        out = f(x)
        assert out["y"][0].tolist() == [2, 10] and out["y"][1][1] == 3 and out["n"] == 2
        assert out["y"][1][0].tolist() == [2, 6]
        assert out["mx"].values.item() == 5 and out["mx"].indices.item() == 1


@pytest.mark.parametrize("body, what", [
    (lambda x: x * 2 if x.sum() > 0 else x, "bool(t)"),
    (lambda x: x * x.sum().item(), "t.item()"),
    (lambda x: x * int(x[0]), "int(t)"),
    (lambda x: x * float(x[0]), "float(t)"),
    (lambda x: tj.tensor(x.numpy() * 2), "t.numpy()"),
    (lambda x: tj.tensor(x.tolist()), "t.tolist()"),
    (lambda x: tj.tensor(np.asarray(x) + 1), "numpy array"),
    (lambda x: x[x > 0], "boolean-mask indexing"),
])
def test_untraceable_python_raises_trace_error(body, what):
    f = tj.trace(body)
    with pytest.raises(tj.TraceError) as e:
        f(tj.ones(3))
    msg = str(e.value)
    assert what in msg
    assert THIS_FILE in msg  # points at the user's line
    assert "tracejit.where" in msg


def test_parameter_item_is_untraceable_too():
    scale = tj.tensor(2.0)

    @tj.trace
    def f(x):
        return x * scale.item()

    with pytest.raises(tj.TraceError, match="t.item()"):
        f(tj.ones(2))


def test_python_constants_made_inside_are_fine():
    @tj.trace
    def f(x):
        n = tj.tensor(3)
        return x * n.item() + tj.arange(2) + tj.zeros(2)

    assert f(tj.ones(2)).tolist() == [3, 4]
    assert f(tj.ones(2)).tolist() == [3, 4]


def test_eager_switches(monkeypatch):
    body = _counting(lambda x: x + 1)
    f = tj.trace(body)
    x = tj.ones(1)
    f(x)
    f(x)
    tj.set_mode("eager")
    try:
        f(x)
        f(x)
    finally:
        tj.set_mode("trace")
    with tj.eager():
        f(x)
    monkeypatch.setenv("TRACEJIT_DISABLE", "1")
    f(x)
    assert len(body.calls) == 5
    assert f.cache_info().eager_calls == 4
    with pytest.raises(ValueError, match="mode"):
        tj.set_mode("fast")


def test_check_trace_catches_hidden_python_state():
    state = {"k": 1.0}

    @tj.trace(check_trace=True)
    def f(x):
        return x * state["k"]

    x = tj.ones(2)
    f(x)
    state["k"] = 2.0
    with pytest.raises(tj.TraceError, match="disagrees with eager execution on output 0"):
        f(x)


def test_check_trace_passes_and_keeps_mutation_semantics():
    @tj.trace(check_trace=True)
    def f(x, acc):
        acc.mul_(2)
        return x.exp().sum()

    x, acc = tj.randn(4), tj.ones(2)
    f(x, acc)
    f(x, acc)  # checked against eager, mutation applied once
    f(x, acc)
    assert acc.tolist() == [8, 8]


def test_traced_function_is_differentiable_from_eager_code():
    @tj.trace
    def f(x, w):
        return ((x @ w).tanh() ** 2).sum()

    x, w = tj.randn(2, 3), tj.randn(3, 2, requires_grad=True)
    f(x, w)
    loss = f(x, w)
    loss.backward()
    w2 = w.detach().clone().requires_grad_()
    ((x @ w2).tanh() ** 2).sum().backward()
    assert_close(w.grad, w2.grad.numpy(), rtol=1e-5)


def test_nested_traced_functions_inline():
    inner = tj.trace(lambda x: x * 2)

    @tj.trace
    def outer(x):
        return inner(x) + 1

    x = tj.ones(2)
    outer(x)
    assert outer(x).tolist() == [3, 3]
    assert inner.cache_info().misses == 0
    assert [n.op for n in outer.graph(x, optimized=False).nodes] == ["mul", "add"]


def test_graph_printing_and_source_locations():
    @tj.trace
    def f(x, w):
        return (x @ w).relu()  # line recorded on the nodes

    g = f.graph(tj.ones(2, 3), tj.ones(3, 4))
    text = str(g)
    assert text.splitlines()[0] == "graph(x: f32[2,3], w: f32[3,4]):"
    assert "f32[2,4] = matmul x, w" in text and "= relu %" in text
    assert text.splitlines()[-1].startswith("  return %")
    assert all(THIS_FILE in n.loc for n in g.nodes)
    assert "digraph" in g.to_dot()


def test_graph_runtime_errors_name_the_node_and_user_line():
    @tj.trace
    def f(x, idx):
        return x.gather(0, idx)

    x = tj.ones(3)
    f(x, tj.tensor([0, 1]))
    with pytest.raises(GraphRuntimeError,
                       match=r"(?s)node %\d+ \(gather\).*created at .*test_tracing.py:\d+"):
        f(x, tj.tensor([0, 7]))


def test_inplace_on_a_view_inside_trace_is_refused():
    @tj.trace
    def f(x):
        v = x[0]
        v.add_(1)
        return x

    with pytest.raises(tj.TraceError, match="in-place update of a view"):
        f(tj.ones(2, 2))


def test_stale_view_after_base_update_is_refused():
    @tj.trace
    def f(x):
        y = x * 1
        v = y[0]
        y.add_(1)
        return v * 2

    with pytest.raises(tj.TraceError, match="modified in place through another view"):
        f(tj.ones(2, 2))


def test_random_ops_follow_the_seed_in_graphs():
    @tj.trace
    def f(x):
        return x + tj.rand(3) + tj.randn(3)

    x = tj.zeros(3)
    tj.manual_seed(7)
    f(x)
    tj.manual_seed(7)
    a = f(x)  # runs the graph
    tj.manual_seed(7)
    b = x + tj.rand(3) + tj.randn(3)
    assert_close(a, b.numpy())
    assert not np.allclose(f(x).numpy(), a.numpy())  # draws advance


def test_train_eval_toggling_reuses_both_specializations():
    class Scale(tj.nn.Module):
        def forward(self, x):
            return x * 2.0 if self.training else x * 3.0

    m = Scale()
    f = tj.trace(m, backend="interpret")
    x = tj.ones(3)
    for _ in range(3):
        m.train()
        np.testing.assert_allclose(f(x).numpy(), 2.0)
        m.eval()
        np.testing.assert_allclose(f(x).numpy(), 3.0)
    info = f.cache_info()
    # traced once per mode, then each mode's graph is found again (not traced a third time)
    assert (info.misses, info.specializations, info.hits) == (2, 2, 4)


def test_module_python_attributes_are_guarded(monkeypatch, capsys):
    class Scaled(tj.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = 2.0
            self.lin = tj.nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x) * self.scale

    m = Scaled()
    f = tj.trace(m, backend="interpret")
    x = tj.randn(2, 3)
    with tj.no_grad():
        f(x)
        m.scale = 5.0  # a Python number forward() reads: the graph must not keep 2.0
        monkeypatch.setenv("TRACEJIT_DEBUG", "recompiles")
        assert_close(f(x), (m.lin(x) * 5.0).numpy())
        assert "Scaled attributes changed (scale: 2.0 -> 5.0)" in capsys.readouterr().err
        m.lin.out_features = 3  # unchanged value: no retrace
        f(x)
    assert f.cache_info().misses == 2


SCALE = 2.0


def test_python_numbers_from_closures_and_globals_are_guarded():
    global SCALE
    offset = 1.0

    @tj.trace(backend="interpret")
    def f(x):
        return x * SCALE + offset

    x = tj.ones(2)
    assert_close(f(x), np.full(2, 3.0, np.float32))
    SCALE = 5.0
    try:
        assert_close(f(x), np.full(2, 6.0, np.float32))
    finally:
        SCALE = 2.0
    offset = 10.0  # noqa: F841 - read by f through its closure
    assert_close(f(x), np.full(2, 12.0, np.float32))
    assert f.cache_info().misses == 3
    f(x)
    assert f.cache_info().misses == 3  # unchanged values: the graph is found again


def test_reading_grad_keeps_the_grad_is_none_guard():
    w = tj.ones(3, requires_grad=True)

    @tj.trace(backend="interpret")
    def step():
        with tj.no_grad():
            if w.grad is not None:  # a Python branch on whether gradients exist
                w.sub_(0.5 * w.grad)
        return w.detach() * 1

    assert_close(step(), np.ones(3, np.float32))  # no gradient yet: nothing happens
    (w * w).sum().backward()
    assert_close(step(), np.zeros(3, np.float32))  # traced again: 1 - 0.5 * 2
    assert step.cache_info().misses == 2


def test_not_reading_grad_drops_the_grad_is_none_guard():
    w = tj.ones(3, requires_grad=True)
    f = tj.trace(lambda x: x * w, backend="interpret")
    x = tj.ones(3)
    f(x).sum().backward()
    f(x).sum().backward()  # .grad is set now; the graph never looked at it
    assert f.cache_info().misses == 1
    assert_close(w.grad, np.full(3, 2.0, np.float32))


def test_a_compiled_call_leaves_no_reference_cycle():
    import gc

    @tj.trace
    def f(x, y):
        return (x * y + 1).relu(), {"a": [x.sum()]}

    x = tj.ones(8)
    for _ in range(3):
        f(x, x)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        y = f(x, x)
        del y
        gc.collect()
        assert gc.garbage == []  # results are freed when the last reference goes
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
