"""The CUDA renderer's source, without a GPU or the simulator: kernels named after their
groups with the IR nodes in comments, the launch list configured once in build(), host round
trips marked (or NotImplementedError without them), the CPU target untouched, and tracejit's
own error when no GPU can run a compiled graph."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
import tracejit.cuda
from tracejit.codegen import TARGETS, lower

from .programs import fused_graph

pytest.importorskip("numba_cuda")


def test_cuda_is_a_registered_target():
    assert TARGETS["cuda"].name == "cuda"


def test_source_names_groups_and_nodes_and_configures_launches_once():
    x, b = tj.randn(64, 32), tj.randn(32)
    program = lower(fused_graph(lambda x, b: ((x + b).relu() * 2).softmax(-1), x, b),
                    target="cuda")
    src = program.source
    (name,) = program.kernels
    assert name.startswith("k") and f"def {name}(" in src and "@cuda.jit(cache=True)" in src
    assert "# add relu mul amax detach sub exp sum div:" in src  # the nodes, by op
    build, entry = src.split("def build(")[1].split("    def entry(")
    assert f"L0 = {name}[row_grid(sz[0]), ROW_THREADS]" in build  # made once per sizes
    assert "L0(in0, in1, " in entry and f"{name}[" not in entry  # the call only launches
    assert "block_amax_f32" in src and "block_sum_f32" in src
    assert program.sizes[0] == 64 and program.host_round_trips == []


def test_a_node_without_kernel_is_a_marked_host_round_trip_or_not_implemented():
    x = tj.randn(4, 3)
    graph = fused_graph(lambda x: x.cumsum(0) + 1, x)
    program = lower(graph, target="cuda")
    assert "HOST ROUND TRIP" in program.source and program.host_round_trips == ["cumsum"]
    with pytest.raises(NotImplementedError, match=r"cumsum .*CPU backend"):
        lower(graph, target="cuda", host_fallback=False)


def test_integer_division_counts_zero_divisors_for_the_entry_to_raise():
    x = tj.arange(6)
    program = lower(fused_graph(lambda x, y: x // y, x, x + 1), target="cuda")
    assert "cuda.atomic.add(flags, 0, 1)" in program.source
    assert "rt.raise_flagged(flags, errors)" in program.source
    assert "integer division by zero" in program.source


def test_matmul_is_cublas_or_the_tiled_kernel():
    a, b = tj.randn(8, 16), tj.randn(16, 4)
    program = lower(fused_graph(lambda a, b: a @ b, a, b), target="cuda")
    assert "matmul_f32" in program.kernels
    assert "rt.matmul_launcher(matmul_f32" in program.source


@pytest.mark.skipif(tracejit.cuda.is_available(), reason="a GPU is present")
def test_running_without_a_gpu_raises_tracejits_error():
    from tracejit.runtime.cuda_runner import compile_cuda

    program = lower(fused_graph(lambda x: x + 1, tj.randn(3)), target="cuda")
    with pytest.raises(tracejit.cuda.CudaUnavailableError, match="running a compiled graph"):
        compile_cuda(program)
    assert np.isfinite(program.sizes).all()
