"""The data-parallel cases, run on every rank of one ``mpiexec`` launch (tests/distributed/
test_distributed.py starts it once): ``python cases.py OUT.json``. Rank 0 writes
``{case: "ok" | error text}``; each case checks itself (numpy references, other ranks' values
gathered) and a failure is reported, not raised, so one launch tells about every case.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit import nn, optim
from tracejit.nn.parallel import DistributedDataParallel as DDP
from tracejit.utils.data import DataLoader, DistributedSampler, TensorDataset

CASES: dict = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def gather(obj):
    return dist._default_group.allgather_object(obj)


def same_on_every_rank(arrays: list, what: str):
    everyone = gather([np.asarray(a) for a in arrays])
    for r, theirs in enumerate(everyone[1:], 1):
        for k, (a, b) in enumerate(zip(everyone[0], theirs)):
            np.testing.assert_array_equal(a, b, err_msg=f"{what} {k}: rank 0 vs rank {r}")


# ---------------------------------------------------------------------------------- collectives

DTYPES = [np.float32, np.float64, np.int32, np.int64, np.bool_]
OPS = {"SUM": np.sum, "AVG": np.mean, "MAX": np.max, "MIN": np.min, "PRODUCT": np.prod}


def rank_data(rank: int, dtype, shape=(3, 4)):
    rng = np.random.default_rng(100 + rank)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind == "i":
        return rng.integers(-5, 6, shape).astype(dtype)
    return rng.uniform(-2, 2, shape).astype(dtype)


def reference(op: str, dtype, size: int):
    stack = np.stack([rank_data(r, dtype) for r in range(size)])
    if dtype == np.bool_:
        return (stack.any(0) if op in ("SUM", "MAX") else stack.all(0))
    return OPS[op](stack, axis=0).astype(dtype)


@case
def all_reduce_every_op_and_dtype():
    rank, size = dist.get_rank(), dist.get_world_size()
    for dtype in DTYPES:
        for op in OPS:
            if op == "AVG" and np.dtype(dtype).kind != "f":
                t = tj.tensor(rank_data(rank, dtype))
                try:
                    dist.all_reduce(t, op=dist.ReduceOp.AVG)
                except TypeError as e:
                    assert "AVG needs a floating-point" in str(e)
                else:
                    raise AssertionError(f"AVG of {dtype} did not raise")
                continue
            want = reference(op, dtype, size)
            for async_op in (False, True):
                t = tj.tensor(rank_data(rank, dtype))
                work = dist.all_reduce(t, op=getattr(dist.ReduceOp, op), async_op=async_op)
                if async_op:
                    assert isinstance(work, dist.Work)
                    assert work.wait() and work.is_completed()
                got = t.numpy()
                assert got.dtype == np.dtype(dtype), (op, dtype, got.dtype)
                if np.dtype(dtype).kind == "f":
                    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"{op} {dtype}")
                else:
                    np.testing.assert_array_equal(got, want, err_msg=f"{op} {dtype}")
    # a non-contiguous tensor is reduced in place too
    base = tj.tensor(np.arange(12, dtype=np.float32).reshape(3, 4) * (rank + 1))
    view = base.t()
    dist.all_reduce(view)
    np.testing.assert_array_equal(base.numpy(), np.arange(12).reshape(3, 4) *
                                  sum(range(1, size + 1)))


@case
def broadcast_gather_scatter_barrier():
    rank, size = dist.get_rank(), dist.get_world_size()
    for dtype in DTYPES:
        for src in range(size):
            t = tj.tensor(rank_data(rank, dtype))
            dist.broadcast(t, src=src)
            np.testing.assert_array_equal(t.numpy(), rank_data(src, dtype))
        t = tj.tensor(rank_data(rank, dtype))
        dist.broadcast(t, src=size - 1, async_op=True).wait()
        np.testing.assert_array_equal(t.numpy(), rank_data(size - 1, dtype))

        outs = [tj.zeros((3, 4), dtype=tj.tensor(rank_data(0, dtype)).dtype) for _ in range(size)]
        dist.all_gather(outs, tj.tensor(rank_data(rank, dtype)))
        for r, o in enumerate(outs):
            np.testing.assert_array_equal(o.numpy(), rank_data(r, dtype))
        big = tj.tensor(np.zeros((3 * size, 4), dtype))
        dist.all_gather_into_tensor(big, tj.tensor(rank_data(rank, dtype)), async_op=True).wait()
        np.testing.assert_array_equal(big.numpy(), np.concatenate(
            [rank_data(r, dtype) for r in range(size)]))

        if dtype == np.bool_:
            continue
        # reduce_scatter: rank r gets the sum over ranks of their input_list[r]
        inputs = [tj.tensor(rank_data(rank * 10 + k, dtype)) for k in range(size)]
        out = tj.tensor(np.zeros((3, 4), dtype))
        dist.reduce_scatter(out, inputs, op=dist.ReduceOp.SUM)
        want = sum(rank_data(r * 10 + rank, dtype) for r in range(size)).astype(dtype)
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)
        flat = tj.tensor(np.concatenate([rank_data(rank * 10 + k, dtype) for k in range(size)]))
        out2 = tj.tensor(np.zeros((3, 4), dtype))
        dist.reduce_scatter_tensor(out2, flat, op=dist.ReduceOp.MAX)
        want = np.max([rank_data(r * 10 + rank, dtype) for r in range(size)], axis=0)
        np.testing.assert_array_equal(out2.numpy(), want)
    dist.barrier()
    dist.barrier(async_op=True).wait()


@case
def traced_all_reduce_is_a_graph_node():
    rank, size = dist.get_rank(), dist.get_world_size()

    @tj.trace
    def f(x):
        y = x * 2
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        z = x + 1
        dist.all_reduce(z, op=dist.ReduceOp.MAX)
        return y + 1, z

    for i in range(3):
        x = tj.full((4,), float(rank + i))
        y, z = f(x)
        want_y = sum(2.0 * (r + i) for r in range(size)) + 1
        np.testing.assert_allclose(y.numpy(), np.full(4, want_y))
        np.testing.assert_allclose(z.numpy(), np.full(4, size - 1 + i + 1.0))
    assert f.cache_info().hits == 2, f.cache_info()
    text = str(f.graph(x))
    assert text.count("all_reduce") == 2, text
    # the gradient of an all-reduced sum is the all-reduced gradient
    x = tj.full((3,), float(rank + 1), requires_grad=True)
    y = x * 1
    out = tj.dispatch.apply(tj.ops.ALL_REDUCE, y, reduce="sum")
    (out * (rank + 1)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, float(sum(range(1, size + 1)))))


# ---------------------------------------------------------------------------------- training

N_STEPS = 4
BATCH = 16


def make_model(seed: int, dtype=tj.float32):
    tj.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    return model.to(dtype) if dtype != tj.float32 else model


def make_opt(kind: str, params):
    if kind == "sgd":  # NOTE: no momentum: its first step would be traced on its own
        return optim.SGD(params, lr=0.1)
    return optim.Adam(params, lr=0.01)


def full_batch(step: int):
    rng = np.random.default_rng(step)
    return (rng.standard_normal((BATCH, 8)).astype(np.float32),
            rng.integers(0, 4, BATCH))


def train(model, opt, mode: str, batches):
    """``N_STEPS`` steps of ``model`` (DDP or not) in ``mode``; returns the losses."""
    loss_fn = nn.CrossEntropyLoss()
    forward = model

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(forward(x), y)
        loss.backward()
        opt.step()
        return loss.detach()
    if mode == "traced_step":
        step = tj.trace(step)
    losses = []
    for x, y in batches:
        losses.append(float(step(tj.tensor(x), tj.tensor(y)).item()))
    if mode == "traced_step":
        assert step.cache_info().hits >= 1, step.cache_info()  # later calls ran the graph
        x, y = batches[0]
        text = str(step.graph(tj.tensor(x), tj.tensor(y)))
        n = len(model._reducer.buckets) if isinstance(model, DDP) else 0
        assert text.count("= all_reduce") == n, text  # one all_reduce node per bucket
    return losses


def ddp_case(mode: str, kind: str):
    rank, size = dist.get_rank(), dist.get_world_size()
    half = BATCH // size
    batches = [full_batch(s) for s in range(N_STEPS)]
    mine = [(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half])
            for x, y in batches]
    net = make_model(seed=1 + rank)  # different on each rank: DDP broadcasts rank 0's
    inner = tj.trace(net) if mode == "traced_model" else net
    model = DDP(inner, bucket_cap_mb=0.0002)  # several buckets (~200 bytes each)
    assert len(model._reducer.buckets) > 1
    opt = make_opt(kind, net.parameters())
    train(model, opt, mode, mine)

    ref = make_model(seed=1)  # rank 0's initialisation, one process on the full batch
    ref_opt = make_opt(kind, ref.parameters())
    train(ref, ref_opt, "eager", batches)
    params = [p.detach().numpy().copy() for p in net.parameters()]
    same_on_every_rank(params, f"{mode}/{kind} parameter")
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=2e-5, atol=2e-6,
                                   err_msg=f"{mode}/{kind}: {name} vs one process")


for _mode in ("eager", "traced_model", "traced_step"):
    for _kind in ("sgd", "adam"):
        def _c(mode=_mode, kind=_kind):
            ddp_case(mode, kind)
        _c.__name__ = f"ddp_{_mode}_{_kind}"
        case(_c)


@case
def ddp_no_sync_accumulates():
    rank, size = dist.get_rank(), dist.get_world_size()
    half = BATCH // size
    micro = [full_batch(10 + k) for k in range(2)]
    net = make_model(seed=5 + rank)
    model = DDP(net)
    loss_fn = nn.CrossEntropyLoss()
    x0, y0 = micro[0]
    with model.no_sync():
        loss_fn(model(tj.tensor(x0[rank * half:(rank + 1) * half])),
                tj.tensor(y0[rank * half:(rank + 1) * half])).backward()
    local = gather([p.grad.numpy().copy() for p in net.parameters()])
    assert any(not np.array_equal(a, b) for a, b in zip(local[0], local[1])), \
        "no_sync exchanged gradients"
    x1, y1 = micro[1]
    loss_fn(model(tj.tensor(x1[rank * half:(rank + 1) * half])),
            tj.tensor(y1[rank * half:(rank + 1) * half])).backward()
    ref = make_model(seed=5)
    for x, y in micro:
        loss_fn(ref(tj.tensor(x)), tj.tensor(y)).backward()
    same_on_every_rank([p.grad.numpy() for p in net.parameters()], "gradient")
    for p, q in zip(net.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(self.lin(x).relu())  # two gradients for the weight in each pass


@case
def ddp_weight_used_twice_and_grads_kept():
    """Two gradients for one weight in a pass (each goes into the bucket, averaged), and a
    second backward onto the .grad the first left (no zero_grad: they add up): as one process
    on the full batches."""
    rank, size = dist.get_rank(), dist.get_world_size()
    half = BATCH // size
    batches = [full_batch(20 + k)[0] for k in range(2)]
    tj.manual_seed(7)
    net = _Twice()
    model = DDP(net)
    for x in batches:
        (model(tj.tensor(x[rank * half:(rank + 1) * half])) ** 2).mean().backward()
    tj.manual_seed(7)
    ref = _Twice()
    for x in batches:
        (ref(tj.tensor(x)) ** 2).mean().backward()
    same_on_every_rank([p.grad.numpy() for p in net.parameters()], "gradient")
    for p, q in zip(net.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)


@case
def ddp_layout_mismatch_is_an_error():
    rank = dist.get_rank()
    net = nn.Sequential(nn.Linear(8, 16 + rank), nn.ReLU())
    try:
        DDP(net)
    except RuntimeError as e:
        msg = str(e)
        assert "the ranks' models differ" in msg and "'0.weight'" in msg, msg
        assert "float32[16, 8]" in msg and "float32[17, 8]" in msg, msg
    else:
        raise AssertionError("no error")
    net = nn.Linear(4, 4).to(tj.float64 if rank else tj.float32)
    try:
        DDP(net)
    except RuntimeError as e:
        assert "float64" in str(e), str(e)
    else:
        raise AssertionError("no error for a dtype mismatch")


@case
def ddp_broadcasts_parameters_and_buffers():
    rank = dist.get_rank()
    tj.manual_seed(rank)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    net[1].running_mean.add_(float(rank))
    model = DDP(net)
    same_on_every_rank([t.detach().numpy() for t in [*net.parameters(), *net.buffers()]], "state")
    assert list(model.state_dict())[0].startswith("module.")


@case
def sampler_partitions_an_epoch():
    rank, size = dist.get_rank(), dist.get_world_size()
    for n in (20, 21):
        for drop_last in (False, True):
            s = DistributedSampler(range(n), shuffle=True, seed=3, drop_last=drop_last)
            assert (s.num_replicas, s.rank) == (size, rank)
            epochs = []
            for epoch in range(2):
                s.set_epoch(epoch)
                epochs.append(gather(list(s)))
            for shares in epochs:
                assert len({len(x) for x in shares}) == 1, shares
                flat = [i for x in shares for i in x]
                if n % size == 0:
                    assert sorted(flat) == list(range(n)), shares  # exactly once each
                elif drop_last:
                    assert len(set(flat)) == len(flat) == n - n % size
                else:
                    assert set(flat) == set(range(n)) and len(flat) == n + size - n % size
            assert epochs[0] != epochs[1]  # set_epoch reshuffles
    ds = TensorDataset(tj.arange(20), tj.arange(20) * 10)
    loader = DataLoader(ds, batch_size=5, sampler=DistributedSampler(ds, shuffle=False))
    seen = [int(i) for xb, _ in loader for i in xb.numpy()]
    assert seen == list(range(rank, 20, size)), seen


def main(out: str) -> None:
    dist.init_process_group(backend="mpi")
    results, took = {}, {}
    for name, fn in CASES.items():
        start = time.perf_counter()
        try:
            fn()
            results[name] = "ok"
        except Exception:
            results[name] = f"rank {dist.get_rank()}: " + traceback.format_exc()
        took[name] = round(time.perf_counter() - start, 2)
    if os.environ.get("TRACEJIT_DIST_CASE_TIMES"):
        print(f"rank {dist.get_rank()} case seconds: {took}", file=sys.stderr)
    everyone = gather(results)
    if dist.get_rank() == 0:
        merged = {k: "\n".join(r[k] for r in everyone if r[k] != "ok") or "ok" for k in results}
        with open(out, "w") as f:
            json.dump(merged, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
