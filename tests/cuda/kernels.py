"""Tiny elementwise kernels around the CUDA prelude's helpers, shared by the PTX tests (compiled
for a GPU that is not there) and the simulator tests (run by ``run_prelude_cases`` in a child
process with ``NUMBA_ENABLE_CUDASIM=1``)."""

from __future__ import annotations

import numpy as np
from numba import cuda

try:
    from numba.cuda.np.numpy_support import from_dtype
except ImportError:  # pragma: no cover - older numba-cuda
    from numba import from_dtype

from tracejit.codegen import cuda_prelude

_SOURCE = '''
def {name}({args}, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = helper({reads})
'''


def result_dtype(call: str, dtype: str) -> np.dtype:
    """The dtype ``<call>_<dtype>`` returns (isnan/isfinite: bool; cast_<dst>: dst)."""
    return np.dtype(bool) if call in ("isnan", "isfinite") else np.dtype(dtype)


def elementwise(helper, arity: int, name: str = "kernel"):
    """The Python function of a kernel ``out[i] = helper(a0[i], ..., a{arity-1}[i])``; pass it
    to ``compile_ptx`` as it is, or to ``cuda.jit`` to launch it."""
    args = [f"a{k}" for k in range(arity)]
    namespace = {"cuda": cuda, "helper": helper}
    exec(_SOURCE.format(name=name, args=", ".join(args),
                        reads=", ".join(f"{a}[i]" for a in args)), namespace)
    return namespace[name]


def device_call(helper, arity: int):
    """The Python function ``f(a0, ...) -> helper(a0, ...)``, to compile as a device function
    (``compile_ptx(..., device=True)`` answers its result type)."""
    args = ", ".join(f"a{k}" for k in range(arity))
    namespace = {"helper": helper}
    exec(f"def call({args}):\n    return helper({args})\n", namespace)
    return namespace["call"]


def scalars(dtypes) -> tuple:
    """numba scalar types of ``dtypes``."""
    return tuple(from_dtype(np.dtype(d)) for d in dtypes)


def signature(arg_dtypes, out_dtype) -> tuple:
    """numba argument types of ``elementwise``'s kernel: 1-d C-contiguous arrays."""
    return tuple(from_dtype(np.dtype(d))[::1] for d in (*arg_dtypes, out_dtype))


def case_helper(case: str):
    """``"floordiv_f32"`` or ``"cast_f32-int64"`` (cast from int64) -> (call, dtype, helper)."""
    name = case.split("-", 1)[0]
    call, dtype = cuda_prelude.PRELUDE_NAMES[name]
    return call, dtype, cuda_prelude.HELPERS[(call, dtype)]


def run_prelude_cases(inputs: dict) -> dict:
    """Launch one kernel per case on its operands (``{"<case>.<k>": array}``) and return
    ``{case: out}``: the child side of tests/cuda/test_prelude_sim.py."""
    cases: dict = {}
    for key, value in inputs.items():
        case, k = key.rsplit(".", 1)
        cases.setdefault(case, {})[int(k)] = value
    outputs = {}
    for case, operands in sorted(cases.items()):
        call, dtype, helper = case_helper(case)
        args = [operands[k] for k in sorted(operands)]
        kernel = cuda.jit(elementwise(helper, len(args), name=f"k_{case.replace('-', '_')}"))
        out = np.zeros(args[0].shape, result_dtype(call, dtype))
        kernel[1, out.size](*args, out)
        outputs[case] = out
    return outputs
