"""Graph passes. Each is a function ``Graph -> Graph`` in its own module; ``PIPELINE`` is the
order they run in after tracing, ``COMPILE_PIPELINE`` what runs before lowering to kernels.

``TRACEJIT_DEBUG=passes`` prints the graph after each step; ``verify_each=True`` (or
``TRACEJIT_VERIFY=1``, which the test suite sets) runs the verifier between all of them.
"""

from __future__ import annotations

import os
import sys

from .cse import cse
from .dce import dce
from .fold import fold
from .fuse import fuse
from .simplify import simplify
from .verify import IRError, verify

# (name, pass, why): what runs after tracing, on every backend
PIPELINE = [
    ("verify", verify, "the traced graph is well formed (SSA, shapes, dtypes)"),
    ("fold", fold, "nodes whose inputs are all constants become constants"),
    ("simplify", simplify, "algebraic identities: x * 1, x ** 2 -> x * x, identity reductions"),
    ("cse", cse, "one node per distinct computation"),
    ("dce", dce, "nodes no output needs go (impure ones stay)"),
    ("verify", verify, "the passes kept the graph well formed"),
]

# what runs before a graph is lowered to kernels (codegen.lower then plans kernels, the entry
# and memory: codegen.LOWERING)
COMPILE_PIPELINE = [
    ("fuse", fuse, "elementwise chains and row reductions become one node each: one kernel"),
    ("verify", verify, "fusion kept the graph well formed (fused nodes included)"),
]


def run_pipeline(graph, passes=None, debug: bool = False, verify_each: bool | None = None):
    """Run ``passes`` (default ``PIPELINE``: a list of ``(name, fn)`` or ``(name, fn, why)``)
    over ``graph``."""
    if verify_each is None:
        verify_each = os.environ.get("TRACEJIT_VERIFY", "") not in ("", "0")
    for name, fn, *why in PIPELINE if passes is None else passes:
        graph = fn(graph)
        if verify_each and fn is not verify:
            verify(graph, after=name)
        if debug:
            reason = f": {why[0]}" if why else ""
            print(f"tracejit: after {name}{reason} ({len(graph.nodes)} nodes)\n{graph}",
                  file=sys.stderr)
    return graph


__all__ = ["PIPELINE", "COMPILE_PIPELINE", "run_pipeline", "verify", "fold", "simplify", "cse",
           "dce", "fuse", "IRError"]
