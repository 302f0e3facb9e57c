"""The schedulers of issue 15 against torch.optim.lr_scheduler: the learning rates (and cycled
momenta) of every step with two param groups, closed forms through ``step(epoch)``, state dicts;
a traced training step under OneCycleLR traces once."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn, optim

STEPS = 25


def _torch():
    return pytest.importorskip("torch")


def _opts(lib, kind="sgd"):
    ps = [lib.zeros(2, requires_grad=True), lib.zeros(3, requires_grad=True)]
    groups = [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.05}]
    if kind == "adam":
        return lib.optim.Adam(groups, lr=0.1)
    return lib.optim.SGD(groups, lr=0.1, momentum=0.9)


SCHEDULERS = {
    "lambda": lambda m, o: m.LambdaLR(o, lambda e: 0.9 ** e + 0.01 * e),
    "lambda_per_group": lambda m, o: m.LambdaLR(o, [lambda e: 1 / (e + 1), lambda e: 0.95 ** e]),
    "multiplicative": lambda m, o: m.MultiplicativeLR(o, lambda e: 0.95),
    "constant": lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=4),
    "linear": lambda m, o: m.LinearLR(o, start_factor=0.25, end_factor=0.9, total_iters=10),
    "polynomial": lambda m, o: m.PolynomialLR(o, total_iters=12, power=2.0),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.001),
    "warm_restarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2,
                                                                eta_min=0.01),
    "one_cycle": lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 0.2], total_steps=STEPS + 1),
    "one_cycle_linear_3phase": lambda m, o: m.OneCycleLR(
        o, max_lr=0.3, epochs=2, steps_per_epoch=13, anneal_strategy="linear", three_phase=True,
        pct_start=0.25),
    "cyclic": lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=[0.1, 0.05], step_size_up=4,
                                      step_size_down=3),
    "cyclic_triangular2": lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=3,
                                                  mode="triangular2"),
    "cyclic_exp_range": lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=5, mode="exp_range",
                                                gamma=0.97),
    "cyclic_scale_fn": lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=2,
                                               scale_fn=lambda x: 0.9 ** x,
                                               scale_mode="iterations"),
    "sequential": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.ExponentialLR(o, gamma=0.9)],
        milestones=[5]),
    "chained": lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.5, total_iters=3), m.ExponentialLR(o, gamma=0.9)]),
}


def _run(lib, name, kind="sgd"):
    opt = _opts(lib, kind)
    sched = SCHEDULERS[name](lib.optim.lr_scheduler, opt)
    seen = []
    for _ in range(STEPS):
        opt.step()  # no gradients: torch wants optimizer.step() before scheduler.step()
        sched.step()
        seen.append([(g["lr"], g.get("momentum"), g.get("betas")) for g in opt.param_groups])
        assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
    return seen, sched, opt


def _assert_same(a, b):
    for sa, sb in zip(a, b):
        for ga, gb in zip(sa, sb):
            for x, y in zip(ga, gb):
                if x is None or y is None:
                    assert x is None and y is None
                else:
                    np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float),
                                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_matches_torch(name):
    torch = _torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, _, _ = _run(torch, name)
    got, _, _ = _run(tj, name)
    _assert_same(got, want)


@pytest.mark.parametrize("name", ["one_cycle", "cyclic"])
def test_cycles_adam_beta1(name):
    torch = _torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, _, _ = _run(torch, name, "adam")
    got, _, opt = _run(tj, name, "adam")
    _assert_same(got, want)
    assert opt.param_groups[0]["betas"][0] != 0.9


def test_one_cycle_past_total_steps():
    opt = _opts(tj)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=2)
    sched.step()
    sched.step()
    with pytest.raises(ValueError, match="Tried to step 3 times"):
        sched.step()
    with pytest.raises(ValueError, match="momentum or beta1"):
        optim.lr_scheduler.OneCycleLR(optim.Adagrad([tj.zeros(1, requires_grad=True)]), 0.1,
                                      total_steps=3)


@pytest.mark.parametrize("name", ["constant", "linear", "polynomial", "cosine"])
def test_closed_form_matches_torch(name):
    torch = _torch()
    out = []
    for lib in (torch, tj):
        opt = _opts(lib)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched = SCHEDULERS[name](lib.optim.lr_scheduler, opt)
            lrs = []
            for e in (3, 9, 1, 20):
                sched.step(e)
                lrs.append([g["lr"] for g in opt.param_groups])
        out.append(lrs)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-12)


def test_warm_restarts_fractional_epochs():
    torch = _torch()
    out = []
    for lib in (torch, tj):
        opt = _opts(lib)
        sched = lib.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2)
        lrs = []
        for e in (0.5, 2.9, 3.2, 9.5, 22.0):
            sched.step(e)
            lrs.append([g["lr"] for g in opt.param_groups] + [sched.T_cur, sched.T_i])
        out.append(lrs)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-12)


METRICS = [1.0, 0.9, 0.95, 0.96, 0.97, 0.94, 0.99, 1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.91, 0.92]


@pytest.mark.parametrize("kw", [
    {"patience": 2},
    {"mode": "max", "factor": 0.5, "patience": 1, "threshold_mode": "abs", "threshold": 0.01},
    {"patience": 1, "cooldown": 2, "min_lr": [0.02, 0.001]},
    {"patience": 0, "factor": 0.2, "min_lr": 0.009, "eps": 1e-3},
], ids=["min_rel", "max_abs", "cooldown_min_lrs", "eps"])
def test_reduce_on_plateau_matches_torch(kw):
    torch = _torch()
    out = []
    for lib in (torch, tj):
        opt = _opts(lib)
        sched = lib.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
        lrs = []
        for m in METRICS:
            opt.step()
            sched.step(lib.tensor(m) if lib is tj else m)
            lrs.append([g["lr"] for g in opt.param_groups] + [sched.num_bad_epochs,
                                                              sched.cooldown_counter])
        out.append(lrs)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-12)
    with pytest.raises(ValueError, match="Factor"):
        optim.lr_scheduler.ReduceLROnPlateau(_opts(tj), factor=1.5)


@pytest.mark.parametrize("name", ["cosine", "warm_restarts", "one_cycle", "sequential",
                                  "reduce", "cyclic"])
def test_state_dict_resumes(name):
    def make(opt):
        if name == "reduce":
            return optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1)
        return SCHEDULERS[name](optim.lr_scheduler, opt)

    def advance(sched, n, start):
        for i in range(n):
            sched.step(1.0 + 0.01 * (start + i)) if name == "reduce" else sched.step()

    opt = _opts(tj)
    sched = make(opt)
    advance(sched, 6, 0)
    saved = sched.state_dict()
    assert "optimizer" not in saved
    opt2 = _opts(tj)
    opt2.load_state_dict(opt.state_dict())
    sched2 = make(opt2)
    sched2.load_state_dict(saved)
    for g, g2 in zip(opt.param_groups, opt2.param_groups):
        g2["lr"] = g["lr"]
    advance(sched, 5, 6)
    advance(sched2, 5, 6)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]


def test_lambda_state_dict_skips_functions():
    sched = optim.lr_scheduler.LambdaLR(_opts(tj), lambda e: 0.5)
    assert sched.state_dict()["lr_lambdas"] == [None, None]


def test_traced_step_under_one_cycle_traces_once_per_momentum_phase():
    def train(backend):
        tj.manual_seed(0)
        model = nn.Linear(4, 2)
        opt = optim.Adam(model.parameters(), lr=0.01)
        sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=6)
        x = tj.tensor(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))

        def step(x):
            opt.zero_grad()
            loss = model(x).square().mean()
            loss.backward()
            opt.step()
            return loss.detach()
        run = tj.trace(step, backend=backend) if backend else step
        for _ in range(5):
            run(x)
            sched.step()
        return model.weight.detach().numpy().copy(), run
    want, _ = train(None)
    got, run = train("interpret")
    np.testing.assert_array_equal(got, want)
    assert run.cache_info().misses == 1  # lr and beta1 are graph inputs
    assert math.isfinite(float(want.sum()))
