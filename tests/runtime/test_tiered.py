"""Tiered execution (runtime/tiered.py, runtime/compile_worker.py): a new specialization runs on
the interpreter while a worker process compiles it; later calls switch to compiled code with
the same results. The rest of the suite compiles synchronously (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn, optim
from tracejit.runtime import compile_worker, tiered

WAIT_S = 240  # a compile on a busy 2-core machine


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    """Each test compiles into its own empty cache, so nothing is warm already (nor loaded in
    this process: a module it has run already needs no compile)."""
    from tracejit.runtime import compile as rcompile
    rcompile.forget()
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TRACEJIT_SYNC_COMPILE", raising=False)


def _runner(fn):
    (spec,) = fn.specs()
    return spec.runner


def _no_compile_here(runner):
    """The machine code came from the worker: this process compiled nothing itself."""
    from numba.core.dispatcher import Dispatcher
    module = runner.compiled.module
    for name, d in vars(module).items():
        if isinstance(d, Dispatcher):
            assert not sum(d._cache_misses.values()), f"{name} was compiled in this process"


def test_forward_switches_tiers_with_the_same_results():
    @tj.trace(compile="tiered")
    def f(x, w):
        return ((x @ w).tanh() * 1.25 + 0.5).softmax(-1)

    x, w = tj.randn(16, 8), tj.randn(8, 5)
    want = f(x, w).numpy()  # traced: runs eagerly
    runner = _runner(f)
    assert isinstance(runner, tiered.TieredRunner)
    assert runner.lowered is None  # lowered when it first runs
    got_interp = f(x, w).numpy()  # the fast tier, while a worker compiles
    assert runner.interpreted_calls == 1 or runner.state == "ready"
    assert tj.wait_compiles(WAIT_S)
    assert runner.state == "ready" and runner.tier == "compiled"
    got_compiled = f(x, w).numpy()
    assert "def entry" in f.source(x, w)
    np.testing.assert_allclose(got_interp, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_compiled, want, rtol=1e-5, atol=1e-6)
    _no_compile_here(runner)


def test_interpreted_calls_leave_the_compiling_workers_their_cores(monkeypatch):
    # BLAS threads spinning beside the workers made interpreted steps 8x slower on 2 cores
    threadpoolctl = pytest.importorskip("threadpoolctl")  # the dev and blas extras have it

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"]

    @tj.trace(compile="tiered")
    def f(x, w):
        return (x @ w).relu()

    x, w = tj.randn(64, 64), tj.randn(64, 64)
    f(x, w)  # traced
    runner = _runner(f)
    interpret, seen = tiered.interpret_runner(runner.graph), []

    def recording(*arrays):
        seen.append(blas_threads())
        return interpret(*arrays)

    monkeypatch.setattr(runner, "_interpret", recording)
    before = blas_threads()
    got = f(x, w).numpy()  # a worker compiles it meanwhile
    assert blas_threads() == before  # as it was, once the call returned
    assert tj.wait_compiles(WAIT_S)
    np.testing.assert_allclose(got, f(x, w).numpy(), rtol=1e-5, atol=1e-6)
    want = max(1, os.cpu_count() - len(compile_worker.running().slots))
    assert seen and all(n == want for n in seen[0]), (seen, before)


def test_compiled_backward_switches_tiers():
    @tj.trace(compile="tiered")
    def f(x, w):
        return (x @ w).sigmoid().mul(0.75).sum()

    x = tj.randn(6, 4)
    w = tj.randn(4, 3, requires_grad=True)
    grads = []
    for _ in range(2):  # traces; then the forward and backward graphs start on the interpreter
        w.grad = None
        f(x, w).backward()
        grads.append(w.grad.numpy().copy())
    assert tj.wait_compiles(WAIT_S)
    w.grad = None
    f(x, w).backward()
    grads.append(w.grad.numpy().copy())
    (spec,) = f.specs()
    assert spec.compiled_grad is not None
    for g in grads[1:]:
        np.testing.assert_allclose(g, grads[0], rtol=1e-5, atol=1e-6)


def _training(compile_mode, steps, wait_after=None):
    tj.manual_seed(3)
    model = nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 3))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(1)
    x = tj.tensor(rng.standard_normal((12, 7)).astype(np.float32))
    y = tj.tensor(rng.integers(0, 3, 12))

    def step(x, y):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    if compile_mode is not None:
        step = tj.trace(step, compile=compile_mode)
    losses, before = [], []
    for k in range(steps):
        if k == wait_after:
            before = [s.runner for s in step.specs()]
            assert tj.wait_compiles(WAIT_S)
        losses.append(step(x, y).item())
    return losses, [p.detach().numpy().copy() for p in model.parameters()], step, before


def test_in_place_training_step_switches_tiers():
    eager_losses, eager_params, _, _ = _training(None, 6)
    losses, params, step, before = _training("tiered", 6, wait_after=4)
    # steps 2-4 ran on the fast tier; then the compiled Runner replaced the tiered one
    assert any(isinstance(r, tiered.TieredRunner) and r.interpreted_calls for r in before)
    assert any(s.calls and not isinstance(s.runner, tiered.TieredRunner) for s in step.specs())
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-5, atol=1e-6)
    for p, q in zip(params, eager_params):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)


def test_a_compile_that_fails_in_the_worker_stays_on_the_interpreter(capfd, monkeypatch):
    monkeypatch.setenv("TRACEJIT_DEBUG", "compiles")

    @tj.trace(compile="tiered")
    def f(x):
        return (x * 3.5 - 1.0).relu().sum(0)

    x = tj.randn(5, 4)
    want = f(x).numpy()
    tiered._simulate_failure.append(True)
    f(x)
    assert tj.wait_compiles(WAIT_S)
    runner = _runner(f)
    assert runner.state == "failed"
    with pytest.warns(RuntimeWarning, match=r"compiling \S*f failed in a compile worker"):
        got = f(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        np.testing.assert_allclose(f(x).numpy(), want, rtol=1e-6)
    assert "the background compile failed" in capfd.readouterr().err


def test_a_killed_worker_is_replaced_and_the_compile_runs_again():
    pool = compile_worker.pool()
    deaths = pool.deaths

    @tj.trace(compile="tiered")
    def f(x):
        return (x * 0.25).exp().sum(1) - 2.0

    x = tj.randn(6, 3)
    want = f(x).numpy()
    f(x)  # submitted: kill every worker now, mid-job or before it
    runner = _runner(f)
    deadline = time.monotonic() + WAIT_S
    while not any(s.proc is not None for s in pool.slots) and time.monotonic() < deadline:
        time.sleep(0.01)  # a new pool forks its workers once the zygote is warm
    for pid in pool.pids():
        os.kill(pid, 9)
    assert tj.wait_compiles(WAIT_S)
    assert runner.state == "ready", runner.failure
    if pool.deaths == deaths:  # the job had ended before the kill: the next one notices

        @tj.trace(compile="tiered")
        def g(x):
            return (x * 0.5).exp().sum(0)
        g(x), g(x)
        assert tj.wait_compiles(WAIT_S)
    assert pool.deaths > deaths
    np.testing.assert_allclose(f(x).numpy(), want, rtol=1e-5)
    assert len(pool.pids()) >= 1  # the pool keeps working


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def _compiles_once(label, scale=0.5):
    @tj.trace(compile="tiered")
    def f(x):  # a new module (and compile) for each scale
        return (x * scale).tanh() + 1.0

    x = tj.randn(5)
    want = f(x).numpy()
    runner = _runner(f)
    f(x)
    assert tj.wait_compiles(WAIT_S)
    assert runner.state == "ready", (label, runner.failure)
    np.testing.assert_allclose(f(x).numpy(), want, rtol=1e-5)


@pytest.mark.skipif(not compile_worker.FORK, reason="workers fork from a zygote on Linux only")
def test_workers_are_forks_of_one_warmed_up_zygote():
    compile_worker.shutdown()
    pool = compile_worker.pool()
    _compiles_once("forked")
    zygote = pool.zygote.proc.pid
    workers = [s.proc.pid for s in pool.slots if s.proc is not None]
    assert workers and all(_parent(pid) == zygote for pid in workers)
    assert set(pool.pids()) == {zygote, *workers}
    # the zygote dies: workers start on their own again, and compiles go on
    for pid in workers:  # (first: the zygote reaps them)
        os.kill(pid, 9)
    os.kill(zygote, 9)
    _compiles_once("after the zygote died", 0.25)
    assert pool.zygote is None
    alive = [s.proc.pid for s in pool.slots if s.proc is not None and s.proc.poll() is None]
    assert alive and all(_parent(pid) == os.getpid() for pid in alive)
    compile_worker.shutdown()


def test_workers_without_a_zygote(monkeypatch):
    compile_worker.shutdown()
    monkeypatch.setattr(compile_worker, "FORK", False)
    pool = compile_worker.pool()
    assert pool.zygote is None
    _compiles_once("no zygote", 0.75)
    compile_worker.shutdown()
    assert all(s.proc.returncode is not None for s in pool.slots if s.proc is not None)


def test_a_worker_imports_what_compiling_needs_not_the_front_end():
    script = compile_worker._BOOT + "; " + textwrap.dedent("""\
        import os, tracejit.runtime.compile_worker as cw
        os.environ[cw.PREIMPORT_ENV] = "tracejit.codegen.mathlib,tracejit.codegen.prelude"
        cw._prewarm()
        import tracejit.runtime.compile, tracejit.codegen.program
        print(sorted(m for m in ("tracejit.tensor", "tracejit.nn", "numba") if m in sys.modules))
    """).replace("\n", "; ")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['numba']"]


def test_decorating_and_a_first_tiered_call_leave_numba_unimported(tmp_path):
    script = textwrap.dedent("""
        import sys
        import tracejit as tj

        f = tj.trace(lambda x: x * 2.0 + 1.0, compile="tiered")
        assert "numba" not in sys.modules, "decorating imported numba"
        f(tj.ones(3))
        print("numba" in sys.modules)
    """)
    env = dict(os.environ, TRACEJIT_CACHE_DIR=str(tmp_path / "c"))
    env.pop("TRACEJIT_SYNC_COMPILE", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]  # the workers compile; this process interprets


def test_workers_leave_no_process_behind_at_exit(tmp_path):
    script = textwrap.dedent("""
        import tracejit as tj
        from tracejit.runtime import compile_worker

        @tj.trace(compile="tiered")
        def f(x):
            return x * 2.0 + 1.0

        x = tj.ones(3)
        f(x); f(x)  # a compile in flight at exit
        print(*compile_worker.running().pids(), flush=True)
    """)
    env = dict(os.environ, TRACEJIT_CACHE_DIR=str(tmp_path / "c"))
    env.pop("TRACEJIT_SYNC_COMPILE", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert pids
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _exists(p)]
        time.sleep(0.1)
    assert not alive, f"worker processes {alive} outlived their parent"


def test_shutdown_reaps_the_workers():
    pool = compile_worker.pool()
    _compiles_once("before shutdown", 1.5)  # the workers have started
    procs = [s.proc for s in pool.slots if s.proc is not None]
    if pool.zygote is not None:
        procs.append(pool.zygote.proc)
    compile_worker.shutdown()
    assert procs and all(p.returncode is not None for p in procs)  # waited for: no zombies
    assert not any(_exists(p.pid) for p in procs)
    assert compile_worker.running() is None


def test_the_same_code_compiles_once():
    def body(x):
        return (x * 1.75).sin().sum(0)

    f, g = tj.trace(body, compile="tiered"), tj.trace(body, compile="tiered")
    x = tj.randn(4, 3)
    want = body(x).numpy()
    f(x), g(x)  # trace both
    pool = compile_worker.pool()
    before = pool.submitted
    rf, rg = _runner(f), _runner(g)
    f(x)  # submits
    g(x)  # waits for f's compile (or loads it, should it be done already)
    assert tj.wait_compiles(WAIT_S)
    assert pool.submitted - before == 1
    assert rf.state == rg.state == "ready"
    for fn in (f, g):
        np.testing.assert_allclose(fn(x).numpy(), want, rtol=1e-5)


def test_modes(monkeypatch):
    assert tiered.resolve_mode("sync") == "sync"
    assert tiered.resolve_mode(None) == "tiered"
    monkeypatch.setenv("TRACEJIT_SYNC_COMPILE", "1")
    assert tiered.resolve_mode(None) == "sync"
    assert tiered.resolve_mode("tiered") == "tiered"  # the argument wins
    monkeypatch.delenv("TRACEJIT_SYNC_COMPILE")
    monkeypatch.setenv("TRACEJIT_COMPILE_WORKERS", "0")
    assert tiered.resolve_mode(None) == "sync"
    with pytest.raises(ValueError, match="compile must be one of"):
        tj.trace(lambda x: x, compile="later")


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still exists: read its state
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _kernel_source(name, loops=0, calls=(), parallel=False):
    body = "".join(f"    for i{k} in range(n):\n        out[i{k}] = a[i{k}]\n"
                   for k in range(loops))
    body += "".join(f"    out[0] = {c}(a[0])\n" for c in calls)
    return (f"@numba.njit(parallel={parallel}, cache=True)\ndef {name}(a, out, n):\n"
            f"    # a: f32[n] -> out: f32[n]\n{body}\n\n")


def test_a_python_entry_is_split_by_compile_cost():
    from types import SimpleNamespace
    src = _kernel_source("k1", 2, parallel=True) + _kernel_source("k2", 3) + \
        _kernel_source("k3", 2) + _kernel_source("k4", 1) + "def entry(a, out, n):\n    pass\n"
    costs = tiered._costs(src)
    assert costs["k4"][0] < costs["k3"][0] < costs["k2"][0] < costs["k1"][0]  # parallel: 3x
    assert costs["k4"][0] == tiered._costs(_kernel_source("k4", 1))["k4"][0]  # not the entry
    program = SimpleNamespace(source=src, kernels=["k1", "k2", "k3", "k4"], jit_entry=False)
    groups = tiered._split(program, 2)
    assert sorted(map(sorted, groups)) == [["k1"], ["k2", "k3", "k4"]]
    assert tiered._split(program, 1) == [program.kernels]
    program.jit_entry = True  # numba compiles a jit entry and its kernels in one process
    assert tiered._split(program, 2) == [program.kernels]


def test_kernels_calling_the_same_float32_approximation_share_a_worker():
    from types import SimpleNamespace
    src = _kernel_source("k1", 1, ["exp", "log"]) + _kernel_source("k2", 1, ["exp"]) + \
        _kernel_source("k3", 10)
    assert tiered._costs(src)["k1"][1] == {"exp", "log"}
    program = SimpleNamespace(source=src, kernels=["k1", "k2", "k3"], jit_entry=False)
    # k2 alone costs about k3; with k1 it does not compile exp again
    assert sorted(map(sorted, tiered._split(program, 2))) == [["k1", "k2"], ["k3"]]
