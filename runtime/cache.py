"""The on-disk compile cache: generated modules, with their machine code beside them.

Location: ``TRACEJIT_CACHE_DIR``, else the user cache directory (``$XDG_CACHE_HOME/tracejit``,
``~/.cache/tracejit``, ``~/Library/Caches/tracejit`` on macOS, ``%LOCALAPPDATA%\\tracejit`` on
Windows). An entry is ``tj_<hash>.py``, named by a hash of its source and ``_version_tag()``, and
its machine code ``__pycache__/tj_<hash>.<function>-<line>.py3X.nbi|nbc`` (numba's index and data
files, one index per function and one data file per signature). The machine code of codegen's
helpers (``mathlib``, ``prelude``) lives there too, as ``__pycache__/tj_helpers.*``.

Machine code is the one thing in the cache that can crash the process when it is damaged, so
tracejit, not numba, reads and writes it (``VerifiedCache``, installed on every dispatcher of a
generated module and of the helpers, which keeps numba's logic and file names):

- every file is written atomically (temporary file + rename) with a header holding the SHA-256
  of its content, computed from the very bytes written;
- before numba unpickles a file, its bytes are read once and checked against that hash; a file
  without the header (not written by this tracejit: plain numba, an older tracejit, garbage) or
  whose hash does not match is never loaded: it is deleted with a warning naming it, and the
  function is compiled again. So the rule for files that appear from elsewhere is simple: only
  files carrying a matching tracejit checksum are loaded, whoever wrote them;
- the files always live in tracejit's cache directory, whatever ``NUMBA_CACHE_DIR`` says, so
  verification, ``cache info``, the size limit and ``clear_cache`` all see them.

An entry whose module text differs from what its name says is rewritten and its machine code
dropped. A cache directory that exists but cannot be written is used read-only (its entries are
loaded, verified, never changed) and new code goes to a private temporary directory; one that
cannot be created at all is replaced by a private directory. Both warn once per process.

Size: ``TRACEJIT_CACHE_MAX_MB`` (default 1024; ``unlimited`` for none). When a compile leaves
the cache over the limit, whole entries are deleted, least recently used first, down to 90% of
the limit. An entry used in the last ``GRACE_S`` seconds is never evicted (another process may
be loading it); deleting files one by one is safe for a concurrent reader because every subset
of an entry's files is a state the loader handles (a missing file is a cache miss).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import os
import pickle
import shutil
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PREFIX = "tj_"
HELPERS = "tj_helpers"  # group name of the helpers' machine code (+ "-" and a version hash)
FORMAT = 2  # of the cache files; part of every entry name, so a new format never reads old files
MAGIC = b"tracejit machine code v2\n"  # then 32 bytes of SHA-256, then numba's pickle
DEFAULT_MAX_MB = 1024.0
LOW_WATER = 0.9  # eviction goes down to this fraction of the limit
GRACE_S = 300.0  # an entry used more recently than this is never evicted
TEMP_MAX_AGE_S = 3600.0  # temporary files older than this are debris of a killed writer

_lock = threading.RLock()
_dirs: dict[Path, Dirs] = {}  # configured cache dir -> how this process uses it
_warned: set = set()
_dirty = False  # something was written since the size was last checked


@dataclass(frozen=True)
class Dirs:
    """How this process uses a configured cache directory."""
    configured: Path
    read: tuple  # directories entries are looked up in, in order
    write: Path  # where new entries go
    read_only: bool = False  # ``configured`` holds entries but cannot be written


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


def max_bytes() -> int | None:
    """The size limit from ``TRACEJIT_CACHE_MAX_MB`` (None: unlimited)."""
    raw = os.environ.get("TRACEJIT_CACHE_MAX_MB", "").strip()
    if not raw:
        return int(DEFAULT_MAX_MB * 2**20)
    if raw.lower() in ("unlimited", "none", "inf"):
        return None
    try:
        mb = float(raw)
        if mb != mb or mb < 0:
            raise ValueError(raw)
    except ValueError:
        _warn_once(("max_mb", raw), f"tracejit: TRACEJIT_CACHE_MAX_MB={raw!r} is not a number of "
                   f"megabytes (or 'unlimited'); using the default, {DEFAULT_MAX_MB:g} MB.")
        return int(DEFAULT_MAX_MB * 2**20)
    return int(mb * 2**20)


def _warn_once(key, message: str) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _version_tag() -> str:
    """Everything besides the source that the machine code depends on."""
    return _tag(tuple(_helper_modules))


@lru_cache(maxsize=None)
def _tag(helper_modules: tuple) -> str:
    import numba
    import numpy as np

    from tracejit.version import __version__

    # NOTE: numba's cache checks only the generated module's own file, not the helpers it
    # inlines (codegen's prelude, mathlib): hash their text so editing them invalidates old
    # entries.
    digest = hashlib.sha256()
    for mod in helper_modules:
        try:
            digest.update(Path(mod.__file__).read_bytes())
        except OSError:
            pass
    return (f"tracejit {__version__} cache {FORMAT} numba {numba.__version__} "
            f"numpy {np.__version__} python {sys.version_info[0]}.{sys.version_info[1]} "
            f"helpers {digest.hexdigest()[:16]}")


def entry_name(source: str) -> str:
    """Module name for a source: ``tj_`` + a hash of the source and the versions."""
    h = hashlib.sha256((_version_tag() + "\n" + source).encode()).hexdigest()
    return f"{PREFIX}{h[:32]}"


# ----------------------------------------------------------------------------------------------
# directories


def _check_writable(directory: Path) -> None:
    """Raise OSError unless files can be created in ``directory`` (made if missing) and in its
    ``__pycache__`` (if that exists)."""
    directory.mkdir(parents=True, exist_ok=True)
    for d in (directory, directory / "__pycache__"):
        if d == directory or d.is_dir():
            tempfile.TemporaryFile(dir=d).close()


def _private_dir() -> Path:
    private = Path(tempfile.mkdtemp(prefix="tracejit-cache-"))
    atexit.register(shutil.rmtree, private, True)
    return private


def _resolve(configured: Path) -> Dirs:
    try:
        _check_writable(configured)
        return Dirs(configured, (configured,), configured)
    except OSError as e:
        reason = e
    private = _private_dir()
    if configured.is_dir() and os.access(configured, os.R_OK | os.X_OK):
        _warn_once(("ro", configured),
                   f"tracejit: the compile cache {configured} is read-only ({reason}); its "
                   f"compiled code is used as it is, and code compiled now goes to {private} and "
                   f"is lost when this process ends. Make it writable, or set "
                   f"TRACEJIT_CACHE_DIR to a writable directory, to keep new code.")
        return Dirs(configured, (configured, private), private, read_only=True)
    _warn_once(("unwritable", configured),
               f"tracejit: cannot write to the compile cache {configured} ({reason}); "
               f"compiled code goes to {private} and is lost when this process ends. "
               f"Set TRACEJIT_CACHE_DIR to a writable directory to keep it.")
    return Dirs(configured, (private,), private)


def current() -> Dirs:
    """The directories this process uses for the configured cache (decided once per process
    and directory; the first use may warn)."""
    configured = cache_dir()
    with _lock:
        d = _dirs.get(configured)
        if d is None:
            d = _dirs[configured] = _resolve(configured)
        return d


def _write_failed(dirs: Dirs, error: OSError) -> Dirs:
    """The configured directory stopped taking writes (disk full, permissions changed): keep
    reading it, write to a private directory from now on."""
    with _lock:
        if _dirs.get(dirs.configured) is not dirs or dirs.write != dirs.configured:
            return _dirs.get(dirs.configured, dirs)
        private = _private_dir()
        _warn_once(("unwritable", dirs.configured),
                   f"tracejit: cannot write to the compile cache {dirs.configured} ({error}); "
                   f"compiled code goes to {private} and is lost when this process ends. "
                   f"Set TRACEJIT_CACHE_DIR to a writable directory to keep it.")
        new = _dirs[dirs.configured] = Dirs(dirs.configured, (dirs.configured, private), private,
                                            read_only=True)
        return new


# ----------------------------------------------------------------------------------------------
# module files


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if isinstance(data, str):
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _matches(path: Path, source: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == source
    except (OSError, UnicodeDecodeError):
        return False


def _mark_used(path: Path) -> None:
    """Record a use of an entry for the LRU eviction: its module file's access time (set
    explicitly, so ``noatime`` mounts do not matter; the modification time stays as it is)."""
    try:
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    except OSError:
        pass


def module_file(source: str) -> Path:
    """The module file holding ``source``, written (or repaired) if needed."""
    global _dirty
    name = f"{entry_name(source)}.py"
    dirs = current()
    for d in dirs.read:
        p = d / name
        if _matches(p, source):
            if d == dirs.write:
                _mark_used(p)
            return p
    path = dirs.write / name
    try:
        _write_entry(path, source)
    except OSError as e:
        if dirs.write != dirs.configured:
            raise
        path = _write_failed(dirs, e).write / name
        _write_entry(path, source)
    _dirty = True
    return path


def _write_entry(path: Path, source: str) -> None:
    # missing, truncated, corrupted or someone else's text: rewrite it, and drop its machine
    # code (NOTE: that would be safe to keep, it is checked against the source we run, but a
    # damaged module says the entry was tampered with: start it afresh)
    drop_machine_code(path)
    atomic_write(path, source)


def drop_machine_code(module_path: str | os.PathLike) -> bool:
    """Delete the cached machine code of a module file; True if there was any."""
    path = Path(module_path)
    dropped = False
    for f in (path.parent / "__pycache__").glob(f"{path.stem}.*"):
        try:
            f.unlink()
            dropped = True
        except OSError:
            pass
    return dropped


# ----------------------------------------------------------------------------------------------
# machine code: numba's cache with verified files


def _discard(path: Path, reason: str) -> None:
    """Never load ``path`` again: delete it (if this process may) and say so."""
    key = None  # warn every time a file is deleted, once per process for one that stays
    try:
        path.unlink()
        action = "deleted it; the function is compiled again"
    except FileNotFoundError:
        action = "it is gone now; the function is compiled again"
    except OSError as e:
        action = f"could not delete it ({e}), so it is ignored; the function is compiled again"
        key = ("discard", str(path))
    message = f"tracejit: not loading the cached machine code {path}: {reason}; {action}."
    if key is None:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    else:
        _warn_once(key, message)


def read_verified(path: Path) -> bytes | None:
    """The content of a machine-code file written by ``write_verified``; None when it is
    missing, or damaged (then it is discarded, with a warning)."""
    try:
        blob = path.read_bytes()  # read once: what is checked is what gets unpickled
    except FileNotFoundError:
        return None
    except OSError as e:
        _warn_once(("unreadable", str(path)), f"tracejit: cannot read the cached machine code "
                   f"{path} ({e}); the function is compiled again.")
        return None
    head = len(MAGIC) + 32
    if not blob.startswith(MAGIC) or len(blob) < head:
        _discard(path, "it carries no tracejit checksum (written by something else, truncated, "
                       "or garbage)")
        return None
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(MAGIC):head]:
        _discard(path, "its content does not match the SHA-256 recorded when it was written "
                       "(damaged on disk, or replaced by another process mid-write)")
        return None
    return payload


def write_verified(path: Path, payload: bytes) -> None:
    """Write a machine-code file (atomically) with the SHA-256 of ``payload`` in its header."""
    global _dirty
    atomic_write(path, MAGIC + hashlib.sha256(payload).digest() + payload)
    _dirty = True


class _VerifiedFile:
    """numba's ``IndexDataCacheFile`` logic (an index mapping keys to data file names, one data
    file per key) over verified files, read from several directories, written to one."""

    def __init__(self, read_dirs, write_dir: Path, filename_base: str, stamp):
        import numba
        self._read = tuple(read_dirs)
        self._write = write_dir
        self._index_name = f"{filename_base}.nbi"
        self._data_pattern = f"{filename_base}.{{}}.nbc"
        self._stamp = stamp
        self._version = numba.__version__

    def _overloads(self, directory: Path) -> dict:
        path = directory / self._index_name
        payload = read_verified(path)
        if payload is None:
            return {}
        try:
            version, stamp, overloads = pickle.loads(payload)
        except Exception as e:  # verified bytes that do not unpickle: never ours, drop them
            _discard(path, f"its index cannot be read ({type(e).__name__}: {e})")
            return {}
        if version != self._version or stamp != self._stamp:
            return {}  # stale: later saves overwrite it
        return overloads

    def load(self, key):
        """(numba's payload, its file) for ``key``, or None."""
        for d in self._read:
            name = self._overloads(d).get(key)
            if name is None:
                continue
            path = d / name
            payload = read_verified(path)
            if payload is None:
                continue
            try:
                return pickle.loads(payload), path
            except Exception as e:
                _discard(path, f"it cannot be unpickled ({type(e).__name__}: {e})")
        return None

    def save(self, key, data) -> None:
        from numba.core.serialize import dumps
        overloads = dict(self._overloads(self._write))
        # NOTE: the data file is named by its key, not numbered as numba does: two processes
        # saving different signatures of one function at once (two compile workers compiling
        # the same helper) would both take number 1, and an index could then name the other's
        # code. Racing index writes can only drop an entry (a cache miss: compiled again).
        name = self._data_pattern.format(
            hashlib.sha256(repr(key).encode()).hexdigest()[:16])
        overloads[key] = name
        # data first: a reader never finds an index entry whose file was not written yet
        write_verified(self._write / name, dumps(data))
        write_verified(self._write / self._index_name,
                       dumps((self._version, self._stamp, overloads)))

    def flush(self) -> None:
        from numba.core.serialize import dumps
        write_verified(self._write / self._index_name, dumps((self._version, self._stamp, {})))


@lru_cache(maxsize=None)
def _numba_classes():
    """``VerifiedCache`` and its parts, built on first use (importing numba is slow)."""
    from numba.core import caching

    class Locator(caching._CacheLocator):
        def __init__(self, py_func, write_dir: Path, stamp):
            self._py_file = py_func.__code__.co_filename  # numba's warnings name it
            self._lineno = py_func.__code__.co_firstlineno
            self._write = write_dir
            self._stamp = stamp

        def ensure_cache_path(self):
            os.makedirs(self._write, exist_ok=True)

        def get_cache_path(self):
            return str(self._write)

        def get_source_stamp(self):
            return self._stamp

        def get_disambiguator(self):
            return str(self._lineno)

    class Impl(caching.CompileResultCacheImpl):
        # NOTE: not CacheImpl.__init__: that searches numba's locators (NUMBA_CACHE_DIR, the
        # module's __pycache__, ~/.cache/numba), which is exactly what must not decide here
        def __init__(self, py_func, locator, module_label: str):
            self._lineno = py_func.__code__.co_firstlineno
            self._locator = locator
            qualname = getattr(py_func, "__qualname__", py_func.__name__)
            self._filename_base = self.get_filename_base(f"{module_label}.{qualname}",
                                                         getattr(sys, "abiflags", ""))

    class VerifiedCache(caching.Cache):
        """numba's per-function cache, in tracejit's directories, over verified files."""

        _impl_class = Impl

        def __init__(self, py_func, module_label: str, stamp, read_dirs, write_dir: Path):
            self._name = repr(py_func)
            self._py_func = py_func
            self._impl = Impl(py_func, Locator(py_func, write_dir, stamp), module_label)
            self._cache_path = str(write_dir)
            self._cache_file = _VerifiedFile(read_dirs, write_dir, self._impl.filename_base,
                                             stamp)
            self.enable()

        def load_overload(self, sig, target_context):
            prepare_loads(target_context)
            if not self._enabled:
                return None
            found = self._cache_file.load(self._index_key(sig, target_context.codegen()))
            if found is None:
                return None
            data, path = found
            try:
                return self._impl.rebuild(target_context, data)
            except Exception as e:  # a genuine load failure: compile instead, never crash
                _discard(path, f"numba could not load it ({type(e).__name__}: {e})")
                return None

        def save_overload(self, sig, data):
            try:
                self._save_overload(sig, data)
            except Exception as e:  # the compiled code works; only its reuse is lost
                _warn_once(("save", self._cache_path, type(e).__name__),
                           f"tracejit: could not save compiled machine code in "
                           f"{self._cache_path} ({type(e).__name__}: {e}); it is compiled "
                           f"again in the next process.")

    return VerifiedCache


def prepare_loads(target_context) -> None:
    """What loading machine code from the cache needs of numba's target context: its runtime
    (NRT) initialised. Not ``refresh()``, as numba's own cache calls it: that imports and
    installs every typing and lowering registry (0.15-0.2 s in a new process, scipy's import
    among them) which only compiling needs; numba's compiler refreshes before it compiles."""
    from numba.core.runtime import rtsys
    rtsys.initialize(target_context)


def machine_code_dirs(dirs: Dirs | None = None) -> tuple:
    """(directories machine code is read from, in order; the one it is written to)."""
    dirs = dirs or current()
    return tuple(d / "__pycache__" for d in dirs.read), dirs.write / "__pycache__"


def protect(module, label: str, stamp, dirs: Dirs | None = None) -> int:
    """Give every numba dispatcher defined in ``module`` a verified cache in tracejit's cache
    directory (file names ``<label>.<function>-<line>...``); returns how many. Call it before
    any of them runs: machine code is only read at a dispatcher's first call per signature."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.dispatcher import Dispatcher
    verified_cache = _numba_classes()
    read, write = machine_code_dirs(dirs)
    n = 0
    with global_compiler_lock:  # no dispatcher is mid-load while its cache is swapped
        for value in list(vars(module).values()):
            if (isinstance(value, Dispatcher)
                    and getattr(value.py_func, "__module__", None) == module.__name__):
                value._cache = verified_cache(value.py_func, label, stamp, read, write)
                n += 1
    return n


_helpers_bound = None


def helpers_group() -> str:
    """Name of this version's helper machine code (another version keeps its own files, so
    two versions sharing a cache do not overwrite each other's)."""
    return f"{HELPERS}-{hashlib.sha256(_version_tag().encode()).hexdigest()[:12]}"


_helper_modules: list = []  # modules of numba functions generated code calls (register_helpers)


def register_helpers(*modules) -> None:
    """Modules of numba helpers that generated modules call (a code generator registers its
    prelude when it is imported): their machine code is verified like the generated code's,
    and their source is part of every entry's version tag."""
    global _helpers_bound
    with _lock:
        new = [m for m in modules if m not in _helper_modules]
        if new:
            _helper_modules.extend(new)
            _helpers_bound = None


def bind_helpers() -> None:
    """Put the machine code of the registered helpers under the same verification, in the
    current cache directory (again whenever that changes)."""
    global _helpers_bound
    dirs = current()
    if _helpers_bound == (dirs.read, dirs.write):
        return
    with _lock:
        for mod in _helper_modules:
            protect(mod, f"{helpers_group()}.{mod.__name__.rsplit('.', 1)[-1]}", _version_tag(),
                    dirs)
        _helpers_bound = (dirs.read, dirs.write)


_generating = threading.local()


@contextlib.contextmanager
def generated_module():
    """While a generated module runs its definitions in this thread, ``@numba.njit(cache=True)``
    does not set up numba's own cache (which would search NUMBA_CACHE_DIR, __pycache__ and
    ~/.cache/numba, make directories there, and fail outright where none is writable):
    ``protect`` installs the verified one right after."""
    _patch_enable_caching()
    before = getattr(_generating, "active", False)
    _generating.active = True
    try:
        yield
    finally:
        _generating.active = before


@lru_cache(maxsize=None)
def _patch_enable_caching() -> None:
    # NOTE: the one change to numba itself, limited to this thread while tracejit runs its own
    # generated module's definitions; every other dispatcher is left as numba makes it
    from numba.core.dispatcher import Dispatcher
    original = Dispatcher.enable_caching

    def enable_caching(self):
        if getattr(_generating, "active", False):
            return
        return original(self)

    Dispatcher.enable_caching = enable_caching


# ----------------------------------------------------------------------------------------------
# size limit, info, clear


@dataclass
class Entry:
    """A compiled graph on disk: its module file and machine code (or the helpers' code)."""
    name: str
    files: list
    size: int
    last_use: float
    module: Path | None


def _last_use(st: os.stat_result) -> float:
    return max(st.st_atime, st.st_mtime)


def _tracejit_files(directory: Path):
    for d in (directory, directory / "__pycache__"):
        yield from d.glob(f"{PREFIX}*")


def entries(directory: Path | None = None) -> dict:
    """The entries in a cache directory, by name (``tj_<hash>``, or ``tj_helpers-<hash>``)."""
    directory = cache_dir() if directory is None else directory
    found: dict = {}
    for p in _tracejit_files(directory):
        try:
            st = p.stat()
        except OSError:
            continue
        name = p.name.split(".", 1)[0]
        e = found.get(name)
        if e is None:
            e = found[name] = Entry(name, [], 0, 0.0, None)
        e.files.append(p)
        e.size += st.st_size
        if p.parent == directory and p.suffix == ".py":
            e.module = p
            e.last_use = _last_use(st)  # the module file is marked on every use
        elif e.module is None:
            e.last_use = max(e.last_use, st.st_mtime)
    return found


def _remove_debris(directory: Path, max_age: float = TEMP_MAX_AGE_S) -> tuple:
    """Temporary files left by killed writers (older than ``max_age``): (count, bytes)."""
    n = size = 0
    now = time.time()
    for d in (directory, directory / "__pycache__"):
        for p in d.glob(f".{PREFIX}*"):
            try:
                st = p.stat()
                if now - st.st_mtime >= max_age:
                    p.unlink()
                    n, size = n + 1, size + st.st_size
            except OSError:
                pass
    return n, size


def _evict(e: Entry) -> int:
    """Delete an entry's files (machine code first, module last); bytes freed."""
    freed = 0
    for p in sorted(e.files, key=lambda p: p == e.module):
        try:
            size = p.stat().st_size
            p.unlink()
            freed += size
        except OSError:
            pass
    return freed


def enforce_limit(directory: Path | None = None, limit: int | None = -1) -> list:
    """Evict least recently used entries while the cache is over its limit (``max_bytes()``
    unless given); returns the names evicted. Entries used in the last ``GRACE_S`` seconds and
    this version's helper code stay."""
    directory = current().write if directory is None else directory
    limit = max_bytes() if limit == -1 else limit
    if limit is None:
        return []
    _remove_debris(directory)
    found = entries(directory)
    total = sum(e.size for e in found.values())
    if total <= limit:
        return []
    evicted = []
    now = time.time()
    for e in sorted(found.values(), key=lambda e: e.last_use):
        if total <= limit * LOW_WATER or now - e.last_use < GRACE_S:
            break
        if e.name == helpers_group():
            continue  # small, and needed by every compile
        if e.module is not None:  # a process may have started loading it since the scan
            try:
                if _last_use(e.module.stat()) != e.last_use:
                    continue
            except OSError:
                pass
        total -= _evict(e)
        evicted.append(e.name)
    return evicted


def enforce_limit_if_needed() -> None:
    """After a compile: apply the size limit if this process wrote to the cache."""
    global _dirty
    if not _dirty:
        return
    _dirty = False
    try:
        enforce_limit()
    except OSError:
        pass


def info(directory: Path | None = None) -> dict:
    """What ``python -m tracejit cache info`` prints: location, entries, size, limit."""
    directory = cache_dir() if directory is None else directory
    found = entries(directory) if directory.is_dir() else {}
    graphs = [e for e in found.values() if not e.name.startswith(HELPERS)]
    return {
        "location": str(directory),
        "exists": directory.is_dir(),
        "writable": directory.is_dir() and os.access(directory, os.W_OK),
        "entries": len(graphs),
        "files": sum(len(e.files) for e in found.values()),
        "bytes": sum(e.size for e in found.values()),
        "helpers_bytes": sum(e.size for e in found.values() if e.name.startswith(HELPERS)),
        "limit_bytes": max_bytes(),
        "oldest_use": min((e.last_use for e in graphs), default=None),
    }


def clear_cache() -> None:
    """Delete tracejit's compiled code on disk and forget modules loaded in this process.

    >>> tracejit.clear_cache()   # the next call of a traced function compiles again

    Only tracejit's own files (``tj_*``) are deleted, so a cache directory that was set to a
    shared folder by mistake loses nothing else.
    """
    clear()


def clear() -> tuple:
    """``clear_cache``, returning (files deleted, bytes freed, files that could not be)."""
    from . import compile as _compile
    _compile.forget()
    n = size = failed = 0
    dirs = {cache_dir()} | {p for d in _dirs.values() for p in d.read}
    for d in dirs:
        for p in itertools.chain(_tracejit_files(d), d.glob(f".{PREFIX}*"),
                                 (d / "__pycache__").glob(f".{PREFIX}*")):
            try:
                st = p.stat()
                p.unlink()
                n, size = n + 1, size + st.st_size
            except FileNotFoundError:
                pass
            except OSError:
                failed += 1
        try:
            (d / "__pycache__").rmdir()  # only if empty
        except OSError:
            pass
    return n, size, failed
