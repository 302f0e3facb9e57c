"""Exceptions, and the helper that finds the user's own source line for messages."""

from __future__ import annotations

import os
import sys

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_DIRS = tuple(os.path.join(_PKG_DIR, d) + os.sep for d in ("tracejit", "codegen", "runtime"))


class ShapeError(RuntimeError, ValueError):
    """Operand shapes do not fit an op (a RuntimeError like torch's, and a ValueError)."""


class DTypeError(TypeError, RuntimeError):
    """Operand dtypes do not fit an op."""


class TraceError(RuntimeError):
    """Python that cannot be captured in a traced function (data-dependent control flow, ...)."""


def _is_own(filename: str) -> bool:
    return filename.startswith(_OWN_DIRS)


def user_location(skip: int = 1):
    """``(filename, lineno)`` of the innermost frame outside tracejit, or None."""
    f = sys._getframe(skip)
    while f is not None and _is_own(f.f_code.co_filename):
        f = f.f_back
    return None if f is None else (f.f_code.co_filename, f.f_lineno)


def user_frame(skip: int = 1) -> str:
    """``"\\n  at file.py:12: source"`` for the innermost frame outside tracejit, or ''."""
    f = sys._getframe(skip)
    while f is not None and _is_own(f.f_code.co_filename):
        f = f.f_back
    if f is None:
        return ""
    import linecache
    line = linecache.getline(f.f_code.co_filename, f.f_lineno).strip()
    return f"\n  at {f.f_code.co_filename}:{f.f_lineno}: {line}"
