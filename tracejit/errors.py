"""Exceptions, and the helpers that find the user's own source line for messages.

Every error a user can meet names the op, the operand shapes and the user's line
(``user_frame()``). The user's line is the innermost frame outside tracejit's own packages and
outside generated modules (``tj_<hash>`` in the compile cache); while a graph runs node by node
(``enter_node``) it is the line that created the node instead, since the Python frames then only
show where the traced function was called.
"""

from __future__ import annotations

import contextvars
import linecache
import os
import re
import sys

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_DIRS = tuple(os.path.join(_PKG_DIR, d) + os.sep for d in ("tracejit", "codegen", "runtime"))
_GENERATED = re.compile(r"tj_[0-9a-f]{32}\Z")  # runtime.cache.entry_name


class ShapeError(RuntimeError, ValueError):
    """Operand shapes do not fit an op (a RuntimeError like torch's, and a ValueError)."""


class DTypeError(TypeError, RuntimeError):
    """Operand dtypes do not fit an op."""


class TraceError(RuntimeError):
    """Python that cannot be captured in a traced function (data-dependent control flow, ...)."""


class GraphRuntimeError(RuntimeError):
    """An op failed while running a graph (compiled or interpreted); names the IR node and the
    user line that created it. Raised as a subclass that is also the original error's type, so
    ``except IndexError`` catches an out-of-range index in compiled code as it does eagerly."""

    _base = None  # the original error's type, for the subclasses graph_error makes

    def __reduce__(self):  # the subclasses are made at run time: pickle them by their base
        return _rebuild_graph_error, (self._base, self.args)


_graph_error_types: dict = {}


def graph_error_type(base: type | None) -> type:
    """``GraphIndexError`` for IndexError: a GraphRuntimeError that is also a ``base``; plain
    GraphRuntimeError where no such class can exist (a base with its own constructor)."""
    if base is None or not issubclass(base, Exception):
        return GraphRuntimeError
    if issubclass(base, GraphRuntimeError):
        return base
    cls = _graph_error_types.get(base)
    if cls is None:
        try:
            cls = type(f"Graph{base.__name__}", (GraphRuntimeError, base),
                       {"__module__": __name__, "__doc__": GraphRuntimeError.__doc__,
                        "_base": base})
            cls("probe")
        except Exception:
            cls = GraphRuntimeError
        _graph_error_types[base] = cls
    return cls


def _rebuild_graph_error(base, args):
    return graph_error_type(base)(*args)


def graph_error(message: str, cause: BaseException) -> GraphRuntimeError:
    """A GraphRuntimeError with ``message`` that is also an instance of ``type(cause)`` where
    that is possible (see ``graph_error_type``)."""
    return graph_error_type(type(cause))(message)


def _is_own(filename: str) -> bool:
    return filename.startswith(_OWN_DIRS)


def _skipped(f) -> bool:
    """A frame of tracejit itself or of a generated module: never the user's."""
    return _is_own(f.f_code.co_filename) or bool(_GENERATED.match(f.f_globals.get("__name__", "")))


# "file:line" of the graph node running now (see enter_node); per thread, as the tracer slot
_NODE_LOC: contextvars.ContextVar = contextvars.ContextVar("tracejit.node_loc", default=None)


def enter_node(loc: str | None):
    """While a graph node runs, errors point at the line that created it (``node.loc``):
    ``token = enter_node(node.loc)``, run the node, then ``exit_node(token)`` (in a finally).
    Two calls rather than a ``with`` block: graphs replayed op by op pay it once per node."""
    return _NODE_LOC.set(loc or None)


exit_node = _NODE_LOC.reset


def _split_loc(loc: str):
    filename, _, line = loc.rpartition(":")
    return (filename, int(line)) if line.isdigit() and filename else None


def _user_and_callee(skip: int):
    """The innermost user frame above ``sys._getframe(skip)``, and the tracejit frame it called
    (None when the user frame is the one given)."""
    f, callee = sys._getframe(skip), None
    while f is not None and _skipped(f):
        callee, f = f, f.f_back
    return f, callee


def user_location(skip: int = 1):
    """``(filename, lineno)`` of the innermost frame outside tracejit, or None."""
    loc = _NODE_LOC.get()
    if loc is not None:
        return _split_loc(loc)
    f, _ = _user_and_callee(skip + 1)
    return None if f is None else (f.f_code.co_filename, f.f_lineno)


def format_location(filename: str, lineno: int, prefix: str = "at") -> str:
    """``"\\n  at file.py:12: source"``."""
    line = linecache.getline(filename, lineno).strip()
    return f"\n  {prefix} {filename}:{lineno}: {line}" if line else \
        f"\n  {prefix} {filename}:{lineno}"


def user_frame(skip: int = 1) -> str:
    """``"\\n  at file.py:12: source"`` for the innermost frame outside tracejit, or ''.
    While a graph node runs (``enter_node``): ``"\\n  created at file.py:12: source"``, the line
    that created the node."""
    node_loc = _NODE_LOC.get()
    if node_loc is not None:
        loc = _split_loc(node_loc)
        return format_location(*loc, prefix="created at") if loc else \
            f"\n  created at {node_loc}"
    f, _ = _user_and_callee(skip + 1)
    return "" if f is None else format_location(f.f_code.co_filename, f.f_lineno)


def called_as(op: str, skip: int = 1) -> str:
    """``op``, or ``"cross_entropy: gather"`` when the user called a higher function of
    tracejit (``F.cross_entropy``, ``x.softmax``, a module) that failed in primitive ``op``:
    the prefix of a message, read as a call chain (``softmax: amax: dimension 3 ...``)."""
    if _NODE_LOC.get() is not None:
        return op
    _, callee = _user_and_callee(skip + 1)
    if callee is None or _GENERATED.match(callee.f_globals.get("__name__", "")):
        return op
    name = callee.f_code.co_name
    if name == "__call__" and "self" in callee.f_locals:  # a module: name its class
        name = type(callee.f_locals["self"]).__name__
    if name.startswith("_") or name == op or not name.isidentifier():
        return op
    return f"{name}: {op}"


def has_location(message: str) -> bool:
    """Does ``message`` already end in a user line (``user_frame``)?"""
    return "\n  at " in message or "\n  created at " in message


def with_location(message: str, skip: int = 1) -> str:
    """``message`` followed by the user's line, unless it already names one."""
    return message if has_location(message) else message + user_frame(skip + 1)
