"""Tracing: ``@tracejit.trace`` records a function's ops into a Graph on its first call per input
signature, then runs the graph on later calls (see ``front.py`` and docs/tracing.md).

The package, front to back:

- ``front.py``: ``trace`` and ``TracedFunction``, the callable it returns (fast path, lookup,
  tracing a new specialization, compiling it, running it);
- ``tracer.py``: ``Tracer``, which records ops into a graph, and ``Captured`` tensors;
- ``capture.py``: where captured tensors come from (``discover_sources``, ``Source``) and the
  guards on Python values the function reads (``guard_python_values``);
- ``watch.py``: refusing Python state the graph cannot see (random draws, clocks, files);
- ``pytree.py``: ``flatten`` / ``unflatten`` of nested arguments and results;
- ``compiled.py``: ``CompiledGraph``, what one trace produced, as plain data;
- ``specializations.py``: ``Specialization`` (a CompiledGraph plus the live parts that run it),
  the list of them per argument key, and why a call traced again;
- ``backward.py``: the joint forward+backward graph of a specialization, partitioned, for
  compiled gradients (run by ``runtime/backward.py``);
- ``mode.py``: eager mode switches; ``debug.py``: ``TRACEJIT_DEBUG``.
"""

from ..runtime.executor import write_back
from .capture import NumberSource, Source, discover_sources, dynamic, guard_python_values
from .compiled import CompiledGraph, GuardSpec, InputSpec, OutputSpec
from .debug import debug_enabled
from .front import TracedFunction, trace
from .mode import eager, get_mode, set_mode
from .pytree import flatten, unflatten
from .specializations import CacheInfo, Specialization, Specializations
from .tracer import Captured, Tracer

__all__ = [
    "CacheInfo", "Captured", "CompiledGraph", "GuardSpec", "InputSpec", "NumberSource",
    "OutputSpec", "Source", "Specialization", "Specializations", "TracedFunction", "Tracer",
    "debug_enabled", "discover_sources", "dynamic", "eager", "flatten", "get_mode",
    "guard_python_values", "set_mode", "trace", "unflatten", "write_back",
]
