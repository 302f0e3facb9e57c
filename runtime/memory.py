"""Memory for compiled graphs.

Fresh large arrays are expensive here: each new 64 MiB array is a fresh mmap whose pages fault
on first touch, which can cost more than the math. So:

- intermediates live in a per-specialization workspace, allocated once per thread and reused on
  every call; buffers whose lifetimes do not overlap share storage (planned in
  codegen/memory_plan.py; this module only allocates);
- large outputs come from a caching allocator that recycles freed blocks by size, as PyTorch's
  CUDA allocator does: when the last array viewing a block dies, the block returns to a free
  list instead of to the operating system. ``tracejit.empty_cache()`` releases the free list,
  and it never holds more than ``TRACEJIT_CACHE_BYTES`` (default: a quarter of RAM, at most
  4 GiB) of unused blocks.

The process-wide malloc is left alone.
"""

from __future__ import annotations

import os
import threading
import weakref

import numpy as np


def _default_limit() -> int:
    env = os.environ.get("TRACEJIT_CACHE_BYTES")
    if env:
        return int(env)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return min(ram // 4, 4 << 30)


class _Block:
    """One hand-out of a recycled block: the base every array viewing it refers to."""

    __slots__ = ("raw", "__array_interface__", "__weakref__")

    def __init__(self, raw: np.ndarray):
        self.raw = raw  # keeps the memory alive; the interface below points into it
        self.__array_interface__ = raw.__array_interface__


class CachingAllocator:
    """``empty(shape, dtype)`` from recycled blocks of the same byte size."""

    def __init__(self, limit_bytes: int | None = None):
        self.limit = _default_limit() if limit_bytes is None else limit_bytes
        self._free: dict = {}
        self._lock = threading.Lock()
        self.cached_bytes = 0  # held in free lists
        self.hits = 0
        self.misses = 0

    def empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        raw = None
        with self._lock:
            blocks = self._free.get(nbytes)
            if blocks:
                raw = blocks.pop()
                self.cached_bytes -= nbytes
                self.hits += 1
            else:
                self.misses += 1
        if raw is None:
            raw = np.empty(max(nbytes, 1), np.uint8)
        # NOTE: the block goes back to the free list when the last array viewing it dies. numpy
        # points every view at the innermost base that is not an ndarray view, so a view of a
        # view of ``raw`` keeps ``raw`` alive, not the array handed out: a finalizer on that
        # array fired while ``out[0]`` still viewed the block, and the next call overwrote it.
        # Handing out arrays based on a fresh _Block makes the block that innermost base.
        block = _Block(raw)
        arr = np.asarray(block)[:nbytes].view(dtype).reshape(shape)
        weakref.finalize(block, self._release, raw, nbytes)
        return arr

    def _release(self, raw, nbytes) -> None:
        with self._lock:
            if self.cached_bytes + nbytes > self.limit:
                return  # over the cap: let this block go back to the system
            self._free.setdefault(nbytes, []).append(raw)
            self.cached_bytes += nbytes

    def empty_cache(self) -> None:
        with self._lock:
            self._free.clear()
            self.cached_bytes = 0


allocator = CachingAllocator()


def empty_cache() -> None:
    """Release the memory tracejit keeps for reuse (free blocks of the caching allocator)."""
    allocator.empty_cache()
