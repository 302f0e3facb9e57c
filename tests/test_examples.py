"""The example scripts (examples/polyfit.py, cnn.py, lstm.py): eager and traced training give the
same losses from the same seed, the losses go down, and the command lines run.

The fast tests use tiny batches (and a tiny LSTM); their time is mostly numba compiling the
traced step. The ``slow`` ones run the examples at their shipped sizes."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tracejit as tj

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    """Import ``examples/<name>.py`` (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tracejit_example_{name}",
                                                  EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


polyfit = load_example("polyfit")
cnn = load_example("cnn")
lstm = load_example("lstm")

# float32 training: eager and compiled kernels round differently (fused, reassociated sums)
RTOL, ATOL = 2e-4, 1e-5


@pytest.fixture
def traced_fns(monkeypatch):
    """The functions the examples pass to ``tracejit.trace`` (to check the compiled graph ran)."""
    made = []
    real = tj.trace

    def spy(*args, **kwargs):
        fn = real(*args, **kwargs)
        made.append(fn)
        return fn

    monkeypatch.setattr(tj, "trace", spy)
    return made


def _assert_ran_compiled(traced_fns, compiled_steps, traces=2):
    assert len(traced_fns) == 1
    run = traced_fns[0]
    info = run.cache_info()
    # SGD momentum: two traces (its first step makes the buffer from the gradient), then the
    # compiled graph; Adam: one (its zero state is made before the graph reads it)
    assert info.misses == traces and info.eager_calls == 0
    assert info.hits == compiled_steps
    spec = run.specs()[-1]
    assert spec.ran_backward and spec.runner is not None


def _run_script(name, *args, timeout=120):
    out = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _printed_losses(stdout):
    return [float(v) for v in re.findall(r"step\s+\d+\s+loss\s+([-+0-9.e]+)", stdout)]


# ---------------------------------------------------------------------------------- polyfit

def test_polyfit_three_variants_reach_the_same_loss(traced_fns):
    curves, coeffs = {}, {}
    for mode in ("numpy", "eager", "traced"):
        fitted = []
        curves[mode] = polyfit.train(mode, steps=2000, lr=1e-6, coeffs=fitted)
        coeffs[mode] = fitted
    ref = curves["numpy"]
    assert len(ref) == 4  # steps 500, 1000, 1500, 2000
    assert all(a > b for a, b in zip(ref, ref[1:]))
    assert ref[-1] < 10.0  # the tutorial's numpy version ends at 9.08
    for mode in ("eager", "traced"):
        np.testing.assert_allclose(curves[mode], ref, rtol=1e-3, err_msg=mode)
        np.testing.assert_allclose(coeffs[mode], coeffs["numpy"], rtol=1e-3, atol=1e-4,
                                   err_msg=mode)
    assert traced_fns[0].cache_info().hits == 1999  # one trace, then the compiled graph


def test_polyfit_partial_stretch_and_step_times():
    times = []
    losses = polyfit.train("eager", steps=20, times=times)
    assert len(losses) == 1 and len(times) == 1 and times[0] > 0
    ref, _ = polyfit.polyfit_numpy(20)
    assert abs(losses[0] - ref) < 1e-3 * ref


def test_polyfit_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        polyfit.train("compiled", steps=1)


def test_polyfit_command_line():
    out = _run_script("polyfit", "--mode", "all", "--steps", "500")
    final = re.search(r"final loss: numpy ([0-9.]+), eager ([0-9.]+), traced ([0-9.]+)", out)
    assert final, out
    np.testing.assert_allclose([float(v) for v in final.groups()[1:]], float(final.group(1)),
                               rtol=1e-4)
    assert len(_printed_losses(out)) == 3  # step 500 of each variant
    assert out.count("median step time") == 3


# -------------------------------------------------------------------------------------- CNN

def test_cnn_model_shapes():
    model = cnn.build_model()
    images, labels = cnn.make_data(3)
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.float32
    assert labels.shape == (3,) and labels.dtype == np.int64
    assert set(labels.tolist()) <= set(range(10))
    assert model(tj.tensor(images)).shape == (3, 10)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {"0.weight": (32, 3, 3, 3), "0.bias": (32,), "3.weight": (64, 32, 3, 3),
                      "3.bias": (64,), "7.weight": (128, 4096), "7.bias": (128,),
                      "9.weight": (10, 128), "9.bias": (10,)}


# about 60 s of numba compiles; tests/codegen/test_conv_lowering.py compiles CNN training steps
# in the default run, and test_cnn_command_line_eager runs this example's script
@pytest.mark.slow
def test_cnn_eager_and_traced_agree(traced_fns):
    kw = dict(steps=4, batch=4, batches=1)  # one batch: the loss goes down every step
    eager = cnn.train("eager", **kw)
    assert traced_fns == []
    traced = cnn.train("traced", **kw)
    _assert_ran_compiled(traced_fns, compiled_steps=2)
    np.testing.assert_allclose(traced, eager, rtol=RTOL, atol=ATOL)
    assert all(a > b for a, b in zip(eager, eager[1:])), eager
    assert eager[0] == pytest.approx(np.log(10), rel=0.2)  # about chance at the start


def test_cnn_command_line_eager():
    out = _run_script("cnn", "--mode", "eager", "--steps", "4", "--batch", "2")
    assert len(_printed_losses(out)) == 4
    assert "median step time" in out


@pytest.mark.slow
def test_cnn_shipped_size_traced_matches_eager():
    steps = 18
    eager = cnn.train("eager", steps=steps)  # batch 32, 16 batches
    out = _run_script("cnn", "--mode", "traced", "--steps", str(steps), timeout=600)
    traced = _printed_losses(out)
    assert "median step time" in out
    assert len(traced) == steps  # under 20 steps the script prints every step
    np.testing.assert_allclose(traced, eager, atol=2e-4)  # printed with 4 decimals
    assert np.mean(eager[-3:]) < 0.8 * eager[0]


# ------------------------------------------------------------------------------------- LSTM

TINY_LSTM = dict(hidden=8, seq_len=2, batch=4, batches=1, lr=1e-2)


def test_lstm_model_shapes():
    model = lstm.build_model(hidden=6)
    seqs, labels = lstm.make_data(3, seq_len=7)
    assert seqs.shape == (3, 7, 10) and seqs.dtype == np.float32
    assert labels.shape == (3,) and labels.dtype == np.int64
    assert model(tj.tensor(seqs)).shape == (3, 5)
    assert list(model.state_dict()) == [
        f"lstm.{w}_l{k}" for k in range(2)
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")] + ["head.weight", "head.bias"]
    assert tuple(model.lstm.weight_ih_l1.shape) == (24, 6)


def test_lstm_data_frequency_is_the_class():
    seqs, labels = lstm.make_data(50, seq_len=20, noise=0.0)
    spectrum = np.abs(np.fft.rfft(seqs, axis=1)).sum(axis=2)  # (N, frequencies)
    np.testing.assert_array_equal(spectrum.argmax(axis=1), labels + 1)


# numba compiles each kernel of the unrolled recurrence separately: a second layer doubles the
# compile time (about 12 s for one layer here)
@pytest.mark.parametrize("layers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_lstm_eager_and_traced_agree(traced_fns, layers):
    eager = lstm.train("eager", steps=4, layers=layers, **TINY_LSTM)
    traced = lstm.train("traced", steps=4, layers=layers, **TINY_LSTM)
    _assert_ran_compiled(traced_fns, compiled_steps=3, traces=1)  # Adam
    np.testing.assert_allclose(traced, eager, rtol=RTOL, atol=ATOL)
    assert all(a > b for a, b in zip(eager, eager[1:])), eager
    assert eager[0] == pytest.approx(np.log(5), rel=0.2)


def test_lstm_command_line_eager():
    out = _run_script("lstm", "--mode", "eager", "--steps", "3", "--batch", "2")
    assert len(_printed_losses(out)) == 3
    assert "median step time" in out


@pytest.mark.parametrize("module", [cnn, lstm], ids=["cnn", "lstm"])
def test_train_rejects_unknown_mode(module):
    with pytest.raises(ValueError, match="mode must be 'eager' or 'traced', got 'jit'"):
        module.train("jit", steps=1)


@pytest.mark.slow
def test_lstm_shipped_size_traced_matches_eager():
    steps = 8
    eager = lstm.train("eager", steps=steps)  # hidden 256, 2 layers, length 20, batch 32
    out = _run_script("lstm", "--mode", "traced", "--steps", str(steps), timeout=900)
    traced = _printed_losses(out)
    assert len(traced) == steps
    np.testing.assert_allclose(traced, eager, atol=2e-4)  # printed with 4 decimals
