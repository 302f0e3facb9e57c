"""tracejit.distributed on MPI: the cases in cases.py run in one 2-rank launch (through
``python -m tracejit.distributed.run``), one numba/BLAS thread per rank; the timeout cases in
two more; errors before init and the launcher's messages in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the dist extra (mpi4py, mpich) is not installed")

from tracejit.distributed.run import find_mpiexec  # noqa: E402

HERE = Path(__file__).resolve().parent
CASES = ["all_reduce_every_op_and_dtype", "broadcast_gather_scatter_barrier",
         "traced_all_reduce_is_a_graph_node",
         *[f"ddp_{m}_{k}" for m in ("eager", "traced_model", "traced_step")
           for k in ("sgd", "adam")],
         "ddp_no_sync_accumulates", "ddp_weight_used_twice_and_grads_kept",
         "ddp_layout_mismatch_is_an_error", "ddp_broadcasts_parameters_and_buffers",
         "sampler_partitions_an_epoch"]


def _env():
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("TRACEJIT_DIST_TIMEOUT", None)
    return env


def _launch(script: str, *args, nproc: int = 2, timeout: float = 300, dist_timeout=60):
    cmd = [sys.executable, "-m", "tracejit.distributed.run", "-n", str(nproc), "--threads", "1",
           "--timeout", str(dist_timeout), str(HERE / script), *map(str, args)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "results.json"
    proc = _launch("cases.py", out)
    if not out.exists():
        pytest.fail(f"the 2-rank launch wrote no results (status {proc.returncode})\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def test_every_case_ran(results):
    assert sorted(results) == sorted(CASES)


@pytest.mark.parametrize("name", CASES)
def test_case_on_two_ranks(results, name):
    assert results.get(name) == "ok", results.get(name)


@pytest.mark.parametrize("mode", ["hang", "die"])
def test_a_rank_that_dies_or_hangs_stops_the_others(mode):
    start = time.monotonic()
    proc = _launch("dead_rank.py", mode, timeout=60, dist_timeout=2)
    took = time.monotonic() - start
    assert proc.returncode != 0
    assert "finished an all_reduce" not in proc.stdout
    assert took < 30, took  # rank 1 sleeps 60 s: nobody waited for it
    err = proc.stderr
    if mode == "hang":
        assert "rank 0 of 2: all_reduce(sum) of float32[3] did not complete within the 2 s " \
               "timeout" in err, err
        assert "Aborting all ranks" in err
    else:
        assert "exited with status 7" in err, err


def test_without_a_launcher_the_world_is_one_rank(tmp_path):
    script = tmp_path / "alone.py"
    script.write_text(
        "import tracejit as tj, tracejit.distributed as dist\n"
        "from tracejit.nn.parallel import DistributedDataParallel as DDP\n"
        "dist.init_process_group()\n"
        "t = tj.arange(3.0)\n"
        "dist.all_reduce(t, op=dist.ReduceOp.AVG)\n"
        "m = DDP(tj.nn.Linear(2, 1))\n"
        "m(tj.ones(4, 2)).sum().backward()\n"
        "print(dist.get_rank(), dist.get_world_size(), t.tolist(), m.module.bias.grad.tolist())\n"
        # a traced whole step: the gradients go into the bucket without copies of their own
        "opt = tj.optim.SGD(m.parameters(), lr=0.1)\n"
        "@tj.trace\n"
        "def step(x):\n"
        "    opt.zero_grad(); m(x).sum().backward(); opt.step()\n"
        "x = tj.ones(4, 2)\n"
        "for _ in range(3): step(x)\n"
        "ops = [n.op for n in step.specs()[-1].compiled.optimized.nodes]\n"
        "print(ops.count('all_reduce'), ops.count('copy'))\n"
        "dist.destroy_process_group()\n")
    proc = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "0 1 [0.0, 1.0, 2.0] [4.0]"
    assert proc.stdout.split("\n")[1] == "1 0", proc.stdout


def test_collectives_before_init_are_errors():
    import tracejit as tj
    import tracejit.distributed as dist
    from tracejit.nn.parallel import DistributedDataParallel

    assert not dist.is_initialized() and dist.is_available()
    for call in (lambda: dist.all_reduce(tj.ones(2)), dist.get_rank, dist.get_world_size,
                 dist.barrier, lambda: dist.broadcast(tj.ones(2), 0),
                 lambda: DistributedDataParallel(tj.nn.Linear(2, 2))):
        with pytest.raises(RuntimeError, match="process group has not been initialized.*"
                                               "init_process_group"):
            call()

    @tj.trace
    def f(x):
        return tj.dispatch.apply(tj.ops.ALL_REDUCE, x, reduce="sum")
    with pytest.raises(RuntimeError, match="all_reduce: the default process group is not "
                                           "initialized"):
        f(tj.ones(2))
    with pytest.raises(ValueError, match="backend 'nccl' is not available"):
        dist.init_process_group(backend="nccl")


def test_launcher_messages(monkeypatch, capsys):
    from tracejit.distributed import run

    args = run.parser().parse_args(["-n", "3", "--timeout", "5", "train.py", "--lr", "1"])
    cmd, env = run.command(args)
    assert cmd[1:3] == ["-n", "3"] and cmd[-3:] == ["train.py", "--lr", "1"]
    assert env["TRACEJIT_DIST_TIMEOUT"] == "5.0"
    args = run.parser().parse_args(["-n", "2", "--hosts", "a,b", "x.py"])
    assert run.command(args)[0][3:5] == ["-hosts", "a,b"]
    assert os.path.exists(find_mpiexec())
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    with pytest.raises(SystemExit,
                       match=r"mpi4py is not installed.*pip install 'tracejit\[dist\]'"):
        run.command(run.parser().parse_args(["x.py"]))
    monkeypatch.setattr(run.shutil, "which", lambda name: None)
    monkeypatch.setattr(run.sys, "executable", "/nowhere/python")
    with pytest.raises(SystemExit, match="no mpiexec found"):
        run.find_mpiexec()


class _WorldOfTwo:
    """A stand-in process group for in-process graph tests: every rank holds the same values."""

    def __init__(self):
        self.in_place = 0  # calls whose input the compiled entry donated

    def all_reduce_array(self, x, reduce, in_place=False):
        import numpy as np
        if in_place:  # the result goes into x, as MPI's IN_PLACE would write it
            self.in_place += 1
            if reduce == "sum":
                x *= 2
            return x
        return np.array(x * 2 if reduce == "sum" else x, order="C")


def test_all_reduce_graphs_round_trip_and_stay_through_the_passes(monkeypatch):
    import numpy as np

    import tracejit as tj
    import tracejit.distributed as dist
    from tracejit import ops
    from tracejit.runtime.interpret import interpret
    from tracejit.serialize import dumps, loads

    monkeypatch.setattr(dist, "_default_group", object())  # "initialized"
    world = _WorldOfTwo()
    monkeypatch.setattr(ops, "collective_backend", world)

    def f(x):
        y = x * 3
        dist.all_reduce(y)  # its result is used
        unused = x + 1
        dist.all_reduce(unused)  # its result is not: the collective still runs (impure)
        z = x * 3
        dist.all_reduce(z)  # the same as y: never merged with it (cse)
        return y + z

    x = tj.arange(4.0)
    for backend in ("interpret", "cpu"):
        traced = tj.trace(f, backend=backend)
        for _ in range(2):
            np.testing.assert_array_equal(traced(x).numpy(), np.arange(4) * 12)
        graph = traced.graph(x)
        assert [n.op for n in graph.nodes].count("all_reduce") == 3, graph
    # the one compiled call (the first traces): x * 3 is computed once (cse), so only its
    # second all-reduce, after which nothing reads it, may reduce into it; so may x + 1's
    assert world.in_place == 2, world.in_place
    loaded = loads(dumps(graph))
    np.testing.assert_array_equal(interpret(loaded, [np.arange(4.0, dtype=np.float32)])[0],
                                  np.arange(4) * 12)
    with pytest.raises(NotImplementedError, match="all_reduce: no gradient for op='max'"):
        y = tj.ones(2, requires_grad=True) * 1
        tj.dispatch.apply(ops.ALL_REDUCE, y, reduce="max").sum().backward()
    with pytest.raises(NotImplementedError, match="broadcast inside a traced function"):
        tj.trace(lambda t: dist.broadcast(t, 0) or t)(x)


def _example(*args, timeout=300):
    example = HERE.parent.parent / "examples" / "distributed_cnn.py"
    cmd = [sys.executable, "-m", "tracejit.distributed.run", "-n", "2", "--threads", "1",
           "--timeout", "120", str(example), *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [float(line.split()[3]) for line in proc.stdout.splitlines()
              if line.startswith("step")]
    assert losses and all(np.isfinite(losses)), proc.stdout
    return losses


def test_the_cnn_example_trains_on_two_ranks_eagerly():
    losses = _example("--eager", "--steps", "4", "--samples", "64", "--batch", "8")
    assert len(losses) == 2  # steps 0 and 3 are printed


@pytest.mark.slow
def test_the_cnn_example_traced_learns():
    losses = _example("--steps", "30", timeout=900)
    assert losses[-1] < losses[0]
