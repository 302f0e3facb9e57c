"""Every traced op case (tests/test_trace_ops.py CASES) and every gradient case
(tests/test_trace_grads.py GRAD_CASES, through ``tracejit.grad``), fused and lowered with
``target="cuda"``: each generated kernel compiles to PTX for cc (9, 0) with no unresolved
extern, nothing left out of line, and no float32 math widened to float64 (tests/cuda/ptx.py).

The cases share most kernels, so kernels are deduplicated by their source text (the name
aside) and signature, and each unique kernel is compiled once. That is still ~3000 kernels
(~0.1-0.3 s each), so the default run compiles a deterministic sample: a greedy cover of every
(IR op, row or flat kernel, dtype) that any unique kernel exercises (``sample``, ~220
kernels); ``-m slow`` compiles every one. Every case must lower."""

from __future__ import annotations

import functools
import os
import re

import numpy as np
import pytest

pytest.importorskip("numba_cuda")

import tracejit as tj  # noqa: E402
from tracejit.passes.fuse import fuse  # noqa: E402

from .programs import check_ptx, kernel_sources, lower_cuda  # noqa: E402


def _graphs(ids=None):
    """(case id, graph, input arrays) for every op case that traces and every gradient case
    (``grad-<id>``), or only those in ``ids``."""
    from tests.test_trace_grads import GRAD_CASES, _leaf_args, _weighted_sum
    from tests.test_trace_ops import CASES, _make, _seed

    for case in CASES:
        if ids is not None and case.id not in ids:
            continue
        _seed(case)
        args = _make(case)
        traced = tj.trace(case.fn, backend="interpret")
        try:
            graph = traced.graph(*args)
        except Exception:  # the op refuses these operands (may_raise cases)
            continue
        yield case.id, graph, _inputs(traced, args)
    for case in GRAD_CASES:
        if ids is not None and f"grad-{case.id}" not in ids:
            continue
        args = _leaf_args(case)
        nums = tuple(i for i, a in enumerate(args) if isinstance(a, tj.Tensor) and
                     a.requires_grad)
        _seed(case)
        try:
            _, weights = _weighted_sum(case.fn(*args))
        except RuntimeError:
            continue
        if weights is None:
            continue

        def scalar(*xs, case=case, weights=weights):
            return _weighted_sum(case.fn(*xs), weights)[0]
        _seed(case)
        inputs = [a.detach() if isinstance(a, tj.Tensor) else a for a in args]
        traced = tj.grad(scalar, argnums=nums, backend="interpret")
        try:
            graph = traced.graph(*inputs)
        except Exception:
            continue
        yield f"grad-{case.id}", graph, _inputs(traced, inputs)


def _inputs(traced, args) -> list:
    """The arrays a traced graph takes: the tensor arguments, then the captured tensors (the
    weights of tracejit.grad's loss, ...)."""
    spec = traced.specs()[0]
    return [a._data for a in args if isinstance(a, tj.Tensor)] + \
        [c.tensor._data for c in spec.captured]


@functools.lru_cache(maxsize=None)
def unique_kernels() -> tuple:
    """((text, signature) -> (case id, kernel name, program)), lowering failures)."""
    saved = os.environ.get("TRACEJIT_BACKEND")
    os.environ["TRACEJIT_BACKEND"] = "interpret"
    tj.set_mode("trace")
    kernels, failures = {}, []
    try:
        for case_id, graph, _ in _graphs():
            try:
                program = lower_cuda(fuse(graph))
            except Exception as e:
                failures.append(f"{case_id}: {type(e).__name__}: {e}")
                continue
            for name, (text, sig) in kernel_sources(program).items():
                key = (re.sub(r"def \w+\(", "def kernel(", text, count=1), sig)
                kernels.setdefault(key, (case_id, name, program))
    finally:
        if saved is None:
            os.environ.pop("TRACEJIT_BACKEND", None)
        else:
            os.environ["TRACEJIT_BACKEND"] = saved
    return kernels, failures


def _ops_line(text: str) -> str:
    """The kernel's op comment (``# add relu: ...`` -> ``add relu``), or its first line."""
    m = re.search(r"^    # ([^:]*):", text, re.MULTILINE)
    return m.group(1) if m else text.split("\n")[2]


def _covers(text: str, sig, by_dtype: bool) -> set:
    """What a kernel exercises: (IR op, row kernel or not, dtype) for each op it computes and
    each dtype among its arrays (without ``by_dtype``: the dtype kind, float or not)."""
    form = "row" if "one block per row" in text else "flat"
    dtypes = {s[0] if by_dtype else s[0].startswith("float") for s in sig if s != "int64"}
    return {(op, form, dt) for op in _ops_line(text).split() for dt in dtypes}


@functools.lru_cache(maxsize=None)
def sample(by_dtype: bool = True) -> list:
    """The default run's kernels: a greedy cover of every (op, form, dtype) any unique kernel
    exercises, in case order (deterministic); 221 of 3332 kernels (``by_dtype=False``: float
    or not instead of the dtype)."""
    kernels, _ = unique_kernels()
    items = [(_covers(text, sig, by_dtype), where) for (text, sig), where in kernels.items()]
    wanted = set().union(*(c for c, _ in items))
    covered, picked = set(), []
    while covered != wanted:
        best = max(items, key=lambda item: len(item[0] - covered))  # first of the best
        picked.append(best[1])
        covered |= best[0]
    return picked


def _compile(items) -> None:
    by_program: dict = {}
    for case_id, name, program in items:
        by_program.setdefault(id(program), (program, []))[1].append((case_id, name))
    errors = []
    for program, names in by_program.values():
        try:
            check_ptx(program, {n for _, n in names})
        except Exception as e:
            errors.append(f"{names[0][0]} ({', '.join(n for _, n in names)}): "
                          f"{type(e).__name__}: {str(e)[:400]}")
    assert not errors, f"{len(errors)} programs failed:\n" + "\n".join(errors[:20])


def test_every_case_lowers_for_cuda():
    kernels, failures = unique_kernels()
    assert not failures, "\n".join(failures[:20])
    assert len(kernels) > 1000


def test_sampled_kernels_compile_to_ptx():
    _compile(sample())


@pytest.mark.slow
def test_every_unique_kernel_compiles_to_ptx():
    kernels, _ = unique_kernels()
    _compile(list(kernels.values()))


def test_generated_row_reductions_use_warp_shuffles():
    # the PTX of a real-GPU build reduces with shfl; the simulator build takes the tree
    from tests.cuda import ptx

    from .programs import fused_graph, module_namespace, numba_types

    program = lower_cuda(fused_graph(lambda x: x.softmax(-1), tj.randn(4, 8)))
    ns = module_namespace(program.source)
    (name, sig), = program.signatures.items()
    text, _ = ptx.compile_ptx(ns[name].py_func, numba_types(sig))
    assert "shfl.sync.down" in text
    assert np.dtype("float32").name in str(sig)


def test_two_stage_full_reductions_compile_to_ptx():
    # the op cases are too small for two stages (codegen.cuda.TWO_STAGE_MIN)
    from .programs import fused_graph

    x = tj.randn(300, 300)
    program = lower_cuda(fused_graph(lambda x: ((x * x).sum() / 3, x.amax(),
                                                (x.long() // 2).sum()), x))
    assert {"k0_mul_sum_div_part", "k0_mul_sum_div"} <= set(program.signatures)
    assert "L0a = k0_mul_sum_div_part[PARTIALS, ROW_THREADS]" in program.source
    check_ptx(program)


def test_row_kernels_writing_extra_outputs_compile_to_ptx():
    # the vector exports are written by the thread that visits the element, the row scalars by
    # thread 0; a full reduction that writes its summand is not two-stage (stage 1 has no
    # outputs) but one block
    from .programs import fused_graph
    from .sim_cases import full_sum_export, row_exports

    program = lower_cuda(fused_graph(row_exports, tj.randn(2, 3, 7)))
    (name,) = program.signatures
    src = program.source
    assert "out3[i0, i1, i2] = v" in src and "out4[i0, i1, i2] = v" in src
    assert "        if t == 0:\n            out2[i0, i1, 0] = r" in src
    check_ptx(program)
    program = lower_cuda(fused_graph(full_sum_export, tj.randn(300, 300)))
    assert not any(k.endswith("_part") for k in program.signatures)
    assert "out2[i0, i1] = v" in program.source
    check_ptx(program)
