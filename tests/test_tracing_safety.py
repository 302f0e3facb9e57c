"""Tracing must never go silently wrong: threads, Python state the graph cannot see, values
frozen into the graph, and results whose kind changes between the first and later calls
(issue 9). See docs/tracing.md, "What tracing refuses"."""

from __future__ import annotations

import copy
import linecache
import logging
import pickle
import random
import subprocess
import sys
import threading
import time
import traceback
import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit.dispatch import current_tracer
from tracejit.errors import TraceError


def _chain(k):
    def f(x, w):
        y = x @ w
        for _ in range(12):
            y = (y * 0.5 + k).tanh()
        return y.sum(dim=1)
    return f


def _run_threads(target, n):
    errors: list = []

    def wrap(i):
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported below with its thread
            errors.append((i, e))

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise AssertionError(f"thread {errors[0][0]} failed") from errors[0][1]


# ----------------------------------------------------------------------------------------------
# threads


def test_threads_trace_different_and_same_functions_at_once():
    shared = tj.trace(_chain(1.0), backend="interpret")
    shared_cpu = tj.trace(_chain(2.0))
    start = threading.Barrier(6)

    def worker(i):
        own = tj.trace(_chain(float(i)), backend="interpret")
        rng = np.random.default_rng(i)
        start.wait()
        for it in range(25):
            n = 2 + it % 3  # new shapes keep tracing while other threads trace too
            x = tj.tensor(rng.standard_normal((n, 4)).astype(np.float32))
            w = tj.tensor(rng.standard_normal((4, 3)).astype(np.float32))
            for fn, k in ((own, float(i)), (shared, 1.0), (shared_cpu, 2.0)):
                got = fn(x, w)
                with tj.eager():
                    want = _chain(k)(x, w)
                np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
            assert current_tracer() is None  # no tracer leaks into this thread
            z = (x * 2).sum()  # eager code here is never recorded into another graph
            assert bool(z == z) and z.item() == pytest.approx(float(x.numpy().sum() * 2),
                                                              rel=1e-4, abs=1e-4)

    _run_threads(worker, 6)
    assert current_tracer() is None
    assert shared.cache_info().specializations == 3


def test_first_calls_of_one_function_from_many_threads():
    traced = tj.trace(_chain(0.5), backend="interpret")
    x, w = tj.randn(3, 4), tj.randn(4, 3)
    with tj.eager():
        want = traced(x, w).numpy()
    start = threading.Barrier(8)

    def worker(i):
        start.wait()
        for _ in range(10):
            np.testing.assert_allclose(traced(x, w).numpy(), want, rtol=1e-5)

    _run_threads(worker, 8)
    info = traced.cache_info()
    assert info.specializations == 1 and info.misses == 1  # traced once, by one thread
    # every other call ran compiled, or eagerly while the trace was in progress (+1: `want`)
    assert info.hits + info.eager_calls == 80 - 1 + 1


def test_eager_block_is_per_thread_and_set_mode_is_global():
    traced = tj.trace(lambda x: x * 2, backend="interpret")
    inside, done = threading.Event(), threading.Event()

    def debugging():
        with tj.eager():
            assert tj.get_mode() == "eager"
            inside.set()
            done.wait(10)

    t = threading.Thread(target=debugging)
    t.start()
    inside.wait(10)
    try:
        assert tj.get_mode() == "trace"
        traced(tj.ones(2))
        traced(tj.ones(2))
        assert traced.cache_info().eager_calls == 0  # this thread still traces
    finally:
        done.set()
        t.join()
    tj.set_mode("eager")
    try:
        seen = []
        th = threading.Thread(target=lambda: seen.append(tj.get_mode()))
        th.start()
        th.join()
        assert seen == ["eager"]
    finally:
        tj.set_mode("trace")


# ----------------------------------------------------------------------------------------------
# Python state tracing cannot see


def _dynamic_net(x):  # the PyTorch tutorial's dynamic net: a random number of extra layers
    for _ in range(random.randint(0, 3)):
        x = (x * 1.5).tanh()
    return x


def test_python_random_raises_at_the_users_line():
    with pytest.raises(TraceError) as e:
        tj.trace(_dynamic_net, backend="interpret")(tj.ones(3))
    msg = str(e.value)
    assert "random.randint()" in msg and "random.randint(0, 3)" in msg  # the user's line
    assert "tracejit.rand" in msg and "tracejit.eager()" in msg
    assert current_tracer() is None and sys.getprofile() is None


def test_dynamic_net_fix_pass_the_draw_as_an_argument():
    @tj.trace(backend="interpret")
    def net(x, n):
        for _ in range(n):
            x = (x * 1.5).tanh()
        return x

    random.seed(0)
    x = tj.ones(3)
    for _ in range(8):
        n = random.randint(0, 3)
        with tj.eager():
            want = net(x, n).numpy()
        np.testing.assert_allclose(net(x, n).numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("draw", [
    lambda: float(np.random.rand()),
    lambda: float(np.random.randn(2).sum()),
    lambda: float(np.random.randint(0, 5)),
])
def test_numpy_global_generator_raises(draw):
    with pytest.raises(TraceError, match="numpy's global random generator"):
        tj.trace(lambda x: x + draw(), backend="interpret")(tj.ones(2))


def test_a_generator_of_your_own_raises_at_the_users_line():
    rng, pyrng = np.random.default_rng(0), random.Random(0)
    legacy = np.random.RandomState(0)
    for draw, what in ((lambda x: x * float(rng.standard_normal()),
                        "your generator 'rng' (numpy.random._generator.Generator)"),
                       (lambda x: x * float(legacy.rand()),
                        "your generator 'legacy' (numpy.random.mtrand.RandomState)"),
                       (lambda x: x * pyrng.randint(0, 3),
                        "your generator 'pyrng' (random.Random)")):
        with pytest.raises(TraceError) as e:
            tj.trace(draw, backend="interpret")(tj.ones(2))
        assert what in str(e.value) and "test_tracing_safety.py" in str(e.value), str(e.value)

    class Noisy(tj.nn.Module):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(1)

        def forward(self, x):
            return x + float(self.rng.random())

    with pytest.raises(TraceError, match="your generator 'self.rng'"):
        tj.trace(Noisy(), backend="interpret")(tj.ones(2))


def test_random_is_caught_under_a_profiler_too():
    def net(x):
        return x * random.random()

    sys.setprofile(lambda *a: None)  # the call watch stays off: the state check still sees it
    try:
        with pytest.raises(TraceError, match="Python's random module"):
            tj.trace(net, backend="interpret")(tj.ones(2))
    finally:
        sys.setprofile(None)


def test_clock_and_open_raise(tmp_path):
    from time import perf_counter

    path = tmp_path / "scale.txt"
    path.write_text("3")

    def clock(x):
        return x * (time.time() > 0)

    def clock_imported(x):
        return x * perf_counter()

    def read(x):
        with open(path) as f:
            return x * float(f.read())

    for fn, what in ((clock, "time.time()"), (clock_imported, "time.perf_counter()"),
                     (read, "open()")):
        with pytest.raises(TraceError) as e:
            tj.trace(fn, backend="interpret")(tj.ones(2))
        assert what in str(e.value) and "fix:" in str(e.value)


def test_tracejit_randomness_and_warnings_are_fine(tmp_path):
    @tj.trace(backend="interpret")
    def f(x):
        # warnings and stack formatting read source files (linecache): not the user's open()
        warnings.warn("a warning while tracing", UserWarning, stacklevel=1)
        assert "test_tracing_safety.py" in "".join(traceback.format_stack())
        log.info("logging reads the clock and may open its file")
        noise = tj.rand(3) + tj.randn(3) + tj.randint(0, 3, (3,))
        return x + tj.nn.functional.dropout(noise, 0.5, training=True)

    log = logging.getLogger("tracejit.test_safety")
    handler = logging.FileHandler(tmp_path / "log.txt", delay=True)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            linecache.clearcache()
            a = f(tj.ones(3))
    finally:
        log.removeHandler(handler)
        handler.close()
    assert "logging reads" in (tmp_path / "log.txt").read_text()
    assert any("a warning while tracing" in str(w.message) for w in caught)
    b = f(tj.ones(3))
    assert not np.array_equal(a.numpy(), b.numpy())  # fresh draws on every call


# ----------------------------------------------------------------------------------------------
# values that would be frozen into the graph


@pytest.mark.parametrize("use, what", [
    (lambda x: print(x), "printing a tensor"),
    (lambda x: str(x), "printing a tensor"),
    (lambda x: repr(x), "printing a tensor"),
    (lambda x: f"{x}", "formatting a tensor"),
    (lambda x: format(x.sum(), ".3f"), "formatting a tensor"),
    (lambda x: pickle.dumps(x), "pickling a tensor"),
    (lambda x: np.asarray(x), "numpy array"),
    (lambda x: x.__array__(), "numpy array"),
    (lambda x: x.tolist(), "t.tolist()"),
    (lambda x: x.numpy(), "t.numpy()"),
    (lambda x: np.from_dlpack(x), "DLPack"),
])
def test_reading_values_raises(use, what):
    def f(x):
        y = x * 2
        use(y)
        return y

    with pytest.raises(TraceError) as e:
        tj.trace(f, backend="interpret")(tj.ones(3))
    msg = str(e.value)
    assert what in msg and "test_tracing_safety.py:" in msg  # names the op and the user's line
    if "print" in what:
        assert "tracejit.eager()" in msg and "TRACEJIT_DISABLE=1" in msg


@pytest.mark.parametrize("make", [
    copy.copy,
    copy.deepcopy,
    tj.from_dlpack,
])
def test_copies_are_traced(make):
    f = tj.trace(lambda x: make(x * 2) + 1, backend="interpret")
    f(tj.ones(3))
    np.testing.assert_allclose(f(tj.full((3,), 5.0)).numpy(), [11.0] * 3)


def test_eager_copies_and_pickle_unchanged():
    x = tj.randn(3, requires_grad=True)
    (x * 2).sum().backward()
    shallow, deep = copy.copy(x), copy.deepcopy(x)
    assert shallow._data is x._data and deep._data is not x._data
    loaded = pickle.loads(pickle.dumps(x))
    for y in (shallow, deep, loaded):
        assert y.requires_grad and np.array_equal(y.grad.numpy(), x.grad.numpy())
    f = tj.trace(lambda x: (x * 2, repr(tj.tensor([1.0, 2.0])))[0], backend="interpret")
    f(tj.ones(2))  # a constant made inside may be printed: its value is known


# ----------------------------------------------------------------------------------------------
# results keep their kind between the tracing call and later calls


def _kind(o):
    if isinstance(o, tj.Tensor):
        return ("tensor", o.requires_grad, o.grad_fn is None, o.dtype, o.shape)
    if isinstance(o, (tuple, list)):
        return (type(o).__name__, tuple(_kind(v) for v in o))
    if isinstance(o, dict):
        return ("dict", tuple((k, _kind(v)) for k, v in o.items()))
    return (type(o).__name__,)


@pytest.mark.parametrize("backend", ["interpret", "cpu"])
def test_training_step_returns_the_same_kind_every_call(backend):
    tj.manual_seed(0)
    model = tj.nn.Linear(4, 2)
    opt = tj.optim.SGD(model.parameters(), lr=0.1)

    @tj.trace(backend=backend)
    def step(x, y):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss, {"n": 3}

    x, y = tj.randn(8, 4), tj.randn(8, 2)
    kinds = [_kind(step(x, y)) for _ in range(4)]
    assert len(set(kinds)) == 1, kinds
    assert kinds[0][1][0] == ("tensor", False, True, np.dtype("float32"), ())
    loss, _ = step(x, y)
    with pytest.raises(RuntimeError, match="does not require grad"):
        loss.backward()  # its gradients were computed inside already



def test_a_step_over_the_specialization_limit_returns_the_same_kind():
    # past max_specializations a call runs eagerly: its results still come back as the
    # traced calls' do (detached: the step computed its own gradients)
    model = tj.nn.Linear(4, 2)
    opt = tj.optim.SGD(model.parameters(), lr=0.1)

    @tj.trace(backend="interpret", max_specializations=1)
    def step(x):
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        return loss

    traced = step(tj.randn(8, 4))
    with pytest.warns(RuntimeWarning, match="limit of 1 specializations"):
        eager = step(tj.randn(3, 4))  # a second shape: over the limit
    assert step.cache_info().eager_calls == 1
    assert _kind(traced)[:3] == _kind(eager)[:3] == ("tensor", False, True)


def _no_grad_part(x, w):
    with tj.no_grad():
        scale = (x @ w).sum()
    return (x @ w).sum() * scale


@pytest.mark.parametrize("backend", ["interpret", "cpu"])
def test_outputs_needing_grad_keep_their_kind(backend):
    w = tj.randn(4, 3, requires_grad=True)
    x = tj.randn(2, 4)
    fns = [
        lambda x, w: {"a": (x @ w).relu().sum(), "b": [x * 2, 3, 2.5], "c": ((x @ w).detach(),)},
        lambda x, w: w,  # an input returned as is: the same tensor every call
        _no_grad_part,
    ]
    for fn in fns:
        traced = tj.trace(fn, backend=backend)
        outs = []
        for _ in range(3):
            w.grad = None
            outs.append(traced(x, w))
        assert len({_kind(o) for o in outs}) == 1, [_kind(o) for o in outs]
    assert all(o is w for o in (tj.trace(fns[1], backend=backend)(x, w) for _ in range(3)))
    traced = tj.trace(_no_grad_part, backend=backend)
    grads = []
    for _ in range(3):
        w.grad = None
        traced(x, w).backward()
        grads.append(w.grad.numpy().copy())
    w.grad = None
    _no_grad_part(x, w).backward()
    for g in grads:  # no_grad inside is kept: later calls do not differentiate through it
        np.testing.assert_allclose(g, w.grad.numpy(), rtol=1e-5)


def test_tracing_the_first_erf_of_a_process():
    """erf's numpy implementation is a numba ufunc built on first use: numba's import and cache
    lookup read files, which the tracer's watch must not take for the user's own reads."""
    code = ("import tracejit as tj\n"
            "print(tj.trace(lambda x: x.erf())(tj.ones(3)).tolist())\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[0.8427007794380188, 0.8427007794380188, 0.8427007794380188]"
