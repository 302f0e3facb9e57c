"""Moving a batch from a worker process to the main process through shared memory.

The worker pickles the batch with every tensor and numpy array replaced by a reference (a
pickle "persistent id"), copies the array bytes into one ``multiprocessing.shared_memory``
segment per batch, and sends only the small header (pickled structure, segment name, array
layouts) through the result queue. The main process copies the arrays out, then unlinks the
segment, so a batch's memory lives exactly as long as the batch is in flight. The bulk data
never goes through a pipe; any nesting of containers (or user objects) works, as with pickle.

Segment names start with ``tjdl_<pid>_<token>_``: a loader sweeps its own prefix after its
workers are gone, so a worker killed mid-batch leaks nothing (Linux, where /dev/shm lists them).
"""

from __future__ import annotations

import io
import os
import pickle
import secrets
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from ...tensor import Tensor

PREFIX = "tjdl_"
_ALIGN = 64  # every array starts on a cache line, so the copies are aligned
_SHM_DIR = "/dev/shm"


def new_prefix() -> str:
    """A segment-name prefix unique to one loader iterator."""
    return f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}_"


@dataclass(frozen=True)
class Header:
    """What goes through the queue for one batch: a few hundred bytes whatever the batch."""
    structure: bytes          # the pickled batch, arrays replaced by indices into ``arrays``
    segment: str | None       # shared memory name; None when the batch holds no arrays
    arrays: tuple             # (offset, shape, dtype str, is_tensor, requires_grad) per array


def _shareable(obj) -> np.ndarray | None:
    arr = obj._data if isinstance(obj, Tensor) else obj if isinstance(obj, np.ndarray) else None
    if arr is None or arr.dtype.hasobject or arr.nbytes == 0:
        return None  # object arrays and empty arrays go through pickle as usual
    return arr


class _Pickler(pickle.Pickler):
    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.found: list = []

    def persistent_id(self, obj):
        arr = _shareable(obj)
        if arr is None:
            return None
        self.found.append((obj, arr))
        return len(self.found) - 1


def pack(batch, name: str) -> Header:
    """Write the arrays of ``batch`` into a new segment ``name``; return the header."""
    buf = io.BytesIO()
    pickler = _Pickler(buf)
    pickler.dump(batch)
    layouts, offset = [], 0
    for obj, arr in pickler.found:
        layouts.append((offset, arr.shape, arr.dtype.str, isinstance(obj, Tensor),
                        isinstance(obj, Tensor) and obj.requires_grad))
        offset += -(-arr.nbytes // _ALIGN) * _ALIGN
    if not layouts:
        return Header(buf.getvalue(), None, ())
    shm = shared_memory.SharedMemory(name=name, create=True, size=offset)
    try:
        for (start, shape, dtype, _, _), (_, arr) in zip(layouts, pickler.found):
            np.ndarray(shape, dtype, buffer=shm.buf, offset=start)[...] = arr
    except BaseException:
        shm.close()
        shm.unlink()
        raise
    shm.close()  # the segment stays until the main process unlinks it
    return Header(buf.getvalue(), name, tuple(layouts))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, arrays):
        super().__init__(file)
        self.arrays = arrays

    def persistent_load(self, pid):
        return self.arrays[pid]


def unpack(header: Header):
    """Rebuild the batch (arrays copied out of the segment), then unlink the segment."""
    arrays = []
    if header.segment is not None:
        shm = shared_memory.SharedMemory(name=header.segment)
        try:
            for start, shape, dtype, is_tensor, requires_grad in header.arrays:
                arr = np.ndarray(shape, dtype, buffer=shm.buf, offset=start).copy()
                if is_tensor:
                    arr = Tensor._make(arr)
                    if requires_grad:
                        arr.requires_grad_(True)
                arrays.append(arr)
        finally:
            shm.close()
            shm.unlink()
    return _Unpickler(io.BytesIO(header.structure), arrays).load()


def release(header: Header) -> None:
    """Drop a batch that will never be read (shutdown, an abandoned epoch)."""
    if header.segment is not None:
        unlink(header.segment)


def unlink(name: str) -> None:
    try:
        shm = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return
    shm.close()
    shm.unlink()


def sweep(prefix: str) -> None:
    """Unlink every segment left under ``prefix`` (by a worker killed between writing a batch
    and sending its header)."""
    if not os.path.isdir(_SHM_DIR):
        return  # not Linux: segments of killed workers are left to the resource tracker
    for name in os.listdir(_SHM_DIR):
        if name.startswith(prefix):
            unlink(name)


def leftover_segments(prefix: str = PREFIX) -> list[str]:
    """Names of our segments that exist now (for tests and debugging)."""
    if not os.path.isdir(_SHM_DIR):
        return []
    return sorted(n for n in os.listdir(_SHM_DIR) if n.startswith(prefix))
