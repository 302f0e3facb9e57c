"""Typed checks of an export's untrusted manifest: every field ``Loaded`` reads goes through
here first, so a hostile value ends as ``ExportError`` naming where, never as another error
later."""

from __future__ import annotations

from .. import serialize
from ..tracing.pytree import _LEAF
from .build import IR_SCHEMA
from .format import DTYPES, VERSION, ExportError


class Check:
    """Typed access to untrusted manifest data, errors naming where."""

    def __init__(self, path: str):
        self.path = path

    def field(self, d, key, types, where):
        if not isinstance(d, dict) or key not in d:
            raise ExportError(f"{self.path}: manifest {where}: missing field {key!r}")
        return self.typed(d[key], types, f"{where}.{key}")

    def typed(self, x, types, where):
        # a bool is an int to isinstance: it passes only where asked for (or anything is)
        if not isinstance(x, types) or (isinstance(x, bool) and not {bool, object} & set(types)):
            raise ExportError(f"{self.path}: manifest {where}: expected "
                              f"{' or '.join(t.__name__ for t in types)}, got {x!r:.80}")
        return x

    def shape(self, x, where):
        self.typed(x, (list,), where)
        if any(type(n) is not int or n < 0 for n in x):
            raise ExportError(f"{self.path}: manifest {where}: bad shape {x!r:.80}")
        return tuple(x)

    def dtype(self, x, where):
        dt = DTYPES.get(x) if isinstance(x, str) else None
        if dt is None:
            raise ExportError(f"{self.path}: manifest {where}: unknown dtype {x!r:.40}")
        return dt

    def value(self, x, where):
        try:
            return serialize.value_from_data(x, where=where)
        except serialize.SerializeError as e:
            raise ExportError(f"{self.path}: manifest {e}") from None


def check_versions(path: str, manifest: dict) -> None:
    """Refuse a newer major version of the container or of the IR schema (both numbers in the
    message); older and newer minors load (a minor only ever adds what old readers ignore)."""
    c = Check(path)
    version = c.field(manifest, "version", (int,), "")
    if version > VERSION or version < 1:
        raise ExportError(f"{path}: export format version {version} is newer than this tracejit "
                          f"reads (version {VERSION}); upgrade tracejit to load it")
    ir = c.field(manifest, "ir", (dict,), "")
    if c.field(ir, "name", (str,), "ir") != IR_SCHEMA["name"]:
        raise ExportError(f"{path}: the graphs are {ir['name']!r}, not {IR_SCHEMA['name']!r}")
    major = c.field(ir, "major", (int,), "ir")
    c.field(ir, "minor", (int,), "ir")
    if major > IR_SCHEMA["major"] or major < 1:
        raise ExportError(f"{path}: IR schema {major}.{ir['minor']} is newer than this tracejit "
                          f"reads ({IR_SCHEMA['major']}.{IR_SCHEMA['minor']}); upgrade tracejit")


def tree_leaves(t, c: Check, where: str, depth: int = 0) -> int:
    """The number of leaves of a plain tree, or an ExportError if it is not one."""
    def bad():
        return ExportError(f"{c.path}: manifest {where}: not an argument/result structure")

    if t == _LEAF:
        return 1
    if depth > 100 or not isinstance(t, tuple) or not t:
        raise bad()
    kind = t[0]
    if kind in ("tuple", "list") and len(t) == 2 and isinstance(t[1], tuple):
        return sum(tree_leaves(x, c, where, depth + 1) for x in t[1])
    if kind == "dict" and len(t) == 2 and isinstance(t[1], tuple) and all(
            isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], (str, int, float, bool))
            for kv in t[1]):
        return sum(tree_leaves(v, c, where, depth + 1) for _, v in t[1])
    if kind == "namedtuple" and len(t) == 4 and isinstance(t[1], str) and isinstance(
            t[2], tuple) and all(isinstance(f, str) and f.isidentifier() for f in t[2]) and \
            isinstance(t[3], tuple) and len(t[3]) == len(t[2]) and \
            all(p.isidentifier() for p in t[1].split(".") if p != "<locals>"):
        return sum(tree_leaves(x, c, where, depth + 1) for x in t[3])
    raise bad()


def check_dynamic(d, entry, c: Check, where):
    if d is None:
        return None
    where = f"{where}.dynamic"
    names = {name for name, kind, *_ in entry.inputs if kind == "argument"}
    symbols = c.field(d, "symbols", (dict,), where)
    for n in symbols.values():
        if c.typed(n, (int,), f"{where}.symbols") < 1:
            raise ExportError(f"{entry.where}: a symbolic size's example is {n}")
    dims = c.field(d, "dims", (list,), where)
    for item in dims:
        c.typed(item, (list,), f"{where}.dims")
        ok = len(item) == 3 and isinstance(item[0], str) and item[0] in names and \
            type(item[1]) is int and isinstance(item[2], str) and item[2] in symbols
        if ok:
            shape = next(s for n, k, p, s, _ in entry.inputs if n == item[0])
            ok = 0 <= item[1] < len(shape)
        if not ok:
            raise ExportError(f"{entry.where}: malformed dynamic dim {item!r:.80}")
    for sub in c.field(d, "substitutions", (list,), where):
        c.typed(sub, (list,), f"{where}.substitutions")
        ok = len(sub) == 5 and isinstance(sub[0], list) and sub[0] and all(
            type(p) in (str, int) for p in sub[0]) and isinstance(sub[1], str) and \
            sub[1] in symbols and \
            sub[2] in ("affine", "mul", "div", "fill") and all(
            type(x) in (int, float) for x in sub[3:]) and (
            sub[2] != "affine" or all(type(x) is int for x in sub[3:]))
        if not ok:
            raise ExportError(f"{entry.where}: malformed dynamic substitution {sub!r:.80}")
        _check_path(entry, sub[0])
    return d


def _check_path(entry, path):
    """A substitution may only replace a number that is there (never add structure)."""
    target = entry.graph_dict
    for p in path:
        ok = (isinstance(target, dict) and isinstance(p, str) and p in target) or (
            isinstance(target, list) and type(p) is int and 0 <= p < len(target))
        if not ok:
            raise ExportError(f"{entry.where}: dynamic substitution path {path!r:.80} is not in "
                              f"the graph")
        target = target[p]
    if type(target) not in (int, float) and not (path[-1] == "data" and isinstance(target, str)):
        raise ExportError(f"{entry.where}: dynamic substitution at {path!r:.80} replaces a "
                          f"non-number")
