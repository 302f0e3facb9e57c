"""Data-parallel scaling on MPI: the 784-256-10 MLP training step (SGD, batch 256 per rank) as
one traced whole step with DistributedDataParallel, on 1 rank x 1 thread and 2 ranks x 1
thread (samples/s of the job), and the gradient exchange per step beside a bare mpi4py
``Allreduce`` of the same bytes at the same point of the same loop.

    python benchmarks/distributed.py [--steps 200] [--batch 256] [--ranks 2] [--repeat 3]

Each configuration is its own ``mpiexec`` launch with NUMBA_NUM_THREADS=OMP_NUM_THREADS=1.
The exchange is measured two ways: what it adds to the step (the DDP step's time minus the
same step without DDP, against the local step plus a bare ``comm.Allreduce`` of the same bytes
minus the local step; both include waiting for the slower rank), and each exchange timed on
the rank that arrives last (which waits for nobody: the exchange itself), medians over steps:
the traced step's all_reduce node, or DDP's bucket work in an eager backward (copies into the
bucket, Iallreduce, wait, the 1/world scaling), against the bare Allreduce. Goals (issue
16): 2 ranks >= 1.7x the samples/s of 1; exchange <= 1.2x the bare Allreduce.
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
        model = net if trace_step else tj.trace(net)
        if wrap:
            model = DDP(model)
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
    nbytes = sum(p.detach().numpy().nbytes for p in make(False, True)[1].parameters())
    buf = np.zeros(nbytes // 4, np.float32)
    bare: list = []

    def with_bare(local):
        def step(x, y):
            local(x, y)
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            bare.append(time.perf_counter() - t0)
        return step

    res = {"size": size, "bytes": nbytes}
    for mode, traced_step in (("step", True), ("model", False)):
        ddp_step, _, ddp_model = make(True, traced_step)
        local = make(False, traced_step)[0]
        runs = {"ddp": ddp_step, "local": local, "bare": with_bare(local)}
        for fn in runs.values():  # warm up: trace, compile
            for _ in range(3):
                fn(x, y)
        # NOTE: measure compiled steps only: compiles still running in the background (the
        # tiered compile workers) take the cores the ranks and MPI's progress need
        tj.wait_compiles()
        for fn in runs.values():
            fn(x, y)
        # rounds in turn, so a change of the machine's load falls on all three alike
        took = dict.fromkeys(runs, 0.0)
        red = ddp_model._reducer
        exchange.clear()
        bare.clear()
        hook_s = []
        rounds = 5
        for _ in range(rounds):
            for name, fn in runs.items():
                comm.Barrier()
                t0 = time.perf_counter()
                for _ in range(steps // rounds):
                    before, nodes = red.exchange_s, len(exchange)
                    fn(x, y)
                    if name == "ddp":  # this step's exchange: the hooks' or the nodes' time
                        hook_s.append(sum(exchange[nodes:]) if traced_step
                                      else red.exchange_s - before)
                took[name] += comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        n = rounds * (steps // rounds)
        res[mode] = {k: v / n * 1e3 for k, v in took.items()}
        res[mode]["samples_per_s"] = size * batch * n / took["ddp"]
        if size > 1:
            # what the exchange adds to the step (both include waiting for the slower rank),
            # and the exchanges timed one by one
            res[mode]["ddp_added_ms"] = res[mode]["ddp"] - res[mode]["local"]
            res[mode]["bare_added_ms"] = res[mode]["bare"] - res[mode]["local"]
            res[mode]["exchange_ms"] = _last_arrival(comm, hook_s)
            res[mode]["bare_allreduce_ms"] = _last_arrival(comm, bare)
    if size > 1:  # a bare Allreduce between ranks in step (after a barrier): the floor
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


def _last_arrival(comm, times: list) -> float:
    """Median over steps of the shortest exchange among the ranks (ms): the rank that arrives
    last waits for nobody, so its time is the exchange itself, without the other ranks' lag."""
    everyone = comm.allgather(times)
    n = min(len(t) for t in everyone)
    return statistics.median(min(t[k] for t in everyone) for k in range(n)) * 1e3


def _median(results: list):
    """Key by key, the median of the launches' figures (nested dicts alike)."""
    first = results[0]
    if isinstance(first, dict):
        return {k: _median([r[k] for r in results]) for k in first}
    return statistics.median(results)


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
    ap.add_argument("--steps", type=int, default=200,
                    help="steps per configuration and launch (at 40, the exchange's 0.1 ms "
                         "differences drowned in the machine's noise)")
    ap.add_argument("--batch", type=int, default=256, help="samples per rank and step")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="launches per configuration")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.batch)
        return
    # launches alternate (1, N, 1, N, ...): a change of the machine's load falls on both alike;
    # each figure is the median over the repeats
    ones, manys = [], []
    for _ in range(args.repeat):
        ones.append(launch(1, args.steps, args.batch))
        manys.append(launch(args.ranks, args.steps, args.batch))
    one, many = _median(ones), _median(manys)
    print(f"(medians of {args.repeat} alternating launches per configuration)")
    print(f"MLP 784-256-10 SGD step, batch {args.batch} per rank, 1 thread per rank, "
          f"{many['bytes'] / 1e6:.2f} MB of float32 gradients")
    for mode, what in (("step", "traced whole step"),
                       ("model", "traced model, eager backward and update")):
        o, m = one[mode], many[mode]
        # each 2-rank launch against the 1-rank launch just before it
        ratio = statistics.median(b[mode]["samples_per_s"] / a[mode]["samples_per_s"]
                                  for a, b in zip(ones, manys))
        print(f"  {what}:")
        print(f"    1 rank : {o['samples_per_s']:8.0f} samples/s ({o['ddp']:.2f} ms/step)")
        print(f"    {args.ranks} ranks: {m['samples_per_s']:8.0f} samples/s ({m['ddp']:.2f} "
              f"ms/step)  scaling {ratio:.2f}x (goal >= 1.7x)")
        # the ceiling on this machine: the same ranks running the step with no exchange at all
        free = statistics.median(a[mode]["local"] / b[mode]["local"] * args.ranks
                                 for a, b in zip(ones, manys))
        print(f"    {args.ranks} ranks stepping with no exchange at all: {free:.2f}x of 1 rank "
              f"(what this machine's cores give)")
        ddp, bare = m["ddp_added_ms"], m["bare_added_ms"]
        print(f"    exchange added to the step: DDP {ddp:.3f} ms, bare mpi4py Allreduce "
              f"{bare:.3f} ms ({ddp / bare:.2f}x; goal <= 1.2x)")
        t, b = m["exchange_ms"], m["bare_allreduce_ms"]
        print(f"    exchange on the last rank to arrive: DDP {t:.3f} ms, bare Allreduce "
              f"{b:.3f} ms ({t / b:.2f}x; goal <= 1.2x)")
    print(f"  a lone Allreduce of the same bytes after a barrier: "
          f"{many['allreduce_in_step_ms']:.3f} ms")


if __name__ == "__main__":
    main()
