"""Data-parallel training across processes and machines on MPI, with torch.distributed's API.

>>> import tracejit.distributed as dist                        # doctest: +SKIP
>>> dist.init_process_group(backend="mpi")   # rank and size from mpiexec; alone: size 1
>>> t = tracejit.ones(3) * (dist.get_rank() + 1)
>>> dist.all_reduce(t, op=dist.ReduceOp.SUM)   # in place, on every rank
>>> work = dist.all_reduce(t, async_op=True); work.wait()

Launch with ``python -m tracejit.distributed.run -n 4 train.py`` (wraps ``mpiexec``) or with
``mpiexec`` itself; see docs/distributed.md. Needs the ``dist`` extra (mpi4py and MPICH).
Every collective waits with a deadline (``timeout``): a rank that died or never joins makes
the others stop with a clear message instead of hanging.
"""

from __future__ import annotations

import datetime
import enum
import os

import numpy as np

from .. import ops
from ..dispatch import current_tracer
from ..errors import user_frame

__all__ = [
    "ReduceOp", "Work", "is_available", "is_initialized", "is_mpi_available",
    "init_process_group", "destroy_process_group", "get_rank", "get_world_size", "get_backend",
    "all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter",
    "reduce_scatter_tensor", "barrier",
]


class ReduceOp(enum.Enum):
    """How ``all_reduce`` and ``reduce_scatter`` combine the ranks' tensors."""

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MAX = "max"
    MIN = "min"


_default_group = None  # the default process group (_group.Group) once initialized


def is_available() -> bool:
    """Is the distributed package usable here (mpi4py importable)?"""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


is_mpi_available = is_available


def is_initialized() -> bool:
    return _default_group is not None


def _timeout_seconds(timeout) -> float:
    from ._group import DEFAULT_TIMEOUT

    if timeout is None:
        env = os.environ.get("TRACEJIT_DIST_TIMEOUT")
        return float(env) if env else DEFAULT_TIMEOUT
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def init_process_group(backend: str | None = "mpi", init_method=None, timeout=None,
                       world_size: int = -1, rank: int = -1, **_ignored) -> None:
    """Join the process group: rank and world size come from the MPI launcher (``mpiexec``, or
    ``python -m tracejit.distributed.run``); a script started without one is rank 0 of 1.

    ``timeout`` (seconds or a ``datetime.timedelta``; default 30 minutes, or the
    ``TRACEJIT_DIST_TIMEOUT`` environment variable): how long a collective waits for the other
    ranks before aborting all of them."""
    global _default_group
    if backend not in (None, "mpi"):
        raise ValueError(f"init_process_group: backend {backend!r} is not available; tracejit "
                         f"runs its collectives on MPI (backend='mpi')")
    if init_method not in (None, "env://", "mpi://"):
        raise ValueError(f"init_process_group: init_method {init_method!r}: the MPI launcher "
                         f"gives every rank its peers; leave init_method unset")
    if _default_group is not None:
        raise RuntimeError("trying to initialize the default process group twice!"
                           f"{user_frame()}")
    from ._group import Group

    group = Group(_timeout_seconds(timeout))
    for name, want, got in (("world_size", world_size, group.size), ("rank", rank, group.rank)):
        if want not in (-1, None) and want != got:
            group.free()
            raise ValueError(f"init_process_group: {name}={want} but the MPI launcher started "
                             f"this process with {name} {got}")
    _default_group = group
    ops.collective_backend = group


def destroy_process_group(group=None) -> None:
    """Leave the process group (collectives raise again until the next init)."""
    global _default_group
    if _default_group is not None:
        _default_group.free()
    _default_group = None
    ops.collective_backend = None


def _default(what: str):
    if _default_group is None:
        raise RuntimeError(
            f"{what}: the default process group has not been initialized, please make sure to "
            f"call tracejit.distributed.init_process_group() first{user_frame(3)}")
    return _default_group


def get_rank(group=None) -> int:
    return _default("get_rank").rank


def get_world_size(group=None) -> int:
    return _default("get_world_size").size


def get_backend(group=None) -> str:
    _default("get_backend")
    return "mpi"


class Work:
    """A collective in flight (``async_op=True``): ``wait()`` blocks until it is done (with the
    group's timeout) and leaves the result in the tensors."""

    def __init__(self, group, req, finish, what: str):
        self._group, self._req, self._finish, self._what = group, req, finish, what
        self._done = req is None

    def is_completed(self) -> bool:
        if not self._done and self._req.Test():
            self._complete()
        return self._done

    def wait(self, timeout=None) -> bool:
        """Block until done (past the group's timeout every rank is aborted; ``timeout`` is
        accepted for torch compatibility)."""
        if not self._done:
            self._group.wait(self._req, self._what)
            self._complete()
        return True

    def _complete(self):
        self._done = True
        if self._finish is not None:
            self._finish()
            self._finish = None

    def __repr__(self) -> str:
        return f"<Work {self._what}: {'done' if self._done else 'in flight'}>"


def _op_name(op) -> str:
    if isinstance(op, ReduceOp):
        return op.value
    if isinstance(op, str) and op.lower() in {o.value for o in ReduceOp}:
        return op.lower()
    raise ValueError(f"unknown reduction {op!r}: use tracejit.distributed.ReduceOp.SUM, AVG, "
                     f"PRODUCT, MAX or MIN")


def _array(t, what: str):
    """``t``'s host array, contiguous and writable, and what to run once the collective is done
    (copy a staged result back, count the in-place update)."""
    from ..tensor import Tensor

    if not isinstance(t, Tensor):
        raise TypeError(f"{what}: expected a tracejit Tensor, got {type(t).__name__}"
                        f"{user_frame(3)}")
    if t.is_cuda:
        raise NotImplementedError(f"{what}: collectives on CUDA tensors are not supported; "
                                  f"move the tensor to the CPU (t.cpu()) first{user_frame(3)}")
    arr = t._data
    if arr.flags.c_contiguous and arr.flags.writeable:
        def done():
            t._version[0] += 1
        return arr, done
    if not arr.flags.writeable:
        raise RuntimeError(f"{what}: the tensor is a broadcast (expanded) view and cannot be "
                           f"written in place; call .clone() first{user_frame(3)}")
    staged = np.ascontiguousarray(arr)

    def copy_back():
        np.copyto(t._data, staged)
        t._version[0] += 1
    return staged, copy_back


def _input(t, what: str) -> np.ndarray:
    """``t``'s values as a contiguous host array the collective only reads."""
    from ..tensor import Tensor

    if not isinstance(t, Tensor):
        raise TypeError(f"{what}: expected a tracejit Tensor, got {type(t).__name__}"
                        f"{user_frame(3)}")
    if t.is_cuda:
        raise NotImplementedError(f"{what}: collectives on CUDA tensors are not supported; "
                                  f"move the tensor to the CPU (t.cpu()) first{user_frame(3)}")
    return np.ascontiguousarray(t._data)


def _not_traced(what: str):
    if current_tracer() is not None:
        raise NotImplementedError(
            f"{what} inside a traced function: only all_reduce is recorded into graphs; call "
            f"{what} outside the traced function{user_frame(3)}")


def _run(group, started, after, async_op: bool, what: str):
    req, finish = started

    def complete():
        if finish is not None:
            finish()
        if after is not None:
            after()
    work = Work(group, req, complete, what)
    if async_op:
        return work
    work.wait()
    return None


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op: bool = False):
    """Reduce ``tensor`` across all ranks, in place, on every rank (SUM, AVG, PRODUCT, MAX,
    MIN). Inside a traced function it records an ``all_reduce`` node the compiled graph runs."""
    g = _default("all_reduce")
    name = _op_name(op)
    if current_tracer() is not None:
        from ..autograd import no_grad
        from ..dispatch import apply

        res = apply(ops.ALL_REDUCE, tensor, reduce=name)
        with no_grad():
            tensor.copy_(res)
        return Work(g, None, None, "all_reduce") if async_op else None
    arr, after = _array(tensor, "all_reduce")
    what = f"all_reduce({name}) of {arr.dtype}{list(arr.shape)}"
    return _run(g, g.iallreduce(arr, name), after, async_op, what)


def broadcast(tensor, src: int = 0, group=None, async_op: bool = False):
    """Rank ``src``'s ``tensor`` copied into ``tensor`` on every rank."""
    g = _default("broadcast")
    _not_traced("broadcast")
    if not 0 <= src < g.size:
        raise ValueError(f"broadcast: src={src} is not a rank of a group of size {g.size}")
    arr, after = _array(tensor, "broadcast")
    return _run(g, g.ibcast(arr, src), after, async_op,
                f"broadcast from rank {src} of {arr.dtype}{list(arr.shape)}")


def all_gather(tensor_list: list, tensor, group=None, async_op: bool = False):
    """``tensor_list[r]`` receives rank r's ``tensor`` (same shape and dtype on every rank)."""
    g = _default("all_gather")
    _not_traced("all_gather")
    if len(tensor_list) != g.size:
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} tensors, the group "
                         f"has {g.size} ranks")
    src = _input(tensor, "all_gather")
    for k, t in enumerate(tensor_list):
        if tuple(t.shape) != src.shape or t.dtype != src.dtype:
            raise ValueError(f"all_gather: tensor_list[{k}] is {t.dtype}{list(t.shape)}, the "
                             f"input is {src.dtype}{list(src.shape)}")
    out = np.empty((g.size,) + src.shape, src.dtype)
    outs = [_array(t, "all_gather") for t in tensor_list]

    def scatter():
        for (arr, after), part in zip(outs, out):
            np.copyto(arr, part)
            after()
    return _run(g, g.iallgather(out, src), scatter, async_op,
                f"all_gather of {src.dtype}{list(src.shape)}")


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op: bool = False):
    """The ranks' ``input_tensor`` stacked along dim 0 into ``output_tensor``
    (shape ``(world_size * n, ...)``)."""
    g = _default("all_gather_into_tensor")
    _not_traced("all_gather_into_tensor")
    src = _input(input_tensor, "all_gather_into_tensor")
    want = (g.size * (src.shape[0] if src.ndim else 1),) + src.shape[1:]
    if tuple(output_tensor.shape) not in (want, (g.size,) + src.shape) or \
            output_tensor.dtype != src.dtype:
        raise ValueError(f"all_gather_into_tensor: output is {output_tensor.dtype}"
                         f"{list(output_tensor.shape)}, expected {src.dtype}{list(want)}")
    out, after = _array(output_tensor, "all_gather_into_tensor")
    return _run(g, g.iallgather(out, src), after, async_op,
                f"all_gather_into_tensor of {src.dtype}{list(src.shape)}")


def reduce_scatter(output, input_list: list, op=ReduceOp.SUM, group=None,
                   async_op: bool = False):
    """``output`` on rank r receives the reduction over ranks of their ``input_list[r]``."""
    g = _default("reduce_scatter")
    _not_traced("reduce_scatter")
    name = _op_name(op)
    if len(input_list) != g.size:
        raise ValueError(f"reduce_scatter: input_list has {len(input_list)} tensors, the group "
                         f"has {g.size} ranks")
    for k, t in enumerate(input_list):
        if tuple(t.shape) != tuple(output.shape) or t.dtype != output.dtype:
            raise ValueError(f"reduce_scatter: input_list[{k}] is {t.dtype}{list(t.shape)}, "
                             f"the output is {output.dtype}{list(output.shape)}")
    src = np.stack([_input(t, "reduce_scatter") for t in input_list])
    out, after = _array(output, "reduce_scatter")
    return _run(g, g.ireduce_scatter(out, src, name), after, async_op,
                f"reduce_scatter({name}) of {out.dtype}{list(out.shape)}")


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op: bool = False):
    """``input`` (shape ``(world_size * n, ...)``) reduced over ranks; rank r keeps block r."""
    g = _default("reduce_scatter_tensor")
    _not_traced("reduce_scatter_tensor")
    name = _op_name(op)
    src = _input(input, "reduce_scatter_tensor")
    if src.size != g.size * output.numel() or src.dtype != output.dtype:
        raise ValueError(f"reduce_scatter_tensor: input is {src.dtype}{list(src.shape)}, "
                         f"output {output.dtype}{list(output.shape)}: the input must hold "
                         f"world_size ({g.size}) outputs")
    out, after = _array(output, "reduce_scatter_tensor")
    return _run(g, g.ireduce_scatter(out, src, name), after, async_op,
                f"reduce_scatter_tensor({name}) of {out.dtype}{list(out.shape)}")


def barrier(group=None, async_op: bool = False):
    """Wait until every rank has reached the barrier."""
    g = _default("barrier")
    _not_traced("barrier")
    return _run(g, g.ibarrier(), None, async_op, "barrier")
