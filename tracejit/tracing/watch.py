"""Python state the graph cannot see: random draws, clocks, files (see docs/tracing.md, "What
tracing refuses"). ``_call_watched`` runs the function being traced under a profile hook that
refuses such calls at the user's line, and compares the global generators before and after.
"""

from __future__ import annotations

import linecache
import os
import random
import sys
import sysconfig

import numpy as np

from ..errors import TraceError, _is_own, _skipped, format_location

_STATE_FIX = {
    "random": "draw tensors with tracejit.rand/randn/randint (traced: fresh values every call), "
              "pass the draw as an argument (n = random.randint(0, 3); f(x, n): one graph per "
              "value), or keep this function eager (do not decorate it, or call it inside "
              "`with tracejit.eager():`)",
    "time": "read the clock outside the traced function (pass the value as an argument if the "
            "computation needs it), or keep this function eager",
    "open": "read the file outside the traced function and pass its data as a tensor argument "
            "(tensors in globals and closures are read afresh on each call), or keep this "
            "function eager",
}


def _untraceable_state(what: str, kind: str, where: str) -> TraceError:
    return TraceError(
        f"{what} inside a traced function runs only on the tracing call: the graph would "
        f"silently keep that call's value (a draw, a timestamp, a file's contents) on every "
        f"later call{where}\n  fix: {_STATE_FIX[kind]}")


_WATCHED: dict = {}  # C function -> (description, kind): calls caught while tracing
_SKIP_FILES: tuple = ()


def _init_watch() -> None:
    import builtins
    import logging
    import time
    import tokenize
    global _SKIP_FILES
    for name in ("time", "time_ns", "perf_counter", "perf_counter_ns", "monotonic",
                 "monotonic_ns", "process_time", "process_time_ns", "thread_time",
                 "thread_time_ns"):
        f = getattr(time, name, None)
        if f is not None:
            _WATCHED[f] = (f"time.{name}()", "time")
    _WATCHED[builtins.open] = ("open() (reading or writing a file)", "open")
    # NOTE: warnings and tracebacks read source lines through linecache/tokenize, a logging
    # FileHandler opens its file on first use: not the user's file access
    _SKIP_FILES = (linecache.__file__, tokenize.__file__, logging.__file__)


# frames of the stdlib and installed libraries (np.load's open()) are not the user's line
_LIBRARY_DIRS = tuple({os.path.dirname(os.__file__) + os.sep, "<frozen"} | {
    sysconfig.get_paths()[k] + os.sep for k in ("purelib", "platlib")})


def _site(frame) -> str:
    """``"\n  at file:line: source"`` of the innermost frame outside tracejit and libraries."""
    f = frame
    while f is not None and (_is_own(f.f_code.co_filename) or f.f_code.co_filename.startswith(
            _LIBRARY_DIRS)):
        f = f.f_back
    f = f or frame
    return format_location(f.f_code.co_filename, f.f_lineno)


def _watch(frame, event, arg):
    """A profile function (this thread, while the traced function runs): a call of a clock,
    ``open`` or a global random generator raises at the caller's line. (Generators of the
    user's own are compared by state, ``_own_generators``: one made and seeded inside the
    function draws the same numbers on every call.)"""
    if event != "c_call":
        return
    hit = _WATCHED.get(arg)
    if hit is None:
        owner = getattr(arg, "__self__", None)
        if owner is random._inst:
            name, f = arg.__name__, frame
            while f is not None and f.f_code.co_filename == random.__file__:
                name, f = f.f_code.co_name, f.f_back  # randint, not the getrandbits under it
            hit = (f"random.{name}()", "random")
        elif owner is np.random.mtrand._rand:
            hit = (f"np.random.{arg.__name__}()", "random")
        else:
            return
    filename = frame.f_code.co_filename
    if filename in _SKIP_FILES:
        return
    caller = frame  # who called through the libraries: tracejit's own work (eager CUDA ops
    while caller is not None and caller.f_code.co_filename.startswith(_LIBRARY_DIRS):
        caller = caller.f_back  # lowering a kernel read a file through pathlib) is no state
    if caller is not None and _skipped(caller):
        return  # tracejit, or a generated module it loads (numba-cuda's cache=True opens files)
    if hit[1] == "time" and filename.startswith(_LIBRARY_DIRS):
        return  # a library's own clock (logging's timestamps, tqdm): not a value of the graph
    raise _untraceable_state(hit[0], hit[1], _site(frame))


# Generators are compared by state before and after the traced call: numpy's are compiled
# Cython, whose calls a profile hook does not see
_GENERATORS = (random.Random, np.random.Generator, np.random.RandomState, np.random.BitGenerator)


def _state(g):
    if isinstance(g, random.Random):
        return g.getstate()
    return g.get_state(legacy=False) if isinstance(g, np.random.RandomState) else (
        g.bit_generator.state if isinstance(g, np.random.Generator) else g.state)


def _same_state(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _same_state(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def _generators(fn, args) -> list:
    """(description, generator) for every generator whose draws tracing must not see: the
    global Python and numpy (legacy ``np.random.*``) ones, and the user's own the function
    reaches (``_own_generators``)."""
    return [("Python's random module (random.random, randint, choice, shuffle...)", random._inst),
            ("numpy's global random generator (np.random.rand, randn, randint, seed...)",
             np.random.mtrand._rand)] + [
        (f"your generator {name!r} ({type(g).__module__}.{type(g).__name__})", g)
        for name, g in _own_generators(fn, args)]


def _own_generators(fn, args) -> list:
    """(name, generator) for the generators of the user's own (``random.Random``, numpy's) the
    traced function can reach directly, existing before it runs: the
    globals its code names (nested functions' too), its closure, a traced module's attributes,
    its arguments."""
    found = {}
    funcs = [fn]
    owner = getattr(fn, "__self__", None)  # a traced module's __call__, or a bound method
    if owner is not None and hasattr(owner, "__dict__"):
        for k, v in vars(owner).items():
            if isinstance(v, _GENERATORS):
                found[f"self.{k}"] = v
        forward = getattr(type(owner), "forward", None)
        if forward is not None:
            funcs.append(forward)
    for f in funcs:
        f = getattr(f, "__func__", f)
        code = getattr(f, "__code__", None)
        if code is None:
            continue
        codes, names = [code], set()
        while codes:
            c = codes.pop()
            names.update(c.co_names)
            codes.extend(k for k in c.co_consts if hasattr(k, "co_names"))
        g = getattr(f, "__globals__", {})
        for n in names:
            if isinstance(g.get(n), _GENERATORS):
                found[n] = g[n]
        for n, cell in zip(code.co_freevars, f.__closure__ or ()):
            try:
                v = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(v, _GENERATORS):
                found[n] = v
    for k, a in enumerate(args):
        if isinstance(a, _GENERATORS):
            found[f"argument {k}"] = a
    return list(found.items())


def _call_watched(fn, args, kwargs):
    """Run the function being traced; refuse Python state the graph cannot capture."""
    if not _WATCHED:
        _init_watch()
    watched = [(what, g, _state(g)) for what, g in _generators(fn, args)]
    watching = sys.getprofile() is None  # NOTE: never replace a profiler the user runs
    if watching:
        sys.setprofile(_watch)
    try:
        result = fn(*args, **kwargs)
    finally:
        if watching:
            sys.setprofile(None)
    changed = next((what for what, g, state in watched if not _same_state(state, _state(g))),
                   None)
    if changed is not None:
        code = getattr(fn, "__code__", None)
        where = f"\n  in {getattr(fn, '__qualname__', fn)} at {code.co_filename}:" \
            f"{code.co_firstlineno}" if code is not None else ""
        raise _untraceable_state(f"a draw from {changed}", "random", where)
    return result
