"""dce: nodes no output needs are dropped; random draws stay (the generator must advance as it
would eagerly), and so does everything they read."""

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import GraphBuilder
from tracejit.passes import dce

from . import assert_agree, const, node, ops_of, run, traced


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TRACEJIT_VERIFY", "1")
    monkeypatch.delenv("TRACEJIT_DEBUG", raising=False)


def test_dead_nodes_and_chains_go():
    b = GraphBuilder()
    x = b.add_input("x", (2, 3), np.float32)
    unused = b.add_input("unused", (4,), np.float32)
    live = node(b, "exp", x)
    dead = node(b, "sum", node(b, "log", node(b, "mul", x, 2.0)), dims=(0,), keepdim=False)
    node(b, "neg", unused)
    node(b, "add", dead, 1.0)
    const(b, [1.0, 2.0])
    out = node(b, "add", live, 1.0)
    g = b.build([out])
    d = dce(g)
    assert ops_of(d) == ["exp", "add"]
    assert d.inputs == g.inputs  # inputs are the calling convention: never removed
    assert_agree(g, d)


def test_everything_live_stays_in_order():
    b = GraphBuilder()
    x = b.add_input("x", (3,), np.float32)
    a = node(b, "exp", x)
    c = node(b, "sin", a)
    e = node(b, "add", a, c)
    g = b.build([e, c, 2.0])
    assert dce(g) == g


def test_outputs_only_from_inputs_and_scalars():
    b = GraphBuilder()
    x = b.add_input("x", (3,), np.float32)
    node(b, "exp", x)
    g = b.build([x, 3])
    d = dce(g)
    assert len(d) == 0 and d.outputs == (x, 3)
    assert_agree(g, d)


def test_unused_random_draws_stay():
    b = GraphBuilder()
    x = b.add_input("x", (3,), np.float32)
    first = node(b, "uniform", shape=(5,), dtype=np.dtype(np.float32))  # dead, but it draws
    shifted = node(b, "mul", first, 2.0)  # dead and not random: goes
    second = node(b, "uniform", shape=(3,), dtype=np.dtype(np.float32))
    node(b, "randint", shape=(2,), dtype=np.dtype(np.int64), low=0, high=9)
    g = b.build([node(b, "add", x, second)])
    d = dce(g)
    assert ops_of(d) == ["uniform", "uniform", "randint", "add"]
    assert shifted.id not in d.producers()
    assert_agree(g, d)
    # the live draw gives what it would have with the dead draw before it
    tj.manual_seed(4)
    tj.rand(5)
    want = tj.rand(3).numpy()
    np.testing.assert_array_equal(run(d, [np.zeros(3, np.float32)], seed=4)[0], want)


def test_traced_graph_keeps_unused_draws():
    def fn(x):
        tj.randn(3)  # unused
        _ = (x * 2).exp()  # unused
        return x + tj.rand(2)

    x = tj.zeros(2)
    raw, opt = traced(fn, x)
    assert "exp" in ops_of(raw) and "exp" not in ops_of(opt)
    assert ops_of(opt) == ["normal", "uniform", "add"]
    assert_agree(raw, opt)
    f = tj.trace(fn, backend="interpret")
    tj.manual_seed(9)
    want = fn(x).numpy()
    f(x)
    tj.manual_seed(9)
    np.testing.assert_array_equal(f(x).numpy(), want)
