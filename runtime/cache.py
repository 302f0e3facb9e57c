"""The on-disk compile cache: generated modules, with numba's machine code beside them.

Location: ``TRACEJIT_CACHE_DIR``, else the user cache directory (``$XDG_CACHE_HOME/tracejit``,
``~/.cache/tracejit``, ``~/Library/Caches/tracejit`` on macOS, ``%LOCALAPPDATA%\\tracejit`` on
Windows). An entry is ``tj_<hash>.py``, named by a hash of its source and ``_version_tag()``; numba
(``cache=True``) keeps its machine code in ``__pycache__/tj_<hash>.*.nbi|nbc``. Files are written
atomically (temporary file + rename), so no process ever reads half a file; an entry whose text
differs from what its name says is rewritten and its machine code dropped, never trusted.
An unwritable cache directory gives a warning and a private temporary directory instead.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

PREFIX = "tj_"
_fallback: dict[Path, Path] = {}  # unusable cache dir -> this process's private replacement


def cache_dir() -> Path:
    """The configured cache directory (it may not exist yet)."""
    env = os.environ.get("TRACEJIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "tracejit"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "tracejit"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tracejit"


@lru_cache(maxsize=None)
def _version_tag() -> str:
    """Everything besides the source that the machine code depends on."""
    import numba
    import numpy as np

    from tracejit import __version__
    from tracejit.codegen import prelude
    # NOTE: numba's cache checks only the generated module's own file, not the helpers it
    # inlines (prelude, mathlib): hash their text so editing them invalidates old entries.
    helpers = Path(prelude.__file__).parent
    digest = hashlib.sha256()
    for name in ("prelude.py", "mathlib.py"):
        try:
            digest.update((helpers / name).read_bytes())
        except OSError:
            pass
    return (f"tracejit {__version__} numba {numba.__version__} numpy {np.__version__} "
            f"python {sys.version_info[0]}.{sys.version_info[1]} helpers {digest.hexdigest()[:16]}")


def entry_name(source: str) -> str:
    """Module name for a source: ``tj_`` + a hash of the source and the versions."""
    h = hashlib.sha256((_version_tag() + "\n" + source).encode()).hexdigest()
    return f"{PREFIX}{h[:32]}"


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def module_file(source: str) -> Path:
    """The module file holding ``source``, written (or repaired) if needed."""
    configured = cache_dir()
    directory = _fallback.get(configured, configured)
    try:
        return _ensure_entry(directory / f"{entry_name(source)}.py", source)
    except OSError as e:
        if directory != configured:
            raise
        private = Path(tempfile.mkdtemp(prefix="tracejit-cache-"))
        atexit.register(shutil.rmtree, private, True)
        warnings.warn(f"tracejit: cannot write to the compile cache {configured} ({e}); "
                      f"compiled code goes to {private} and is lost when this process ends. "
                      f"Set TRACEJIT_CACHE_DIR to a writable directory to keep it.",
                      RuntimeWarning, stacklevel=2)
        _fallback[configured] = private
        return _ensure_entry(private / f"{entry_name(source)}.py", source)


def _ensure_entry(path: Path, source: str) -> Path:
    try:
        ok = path.read_text(encoding="utf-8") == source
    except (OSError, UnicodeDecodeError):
        ok = False
    if not ok:  # missing, truncated, corrupted or someone else's text: rewrite it
        # NOTE: two processes may both rewrite a missing entry; the second rename changes the
        # file's mtime, so numba recompiles once later (a cache miss, never a wrong result).
        drop_machine_code(path)
        atomic_write(path, source)
    return path


def drop_machine_code(module_path: str | os.PathLike) -> bool:
    """Delete numba's cached machine code for a module file; True if there was any."""
    path = Path(module_path)
    dropped = False
    for f in (path.parent / "__pycache__").glob(f"{path.stem}.*"):
        try:
            f.unlink()
            dropped = True
        except OSError:
            pass
    return dropped


def clear_cache() -> None:
    """Delete tracejit's compiled code on disk and forget modules loaded in this process.

    >>> tracejit.clear_cache()   # the next call of a traced function compiles again

    Only tracejit's own files (``tj_*``) are deleted, so a cache directory that was set to a
    shared folder by mistake loses nothing else.
    """
    from . import compile as _compile
    _compile.forget()
    for d in {cache_dir(), *_fallback.values()}:
        for pattern in (f"{PREFIX}*", f".{PREFIX}*", f"__pycache__/{PREFIX}*"):
            for f in d.glob(pattern):
                try:
                    f.unlink()
                except OSError:
                    pass
        try:
            (d / "__pycache__").rmdir()  # only if empty
        except OSError:
            pass
