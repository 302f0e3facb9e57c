"""cse: nodes computing the same op on the same operands with the same attributes become one;
random draws never merge, and operands that compare equal in Python but differ (1, 1.0, True,
0.0 and -0.0) stay apart."""

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import GraphBuilder
from tracejit.passes import cse, dce

from . import assert_agree, const, node, ops_of, run, traced


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TRACEJIT_VERIFY", "1")
    monkeypatch.delenv("TRACEJIT_DEBUG", raising=False)


def test_duplicates_merge_transitively():
    b = GraphBuilder()
    x = b.add_input("x", (2, 3), np.float32)
    a1, a2 = node(b, "exp", x), node(b, "exp", x)
    s1, s2 = node(b, "add", a1, 1.0), node(b, "add", a2, 1.0)  # equal once a2 is a1
    r1, r2 = node(b, "sum", s1, dims=(1,), keepdim=False), node(b, "sum", s2, dims=(1,),
                                                                  keepdim=False)
    g = b.build([r1, r2, s2])
    c = cse(g)
    assert ops_of(c) == ["exp", "add", "sum"]
    assert c.outputs == (r1, r1, s1)
    assert_agree(g, c)


def test_different_attributes_operand_order_and_types_stay_apart():
    b = GraphBuilder()
    x = b.add_input("x", (2, 3), np.float32)
    y = b.add_input("y", (2, 3), np.float32)
    outs = [node(b, "sum", x, dims=(0,), keepdim=False), node(b, "sum", x, dims=(1,),
                                                              keepdim=False),
            node(b, "sum", x, dims=(0,), keepdim=True), node(b, "sub", x, y),
            node(b, "sub", y, x), node(b, "cast", x, dtype=np.dtype(np.float64)),
            node(b, "cast", x, dtype=np.dtype(np.int64)),
            node(b, "reshape", x, shape=(3, 2)), node(b, "reshape", x, shape=(6,))]
    g = b.build(outs)
    assert cse(g) == g


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_one_one_point_zero_and_true_are_different_operands(dtype):
    b = GraphBuilder()
    x = b.add_input("x", (3,), dtype)
    outs = [node(b, "add", x, 1), node(b, "add", x, 1.0), node(b, "add", x, True),
            node(b, "add", x, 1), node(b, "add", x, 1.0), node(b, "add", x, True)]
    g = b.build(outs)
    c = cse(g)
    assert len(c) == 3
    assert [n.inputs[1] for n in c.nodes] == [1, 1.0, True]
    assert [type(n.inputs[1]) for n in c.nodes] == [int, float, bool]
    assert c.outputs[3:] == c.outputs[:3]
    assert_agree(g, c)


def test_where_with_int_and_float_branches_stays_apart():
    b = GraphBuilder()
    m = b.add_input("m", (3,), np.bool_)
    a, f = node(b, "where", m, 1, 0), node(b, "where", m, 1.0, 0.0)
    g = b.build([a, f])
    c = cse(g)
    assert len(c) == 2
    out = run(c, [np.array([True, False, True])])
    assert out[0].dtype == np.int64 and out[1].dtype == np.float32


def test_signed_zeros_are_different_operands():
    b = GraphBuilder()
    x = b.add_input("x", (3,), np.float32)
    p, n = node(b, "mul", x, 0.0), node(b, "mul", x, -0.0)
    g = b.build([node(b, "div", 1.0, p), node(b, "div", 1.0, n)])
    c = cse(g)
    assert len(c) == 4
    out = run(c, [np.array([-1.0, 1.0, 2.0], np.float32)])
    assert out[0].tolist() == [-np.inf, np.inf, np.inf]
    assert out[1].tolist() == [np.inf, -np.inf, -np.inf]
    pads = [node(b, "pad", x, pad=(1, 0), value=v) for v in (0.0, -0.0, 0.0)]
    c = cse(b.build(pads))
    assert sum(n.op == "pad" for n in c.nodes) == 2  # pad value -0.0 is its own


def test_equal_constants_merge_by_content_not_identity():
    b = GraphBuilder()
    x = b.add_input("x", (3,), np.float32)
    c1 = const(b, [1.0, 2.0, 3.0], np.float32)
    c2 = const(b, np.array([1.0, 2.0, 3.0], np.float32))
    c3 = const(b, [1.0, 2.0, 3.0], np.float64)  # same numbers, other dtype
    c4 = const(b, [1, 2, 3], np.int64)
    g = b.build([node(b, "add", x, c1), node(b, "add", x, c2), node(b, "add", x, c3),
                 node(b, "add", x, c4)])
    c = cse(g)
    assert ops_of(c) == ["const", "const", "const", "add", "add", "add"]
    assert c.outputs[0] == c.outputs[1]
    assert len(set(c.outputs)) == 3
    assert_agree(g, c)


def test_random_draws_never_merge():
    b = GraphBuilder()
    r1 = node(b, "uniform", shape=(4,), dtype=np.dtype(np.float32))
    r2 = node(b, "uniform", shape=(4,), dtype=np.dtype(np.float32))
    n1 = node(b, "normal", shape=(4,), dtype=np.dtype(np.float32))
    n2 = node(b, "normal", shape=(4,), dtype=np.dtype(np.float32))
    i1 = node(b, "randint", shape=(4,), dtype=np.dtype(np.int64), low=0, high=100)
    i2 = node(b, "randint", shape=(4,), dtype=np.dtype(np.int64), low=0, high=100)
    g = b.build([node(b, "sub", r1, r2), node(b, "sub", n1, n2), node(b, "sub", i1, i2)])
    c = cse(g)
    assert c == g
    out = run(c, [])
    assert all(o.any() for o in out)  # two draws differ
    assert_agree(g, c)


def test_nodes_consuming_one_draw_do_merge():
    b = GraphBuilder()
    r = node(b, "normal", shape=(3,), dtype=np.dtype(np.float32))
    g = b.build([node(b, "exp", r), node(b, "exp", r)])
    c = cse(g)
    assert ops_of(c) == ["normal", "exp"]
    assert_agree(g, c)


def test_traced_graph():
    def fn(x):
        a = x.softmax(-1) + x.softmax(-1)  # the same computation twice
        r = tj.rand(2, 3) - tj.rand(2, 3)  # two draws
        return a, r, x.exp() * x.exp()

    x = tj.randn(2, 3)
    raw, opt = traced(fn, x)
    merged = dce(cse(raw))
    assert len(merged) < len(raw)
    assert merged.op_counts()["exp"] == 2  # one exp per softmax + x.exp, merged
    assert merged.op_counts()["uniform"] == 2
    assert_agree(raw, merged)
    assert_agree(raw, opt)
    f = tj.trace(fn, backend="interpret")
    tj.manual_seed(3)
    want = [t.numpy() for t in fn(x)]
    tj.manual_seed(3)
    f(x)
    tj.manual_seed(3)
    for g, w in zip(f(x), want):
        np.testing.assert_array_equal(g.numpy(), w)
