"""Where captured tensors come from: closures, globals, ``self`` and object arguments.

A tensor the traced function reaches without receiving it (a parameter) becomes a graph input
read afresh on every call, never a constant: ``discover_sources`` records how to find each one
again (a ``Source``). Python numbers and strings it reads from its closure and globals are baked
into the graph, so ``guard_python_values`` guards them.

Numbers that change on every epoch (a scheduled learning rate, Adam's betas) would retrace at
every change if they were guarded: library code reads them through ``Tracer.dynamic_number``
instead, which makes them 0-d float64 graph inputs fetched afresh on every call
(``NumberSource``); users mark their own with ``dynamic(value)``.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np

from ..tensor import Tensor


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


@dataclass
class NumberSource:
    """A Python number read afresh on every call (``Tracer.dynamic_number``): the graph input is
    a 0-d float64 tensor holding it. A value that is no longer a number fails the fetch, which
    makes the call trace again."""
    name: str
    read: object  # () -> the number now

    def fetch(self, fn, args):
        value = self.read()
        if type(value) not in (int, float) and not isinstance(value, np.floating):
            raise TypeError(f"{self.name} is no longer a Python number ({type(value).__name__})")
        return Tensor._make(np.array(value, dtype=np.float64))


def dynamic(value) -> Tensor:
    """A number that may change between calls without tracing again: a 0-d float64 tensor.

    >>> lr = tracejit.dynamic(0.1)          # in a closure, a global or passed as an argument
    >>> lr.fill_(0.01)                       # or ``lr = tracejit.dynamic(0.01)``: no retrace

    Mixed with float32 tensors it acts as a Python float does (torch's promotion of 0-d
    tensors: the result stays float32 and the number is rounded to float32 where it is used),
    so results are the same as with the plain number; arithmetic among such numbers is float64,
    as Python's is. A plain Python number in a closure or global is instead baked into the
    graph and guarded (a new value traces again).
    """
    if isinstance(value, Tensor):
        raise TypeError("dynamic() takes a Python number; a tensor is already read afresh "
                        "on every call")
    if type(value) not in (int, float) and not isinstance(value, np.floating):
        raise TypeError(f"dynamic() takes a Python number, got {type(value).__name__}")
    from ..creation import tensor
    return tensor(float(value), dtype=np.float64)


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
                if isinstance(obj._grad, Tensor) and len(path) <= 8:
                    # NOTE: a gradient set outside (``w.grad = g``, eager accumulation) and read
                    # inside (a traced ``opt.step``) is fetched afresh too; without a path the
                    # graph would keep reading the first call's gradient tensor
                    stack.append((f"{name}.grad", root, key, path + (("attr", "_grad"),),
                                  obj._grad))
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
