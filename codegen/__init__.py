"""Code generation (installed as ``tracejit.codegen``): ``cpu`` lowers a fused graph to numba
source (a kernel per fused group, ``cpu_nodes`` one per unfold/fold/argmax/gather/scatter_add
node, and an entry function); ``prelude`` and ``mathlib`` are the scalar helpers it calls."""
