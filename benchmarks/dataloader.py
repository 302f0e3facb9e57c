"""DataLoader workers hide slow loading: an epoch of a training step over a dataset whose
``__getitem__`` is slow, with 0, 1 and 2 worker processes.

    python benchmarks/dataloader.py [--epochs 5] [--load-ms 1.0] [--kind sleep|numpy] [--quick]

Each sample costs ``--load-ms`` of loading: ``sleep`` waits (reading files, decoding on
another device: the CPU is free) and ``numpy`` computes (decoding, augmenting: it needs a core
of its own). The step is an eager tracejit MLP training step (784-256-10, SGD) on the batch.
Printed: median epoch times over ``--epochs`` epochs for loading only, the step only, and
loading + step with 0, 1, 2 workers (fresh workers each epoch, and persistent workers), and
the ratio to 0 workers. With enough cores the epoch approaches max(load / workers, step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import tracejit as tj
from tracejit import nn, optim
from tracejit.utils.data import DataLoader, Dataset

# compiled code is timed: compiles block (no interpreter tier), as before issue 13
os.environ.setdefault("TRACEJIT_SYNC_COMPILE", "1")

FEATURES, CLASSES = 784, 10


class SlowDataset(Dataset):
    """Deterministic samples, each taking ``load_ms`` to produce."""

    def __init__(self, n: int, load_ms: float, kind: str = "sleep") -> None:
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((n, FEATURES)).astype(np.float32)
        self.y = rng.integers(0, CLASSES, n)
        self.load_s, self.kind = load_ms / 1e3, kind

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        if self.kind == "sleep":
            time.sleep(self.load_s)
        else:  # busy numpy work for about load_s
            end = time.perf_counter() + self.load_s
            a = self.x[i].reshape(28, 28)
            while time.perf_counter() < end:
                a = np.tanh(a @ a.T * 1e-3)
        return self.x[i], int(self.y[i])


def make_step():
    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, CLASSES))
    opt = optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def median_epoch_ms(run_epoch, epochs: int) -> float:
    run_epoch()  # warm-up: first numpy/BLAS calls, imports in the workers
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        run_epoch()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--load-ms", type=float, default=1.0, help="loading cost per sample")
    parser.add_argument("--kind", choices=("sleep", "numpy"), default="sleep")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.samples, args.load_ms = 1, 64, 0.5
    ds = SlowDataset(args.samples, args.load_ms, args.kind)
    step = make_step()
    batches = [(tj.tensor(ds.x[i:i + args.batch]), tj.tensor(ds.y[i:i + args.batch]))
               for i in range(0, len(ds), args.batch)]

    def loop(loader, train=True):
        def epoch():
            for x, y in loader:
                if train:
                    step(x, y)
        return epoch

    results = {"load only": median_epoch_ms(loop(DataLoader(ds, batch_size=args.batch), False),
                                            args.epochs),
               "step only": median_epoch_ms(lambda: [step(x, y) for x, y in batches],
                                            args.epochs)}
    for workers in (0, 1, 2):
        fresh = DataLoader(ds, batch_size=args.batch, num_workers=workers, timeout=60 * workers)
        results[f"{workers} workers"] = median_epoch_ms(loop(fresh), args.epochs)
        if workers:
            kept = DataLoader(ds, batch_size=args.batch, num_workers=workers, timeout=60,
                              persistent_workers=True)
            results[f"{workers} workers, persistent"] = median_epoch_ms(loop(kept), args.epochs)
            del kept
    base = results["0 workers"]
    print(f"{len(ds)} samples, batch {args.batch}, {args.load_ms} ms {args.kind} per sample "
          f"({len(batches)} batches), median of {args.epochs} epochs")
    print("| run | median epoch | vs 0 workers |")
    print("|---|---|---|")
    for name, ms in results.items():
        ratio = "-" if name in ("load only", "step only") else f"{ms / base:.2f}x"
        print(f"| {name} | {ms:.1f} ms | {ratio} |")
    return results


if __name__ == "__main__":
    main()
