"""On a real GPU (skipped elsewhere, which is every CI machine): the simulator's graphs and the
op sweep run on the device in this process and agree with the reference interpreter. This is
the first check a GPU session runs: ``python -m pytest tests/cuda/test_cuda_gpu.py``."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit.cuda

pytestmark = pytest.mark.skipif(
    not tracejit.cuda.is_available() or tracejit.cuda.is_simulator(),
    reason="needs an NVIDIA GPU")


def test_representative_graphs_on_the_gpu():
    from .programs import run_programs
    from .sim_cases import CASES
    from .test_cuda_sim import _reference

    inputs = {f"{name}.{k}": a for name, (_, args, *_) in CASES().items()
              for k, a in enumerate(args)}
    got = run_programs(inputs)
    for name in sorted(CASES()):
        want, error = _reference(name)
        if error is not None:
            assert f"{name}.error" in got, name
            continue
        for k, w in enumerate(want):
            if isinstance(w, np.ndarray):
                np.testing.assert_allclose(got[f"{name}.{k}"], w, rtol=2e-5, atol=1e-6,
                                           err_msg=f"{name}.{k}")


def test_op_sweep_on_the_gpu(monkeypatch):
    from . import test_cuda_sim
    monkeypatch.setattr(test_cuda_sim, "run_in_simulator",
                        lambda target, inputs, **kw: _in_process(target, inputs))
    test_cuda_sim._sweep(test_cuda_sim._sweep_ids(all_cases=False))


def _in_process(target, inputs):
    import importlib
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(inputs)
