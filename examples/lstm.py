"""A 2-layer LSTM sequence classifier trained with Adam on synthetic sine sequences.

    python examples/lstm.py --mode traced --steps 200 --batch 32

The model is ``LSTM(10, 256, num_layers=2, batch_first=True)`` followed by a Linear head on the
last time step. ``--mode eager`` runs it op by op; ``--mode traced`` compiles the whole training
step (the unrolled recurrence, cross-entropy, backward through time, Adam update) into one graph
with ``tracejit.trace``. Both start from the same seed and print the same loss curve.

The data: sequences of length 20 with 10 features; the class decides the frequency of a sine
wave (1 to 5 periods over the sequence) that every feature carries with its own random phase and
amplitude, plus Gaussian noise.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import tracejit as tj
from tracejit import nn, optim
from tracejit.utils import progress
from tracejit.utils.data import DataLoader, TensorDataset

WARMUP = 3  # steps left out of the median step time
NUM_CLASSES = 5
FEATURES = 10
SEQ_LEN = 20


class LSTMClassifier(nn.Module):
    """LSTM over (batch, time, features); a Linear head reads the last time step's output."""

    def __init__(self, input_size: int = FEATURES, hidden_size: int = 256, num_layers: int = 2,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def build_model(seed: int = 0, hidden: int = 256, layers: int = 2) -> LSTMClassifier:
    """The classifier, initialised from ``tracejit.manual_seed(seed)`` (torch's default inits)."""
    tj.manual_seed(seed)
    return LSTMClassifier(FEATURES, hidden, layers, NUM_CLASSES)


def make_data(n: int, seed: int = 0, seq_len: int = SEQ_LEN,
              noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (float32, N x seq_len x 10) and labels (int64, N): class ``k`` is a sine
    with ``k + 1`` periods per sequence on every feature (random phase, amplitude), plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    t = np.arange(seq_len) / seq_len
    freq = (labels + 1)[:, None, None]
    phase = rng.uniform(0, 2 * math.pi, (n, 1, FEATURES))
    amp = rng.uniform(0.5, 1.5, (n, 1, FEATURES))
    x = amp * np.sin(2 * math.pi * freq * t[None, :, None] + phase)
    x = x + noise * rng.standard_normal((n, seq_len, FEATURES))
    return x.astype(np.float32), labels.astype(np.int64)


def train(mode: str = "eager", steps: int = 100, batch: int = 32, lr: float = 1e-3,
          seed: int = 0, hidden: int = 256, layers: int = 2, seq_len: int = SEQ_LEN,
          batches: int = 16, log=None, times: list | None = None) -> list[float]:
    """Train for ``steps`` steps over ``batches`` fixed batches; returns the loss of every step.

    ``mode`` is ``"eager"`` or ``"traced"``; per-step wall times are appended to ``times`` when
    given; ``log(step, loss)`` is called every step when given.
    """
    if mode not in ("eager", "traced"):
        raise ValueError(f"mode must be 'eager' or 'traced', got {mode!r}")
    model = build_model(seed, hidden, layers)
    opt = optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    seqs, labels = make_data(batch * batches, seed=seed + 1, seq_len=seq_len)
    # the fixed batches, in order (no shuffling), made once by a DataLoader
    data = list(DataLoader(TensorDataset(tj.tensor(seqs), tj.tensor(labels)), batch_size=batch))

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    run = tj.trace(step) if mode == "traced" else step
    losses = []
    for k in progress(range(steps), desc=f"{mode} steps", leave=False):
        t0 = time.perf_counter()
        loss = run(*data[k % len(data)]).item()
        if times is not None:
            times.append(time.perf_counter() - t0)
        losses.append(loss)
        if log is not None:
            log(k, loss)
    return losses


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("eager", "traced"), default="traced")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    every = max(1, args.steps // 10)

    def log(k, loss):
        if k % every == 0 or k == args.steps - 1:
            print(f"  step {k:5d}  loss {loss:.4f}")

    print(f"2-layer LSTM(10, 256) classifier on synthetic sine sequences (length {SEQ_LEN}), "
          f"batch {args.batch}, Adam(lr={args.lr}), mode {args.mode}")
    times: list[float] = []
    t0 = time.perf_counter()
    train(args.mode, args.steps, batch=args.batch, lr=args.lr, log=log, times=times)
    total = time.perf_counter() - t0
    # traced mode: the first two steps trace (Adam creates its moments on the first, so the
    # second traces again); from the third, steps run on the
    # interpreter while numba compiles the kernels in background workers, then compiled
    # (TRACEJIT_SYNC_COMPILE=1: the third compiles before it returns); leave the first
    # steps out of the median in both modes
    steady = times[WARMUP:] or times
    print(f"median step time: {np.median(steady) * 1e3:.2f} ms (first {WARMUP} steps: "
          f"{sum(times[:WARMUP]):.1f} s; total {total:.1f} s)")


if __name__ == "__main__":
    main()
