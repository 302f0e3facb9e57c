"""Compile numba-cuda kernels and device functions to PTX without a GPU, and check the result.

``numba.cuda.compile_ptx`` needs no driver when ``cc`` is given and every device function the
kernel calls is inlined (``inline="always"``). A function NVVM could not resolve (an LLVM
intrinsic it does not lower, such as ``llvm.maximum.f32``) does not fail there: it is left in
the PTX as a declaration, ``.extern .func (.param .b32 func_retval0) llvm.maximum.f32 (...)``,
and only the driver's link step fails (``ptxas fatal: Unresolved extern function``), on a GPU;
cuda.core's PTX compiler has even been seen to accept it and give an empty kernel
(NVIDIA/cuda-python#920). So the tests read the PTX.
"""

from __future__ import annotations

import re

from numba import cuda

CC = (9, 0)  # H100/H200; no device is asked

# ``.extern .func`` and ``.extern .global``/``.const`` symbols the module expects from a link.
# ``.extern .shared`` is the dynamic shared memory array: part of the kernel, not a link.
_EXTERN_LINE = re.compile(r"^\s*\.extern\s+(?!\.shared\b)([^\n]*)$", re.MULTILINE)
# A device function left out of line: ``.func`` or ``.visible .func`` with a body.
_FUNC = re.compile(r"^\s*(?:\.visible\s+|\.weak\s+)?\.func\b[^\n]*?([A-Za-z_$][\w$.]*)\s*\(",
                   re.MULTILINE)


def compile_ptx(fn, sig, *, device: bool = False, cc=CC, **options) -> tuple:
    """``(ptx, result type)`` of ``fn`` compiled for ``sig`` at compute capability ``cc``."""
    return cuda.compile_ptx(fn, sig, device=device, cc=cc, **options)


def externs(ptx: str) -> list:
    """Names of the symbols ``ptx`` declares ``.extern`` and a link must supply: the last
    name on the declaration's line, after dropping a return spec ``(.param .b32 ...)`` and
    array extents (``.extern .func (.param .b32 func_retval0) llvm.maximum.f32``)."""
    names = []
    for m in _EXTERN_LINE.finditer(ptx):
        text = re.sub(r"\([^)]*\)", " ", m.group(1)).split("[")[0].replace("(", " ")
        tokens = [t for t in text.replace(";", " ").split()
                  if not t.startswith(".") and not t.isdigit()]
        names.append(tokens[-1] if tokens else m.group(1).strip())
    return names


def out_of_line_functions(ptx: str) -> list:
    """Names of the numba-compiled device functions ``ptx`` defines out of line (``.func``
    with an Itanium-mangled ``_Z`` name). libdevice's own out-of-line internals, such as
    ``__internal_trig_reduction_slowpathd`` (sin/cos/tan) and ``__internal_accurate_pow``,
    are defined in the module too and need nothing from the driver."""
    return list(dict.fromkeys(m.group(1) for m in _FUNC.finditer(ptx)
                              if m.group(1).startswith("_Z")
                              and not _is_extern_line(ptx, m.start())))


def float64_promotions(ptx: str) -> list:
    """``cvt.f64.f32`` instructions: a float32 value widened to float64, which is what an
    untyped float literal or a float64 function does to float32 math. (libdevice's float32
    sin/cos/tan use one float64 multiply in their large-argument reduction, from an integer:
    ``cvt.rn.f64.s64``, not counted.)"""
    return re.findall(r"^\s*cvt(?:\.\w+)*\.f64\.f32\b[^\n]*", ptx, re.MULTILINE)


def _is_extern_line(ptx: str, pos: int) -> bool:
    start = ptx.rfind("\n", 0, pos) + 1
    return ptx[start:pos + 16].lstrip().startswith(".extern")


def assert_no_externs(ptx: str, what: str = "kernel") -> None:
    """Fail, naming them, if ``ptx`` leaves symbols for a link to resolve."""
    found = externs(ptx)
    assert not found, f"{what}: PTX has unresolved externs {found} (a GPU would fail to link)"


def assert_inlined(ptx: str, what: str = "kernel") -> None:
    """Fail if a device function stayed out of line (it would need the driver to compile)."""
    found = out_of_line_functions(ptx)
    assert not found, f"{what}: device functions not inlined: {found}"


def check_kernel(fn, sig, what: str = "kernel", **options) -> str:
    """Compile a kernel for ``sig`` to PTX and assert it is self-contained; returns the PTX."""
    ptx, _ = compile_ptx(fn, sig, **options)
    assert_no_externs(ptx, what)
    assert_inlined(ptx, what)
    return ptx
