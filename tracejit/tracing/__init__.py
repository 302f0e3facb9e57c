"""Tracing (``@tracejit.trace``): see ``front.py``."""

from .front import (
                    CacheInfo,
                    Captured,
                    Source,
                    Specialization,
                    TracedFunction,
                    Tracer,
                    debug_enabled,
                    discover_sources,
                    eager,
                    flatten,
                    get_mode,
                    guard_python_values,
                    set_mode,
                    trace,
                    unflatten,
                    write_back,
)

__all__ = ["CacheInfo", "Captured", "Source", "Specialization", "TracedFunction", "Tracer",
           "debug_enabled", "discover_sources", "eager", "flatten", "get_mode",
           "guard_python_values", "set_mode", "trace", "unflatten", "write_back"]
