"""Data-parallel scaling on MPI: the 784-256-10 MLP training step (SGD, batch 256 per rank) as
one traced whole step with DistributedDataParallel, on 1 rank x 1 thread and 2 ranks x 1
thread (samples/s of the job), and the gradient exchange per step beside a bare mpi4py
``Allreduce`` of the same bytes at the same point of the same loop.

    python benchmarks/distributed.py [--steps 40] [--batch 256] [--ranks 2]

Each configuration is its own ``mpiexec`` launch with NUMBA_NUM_THREADS=OMP_NUM_THREADS=1.
The exchange is measured two ways on rank 0: what it adds to the step (the DDP step's time
minus the same traced step without DDP, against the local step plus a bare
``comm.Allreduce`` of the same bytes minus the local step), and each exchange timed (medians:
the traced step's all_reduce node against the bare Allreduce at the same point of the loop;
both include waiting for the slower rank). Goals (issue 16): 2 ranks >= 1.7x the samples/s of
1; exchange <= 1.2x the bare Allreduce.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def worker(out: str, steps: int, batch: int) -> None:
    import tracejit as tj
    import tracejit.distributed as dist
    from tracejit import nn, optim
    from tracejit.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group()
    group = dist._default_group
    comm, MPI = group.comm, group.MPI
    rank, size = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(rank)
    x = tj.tensor(rng.standard_normal((batch, 784)).astype(np.float32))
    y = tj.tensor(rng.integers(0, 10, batch))

    def make(wrap: bool, trace_step: bool):
        tj.manual_seed(0)
        net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        model = DDP(net) if wrap else net
        if not trace_step:
            model = DDP(tj.trace(net)) if wrap else tj.trace(net)
        opt = optim.SGD(net.parameters(), lr=0.01)
        loss_fn = nn.CrossEntropyLoss()

        def step(x, y):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss.detach()
        return (tj.trace(step) if trace_step else step), net, model

    # the traced step's collective, timed by the group
    exchange: list = []
    group.times = exchange

    def run(step, n):
        for _ in range(3):
            step(x, y)
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(n):
            step(x, y)
        took = time.perf_counter() - t0
        return comm.allreduce(took, op=MPI.MAX)  # the job is as fast as its slowest rank

    step, net, _ = make(True, True)
    exchange.clear()
    took = run(step, steps)
    res = {"size": size, "samples_per_s": size * batch * steps / took,
           "step_ms": took / steps * 1e3}
    traced_exchange = exchange[3:]
    nbytes = sum(p.detach().numpy().nbytes for p in net.parameters())
    res["bytes"] = nbytes

    # the same step without DDP (no exchange), and with a bare Allreduce of the same bytes
    local, _, _ = make(False, True)
    buf = np.zeros(nbytes // 4, np.float32)
    bare: list = []

    def local_bare(x, y):
        local(x, y)
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        bare.append(time.perf_counter() - t0)
    took_local = run(local, steps)
    took_bare = run(local_bare, steps)
    if size > 1:
        # exchange cost per step: what the exchange adds to the step, DDP vs bare Allreduce
        # (both include waiting for the slower rank), and the exchanges timed one by one
        res["ddp_added_ms"] = (took - took_local) / steps * 1e3
        res["bare_added_ms"] = (took_bare - took_local) / steps * 1e3
        res["exchange_traced_ms"] = statistics.median(traced_exchange) * 1e3
        res["bare_allreduce_ms"] = statistics.median(bare[3:]) * 1e3
        # a bare Allreduce between ranks in step (after a barrier), the floor of both
        lone = []
        for _ in range(steps):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            lone.append(time.perf_counter() - t0)
        res["allreduce_in_step_ms"] = statistics.median(lone) * 1e3
    if rank == 0:
        with open(out, "w") as f:
            json.dump(res, f)
    dist.destroy_process_group()


def launch(n: int, steps: int, batch: int) -> dict:
    from tracejit.distributed.run import find_mpiexec

    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "res.json")
        subprocess.run([find_mpiexec(), "-n", str(n), sys.executable, __file__, "--worker", out,
                        "--steps", str(steps), "--batch", str(batch)], env=env, check=True,
                       timeout=1200)
        with open(out) as f:
            return json.load(f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=256, help="samples per rank and step")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.batch)
        return
    one = launch(1, args.steps, args.batch)
    many = launch(args.ranks, args.steps, args.batch)
    ratio = many["samples_per_s"] / one["samples_per_s"]
    print(f"MLP 784-256-10 traced SGD step, batch {args.batch} per rank, 1 thread per rank")
    print(f"  1 rank : {one['samples_per_s']:8.0f} samples/s ({one['step_ms']:.2f} ms/step)")
    print(f"  {args.ranks} ranks: {many['samples_per_s']:8.0f} samples/s "
          f"({many['step_ms']:.2f} ms/step)  scaling {ratio:.2f}x (goal >= 1.7x)")
    print(f"  gradient exchange per step ({many['bytes'] / 1e6:.2f} MB float32), ms:")
    ddp, bare = many["ddp_added_ms"], many["bare_added_ms"]
    print(f"    added to the step: DDP {ddp:.3f}, bare mpi4py Allreduce {bare:.3f} "
          f"({ddp / bare:.2f}x; goal <= 1.2x)")
    t, b = many["exchange_traced_ms"], many["bare_allreduce_ms"]
    print(f"    timed one by one:  DDP's all_reduce node {t:.3f}, bare Allreduce {b:.3f} "
          f"({t / b:.2f}x); a lone Allreduce after a barrier {many['allreduce_in_step_ms']:.3f}")


if __name__ == "__main__":
    main()
