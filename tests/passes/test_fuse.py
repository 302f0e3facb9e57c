"""fuse: which nodes share a kernel, the loop domain of each group, and extra outputs. Every
fused graph must compute what the unfused one does (the interpreter runs a group's body)."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import GraphBuilder, defined_vars
from tracejit.passes.fuse import fuse

from . import assert_agree, node, ops_of, random_args, run, traced


def _groups(graph) -> list:
    return [n for n in graph.nodes if n.op == "fused"]


def _members(group) -> list:
    return [n.op for n in group.attr_dict["body"].nodes]


def test_an_elementwise_chain_is_one_kernel():
    b = GraphBuilder()
    x = b.add_input("x", (4, 5), np.float32)
    y = b.add_input("y", (5,), np.float32)
    out = node(b, "relu", node(b, "mul", node(b, "add", x, y), 2.0))
    g = b.build([out])
    fused = fuse(g)
    (k,) = _groups(fused)
    assert _members(k) == ["add", "mul", "relu"]
    assert k.attr_dict["full"] == (4, 5) and k.attr_dict["row_dims"] == ()
    assert_agree(g, fused)


def test_softmax_is_one_row_kernel():
    raw, opt = traced(lambda x: x.softmax(-1), tj.randn(3, 7))
    fused = fuse(opt)
    (k,) = _groups(fused)
    assert {"amax", "exp", "sum", "div"} <= set(_members(k))
    assert k.attr_dict["full"] == (3, 7) and k.attr_dict["row_dims"] == (1,)
    assert_agree(opt, fused, exact=False)


def test_views_and_matmul_stay_outside_groups():
    raw, opt = traced(lambda x, w: (x @ w).relu().reshape(-1) + 1, tj.randn(2, 3),
                      tj.randn(3, 4))
    fused = fuse(opt)
    assert "matmul" in ops_of(fused) and "reshape" in ops_of(fused)
    for k in _groups(fused):
        assert not {"matmul", "reshape"} & set(_members(k))
    assert_agree(opt, fused, exact=False)


def test_a_value_used_outside_becomes_an_extra_output():
    # the activation is a result too: one loop writes both
    b = GraphBuilder()
    x = b.add_input("x", (8,), np.float32)
    h = node(b, "exp", x)
    out = node(b, "mul", h, 3.0)
    g = b.build([out, h])
    fused = fuse(g)
    (k,) = _groups(fused)
    assert [v.id for v in defined_vars(k)] == [out.id, h.id]
    assert_agree(g, fused, exact=False)


def test_a_value_needed_before_the_group_runs_is_not_exported():
    # %h feeds a matmul that the group's root reads: the group cannot produce h in time
    b = GraphBuilder()
    x = b.add_input("x", (4, 4), np.float32)
    h = node(b, "exp", x)
    m = node(b, "matmul", h, x)
    out = node(b, "add", node(b, "mul", h, 2.0), m)
    g = b.build([out])
    fused = fuse(g)
    for k in _groups(fused):
        assert h.id not in {v.id for v in defined_vars(k)} or m.id not in \
            {x.id for x in k.inputs}
    assert_agree(g, fused, exact=False)


def _cross_entropy_step(x, b, y):
    import tracejit.nn.functional as F
    return tj.value_and_grad(lambda x, b: F.cross_entropy(x + b, y), argnums=(0, 1))(x, b)


def test_log_softmax_and_what_its_backward_reads_are_one_row_kernel():
    # the backward reads exp(x - max) (a vector) and its row sum (a row scalar): the forward's
    # row kernel writes both instead of being split at them into four kernels
    raw, opt = traced(_cross_entropy_step, tj.randn(6, 10), tj.randn(10),
                      tj.randint(0, 10, (6,)))
    fused = fuse(opt)
    (k,) = [k for k in _groups(fused) if "amax" in _members(k)]
    assert {"add", "amax", "sub", "exp", "sum", "log"} <= set(_members(k))
    assert k.attr_dict["row_dims"] == (1,)
    ops = {n.out.id: n.op for n in opt.nodes}
    assert [(ops[v.id], v.shape) for v in k.attr_dict["outputs"]] == [("sum", (6, 1)),
                                                                       ("exp", (6, 10))]
    args = random_args(opt)
    args[2] = np.arange(6) % 10  # labels in range
    for g, w in zip(run(fused, args), run(opt, args)):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


def test_a_row_export_still_waits_for_the_root():
    # the row sum feeds a node before the group's root: the sum's kernel cannot be the root's
    b = GraphBuilder()
    x = b.add_input("x", (4, 6), np.float32)
    e = node(b, "exp", x)
    s = node(b, "sum", e, dims=(1,), keepdim=True)
    m = node(b, "matmul", node(b, "reshape", s, shape=(1, 4)), x)  # uses s early
    out = node(b, "add", node(b, "div", e, node(b, "log", s)), node(b, "sum", m, dims=(1,),
                                                                   keepdim=True))
    g = b.build([out])
    fused = fuse(g)
    for k in _groups(fused):
        if out.id in {v.id for v in defined_vars(k)}:
            assert s.id not in {v.id for v in defined_vars(k)}
    assert_agree(g, fused, exact=False)


def test_an_identity_reduction_is_elementwise():
    # sum over no dims of a 0-d value: once a KeyError in the lowering (issue 9)
    b = GraphBuilder()
    x = b.add_input("x", (), np.float32)
    loss = node(b, "mul", x, 0.7)
    total = node(b, "sum", loss, dims=(), keepdim=False)
    g = b.build([loss, total])
    fused = fuse(g)
    for k in _groups(fused):
        assert k.attr_dict["row_dims"] == ()
    assert_agree(g, fused)


@pytest.mark.parametrize("fn", [
    lambda x: x.log_softmax(-1),
    lambda x: (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + 1e-5).sqrt(),
    lambda x: ((x * 2).exp().sum(), x.relu()),
    lambda x: (x.sum(0, keepdim=True) * x).tanh(),
], ids=["log_softmax", "layer-norm", "two-results", "column-sum"])
def test_fused_graphs_agree_with_unfused(fn):
    raw, opt = traced(fn, tj.randn(5, 6))
    assert_agree(opt, fuse(opt), exact=False)
