"""The CPU compiler: compiled == eager == interpreted, fusion kernel counts, golden source,
size-generic kernels."""

import os
import pathlib

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit.codegen import cpu, lower
from tracejit.codegen.cpu import _HAVE_SCIPY
from tracejit.passes.fuse import fuse

from ..conftest import noncontig

GOLDEN = pathlib.Path(__file__).parent / "golden"


def compiled(fn, **kw):
    return tj.trace(fn, backend="cpu", **kw)


def check(fn, *args, rtol=1e-5, atol=1e-6):
    """fn eager, traced on the interpreter, and compiled agree (compiled: 2nd call runs code)."""
    eager = fn(*args)
    interp = tj.trace(fn, backend="interpret")
    comp = compiled(fn)
    interp(*args)
    comp(*args)
    results = {"interpreted": interp(*args), "compiled": comp(*args)}
    want = eager if isinstance(eager, tuple) else (eager,)
    for name, got in results.items():
        got = got if isinstance(got, tuple) else (got,)
        for g, w in zip(got, want):
            g, w = g.numpy(), w.numpy()
            assert g.shape == w.shape and g.dtype == w.dtype, (name, g.shape, g.dtype, w.dtype)
            if w.dtype.kind == "f":
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True,
                                           err_msg=name)
            else:
                np.testing.assert_array_equal(g, w, err_msg=name)
    return comp


def kernels(fn, *args):
    return [n for n in fn.graph(*args).nodes if n.op == "fused"]


def _chain(a, b, c):
    x = a * b
    x = x + c
    x = x.tanh()
    x = x * 0.5
    x = x - a
    x = x.exp()
    x = x / (b + 2.0)
    x = x.clamp(min=0.1)
    x = x.sqrt()
    return x * c


def test_ten_op_chain_is_one_kernel():
    a, b, c = (tj.randn(64, 33) for _ in range(3))
    f = check(_chain, a, b, c, rtol=2e-5)
    ks = kernels(f, a, b, c)
    assert len(ks) == 1 and len(f.graph(a, b, c).nodes) == 1
    assert len(ks[0].attr_dict["body"].nodes) >= 10


def _lstm_cell(gates, c):
    i, f, g, o = gates.chunk(4, -1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c2 = f * c + i * g
    return o * c2.tanh(), c2, i, f, g, o  # the gates are what a backward pass reads


def test_values_needed_outside_are_extra_outputs_of_one_kernel():
    gates, c = tj.randn(4, 20), tj.randn(4, 5)
    f = check(_lstm_cell, gates, c)
    graph = f.graph(gates, c)
    (k,) = kernels(f, gates, c)
    assert len(k.attr_dict["outputs"]) == 5  # h2 is the root; c2 and the four gates are extra
    assert all(n.op in ("fused", "getitem") for n in graph.nodes)
    src = f.source(gates, c)
    assert "out5[i0, i1] = " in src and "-> out: f32[n,n], out1: f32[n,n]" in src
    # the fused graph still runs on the reference interpreter, and prints every binder
    from tracejit.runtime.interpret import interpret
    got = interpret(graph, [gates.numpy(), c.numpy()])
    for g, w in zip(got, _lstm_cell(gates, c)):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-6)
    assert ", %" in str(graph).split("fused")[0].splitlines()[-1]


def test_a_value_used_before_the_kernel_runs_is_not_exported():
    def fn(x):
        a = x.exp()
        b = a.sum()  # uses a before the elementwise tail below runs: the tail cannot write a
        return (a * 2 + b).tanh()

    x = tj.randn(6, 7)
    f = check(fn, x, rtol=1e-5)
    total, tail = kernels(f, x)
    assert "outputs" not in tail.attr_dict
    # the sum's row kernel, which runs first, writes a as it sums it
    assert [v.shape for v in total.attr_dict["outputs"]] == [(6, 7)]


@pytest.mark.parametrize("fn, max_kernels", [
    (lambda x: x.softmax(-1), 1),
    (lambda x: x.log_softmax(-1), 1),
    (lambda x: x.logsumexp(-1), 1),
    (lambda x: F.layer_norm(x, (x.shape[-1],), tj.ones(x.shape[-1]), tj.zeros(x.shape[-1])), 1),
    (lambda x: ((x - 0.5) ** 2).mean(), 1),
    (lambda x: x.var(-1), 1),
])
def test_row_reductions_fuse(fn, max_kernels):
    x = tj.randn(16, 40)
    f = check(fn, x, rtol=1e-4, atol=1e-5)
    assert len(kernels(f, x)) <= max_kernels
    # one pass over the data per kernel: no intermediate is materialised between them
    assert all(n.op in ("fused", "reshape") for n in f.graph(x).nodes)


def _log_softmax_parts(x):
    m = x.amax(-1, keepdim=True)
    xm = x - m
    e = xm.exp()
    s = e.sum(-1, keepdim=True)
    ls = s.log()
    return xm - ls, e, s, ls, xm  # the root, then what a backward pass could read


@pytest.mark.parametrize("dtype, threads", [(np.float32, False), (np.float64, False),
                                           (np.float32, True)])
@pytest.mark.parametrize("fn, shapes, extras", [
    # vectors written by a reduction's loop (e) and by the output loop (xm); row scalars by a
    # reduction (s) and by a row statement (ls); 3-D: rows over the last dim; rows of 1500: the
    # float32 sum's block loop writes e
    (_log_softmax_parts, [(5, 7)], 4), (_log_softmax_parts, [(2, 3, 7)], 4),
    (_log_softmax_parts, [(3, 1500)], 4),
    # a column sum (rows over dim 0) that also writes the vector it sums
    (lambda x, y: ((x * y + 1).sum(0, keepdim=True), x * y + 1), [(6, 5), (6, 5)], 1),
    # a full reduction to a 0-d value, kept: written once, at ()
    (lambda x: ((x * x).sum() / 3, (x * x).sum(), x * x), [(4, 6)], 2),
])
def test_row_kernels_write_extra_outputs(fn, shapes, extras, dtype, threads, monkeypatch):
    if threads:  # numba.prange over the outer loop, or over the row of a full reduction
        monkeypatch.setattr(cpu, "PARALLEL_MIN", 16)
    rng = np.random.default_rng(0)
    args = [tj.from_numpy(rng.standard_normal(s).astype(dtype)) for s in shapes]
    comp, interp = compiled(fn), tj.trace(fn, backend="interpret")
    for _ in range(2):  # the second call runs the compiled code
        got = comp(*args)
    (k,) = kernels(comp, *args)
    assert k.attr_dict["row_dims"] and len(k.attr_dict["outputs"]) == extras
    assert ("numba.prange" in comp.source(*args)) == threads
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for g, w in zip(got, interp(*args)):
        assert g.dtype == w.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("shape_a, shape_b", [
    ((), (3, 4)), ((4,), (3, 4)), ((3, 1), (1, 4)), ((2, 3, 1), (3, 5)), ((0, 3), (3,)),
    ((1,), (1,)), ((5,), ()),
])
def test_broadcasting_and_edge_shapes(shape_a, shape_b):
    a, b = tj.randn(shape_a), tj.randn(shape_b)
    check(lambda a, b: (a * b + a).relu() - b.sigmoid(), a, b, rtol=1e-5)


def test_non_contiguous_and_transposed_inputs():
    a = tj.from_numpy(noncontig(np.random.default_rng(0).standard_normal((6, 5)).astype(
        np.float32)))
    b = tj.randn(5, 6).T
    check(lambda a, b: (a * b).exp().sum(-1), a, b, rtol=1e-5)
    check(lambda a, b: a.T.softmax(0) + b.T, a, b, rtol=1e-5)


def test_int_and_bool_dtypes():
    i = tj.randint(-5, 5, (4, 6))
    j = tj.randint(1, 4, (6,)).int()
    m = tj.rand(4, 6) > 0.5
    check(lambda i, j: (i * j + 3, i // j, i % j, i.abs(), i.sum(-1), i.amax(0)), i, j)
    check(lambda i, m: (tj.where(m, i, 0), m & (i > 0), ~m, (i > 0) | m, m.sum()), i, m)
    check(lambda i: (i.float() / 3, (i * 1.5).long(), i == 2), i)


def test_mixed_dtypes_and_scalars_keep_float32():
    x = tj.randn(8)
    y = tj.randn(8, dtype=tj.float64)
    f = check(lambda x, y: (x * 2.5 + 1, x + y, (x * 0.1).exp()), x, y)
    src = f.source(x, y)
    assert "np.float32(2.5)" in src  # Python scalars are typed: float32 math stays float32


def test_special_values_propagate():
    x = tj.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-40, 3.0])
    check(lambda x: (x.relu(), tj.maximum(x, 0.0), x.clamp(-1, 1), x.sign(), x.isnan(),
                     x.isfinite(), x.exp(), x.tanh(), x.sigmoid(), (x * 0).floor()), x,
          rtol=1e-5, atol=1e-6)


def test_matmul_with_fused_epilogue():
    x, w, b = tj.randn(8, 16), tj.randn(16, 4), tj.randn(4)
    f = check(lambda x, w, b: (x @ w + b).relu(), x, w, b, rtol=1e-4, atol=1e-5)
    ops_run = [n.op for n in f.graph(x, w, b).nodes]
    assert ops_run == ["matmul", "fused"]
    if _HAVE_SCIPY:  # numba's np.dot needs scipy; without it matmul runs through numpy
        assert "np.dot(" in f.source(x, w, b)
    else:
        assert "_fallback[" in f.source(x, w, b)


def test_ops_without_kernels_run_through_numpy():
    x = tj.randn(2, 3, 6, 6)
    w = tj.randn(4, 3, 3, 3)
    idx = tj.tensor([1, 0, 1])
    f = check(lambda x, w, idx: F.conv2d(x, w, padding=1).relu()[idx].cumsum(1), x, w, idx,
              rtol=1e-4, atol=1e-4)
    assert "_fallback[" in f.source(x, w, idx)


def test_cat_and_basic_index_put_run_in_the_njit_entry():
    def fn(x, y, z):
        a = tj.cat([x, y], 1)
        b = tj.zeros(4, 6)
        b[:, 1:3] = z  # index_put into a constant
        c = b * 1
        c[:, -1] = 2.0
        return a * 2, c

    x, y, z = tj.randn(4, 3), tj.randn(4, 2), tj.randn(4, 2)
    f = check(fn, x, y, z)
    src = f.source(x, y, z)
    assert "np.concatenate((in0, in1,), axis=1)" in src and "_fallback" not in src
    assert "@numba.njit(cache=True, error_model='numpy')\ndef entry" in src


@pytest.mark.parametrize("limit", ["MAX_JIT_ENTRY_NODES", "JIT_ENTRY_MAX_ELEMENTS"])
def test_very_large_graphs_get_a_python_entry(monkeypatch, limit):
    import tracejit.codegen.cpu as cpu
    monkeypatch.setattr(cpu, limit, 2)  # two nodes, two elements
    x = tj.randn(8, 8)
    f = check(lambda x: (x @ x).relu() @ x + 1, x)
    src = f.source(x)
    assert "\ndef entry(" in src and "@numba.njit(cache=True, error_model='numpy')\ndef entry" \
        not in src


def test_new_batch_size_reuses_machine_code():
    f = compiled(lambda x, b: (x * 2 + b).tanh().sum(-1))
    b = tj.randn(10)
    f(tj.randn(4, 10), b)
    f(tj.randn(4, 10), b)
    spec1 = f.specs()[0]
    f(tj.randn(7, 10), b)  # retraces (new shape) ...
    f(tj.randn(7, 10), b)
    assert f.cache_info().specializations == 2
    spec2 = f.specs()[1]
    assert spec1.lowered.source == spec2.lowered.source  # ... but the code is the same
    assert spec1.runner.module is spec2.runner.module
    assert len(spec2.runner.module.entry.overloads) == 1  # no second numba compile


def test_outputs_are_writable_and_mutation_written_back():
    @compiled
    def f(x, acc):
        acc.add_(x * 2)
        return tj.zeros(3), acc.sum()

    x, acc = tj.ones(3), tj.zeros(3)
    for i in range(1, 4):
        z, s = f(x, acc)
        z.add_(1)  # a fresh, writable result each call
        assert acc.tolist() == [2.0 * i] * 3 and s.item() == 6.0 * i
    assert f(x, acc)[0].tolist() == [0, 0, 0]


def test_fastmath_and_precise_math_options():
    x = tj.linspace(-5, 5, 101)
    fast = compiled(lambda x: x.tanh() + x.exp())
    precise = compiled(lambda x: x.tanh() + x.exp(), precise_math=True)
    loose = compiled(lambda x: x.tanh() + x.exp(), fastmath=True)
    want = np.tanh(x.numpy().astype(np.float64)) + np.exp(x.numpy().astype(np.float64))
    for f in (fast, precise, loose):
        f(x)
        np.testing.assert_allclose(f(x).numpy(), want, rtol=2e-6, atol=1e-6)
    assert "FAST as _math" in fast.source(x) and "PRECISE as _math" in precise.source(x)
    assert "FASTMATH = True" in loose.source(x)


@pytest.mark.parametrize("name, fn, shapes, blas", [
    ("add_relu", lambda x, b: (x + b).relu(), [(4, 8), (8,)], None),
    ("softmax", lambda x: x.softmax(-1), [(4, 8)], None),
    ("mlp", lambda x, w, b: (x @ w + b).relu(), [(4, 8), (8, 3), (3,)], True),
    ("mlp_without_scipy", lambda x, w, b: (x @ w + b).relu(), [(4, 8), (8, 3), (3,)], False),
])
def test_golden_source(name, fn, shapes, blas, monkeypatch):
    """The source of small graphs, byte for byte. Whether matmul calls BLAS (np.dot, through
    scipy) or runs through numpy is a renderer setting: both goldens are checked everywhere,
    with the setting forced (the text is compared, not run)."""
    args = [tj.randn(*s) for s in shapes]
    if blas is None:
        f = compiled(fn)
        f(*args)
        src = f.source(*args)
    else:
        monkeypatch.setattr(cpu, "_HAVE_SCIPY", blas)
        src = lower(fuse(tj.trace(fn, backend="interpret").graph(*args)), "cpu").source
    path = GOLDEN / f"{name}.py"
    if os.environ.get("TRACEJIT_UPDATE_GOLDEN"):
        path.write_text(src)
    assert path.exists(), f"no golden file {path}: generate it with TRACEJIT_UPDATE_GOLDEN=1"
    assert src == path.read_text(), (
        f"generated source for {name} changed; if intended, rerun with TRACEJIT_UPDATE_GOLDEN=1 "
        f"and review the diff of {path}")


def test_compiled_function_called_with_grad_inputs_is_differentiable():
    w = tj.randn(3, 2, requires_grad=True)
    f = compiled(lambda x: ((x @ w).tanh() ** 2).sum())
    x = tj.randn(4, 3, requires_grad=True)
    for _ in range(3):  # the first call traces; later calls must keep giving a grad_fn
        w.grad = x.grad = None
        f(x).backward()
    gw, gx = w.grad.numpy().copy(), x.grad.numpy().copy()
    w2 = w.detach().clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    ((x2 @ w2).tanh() ** 2).sum().backward()
    np.testing.assert_allclose(gw, w2.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(gx, x2.grad.numpy(), rtol=1e-5)
    with tj.no_grad():  # without grad mode the compiled code runs
        f(x)
        assert f(x).grad_fn is None


def test_every_function_a_template_calls_is_bound_by_generated_source():
    # ops.template_calls() is derived from the op table; codegen/cpu.py CALLS spells each one
    from tracejit.codegen import cpu

    assert cpu.unbound_calls() == []
    assert cpu.spelled("maximum({0}, {1})") == "maximum({0}, {1})"
    assert cpu.spelled("sinh({0})") == "math.sinh({0})"  # this target's override


def test_a_call_generated_source_cannot_make_is_unsupported(monkeypatch):
    from tracejit.codegen import cpu

    monkeypatch.setitem(cpu.CALLS, "nosuch", "nosuch")
    cpu.spelled.cache_clear()
    assert cpu.unbound_calls() == ["nosuch"]
    with pytest.raises(cpu.Unsupported):
        cpu.spelled("nosuch({0})")
    cpu.spelled.cache_clear()


def test_an_entry_calling_threaded_kernels_is_python(monkeypatch):
    # see tests/runtime/test_cache_faults.py: numba's cache cannot link threaded kernels into a
    # cached @njit entry safely; small graphs (serial kernels) keep their one-dispatch entry
    monkeypatch.setattr(cpu, "PARALLEL_MIN", 1 << 12)  # threads for a graph small in elements
    n = int(cpu.PARALLEL_MIN ** 0.5) + 1
    f = check(lambda x: (x * 2 + 1).relu() @ x, tj.randn(n, n), rtol=1e-4, atol=1e-4)
    src = f.source(tj.randn(n, n))
    assert "numba.prange" in src and "\ndef entry(" in src and "@numba.njit(cache=True, " \
        "error_model='numpy')\ndef entry" not in src
    small = check(lambda x: (x * 2 + 1).relu() @ x, tj.randn(4, 4))
    assert "@numba.njit(cache=True, error_model='numpy')\ndef entry" in small.source(tj.randn(4, 4))
