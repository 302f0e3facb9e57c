"""The committed golden exports (made by tests/export/make_golden.py) keep loading and giving
the same numbers: a file written by an older tracejit must stay loadable."""

from __future__ import annotations

import numpy as np

import tracejit as tj

from .make_golden import GOLDEN, STEPS


def test_golden_mlp_predict():
    want = np.load(GOLDEN / "mlp_predict_expected.npz")
    loaded = tj.load(GOLDEN / "mlp_predict.tjit")
    np.testing.assert_allclose(loaded(tj.tensor(want["in_x"]))._data, want["out_0"],
                               rtol=1e-5, atol=1e-6)


def test_golden_mlp_train_step():
    want = np.load(GOLDEN / "mlp_train_step_expected.npz")
    loaded = tj.load(GOLDEN / "mlp_train_step.tjit")
    x, y = tj.tensor(want["in_x"]), tj.tensor(want["in_y"])
    losses = [loaded.train_step(x, y).item() for _ in range(STEPS)]
    np.testing.assert_allclose(losses, want["out_losses"], rtol=1e-5)
    for name, value in loaded.state_dict().items():
        np.testing.assert_allclose(value._data, want[f"w_{name}"], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_golden_files_are_small_and_versioned():
    for name in ("mlp_predict.tjit", "mlp_train_step.tjit"):
        path = GOLDEN / name
        assert path.stat().st_size < 64 * 1024
        m = tj.load(path).manifest
        assert (m["format"], m["version"], m["ir"]["major"]) == ("tracejit.export", 1, 1)
