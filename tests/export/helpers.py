"""Models, training steps and a fresh-process runner shared by the export tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

import tracejit as tj
from tracejit import nn, optim


def mlp(seed: int = 0, sizes=(8, 16, 3)):
    tj.manual_seed(seed)
    return nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.ReLU(), nn.Linear(sizes[1], sizes[2]))


def train_step(model, lr: float = 0.1, momentum: float = 0.9):
    """A whole SGD step, as the examples write it."""
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def batch(n: int = 4, features: int = 8, classes: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    return (tj.tensor(rng.standard_normal((n, features)).astype(np.float32)),
            tj.tensor(rng.integers(0, classes, n)))


def run_fresh(code: str, *args, timeout: int = 300) -> dict:
    """Run ``code`` in a new interpreter that imports tracejit only (never a test or example
    module); it prints one JSON object last, which is returned."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                         capture_output=True, text=True, timeout=timeout, env=env,
                         cwd=os.path.dirname(os.path.abspath(args[0])) if args else None)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# a fresh process: load a file, run N training steps on saved batches, save the weights
FRESH_TRAIN = """
    import json, sys
    import numpy as np
    import tracejit as tj
    path, data, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    m = tj.load(path)
    d = np.load(data)
    losses = [float(m.train_step(tj.tensor(d["x"]), tj.tensor(d["y"]))._data)
              for _ in range(steps)]
    np.savez(out, **{k: v._data for k, v in m.state_dict().items()})
    print(json.dumps({"losses": losses, "imported": sorted(
        k for k in sys.modules if k.startswith(("tests", "examples", "tracejit_example")))}))
"""
