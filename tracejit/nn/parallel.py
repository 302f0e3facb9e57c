"""Data parallelism, as ``torch.nn.parallel``: ``DistributedDataParallel`` averages gradients
across the ranks of ``tracejit.distributed``'s process group.

>>> model = DistributedDataParallel(net)        # doctest: +SKIP
>>> loss_fn(model(x), y).backward()              # gradients now averaged over the ranks
>>> opt.step()
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from ..dispatch import current_tracer
from ..errors import user_frame
from .module import Module

__all__ = ["DistributedDataParallel"]


class _Bucket:
    """Parameters whose gradients travel together: one flat buffer, reused every step."""

    def __init__(self, params: list, dtype):
        self.params = params
        self.dtype = np.dtype(dtype)
        sizes = [int(np.prod(p.shape, dtype=np.int64)) for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self.flat = np.zeros(self.offsets[-1], self.dtype)
        # each parameter's slot of the buffer, shaped as the parameter: its .grad after a sync
        self.views = [self.flat[a:b].reshape(p.shape)
                      for p, a, b in zip(params, self.offsets, self.offsets[1:])]
        self.arrived: set = set()  # indices of the gradients arrived this backward pass
        self.filled: set = set()  # indices whose gradient autograd wrote into its slot, scaled
        self.work = None  # the Iallreduce in flight
        self.traced: dict = {}  # tracing: parameter index -> traced gradient

    @property
    def nbytes(self) -> int:
        return self.flat.nbytes


class _GradSlot:
    """A parameter's slot of its bucket, where autograd writes its gradient already divided by
    the world size (``autograd.set_grad_slot``): the hook then has nothing to copy."""

    __slots__ = ("ddp", "bucket", "k", "view")

    def __init__(self, ddp, bucket, k):
        self.ddp, self.bucket, self.k = ddp, bucket, k
        self.view = bucket.views[k]

    def begin(self, p):
        if not self.ddp.require_backward_grad_sync or self.k in self.bucket.arrived:
            return None
        self.bucket.filled.add(self.k)
        return 1.0 / self.ddp._reducer.group.size

    def filled(self, p):
        return 1.0 / self.ddp._reducer.group.size if self.k in self.bucket.filled else None


class _Reducer:
    """The state behind the module's hooks (kept out of the module's Python attributes, which
    traced graphs are guarded on)."""

    def __init__(self, buckets: list, group):
        self.buckets = buckets
        self.group = group
        self.where = {}  # id(param) -> (bucket, index in it)
        for b in buckets:
            for k, p in enumerate(b.params):
                self.where[id(p)] = (b, k)
        self.next = 0  # the next bucket to start (buckets start in order on every rank)
        self.in_backward = False
        self.exchange_s = 0.0  # time spent copying, starting and waiting (benchmarks)
        self.steps = 0


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training: rank 0's parameters and buffers are broadcast
    at construction (after checking every rank has the same names, shapes and dtypes), and
    ``backward()`` averages the gradients over the ranks in buckets of about ``bucket_cap_mb``
    MiB (flat buffers in a fixed order; each bucket's all-reduce starts as soon as its last
    gradient has arrived, and all are waited for before ``backward()`` returns).

    ``module`` may be an ``nn.Module`` or a traced one (``tracejit.trace(net)``); the wrapper
    also works inside a traced training step (the exchange is then an ``all_reduce`` node of
    the graph). After a synchronised backward each ``p.grad`` is a view of its bucket
    (torch's ``gradient_as_bucket_view``): ``zero_grad(set_to_none=False)`` then avoids a copy.
    ``no_sync()`` skips the exchange (gradient accumulation).
    """

    def __init__(self, module, device_ids=None, output_device=None, dim: int = 0,
                 broadcast_buffers: bool = True, process_group=None, bucket_cap_mb: float = 25,
                 find_unused_parameters: bool = False, check_reduction: bool = False,
                 gradient_as_bucket_view: bool = False, static_graph: bool = False):
        from .. import distributed as dist

        super().__init__()
        group = dist._default("DistributedDataParallel")
        if find_unused_parameters:
            raise NotImplementedError(
                "DistributedDataParallel(find_unused_parameters=True) is not supported: every "
                "parameter that requires grad must receive a gradient in each synchronised "
                "backward (set requires_grad=False on the unused ones)")
        if isinstance(module, Module):
            inner, call = module, module
        else:  # a traced module: its parameters are the wrapped Module's
            inner, call = getattr(module, "module", None), module
            if not isinstance(inner, Module):
                raise TypeError(f"DistributedDataParallel: expected an nn.Module or a traced "
                                f"one, got {type(module).__name__}{user_frame()}")
        self.module = inner
        object.__setattr__(self, "_call", call)
        self.broadcast_buffers = broadcast_buffers
        self.bucket_cap_mb = bucket_cap_mb
        self.require_backward_grad_sync = True  # no_sync() clears it (guarded when traced)
        self._check_layout(group)
        self._broadcast_state(group)
        params = [p for _, p in inner.named_parameters() if p.requires_grad]
        object.__setattr__(self, "_reducer", _Reducer(_buckets(params, bucket_cap_mb), group))
        from ..autograd import set_grad_slot
        for p in params:
            p.register_post_accumulate_grad_hook(self._grad_ready)
            bucket, k = self._reducer.where[id(p)]
            if isinstance(p._data, np.ndarray) and bucket.views[k].dtype == p.dtype:
                set_grad_slot(p, _GradSlot(self, bucket, k))

    # -- construction
    def _check_layout(self, group) -> None:
        mine = [("parameter", n, tuple(p.shape), str(p.dtype), bool(p.requires_grad))
                for n, p in self.module.named_parameters()] + \
               [("buffer", n, tuple(b.shape), str(b.dtype), False)
                for n, b in self.module.named_buffers() if b is not None]
        layouts = group.allgather_object(mine)
        for r, theirs in enumerate(layouts):
            if theirs == layouts[0]:
                continue
            a, b = dict(((k, n), v) for k, n, *v in layouts[0]), \
                dict(((k, n), v) for k, n, *v in theirs)
            diffs = [f"{k} {n!r}: rank 0 has {_layout(a.get((k, n)))}, rank {r} has "
                     f"{_layout(b.get((k, n)))}"
                     for (k, n) in list(dict.fromkeys([*a, *b])) if a.get((k, n)) != b.get((k, n))]
            if not diffs:
                diffs = ["the same names in another order"]
            raise RuntimeError(
                "DistributedDataParallel: the ranks' models differ (names, shapes, dtypes and "
                "requires_grad must match on every rank): " + "; ".join(diffs[:5]) +
                (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "") + user_frame(3))

    def _broadcast_state(self, group) -> None:
        tensors = [p for p in self.module.parameters()] + \
            [b for b in self.module.buffers() if b is not None]
        if group.size == 1 or not tensors:
            return
        reqs = []
        for t in tensors:
            arr = t._data
            if not arr.flags.c_contiguous:
                raise RuntimeError("DistributedDataParallel: parameters must be contiguous")
            reqs.append(group.ibcast(arr, 0)[0])
        for r in reqs:
            group.wait(r, "DistributedDataParallel's broadcast of rank 0's parameters")
        for t in tensors:
            t._version[0] += 1

    # -- running
    def forward(self, *args, **kwargs):
        red = self._reducer
        if red.next or any(b.arrived for b in red.buckets):
            started = red.buckets[:red.next]
            missing = [n for n, p in self.module.named_parameters() if id(p) in red.where and
                       red.where[id(p)][0] not in started and
                       red.where[id(p)][1] not in red.where[id(p)][0].arrived]
            _reset(red)
            raise RuntimeError(
                "DistributedDataParallel: the previous synchronised backward() did not produce "
                "gradients for every parameter, so their exchange never finished (parameters "
                f"without a gradient: {missing[:8]}); every parameter that requires grad must "
                "take part in the loss (set requires_grad=False on the unused ones)"
                + user_frame(3))
        if self.broadcast_buffers and red.group.size > 1:
            self._sync_buffers(red.group)
        return self._call(*args, **kwargs)

    def _sync_buffers(self, group) -> None:
        from .. import distributed as dist
        from ..autograd import no_grad

        buffers = [b for b in self.module.buffers() if b is not None]
        if not buffers:
            return
        if current_tracer() is not None:
            # a broadcast as an all-reduce: the other ranks contribute zeros
            with no_grad():
                for b in buffers:
                    if group.rank != 0:
                        b.mul_(0)
                    dist.all_reduce(b, dist.ReduceOp.SUM)
            return
        reqs = [group.ibcast(b._data, 0)[0] for b in buffers]
        for r in reqs:
            group.wait(r, "DistributedDataParallel's broadcast of rank 0's buffers")

    @contextlib.contextmanager
    def no_sync(self):
        """Gradients accumulate locally in the block; the next backward outside syncs them."""
        prev = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = prev

    # -- the gradient exchange
    def _grad_ready(self, p) -> None:
        if not self.require_backward_grad_sync:
            return
        red = self._reducer
        bucket, k = red.where[id(p)]
        traced = current_tracer() is not None
        t0 = time.perf_counter()
        if traced:
            bucket.traced[k] = p.grad
        else:
            # the gradient goes into its slot already divided by the world size (as torch's
            # reducer does): no pass over the bucket after the exchange, on its critical path
            g = p.grad
            view = bucket.views[k]
            size = red.group.size
            if k in bucket.filled:  # autograd wrote it into its slot, divided by the world size
                bucket.filled.discard(k)
            elif g._data is not view:
                if size > 1:
                    np.multiply(g._data, bucket.dtype.type(1.0 / size), out=view,
                                casting="unsafe")
                else:
                    np.copyto(view, g._data)
                p.grad = _tensor_of(view)
            elif size > 1:
                view *= bucket.dtype.type(1.0 / size)
        bucket.arrived.add(k)
        while red.next < len(red.buckets) and \
                len(red.buckets[red.next].arrived) == len(red.buckets[red.next].params):
            self._start(red.buckets[red.next], traced)
            red.next += 1
        if red.next == len(red.buckets):
            self._finish(traced)
        red.exchange_s += time.perf_counter() - t0

    def _start(self, bucket: _Bucket, traced: bool) -> None:
        red = self._reducer
        if traced:
            from .. import ops
            from ..dispatch import apply

            flat = _cat([bucket.traced[k].reshape(-1) for k in range(len(bucket.params))])
            flat = apply(ops.ALL_REDUCE, flat, reduce="sum")
            # the average's 1/world is a multiply on each gradient's slice, which fuses into
            # the optimizer's update kernel that reads it: no pass over the bucket after the
            # exchange (as the eager hooks fold it into their copy into the bucket)
            scale = 1.0 / red.group.size
            for p, a, b in zip(bucket.params, bucket.offsets, bucket.offsets[1:]):
                g = flat[a:b].reshape(p.shape)
                p.grad = g * scale if red.group.size > 1 else g
            bucket.traced.clear()
            return
        bucket.work = red.group.iallreduce(bucket.flat, "sum")[0]
        for b in red.buckets[:red.next]:  # let earlier exchanges progress
            if b.work is not None and b.work.Test():
                b.work = None

    def _finish(self, traced: bool) -> None:
        red = self._reducer
        for b in red.buckets:
            if b.work is not None:
                red.group.wait(b.work, f"DistributedDataParallel's gradient all-reduce "
                                       f"({b.nbytes} bytes)")
                b.work = None
            b.arrived.clear()
            b.filled.clear()
        red.next = 0
        red.steps += 1


def _buckets(params: list, cap_mb: float) -> list:
    """Parameters in reverse order (gradients arrive roughly so), cut into buckets of one dtype
    and about ``cap_mb`` MiB."""
    cap = max(1, int(cap_mb * 2 ** 20))
    buckets, current, size, dtype = [], [], 0, None
    for p in reversed(params):
        nbytes = p._data.nbytes
        if current and (p.dtype != dtype or size + nbytes > cap):
            buckets.append(_Bucket(current, dtype))
            current, size = [], 0
        current.append(p)
        size += nbytes
        dtype = p.dtype
    if current:
        buckets.append(_Bucket(current, dtype))
    return buckets


def _reset(red: _Reducer) -> None:
    """Forget an exchange that cannot finish (the error says why)."""
    for b in red.buckets:
        if b.work is not None:
            red.group.wait(b.work, "DistributedDataParallel's gradient all-reduce")
            b.work = None
        b.arrived.clear()
        b.filled.clear()
        b.traced.clear()
    red.next = 0


def _layout(v) -> str:
    if v is None:
        return "nothing"
    shape, dtype, req = v
    return f"{dtype}{list(shape)}" + ("" if req else " (requires_grad=False)")


def _tensor_of(arr):
    from ..tensor import Tensor
    return Tensor._make(arr)


def _cat(parts: list):
    from ..functions import cat
    return parts[0] if len(parts) == 1 else cat(parts)
