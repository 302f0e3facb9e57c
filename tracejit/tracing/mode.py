"""Modes: ``set_mode("eager")`` (process-wide), ``with tracejit.eager():`` (this thread or
asyncio task) and ``TRACEJIT_DISABLE=1`` make traced functions run op by op.

NOTE: kept as one block on purpose: it moves to ``tracejit/dispatch.py`` as it is.
"""

from __future__ import annotations

import contextvars
import os

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
