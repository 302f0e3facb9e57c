"""tracejit.optim against torch.optim: same initial parameters, same gradient sequence."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
import tracejit.optim as optim

from ..conftest import data

torch = pytest.importorskip("torch")

STEPS = 10
SHAPES = [(2, 3), (4,)]


def grads_for(step):
    return [data(s, np.float64, seed=100 * step + i) for i, s in enumerate(SHAPES)]


def make_pair(name, kw, groups):
    inits = [data(s, np.float64, seed=i) for i, s in enumerate(SHAPES)]
    tps = [torch.tensor(x, requires_grad=True) for x in inits]
    jps = [tj.tensor(x, requires_grad=True) for x in inits]

    def grouped(ps):
        return [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.03}] if groups else ps

    topt = getattr(torch.optim, name)(grouped(tps), foreach=False, **kw)
    jopt = getattr(optim, name)(grouped(jps), foreach=False, **kw)
    return tps, jps, topt, jopt


def train(tps, jps, topt, jopt, steps, start=0):
    for step in range(start, start + steps):
        for tp, jp, g in zip(tps, jps, grads_for(step)):
            tp.grad = torch.tensor(g)
            jp.grad = tj.tensor(g)
        topt.step()
        jopt.step()


def assert_same_state(tsd, jsd):
    assert sorted(tsd["state"]) == sorted(jsd["state"])
    for i, tst in tsd["state"].items():
        jst = jsd["state"][i]
        assert list(tst) == list(jst)
        for k, tv in tst.items():
            jv = jst[k]
            assert str(tv.dtype).removeprefix("torch.") == jv.dtype.name, k
            assert tuple(tv.shape) == jv.shape, k
            np.testing.assert_allclose(jv.numpy(), tv.numpy(), rtol=1e-10, atol=1e-13,
                                       err_msg=k)
    assert len(tsd["param_groups"]) == len(jsd["param_groups"])
    for tg, jg in zip(tsd["param_groups"], jsd["param_groups"]):
        assert tg["params"] == jg["params"]
        # every option torch saves is saved by tracejit too, with the same value
        assert set(tg) <= set(jg), set(tg) - set(jg)
        for k in tg:
            assert tg[k] == jg[k] or (isinstance(tg[k], tuple) and tuple(jg[k]) == tg[k]), k


CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "maximize": True}),
    ("Adam", {"lr": 0.05}),
    ("Adam", {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6, "maximize": True}),
    ("AdamW", {"lr": 0.05}),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.2, "amsgrad": True}),
]


@pytest.mark.parametrize("groups", [False, True], ids=["one_group", "two_groups"])
@pytest.mark.parametrize("name, kw", CASES, ids=[f"{n}-{kw}" for n, kw in CASES])
def test_matches_torch(name, kw, groups):
    tps, jps, topt, jopt = make_pair(name, kw, groups)
    train(tps, jps, topt, jopt, STEPS)
    for tp, jp in zip(tps, jps):
        assert jp.dtype == tj.float64
        np.testing.assert_allclose(jp.detach().numpy(), tp.detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
    assert_same_state(topt.state_dict(), jopt.state_dict())


@pytest.mark.parametrize("name, kw", [("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
                                      ("Adam", {"lr": 0.05, "amsgrad": True}),
                                      ("AdamW", {"lr": 0.05, "weight_decay": 0.1})],
                         ids=["sgd", "adam", "adamw"])
def test_resume_from_torch_state_dict(name, kw):
    """A torch checkpoint (tensors converted to tracejit) resumes training identically."""
    tps, jps, topt, jopt = make_pair(name, kw, groups=True)
    train(tps, jps, topt, jopt, 4)
    tsd = topt.state_dict()
    converted = {
        "state": {i: {k: tj.tensor(v.detach().numpy().copy()) for k, v in st.items()}
                  for i, st in tsd["state"].items()},
        "param_groups": [dict(g) for g in tsd["param_groups"]],
    }
    fresh = [tj.tensor(p.detach().numpy().copy(), requires_grad=True) for p in tps]
    jopt2 = getattr(optim, name)([{"params": fresh[:1]}, {"params": fresh[1:]}], lr=1.0)
    jopt2.load_state_dict(converted)
    assert jopt2.param_groups[1]["lr"] == 0.03
    train(tps, fresh, topt, jopt2, 6, start=4)
    for tp, jp in zip(tps, fresh):
        np.testing.assert_allclose(jp.detach().numpy(), tp.detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
    assert_same_state(topt.state_dict(), jopt2.state_dict())


def test_step_lr_matches_torch():
    from tracejit.optim.lr_scheduler import StepLR
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    jopt = optim.SGD([tj.zeros(1, requires_grad=True)], lr=0.1)
    ts = torch.optim.lr_scheduler.StepLR(topt, step_size=2, gamma=0.3)
    js = StepLR(jopt, step_size=2, gamma=0.3)
    for _ in range(6):
        topt.step()
        jopt.step()
        ts.step()
        js.step()
        assert js.get_last_lr() == ts.get_last_lr()
    assert jopt.param_groups[0]["initial_lr"] == topt.param_groups[0]["initial_lr"]


@pytest.mark.parametrize("name, kwargs", [("MultiStepLR", {"milestones": [1, 3, 3], "gamma": 0.3}),
                                          ("ExponentialLR", {"gamma": 0.7})])
def test_more_schedulers_match_torch(name, kwargs):
    from tracejit.optim import lr_scheduler
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    jopt = optim.SGD([tj.zeros(1, requires_grad=True)], lr=0.1)
    ts = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
    js = getattr(lr_scheduler, name)(jopt, **kwargs)
    for _ in range(6):
        topt.step()
        jopt.step()
        ts.step()
        js.step()
        assert js.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-15)
