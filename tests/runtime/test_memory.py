"""Memory planning (``plan_slots``: workspace buffers share storage by liveness) and the caching
allocator (freed blocks are recycled by byte size, within a limit)."""

from __future__ import annotations

import gc
import itertools

import numpy as np
import pytest

from tracejit.codegen.memory_plan import plan_slots
from tracejit.runtime.memory import CachingAllocator


def _overlap(a, b) -> bool:
    """Do two (nbytes, first, last) live ranges overlap (a kernel reading one while the other
    is written counts)?"""
    return not (a[2] < b[1] or b[2] < a[1])


@pytest.mark.parametrize("seed", range(20))
def test_buffers_sharing_a_slot_are_never_live_together(seed):
    rng = np.random.default_rng(seed)
    buffers = []
    for k in range(12):
        first = k
        buffers.append((int(rng.integers(1, 5)) * 1024, first, first + int(rng.integers(0, 5))))
    slots = plan_slots(buffers)
    assert len(slots) == len(buffers)
    for (i, a), (j, b) in itertools.combinations(enumerate(buffers), 2):
        if slots[i] == slots[j]:
            assert not _overlap(a, b), (i, j, a, b)


def test_a_chain_reuses_two_slots():
    # t1 = f(x); t2 = g(t1); t3 = h(t2); ...: each buffer dies when the next one is written
    buffers = [(4096, k, k + 1) for k in range(8)]
    assert len(set(plan_slots(buffers))) == 2


def test_a_buffer_read_by_the_kernel_that_defines_the_next_is_not_reused_by_it():
    # last use at node 1, next defined at node 1: the kernel reads one while writing the other
    assert plan_slots([(64, 0, 1), (64, 1, 2)]) == [0, 1]


def test_allocator_recycles_a_freed_block_of_the_same_size():
    alloc = CachingAllocator(limit_bytes=1 << 20)
    a = alloc.empty((256,), np.float32)
    a[:] = 1
    del a
    gc.collect()
    assert alloc.cached_bytes == 1024
    b = alloc.empty((16, 16), np.int32)  # another shape and dtype, the same byte size
    assert (alloc.hits, alloc.misses) == (1, 1) and b.shape == (16, 16) and b.dtype == np.int32
    c = alloc.empty((10,), np.float64)  # another size: a fresh block
    assert alloc.misses == 2 and c.nbytes == 80


def test_allocator_keeps_no_more_than_its_limit():
    alloc = CachingAllocator(limit_bytes=3000)
    blocks = [alloc.empty((256,), np.float32) for _ in range(4)]  # 4 x 1024 bytes
    del blocks
    gc.collect()
    assert alloc.cached_bytes <= 3000
    alloc.empty_cache()
    assert alloc.cached_bytes == 0 and alloc.empty((256,), np.float32).shape == (256,)


def test_a_view_keeps_its_block_alive():
    alloc = CachingAllocator(limit_bytes=1 << 20)
    a = alloc.empty((8, 8), np.float64)
    a[:] = 7
    row = a[3]
    del a
    gc.collect()
    assert alloc.cached_bytes == 0  # the row still views the block
    fresh = alloc.empty((8, 8), np.float64)
    fresh[:] = 0
    assert (row == 7).all()
    del row
    gc.collect()
    assert alloc.cached_bytes == 512


def test_zero_sized_arrays():
    alloc = CachingAllocator(limit_bytes=1 << 20)
    assert alloc.empty((0, 3), np.float32).shape == (0, 3)


def test_a_numpy_view_of_a_compiled_result_survives_the_next_call():
    # the result (2 MiB) comes from the caching allocator; the user keeps only a numpy view of
    # one row. Its block went back to the free list when the result died and the next call
    # wrote 6.0 into the row the user held.
    import tracejit as tj

    f = tj.trace(lambda x: x * 2)
    x = tj.ones(512, 1024)
    f(x)
    row = f(x).numpy()[0]
    gc.collect()
    f(x * 3)
    assert (row == 2.0).all()
