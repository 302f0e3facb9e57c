"""The examples' training steps exported, then trained in a fresh process that never imports
the example (or any test) module: the same losses and parameters as the live traced step.
The MLP step is tests/export/test_export.py's; CNN and LSTM compile for long: ``-m slow``."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn, optim

from ..test_examples import load_example
from .helpers import FRESH_TRAIN, run_fresh


def check_trains_identically(tmp_path, make, x, y, steps: int):
    """``make()`` -> (step, named parameters): two independent copies, one exported."""
    step_a, _ = make()
    traced_a = tj.trace(step_a)
    tj.export({"train_step": (traced_a, (x, y))}).save(tmp_path / "step.tjit")
    step_b, params_b = make()
    live = tj.trace(step_b)
    for _ in range(traced_a.cache_info().misses):  # the tracing calls export made
        live(x, y)
    np.savez(tmp_path / "batch.npz", x=x._data, y=y._data)
    got = run_fresh(FRESH_TRAIN, tmp_path / "step.tjit", tmp_path / "batch.npz", steps,
                    tmp_path / "state.npz")
    assert got["imported"] == [], got["imported"]
    want = [float(live(x, y)._data) for _ in range(steps)]
    np.testing.assert_allclose(got["losses"], want, rtol=1e-6)
    state = np.load(tmp_path / "state.npz")
    assert {name for name, _ in params_b} <= set(state.files), state.files
    for name, p in params_b:
        np.testing.assert_allclose(state[name], p._data, rtol=1e-6, atol=1e-7, err_msg=name)


def test_polyfit(tmp_path):
    x = tj.linspace(-math.pi, math.pi, 200)
    y = x.sin()

    def make():
        rng = np.random.default_rng(0)
        params = [tj.tensor(float(v), requires_grad=True) for v in rng.standard_normal(4)]
        a, b, c, d = params

        def step(x, y):  # as tracejit.__main__.polyfit_compiled writes it
            loss = ((a + b * x + c * x ** 2 + d * x ** 3 - y) ** 2).sum()
            loss.backward()
            with tj.no_grad():
                for p in params:
                    p -= 1e-4 * p.grad
                    p.grad = None
            return loss.detach()
        return step, list(zip("abcd", params))

    check_trains_identically(tmp_path, make, x, y, steps=5)


def _example_step(example, model, opt_cls, **opt_kw):
    opt = opt_cls(model.parameters(), **opt_kw)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):  # as the examples' train() writes it
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()
    return step, [(f"model.{k}", p) for k, p in model.named_parameters()]


@pytest.mark.slow
def test_cnn(tmp_path):
    cnn = load_example("cnn")
    images, labels = cnn.make_data(4, seed=1)
    check_trains_identically(
        tmp_path, lambda: _example_step(cnn, cnn.build_model(0), optim.SGD, lr=0.01,
                                        momentum=0.9),
        tj.tensor(images), tj.tensor(labels), steps=2)


@pytest.mark.slow
def test_lstm(tmp_path):
    lstm = load_example("lstm")
    seqs, labels = lstm.make_data(4, seed=1, seq_len=5)
    check_trains_identically(
        tmp_path, lambda: _example_step(lstm, lstm.build_model(0, hidden=16, layers=1),
                                        optim.Adam, lr=1e-3),
        tj.tensor(seqs), tj.tensor(labels), steps=2)
