"""Generated CUDA Programs as tests use them: lowered from traced functions, their kernels
compiled to PTX (no GPU) from the module's source, or run under the simulator (a child
process: ``run_programs`` is the child side of tests/cuda/test_cuda_sim.py)."""

from __future__ import annotations

import time

import numpy as np

from tests.cuda import ptx


def lower_cuda(graph, **options):
    from tracejit.codegen import lower
    return lower(graph, target="cuda", **options)


def fused_graph(fn, *args):
    """The optimised, fused graph ``tracejit.trace`` would lower for ``args``."""
    import tracejit as tj
    from tracejit.passes.fuse import fuse
    return fuse(tj.trace(fn, backend="interpret").graph(*args))


def numba_types(signature) -> tuple:
    """numba argument types from ``CudaProgram.signatures`` entries (any-layout arrays)."""
    from numba import types
    from numba.np.numpy_support import from_dtype
    return tuple(types.int64 if s == "int64" else
                 types.Array(from_dtype(np.dtype(s[0])), s[1], "A") for s in signature)


def module_namespace(source: str) -> dict:
    """Execute generated source (decorating kernels compiles nothing). numba-cuda's cache needs
    a real file, and PTX is never cached: ``cache=True`` is dropped."""
    namespace = {"__name__": "tj_cuda_ptx_test"}
    source = source.replace("@cuda.jit(cache=True", "@cuda.jit(cache=False")
    exec(compile(source, "<generated cuda>", "exec"), namespace)
    return namespace


def kernel_sources(program) -> dict:
    """name -> (source text of the kernel, signature), for deduplication by text."""
    src = program.source
    out = {}
    for name, sig in program.signatures.items():
        start = src.index(f"def {name}(")
        start = src.rindex("@cuda.jit", 0, start)
        end = src.find("\n\n\n", start)
        out[name] = (src[start:end if end >= 0 else None], sig)
    return out


def check_ptx(program, names=None) -> dict:
    """Compile the kernels of ``program`` (all, or ``names``) to PTX for cc (9, 0) and apply
    ptx.py's checks (no externs, everything inlined, no float32 widened to float64);
    returns name -> seconds."""
    ns = module_namespace(program.source)
    times = {}
    for name, sig in program.signatures.items():
        if names is not None and name not in names:
            continue
        t0 = time.perf_counter()
        text = ptx.check_kernel(ns[name].py_func, numba_types(sig), what=name)
        if _float32_only(sig):
            found = ptx.float64_promotions(text)
            assert not found, f"{name}: float32 math widened to float64: {found[:3]}"
        times[name] = time.perf_counter() - t0
    return times


def _float32_only(sig) -> bool:
    return all(s == "int64" or s[0] != "float64" for s in sig)


# ---------------------------------------------------------------------------- simulator side


def sim_cases() -> dict:
    """name -> (function, args): the representative graphs the simulator runs, tiny."""
    from tests.cuda import sim_cases
    return sim_cases.CASES()


def run_programs(inputs: dict) -> dict:
    """Child side of test_cuda_sim.py: lower each case's fused graph for CUDA, run it under the
    simulator through runtime.cuda_runner, and return its outputs (``<case>.<k>``) and each
    raised error (``<case>.error``: its message as a uint8 array). Inputs: ``<case>.<k>``."""
    import tracejit as tj
    from tracejit.runtime.cuda_runner import compile_cuda

    cases = sim_cases()
    outputs = {}
    for name in sorted(cases):
        fn, args, *trace_args = cases[name]
        arrays = [inputs[f"{name}.{k}"] for k in range(len(args))]
        tensors = [tj.from_numpy(np.array(a)) for a in (trace_args[0] if trace_args else arrays)]
        runner = compile_cuda(lower_cuda(fused_graph(fn, *tensors)))
        try:
            results = runner(*arrays, to_host=True)
        except Exception as e:  # the CPU path's error, compared by the test
            text = f"{type(e).__name__}: {e}"
            outputs[f"{name}.error"] = np.frombuffer(text.encode(), np.uint8)
            continue
        for k, r in enumerate(results):
            if r is not None:
                outputs[f"{name}.{k}"] = np.asarray(r)
    return outputs


def _text(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), np.uint8)


def run_trace_cases(inputs: dict) -> dict:
    """Child side of test_cuda_sim.py's op sweep: for each case id in ``inputs["ids"]`` (text,
    one per line) trace it (tests/test_trace_ops.py, test_trace_grads.py), run the fused graph
    lowered for CUDA under the simulator and through the interpreter, and return both:
    ``<k>.got.<j>`` / ``<k>.want.<j>``, or ``<k>.error`` / ``<k>.want_error`` (text)."""
    import os

    import tracejit as tj
    from tests.cuda.test_cuda_ptx import _graphs
    from tracejit.passes.fuse import fuse
    from tracejit.runtime.cuda_runner import compile_cuda
    from tracejit.runtime.interpret import interpret

    os.environ["TRACEJIT_BACKEND"] = "interpret"
    tj.set_mode("trace")
    ids = bytes(inputs["ids"]).decode().split("\n")
    order = {case_id: k for k, case_id in enumerate(ids)}
    outputs = {}
    for case_id, graph, arrays in _graphs(set(ids)):
        k = order[case_id]
        if len(graph.inputs) != len(arrays):  # captured tensors are inputs too: not ours
            outputs[f"{k}.skipped"] = _text("captured inputs")
            continue
        graph = fuse(graph)
        try:
            want = interpret(graph, [a.copy() for a in arrays])
        except Exception as e:
            outputs[f"{k}.want_error"] = _text(f"{type(e).__name__}: {e}")
            want = None
        try:
            got = compile_cuda(lower_cuda(graph))(*arrays, to_host=True)
        except Exception as e:
            outputs[f"{k}.error"] = _text(f"{type(e).__name__}: {e}")
            continue
        for j, (g, w) in enumerate(zip(got, want or [None] * len(got))):
            if isinstance(g, np.ndarray):
                outputs[f"{k}.got.{j}"] = g
            if isinstance(w, np.ndarray):
                outputs[f"{k}.want.{j}"] = w
    return outputs
