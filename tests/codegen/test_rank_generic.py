"""Rank-generic elementwise kernels (codegen/kernel.py pad_ranks): the same update of 1-d, 2-d
and 4-d parameters is one kernel, called with views padded to the largest rank, and gives
the same bits as eager (and as the kernels of each rank did)."""

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn, optim
from tracejit.codegen import cpu
from tracejit.codegen.entry import plan_entry
from tracejit.codegen.kernel import padded, plan_kernels, rank_paddable
from tracejit.passes.fuse import fuse

from ..conftest import noncontig

SHAPES = [(3, 2, 3, 3), (5, 7), (6,)]  # a conv weight, a linear weight, a bias


def _update(p, g, b):
    """An update with no multiply-add pair, so even contracted (FMA) math is numpy's bits."""
    b2 = (b + g) * 0.9
    return (p - b2) * 0.5, b2


def _updates(*args):
    return tuple(r for k in range(0, len(args), 3) for r in _update(*args[k:k + 3]))


def _args(layout="contiguous", seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for shape in SHAPES:
        for _ in range(3):
            a = rng.standard_normal(shape).astype(np.float32)
            if layout == "strided":
                a = noncontig(a)
            elif layout == "transposed" and a.ndim >= 2:
                a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
            out.append(tj.from_numpy(a))
    return out


class Native:
    def renders(self, plan):
        return True

    def kernel_variant(self, plan):
        return None

    def runs_natively(self, node):
        return None

    def pad_at(self, plan):
        return 0


def test_the_same_update_at_three_ranks_is_one_plan_key():
    graph = fuse(tj.trace(_updates, backend="interpret").graph(*_args()))
    plans = plan_kernels(graph)
    assert len(plans) == 3 and all(rank_paddable(p) for p in plans.values())
    assert len({p.key() for p in plans.values()}) == 3  # as planned: one per rank
    entry = plan_entry(graph, plans, Native())
    launches = [s for s in entry.steps if s.kind == "launch"]
    assert len(entry.kernels) == 1 and len({s.call for s in launches}) == 1
    assert [s.plan.domain for s in launches] == [(3, 2, 3, 3), (1, 1, 5, 7), (1, 1, 1, 6)]
    assert [s.plan.padding for s in launches] == [0, 2, 3]
    # a padded dim is generic: a loop over its size argument, each array read at its index
    assert all(o.index == (0, 1, 2, 3) for s in launches for st in s.plan.stmts
               for o in st.expr.operands if hasattr(o, "index"))
    assert "rank-generic" in str(entry.kernels[0])


def test_a_real_size_one_dim_is_generic_too():
    # a [1, 8] parameter and a [4, 8] one: the same kernel (every operand has the full shape,
    # so dim 0 may be read at its loop index)
    graph = fuse(tj.trace(_updates, backend="interpret").graph(
        *[tj.randn(1, 8) for _ in range(3)], *[tj.randn(4, 8) for _ in range(3)]))
    entry = plan_entry(graph, plan_kernels(graph), Native())
    assert len(entry.kernels) == 1


def test_broadcast_operands_keep_their_rank():
    # b is read along the last dim only: its dims are pinned, so the kernel is not paddable
    graph = fuse(tj.trace(lambda x, b, y, c: ((x + b).relu(), (y + c).relu()),
                          backend="interpret").graph(tj.randn(4, 8), tj.randn(8),
                                                     tj.randn(2, 3, 8), tj.randn(8)))
    plans = plan_kernels(graph)
    assert not any(rank_paddable(p) for p in plans.values())
    assert len(plan_entry(graph, plans, Native()).kernels) == 2


def test_padding_changes_no_key_when_the_ranks_already_agree():
    graph = fuse(tj.trace(_updates, backend="interpret").graph(
        *[tj.randn(4, 8) for _ in range(3)], *[tj.randn(2, 3) for _ in range(3)]))
    entry = plan_entry(graph, plan_kernels(graph), Native())
    assert len(entry.kernels) == 1 and not entry.kernels[0].generic_rank
    plan = entry.kernels[0]
    assert padded(plan, 2).key() != plan.key()  # rank-generic is its own kind of kernel


@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed"])
def test_one_compiled_kernel_gives_eager_bits(layout):
    args = _args(layout)
    want = _updates(*args)
    f = tj.trace(_updates, backend="cpu")
    f(*args)
    got = f(*args)  # runs the compiled code
    src = f.source(*args)
    assert src.count("\ndef k") == 1 and "rank-generic: callers pad every array to 4 dims" in src
    assert "[None, None, None]" in src and "[None, None]" in src
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_array_equal(g.numpy(), w.numpy())


def _updates_in_place(*args):
    for k in range(0, len(args), 3):
        p, g, b = args[k:k + 3]
        b.add_(g).mul_(0.9)
        p.sub_(b).mul_(0.5)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_in_place_updates_of_padded_parameters(layout):
    eager, traced = _args(layout, seed=1), _args(layout, seed=1)
    step = tj.trace(_updates_in_place, backend="cpu")
    for _ in range(3):  # the second and third calls run compiled
        _updates_in_place(*eager)
        step(*traced)
    assert step.source(*traced).count("\ndef k") == 1
    for g, w in zip(traced, eager):
        np.testing.assert_array_equal(g.numpy(), w.numpy())


def test_threaded_kernels_pad_after_the_dim_the_threads_share(monkeypatch):
    # a threaded kernel spreads dim 0 over threads: the 2-d operand keeps it first
    # ([:, None, None]); a 1-d one, whose one dim is the threads' and the vector loop's, keeps
    # its rank and its own kernel
    monkeypatch.setattr(cpu, "PARALLEL_MIN", 4)  # every kernel threaded (the bias has 6)
    args = _args()
    want = _updates(*args)
    f = tj.trace(_updates, backend="cpu")
    f(*args)
    got = f(*args)
    src = f.source(*args)
    assert src.count("\ndef k") == 2 and src.count("numba.prange") == 2
    assert "[:, None, None]" in src and "rank-generic" in src
    assert "for i0 in numba.prange(n0)" in src  # the padded kernel's threads: the real dim 0
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w.numpy())


def test_jit_entry_passes_int64_sizes():
    # an @njit entry types a literal 1 as Literal[int](1), a second signature of the kernel
    args = _args()
    f = tj.trace(_updates, backend="cpu")
    f(*args)
    src = f.source(*args)
    assert "@numba.njit(cache=True, error_model='numpy')\ndef entry" in src
    assert "np.int64(1), np.int64(1), sz[" in src


def _cnn_step(pad: bool, monkeypatch):
    if not pad:
        monkeypatch.setattr(cpu.CpuTarget, "pad_at", lambda self, plan: None)
    tj.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(2)
    x = tj.tensor(rng.standard_normal((5, 2, 6, 6)).astype(np.float32))
    y = tj.tensor(rng.integers(0, 4, 5))

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    run = tj.trace(step, backend="cpu")
    losses = [run(x, y).item() for _ in range(4)]
    monkeypatch.undo()
    return model, losses, run.source(x, y)


def test_sgd_momentum_on_a_cnn_updates_every_parameter_with_one_kernel(monkeypatch):
    model, losses, src = _cnn_step(True, monkeypatch)
    before, before_losses, before_src = _cnn_step(False, monkeypatch)
    updates = [line for line in src.split("\n") if line.startswith("def k") and
               "mul_add" in line and "sum" not in line]
    assert len(updates) == 1, updates  # 4-d conv weight, 2-d linear weight, 1-d biases
    assert before_src.count("\ndef k") == src.count("\ndef k") + 2
    assert losses == before_losses  # the same bits as the kernels of each rank
    for (k, a), (_, b) in zip(model.state_dict().items(), before.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_cuda_launches_one_rank_generic_kernel_with_padded_views():
    # the simulator runs it (tests/cuda/sim_cases.py "rank_generic"); here: the launch list
    pytest.importorskip("numba_cuda")
    from tests.cuda.programs import check_ptx, fused_graph, lower_cuda
    from tests.cuda.sim_cases import CASES
    fn, args = CASES()["rank_generic"]
    program = lower_cuda(fused_graph(fn, *[tj.from_numpy(a) for a in args]))
    # six groups: p - 0.1 * g and g * 0.9 at three ranks, two kernels
    assert program.source.count("@cuda.jit") == 2
    assert program.source.count("rank-generic: callers pad every array to 4 dims") == 2
    assert "rt.pad(" in program.source and "1, 1, 1, sz[" in program.source
    for sig in program.signatures.values():
        assert {s[1] for s in sig if s != "int64"} == {4}
    check_ptx(program)
