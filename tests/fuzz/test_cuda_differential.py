"""The CUDA executor in the differential tests: random programs (the same strategies as
test_differential.py) run eagerly on the CPU here and traced on CUDA tensors in one simulator
child (``NUMBA_ENABLE_CUDASIM=1``, tests/cuda/sim.py; tiny shapes, as the strategies draw
them); outputs and in-place updates of inputs must agree within the same tolerances
(executors.py). The simulator runs each CUDA thread as a Python thread, so the default run is a
few dozen programs (about 2 s) and 8 gradient programs (about 5 s, against eager autograd as in
test_grad_differential.py); ``-m slow`` runs a thousand random programs and 300 gradient ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from tests.cuda.sim import run_in_simulator

from .conftest import fuzz_settings
from .cuda_child import SEPARATOR
from .executors import Result, compare, run_eager, tolerance
from .strategies import programs
from .test_grad_differential import ATOL, RTOL, _close, eager_gradients

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _draw(n: int, profile, max_steps: int = 5, grad=None) -> list:
    drawn = []

    @settings(profile, max_examples=n, database=None)
    @given(programs(max_steps=max_steps, grad=grad))
    def collect(p):
        if grad is None:
            drawn.append(p)
            return
        eager = eager_gradients(p)  # (rejects what eager refuses)
        if eager is not None:
            drawn.append((p, eager))

    collect()
    return drawn[:n]


def _text(res: dict, key: str) -> str:
    return bytes(res[key]).decode()


def _check(drawn: list, timeout: float) -> dict:
    res = run_in_simulator("tests.fuzz.cuda_child:run",
                           {"programs": np.frombuffer(SEPARATOR.join(map(repr, drawn)).encode(),
                                                      np.uint8)}, timeout=timeout)
    for k, p in enumerate(drawn):
        assert f"{k}.error" not in res, f"{p!r}\nraised on CUDA: {_text(res, f'{k}.error')}"
        runners = _text(res, f"{k}.runners").split()
        assert runners and all(r == "cuda:0:CudaRunner" for r in runners), (repr(p), runners)
        want = run_eager(p)
        got = Result([res[f"{k}.out{j}"] for j in range(len(want.outputs))],
                     [res[f"{k}.in{j}"] for j in range(len(want.inputs))])
        assert f"{k}.out{len(want.outputs)}" not in res, f"{p!r}: more outputs than eager"
        compare(got, tolerance(p, want), f"cuda\n{p!r}\n")
    return res


def test_cuda_agrees_with_eager_on_random_programs():
    drawn = _draw(40, fuzz_settings(40), max_steps=6)
    assert len(drawn) == 40
    _check(drawn, timeout=600)


@pytest.mark.slow
def test_cuda_agrees_with_eager_on_random_programs_slow():
    # 1000 random programs of up to 10 steps: ~40 s here
    _check(_draw(1000, settings(fuzz_settings(1000), derandomize=False), max_steps=10),
           timeout=3000)


def _check_grads(drawn: list, timeout: float) -> None:
    res = run_in_simulator("tests.fuzz.cuda_child:run_grads", {"programs": np.frombuffer(
        SEPARATOR.join(repr(p) for p, _ in drawn).encode(), np.uint8)}, timeout=timeout)
    for k, (p, (loss, want)) in enumerate(drawn):
        assert f"{k}.error" not in res, f"{p!r}\nraised on CUDA: {_text(res, f'{k}.error')}"
        for w in range(4):
            what = f"cuda, {_text(res, f'{k}.{w}.what')}\n{p!r}"
            if f"{k}.{w}.loss" in res:
                np.testing.assert_allclose(res[f"{k}.{w}.loss"], loss.item(), rtol=RTOL,
                                           atol=ATOL, err_msg=what)
            _close([res.get(f"{k}.{w}.grad{i}") for i in range(len(want))], want, what)


def test_cuda_gradients_agree_with_eager_autograd():
    """Compiled CUDA gradients (a traced function's backward from eager code, tracejit.grad)
    of random float64 programs, kinks included, against eager CPU autograd."""
    drawn = _draw(8, fuzz_settings(8), max_steps=5, grad="any")
    assert drawn
    _check_grads(drawn, timeout=600)


@pytest.mark.slow
def test_cuda_gradients_agree_with_eager_autograd_slow():
    _check_grads(_draw(300, settings(fuzz_settings(300), derandomize=False), max_steps=6,
                       grad="any"), timeout=3000)
