"""What runs inside a DataLoader worker process, and ``get_worker_info()``.

A worker reads ``(epoch, idx, index)`` tasks from its own index queue, fetches and collates the
batch, and answers on the shared result queue with a header whose bulk data is in shared memory
(``_shm``). Everything a worker needs arrives as arguments of ``worker_loop`` (a module-level
function), so it runs under the "spawn" start method as well as "fork".
"""

from __future__ import annotations

import os
import pickle
import queue
import random
import signal
import sys
import traceback
from dataclasses import dataclass

import numpy as np

from .fetch import make_fetcher

# How often a waiting worker checks that the main process is still alive, and a waiting main
# process that its workers are (torch uses 5 s; 1 s makes a dead worker an error sooner).
STATUS_INTERVAL = 1.0


@dataclass(frozen=True)
class WorkerInfo:
    """Set in each worker process: ``id`` in [0, num_workers), the worker's ``seed`` and its
    copy of the ``dataset``."""
    id: int
    num_workers: int
    seed: int
    dataset: object


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """In a DataLoader worker: its WorkerInfo; in the main process: None.

    >>> get_worker_info() is None
    True
    """
    return _worker_info


class KeyErrorMessage(str):
    """KeyError shows repr() of its argument; this keeps the worker's traceback readable."""

    def __repr__(self):
        return self


class ExceptionWrapper:
    """An exception caught in a worker, carried to the main process as text and re-raised
    there in torch's words: "Caught ValueError in DataLoader worker process 0. Original
    Traceback (most recent call last): ..."."""

    def __init__(self, where: str) -> None:
        exc_type, exc, tb = sys.exc_info()
        self.exc_type = exc_type
        self.exc_type_name = exc_type.__name__
        self.exc_msg = "".join(traceback.format_exception(exc_type, exc, tb))
        self.where = where

    def __reduce__(self):
        state = dict(self.__dict__)
        try:  # a class defined in a spawned worker's __main__ may not pickle: re-raise as
            pickle.dumps(self.exc_type)  # RuntimeError with the same text then
        except Exception:
            state["exc_type"] = None
        return (_rebuild_wrapper, (state,))

    def reraise(self):
        msg = f"Caught {self.exc_type_name} {self.where}.\nOriginal {self.exc_msg}"
        exc_type = self.exc_type
        if exc_type is None:
            raise RuntimeError(msg)
        if exc_type is KeyError:
            msg = KeyErrorMessage(msg)
        elif getattr(exc_type, "message", None):
            raise exc_type(message=msg)
        try:
            exception = exc_type(msg)
        except Exception:
            raise RuntimeError(msg) from None
        raise exception


def _rebuild_wrapper(state):
    wrapper = object.__new__(ExceptionWrapper)
    wrapper.__dict__.update(state)
    return wrapper


def seed_worker(base_seed: int, worker_id: int) -> int:
    """Seed Python's, numpy's and tracejit's generators in a worker, as torch does: ``random``
    and tracejit get ``base_seed + worker_id``, numpy's legacy global generator a state derived
    from both (so workers never share a stream)."""
    from ...creation import manual_seed
    seed = base_seed + worker_id
    random.seed(seed)
    manual_seed(seed)
    np.random.seed(np.random.SeedSequence([worker_id, base_seed]).generate_state(4))
    return seed


def _put(result_queue, message) -> None:
    # NOTE: mp.Queue pickles in a background thread, where a failure is only printed and the
    # item lost (the main process would wait forever); pickling here makes it our exception.
    result_queue.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def worker_loop(iterable: bool, dataset, index_queue, result_queue, done_event,
                auto_collation: bool, collate_fn, drop_last: bool, base_seed: int,
                init_fn, worker_id: int, num_workers: int, shm_prefix: str) -> None:
    global _worker_info
    # NOTE: the parent as this process sees it (torch's watchdog does the same): under the
    # forkserver start method it is the server, not the loader's process
    parent_pid = os.getppid()
    from . import _shm  # not at the top: the main process imports this module for WorkerInfo
    # Ctrl-C reaches the whole process group; the main process handles it and shuts us down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    where = f"in DataLoader worker process {worker_id}"
    seed = seed_worker(base_seed, worker_id)
    _worker_info = WorkerInfo(id=worker_id, num_workers=num_workers, seed=seed, dataset=dataset)
    init_error = fetcher = None
    try:
        if init_fn is not None:
            init_fn(worker_id)
        fetcher = make_fetcher(iterable, dataset, auto_collation, collate_fn, drop_last)
    except Exception:
        init_error = ExceptionWrapper(where)  # reported as the answer to the first task
    ended = False  # this worker's copy of an iterable dataset is exhausted
    count = 0
    while os.getppid() == parent_pid:  # else the main process died without shutting us down
        try:
            msg = index_queue.get(timeout=STATUS_INTERVAL)
        except queue.Empty:
            continue
        if msg is None:
            break
        if done_event.is_set():
            continue  # shutting down: skip work until the final None
        if msg[0] == "resume":  # persistent workers: a new epoch begins
            ended = False
            if init_error is None:
                try:
                    fetcher = make_fetcher(iterable, dataset, auto_collation, collate_fn,
                                           drop_last)
                except Exception:
                    init_error = ExceptionWrapper(where)
            continue
        _, epoch, idx, index = msg
        if ended:
            continue
        if init_error is not None:
            _put(result_queue, ("error", worker_id, epoch, idx, init_error))
            init_error = None
            continue
        try:
            batch = fetcher.fetch(index)
            header = _shm.pack(batch, f"{shm_prefix}{worker_id}_{count}")
            count += 1
            del batch
        except StopIteration:
            if not iterable:  # re-raised as StopIteration in the main process, as in torch
                _put(result_queue, ("error", worker_id, epoch, idx, ExceptionWrapper(where)))
                continue
            ended = True
            _put(result_queue, ("stop", worker_id, epoch, idx, None))
            continue
        except Exception:
            _put(result_queue, ("error", worker_id, epoch, idx, ExceptionWrapper(where)))
            continue
        try:
            _put(result_queue, ("data", worker_id, epoch, idx, header))
        except Exception:
            _shm.release(header)
            raise
    # NOTE: returning (not os._exit) lets the queue's feeder thread flush what we sent; the
    # main process keeps reading the result queue while it waits for us to exit.

