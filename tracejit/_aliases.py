"""numpy's spellings of torch's dim arguments: ``axis=`` for ``dim=`` and ``keepdims=`` for
``keepdim=``, accepted wherever a function or Tensor method takes ``dim``/``keepdim``, as torch
accepts them (``x.sum(axis=0, keepdims=True)``).

>>> tracejit.ones(2, 3).sum(axis=1, keepdims=True).shape
(2, 1)
"""

from __future__ import annotations

import functools
import inspect

_ALIASES = (("axis", "dim"), ("keepdims", "keepdim"))


def _takes(fn) -> tuple:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return ()
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return ()
    return tuple((alias, name) for alias, name in _ALIASES
                 if name in params and alias not in params)


def with_aliases(fn, like=None):
    """``fn`` also taking ``axis``/``keepdims`` for its ``dim``/``keepdim`` parameters (those
    of ``like`` when ``fn`` only passes ``*args, **kwargs`` on to it)."""
    pairs = _takes(like if like is not None else fn)
    if not pairs or getattr(fn, "_numpy_aliases", False):
        return fn
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", "function"))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if kwargs:
            for alias, real in pairs:
                if alias in kwargs:
                    if real in kwargs:
                        raise TypeError(f"{name}() got both {real}= and its alias {alias}=")
                    kwargs[real] = kwargs.pop(alias)
        return fn(*args, **kwargs)

    # NOTE: the wrapper's frame carries the wrapped function's name, so an error names the
    # function the user called (errors.called_as reads the frame: "softmax: amax: ...")
    code = wrapper.__code__
    names = {"co_name": getattr(fn, "__name__", code.co_name)}
    if hasattr(code, "co_qualname"):
        names["co_qualname"] = name
    wrapper.__code__ = code.replace(**names)
    wrapper._numpy_aliases = True
    return wrapper


def add_aliases(namespace: dict, names=None) -> None:
    """Wrap the public functions (or the named ones) of a module namespace (``globals()``)."""
    for key in list(names if names is not None else namespace):
        value = namespace.get(key)
        if inspect.isfunction(value) and not key.startswith("_"):
            namespace[key] = with_aliases(value)


def add_method_aliases(cls) -> None:
    """Wrap the public methods of a class."""
    for key, value in list(vars(cls).items()):
        if inspect.isfunction(value) and not key.startswith("_"):
            wrapped = with_aliases(value)
            if wrapped is not value:
                setattr(cls, key, wrapped)


def add_method_aliases_like(cls, namespace: dict) -> None:
    """Methods that forward ``*args, **kwargs`` to a function of ``namespace`` of the same name
    (and their in-place ``name_`` forms) take the aliases of that function's parameters."""
    for key, fn in list(namespace.items()):
        if key.startswith("_") or not inspect.isfunction(fn):
            continue
        for name in (key, key + "_"):
            method = vars(cls).get(name)
            if inspect.isfunction(method):
                wrapped = with_aliases(method, like=fn)
                if wrapped is not method:
                    setattr(cls, name, wrapped)
