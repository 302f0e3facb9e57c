"""Rebuilding argument and result structures from their plain description (``pytree.plain``)
without running anything the file names."""

from __future__ import annotations

import operator

from ..tracing.pytree import _LEAF


def build_tree(t, it):
    """Results in the exported structure (tuples, lists, dicts; a namedtuple as its class when
    that is already imported, else a tuple class of the same name and fields, made without
    exec so nothing named by the file runs)."""
    if t == _LEAF:
        return next(it)
    kind = t[0]
    if kind == "namedtuple":
        return _namedtuple(t[1], t[2])(*[build_tree(c, it) for c in t[3]])
    if kind == "dict":
        return {k: build_tree(c, it) for k, c in t[1]}
    items = [build_tree(c, it) for c in t[1]]
    return tuple(items) if kind == "tuple" else items


_NAMEDTUPLES: dict = {}


def _namedtuple(qualname: str, fields: tuple):
    key = (qualname, fields)
    cls = _NAMEDTUPLES.get(key) or _imported_namedtuple(qualname, fields)
    if cls is None:
        name = qualname.rsplit(".", 1)[-1]
        body = {f: property(operator.itemgetter(i)) for i, f in enumerate(fields)}
        body.update(_fields=fields, __slots__=(),
                    __new__=lambda c, *args: tuple.__new__(c, args),
                    __repr__=lambda self: f"{name}(" + ", ".join(
                        f"{f}={v!r}" for f, v in zip(fields, self)) + ")")
        cls = _NAMEDTUPLES[key] = type(name, (tuple,), body)
    return cls


def _imported_namedtuple(qualname: str, fields: tuple):
    """The class itself when its module is already imported (tracejit.return_types, or the
    user's): looked up in ``sys.modules`` only, never imported, and only a namedtuple class
    with exactly these fields is taken."""
    import sys

    module, _, path = qualname.rpartition(".")
    while module and module not in sys.modules:  # a nested class: Outer.Inner
        module, _, head = module.rpartition(".")
        path = f"{head}.{path}"
    obj = sys.modules.get(module)
    for part in path.split("."):
        obj = obj.__dict__.get(part) if obj is not None and hasattr(obj, "__dict__") else None
    if isinstance(obj, type) and issubclass(obj, tuple) and \
            getattr(obj, "_fields", None) == tuple(fields):
        _NAMEDTUPLES[(qualname, tuple(fields))] = obj
        return obj
    return None
