"""Runtime: the IR interpreter, compile cache, executor and export (installed as
``tracejit.runtime``). These arrive with tracing and the compiler; nothing here yet."""
