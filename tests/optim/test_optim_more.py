"""RMSprop, Adagrad and LBFGS against torch.optim (float64, the same gradient sequence or the
same closure), their state dicts, and RMSprop/Adagrad inside a traced step (eager bit for bit,
no retrace under a schedule)."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
import tracejit.optim as optim
from tracejit import nn

from ..conftest import data

STEPS = 8
SHAPES = [(2, 3), (4,)]


def _torch():
    return pytest.importorskip("torch")


def _grads(step):
    return [data(s, np.float64, seed=100 * step + i) for i, s in enumerate(SHAPES)]


CASES = [
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.02, "alpha": 0.9, "centered": True, "eps": 1e-6}),
    ("RMSprop", {"lr": 0.02, "centered": True, "momentum": 0.5, "maximize": True}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.3, "eps": 1e-6, "maximize": True}),
]


@pytest.mark.parametrize("groups", [False, True], ids=["one_group", "two_groups"])
@pytest.mark.parametrize("name, kw", CASES, ids=[f"{n}-{kw}" for n, kw in CASES])
def test_matches_torch(name, kw, groups):
    torch = _torch()
    inits = [data(s, np.float64, seed=i) for i, s in enumerate(SHAPES)]
    tps = [torch.tensor(x, requires_grad=True) for x in inits]
    jps = [tj.tensor(x, requires_grad=True) for x in inits]

    def grouped(ps):
        return [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.03}] if groups else ps
    topt = getattr(torch.optim, name)(grouped(tps), foreach=False, **kw)
    jopt = getattr(optim, name)(grouped(jps), foreach=False, **kw)
    for step in range(STEPS):
        for tp, jp, g in zip(tps, jps, _grads(step)):
            tp.grad, jp.grad = torch.tensor(g), tj.tensor(g)
        topt.step()
        jopt.step()
    for tp, jp in zip(tps, jps):
        np.testing.assert_allclose(jp.detach().numpy(), tp.detach().numpy(), rtol=1e-12,
                                   atol=1e-14)
    tsd, jsd = topt.state_dict(), jopt.state_dict()
    for i, tst in tsd["state"].items():
        assert list(tst) == list(jsd["state"][i])
        for k, tv in tst.items():
            np.testing.assert_allclose(jsd["state"][i][k].numpy(), tv.numpy(), rtol=1e-12,
                                       atol=1e-14, err_msg=k)
    for tg, jg in zip(tsd["param_groups"], jsd["param_groups"]):
        assert set(tg) <= set(jg), set(tg) - set(jg)
    # a reloaded optimizer continues the same way
    jps2 = [tj.tensor(p.detach().numpy().copy(), requires_grad=True) for p in jps]
    jopt2 = getattr(optim, name)(grouped(jps2), **kw)
    jopt2.load_state_dict(jsd)
    for o, ps in ((jopt, jps), (jopt2, jps2)):
        for p, g in zip(ps, _grads(99)):
            p.grad = tj.tensor(g)
        o.step()
    for a, b in zip(jps, jps2):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_invalid_options():
    p = [tj.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="learning rate"):
        optim.RMSprop(p, lr=-1)
    with pytest.raises(ValueError, match="alpha"):
        optim.RMSprop(p, alpha=-0.1)
    with pytest.raises(ValueError, match="lr_decay"):
        optim.Adagrad(p, lr_decay=-1)
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": p}, {"params": [tj.zeros(1, requires_grad=True)]}])
    with pytest.raises(RuntimeError, match="strong_wolfe"):
        optim.LBFGS(p, line_search_fn="backtracking")


# ------------------------------------------------------------------ LBFGS

def _rosenbrock_run(lib, steps, **kw):
    x = lib.tensor(np.array([-1.5, 2.0, 0.5, -0.3]), requires_grad=True)
    opt = lib.optim.LBFGS([x], **kw)

    def closure():
        opt.zero_grad()
        loss = (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()
        loss.backward()
        return loss
    losses = [float(opt.step(closure).detach()) for _ in range(steps)]
    return x.detach().numpy().copy(), losses, opt


@pytest.mark.parametrize("kw", [{"lr": 0.1, "max_iter": 5},
                                {"lr": 1, "line_search_fn": "strong_wolfe"},
                                {"lr": 1, "max_iter": 7, "history_size": 3,
                                 "line_search_fn": "strong_wolfe"}],
                         ids=["fixed_step", "strong_wolfe", "short_history"])
def test_lbfgs_matches_torch(kw):
    torch = _torch()
    xt, lt, ot = _rosenbrock_run(torch, 4, **kw)
    xj, lj, oj = _rosenbrock_run(tj, 4, **kw)
    np.testing.assert_allclose(lj, lt, rtol=1e-9)
    np.testing.assert_allclose(xj, xt, rtol=1e-8, atol=1e-10)
    st, sj = ot.state[ot.param_groups[0]["params"][0]], oj.state[oj._params[0]]
    assert (sj["func_evals"], sj["n_iter"]) == (st["func_evals"], st["n_iter"])


def test_lbfgs_converges_on_least_squares():
    tj.manual_seed(0)
    a = tj.randn(20, 3, dtype=tj.float64)
    w_true = tj.tensor([1.0, -2.0, 0.5], dtype=tj.float64)
    b = a @ w_true
    model = nn.Linear(3, 1, bias=False).double()
    opt = optim.LBFGS(model.parameters(), line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((model(a).squeeze(1) - b) ** 2).mean()
        loss.backward()
        return loss
    for _ in range(3):
        opt.step(closure)
    np.testing.assert_allclose(model.weight.detach().numpy()[0], w_true.numpy(), atol=1e-6)


def test_lbfgs_refuses_tracing_and_needs_closure():
    x = tj.zeros(2, requires_grad=True)
    opt = optim.LBFGS([x])
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()

    def traced(y):
        def closure():
            opt.zero_grad()
            loss = ((x - y) ** 2).sum()
            loss.backward()
            return loss
        return opt.step(closure)
    with pytest.raises(NotImplementedError, match="LBFGS.step inside a traced function"):
        tj.trace(traced, backend="interpret")(tj.ones(2))


# ------------------------------------------------------------------ traced steps

def _train(make_opt, backend=None, epochs=4, steps=2):
    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = make_opt(model.parameters())
    sched = optim.lr_scheduler.ExponentialLR(opt, gamma=0.7)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(1)
    x = tj.tensor(rng.standard_normal((16, 6)).astype(np.float32))
    y = tj.tensor(rng.integers(0, 3, 16))

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    run = tj.trace(step, backend=backend) if backend else step
    for _ in range(epochs):
        for _ in range(steps):
            run(x, y)
        sched.step()
    return [p.detach().numpy().copy() for p in model.parameters()], run


@pytest.mark.parametrize("make", [
    lambda p: optim.RMSprop(p, lr=0.01, momentum=0.9, centered=True, weight_decay=1e-3),
    lambda p: optim.RMSprop(p, lr=0.01),
    lambda p: optim.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=1e-3),
], ids=["rmsprop_centered_momentum", "rmsprop", "adagrad"])
def test_traced_step_is_eager_bit_for_bit(make):
    want, _ = _train(make)
    got, run = _train(make, backend="interpret")
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert run.cache_info().misses == 1  # the schedule's lr and the step count are inputs


def test_traced_step_compiled():
    make = lambda p: optim.RMSprop(p, lr=0.01, momentum=0.9)  # noqa: E731
    want, _ = _train(make, epochs=2)
    got, _ = _train(make, backend="cpu", epochs=2)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
