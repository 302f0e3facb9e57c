"""The CNN of examples/cnn.py trained data-parallel on MPI ranks (random class-pattern images).

    python -m tracejit.distributed.run -n 2 examples/distributed_cnn.py --steps 20
    python examples/distributed_cnn.py --steps 20        # alone: a world of one rank

Every rank builds the model (DistributedDataParallel broadcasts rank 0's weights), reads its
own share of the dataset through a DistributedSampler, and runs the whole training step
(forward, loss, backward with the gradient all-reduce, SGD update) as one traced graph
(``--eager`` runs it op by op instead). Rank 0 prints the loss averaged over the ranks.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cnn import build_model, make_data  # noqa: E402

import tracejit as tj  # noqa: E402
import tracejit.distributed as dist  # noqa: E402
from tracejit import nn, optim  # noqa: E402
from tracejit.nn.parallel import DistributedDataParallel  # noqa: E402
from tracejit.utils.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402


def main(argv=None) -> list:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16, help="images per rank and step")
    ap.add_argument("--samples", type=int, default=512, help="images in the dataset")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--eager", action="store_true", help="do not trace the training step")
    args = ap.parse_args(argv)

    dist.init_process_group(backend="mpi")
    rank, world = dist.get_rank(), dist.get_world_size()

    images, labels = make_data(args.samples, seed=0)  # the same dataset on every rank
    dataset = TensorDataset(tj.tensor(images), tj.tensor(labels))
    sampler = DistributedSampler(dataset, shuffle=True, seed=0, drop_last=True)
    loader = DataLoader(dataset, batch_size=args.batch, sampler=sampler, drop_last=True)

    model = DistributedDataParallel(build_model(seed=rank))  # rank 0's weights win
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def train_step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()  # DistributedDataParallel averages the gradients here
        opt.step()
        return loss.detach()
    step_fn = train_step if args.eager else tj.trace(train_step)

    losses, step, epoch = [], 0, 0
    while step < args.steps:
        sampler.set_epoch(epoch)  # a new permutation each epoch, the same on every rank
        for x, y in loader:
            loss = step_fn(x, y)
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)  # for printing: the mean over ranks
            losses.append(float(loss.item()))
            if rank == 0 and (step % 5 == 0 or step == args.steps - 1):
                print(f"step {step:3d}  loss {losses[-1]:.4f}  ({world} ranks)", flush=True)
            step += 1
            if step == args.steps:
                break
        epoch += 1
    dist.destroy_process_group()
    return losses


if __name__ == "__main__":
    main()
