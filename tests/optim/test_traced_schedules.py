"""A traced training step under a learning-rate schedule: the optimizer's numbers are graph
inputs, so no epoch traces again, and the parameters are those eager training gives."""

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn, optim
from tracejit.optim.lr_scheduler import ExponentialLR, MultiStepLR, StepLR

SCHEDULERS = {
    "step": lambda opt: StepLR(opt, step_size=2, gamma=0.5),
    "multistep": lambda opt: MultiStepLR(opt, milestones=[1, 3, 4], gamma=0.3),
    "exponential": lambda opt: ExponentialLR(opt, gamma=0.7),
}
OPTIMIZERS = {
    # (constructor, traces: SGD's first momentum step differs from the others, so 2)
    "sgd_momentum": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4), 2),
    "sgd_nesterov": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True), 2),
    "adam": (lambda p: optim.Adam(p, lr=0.01, weight_decay=1e-3), 1),
    "adamw": (lambda p: optim.AdamW(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6), 1),
    "adam_amsgrad": (lambda p: optim.Adam(p, lr=0.01, amsgrad=True), 1),
}


def _train(make_opt, make_sched, backend=None, epochs=6, steps=3):
    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = make_opt(model.parameters())
    sched = make_sched(opt)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(1)
    x = tj.tensor(rng.standard_normal((32, 6)).astype(np.float32))
    y = tj.tensor(rng.integers(0, 3, 32))

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    run = tj.trace(step, backend=backend) if backend else step
    lrs = []
    for _ in range(epochs):
        for _ in range(steps):
            run(x, y)
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert len(set(lrs)) > 2  # the schedule did change the learning rate
    return [p.detach().numpy().copy() for p in model.parameters()], run


@pytest.mark.parametrize("sched", SCHEDULERS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_interpreted_schedule_is_eager_bit_for_bit(name, sched, monkeypatch, capsys):
    """The graph does the optimizer's arithmetic exactly as eager code (float64 scalars,
    rounded to float32 where they meet the parameters), and never traces again."""
    make_opt, traces = OPTIMIZERS[name]
    want, _ = _train(make_opt, SCHEDULERS[sched])
    monkeypatch.setenv("TRACEJIT_DEBUG", "recompiles")
    got, run = _train(make_opt, SCHEDULERS[sched], backend="interpret")
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    info = run.cache_info()
    assert (info.misses, info.hits) == (traces, 18 - traces)
    log = capsys.readouterr().err
    assert log.count("recompiling") == traces - 1
    assert "['lr']" not in log  # never for the learning rate


# the default run compiles two optimizers' steps; -m slow every one (about 10 s each)
@pytest.mark.parametrize("name", [n if n in ("sgd_momentum", "adam") else
                                  pytest.param(n, marks=pytest.mark.slow) for n in OPTIMIZERS])
def test_compiled_schedule_matches_eager(name):
    make_opt, traces = OPTIMIZERS[name]
    want, _ = _train(make_opt, SCHEDULERS["step"])
    got, run = _train(make_opt, SCHEDULERS["step"], backend="cpu")
    for a, b in zip(got, want):
        # the forward and backward kernels round differently from numpy (fused sums, float32
        # exp); the update itself is checked exactly below
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert run.cache_info().misses == traces


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_compiled_update_alone_is_eager_to_an_ulp(name):
    """Only the update in the graph (gradients set outside): compiled parameters equal eager
    ones to within float32 rounding of a fused multiply-add, at every learning rate."""
    make_opt, traces = OPTIMIZERS[name]
    rng = np.random.default_rng(3)
    init = rng.standard_normal((4, 5)).astype(np.float32)
    grads = [rng.standard_normal((4, 5)).astype(np.float32) for _ in range(8)]
    results = []
    for backend in (None, "cpu"):
        w = tj.tensor(init.copy(), requires_grad=True)
        opt = make_opt([w])
        sched = ExponentialLR(opt, gamma=0.6)
        step = tj.trace(opt.step, backend=backend) if backend else opt.step
        for g in grads:
            w.grad = tj.tensor(g)
            step()
            sched.step()
        results.append(w.detach().numpy().copy())
        if backend:
            assert step.cache_info().misses == traces
    np.testing.assert_allclose(results[1], results[0], rtol=3e-7, atol=1e-7)


def test_hyperparameters_are_graph_inputs():
    w = tj.zeros(3, requires_grad=True)
    opt = optim.Adam([w], lr=0.1)

    @tj.trace
    def step():
        opt.zero_grad()
        (w - 1).square().sum().backward()
        opt.step()

    step()
    names = step.specs()[0].compiled.graph.input_names
    assert {"group0.lr", "group0.betas[0]", "group0.betas[1]", "group0.eps"} <= set(names)
    assert "group0.weight_decay" in names
    guards = step.specs()[0].compiled.guards
    assert all(0.1 not in _leaves(g.value) for g in guards)  # the lr is not guarded


def _leaves(x):
    if isinstance(x, tuple):
        return [y for v in x for y in _leaves(v)]
    return [x]


def test_weight_decay_turned_on_traces_again():
    """A branch on an option (weight_decay != 0) is still guarded."""
    w = tj.ones(3, requires_grad=True)
    opt = optim.SGD([w], lr=0.1)

    @tj.trace(backend="interpret")
    def step():
        opt.zero_grad()
        w.sum().backward()
        opt.step()

    step()
    step()
    opt.param_groups[0]["weight_decay"] = 0.5
    step()
    assert step.cache_info().misses == 2
    np.testing.assert_allclose(w.detach().numpy(), 1 - 0.1 - 0.1 - 0.1 * (1 + 0.5 * 0.8),
                               rtol=1e-6)


def test_a_new_batch_size_compiles_nothing():
    """A new batch size traces again (shapes are static) but the source is size-generic, so
    numba compiles nothing."""
    from numba.core import event

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = optim.SGD(model.parameters(), lr=0.1)
    sched = StepLR(opt, step_size=1, gamma=0.5)

    @tj.trace
    def step(x, y):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    for _ in range(2):  # the second call compiles (the first runs eagerly while tracing)
        step(tj.randn(32, 8), tj.randint(0, 2, (32,)))
        sched.step()
    with event.install_recorder("numba:compile") as rec:
        step(tj.randn(48, 8), tj.randint(0, 2, (48,)))
        sched.step()
        step(tj.randn(48, 8), tj.randint(0, 2, (48,)))
    assert [e for e in rec.buffer if e[1].is_start] == []
    assert step.cache_info().misses == 2


def test_dynamic_number_in_a_closure():
    scale = tj.dynamic(0.5)
    plain = 0.5

    @tj.trace
    def f(x):
        return x * scale + 1

    def g(x):
        return x * plain + 1

    x = tj.randn(5)
    for value in (0.5, 0.25, 3.0):
        scale.fill_(value)
        plain = value
        # to an ulp: the compiled kernel contracts x * scale + 1 into one fused multiply-add
        np.testing.assert_array_max_ulp(f(x).numpy(), g(x).numpy(), maxulp=1)
        assert f(x).dtype == np.float32
    scale = tj.dynamic(0.1)  # a new tensor of the same shape: also no retrace
    plain = 0.1
    np.testing.assert_array_max_ulp(f(x).numpy(), g(x).numpy(), maxulp=1)
    assert f.cache_info().misses == 1


def test_dynamic_takes_numbers_only():
    with pytest.raises(TypeError, match="Python number"):
        tj.dynamic(tj.ones(1))
    with pytest.raises(TypeError, match="Python number"):
        tj.dynamic("0.1")


def test_zero_grad_first_clears_a_gradient_set_between_calls():
    """The step is not guarded on whether .grad came in None (zero_grad drops it unseen), so a
    gradient set between calls must still be cleared, as eagerly."""
    w = tj.ones(3, requires_grad=True)
    q = tj.ones(2, requires_grad=True)  # used only under no_grad: it never gets a gradient
    opt = optim.SGD([w, q], lr=0.1)

    @tj.trace(backend="interpret")
    def step():
        opt.zero_grad()
        with tj.no_grad():
            shift = q.sum()
        (w * 2).sum().backward()
        opt.step()
        return shift

    step()
    step()
    q.grad = tj.ones(2)
    step()
    assert q.grad is None and step.cache_info().misses == 1


def test_a_guarded_closure_number_suggests_dynamic(monkeypatch, capsys):
    monkeypatch.setenv("TRACEJIT_DEBUG", "recompiles")
    scale = 0.5

    @tj.trace(backend="interpret")
    def f(x):
        return x * scale

    f(tj.ones(2))
    scale = 0.25  # noqa: F841 - read by f through its closure
    f(tj.ones(2))
    err = capsys.readouterr().err
    assert "closure 'scale' changed from 0.5 to 0.25" in err and "tracejit.dynamic" in err
