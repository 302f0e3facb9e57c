"""Code generation: fused IR groups to numba source for the CPU and CUDA (installed as
``tracejit.codegen``). The lowering arrives with the compiler work; nothing here yet."""
