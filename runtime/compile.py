"""Turn generated source into callables: the module is written to the cache directory and
imported from there, so numba's ``cache=True`` keeps its machine code beside it, a second
process loads that instead of compiling again, and tracebacks show the real generated lines."""

from __future__ import annotations

import importlib.util
import sys
import threading
import warnings

from . import cache

_modules: dict = {}  # module name -> module (this process)
_lock = threading.Lock()


def load_module(source: str):
    """Import (once per process) the module holding ``source``."""
    name = cache.entry_name(source)
    mod = _modules.get(name)
    if mod is not None:
        return mod
    with _lock:
        mod = _modules.get(name)
        if mod is None:
            path = cache.module_file(source)
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod  # numba's cache locates functions through their module
            spec.loader.exec_module(mod)
            _modules[name] = mod
    return mod


def forget() -> None:
    with _lock:
        for name in _modules:
            sys.modules.pop(name, None)
        _modules.clear()


class CompileError(RuntimeError):
    """numba could not compile generated code (a tracejit bug: please report it)."""


class Runner:
    """Calls a lowered graph's entry with its sizes and constants; returns one array (or None
    for Python-valued outputs) per graph output."""

    __slots__ = ("entry", "prefix", "consts", "source", "module", "compiled")

    def __init__(self, lowered, module):
        self.entry = getattr(module, lowered.entry)
        self.prefix = (lowered.sizes,) if lowered.jit_entry else (lowered.sizes,
                                                                   lowered.fallbacks)
        self.consts = tuple(lowered.consts)
        self.source = lowered.source
        self.module = module
        self.compiled = False

    def __call__(self, *arrays):
        if self.compiled:
            return self.entry(*self.prefix, *arrays, *self.consts)
        # the first call compiles (or loads machine code from numba's cache)
        import numba
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", numba.NumbaWarning)
            try:
                out = self.entry(*self.prefix, *arrays, *self.consts)
            except numba.core.errors.NumbaError as e:
                raise CompileError(f"{type(e).__name__}: {e}\nin {self.module.__file__}") from e
        self.compiled = True
        return out


def compile_lowered(lowered) -> Runner:
    return Runner(lowered, load_module(lowered.source))
