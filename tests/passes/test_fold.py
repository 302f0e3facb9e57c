"""fold: nodes whose operands are all constants are computed at trace time into ``const``
nodes; random draws and large results stay computed at run time."""

import importlib

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import GraphBuilder
from tracejit.passes import dce, fold

from . import assert_agree, const, node, ops_of, traced

fold_module = importlib.import_module("tracejit.passes.fold")  # the package re-exports fold()


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TRACEJIT_VERIFY", "1")
    monkeypatch.delenv("TRACEJIT_DEBUG", raising=False)


def _value(graph, var):
    n = graph.producers()[var.id]
    assert n.op == "const"
    return n.attr_dict["value"].array


def test_constant_subgraph_becomes_one_const():
    b = GraphBuilder()
    x = b.add_input("x", (3,), np.float32)
    c = const(b, [1.0, 2.0, 3.0], np.float32)
    e = node(b, "exp", c)
    s = node(b, "mul", e, 2)
    t = node(b, "sum", s, dims=(0,), keepdim=True)
    y = node(b, "add", x, t)
    g = b.build([y])
    folded = fold(g)
    assert ops_of(folded) == ["const"] * 4 + ["add"]
    assert_agree(g, folded)
    np.testing.assert_allclose(_value(folded, t), [2 * np.exp([1, 2, 3]).sum()], rtol=1e-6)
    assert _value(folded, t).dtype == np.float32
    cleaned = dce(folded)
    assert ops_of(cleaned) == ["const", "add"]  # one const where the subgraph was
    assert_agree(g, cleaned)


def test_folding_keeps_types_and_promotion():
    b = GraphBuilder()
    i = const(b, [1, 2, 3], np.int64)
    h = node(b, "div", i, 2)  # int / int is float32
    k = node(b, "floordiv", i, 2)
    m = node(b, "cast", k, dtype=np.dtype(np.float64))
    w = node(b, "where", node(b, "gt", i, 1), 1.0, 0.0)
    g = b.build([h, k, m, w])
    folded = dce(fold(g))
    assert set(ops_of(folded)) == {"const"}
    assert [_value(folded, v).dtype for v in (h, k, m, w)] == [np.float32, np.int64, np.float64,
                                                               np.float32]
    assert _value(folded, h).tolist() == [0.5, 1.0, 1.5]
    assert _value(folded, w).tolist() == [0.0, 1.0, 1.0]
    assert_agree(g, folded)


def test_nodes_with_a_runtime_operand_stay():
    b = GraphBuilder()
    x = b.add_input("x", (2,), np.float32)
    c = const(b, [1.0, 2.0], np.float32)
    y = node(b, "mul", x, c)
    z = node(b, "exp", y)
    g = b.build([z])
    assert ops_of(fold(g)) == ["const", "mul", "exp"]
    assert fold(g) == g


def test_random_draws_are_not_folded():
    b = GraphBuilder()
    r = node(b, "uniform", shape=(3,), dtype=np.dtype(np.float32))
    y = node(b, "mul", r, 2.0)
    g = b.build([y])
    folded = fold(g)
    assert ops_of(folded) == ["uniform", "mul"]
    assert_agree(g, folded)


def test_large_results_are_left_to_run_time(monkeypatch):
    monkeypatch.setattr(fold_module, "MAX_FOLDED_ELEMENTS", 4)
    b = GraphBuilder()
    small = node(b, "mul", const(b, np.ones(4, np.float32)), 2.0)
    big = node(b, "mul", const(b, np.ones(5, np.float32)), 2.0)
    expanded = node(b, "expand", const(b, 1.0, np.float32), shape=(100,))
    g = b.build([small, big, expanded])
    assert ops_of(fold(g)) == ["const", "const", "const", "mul", "const", "expand"]
    assert_agree(g, fold(g))


def test_view_ops_fold_into_independent_read_only_copies():
    b = GraphBuilder()
    c = const(b, np.arange(6, dtype=np.float32).reshape(2, 3))
    t = node(b, "permute", c, perm=(1, 0))
    r = node(b, "reshape", t, shape=(6,))
    g = b.build([r])
    folded = fold(g)
    v = _value(folded, r)
    assert v.tolist() == [0, 3, 1, 4, 2, 5]
    assert not v.flags.writeable
    assert_agree(g, folded)


def test_traced_python_constants_fold():
    def fn(x):
        scale = (tj.tensor([1.0, 4.0]).sqrt() * 3).sum()  # all from Python data
        return x * scale + tj.arange(2).float()

    raw, opt = traced(fn, tj.randn(2))
    assert "sqrt" in ops_of(raw) and "sqrt" not in ops_of(opt)
    assert opt.op_counts() == {"const": 2, "mul": 1, "add": 1}
    assert_agree(raw, opt)
    assert_agree(raw, fold(raw))


def test_traced_inputs_are_never_folded():
    # a captured parameter is a graph input, read afresh each call: not a constant
    w = tj.tensor([1.0, 2.0])

    def fn(x):
        return x + (w * 2).exp()

    raw, opt = traced(fn, tj.randn(2))
    assert ops_of(fold(raw)) == ops_of(raw)
    assert "exp" in ops_of(opt)


def test_const_outputs_and_scalar_outputs():
    b = GraphBuilder()
    c = node(b, "neg", const(b, [1, -2], np.int64))
    g = b.build([c, 3])
    folded = fold(g)
    assert_agree(g, folded)
    assert _value(folded, c).tolist() == [-1, 2]
