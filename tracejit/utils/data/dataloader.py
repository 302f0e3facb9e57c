"""``DataLoader``: batches from a dataset, in this process or in worker processes.

>>> from tracejit.utils.data import TensorDataset
>>> loader = DataLoader(TensorDataset(tracejit.arange(10)), batch_size=4)
>>> [b[0].tolist() for b in loader]
[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
"""

from __future__ import annotations

import itertools
import math
import queue
import time
import warnings
import weakref

from ._random import check_generator, draw_seed
from .collate import default_collate, default_convert
from .dataset import IterableDataset
from .fetch import make_fetcher
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler
from .worker import STATUS_INTERVAL

_pin_memory_noted = [False]


class _InfiniteConstantSampler(Sampler):
    """The sampler of an iterable dataset: the stream decides where it ends."""

    def __iter__(self):
        while True:
            yield None


class DataLoader:
    """Iterate over ``dataset`` in batches (torch's ``torch.utils.data.DataLoader``).

    ``shuffle=True`` draws each epoch's order from ``generator`` (a numpy Generator) or from
    tracejit's global generator; ``num_workers > 0`` loads batches in worker processes and
    passes them back through shared memory. ``pin_memory`` is accepted and ignored (tracejit
    tensors live in CPU memory).
    """

    def __init__(self, dataset, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler=None, batch_sampler=None, num_workers: int = 0, collate_fn=None,
                 pin_memory: bool = False, drop_last: bool = False, timeout: float = 0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor: int | None = None, persistent_workers: bool = False,
                 pin_memory_device: str = "", in_order: bool = True) -> None:
        self.__initialized = False
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; "
                             "use num_workers=0 to disable multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("prefetch_factor option could only be specified in multiprocessing."
                             "let num_workers > 0 to enable multiprocessing, otherwise set "
                             "prefetch_factor to None.")
        elif num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        elif prefetch_factor is not None and prefetch_factor < 0:
            raise ValueError("prefetch_factor option should be non-negative")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        check_generator(generator, "DataLoader")

        self.dataset = dataset
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.in_order = in_order

        if isinstance(dataset, IterableDataset):
            self._iterable = True
            # the stream's order is the dataset's; samplers cannot index into it
            if shuffle not in {False, None}:
                raise ValueError("DataLoader with IterableDataset: expected unspecified shuffle "
                                 f"option, but got shuffle={shuffle}")
            if sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified sampler "
                                 f"option, but got sampler={sampler}")
            elif batch_sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified "
                                 f"batch_sampler option, but got batch_sampler={batch_sampler}")
        else:
            shuffle = bool(shuffle)
            self._iterable = False

        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, "
                                 "shuffle, sampler, and drop_last")
            batch_size = None
            drop_last = False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually "
                             "exclusive with drop_last")

        if sampler is None:
            if self._iterable:
                sampler = _InfiniteConstantSampler()
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.generator = generator
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self.persistent_workers = persistent_workers
        self._iterator = None
        self.__initialized = True

    @property
    def multiprocessing_context(self):
        return self.__multiprocessing_context

    @multiprocessing_context.setter
    def multiprocessing_context(self, context) -> None:
        if context is not None:
            import multiprocessing
            if self.num_workers <= 0:
                raise ValueError("multiprocessing_context can only be used with multi-process "
                                 "loading (num_workers > 0), but got "
                                 f"num_workers={self.num_workers}")
            if isinstance(context, str):
                methods = multiprocessing.get_all_start_methods()
                if context not in methods:
                    raise ValueError("multiprocessing_context option should specify a valid "
                                     f"start method in {methods!r}, but got "
                                     f"multiprocessing_context={context!r}")
                context = multiprocessing.get_context(context)
            if not isinstance(context, multiprocessing.context.BaseContext):
                raise TypeError("multiprocessing_context option should be a valid context "
                                "object or a string specifying the start method, but got "
                                f"multiprocessing_context={context}")
        self.__multiprocessing_context = context

    def __setattr__(self, attr, val) -> None:
        if self.__dict__.get("_DataLoader__initialized") and attr in (
                "batch_size", "batch_sampler", "sampler", "drop_last", "dataset",
                "persistent_workers"):
            raise ValueError(f"{attr} attribute should not be set after "
                             f"{self.__class__.__name__} is initialized")
        super().__setattr__(attr, val)

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def __iter__(self):
        if self.pin_memory and not _pin_memory_noted[0]:
            _pin_memory_noted[0] = True
            warnings.warn("DataLoader: pin_memory=True is ignored: tracejit tensors are CPU "
                          "tensors and there is no CUDA device memory to copy to yet.",
                          stacklevel=2)
        if self.num_workers == 0:
            return _SingleProcessIter(self)
        if not self.persistent_workers:
            return _MultiProcessIter(self)
        # persistent workers: one iterator (and one set of processes) for the loader's life
        if self._iterator is None:
            self._iterator = _MultiProcessIter(self)
        else:
            self._iterator._reset(self)
        return self._iterator

    def __len__(self) -> int:
        if self._iterable:
            length = len(self.dataset)  # TypeError when the stream has no length, as in torch
            if self.batch_size is not None:
                length = (length // self.batch_size if self.drop_last
                          else math.ceil(length / self.batch_size))
            return length
        return len(self._index_sampler)


class _BaseIter:
    def __init__(self, loader: DataLoader) -> None:
        # NOTE: copies of the loader's settings, not the loader: a persistent iterator is held
        # by its loader, and a reference back would keep both (and the workers) alive.
        self._dataset = loader.dataset
        self._iterable = loader._iterable
        self._auto_collation = loader._auto_collation
        self._drop_last = loader.drop_last
        self._index_sampler = loader._index_sampler
        self._collate_fn = loader.collate_fn
        self._timeout = loader.timeout
        self._persistent = loader.persistent_workers
        self._sampler_iter = iter(self._index_sampler)
        self._base_seed = draw_seed(loader.generator)  # drawn every epoch, as torch does
        self._num_yielded = 0

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._index_sampler)

    def _reset(self, loader: DataLoader) -> None:
        self._sampler_iter = iter(self._index_sampler)
        self._num_yielded = 0

    def __next__(self):
        data = self._next_data()
        self._num_yielded += 1
        return data

    def __getstate__(self):
        raise TypeError(f"{type(self).__name__} cannot be pickled")


class _SingleProcessIter(_BaseIter):
    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader)
        self._fetcher = make_fetcher(self._iterable, self._dataset, self._auto_collation,
                                     self._collate_fn, self._drop_last)

    def _next_data(self):
        return self._fetcher.fetch(next(self._sampler_iter))  # either may raise StopIteration


class _MultiProcessIter(_BaseIter):
    """Sends index lists round-robin to the workers, keeps ``prefetch_factor`` tasks per
    worker in flight, and yields results in sampler order (``in_order=True``)."""

    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader)
        if not loader.prefetch_factor:
            raise ValueError("prefetch_factor option should be positive with num_workers > 0")
        self._num_workers = loader.num_workers
        self._prefetch_factor = loader.prefetch_factor
        self._in_order = loader.in_order
        # NOTE: imported here, not at the top: multiprocessing (sockets, subprocess) and shared
        # memory would cost every `import tracejit` ~10 ms, and only worker processes need them
        import multiprocessing

        from . import _shm
        from ._pool import WorkerPool
        self._shm = _shm
        ctx = loader.multiprocessing_context or multiprocessing.get_context()
        self._pool = WorkerPool(ctx, self._num_workers, iterable=self._iterable,
                                dataset=self._dataset, auto_collation=self._auto_collation,
                                collate_fn=self._collate_fn, drop_last=self._drop_last,
                                base_seed=self._base_seed, worker_init_fn=loader.worker_init_fn)
        self._finalizer = weakref.finalize(self, self._pool.shutdown)
        self._epoch = 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        self._send_idx = 0  # next task number to hand out
        self._rcvd_idx = 0  # next task number to yield
        self._task_info = {}  # task number -> [worker_id] while in flight, + [message] once here
        self._tasks_outstanding = 0
        self._workers_status = [True] * self._num_workers  # False: its stream has ended
        self._worker_cycle = itertools.cycle(range(self._num_workers))
        for _ in range(self._prefetch_factor * self._num_workers):
            self._try_put_index()

    def _reset(self, loader: DataLoader) -> None:
        super()._reset(loader)
        self._release_pending()
        self._epoch += 1  # answers to the previous epoch's tasks are dropped on arrival
        for worker_id in range(self._num_workers):
            self._pool.put(worker_id, ("resume", self._epoch))
        self._start_epoch()

    def _try_put_index(self) -> None:
        if self._tasks_outstanding >= self._prefetch_factor * self._num_workers:
            return
        for _ in range(self._num_workers):
            worker_id = next(self._worker_cycle)
            if self._workers_status[worker_id]:
                break
        else:
            return  # every worker's stream has ended
        try:
            index = next(self._sampler_iter)
        except StopIteration:
            return
        self._pool.put(worker_id, ("task", self._epoch, self._send_idx, index))
        self._task_info[self._send_idx] = [worker_id]
        self._tasks_outstanding += 1
        self._send_idx += 1

    def _next_data(self):
        while True:
            # skip tasks that will never be answered (their worker's stream ended)
            while self._rcvd_idx < self._send_idx:
                info = self._task_info.get(self._rcvd_idx)
                if info is not None and (len(info) == 2 or self._workers_status[info[0]]):
                    break
                self._task_info.pop(self._rcvd_idx, None)
                self._rcvd_idx += 1
            else:
                if not self._persistent:
                    self._shutdown()
                raise StopIteration
            info = self._task_info[self._rcvd_idx]
            if len(info) == 2:  # it arrived earlier, out of order
                del self._task_info[self._rcvd_idx]
                return self._process(info[1])
            message = self._get_message()
            kind, worker_id, epoch, idx, payload = message
            if epoch != self._epoch or idx not in self._task_info:
                if kind == "data":
                    self._shm.release(payload)  # an abandoned epoch's batch
                continue
            self._tasks_outstanding -= 1
            if kind == "stop":
                self._workers_status[worker_id] = False
                del self._task_info[idx]
                self._try_put_index()
                continue
            if idx == self._rcvd_idx:
                del self._task_info[idx]
                return self._process(message)
            if not self._in_order:
                del self._task_info[idx]
                return self._process(message, advance=False)
            self._task_info[idx].append(message)

    def _process(self, message, advance: bool = True):
        if advance:
            self._rcvd_idx += 1
        self._try_put_index()
        kind, _, _, _, payload = message
        if kind == "error":
            payload.reraise()
        return self._shm.unpack(payload)

    def _get_message(self):
        deadline = time.monotonic() + self._timeout if self._timeout > 0 else None
        while True:
            wait = STATUS_INTERVAL if deadline is None else max(
                0.0, min(STATUS_INTERVAL, deadline - time.monotonic()))
            try:
                return self._pool.get(wait)
            except queue.Empty:
                pass
            dead = self._pool.dead_workers()
            if dead:
                self._shutdown()
                pids = ", ".join(str(pid) for pid in dead)
                raise RuntimeError(f"DataLoader worker (pid(s) {pids}) exited unexpectedly")
            if deadline is not None and time.monotonic() >= deadline:
                raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")

    def _release_pending(self) -> None:
        for info in self._task_info.values():
            if len(info) == 2 and info[1][0] == "data":
                self._shm.release(info[1][4])
        self._task_info = {}

    def _shutdown(self) -> None:
        self._release_pending()
        self._finalizer()  # runs pool.shutdown once; later calls do nothing

    def __del__(self):
        # NOTE: batches that arrived out of order live only here; free their segments too
        if hasattr(self, "_task_info"):
            self._release_pending()
