"""examples/digits_dataloader.py: trains on scikit-learn's digits (skipped without it), on an
.npz file through tracejit.datasets, and says clearly when it cannot run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_dataloader.py"


def _load():
    spec = importlib.util.spec_from_file_location("tracejit_example_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


digits = _load()


def _toy_npz(path, n=200):
    """Two well separated classes of 64 features, in the example's file format."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = (rng.random((n, 64)) * 0.2 + y[:, None] * 0.6).astype(np.float32)
    np.savez(path, x=x, y=y)
    return path


def test_trains_from_an_npz_file(tmp_path):
    ds = digits.build_dataset(str(_toy_npz(tmp_path / "toy.npz")))
    out = digits.train(ds, epochs=3, batch=32)
    assert out["losses"][-1] < out["losses"][0] and out["accuracy"] > 0.9
    assert len(out["epoch_times"]) == 3


def test_trains_with_workers(tmp_path):
    ds = digits.build_dataset(str(_toy_npz(tmp_path / "toy.npz")))
    ref = digits.train(ds, epochs=2, batch=32)
    out = digits.train(ds, epochs=2, batch=32, workers=2)
    # the same seed gives the same shuffling order, with or without workers (a loader with
    # persistent_workers would draw its workers' base seed once, not every epoch, as torch's)
    np.testing.assert_allclose(out["losses"], ref["losses"], rtol=1e-5)


def test_skips_clearly_without_scikit_learn(monkeypatch, capsys):
    monkeypatch.setattr(digits, "load_digits_arrays", lambda: None)
    assert digits.main(["--epochs", "1"]) == 0
    assert "skipped: scikit-learn is not installed" in capsys.readouterr().out


def test_rejects_unknown_mode(tmp_path):
    ds = digits.build_dataset(str(_toy_npz(tmp_path / "toy.npz")))
    with pytest.raises(ValueError, match="mode must be"):
        digits.train(ds, mode="compiled")


def test_digits_command_line(tmp_path):
    pytest.importorskip("sklearn")
    out = subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "1", "--workers", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("  epoch ") == 1 and "final test accuracy" in out.stdout
    acc = float(out.stdout.split("final test accuracy ")[1].split(";")[0])
    assert acc > 0.8  # 0.91 after one epoch


def test_digits_export(tmp_path):
    pytest.importorskip("sklearn")
    export = tmp_path / "d.npz"
    assert digits.main(["--export", str(export)]) == 0
    assert np.load(export)["x"].shape == (1797, 64)
    assert len(digits.build_dataset(str(export))) == 1797


def test_logs_to_tensorboard(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ds = digits.build_dataset(str(_toy_npz(tmp_path / "toy.npz")))
    out = digits.train(ds, epochs=2, batch=32, logdir=str(tmp_path / "runs"))
    acc = accumulator.EventAccumulator(str(tmp_path / "runs"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("loss/train")] == pytest.approx(out["losses"])
    assert [e.step for e in acc.Scalars("accuracy/test")] == [0, 1]
    assert "0.weight" in acc.Tags()["histograms"]
    assert any(n.op == "matmul" for n in acc.Graph().node)
