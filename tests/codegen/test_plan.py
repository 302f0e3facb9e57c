"""The target-neutral plans (codegen/kernel.py, entry.py, memory_plan.py), tested without
rendering or compiling anything: what a kernel computes, which steps the entry takes, and which
buffers share storage."""

import math
import pathlib

import numpy as np
import pytest

import tracejit as tj
from tracejit import codegen
from tracejit.codegen.entry import plan_entry
from tracejit.codegen.kernel import Arg, Reduction, Scalar, Stmt, Value, Write, plan_kernels
from tracejit.codegen.memory_plan import plan_memory
from tracejit.passes.fuse import fuse

CODEGEN = pathlib.Path(__file__).resolve().parents[2] / "codegen"


def fused(fn, *args):
    return fuse(tj.trace(fn, backend="interpret").graph(*args))


def only_plan(graph):
    (plan,) = plan_kernels(graph).values()
    return plan


class Native:
    """A target rendering every kernel and running the ops in ``native`` without numpy."""

    def __init__(self, **native):
        self.native = native

    def renders(self, plan):
        return True

    def kernel_variant(self, plan):
        return None

    def runs_natively(self, node):
        return self.native.get(node.op)


def test_add_relu_plan_reads_broadcast_operands_and_chains_statements():
    plan = only_plan(fused(lambda x, b: (x + b).relu(), tj.randn(4, 8), tj.randn(8)))
    assert plan.kind == "fused" and plan.domain == (4, 8) and plan.row_dims == ()
    assert plan.sizes == (4, 8) and plan.work == 32 and not plan.reassociates
    add, relu = plan.stmts
    assert (add.op, relu.op) == ("add", "relu") and add.vector and relu.vector
    # x is read at (i0, i1); b, one dim shorter, lines up with the last loop dim
    assert add.expr.operands == (Arg(0, (0, 1)), Arg(1, (1,)))
    assert add.expr.template == tj.ops.OPS["add"].expr  # the op table's, shared by targets
    assert relu.expr.operands == (Value(add.id, True),)
    assert plan.outputs[0].id == relu.id and plan.out_index == (0, 1)
    assert plan.steps == () and plan.zero_ops == ()


def test_size_one_dims_are_read_at_zero_and_scalars_once():
    plan = only_plan(fused(lambda a, b, s: a * b + s, tj.randn(3, 1), tj.randn(1, 4),
                           tj.randn(())))
    mul = plan.stmts[0]
    assert mul.expr.operands == (Arg(0, (0, None)), Arg(1, (None, 1)))
    assert Scalar(2) in plan.stmts[1].expr.operands
    assert plan.domain == (3, 4)


def test_python_scalars_are_cast_to_the_tensor_dtype():
    plan = only_plan(fused(lambda x: x * 2.5, tj.randn(8)))
    (mul,) = plan.stmts
    assert mul.expr.casts[1] == (None, np.float32)  # a float32 literal, not float64 math


def test_softmax_plan_is_two_reductions_and_a_stashed_output_loop():
    plan = only_plan(fused(lambda x: x.softmax(-1), tj.randn(4, 8)))
    assert plan.row_dims == (1,) and plan.outer == (0,) and plan.root_vector
    reductions = [s for s in plan.steps if isinstance(s, Reduction)]
    assert [(r.op, r.init) for r in reductions] == [("amax", -math.inf), ("sum", 0)]
    amax, total = reductions
    assert amax.source == Arg(0, (0, 1)) and not amax.blocked
    assert total.blocked  # a float32 sum: blocks in float32, block totals in float64
    # the exp computed by the sum's loop is kept for the output loop, not computed again
    exp = total.stmts[-1]
    assert exp.op == "exp" and total.stash == exp.id == plan.stash
    assert [s.op for s in plan.tail] == ["div"]
    assert Value(exp.id, True) in plan.tail[0].expr.operands
    assert all(isinstance(s, Stmt) and not s.vector for s in plan.steps
               if not isinstance(s, Reduction))
    assert plan.reassociates  # a reduction, and no exp/log pair to fold


def test_a_row_kernel_writes_each_extra_output_once():
    from tests.codegen.test_cpu import _log_softmax_parts

    graph = fused(_log_softmax_parts, tj.randn(4, 8))
    plan = only_plan(graph)
    root, e, s, ls, xm = graph.outputs  # the kernel's outputs: the root, then in any order
    slot = {v.id: k for k, v in enumerate(plan.outputs)}
    assert slot[root.id] == 0 and sorted(slot.values()) == [0, 1, 2, 3, 4]
    amax, total = [st for st in plan.steps if isinstance(st, Reduction)]
    # e: by the sum's loop, which computes it; xm: by the output loop (the sum's loop computes
    # it too, but only one loop writes it); s and ls: once per row, right after their step
    assert total.writes == (Write(slot[e.id], e.id, True, (0, 1)),) and amax.writes == ()
    assert plan.tail_writes == (Write(slot[xm.id], xm.id, True, (0, 1)),)
    rows = [st for st in plan.steps if isinstance(st, Write)]
    assert rows == [Write(slot[s.id], s.id, False, (0, None)),
                    Write(slot[ls.id], ls.id, False, (0, None))]
    assert plan.steps.index(rows[0]) == plan.steps.index(total) + 1
    assert f"out{slot[e.id]}[i0, i1] = v" in str(plan)
    assert f"out{slot[s.id]}[i0, 0] = r" in str(plan)
    # the key stays free of sizes and IR numbers: the same group on other rows is one kernel
    assert only_plan(fused(_log_softmax_parts, tj.randn(6, 3))).key() == plan.key()


def test_a_foldable_pair_keeps_reassociation_off():
    plan = only_plan(fused(lambda x: x.exp().log().sum(-1), tj.randn(4, 8)))
    assert plan.row_dims == (1,) and not plan.reassociates


def test_integer_floordiv_counts_zero_divisors():
    plan = only_plan(fused(lambda i, j: i // j, tj.randint(-5, 5, (4, 6)),
                           tj.randint(1, 4, (6,))))
    assert plan.zero_ops == ("floordiv",) and plan.stmts[0].expr.zero_check == "floordiv"
    by_two = only_plan(fused(lambda i: i // 2, tj.randint(-5, 5, (4, 6))))
    assert by_two.zero_ops == ()  # a nonzero literal divisor needs no count


def _lstm_cell(gates, c):
    i, f, g, o = gates.chunk(4, -1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c2 = f * c + i * g
    return o * c2.tanh(), c2, i, f, g, o


def test_multi_output_kernel_computes_each_output_once_in_one_loop():
    graph = fused(_lstm_cell, tj.randn(4, 20), tj.randn(4, 5))
    plan = only_plan(graph)
    assert len(plan.outputs) == 6  # the root and five values needed outside the kernel
    ids = [s.id for s in plan.stmts]
    assert len(ids) == len(set(ids)) and {v.id for v in plan.outputs} <= set(ids)
    assert ids.index(plan.outputs[0].id) == len(ids) - 1  # the root is computed last
    entry = plan_entry(graph, plan_kernels(graph), Native())
    (launch,) = [s for s in entry.steps if s.kind == "launch"]
    # the fused node binds one graph value per kernel output, the root first
    assert len(launch.results) == 6 and launch.results[0] is launch.node.out
    assert [v.shape for v in launch.results] == [v.shape for v in plan.outputs]


def _two_layers(x, w):
    h = (x @ w).tanh()
    return (h @ w).tanh()


def _other_layers(x, w):
    h = (x @ w).tanh()
    return (h @ w).sigmoid()


def test_identical_groups_are_one_kernel():
    graph = fused(_two_layers, tj.randn(4, 8), tj.randn(8, 8))
    plans = list(plan_kernels(graph).values())
    assert len(plans) == 2 and plans[0].name != plans[1].name
    assert plans[0].key() == plans[1].key()  # no names, IR numbers or sizes in the key
    entry = plan_entry(graph, plan_kernels(graph), Native())
    launches = [s for s in entry.steps if s.kind == "launch"]
    assert len(entry.kernels) == 1 and [s.call for s in launches] == [plans[0].name] * 2
    program = codegen.lower(graph, target="cpu")
    assert len(program.kernels) == 1 and program.source.count("def k") == 1

    other = list(plan_kernels(fused(_other_layers, tj.randn(4, 8), tj.randn(8, 8))).values())
    assert other[0].key() != other[1].key()  # tanh and sigmoid differ


def _same_update_twice(w, b, gw, gb):
    return w - 0.1 * gw.tanh(), b - 0.1 * gb.tanh()


def test_identical_groups_of_different_sizes_are_one_kernel():
    # an optimizer's update of a [8, 16] and a [4, 5] weight: the sizes are arguments of the
    # kernel, not part of what it computes (a Var is a dataclass; its shape must not leak in)
    graph = fused(_same_update_twice, tj.randn(8, 16), tj.randn(4, 5), tj.randn(8, 16),
                   tj.randn(4, 5))
    plans = list(plan_kernels(graph).values())
    assert len(plans) == 2 and plans[0].key() == plans[1].key()
    program = codegen.lower(graph, target="cpu")
    assert len(program.kernels) == 1 and program.source.count("def k") == 1


def _conv_then_pool_twice(x, w1, w2):
    import tracejit.nn.functional as F
    h = F.max_pool2d(F.conv2d(x, w1, padding=1), 2)
    return F.max_pool2d(F.conv2d(h, w2, padding=1), 2)


def test_the_same_window_on_a_smaller_image_is_one_kernel():
    # a CNN's second conv and pool on the first's pooled output: unfold's output positions
    # (OH, OW) are sizes, not facts of what it computes (they made the key, and the same
    # unfold kernel was generated and compiled twice)
    graph = fused(_conv_then_pool_twice, tj.randn(2, 4, 16, 16), tj.randn(4, 4, 3, 3),
                  tj.randn(4, 4, 3, 3))
    plans = plan_kernels(graph).values()
    for kind in ("unfold", "max_pool2d"):  # two 3x3 pad 1 unfolds; two 2x2 pools
        same = [p for p in plans if p.kind == kind]
        assert len(same) == 2 and len({p.key() for p in same}) == 1
    program = codegen.lower(graph, target="cpu")
    assert program.source.count("def unfold") == 1
    assert program.source.count("def max_pool2d") == 1


def test_kernels_the_target_renders_differently_are_not_shared():
    graph = fused(_two_layers, tj.randn(4, 8), tj.randn(8, 8))

    class ByName(Native):
        def kernel_variant(self, plan):
            return plan.name

    assert len(plan_entry(graph, plan_kernels(graph), ByName()).kernels) == 2


def _chain(x, w):
    h1 = x @ w
    h2 = h1 @ w
    h3 = h2 @ w
    return h3 @ w


def test_memory_plan_reuses_a_slot_once_its_buffer_is_dead():
    graph = fuse(tj.trace(_chain, backend="interpret", passes=[]).graph(tj.randn(8, 8),
                                                                      tj.randn(8, 8)))
    entry = plan_memory(plan_entry(graph, {}, Native(matmul="matmul")))
    h1, h2, h3, h4 = (n.out for n in graph.nodes)
    assert set(entry.storage) == {h1.id, h2.id, h3.id}  # h4 is a small output: a fresh array
    b1, b2, b3 = (entry.buffers[entry.storage[v.id]] for v in (h1, h2, h3))
    assert b1.kind == b2.kind == b3.kind == "work"
    assert b1.slot != b2.slot  # h2 is written while h1 is read
    assert b3.slot == b1.slot  # h1's last use is before h3 is defined


def test_memory_plan_never_reuses_an_escaping_buffer():
    def fn(x, w):
        h1 = x @ w
        h2 = h1 @ w
        return h1.T, h2 @ w  # h1 escapes through a view of it

    x, w = tj.randn(8, 8), tj.randn(8, 8)
    graph = fuse(tj.trace(fn, backend="interpret", passes=[]).graph(x, w))
    h1, h2 = graph.nodes[0].out, graph.nodes[1].out
    for view in ("call", None):  # a real view, or a numpy fallback that may return one
        entry = plan_memory(plan_entry(graph, {}, Native(matmul="matmul", permute=view)))
        assert h1.id not in entry.storage
        assert entry.buffers[entry.storage[h2.id]].kind == "work"


def test_large_outputs_come_from_the_allocator():
    graph = fuse(tj.trace(lambda x, w: x @ w, backend="interpret").graph(tj.randn(512, 8),
                                                                         tj.randn(8, 512)))
    entry = plan_memory(plan_entry(graph, {}, Native(matmul="matmul")))
    (buf,) = entry.buffers
    assert buf.kind == "out" and buf.shape == (512, 512)


def test_lower_runs_named_steps_and_prints_them(monkeypatch, capsys):
    assert [name for name, _, _ in codegen.LOWERING] == [
        "plan_kernels", "plan_entry", "plan_memory", "render"]
    assert all(why for _, _, why in codegen.LOWERING)
    monkeypatch.setenv("TRACEJIT_DEBUG", "passes")
    program = codegen.lower(fused(lambda x: x.softmax(-1), tj.randn(4, 8)), target="cpu")
    err = capsys.readouterr().err
    for name, _, _ in codegen.LOWERING:
        assert f"lowering step {name}" in err
    assert "stash v" in err and "def entry(" in err and program.entry == "entry"
    with pytest.raises(ValueError, match="unknown target"):
        codegen.lower(fused(lambda x: x + 1, tj.randn(3)), target="nosuch")


def test_reads_at_its_index_tells_elementwise_reads_from_broadcast_ones():
    from tracejit.codegen.memory_plan import _reads_at_its_index
    plan = only_plan(fused(lambda x, c, r: x * c + r, tj.randn(4, 8), tj.randn(4, 1),
                           tj.randn(1, 8)))
    out = plan.outputs[0]
    assert _reads_at_its_index(plan, 0, out)  # x: at (i0, i1), where out is written
    assert not _reads_at_its_index(plan, 1, out)  # c: at (i0, 0)
    assert not _reads_at_its_index(plan, 2, out)  # r: at (0, i1)


def test_write_in_place_takes_updates_whose_old_value_is_dead():
    from tracejit.codegen.memory_plan import write_in_place

    def step(p, q):
        p.sub_(q * 0.5)  # p's new value: the kernel reads p where it writes it
        return q.sum()

    p, q = tj.randn(8), tj.randn(8)
    traced = tj.trace(step, backend="interpret")
    graph = fuse(traced.graph(p, q))
    entry = plan_entry(graph, plan_kernels(graph), Native())
    pos = next(k for k, x in enumerate(graph.outputs) if x is not graph.outputs[0])
    write_in_place(entry, [(0, pos)])
    assert entry.written == {graph.outputs[pos].id: 0}
    entry = plan_entry(graph, plan_kernels(graph), Native())
    write_in_place(entry, [(1, pos)])  # not q's new value: q's shape, but q is read after
    assert entry.written == {}


def test_a_flat_cats_pieces_are_computed_into_its_array():
    """The pieces of a 1-d cat (DDP's bucket: gradients flattened and concatenated) are written
    by their matmul or kernel straight into the cat's array; a piece read elsewhere too is
    copied as before. Sizes above the @njit entry's limit: a plain Python entry."""
    def fn(x, w):
        flat = tj.cat([(x @ w).reshape(-1), (x * 2 + 1).sum(0)])
        y = (x + 1).reshape(-1)
        other = tj.cat([y, y * 2])  # y is read twice: not a piece
        return flat * 3, flat, other

    rng = np.random.default_rng(0)
    f = tj.trace(fn, compile="sync")
    calls = []
    for _ in range(2):  # a second call: the pieces go into a fresh array again
        x = rng.standard_normal((600, 500)).astype(np.float32)
        w = rng.standard_normal((500, 500)).astype(np.float32)
        flat = np.concatenate([(x @ w).reshape(-1), (x * 2 + 1).sum(0)])
        y = (x + 1).reshape(-1)
        calls.append(([t.numpy() for t in f(tj.tensor(x), tj.tensor(w))],
                      [flat * 3, flat, np.concatenate([y, y * 2])]))
    for got, want in calls:  # the first call's results too, after the second call
        for g, ww in zip(got, want):
            np.testing.assert_allclose(g, ww, rtol=2e-5, atol=1e-3)
    src = f.source(tj.tensor(x), tj.tensor(w))
    assert src.count("its pieces were computed into it") == 1, src
    assert src.count("np.concatenate") == 1, src
