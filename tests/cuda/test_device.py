"""Device plumbing in this process, where there is no GPU: devices parse like torch's, CPU
tensors say so, and every way onto CUDA raises tracejit's CudaUnavailableError (never numba's
driver error). With a GPU (or the simulator) test_eager_cuda.py covers the rest."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn as nn
from tracejit import dispatch
from tracejit.cuda import CudaUnavailableError

no_gpu = pytest.mark.skipif(tj.cuda.is_available(), reason="a GPU is available")


def test_devices_parse_like_torch():
    assert str(tj.device("cuda:0")) == "cuda:0" and tj.device("cuda").index is None
    assert tj.device("cuda", 0) == "cuda:0" and repr(tj.device("cpu")) == "device(type='cpu')"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        tj.device("tpu")


def test_cpu_tensors():
    x = tj.ones(2)
    assert x.device == "cpu" and not x.is_cuda
    assert x.cpu() is x and x.to("cpu") is x and x.to(device="cpu", dtype=tj.float64).dtype == \
        np.float64
    with pytest.raises(AttributeError, match="on the CPU"):
        _ = x.__cuda_array_interface__
    assert not hasattr(x, "__cuda_array_interface__")  # so interop libraries see a host array
    m = nn.Linear(2, 2)
    assert m.cpu() is m and m.to("cpu") is m


def test_cpu_ops_pay_one_global_check():
    # until a CUDA tensor exists, dispatch.eager never looks at the inputs' devices
    if not dispatch.cuda_in_use:
        assert (tj.ones(2) + 1).tolist() == [2.0, 2.0]


@no_gpu
@pytest.mark.parametrize("move, what", [
    (lambda: tj.ones(2).cuda(), "Tensor.cuda"),
    (lambda: tj.ones(2).to("cuda"), "Tensor.cuda"),
    (lambda: tj.ones(2).to(tj.device("cuda:0")), "Tensor.cuda"),
    (lambda: tj.zeros(2, device="cuda"), "Tensor.cuda"),
    (lambda: tj.randn(2, device="cuda"), "Tensor.cuda"),
    (lambda: tj.arange(3, device="cuda"), "Tensor.cuda"),
    (lambda: tj.tensor([1.0], device="cuda"), "Tensor.cuda"),
    (lambda: tj.zeros_like(tj.ones(2), device="cuda"), "Tensor.cuda"),
    (lambda: nn.Linear(2, 2).cuda(), "Module.cuda"),
    (lambda: nn.Linear(2, 2).to("cuda"), "Tensor.cuda"),
])
def test_no_gpu_gives_tracejits_message(move, what):
    with pytest.raises(CudaUnavailableError, match=f"^{what}: CUDA is not available: .*; "
                       f"tensors stay on the CPU"):
        move()


@no_gpu
def test_cuda_arrays_from_other_libraries_need_a_gpu():
    class Foreign:  # what cupy arrays and torch CUDA tensors look like
        __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False),
                                    "version": 3}
    with pytest.raises(CudaUnavailableError, match="^as_tensor: CUDA is not available"):
        tj.as_tensor(Foreign())
    with pytest.raises(CudaUnavailableError, match="^from_dlpack: CUDA is not available"):
        tj.from_dlpack(Foreign())
