"""Pytrees: arguments and results are nested tuples/lists/dicts/namedtuples of tensors and
Python values. ``flatten`` gives their leaves and a hashable description of the structure (part
of the specialization key); ``unflatten`` builds a result of the same structure again.
"""

from __future__ import annotations

from ..tensor import Tensor

_LEAF = "*"


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


def leaf_names(tree, params: list) -> list:
    """Readable names of the leaves of ``flatten((args, kwargs))``: ``params`` (the positional
    parameter names of the signature) or keyword names, plus paths into containers; made into
    identifiers (``batch[0]`` -> ``batch_0``), as graph inputs are named after them."""
    names: list = []
    (_, (args_tree, kwargs_tree)) = tree
    for i, c in enumerate(args_tree[1]):
        _walk_names(c, params[i] if i < len(params) else f"arg{i}", names)
    for k, c in kwargs_tree[1]:
        _walk_names(c, k, names)
    return [n.replace("[", "_").replace("]", "").replace("'", "").replace(".", "_")
            if not n.isidentifier() else n for n in names]


def _walk_names(t, name: str, names: list) -> None:
    if t == _LEAF:
        names.append(name)
        return
    if t[0] == "namedtuple":
        for i, c in enumerate(t[2]):
            _walk_names(c, f"{name}.{t[1]._fields[i]}", names)
    elif t[0] == "dict":
        for k, c in t[1]:
            _walk_names(c, f"{name}[{k!r}]", names)
    else:
        for i, c in enumerate(t[1]):
            _walk_names(c, f"{name}[{i}]", names)


_PLAIN_KEYS = (str, int, float, bool, type(None))


def plain(tree):
    """``tree`` as plain data (for a ``CompiledGraph``): a namedtuple's class becomes its
    qualified name and field names, a dict key that is not a str/number/bool/None its repr.
    ``unflatten`` needs the live tree (it calls the namedtuple classes); this one describes."""
    if tree == _LEAF:
        return _LEAF
    kind = tree[0]
    if kind == "namedtuple":
        cls = tree[1]
        return ("namedtuple", f"{cls.__module__}.{cls.__qualname__}", tuple(cls._fields),
                tuple(plain(c) for c in tree[2]))
    if kind == "dict":
        return ("dict", tuple((k if type(k) in _PLAIN_KEYS else repr(k), plain(c))
                              for k, c in tree[1]))
    return (kind, tuple(plain(c) for c in tree[1]))
