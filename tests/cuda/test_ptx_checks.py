"""The PTX checks of tests/cuda/ptx.py catch what they are for: an unresolved extern (the
``llvm.maximum`` trap), a device function left out of line, float32 math widened to float64."""

from __future__ import annotations

import pytest
from llvmlite import ir
from numba import cuda
from numba.core import types
from numba.extending import intrinsic

from tests.cuda import kernels
from tests.cuda.ptx import (
    assert_inlined,
    assert_no_externs,
    compile_ptx,
    externs,
    float64_promotions,
)


@intrinsic
def _llvm_maximum(typingctx, a, b):
    if not isinstance(a, types.Float) or a != b:
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maximum", [t], ir.FunctionType(t, [t, t]))
        return builder.call(fn, args)

    return a(a, b), codegen


def test_llvm_maximum_is_left_an_unresolved_extern():
    ptx, _ = compile_ptx(kernels.elementwise(_llvm_maximum, 2),
                         kernels.signature(["float32"] * 2, "float32"))
    assert externs(ptx) == ["llvm.maximum.f32"]
    with pytest.raises(AssertionError, match="llvm.maximum.f32"):
        assert_no_externs(ptx, "llvm.maximum kernel")


def test_a_device_function_compiled_alone_is_out_of_line():
    def twice(x):
        return x * 2

    ptx, _ = compile_ptx(twice, kernels.scalars(["int64"]), device=True)
    with pytest.raises(AssertionError, match="not inlined"):
        assert_inlined(ptx, "twice")


def test_an_untyped_float_literal_widens_float32_math():
    def widened(x, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = x[i] * 1.1  # float64 literal: x[i] goes to float64 and back

    ptx, _ = compile_ptx(widened, kernels.signature(["float32"], "float32"))
    assert float64_promotions(ptx)
    assert not externs(ptx)
