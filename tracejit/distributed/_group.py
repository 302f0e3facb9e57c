"""The MPI process group behind ``tracejit.distributed``: collectives on numpy arrays, each
started non-blocking and waited for with a deadline, so a rank that died or never joins makes
the others stop with a clear message (``MPI_Abort``) instead of hanging forever.

mpi4py is imported here only, on ``init_process_group``.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from tracejit.runtime import memory

INSTALL = ("tracejit.distributed needs mpi4py and an MPI library: pip install 'tracejit[dist]' "
           "(or pip install mpich mpi4py)")

# how long a collective may wait for the other ranks (seconds) when init_process_group is not
# given a timeout; as torch's default, 30 minutes
DEFAULT_TIMEOUT = 1800.0

# reductions by name (ReduceOp values) -> MPI op name; avg is a sum divided afterwards
_MPI_OPS = {"sum": "SUM", "avg": "SUM", "max": "MAX", "min": "MIN", "product": "PROD"}
# bool arrays reduce as uint8: sum and max are a logical or, min and product a logical and
_BOOL_OPS = {"sum": "MAX", "max": "MAX", "min": "MIN", "product": "MIN"}


def import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"{INSTALL} ({e})") from None
    return MPI


class Group:
    """One process group: a duplicate of MPI's COMM_WORLD and the collectives on it."""

    def __init__(self, timeout: float):
        self.MPI = MPI = import_mpi()
        self.comm = MPI.COMM_WORLD.Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = float(timeout)
        self.times = None  # a list: each traced all_reduce appends its seconds (benchmarks)

    def free(self) -> None:
        if self.comm is not None:
            self.comm.Free()
            self.comm = None

    # -- waiting with a deadline
    def wait(self, req, what: str) -> None:
        """Wait for ``req``; past the timeout, print why and abort every rank."""
        if req.Test():
            return
        start = time.monotonic()
        deadline = start + self.timeout
        # NOTE: a wait spins, as MPI's blocking calls do (a nap after each test added ~1 ms to
        # a 1 ms exchange on a loaded machine); one that lasts (a slow or dead peer) naps
        spin_until = start + 0.25
        yield_cpu = os.sched_yield if hasattr(os, "sched_yield") else _no_yield
        while not req.Test():
            yield_cpu()
            now = time.monotonic()
            if now > spin_until:
                if now > deadline:
                    self.abort(what)
                time.sleep(0.0002)

    def abort(self, what: str) -> None:
        msg = (f"tracejit.distributed: rank {self.rank} of {self.size}: {what} did not complete "
               f"within the {self.timeout:g} s timeout: another rank has died, hangs, or did not "
               f"call the same collective (with the same shapes). Aborting all ranks "
               f"(MPI_Abort). Set the timeout with init_process_group(timeout=...) or "
               f"TRACEJIT_DIST_TIMEOUT=seconds.")
        print(msg, file=sys.stderr, flush=True)
        sys.stdout.flush()
        self.comm.Abort(1)
        os._exit(1)  # not reached: Abort ends this process

    # -- collectives on contiguous numpy arrays: each returns (request, finish) where finish()
    # runs after the request completes
    def _mpi_op(self, arr: np.ndarray, op: str):
        if op not in _MPI_OPS:
            raise ValueError(f"unknown reduction {op!r} (ReduceOp.SUM, AVG, MAX, MIN, PRODUCT)")
        if arr.dtype == np.bool_:
            if op == "avg":
                raise TypeError("all_reduce: ReduceOp.AVG needs a floating-point tensor, got bool")
            return getattr(self.MPI, _BOOL_OPS[op]), arr.view(np.uint8)
        if op == "avg" and arr.dtype.kind != "f":
            raise TypeError(f"all_reduce: ReduceOp.AVG needs a floating-point tensor, got "
                            f"{arr.dtype} (reduce with SUM and divide)")
        return getattr(self.MPI, _MPI_OPS[op]), arr

    def iallreduce(self, arr: np.ndarray, op: str):
        """Start an in-place all-reduce of contiguous ``arr``."""
        mop, buf = self._mpi_op(arr, op)
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, mop)
        finish = None
        if op == "avg" and self.size > 1:
            size = self.size

            def finish():
                np.divide(arr, size, out=arr)
        return req, finish

    def ibcast(self, arr: np.ndarray, src: int):
        return self.comm.Ibcast(_bytes(arr), root=src), None

    def iallgather(self, out: np.ndarray, arr: np.ndarray):
        return self.comm.Iallgather(_bytes(arr), _bytes(out)), None

    def ireduce_scatter(self, out: np.ndarray, arr: np.ndarray, op: str):
        mop, buf = self._mpi_op(arr, op)
        obuf = out.view(np.uint8) if out.dtype == np.bool_ else out
        req = self.comm.Ireduce_scatter_block(buf, obuf, mop)
        finish = None
        if op == "avg" and self.size > 1:
            size = self.size

            def finish():
                np.divide(out, size, out=out)
        return req, finish

    def ibarrier(self):
        return self.comm.Ibarrier(), None

    def allgather_object(self, obj):
        """Every rank's ``obj`` (small Python data), with the deadline."""
        import pickle

        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        sizes = np.zeros(self.size, np.int64)
        self.wait(self.comm.Iallgather(np.array([data.size], np.int64), sizes),
                  "a metadata exchange")
        buf = np.zeros(int(sizes.sum()), np.uint8)
        counts = [int(n) for n in sizes]
        displs = [int(d) for d in np.concatenate([[0], np.cumsum(sizes)[:-1]])]
        self.wait(self.comm.Iallgatherv(data, [buf, counts, displs, self.MPI.BYTE]),
                  "a metadata exchange")
        return [pickle.loads(buf[d:d + n].tobytes()) for d, n in zip(displs, counts)]

    # -- the op row's backend (ops.collective_backend): a traced all_reduce
    def all_reduce_array(self, x: np.ndarray, op: str, in_place: bool = False) -> np.ndarray:
        """A fresh array (the op row is ``fresh``): MPI reads ``x`` and writes the result;
        ``in_place`` (``x`` is donated: a temporary nothing reads afterwards): into ``x``."""
        start = time.perf_counter()
        in_place = in_place and x.flags.c_contiguous and x.flags.writeable
        x = np.ascontiguousarray(x)
        mop, send = self._mpi_op(x, op)
        if in_place:
            out, send, recv = x, self.MPI.IN_PLACE, send
        else:
            # NOTE: a recycled block (runtime/memory.py): MPI writing into fresh pages cost 1 ms
            # more than the 0.45 ms exchange of 0.8 MB itself between two local ranks
            out = memory.allocator.empty(x.shape, x.dtype)
            recv = out.view(np.uint8) if out.dtype == np.bool_ else out
        self.wait(self.comm.Iallreduce(send, recv, mop),
                  f"all_reduce({op}) of {out.dtype}{list(out.shape)} (traced)")
        if op == "avg" and self.size > 1:
            np.divide(out, self.size, out=out)
        if self.times is not None:
            self.times.append(time.perf_counter() - start)
        return out


def _no_yield() -> None:
    pass


def _bytes(arr: np.ndarray):
    """A contiguous array as a byte buffer (any dtype, bool included, moves as bytes)."""
    return arr.reshape(-1).view(np.uint8)
