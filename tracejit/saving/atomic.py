"""Atomic file writes: a checkpoint (or export) is written to a temporary file in the same
directory, flushed and fsynced, then renamed over the target with ``os.replace``. A crash or
an exception mid-write leaves the previous file untouched, never a truncated one.

>>> with atomic_write("ckpt.tj") as f:                                 # doctest: +SKIP
...     f.write(b"...")
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def _fsync_dir(directory: str) -> None:
    # NOTE: makes the rename itself durable on POSIX; not possible (nor needed) on Windows
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path):
    """Open a temporary binary file next to ``path``; on a clean exit it replaces ``path``
    (after fsync), on an exception it is removed and ``path`` keeps its old contents."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        try:  # mkstemp makes the file 0600: give it the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


__all__ = ["atomic_write"]
