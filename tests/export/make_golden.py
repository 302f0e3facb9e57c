"""Write the golden exports under tests/export/golden/ (run from the repository root):

    python -m tests.export.make_golden

An MLP's predict and its whole SGD training step, with the inputs and what they must give:
``*_expected.npz`` holds the inputs (``in_*``), the results (``out_*``) and, for the training
step, the weights after ``STEPS`` calls (``w_*``). Committed: later versions of tracejit must
keep loading these files and matching them (tests/export/test_golden.py). Regenerate only when
the format changes on purpose, and say so in the commit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tracejit as tj

from .helpers import batch, mlp, train_step

GOLDEN = Path(__file__).parent / "golden"
STEPS = 3


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    model = mlp(seed=0)
    x, y = batch(4, seed=1)
    tj.export(model, x).save(GOLDEN / "mlp_predict.tjit")
    loaded = tj.load(GOLDEN / "mlp_predict.tjit")
    np.savez(GOLDEN / "mlp_predict_expected.npz", in_x=x._data, out_0=loaded(x)._data)

    tj.export({"train_step": (train_step(model), (x, y))}).save(GOLDEN / "mlp_train_step.tjit")
    loaded = tj.load(GOLDEN / "mlp_train_step.tjit")
    losses = [loaded.train_step(x, y)._data for _ in range(STEPS)]
    np.savez(GOLDEN / "mlp_train_step_expected.npz", in_x=x._data, in_y=y._data,
             out_losses=np.array(losses),
             **{f"w_{k}": v._data for k, v in loaded.state_dict().items()})


if __name__ == "__main__":
    main()
