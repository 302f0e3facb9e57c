"""An MLP classifier on scikit-learn's handwritten digits, fed by ``tracejit.utils.data``.

    python examples/digits_dataloader.py --epochs 10 --workers 2 --mode traced

The 1797 8x8 digit images ship inside scikit-learn's wheel (``sklearn.datasets.load_digits``,
no download; ``pip install -e '.[examples]'``). Without scikit-learn the script says so and
exits; ``--data digits.npz`` trains on an ``.npz`` file with arrays ``x`` (N x 64) and ``y``
(N) instead, loaded by ``tracejit.datasets.load_npz``, and ``--export digits.npz`` writes one.

What it shows, the PyTorch way: ``random_split`` into train/test with a seeded generator, a
shuffling ``DataLoader`` (``tj.manual_seed`` fixes the order), worker processes
(``--workers``), and a 64-128-10 MLP trained with ``nn.CrossEntropyLoss`` and ``optim.Adam``,
op by op (``--mode eager``) or with the whole step compiled (``--mode traced``; full batches
only, ``drop_last=True``, so the step is traced once). ``--checkpoint ckpt.tj`` saves the
model, the optimizer, the generator and the epoch after every epoch with ``tj.save`` (written
atomically) and resumes from it with ``tj.load``: a run stopped and resumed gives the numbers
an uninterrupted run gives. ``--logdir runs/digits`` writes TensorBoard event files with
``tracejit.utils.tensorboard.SummaryWriter`` (the model's graph, loss and accuracy per epoch,
a histogram of each weight): ``tensorboard --logdir runs``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import tracejit as tj
from tracejit import nn, optim
from tracejit.datasets import load_npz
from tracejit.utils import progress
from tracejit.utils.data import DataLoader, TensorDataset, random_split


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray] | None:
    """(x float32 N x 64 in [0, 1], y int64 N) from scikit-learn, or None without it."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def build_dataset(data: str | None = None) -> TensorDataset | None:
    if data is not None:
        return load_npz(data, keys=["x", "y"])
    arrays = load_digits_arrays()
    return None if arrays is None else TensorDataset(tj.tensor(arrays[0]), tj.tensor(arrays[1]))


def build_model(seed: int = 0) -> nn.Module:
    tj.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    right = total = 0
    with tj.no_grad():
        for x, y in loader:
            right += int((model(x).argmax(1) == y).sum().item())
            total += len(y)
    return right / total


def train(dataset: TensorDataset, mode: str = "eager", epochs: int = 10, batch: int = 64,
          lr: float = 1e-2, workers: int = 0, seed: int = 0, log=None,
          checkpoint: str | None = None, logdir: str | None = None) -> dict:
    """Train, returning ``{"losses": mean loss per epoch, "accuracy": test accuracy,
    "epoch_times": seconds per epoch}``; ``log(epoch, loss, accuracy)`` after each epoch.
    With ``checkpoint`` (a path), resume from it when it exists and save it after each epoch.
    With ``logdir``, write TensorBoard events there (SummaryWriter)."""
    if mode not in ("eager", "traced"):
        raise ValueError(f"mode must be 'eager' or 'traced', got {mode!r}")
    n_test = len(dataset) // 5
    train_set, test_set = random_split(dataset, [len(dataset) - n_test, n_test],
                                       generator=np.random.default_rng(seed))
    model = build_model(seed)
    tj.manual_seed(seed + 1)  # the shuffling order
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, num_workers=workers,
                              drop_last=mode == "traced")
    test_loader = DataLoader(test_set, batch_size=256)
    opt = optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    losses, times, start = [], [], 0
    if checkpoint is not None and os.path.exists(checkpoint):
        state = tj.load(checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        tj.set_rng_state(state["rng"])  # the shuffling order continues where it stopped
        start, losses = state["epoch"], list(state["losses"])
    run = tj.trace(step) if mode == "traced" else step
    writer = None
    if logdir is not None:
        from tracejit.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(logdir, purge_step=start)  # a resumed run replaces its future
        writer.add_graph(model, train_set[0][0].reshape(1, -1))
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        total = count = 0.0
        for x, y in progress(train_loader, desc=f"epoch {epoch}", leave=False):
            total += run(x, y).item() * len(y)
            count += len(y)
        times.append(time.perf_counter() - t0)
        losses.append(total / count)
        if checkpoint is not None:  # atomic: a crash mid-save keeps the previous epoch's
            tj.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": epoch + 1,
                     "losses": losses, "rng": tj.get_rng_state()}, checkpoint)
        if writer is not None:
            writer.add_scalar("loss/train", losses[-1], epoch)
            writer.add_scalar("accuracy/test", accuracy(model, test_loader), epoch)
            for name, p in model.named_parameters():
                writer.add_histogram(name, p, epoch)
        if log is not None:
            log(epoch, losses[-1], accuracy(model, test_loader))
    if writer is not None:
        writer.close()
    return {"losses": losses, "accuracy": accuracy(model, test_loader), "epoch_times": times}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("eager", "traced"), default="eager")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--data", help="an .npz file with arrays x (N x 64) and y (N)")
    parser.add_argument("--export", help="write scikit-learn's digits to this .npz and exit")
    parser.add_argument("--checkpoint", help="save after every epoch to this file (tj.save) "
                                             "and resume from it when it exists")
    parser.add_argument("--logdir", help="write TensorBoard events here (SummaryWriter)")
    args = parser.parse_args(argv)
    if args.export:
        arrays = load_digits_arrays()
        if arrays is None:
            print("--export needs scikit-learn (pip install -e '.[examples]')")
            return 1
        np.savez(args.export, x=arrays[0], y=arrays[1])
        print(f"wrote {args.export}: x {arrays[0].shape}, y {arrays[1].shape}")
        return 0
    dataset = build_dataset(args.data)
    if dataset is None:
        print("skipped: scikit-learn is not installed (pip install -e '.[examples]'); "
              "or pass --data digits.npz")
        return 0
    print(f"digits: {len(dataset)} images of 8x8, MLP 64-128-10, Adam(lr={args.lr}), batch "
          f"{args.batch}, {args.workers} workers, mode {args.mode}")

    def log(epoch, loss, acc):
        print(f"  epoch {epoch:3d}  loss {loss:.4f}  test accuracy {acc:.3f}")

    result = train(dataset, args.mode, args.epochs, args.batch, args.lr, args.workers, log=log,
                   checkpoint=args.checkpoint, logdir=args.logdir)
    print(f"final test accuracy {result['accuracy']:.3f}; median epoch time "
          f"{np.median(result['epoch_times']) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
