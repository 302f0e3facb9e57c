"""The kernels of eager CUDA ops: an op at its operands' types becomes a one-node graph,
fused (``passes.COMPILE_PIPELINE``), lowered for CUDA and compiled. ``runtime/cuda_eager.py``
caches and runs them; this module sits above the passes and codegen (tests/test_layers.py),
so it registers the builder and the backend when tracejit is imported.

>>> runner = build_runner(ops.OPS["add"], [x_device, 1.0], {})     # doctest: +SKIP
>>> out, = runner(x_device)
"""

from __future__ import annotations

import numpy as np

from . import dispatch, ops
from .ir import GraphBuilder
from .runtime import cuda_eager

__all__ = ["build_runner"]


def build_runner(op, args, attrs):
    """A CudaRunner for ``op`` on ``args`` (device arrays and Python scalars)."""
    from .codegen import lower
    from .passes import COMPILE_PIPELINE, run_pipeline
    from .runtime.cuda_runner import compile_cuda

    device = cuda_eager.is_device_array
    avals = [(tuple(a.shape), a.dtype) if device(a) else a for a in args]
    try:
        shape, dtype = op.infer(avals, **attrs)
    except Exception as e:  # the CPU's message: op, operand shapes, user line
        fakes = [np.broadcast_to(np.zeros((), a.dtype), a.shape) if device(a) else a
                 for a in args]
        raise ops.op_error(op, fakes, attrs, e) from None
    b = GraphBuilder()
    node_args = [b.add_input(f"x{k}", a.shape, a.dtype) if device(a) else a
                 for k, a in enumerate(args)]
    out = b.add_node(op.name, node_args, attrs, shape, dtype)
    graph = run_pipeline(b.build([out]), COMPILE_PIPELINE, verify_each=False)
    return compile_cuda(lower(graph, target="cuda"))


cuda_eager.build_runner = build_runner
dispatch.cuda_backend = cuda_eager
