"""``TRACEJIT_DEBUG=graph,passes,src,recompiles``: what to print, and where."""

from __future__ import annotations

import os
import sys


def debug_enabled(topic: str) -> bool:
    """Is ``topic`` listed in ``TRACEJIT_DEBUG`` (comma separated: graph, passes, recompiles)?"""
    flags = os.environ.get("TRACEJIT_DEBUG", "")
    return topic in (f.strip() for f in flags.split(",")) or flags.strip() == "all"


def _debug_print(text: str) -> None:
    print(text, file=sys.stderr)
