"""Turn generated source into callables: the module is written to the cache directory and
imported from there, so numba's ``cache=True`` keeps its machine code beside it, a second
process loads that instead of compiling again, and tracebacks show the real generated lines.
The machine code is read and written by ``cache.VerifiedCache`` (checksummed files)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import threading
import warnings

import numpy as np

from . import cache, memory

_modules: dict = {}  # module name -> module (this process)
_lock = threading.Lock()


def load_module(source: str):
    """Import the module holding ``source``, once per process (the in-memory cache, keyed by a
    hash of the source, which spells out the graph and its input signature). Its numba
    dispatchers get tracejit's verified cache before anything can run, so machine code is
    only ever loaded from files whose checksum matches (``cache.VerifiedCache``)."""
    name = cache.entry_name(source)
    mod = _modules.get(name)
    if mod is not None:
        return mod
    with _lock:
        mod = _modules.get(name)
        if mod is None:
            cache.bind_helpers()  # kernels compiled now call mathlib/prelude: verify them too
            path = cache.module_file(source)
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod  # numba's cache locates functions through their module
            # NOTE: run the text we generated, not whatever the file holds by now, and write
            # no .pyc (a bytecode file is checked by mtime and size only, so it could go stale)
            with cache.generated_module():
                exec(compile(source, str(path), "exec"), mod.__dict__)
            # the machine code must match the text that runs: its hash is numba's source stamp
            cache.protect(mod, name, hashlib.sha256(source.encode()).hexdigest())
            _modules[name] = mod
    return mod


def loaded_module(name: str):
    """The module of that ``cache.entry_name`` if this process has loaded it, else None."""
    return _modules.get(name)


def forget() -> None:
    """Drop the modules loaded in this process (compiled callables already handed out stay)."""
    with _lock:
        for name in _modules:
            sys.modules.pop(name, None)
        _modules.clear()


# LLVM's optimisation level for the generated code (numba's NUMBA_OPT, 3 by default). At 2 the
# small CNN's training step compiled ~12% faster (its fold kernel 2x) and ran as fast, as did
# benchmarks/compiled.py's kernels (docs/compiler.md). A NUMBA_OPT the user sets is kept.
KERNEL_OPT = 2


@contextlib.contextmanager
def kernel_opt():
    """numba compiles at KERNEL_OPT inside (its first calls compile tracejit's kernels)."""
    import numba
    saved = numba.config.OPT
    if "NUMBA_OPT" in os.environ or saved == KERNEL_OPT:
        yield
        return
    numba.config.OPT = type(saved)(KERNEL_OPT)
    try:
        yield
    finally:
        numba.config.OPT = saved


class CompileError(RuntimeError):
    """numba could not compile generated code (a tracejit bug: please report it)."""


def unshared(arrays: tuple, written) -> tuple:
    """``arrays`` as an entry that writes new values into the inputs at positions ``written``
    may take them: a written input that shares memory with another input (a view of it, one
    numpy array behind two tensors), or that cannot be written, is replaced by a private
    copy, which the entry writes and the write-back copies from, as for any other new value.
    Arrays that own their memory and are distinct objects share none: the common case costs
    one pass over the inputs."""
    for a in arrays:
        if a.base is not None:
            break
    else:
        if len({id(a) for a in arrays}) == len(arrays) and all(
                arrays[k].flags.writeable for k in written):
            return arrays
    owners = [_owner(a) for a in arrays]
    out = list(arrays)
    for k in written:
        a, own = arrays[k], owners[k]
        if not a.flags.writeable or any(
                j != k and (own is None or owners[j] is None or owners[j] is own) and
                np.may_share_memory(a, b) for j, b in enumerate(arrays)):
            out[k] = a.copy(order="K")
    return tuple(out)


def _owner(a):
    """The numpy array that owns ``a``'s memory, or None where another object does (numba's
    runtime, a bytes buffer, a memory map): views of one owner may overlap, two owners' never."""
    b = a.base
    while b is not None:
        if type(b) is not np.ndarray:
            return None
        a, b = b, b.base
    return a


class Runner:
    """Calls a lowered graph's entry with its sizes, constants and buffers; returns one array
    (or None for Python-valued outputs) per graph output. An entry that writes inputs' new
    values into their arrays (``Program.written``) gets private copies of those that share
    memory (``unshared``), and of all of them on the first call: a kernel compiled then could
    fail after another wrote an input, and the interpreter that takes over must read the
    inputs as they were."""

    def __init__(self, lowered, module):
        self.entry_name = lowered.entry
        self.entry = getattr(module, lowered.entry)
        self.prefix = (lowered.sizes, lowered.fallbacks) if lowered.fallbacks else \
            (lowered.sizes,)
        self.consts = tuple(lowered.consts)
        self.source = lowered.source
        self.module = module
        self.compiled = False
        self.buffers = lowered.buffers
        self.outs = [(k, b.shape, b.dtype) for k, b in enumerate(lowered.buffers)
                     if b.kind == "out"]
        self.written = lowered.written
        self._local = threading.local()

    def _workspace(self) -> list:
        """This thread's reusable buffers (``None`` where a fresh result goes)."""
        ws = getattr(self._local, "ws", None)
        if ws is None:
            sizes: dict = {}
            for b in self.buffers:
                if b.kind == "work":
                    nbytes = int(np.prod(b.shape, dtype=np.int64)) * b.dtype.itemsize
                    sizes[b.slot] = max(sizes.get(b.slot, 0), nbytes)
            raw = {slot: np.empty(max(n, 1), np.uint8) for slot, n in sizes.items()}
            ws = [None if b.kind == "out" else raw[b.slot][:int(np.prod(
                b.shape, dtype=np.int64)) * b.dtype.itemsize].view(b.dtype).reshape(b.shape)
                for b in self.buffers]
            self._local.ws = ws
        return ws

    def __call__(self, *arrays):
        bufs = self._workspace() if self.buffers else ()
        if self.outs:
            bufs = list(bufs)
            for k, shape, dtype in self.outs:
                bufs[k] = memory.allocator.empty(shape, dtype)
        if self.compiled:
            if self.written:
                arrays = unshared(arrays, self.written)
            return self.entry(*self.prefix, *arrays, *self.consts, *bufs)
        # the first call compiles, or loads machine code from the cache (a damaged file is
        # dropped there and compiled again). NOTE: an exception raised by running the code
        # (an index out of range...) propagates unchanged and never touches the cache.
        if self.written:
            arrays = tuple(a.copy(order="K") if k in self.written else a
                           for k, a in enumerate(arrays))
        try:
            out = self._first_call(arrays, bufs)
        finally:
            cache.enforce_limit_if_needed()
        self.compiled = True
        return out

    def _first_call(self, arrays, bufs):
        import numba
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", numba.NumbaWarning)
            try:
                with kernel_opt():
                    return self.entry(*self.prefix, *arrays, *self.consts, *bufs)
            except (numba.core.errors.NumbaError, ImportError) as e:
                raise CompileError(f"{type(e).__name__}: {e}\nin {self.module.__file__}") from e


def compile_lowered(lowered) -> Runner:
    return Runner(lowered, load_module(lowered.source))
