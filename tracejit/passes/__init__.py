"""Graph passes. Each is a function ``Graph -> Graph`` in its own module; ``PIPELINE`` is the
order they run in after tracing.

``TRACEJIT_DEBUG=passes`` prints the graph after each step; ``verify_each=True`` (or
``TRACEJIT_VERIFY=1``, which the test suite sets) runs the verifier between all of them.
"""

from __future__ import annotations

import os
import sys

from .cse import cse
from .dce import dce
from .fold import fold
from .simplify import simplify
from .verify import IRError, verify

PIPELINE = [
    ("verify", verify),
    ("fold", fold),
    ("simplify", simplify),
    ("cse", cse),
    ("dce", dce),
    ("verify", verify),
]


def run_pipeline(graph, passes=None, debug: bool = False, verify_each: bool | None = None):
    """Run ``passes`` (default ``PIPELINE``: a list of ``(name, fn)``) over ``graph``."""
    if verify_each is None:
        verify_each = os.environ.get("TRACEJIT_VERIFY", "") not in ("", "0")
    for name, fn in PIPELINE if passes is None else passes:
        graph = fn(graph)
        if verify_each and fn is not verify:
            verify(graph, after=name)
        if debug:
            print(f"tracejit: after {name} ({len(graph.nodes)} nodes)\n{graph}", file=sys.stderr)
    return graph


__all__ = ["PIPELINE", "run_pipeline", "verify", "fold", "simplify", "cse", "dce", "IRError"]
