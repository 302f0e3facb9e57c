"""The pass pipeline (a readable list, debug printing, custom passes) and the IR's identity and
printing: ``content_hash``, ``format`` and ``to_dot``."""

import re

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import Const, GraphBuilder
from tracejit.passes import (
    COMPILE_PIPELINE,
    PIPELINE,
    cse,
    dce,
    fold,
    fuse,
    run_pipeline,
    simplify,
    verify,
)

from . import assert_agree, const, node, traced


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TRACEJIT_VERIFY", "1")
    monkeypatch.delenv("TRACEJIT_DEBUG", raising=False)
    monkeypatch.delenv("TRACEJIT_DISABLE", raising=False)
    tj.set_mode("trace")


def _model(x, w1, b1, w2):
    h = (x @ w1 + b1).relu()
    y = h @ w2 * 1.0 + 0
    return y.log_softmax(-1), (x * 2 * 3).sum()


_ARGS = (tj.randn(4, 3), tj.randn(3, 5), tj.randn(5), tj.randn(5, 2))


# ----------------------------------------------------------------------------------------------
# the pipeline


def test_pipeline_is_a_readable_list_of_named_passes():
    assert [name for name, *_ in PIPELINE] == ["verify", "fold", "simplify", "cse", "dce",
                                               "verify"]
    assert [fn for _, fn, _ in PIPELINE] == [verify, fold, simplify, cse, dce, verify]
    assert [name for name, *_ in COMPILE_PIPELINE] == ["fuse", "verify"]
    assert COMPILE_PIPELINE[0][1] is fuse
    for _, _, why in PIPELINE + COMPILE_PIPELINE:  # a reason per step, as numba's pass manager
        assert isinstance(why, str) and len(why) > 20


def test_default_pipeline_on_a_traced_graph():
    raw, opt = traced(_model, *_ARGS)
    assert_agree(raw, opt, exact=False)
    assert run_pipeline(raw) == opt
    assert len(opt) < len(raw)
    manual = raw
    for _, fn, _ in PIPELINE:
        manual = fn(manual)
    assert manual == opt


def test_every_prefix_of_the_pipeline_agrees():
    raw, _ = traced(_model, *_ARGS)
    g = raw
    for name, fn, _ in PIPELINE:
        g = fn(g)
        verify(g, after=name)
        assert_agree(raw, g, exact=False)


def test_custom_passes_run_in_order():
    seen = []

    def spy(tag):
        def p(g):
            seen.append((tag, len(g)))
            return g
        return p

    raw, _ = traced(_model, *_ARGS)
    out = run_pipeline(raw, [("a", spy("a")), ("dce", dce), ("b", spy("b"))])
    assert [t for t, _ in seen] == ["a", "b"]
    assert seen[0][1] == len(raw) and seen[1][1] == len(dce(raw)) == len(out)

    f = tj.trace(_model, passes=[("verify", verify)], backend="interpret")
    assert f.graph(*_ARGS) == f.graph(*_ARGS, optimized=False) == raw


def test_debug_passes_prints_the_graph_after_each_step(monkeypatch, capsys):
    monkeypatch.setenv("TRACEJIT_DEBUG", "passes")
    f = tj.trace(_model, backend="interpret")
    f(*_ARGS)
    err = capsys.readouterr().err
    steps = re.findall(r"^tracejit: after (\w+): [^\n]* \((\d+) nodes\)$", err, re.M)
    assert [s for s, _ in steps] == [name for name, *_ in PIPELINE]
    opt = f.graph(*_ARGS)
    assert int(steps[-1][1]) == len(opt)
    assert err.rstrip().endswith(str(opt))
    assert "  %" in err and "graph(x: f32[4,3], w1: f32[3,5], b1: f32[5], w2: f32[5,2]):" in err
    f(*_ARGS)  # no retrace: nothing printed
    assert capsys.readouterr().err == ""


def test_debug_can_name_several_topics(monkeypatch, capsys):
    monkeypatch.setenv("TRACEJIT_DEBUG", "graph, passes")
    tj.trace(lambda x: x + 0, backend="interpret")(tj.ones(2))
    err = capsys.readouterr().err
    assert "tracejit: traced" in err and "tracejit: after fold" in err
    monkeypatch.setenv("TRACEJIT_DEBUG", "graph")
    tj.trace(lambda x: x + 0, backend="interpret")(tj.ones(2))
    assert "after fold" not in capsys.readouterr().err


def test_run_pipeline_debug_argument(capsys):
    b = GraphBuilder()
    x = b.add_input("x", (2,), np.float32)
    e = node(b, "exp", x)
    node(b, "neg", x)  # dead
    g = b.build([node(b, "add", e, 0)])
    run_pipeline(g, [("simplify", simplify), ("dce", dce)], debug=True)
    err = capsys.readouterr().err
    assert "tracejit: after simplify (2 nodes)" in err and "tracejit: after dce (1 nodes)" in err
    run_pipeline(g)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------------------
# content_hash


def _hash(fn, *args):
    return tj.trace(fn, backend="interpret").graph(*args, optimized=False).content_hash()


def test_hash_ignores_var_numbering_and_locations():
    raw1, _ = traced(_model, *_ARGS)
    raw2, _ = traced(_model, *_ARGS)
    assert raw1.content_hash() == raw2.content_hash()
    # the same computation traced twice, numbered differently (simplify dropped %1 in one)
    x = tj.randn(2, 3)
    _, g1 = traced(lambda x: (x * 1).exp().sum(0), x)
    _, g2 = traced(lambda x: x.exp().sum(0), x)
    assert [n.out.id for n in g1.nodes] == [2, 3] and [n.out.id for n in g2.nodes] == [1, 2]
    assert g1.content_hash() == g2.content_hash()
    assert g1.content_hash() != traced(lambda x: x.exp().sum(1), x)[1].content_hash()

    b1, b2 = GraphBuilder(), GraphBuilder()
    for _ in range(5):
        b2.new_var((1,), np.float32)  # burn ids: b2 numbers everything differently
    xs = [b.add_input(n, (3,), np.float32) for b, n in ((b1, "x"), (b2, "renamed"))]
    outs = [node(b, "exp", x) for b, x in zip((b1, b2), xs)]
    g1, g2 = b1.build(outs[:1]), b2.build(outs[1:])
    assert [n.out.id for n in g1.nodes] != [n.out.id for n in g2.nodes]
    assert g1.content_hash() == g2.content_hash()
    assert g1.content_hash() != g1.format()


@pytest.mark.parametrize("a, b", [
    (lambda x: x.sum(0), lambda x: x.sum(1)),  # attribute
    (lambda x: x.sum(0), lambda x: x.sum(0, keepdim=True)),
    (lambda x: x.to(tj.float64), lambda x: x.to(tj.int64)),  # dtype attribute
    (lambda x: x + tj.tensor([1.0, 2.0, 3.0]), lambda x: x + tj.tensor([1.0, 2.0, 4.0])),  # const
    (lambda x: x + tj.tensor([1.0, 2.0, 3.0]), lambda x: x + tj.tensor([1.0, 2.0, 3.0],
                                                                        dtype=tj.float64)),
    (lambda x: x * 2, lambda x: x * 2.0),  # scalar type
    (lambda x: x * 0.0, lambda x: x * -0.0),
    (lambda x: x - x.exp(), lambda x: x.exp() - x),  # wiring
    (lambda x: x.exp(), lambda x: x.sin()),  # op
    (lambda x: (x.exp(), x), lambda x: (x, x.exp())),  # output order
])
def test_hash_differs_when_the_computation_does(a, b):
    x = tj.randn(2, 3)
    assert _hash(a, x) != _hash(b, x)
    assert _hash(a, x) == _hash(a, x)


def test_hash_differs_with_input_types():
    fn = lambda x: x.exp()  # noqa: E731
    hashes = {_hash(fn, tj.randn(2, 3)), _hash(fn, tj.randn(3, 2)),
              _hash(fn, tj.randn(2, 3, dtype=tj.float64)), _hash(fn, tj.randn(6))}
    assert len(hashes) == 4


def test_hash_of_a_graph_valued_attribute_covers_its_content():
    def body(op):
        b = GraphBuilder()
        x = b.add_input("x", (3,), np.float32)
        return b.build([node(b, op, x)])

    def holder(op):
        b = GraphBuilder()
        x = b.add_input("x", (3,), np.float32)
        v = b.add_node("fused", [x], {"body": body(op), "kernel": "k0"}, (3,), np.float32)
        return b.build([v])

    assert holder("exp").content_hash() == holder("exp").content_hash()
    assert holder("exp").content_hash() != holder("sin").content_hash()


# ----------------------------------------------------------------------------------------------
# printing


def test_format_looks_like_the_design_example():
    b = GraphBuilder()
    x = b.add_input("x", (2, 3), np.float32)
    w = b.add_input("w", (3, 4), np.float32)
    y = b.add_node("matmul", [x, w], {}, (2, 4), np.float32, loc="model.py:12")
    z = node(b, "relu", y)
    s = node(b, "sum", z, dims=(1,), keepdim=False)
    c = node(b, "cast", s, dtype=np.dtype(np.float64))
    g = b.build([z, c, 2])
    assert g.format() == (
        "graph(x: f32[2,3], w: f32[3,4]):\n"
        "  %2: f32[2,4] = matmul x, w\n"
        "  %3: f32[2,4] = relu %2\n"
        "  %4: f32[2] = sum[dims=(1,), keepdim=False] %3\n"
        "  %5: f64[2] = cast[dtype=f64] %4\n"
        "  return %3, %5, 2")
    assert str(g) == g.format()
    assert "  %2: f32[2,4] = matmul x, w    # model.py:12" in g.format(locs=True)
    assert repr(g) == "<Graph: 2 inputs, 4 nodes, 3 outputs>"


def test_format_of_traced_graph_scalars_constants_and_dtypes():
    def fn(x, i):
        return (x @ x.T + 1.5) * tj.tensor([1.0, 2.0]), i > 0, tj.zeros(3, 4) + i.sum()

    raw, _ = traced(fn, tj.randn(2, 3), tj.tensor([1, 2]))
    text = raw.format()
    lines = text.splitlines()
    assert lines[0] == "graph(x: f32[2,3], i: i64[2]):"
    assert re.fullmatch(r"  %\d+: f32\[3,2\] = permute\[perm=\(1, 0\)\] x", lines[1])
    assert re.fullmatch(r"  %\d+: f32\[2,2\] = matmul x, %\d+", lines[2])
    assert re.search(r"= add %\d+, 1\.5$", text, re.M)
    assert re.search(r"= const\[value=\[1\.,2\.\]\]$", text, re.M)
    assert re.search(r"bool\[2\] = gt i, 0$", text, re.M)
    assert re.search(r"= const\[value=<f32\[3,4\] [0-9a-f]{8}>\]$", text, re.M)
    assert lines[-1].startswith("  return %")
    assert all(re.fullmatch(r"  %\d+: \w+\[[\d,]*\] = \w+.*", ln) for ln in lines[1:-1])


def test_to_dot_has_an_edge_per_operand():
    b = GraphBuilder()
    x = b.add_input("x", (2, 3), np.float32)
    w = b.add_input("w", (3, 4), np.float32)
    y = node(b, "matmul", x, w)
    z = node(b, "add", y, y)  # the same operand twice: two edges
    c = const(b, [1.0], np.float32)
    s = node(b, "mul", z, c)
    t = node(b, "mul", s, 2.0)  # scalars are not nodes
    g = b.build([t, y, 5])
    dot = g.to_dot()
    assert dot.startswith("digraph tracejit {") and dot.rstrip().endswith("}")
    edges = re.findall(r"^  (v\d+|out\d+) -> (v\d+|out\d+);$", dot, re.M)
    n_operands = sum(1 for n in g.nodes for a in n.inputs if hasattr(a, "id"))
    n_var_outputs = 2
    assert len(edges) == n_operands + n_var_outputs == 9
    assert edges.count(("v2", "v3")) == 2
    assert ("v0", "v2") in edges and ("v1", "v2") in edges and ("v4", "v5") in edges
    assert ("v6", "out0") in edges and ("v2", "out1") in edges
    assert 'v0 [label="x\\nf32[2,3]", shape=ellipse];' in dot
    assert 'v2 [label="%2 = matmul\\nf32[2,4]"];' in dot
    assert 'out2 [label="output 2", shape=ellipse];' in dot
    nodes = set(re.findall(r"^  (v\d+|out\d+) \[", dot, re.M))
    assert {a for e in edges for a in e} <= nodes  # every edge joins declared nodes


def test_const_repr_and_identity():
    a, b = Const(np.array([1.0, 2.0], np.float32)), Const([1.0, 2.0])
    assert a != b  # float32 vs float64
    assert a == Const(np.array([1.0, 2.0], np.float32)) and hash(a) == hash(Const(a.array))
    assert repr(a) == "[1.,2.]"
    assert re.fullmatch(r"<f32\[2,3\] [0-9a-f]{8}>", repr(Const(np.zeros((2, 3), np.float32))))
    src = np.ones(3)
    c = Const(src)
    src[0] = 5  # a private copy
    assert c.array[0] == 1 and not c.array.flags.writeable
