"""tracejit.cuda answers whether a GPU can run kernels, never raises doing so, and raises its
own clear error (never numba's driver traceback) where a GPU is needed and missing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tracejit.cuda as tcuda
from tests.cuda.sim import ROOT, run_in_simulator

NO_DRIVER = "no NVIDIA driver was found"
MESSAGE = "CUDA is not available: no NVIDIA driver was found; tensors stay on the CPU"

needs_no_driver = pytest.mark.skipif(tcuda.unavailable_reason() != NO_DRIVER,
                                     reason="an NVIDIA driver is installed here")


def _child(code: str, **env) -> str:
    """Run ``code`` in a fresh interpreter (numba.cuda not yet imported) and return stdout."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_answers_agree():
    assert tcuda.is_available() is (tcuda.unavailable_reason() is None)
    if not tcuda.is_available():
        assert tcuda.device_count() == 0


@needs_no_driver
def test_without_a_driver_nothing_is_available():
    assert tcuda.is_available() is False
    assert tcuda.is_simulator() is False
    assert tcuda.device_count() == 0


@needs_no_driver
def test_require_names_the_operation_and_the_missing_driver():
    with pytest.raises(tcuda.CudaUnavailableError) as info:
        tcuda.require("matmul")
    assert str(info.value) == f"matmul: {MESSAGE}"
    assert isinstance(info.value, RuntimeError)
    # raised fresh: no numba CudaSupportError chained or shown as context
    assert info.value.__cause__ is None and info.value.__context__ is None
    for word in ("Traceback", "CudaSupportError", "Error at driver init", "numba"):
        assert word not in str(info.value)


@needs_no_driver
def test_synchronize_raises_the_same_clear_error():
    with pytest.raises(tcuda.CudaUnavailableError, match=MESSAGE) as info:
        tcuda.synchronize()
    assert info.value.__context__ is None


def test_without_numba_cuda_the_message_names_the_extra():
    out = _child("""
        import sys
        sys.modules["numba_cuda"] = None  # as if numba-cuda were not installed
        sys.modules["numba.cuda"] = None
        import tracejit.cuda as c
        print(c.is_available(), c.device_count())
        try:
            c.require("Tensor.cuda")
        except c.CudaUnavailableError as e:
            print(e)
    """)
    assert out.splitlines() == [
        "False 0",
        "Tensor.cuda: CUDA is not available: numba-cuda is not installed "
        "(pip install 'tracejit[cuda]'); tensors stay on the CPU"]


def test_a_broken_numba_cuda_import_is_not_available():
    out = _child("""
        import importlib.abc, sys

        class Broken(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "numba.cuda":
                    raise RuntimeError("half-installed")

        sys.meta_path.insert(0, Broken())
        import tracejit.cuda as c
        print(c.is_available(), c.unavailable_reason())
    """)
    assert out.strip() == "False numba-cuda failed to import (RuntimeError: half-installed)"


def test_numba_disable_cuda_is_named():
    out = _child("import tracejit.cuda as c; print(c.is_available(), c.unavailable_reason())",
                 NUMBA_DISABLE_CUDA="1")
    assert out.strip() == "False CUDA is disabled by NUMBA_DISABLE_CUDA=1"


def test_the_simulator_counts_as_a_device():
    got = run_in_simulator("""
        import numpy as np
        import tracejit.cuda as c

        def main(inputs):
            c.synchronize()
            return {"flags": np.array([c.is_available(), c.is_simulator(), c.device_count()])}
    """, timeout=60)
    np.testing.assert_array_equal(got["flags"], [1, 1, 1])


@pytest.mark.skipif(not tcuda.is_available() or tcuda.is_simulator(), reason="needs a GPU")
def test_on_a_gpu():  # pragma: no cover - CI has no GPU
    assert tcuda.device_count() >= 1
    tcuda.synchronize()
    assert tcuda.require("matmul") is not None
