"""The worker processes of one DataLoader iterator and their queues, and how they stop.

Kept apart from the iterator so that ``weakref.finalize(iterator, pool.shutdown)`` holds no
reference to the iterator: deleting the iterator (``break`` out of the loop, an exception,
Ctrl-C, the loader going away) or leaving the interpreter shuts the workers down.
"""

from __future__ import annotations

import os
import pickle
import queue
import sys
import time

from . import _shm
from .worker import worker_loop

SHUTDOWN_TIMEOUT = 5.0  # seconds a worker gets to finish its current item and exit


class WorkerPool:
    def __init__(self, ctx, num_workers: int, *, iterable: bool, dataset, auto_collation: bool,
                 collate_fn, drop_last: bool, base_seed: int, worker_init_fn) -> None:
        if os.name == "posix":
            # NOTE: start the resource tracker before forking, so the workers (which register
            # the segments they create) and this process (which unlinks them) share one. A
            # worker that started its own would unlink live segments when it exits.
            from multiprocessing import resource_tracker
            resource_tracker.ensure_running()
        self.prefix = _shm.new_prefix()
        self.result_queue = ctx.Queue()
        self.done_event = ctx.Event()
        self.index_queues, self.workers = [], []
        self.closed = False
        try:
            for worker_id in range(num_workers):
                index_queue = ctx.Queue()
                # the main process must never block at exit flushing indices to a dead worker
                index_queue.cancel_join_thread()
                w = ctx.Process(target=worker_loop, daemon=True, args=(
                    iterable, dataset, index_queue, self.result_queue, self.done_event,
                    auto_collation, collate_fn, drop_last, base_seed, worker_init_fn,
                    worker_id, num_workers, self.prefix))
                w.start()
                self.index_queues.append(index_queue)
                self.workers.append(w)
        except BaseException:
            self.shutdown()
            raise

    def put(self, worker_id: int, message) -> None:
        self.index_queues[worker_id].put(message)

    def get(self, timeout: float):
        """The next message from any worker; raises queue.Empty after ``timeout`` seconds."""
        return pickle.loads(self.result_queue.get(timeout=timeout))

    def dead_workers(self) -> list[int]:
        return [w.pid for w in self.workers if not w.is_alive()]

    def _drain(self, timeout: float) -> None:
        """Read what the workers sent and free its shared memory."""
        while True:
            try:
                message = self.get(timeout)
            except (queue.Empty, EOFError, OSError, pickle.UnpicklingError):
                return
            if message[0] == "data":
                _shm.release(message[4])
            timeout = 0.0

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.done_event.set()
            for q in self.index_queues:
                try:
                    q.put(None)
                except (OSError, ValueError):
                    pass
            # keep reading while the workers exit: a worker's queue feeder flushes what it
            # sent before the process can end
            deadline = time.monotonic() + SHUTDOWN_TIMEOUT
            while any(w.is_alive() for w in self.workers) and time.monotonic() < deadline:
                self._drain(0.05)
            killed = False
            for w in self.workers:
                if w.is_alive():
                    killed = True
                    w.terminate()
                w.join(timeout=SHUTDOWN_TIMEOUT)
                if w.is_alive() and hasattr(w, "kill"):
                    w.kill()
                    w.join()
            if not killed:  # a killed worker may have left half a message in the pipe
                self._drain(0.0)
            for q in (*self.index_queues, self.result_queue):
                q.close()
        except Exception as e:  # never let cleanup hide the error that led to it
            print(f"tracejit DataLoader: error while shutting down workers: {e!r}",
                  file=sys.stderr)
        finally:
            _shm.sweep(self.prefix)
