"""Every CUDA prelude helper, at every dtype it has, compiles inside a kernel to PTX for
compute capability 9.0 without a GPU: no unresolved externs, nothing left out of line, the
result in the expected dtype and float32 helpers free of float64 arithmetic."""

from __future__ import annotations

import pytest

from tests.cuda import kernels
from tests.cuda.ptx import check_kernel, compile_ptx, float64_promotions
from tracejit.codegen import cuda_prelude as cp

CASES = []
for (call, dtype) in sorted(cp.HELPERS):
    for src in (cp.ALL if call == "cast" else (dtype,)):
        CASES.append((call, dtype, src))


def _id(case):
    call, dtype, src = case
    return cp.helper_name(call, dtype) + (f"-from-{src}" if call == "cast" else "")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_helper_compiles_to_self_contained_ptx(case):
    call, dtype, src = case
    helper = cp.HELPERS[(call, dtype)]
    arity = cp.ARITY.get(call, 1)
    out = kernels.result_dtype(call, dtype)
    what = _id(case)

    ptx = check_kernel(kernels.elementwise(helper, arity), kernels.signature([src] * arity, out),
                       what)

    # the device function alone answers its result type (the kernel's store would convert)
    _, restype = compile_ptx(kernels.device_call(helper, arity), kernels.scalars([src] * arity),
                             device=True)
    assert restype == kernels.scalars([out])[0], f"{what} returns {restype}, not {out}"

    if src == dtype == "float32":
        assert not float64_promotions(ptx), f"{what}: float32 math widened to float64"
