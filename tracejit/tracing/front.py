"""``@tracejit.trace``: record a function's ops into a Graph on its first call per input
signature, then run the graph on later calls.

>>> @tracejit.trace
... def f(x, w):
...     return (x @ w).relu()
>>> f(tracejit.ones(2, 3), tracejit.ones(3, 4)).shape      # traces, runs eagerly
(2, 4)
>>> f(tracejit.ones(2, 3), tracejit.ones(3, 4)).shape      # runs the graph
(2, 4)

While tracing, every op runs eagerly (so the first call returns real values) and is also
appended to the graph. Tensors the function reaches that are not arguments — parameters in
closures, globals, ``self`` or other objects — become extra graph inputs read afresh on each
call, never constants. Python that depends on tensor values (``if t > 0``, ``t.item()``,
``print(t)``) or on state the graph cannot see (``random``, numpy's global generator, clocks,
files) cannot be captured and raises ``TraceError`` (docs/tracing.md, "What tracing refuses").
Tracing is per thread: the tracer slot is a ``contextvars.ContextVar`` (``ops.current_tracer``).
"""

from __future__ import annotations

import collections
import contextvars
import functools
import inspect
import linecache
import os
import random
import sys
import sysconfig
import threading
import types
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import autograd, ops
from .. import dtypes as D
from ..autograd import grad_mode
from ..errors import TraceError, _is_own, format_location, user_location
from ..ir import Const, Graph, GraphBuilder, Var
from ..tensor import Tensor

# ----------------------------------------------------------------------------------------------
# modes and debug switches

_MODE = {"mode": "trace"}  # set_mode: process-wide on purpose (a debugging switch)
# ``with tracejit.eager():`` is per thread / asyncio task: one thread debugging op by op does
# not turn another thread's traced functions eager
_EAGER: contextvars.ContextVar = contextvars.ContextVar("tracejit.eager", default=False)


def set_mode(mode: str) -> None:
    """``"eager"`` runs every traced function op by op (for print/pdb), in every thread;
    ``"trace"`` restores."""
    if mode not in ("eager", "trace"):
        raise ValueError(f"set_mode: mode must be 'eager' or 'trace', got {mode!r}")
    _MODE["mode"] = mode


def get_mode() -> str:
    """``"eager"`` under ``set_mode("eager")`` or inside ``with tracejit.eager():`` here."""
    return "eager" if _EAGER.get() else _MODE["mode"]


class eager:
    """``with tracejit.eager():`` runs traced functions op by op inside the block (in this
    thread or asyncio task only; ``set_mode("eager")`` is process-wide)."""
    def __enter__(self):
        tokens = self.__dict__.setdefault("_tokens", [])
        tokens.append(_EAGER.set(True))
        return self

    def __exit__(self, *exc):
        _EAGER.reset(self._tokens.pop())


_ENVIRON = getattr(os.environ, "_data", None)  # NOTE: os.environ's backing dict: a fast read
_DISABLE_KEY = os.environ.encodekey("TRACEJIT_DISABLE") if _ENVIRON is not None else None


def _eager_now() -> bool:
    if _MODE["mode"] == "eager" or _EAGER.get():
        return True
    if _ENVIRON is not None:  # os.environ.get costs ~1 us per call: too much on the hot path
        flag = _ENVIRON.get(_DISABLE_KEY)
        return flag is not None and flag not in (b"", b"0", "", "0")
    return os.environ.get("TRACEJIT_DISABLE", "") not in ("", "0")


def debug_enabled(topic: str) -> bool:
    """Is ``topic`` listed in ``TRACEJIT_DEBUG`` (comma separated: graph, passes, recompiles)?"""
    flags = os.environ.get("TRACEJIT_DEBUG", "")
    return topic in (f.strip() for f in flags.split(",")) or flags.strip() == "all"


def _debug_print(text: str) -> None:
    print(text, file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# pytrees: arguments and results are nested tuples/lists/dicts of tensors and Python values

_LEAF = "*"
_MISS = object()  # the fast path declined: take the full one


def flatten(obj, leaves: list):
    """Append ``obj``'s leaves to ``leaves``; return a hashable description of its structure."""
    if isinstance(obj, Tensor):
        leaves.append(obj)
        return _LEAF
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return ("namedtuple", type(obj), tuple(flatten(v, leaves) for v in obj))
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__, tuple(flatten(v, leaves) for v in obj))
    if isinstance(obj, dict):
        return ("dict", tuple((k, flatten(v, leaves)) for k, v in obj.items()))
    leaves.append(obj)
    return _LEAF


def _detached(result):
    """``result`` with every Tensor leaf detached (a function that ran ``backward()`` inside
    returns plain values, traced or not)."""
    leaves: list = []
    tree = flatten(result, leaves)
    return unflatten(tree, [x.detach() if isinstance(x, Tensor) else x for x in leaves])


def unflatten(tree, leaves):
    return _build(tree, iter(leaves))


def _build(t, it):
    # NOTE: a module-level function, not a recursive closure: a closure that calls itself is a
    # reference cycle, which kept every call's results alive until the cyclic GC ran
    if t == _LEAF:
        return next(it)
    kind = t[0]
    if kind == "namedtuple":
        return t[1](*[_build(c, it) for c in t[2]])
    if kind == "dict":
        return {k: _build(c, it) for k, c in t[1]}
    items = [_build(c, it) for c in t[1]]
    return tuple(items) if kind == "tuple" else items


# ----------------------------------------------------------------------------------------------
# where captured tensors come from: closures, globals, self and object arguments


@dataclass
class Source:
    """How to find a captured tensor again on a later call."""
    name: str
    root: str  # "closure", "global", "self" or "arg"
    key: object  # cell index, global name, or argument position
    path: tuple  # attribute names / item keys from the root object

    def fetch(self, fn, args):
        if self.root == "closure":
            obj = fn.__closure__[self.key].cell_contents
        elif self.root == "global":
            obj = fn.__globals__[self.key]
        elif self.root == "self":
            obj = fn.__self__
        else:
            obj = args[self.key]
        for step in self.path:
            obj = obj[step[1]] if step[0] == "item" else getattr(obj, step[1])
        return obj


_SKIP_TYPES = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type,
               types.MethodType, str, bytes, int, float, bool, complex, np.ndarray)


def _code_names(code, out: set) -> set:
    out.update(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _code_names(c, out)
    return out


def _free_roots(fn) -> list:
    """``(name, root, key, value)`` of what ``fn`` reads from its closure and globals."""
    roots = []
    code = getattr(fn, "__code__", None)
    if code is not None:
        for i, name in enumerate(code.co_freevars):
            try:
                roots.append((name, "closure", i, fn.__closure__[i].cell_contents))
            except ValueError:  # empty cell
                pass
        g = getattr(fn, "__globals__", {})
        for name in sorted(_code_names(code, set())):
            if name in g:
                roots.append((name, "global", name, g[name]))
    return roots


def discover_sources(fn, flat_args, arg_names, max_nodes: int = 20000,
                     entry_grads: dict | None = None) -> dict:
    """Map id(tensor) -> Source for every tensor reachable from fn's closure, globals, bound
    self, and non-tensor arguments (objects holding parameters). ``entry_grads``, if given,
    receives each such tensor's ``.grad`` as it is before the function runs."""
    found: dict = {}
    roots = _free_roots(fn)
    if getattr(fn, "__self__", None) is not None:
        roots.append(("self", "self", None, fn.__self__))
    for i, (name, a) in enumerate(zip(arg_names, flat_args)):
        if not isinstance(a, Tensor) and not isinstance(a, _SKIP_TYPES) and a is not None:
            roots.append((name, "arg", i, a))
    seen: set = set()
    stack = [(name, root, key, (), obj) for name, root, key, obj in reversed(roots)]
    while stack and len(seen) < max_nodes:
        name, root, key, path, obj = stack.pop()
        if isinstance(obj, Tensor):
            if id(obj) not in found:
                found[id(obj)] = Source(name, root, key, path)
                if entry_grads is not None:
                    entry_grads[id(obj)] = obj.grad
            continue
        if isinstance(obj, _SKIP_TYPES) or obj is None or id(obj) in seen or len(path) > 8:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            children = [(f"{name}[{i}]", ("item", i), v) for i, v in enumerate(obj)]
        elif isinstance(obj, dict):
            children = [(f"{name}[{k!r}]", ("item", k), v) for k, v in obj.items()
                        if isinstance(k, (str, int))]
        elif hasattr(obj, "__dict__"):
            children = [(f"{name}.{k}", ("attr", k), v) for k, v in vars(obj).items()
                        if isinstance(k, str)]
        else:
            continue
        for child_name, step, v in reversed(children):
            stack.append((child_name, root, key, path + (step,), v))
    return found


_PLAIN_VALUES = (bool, int, float, str)


def guard_python_values(fn, tracer) -> None:
    """Guard the Python numbers and strings ``fn`` reads from its closure and globals (a
    learning rate, a flag): the graph bakes them in, so a new value must trace again."""
    for name, root, key, value in _free_roots(fn):
        if type(value) in _PLAIN_VALUES:
            source = Source(name, root, key, ())
            tracer.guard(lambda source=source: source.fetch(fn, ()), f"{root} {name!r}")


# ----------------------------------------------------------------------------------------------
# the tracer: installed in ops.state while a function is being traced


@dataclass
class Captured:
    """A tensor the traced function reached that is not an argument: a graph input."""
    var: Var
    source: Source | None  # how to fetch it again; None: the very same object is reused
    tensor: object  # the object seen while tracing
    requires_grad: bool = False  # guarded, with whether .grad was None, at every call
    grad_none: bool | None = True  # None: the function never reads .grad, so no guard


class Tracer:
    def __init__(self, fn, sources: dict, entry_grads: dict | None = None):
        self.fn = fn
        self.entry_grads = entry_grads or {}  # id(tensor) -> .grad before the function ran
        self.builder = GraphBuilder()
        self.vars: dict = {}  # id(tensor) -> (Var, version seen)
        self.keep: list = []  # tensors seen while tracing (keeps their ids unique)
        self.sources = sources
        self.captured: list = []
        self.originals: dict = {}  # var id of a graph input -> the tensor it came from
        self.const_ids: set = set()
        self.array_vars: dict = {}  # id(array) -> Var of the traced tensor that holds it
        self.initial_grads: dict = {}  # var id of a graph input -> its .grad when traced
        self.ran_backward = False  # backward() ran inside: gradients are part of the graph
        self.guards: list = []  # (fetch, value, description): Python state the graph relies on
        self.guard_keys: set = set()
        self.grad_read = False  # some tensor's .grad was read: the graph depends on it

    # -- values
    def bind(self, t, var: Var) -> None:
        self.vars[id(t)] = (var, t._version[0])
        self.keep.append(t)

    def alias(self, new, old) -> None:
        """``new`` holds the same value as ``old`` (an internal copy, e.g. an in-place snapshot)."""
        self.vars[id(new)] = (self.var_of(old), new._version[0])
        self.keep.append(new)

    def bind_array(self, t) -> None:
        """Bind ``t`` to the value of the traced tensor whose array it wraps (autograd saves
        arrays, not tensors)."""
        entry = self.array_vars.get(id(t._data))
        if entry is not None:
            self.vars[id(t)] = (entry, t._version[0])
            self.keep.append(t)

    def guard(self, fetch, what: str, key=None) -> None:
        """Library code read a Python value (a learning rate, a module's ``training`` flag):
        the graph is valid only while ``fetch()`` keeps returning what it returns now. Guards
        with the same ``key`` (a module called at every step of a loop) are checked once."""
        if key is not None:
            if key in self.guard_keys:
                return
            self.guard_keys.add(key)
        self.guards.append((fetch, fetch(), what))

    def note_backward(self) -> None:
        self.ran_backward = True

    def add_argument(self, name: str, t) -> Var:
        v = self.builder.add_input(name, t.shape, t.dtype)
        self.bind(t, v)
        self.originals[v.id] = t
        # a parameter first used after zero_grad() had its .grad reset inside the function
        self.initial_grads[v.id] = self.entry_grads.get(id(t), t._grad)
        return v

    def var_of(self, t) -> Var:
        entry = self.vars.get(id(t))
        if entry is None:  # a tensor from outside the function: lift it to a graph input
            src = self.sources.get(id(t))
            name = src.name if src else f"captured{len(self.captured)}"
            v = self.add_argument(name, t)
            self.captured.append(Captured(v, src, t, t.requires_grad,
                                          self.initial_grads[v.id] is None))
            return v
        var, seen = entry
        if t._version[0] != seen:
            raise TraceError(
                f"a tensor of shape {tuple(t.shape)} was modified in place through another view "
                f"after this view was taken, inside a traced function; the graph cannot follow "
                f"views across in-place updates. clone() the view before the update"
                f"{_where()}")
        return var

    # -- recording
    def record(self, op, inputs, attrs):
        args = [self.var_of(x) if isinstance(x, Tensor) else x for x in inputs]
        out = ops.eager(op, inputs, attrs)
        loc = _loc()
        v = self.builder.add_node(op.name, args, attrs, out.shape, out.dtype, loc)
        if not grad_mode.enabled and not self.ran_backward and any(
                isinstance(x, Tensor) and x.requires_grad for x in inputs):
            # no_grad() cut a gradient path: keep the cut in the graph, or the compiled
            # backward (runtime/backward.py) would differentiate through it on later calls.
            # (After a backward() inside, e.g. an optimizer step, no grad_fn is ever built.)
            v = self.builder.add_node("detach", [v], {}, out.shape, out.dtype, loc)
        self.bind(out, v)
        self.array_vars[id(out._data)] = v
        return out

    def constant(self, t):
        """A tensor made inside the function from Python data: a ``const`` node."""
        v = self.builder.add_node("const", (), {"value": Const(t._data)}, t.shape, t.dtype,
                                  _loc())
        self.const_ids.add(v.id)
        self.bind(t, v)
        return t

    def assign(self, target, result) -> None:
        """``target`` was overwritten in place with ``result``'s value (functionalised)."""
        if target._base is not None:
            raise TraceError(
                f"in-place update of a view (of a tensor of shape {tuple(target._base.shape)}) "
                f"inside a traced function is not supported; write through the base tensor "
                f"(base[idx] = value) or clone() the view first{_where()}")
        var = self.var_of(result)
        self.vars[id(target)] = (var, target._version[0])

    def data_dependent(self, what: str, fix: str | None = None):
        raise TraceError(
            f"{what} inside a traced function depends on tensor values, which tracing cannot "
            f"capture (the graph would silently keep this call's branch or value){_where()}\n"
            f"  fix: " + (fix or "use tracejit.where(...) for data-dependent choices, pass the "
                          "value as a Python argument, or run this function eagerly "
                          "(tracejit.eager() / TRACEJIT_DISABLE=1)"))

    def check_data_access(self, t, what: str, fix: str | None = None):
        entry = self.vars.get(id(t))
        if entry is not None and entry[0].id in self.const_ids:
            return  # made from Python data inside the function: its value is known
        if entry is not None or id(t) in self.sources:
            self.data_dependent(what, fix)

    # -- result
    def finish(self, outputs: list):
        """Graph outputs: the results, then the final values of mutated inputs and of the
        ``.grad`` of inputs whose gradients were set inside."""
        out_refs = [self.var_of(o) if isinstance(o, Tensor) else o for o in outputs]
        position = {v.id: i for i, v in enumerate(self.builder.inputs)}
        mutated, grads = [], []
        for vid, t in list(self.originals.items()):
            var, _ = self.vars[id(t)]
            # the input now holds another value: computed in the graph, or another input's
            # (x.copy_(y)); the same tensor passed twice is bound to both of its inputs
            if var.id != vid and self.originals.get(var.id) is not t:
                mutated.append((position[vid], len(out_refs)))
                out_refs.append(var)
            if t._grad is not self.initial_grads[vid]:  # backward() or zero_grad() ran inside
                if t._grad is None:
                    grads.append((position[vid], None))
                else:
                    grads.append((position[vid], len(out_refs)))
                    out_refs.append(self.var_of(t._grad))
        return self.builder.build(out_refs), mutated, grads


def _loc() -> str:
    loc = user_location()
    return f"{loc[0]}:{loc[1]}" if loc else ""


def _where() -> str:
    from ..errors import user_frame
    return user_frame(3)


# ----------------------------------------------------------------------------------------------
# Python state the graph cannot see: random draws, clocks, files (see docs/tracing.md)

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


def _rng_states():
    """The global Python and numpy (legacy ``np.random.*``) generator states, to compare."""
    st = np.random.mtrand._rand.get_state()
    return random.getstate(), (st[1], st[2], st[3], st[4])


def _rng_changed(before) -> str | None:
    (py0, (key0, pos0, hg0, g0)), (py1, (key1, pos1, hg1, g1)) = before, _rng_states()
    if py0 != py1:
        return "Python's random module (random.random, randint, choice, shuffle...)"
    if pos0 != pos1 or hg0 != hg1 or g0 != g1 or not np.array_equal(key0, key1):
        return "numpy's global random generator (np.random.rand, randn, randint, seed...)"
    return None


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
    ``open`` or a global random generator raises at the caller's line."""
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
    if _is_own(filename) or filename in _SKIP_FILES:
        return
    if hit[1] == "time" and filename.startswith(_LIBRARY_DIRS):
        return  # a library's own clock (logging's timestamps, tqdm): not a value of the graph
    raise _untraceable_state(hit[0], hit[1], _site(frame))


def _call_watched(fn, args, kwargs):
    """Run the function being traced; refuse Python state the graph cannot capture."""
    if not _WATCHED:
        _init_watch()
    before = _rng_states()
    watching = sys.getprofile() is None  # NOTE: never replace a profiler the user runs
    if watching:
        sys.setprofile(_watch)
    try:
        result = fn(*args, **kwargs)
    finally:
        if watching:
            sys.setprofile(None)
    changed = _rng_changed(before)
    if changed is not None:
        code = getattr(fn, "__code__", None)
        where = f"\n  in {getattr(fn, '__qualname__', fn)} at {code.co_filename}:" \
            f"{code.co_firstlineno}" if code is not None else ""
        raise _untraceable_state(f"a draw from {changed}", "random", where)
    return result


# ----------------------------------------------------------------------------------------------
# specializations and the traced function


@dataclass
class Specialization:
    key: tuple
    graph: Graph  # what runs: optimised, and fused for compiled backends
    raw_graph: Graph  # as traced
    out_tree: object
    n_results: int  # graph outputs that are results (the rest are input mutations)
    mutated: list  # (input position, output position)
    captured: list  # Captured
    arg_positions: list  # flat positions of tensor arguments, in graph input order
    runner: object = None  # compiled callable (set by a backend); None: the interpreter
    lowered: object = None  # the backend's generated code
    optimized: Graph = None  # after the passes, before fusion (replayed for autograd)
    grad_writes: list = field(default_factory=list)  # (input position, output position|None)
    guards: list = field(default_factory=list)  # (fetch, value, description), see Tracer.guard
    ran_backward: bool = False  # the function computes its own gradients: run it compiled
    name: str = ""  # the traced function's
    compile_graph: object = None  # optimised Graph -> callable on arrays (the backend's)
    compiled_grad: object = None  # forward and backward graphs, built on the first call that
    # needs a grad_fn (see runtime/backward.py)
    passthrough: tuple = ()  # (result position, graph input position): an input returned as
    # is; later calls return that very tensor too, as the tracing call did

    @property
    def single_tensor_result(self) -> bool:
        return self.out_tree == _LEAF and isinstance(self.graph.outputs[0], Var) and \
            not self.passthrough
    checked: bool = False
    calls: int = 0


def _passthrough(raw: Graph, n_results: int) -> tuple:
    """(result position, input position) of each result that is a graph input returned as is."""
    position = {v.id: i for i, v in enumerate(raw.inputs)}
    return tuple((k, position[v.id]) for k, v in enumerate(raw.outputs[:n_results])
                 if isinstance(v, Var) and v.id in position)


def write_back(spec, inputs, outs) -> None:
    """Leave inputs as eager execution would: in-place updates, then ``.grad`` assignments."""
    for inp, pos in spec.mutated:
        target = inputs[inp]
        np.copyto(target._data, outs[pos], casting="unsafe")
        target._version[0] += 1
    for inp, pos in spec.grad_writes:
        target = inputs[inp]
        if pos is None:
            target.grad = None
        elif target.grad is not None and target.grad.shape == outs[pos].shape and \
                target.grad._data.flags.writeable:
            np.copyto(target.grad._data, outs[pos], casting="unsafe")
            target.grad._version[0] += 1
        else:  # a private copy: two parameters may have received the same gradient value
            target.grad = Tensor._make(np.array(outs[pos], dtype=target.dtype))


CacheInfo = collections.namedtuple(
    "CacheInfo", ["hits", "misses", "specializations", "max_specializations", "eager_calls"])


@dataclass
class _Stats:
    hits: int = 0
    misses: int = 0
    eager_calls: int = 0
    warned_limit: bool = False
    extra: dict = field(default_factory=dict)


def _leaf_key(x):
    if isinstance(x, Tensor):
        return ("tensor", x.shape, x.dtype.str, str(x.device), x.requires_grad,
                x.requires_grad and x.grad is None)
    try:
        hash(x)
    except TypeError:
        return ("object", type(x).__qualname__, id(x))
    return ("value", type(x).__qualname__, x)


def _named_values(x) -> bool:
    """``x`` is a tuple of ``(name, value)`` pairs (a module's attributes, for instance)."""
    return isinstance(x, tuple) and all(
        isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in x)


class TracedFunction:
    """The callable ``trace`` returns. See the module docstring."""
    def __init__(self, fn, *, max_specializations: int = 8, check_trace: bool = False,
                 passes=None, name: str | None = None, backend: str | None = None,
                 fastmath: bool = False, precise_math: bool = False):
        self.fn = fn
        self.max_specializations = max_specializations
        self.check_trace = check_trace
        self.passes = passes
        backend = backend or os.environ.get("TRACEJIT_BACKEND", "cpu")
        if backend not in ("cpu", "interpret"):
            raise ValueError(f"trace: backend must be 'cpu' or 'interpret', got {backend!r}")
        self.backend = backend
        self.fastmath = fastmath
        self.precise_math = precise_math
        self.name = name or getattr(fn, "__qualname__", type(fn).__name__)
        # argument key -> its specializations, most recently used first: variants of one key
        # differ in the state their guards read (Module.training, optimizer settings, captured
        # tensors), so switching train()/eval() back and forth reuses both compiled graphs
        self.specializations: collections.OrderedDict = collections.OrderedDict()
        self.stats = _Stats()
        self.module = None  # the object, when tracing a module-like callable
        self._fast: dict = {}  # simple call key -> its specializations (see _fast_call)
        self._last_names: list = []
        # NOTE: held while one thread traces and compiles a new specialization; lookups and
        # compiled calls never take it (another thread meanwhile runs the function eagerly)
        self._trace_lock = threading.RLock()
        functools.update_wrapper(self, fn, updated=())

    # -- binding as a method
    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        bound = functools.partial(self.__call__, obj)
        bound.graph = functools.partial(self.graph, obj)
        bound.cache_info = self.cache_info
        return bound

    def __getattr__(self, name):  # a traced module still exposes its attributes
        module = self.__dict__.get("module")
        if module is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(module, name)

    def __repr__(self):
        return f"<tracejit.trace of {self.name}>"

    # -- public API
    def cache_info(self) -> CacheInfo:
        return CacheInfo(self.stats.hits, self.stats.misses, self._count(),
                         self.max_specializations, self.stats.eager_calls)

    def specs(self) -> list:
        """Every specialization, least recently used argument key first."""
        return [s for variants in self.specializations.values() for s in reversed(variants)]

    def _count(self) -> int:
        return sum(len(v) for v in self.specializations.values())

    def graph(self, *args, optimized: bool = True, **kwargs) -> Graph:
        """The graph this function runs for these arguments (traces if needed)."""
        spec, _ = self._lookup(args, kwargs, run=False)
        if spec is None:
            raise TraceError(f"{self.name}: no graph: the specialization limit "
                             f"({self.max_specializations}) is reached and this call runs eagerly")
        return spec.graph if optimized else spec.raw_graph

    def _simple_key(self, args):
        """A cheap key for the common call shape: flat tensors and plain Python values."""
        key = []
        tensors = 0
        for a in args:
            t = type(a)
            if t is Tensor:
                d = a._data
                key.append((d.shape, d.dtype, a.requires_grad))
                tensors += 1
            elif t in (int, float, bool, str) or a is None:
                key.append((t, a))
            else:
                return None
        if tensors > 1 and len({id(a) for a in args if type(a) is Tensor}) != tensors:
            return None  # aliased arguments: the full path handles them
        return (tuple(key), grad_mode.enabled, D.get_default_dtype())

    @staticmethod
    def _needs_grad_fn(spec, args) -> bool:
        """Outputs need a grad_fn (inputs require grad, and the function computes no gradients
        itself): such calls take the full path (see runtime/backward.py)."""
        if not grad_mode.enabled or spec.ran_backward:
            return False
        return any(type(a) is Tensor and a.requires_grad for a in args) or any(
            c.requires_grad for c in spec.captured)

    def _fast_call(self, spec, args):
        """Run a specialization for flat arguments: the per-call path kept short on purpose."""
        if spec.captured or spec.guards:
            fresh = self._fetch_captured(spec, args)
            if fresh is None:
                return _MISS
            arrays = [a._data for a in args if type(a) is Tensor] + [t._data for t in fresh]
        else:
            fresh = []
            arrays = [a._data for a in args if type(a) is Tensor]
        runner = spec.runner
        if runner is None or (self.check_trace and not spec.checked):
            return _MISS
        try:
            outs = runner(*arrays)
        except Exception as e:  # never run it twice: raise the failing node's error from here
            from ..runtime import executor
            outs = executor.recover(spec, [a for a in args if type(a) is Tensor] + fresh, e)
            if outs is None:
                return _MISS  # it failed to compile: the full path runs the interpreter
        self.stats.hits += 1
        spec.calls += 1
        if spec.mutated or spec.grad_writes:
            write_back(spec, [a for a in args if type(a) is Tensor] + fresh, outs)
        if spec.single_tensor_result:
            return Tensor._make(outs[0])
        results = [Tensor._make(o) if isinstance(x, Var) else x
                   for o, x in zip(outs[:spec.n_results], spec.graph.outputs)]
        if spec.passthrough:
            inputs = [a for a in args if type(a) is Tensor] + fresh
            for pos, inp in spec.passthrough:
                results[pos] = inputs[inp]
        return unflatten(spec.out_tree, results)

    def __call__(self, *args, **kwargs):
        tracer = ops.current_tracer()
        if not kwargs and tracer is None and self._fast:
            key = self._simple_key(args)
            specs = self._fast.get(key) if key is not None else None
            if specs and not _eager_now():
                for spec in specs:
                    out = self._fast_call(spec, args)
                    if out is not _MISS:
                        return out
        if tracer is not None or _eager_now():
            # eager mode, or called from inside another traced function: inline the Python
            if tracer is None:
                self.stats.eager_calls += 1
            return self.fn(*args, **kwargs)
        spec, result = self._lookup(args, kwargs, run=True)
        if spec is None:  # over the specialization limit, or another thread is tracing
            self.stats.eager_calls += 1
            stored = autograd.grads_stored()
            result = self.fn(*args, **kwargs)
            if autograd.grads_stored() != stored:
                result = _detached(result)  # as its traced calls give (see _trace)
            return result
        if not kwargs and spec.runner is not None and not self._needs_grad_fn(spec, args):
            key = self._simple_key(args)
            specs = self._fast.get(key, ()) if key is not None else None
            if specs is not None and spec not in specs:
                # copy on write: another thread may be iterating the old list
                self._fast[key] = [spec, *specs]
        return result

    # -- internals
    def _flat(self, args, kwargs):
        leaves: list = []
        tree = flatten((args, kwargs), leaves)
        return tree, leaves

    def _arg_names(self, tree, leaves, args, kwargs):
        """Readable names for flat leaves: parameter names from the signature, plus paths."""
        try:
            params = [p.name for p in inspect.signature(self.fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            params = []
        names: list = []

        def walk(t, name):
            if t == _LEAF:
                names.append(name)
                return
            if t[0] == "namedtuple":
                for i, c in enumerate(t[2]):
                    walk(c, f"{name}.{t[1]._fields[i]}")
            elif t[0] == "dict":
                for k, c in t[1]:
                    walk(c, f"{name}[{k!r}]")
            else:
                for i, c in enumerate(t[1]):
                    walk(c, f"{name}[{i}]")

        (_, (args_tree, kwargs_tree)) = tree
        for i, c in enumerate(args_tree[1]):
            walk(c, params[i] if i < len(params) else f"arg{i}")
        for k, c in kwargs_tree[1]:
            walk(c, k)
        return [n.replace("[", "_").replace("]", "").replace("'", "").replace(".", "_")
                if not n.isidentifier() else n for n in names]

    def _key(self, tree, leaves):
        ids = [id(x) for x in leaves if isinstance(x, Tensor)]
        aliasing = () if len(set(ids)) == len(ids) else tuple(ids.index(i) for i in ids)
        return (tree, tuple(_leaf_key(x) for x in leaves), grad_mode.enabled,
                D.get_default_dtype().str, aliasing)

    def _find(self, key, leaves):
        """(specialization, its current captured tensors) matching this call, or None."""
        variants = self.specializations.get(key)
        for spec in tuple(variants or ()):  # a snapshot: other threads may reorder the list
            fresh = self._fetch_captured(spec, leaves)
            if fresh is None:
                continue
            if spec is not variants[0]:
                try:  # NOTE: lock-free LRU order; a racing thread's remove may win
                    variants.remove(spec)
                    variants.insert(0, spec)
                except ValueError:
                    pass
            try:
                self.specializations.move_to_end(key)
            except KeyError:
                pass
            return spec, fresh
        return None

    def _lookup(self, args, kwargs, run: bool):
        tree, leaves = self._flat(args, kwargs)
        key = self._key(tree, leaves)
        found = self._find(key, leaves)
        if found is None:
            # graph()/source() wait for a trace in progress; calls run eagerly meanwhile (never
            # blocking: the tracing thread may itself wait on this one, e.g. at a barrier)
            if not self._trace_lock.acquire(blocking=not run):
                return None, None
            try:
                found = self._find(key, leaves)  # traced by another thread while we waited
                if found is None:
                    return self._trace_new(key, tree, leaves, args, kwargs)
            finally:
                self._trace_lock.release()
        spec, fresh = found
        self.stats.hits += 1
        if not run:
            return spec, None
        return spec, self._run(spec, leaves, fresh, args, kwargs)

    def _trace_new(self, key, tree, leaves, args, kwargs):
        """Trace a new specialization for this call (under ``_trace_lock``)."""
        variants = self.specializations.get(key)
        if variants:
            reason = self._captured_reason(variants[0], leaves)
        else:
            reason = self._recompile_reason(key)
        self.stats.misses += 1
        if self._count() >= self.max_specializations:
            if not self.stats.warned_limit:
                self.stats.warned_limit = True
                warnings.warn(
                    f"tracejit: {self.name} reached its limit of {self.max_specializations} "
                    f"specializations ({reason}); new signatures now run eagerly. Raise the limit "
                    f"with tracejit.trace(fn, max_specializations=N).", RuntimeWarning,
                    stacklevel=3)
            return None, None
        if reason and debug_enabled("recompiles"):
            _debug_print(f"tracejit: recompiling {self.name}: {reason}")
        spec, result = self._trace(key, tree, leaves, args, kwargs)
        variants = self.specializations.get(key, [])
        self.specializations[key] = [spec, *variants]  # copy on write (see _find)
        self.specializations.move_to_end(key)
        return spec, result

    def _recompile_reason(self, key) -> str:
        if not self.specializations:
            return ""
        old = next(reversed(self.specializations))
        tree, leaves, grad, dflt, alias = key
        otree, oleaves, ograd, odflt, oalias = old
        if tree != otree or len(leaves) != len(oleaves):
            return "the structure of the arguments changed"
        names = self._last_names
        for i, (a, b) in enumerate(zip(oleaves, leaves)):
            if a != b:
                name = names[i] if i < len(names) else f"argument {i}"
                if a[0] == "tensor" and b[0] == "tensor":
                    for j, what in ((1, "shape"), (2, "dtype"), (3, "device"),
                                    (4, "requires_grad"), (5, "whether .grad is None")):
                        if a[j] != b[j]:
                            old_v, new_v = a[j], b[j]
                            if what == "dtype":
                                old_v, new_v = np.dtype(old_v).name, np.dtype(new_v).name
                            return f"{name}: {what} changed from {old_v} to {new_v}"
                if a[0] == "value" and b[0] == "value":
                    return f"{name}: value changed from {a[2]!r} to {b[2]!r}"
                return f"{name}: changed from {a[0]} {a[1]} to {b[0]} {b[1]}"
        if grad != ograd:
            return f"grad mode changed from {ograd} to {grad}"
        if dflt != odflt:
            return "the default dtype changed"
        if alias != oalias:
            return "which arguments are the same tensor changed"
        return "a new signature"

    def _fetch_captured(self, spec, leaves):
        """Current captured tensors, or None if one (or a Python-state guard) no longer matches
        the trace."""
        for fetch, value, _ in spec.guards:
            try:
                if fetch() != value:
                    return None
            except Exception:
                return None
        fresh = []
        for c in spec.captured:
            if c.source is None:
                t = c.tensor
            else:
                try:
                    t = c.source.fetch(self.fn, leaves)
                except Exception:
                    return None
            if not isinstance(t, Tensor) or t.shape != c.var.shape or t.dtype != c.var.dtype \
                    or t.requires_grad != c.requires_grad or (
                        c.grad_none is not None and (t._grad is None) != c.grad_none):
                return None
            fresh.append(t)
        return fresh

    def _captured_reason(self, spec, leaves) -> str:
        """Why the captured tensors no longer match a specialization (for recompile logs)."""
        for fetch, value, what in spec.guards:
            try:
                now = fetch()
            except Exception as e:
                return f"{what} can no longer be read ({type(e).__name__}: {e})"
            if now != value:
                if _named_values(value) and _named_values(now):
                    old_d, new_d = dict(value), dict(now)
                    diff = [f"{k}: {old_d.get(k)!r} -> {new_d.get(k)!r}"
                            for k in dict.fromkeys(list(old_d) + list(new_d))
                            if old_d.get(k) != new_d.get(k)]
                    return f"{what} changed ({', '.join(diff)})"
                return f"{what} changed from {value!r} to {now!r}"
        for c in spec.captured:
            name = c.source.name if c.source else c.var and f"captured tensor %{c.var.id}"
            try:
                t = c.tensor if c.source is None else c.source.fetch(self.fn, leaves)
            except Exception as e:
                return f"{name} can no longer be found ({type(e).__name__}: {e})"
            if not isinstance(t, Tensor):
                return f"{name} is no longer a tensor (got {type(t).__name__})"
            for what, old, new in (("shape", c.var.shape, t.shape),
                                   ("dtype", c.var.dtype.name, t.dtype.name),
                                   ("requires_grad", c.requires_grad, t.requires_grad),
                                   ("whether .grad is None", c.grad_none,
                                    t._grad is None if c.grad_none is not None else None)):
                if old != new:
                    return f"{name}: {what} changed from {old} to {new}"
        return "a captured tensor changed"

    def _trace(self, key, tree, leaves, args, kwargs):
        from ..passes import run_pipeline

        names = self._arg_names(tree, leaves, args, kwargs)
        self._last_names = names
        entry_grads: dict = {}
        sources = discover_sources(self.fn, leaves, names, entry_grads=entry_grads)
        tracer = Tracer(self.fn, sources, entry_grads)
        guard_python_values(self.fn, tracer)
        arg_positions = []
        for i, (name, x) in enumerate(zip(names, leaves)):
            if isinstance(x, Tensor):
                tracer.add_argument(name, x)
                arg_positions.append(i)
        token = ops._TRACER.set(tracer)
        try:
            result = _call_watched(self.fn, args, kwargs)
            out_leaves: list = []
            out_tree = flatten(result, out_leaves)
            raw, mutated, grad_writes = tracer.finish(out_leaves)
        finally:
            ops._TRACER.reset(token)
        if not (tracer.grad_read or tracer.ran_backward or grad_writes):
            # the graph is the same whether or not gradients exist: a model traced for eager
            # training is not traced again once backward() has filled its .grad
            for c in tracer.captured:
                c.grad_none = None
        if debug_enabled("graph"):
            _debug_print(f"tracejit: traced {self.name}\n{raw.format(locs=True)}")
        graph = run_pipeline(raw, self.passes, debug=debug_enabled("passes"))
        spec = Specialization(key, graph, raw, out_tree, len(out_leaves), mutated,
                              tracer.captured, arg_positions, optimized=graph,
                              grad_writes=grad_writes, ran_backward=tracer.ran_backward,
                              guards=tracer.guards, name=self.name,
                              compile_graph=self._graph_runner,
                              passthrough=_passthrough(raw, len(out_leaves)))
        if self.backend == "cpu":
            spec.graph, spec.lowered, spec.runner = self._compile(spec.graph)
        if tracer.ran_backward:
            # later calls return plain values (the gradients were computed inside, the graph
            # keeps no tape): so does this call, or the kinds of results would change
            result = _detached(result)
        return spec, result

    def _compile(self, graph):
        """(fused graph, generated code, runner) for an optimised graph: fused and lowered
        through numba (machine code is made on the first run)."""
        from ..codegen.cpu import lower
        from ..passes.fuse import fuse
        from ..runtime.compile import compile_lowered

        graph = fuse(graph)
        lowered = lower(graph, fastmath=self.fastmath, precise_math=self.precise_math)
        if debug_enabled("src"):
            _debug_print(f"tracejit: source for {self.name}\n{lowered.source}")
        return graph, lowered, compile_lowered(lowered)

    def _graph_runner(self, graph):
        """A callable running an optimised graph on arrays, on this function's backend."""
        if self.backend == "cpu":
            return self._compile(graph)[2]
        from ..runtime.backward import interpret_runner
        return interpret_runner(graph)

    def source(self, *args, **kwargs) -> str:
        """The generated numba source this function runs for these arguments."""
        spec, _ = self._lookup(args, kwargs, run=False)
        if spec is None or getattr(spec, "lowered", None) is None:
            raise TraceError(f"{self.name}: no generated source for these arguments (backend "
                             f"{self.backend!r}, or over the specialization limit)")
        return spec.lowered.source

    def _graph_inputs(self, spec, leaves, captured):
        return [leaves[i] for i in spec.arg_positions] + list(captured)

    def _run(self, spec, leaves, captured, args, kwargs):
        from ..runtime.executor import execute

        inputs = self._graph_inputs(spec, leaves, captured)
        outs = execute(spec, inputs)
        if self.check_trace and not spec.checked:
            spec.checked = True
            self._check(spec, inputs, outs, args, kwargs)  # eager ran: mutations applied
        else:
            write_back(spec, inputs, [o._data if isinstance(o, Tensor) else o for o in outs])
        spec.calls += 1
        results = outs[:spec.n_results]
        if spec.passthrough:
            results = list(results)
            for pos, inp in spec.passthrough:
                results[pos] = inputs[inp]
        return unflatten(spec.out_tree, results)

    def _check(self, spec, inputs, outs, args, kwargs):
        """check_trace: run the function eagerly too and compare everything it produced."""
        with eager():
            expected = self.fn(*args, **kwargs)
        exp_leaves: list = []
        flatten(expected, exp_leaves)
        pairs = [(f"output {i}", o, e) for i, (o, e) in enumerate(zip(outs, exp_leaves))]
        for inp, pos in spec.mutated:
            pairs.append((f"in-place update of input {spec.graph.input_names[inp]}", outs[pos],
                          inputs[inp]))
        for what, got, want in pairs:
            g = got._data if isinstance(got, Tensor) else np.asarray(got)
            w = want._data if isinstance(want, Tensor) else np.asarray(want)
            tol = 1e-4 if g.dtype == np.float32 else 1e-9
            if g.shape != w.shape or not np.allclose(g, w, rtol=tol, atol=tol, equal_nan=True):
                raise TraceError(
                    f"check_trace: {self.name}'s graph disagrees with eager execution on {what}: "
                    f"graph {g!r} vs eager {w!r}. The function probably depends on something "
                    f"tracing cannot see (Python state, randomness outside tracejit).")


def trace(fn=None, *, max_specializations: int = 8, check_trace: bool = False, passes=None,
          backend: str | None = None, fastmath: bool = False, precise_math: bool = False):
    """Trace ``fn`` (a function, or an object with ``__call__`` such as a module) into graphs
    compiled through numba (``backend="cpu"``, the default) or run by the reference interpreter
    (``backend="interpret"``; the ``TRACEJIT_BACKEND`` environment variable sets the default).

    Usable as ``@trace``, ``@trace(check_trace=True)`` or ``trace(model)``. ``fastmath=True``
    lets numba drop NaN/Inf semantics; ``precise_math=True`` uses libm instead of the fast
    float32 approximations.
    """
    options = dict(max_specializations=max_specializations, check_trace=check_trace,
                   passes=passes, backend=backend, fastmath=fastmath, precise_math=precise_math)
    if fn is None:
        return lambda f: trace(f, **options)
    if isinstance(fn, TracedFunction):
        return fn
    target = fn
    if not isinstance(fn, (types.FunctionType, types.MethodType, functools.partial)) and \
            callable(fn):
        target = fn.__call__  # a module-like object: trace its bound __call__
    traced = TracedFunction(target, name=type(fn).__name__ if target is not fn else None,
                            **options)
    if target is not fn:
        traced.module = fn
    return traced
