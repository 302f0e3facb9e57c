"""A small CNN classifier trained with SGD (momentum) on synthetic 32x32 RGB images.

    python examples/cnn.py --mode traced --steps 200 --batch 32

The network is conv(3->32, k3, pad1)-relu-maxpool2-conv(32->64, k3, pad1)-relu-maxpool2-flatten-
fc(4096->128)-relu-fc(128->10). ``--mode eager`` runs it op by op; ``--mode traced`` compiles the
whole training step (forward, cross-entropy, backward, SGD update) into one graph with
``tracejit.trace``. Both start from the same seed and print the same loss curve.

The data: each of the 10 classes has a fixed random low-frequency colour pattern; an image is its
class pattern plus Gaussian noise, so the loss visibly decreases within a few dozen steps.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tracejit as tj
from tracejit import nn, optim
from tracejit.utils import progress
from tracejit.utils.data import DataLoader, TensorDataset

WARMUP = 3  # steps left out of the median step time
NUM_CLASSES = 10
IMAGE = 32


def build_model(seed: int = 0) -> nn.Module:
    """The CNN, initialised from ``tracejit.manual_seed(seed)`` (torch's default inits)."""
    tj.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (IMAGE // 4) ** 2, 128), nn.ReLU(),
        nn.Linear(128, NUM_CLASSES),
    )


def make_data(n: int, seed: int = 0, noise: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (float32, N x 3 x 32 x 32) and labels (int64, N): class pattern + noise."""
    rng = np.random.default_rng(seed)
    # smooth class patterns: a coarse 3x4x4 random grid blown up to 32x32
    coarse = rng.standard_normal((NUM_CLASSES, 3, 4, 4)).astype(np.float32)
    patterns = coarse.repeat(IMAGE // 4, axis=2).repeat(IMAGE // 4, axis=3)
    labels = rng.integers(0, NUM_CLASSES, n)
    images = patterns[labels] + noise * rng.standard_normal((n, 3, IMAGE, IMAGE)).astype(
        np.float32)
    return images.astype(np.float32), labels.astype(np.int64)


def train(mode: str = "eager", steps: int = 100, batch: int = 32, lr: float = 0.01,
          momentum: float = 0.9, seed: int = 0, batches: int = 16, log=None,
          times: list | None = None) -> list[float]:
    """Train for ``steps`` steps over ``batches`` fixed batches; returns the loss of every step.

    ``mode`` is ``"eager"`` or ``"traced"``; per-step wall times are appended to ``times`` when
    given; ``log(step, loss)`` is called every step when given.
    """
    if mode not in ("eager", "traced"):
        raise ValueError(f"mode must be 'eager' or 'traced', got {mode!r}")
    model = build_model(seed)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    images, labels = make_data(batch * batches, seed=seed + 1)
    # the fixed batches, in order (no shuffling), made once by a DataLoader
    data = list(DataLoader(TensorDataset(tj.tensor(images), tj.tensor(labels)), batch_size=batch))

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
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args(argv)
    every = max(1, args.steps // 10)

    def log(k, loss):
        if k % every == 0 or k == args.steps - 1:
            print(f"  step {k:5d}  loss {loss:.4f}")

    print(f"CNN on synthetic 32x32x3 images, batch {args.batch}, SGD(lr={args.lr}, "
          f"momentum=0.9), mode {args.mode}")
    times: list[float] = []
    t0 = time.perf_counter()
    train(args.mode, args.steps, batch=args.batch, lr=args.lr, log=log, times=times)
    total = time.perf_counter() - t0
    # traced mode: the first two steps trace (SGD creates its momentum buffers on the first, so the
    # second traces again); from the third, steps run on the
    # interpreter while numba compiles the kernels in background workers, then compiled
    # (TRACEJIT_SYNC_COMPILE=1: the third compiles before it returns); leave the first
    # steps out of the median in both modes
    steady = times[WARMUP:] or times
    print(f"median step time: {np.median(steady) * 1e3:.2f} ms (first {WARMUP} steps: "
          f"{sum(times[:WARMUP]):.1f} s; total {total:.1f} s)")


if __name__ == "__main__":
    main()
