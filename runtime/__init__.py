"""Runtime (installed as ``tracejit.runtime``): ``interpret`` (the reference backend),
``compile`` and ``cache`` (generated modules and their machine code on disk), ``executor`` (runs a
specialization), ``memory`` (buffers and the caching allocator) and ``backward`` (compiled
gradients of traced functions called from eager code)."""
