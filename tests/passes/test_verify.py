"""verify: well-formed graphs pass unchanged; malformed ones are refused with a message naming
the node and the problem."""

import dataclasses

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import Graph, GraphBuilder, Node, Var
from tracejit.passes import IRError, run_pipeline, verify

from . import const, node, traced


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TRACEJIT_VERIFY", "1")
    monkeypatch.delenv("TRACEJIT_DEBUG", raising=False)


def _good():
    b = GraphBuilder()
    x = b.add_input("x", (2, 3), np.float32)
    w = b.add_input("w", (3, 4), np.float32)
    y = node(b, "matmul", x, w)
    z = node(b, "relu", y)
    return b, x, w, y, z


def test_well_formed_graphs_pass_and_are_returned():
    b, x, w, y, z = _good()
    g = b.build([z, 1.5])
    assert verify(g) is g
    raw, opt = traced(lambda x, w: ((x @ w).relu() + 1).sum(0), tj.randn(2, 3), tj.randn(3, 4))
    assert verify(raw) is raw and verify(opt) is opt


def test_use_before_definition():
    b = GraphBuilder()
    x = b.add_input("x", (3,), np.float32)
    later = Var(7, (3,), np.dtype(np.float32))
    y = b.add_node("add", [x, later], {}, (3,), np.float32)
    with pytest.raises(IRError, match=r"node %1 \(add\): uses %7, which is not defined before it"):
        verify(b.build([y]))


def test_use_of_a_later_node_is_refused_too():
    b, x, w, y, z = _good()
    g = b.build([z])
    swapped = dataclasses.replace(g, nodes=g.nodes[::-1])
    with pytest.raises(IRError, match=r"node %3 \(relu\): uses %2, which is not defined before"):
        verify(swapped)


def test_undefined_output():
    b, x, w, y, z = _good()
    ghost = Var(99, (2, 4), np.dtype(np.float32))
    with pytest.raises(IRError, match=r"output 1: uses %99, which is not defined before it"):
        verify(b.build([z, ghost]))


def test_var_used_with_the_wrong_type():
    b, x, w, y, z = _good()
    wrong = Var(y.id, (2, 4), np.dtype(np.float64))  # %2 is f32[2,4]
    bad = b.add_node("neg", [wrong], {}, (2, 4), np.float64)
    with pytest.raises(IRError, match=r"node %4 \(neg\): uses %2 as f64\[2,4\] but it is defined "
                                      r"as f32\[2,4\]"):
        verify(b.build([bad]))


def test_output_with_the_wrong_shape():
    b, x, w, y, z = _good()
    with pytest.raises(IRError, match=r"output 0: uses %3 as f32\[4,2\] but it is defined as "
                                      r"f32\[2,4\]"):
        verify(b.build([Var(z.id, (4, 2), np.dtype(np.float32))]))


@pytest.mark.parametrize("shape, dtype, declared, actual", [
    ((2, 4), np.float64, r"f64\[2,4\]", r"f32\[2,4\]"),  # wrong dtype
    ((4, 2), np.float32, r"f32\[4,2\]", r"f32\[2,4\]"),  # wrong shape
    ((2, 4, 1), np.float32, r"f32\[2,4,1\]", r"f32\[2,4\]"),  # wrong rank
])
def test_declared_type_disagrees_with_the_op_rule(shape, dtype, declared, actual):
    b = GraphBuilder()
    x = b.add_input("x", (2, 3), np.float32)
    w = b.add_input("w", (3, 4), np.float32)
    y = b.add_node("matmul", [x, w], {}, shape, dtype)
    with pytest.raises(IRError, match=rf"node %2 \(matmul\): declared {declared} but the op "
                                      rf"gives {actual}"):
        verify(b.build([y]))


def test_promotion_is_part_of_the_rule():
    b = GraphBuilder()
    x = b.add_input("x", (3,), np.int64)
    y = b.add_node("div", [x, 2], {}, (3,), np.int64)  # int / int is float32
    with pytest.raises(IRError, match=r"node %1 \(div\): declared i64\[3\] but the op gives "
                                      r"f32\[3\]"):
        verify(b.build([y]))


def test_const_type_must_match_its_value():
    b = GraphBuilder()
    c = const(b, [1.0, 2.0], np.float32)
    g = b.build([c])
    verify(g)
    (n,) = g.nodes
    bad = dataclasses.replace(g, nodes=(dataclasses.replace(n, out=Var(n.out.id, (3,),
                                                                       np.dtype(np.float32))),),
                              outputs=(Var(n.out.id, (3,), np.dtype(np.float32)),))
    with pytest.raises(IRError, match=r"node %0 \(const\): declared f32\[3\] but the op gives "
                                      r"f32\[2\]"):
        verify(bad)


def test_unknown_op():
    b = GraphBuilder()
    x = b.add_input("x", (3,), np.float32)
    y = b.add_node("frobnicate", [x], {}, (3,), np.float32)
    with pytest.raises(IRError, match=r"node %1 \(frobnicate\): unknown op 'frobnicate'"):
        verify(b.build([y]))


def test_operands_that_do_not_fit_the_op():
    b = GraphBuilder()
    x = b.add_input("x", (2, 3), np.float32)
    y = b.add_input("y", (4,), np.float32)
    z = b.add_node("add", [x, y], {}, (2, 3), np.float32)
    with pytest.raises(IRError, match=r"node %2 \(add\): its operands do not fit the op: add: "
                                      r"shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        verify(b.build([z]))


def test_missing_attribute_is_a_misfit_too():
    b = GraphBuilder()
    x = b.add_input("x", (2, 3), np.float32)
    y = b.add_node("sum", [x], {"keepdim": False}, (), np.float32)
    with pytest.raises(IRError, match=r"node %1 \(sum\): its operands do not fit the op:.*dims"):
        verify(b.build([y]))


def test_duplicate_definition():
    b, x, w, y, z = _good()
    g = b.build([z])
    dup = Node(Var(y.id, (2, 4), np.dtype(np.float32)), "neg", (y,))
    bad = dataclasses.replace(g, nodes=g.nodes + (dup,))
    with pytest.raises(IRError, match=r"node %2 \(neg\): %2 is assigned twice \(not SSA\)"):
        verify(bad)


def test_node_redefining_an_input():
    b, x, w, y, z = _good()
    g = b.build([z])
    bad = dataclasses.replace(g, nodes=(Node(x, "neg", (w,)),) + g.nodes)
    with pytest.raises(IRError, match=r"node %0 \(neg\): %0 is assigned twice \(not SSA\)"):
        verify(bad)


def test_duplicate_input_and_names():
    x = Var(0, (3,), np.dtype(np.float32))
    with pytest.raises(IRError, match=r"input %0 is defined twice"):
        verify(Graph((x, x), ("a", "b"), (), (x,)))
    with pytest.raises(IRError, match=r"graph has 1 inputs but 2 names"):
        verify(Graph((x,), ("a", "b"), (), (x,)))


def test_after_names_the_pass():
    b = GraphBuilder()
    x = b.add_input("x", (3,), np.float32)
    y = b.add_node("frobnicate", [x], {}, (3,), np.float32)
    with pytest.raises(IRError, match=r"unknown op 'frobnicate' \(after pass simplify\)$"):
        verify(b.build([y]), after="simplify")


def test_pipeline_verifies_between_passes_when_asked(monkeypatch):
    b, x, w, y, z = _good()
    g = b.build([z])

    def breaks(graph):  # a buggy pass: retypes a node
        n = graph.nodes[-1]
        bad = dataclasses.replace(n, out=Var(n.out.id, n.out.shape, np.dtype(np.float64)))
        return dataclasses.replace(graph, nodes=graph.nodes[:-1] + (bad,))

    passes = [("verify", verify), ("breaks", breaks)]
    with pytest.raises(IRError, match=r"node %3 \(relu\): declared f64\[2,4\] but the op gives "
                                      r"f32\[2,4\] \(after pass breaks\)"):
        run_pipeline(g, passes)
    monkeypatch.setenv("TRACEJIT_VERIFY", "0")
    assert run_pipeline(g, passes).nodes[-1].out.dtype == np.float64  # not checked
    with pytest.raises(IRError, match=r"after pass breaks"):
        run_pipeline(g, passes, verify_each=True)


def test_traced_graphs_of_every_kind_of_node_verify():
    def fn(x, i):
        y = x.clone()
        y[i] = 0.0
        return (y.softmax(1), x[i, :2].cumsum(0), tj.cat([x, x]).T, x.gather(1, i.reshape(3, 1)),
                x.argmax(1), tj.rand(2), tj.tensor([1, 2]) * 2, x.to(tj.int64).sum())

    raw, opt = traced(fn, tj.randn(3, 4), tj.tensor([0, 2, 1]))
    verify(raw)
    verify(opt)
