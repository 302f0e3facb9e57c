"""tracejit.optim against hand-written numpy versions of torch's update formulas."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import tracejit as tj
import tracejit.optim as optim
from tracejit.optim.lr_scheduler import ExponentialLR, MultiStepLR, StepLR

from ..conftest import assert_close, data, gradcheck, leaf64

SHAPE = (2, 3)
TARGET = data(SHAPE, np.float64, seed=3)
SCALE = data(SHAPE, np.float64, low=0.5, high=2.0, seed=4)


def loss_fn(p):
    """A non-quadratic loss, so each step's gradient depends on the parameters."""
    return ((p - tj.tensor(TARGET)) ** 2 * tj.tensor(SCALE)).sum() + p.sin().sum()


def grad_np(p):
    return 2 * SCALE * (p - TARGET) + np.cos(p)


def run(opt_cls, p0, steps, **kw):
    p = tj.tensor(p0, requires_grad=True)
    opt = opt_cls([p], **kw)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
    return p, opt


# ---------------------------------------------------------------------- numpy references
def ref_sgd(p, steps, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
            maximize=False):
    p, buf = p.copy(), None
    for _ in range(steps):
        g = grad_np(p)
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p, buf


def ref_adam(p, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             maximize=False, decoupled=False):
    p = p.copy()
    m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    b1, b2 = betas
    for t in range(1, steps + 1):
        g = grad_np(p)
        g = -g if maximize else g
        if weight_decay:
            if decoupled:
                p = p * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        denom = np.sqrt(vmax if amsgrad else v) / np.sqrt(1 - b2 ** t) + eps
        p = p - lr / (1 - b1 ** t) * m / denom
    return p, {"exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": vmax}


P0 = data(SHAPE, np.float64, seed=1)


# ---------------------------------------------------------------------- SGD
@pytest.mark.parametrize("kw", [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.3},
    {"momentum": 0.8, "nesterov": True},
    {"weight_decay": 0.1},
    {"momentum": 0.9, "weight_decay": 0.05, "nesterov": True},
    {"momentum": 0.5, "dampening": 0.5, "weight_decay": 0.2, "maximize": True},
    {"maximize": True},
], ids=str)
def test_sgd_matches_reference(kw):
    p, opt = run(optim.SGD, P0, 6, lr=0.05, **kw)
    want, buf = ref_sgd(P0, 6, 0.05, **kw)
    assert_close(p, want, rtol=1e-12, atol=1e-13)
    assert p.is_leaf and p.requires_grad and p.grad_fn is None
    if kw.get("momentum"):
        assert list(opt.state[p]) == ["momentum_buffer"]
        assert_close(opt.state[p]["momentum_buffer"], buf, rtol=1e-12, atol=1e-13)
    else:
        assert len(opt.state) == 0  # torch keeps no state without momentum


def test_sgd_first_momentum_buffer_is_grad_copy():
    p = tj.tensor([1.0, -2.0], dtype=tj.float64, requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    p.grad = tj.tensor([0.5, 0.25], dtype=tj.float64)
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    assert_close(buf, np.array([0.5, 0.25]))  # not (1 - dampening) * grad
    assert buf is not p.grad
    p.grad.mul_(0)
    assert_close(buf, np.array([0.5, 0.25]))  # a copy, not the gradient itself
    assert_close(p, np.array([1.0 - 0.05, -2.0 - 0.025]))


def test_sgd_float32_keeps_dtype():
    p, _ = run(optim.SGD, P0.astype(np.float32), 4, lr=0.05, momentum=0.9)
    want, _ = ref_sgd(P0, 4, 0.05, momentum=0.9)
    assert_close(p, want.astype(np.float32), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- Adam / AdamW
@pytest.mark.parametrize("kw", [
    {},
    {"amsgrad": True},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "amsgrad": True, "maximize": True},
    {"betas": (0.5, 0.9), "eps": 1e-3},
    {"lr": 0.3, "amsgrad": True},
], ids=str)
def test_adam_matches_reference(kw):
    kw = {"lr": 0.05, **kw}
    p, opt = run(optim.Adam, P0, 7, **kw)
    want, st = ref_adam(P0, 7, **kw)
    assert_close(p, want, rtol=1e-12, atol=1e-13)
    state = opt.state[p]
    keys = ["step", "exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if kw.get("amsgrad") else [])
    assert list(state) == keys
    assert state["step"].shape == () and state["step"].dtype == tj.float32
    assert state["step"].item() == 7.0
    for k in keys[1:]:
        assert_close(state[k], st[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.3}, {"weight_decay": 0.3, "amsgrad": True},
                                {"weight_decay": 0.1, "maximize": True}], ids=str)
def test_adamw_decoupled_decay(kw):
    p, opt = run(optim.AdamW, P0, 5, lr=0.05, **kw)
    want, _ = ref_adam(P0, 5, lr=0.05, decoupled=True, weight_decay=kw.pop("weight_decay", 1e-2),
                       **kw)
    assert_close(p, want, rtol=1e-12, atol=1e-13)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


def test_adamw_differs_from_adam_l2():
    a, _ = run(optim.Adam, P0, 3, lr=0.05, weight_decay=0.5)
    w, _ = run(optim.AdamW, P0, 3, lr=0.05, weight_decay=0.5)
    assert np.abs(a.detach().numpy() - w.detach().numpy()).max() > 1e-3


def test_adam_float32():
    p, opt = run(optim.Adam, P0.astype(np.float32), 4, lr=0.05, amsgrad=True)
    want, _ = ref_adam(P0, 4, lr=0.05, amsgrad=True)
    assert_close(p, want.astype(np.float32), rtol=1e-4, atol=1e-5)
    assert opt.state[p]["exp_avg"].dtype == tj.float32


def test_adam_step_dtype_follows_default_dtype():
    prev = tj.get_default_dtype()
    tj.set_default_dtype(tj.float64)
    try:
        _, opt = run(optim.Adam, P0, 1)
    finally:
        tj.set_default_dtype(prev)
    (state,) = opt.state.values()
    assert state["step"].dtype == tj.float64


# ---------------------------------------------------------------------- common behaviour
def test_params_without_grad_are_skipped():
    a = tj.tensor([1.0, 2.0], requires_grad=True)
    b = tj.tensor([3.0], requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = tj.tensor([1.0, 1.0])
    opt.step()
    assert_close(b, np.array([3.0], np.float32))
    assert b not in opt.state and a in opt.state
    assert_close(a, np.array([0.9, 1.9], np.float32))


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam])
def test_step_closure(cls):
    p = tj.tensor(P0, requires_grad=True)
    opt = cls([p], lr=0.05)
    calls = []

    def closure():
        calls.append(tj.is_grad_enabled())
        opt.zero_grad()
        loss = loss_fn(p)
        loss.backward()
        return loss

    with tj.no_grad():  # the closure still records gradients, as in torch
        loss = opt.step(closure)
    assert calls == [True]
    assert loss.item() == pytest.approx(loss_fn(tj.tensor(P0)).item())
    assert opt.step() is None
    assert tj.is_grad_enabled()


def test_step_updates_in_place():
    p = tj.tensor(P0, requires_grad=True)
    arr, version = p.detach().numpy(), p._version[0]
    opt = optim.Adam([p], lr=0.05, weight_decay=0.1, amsgrad=True)
    loss_fn(p).backward()
    opt.step()
    assert p.detach().numpy() is arr and p._version[0] > version
    assert p.is_leaf and p.grad_fn is None


def test_zero_grad_set_to_none():
    p = tj.tensor([1.0, 2.0], requires_grad=True)
    q = tj.tensor([3.0], requires_grad=True)
    opt = optim.SGD([p, q], lr=0.1)
    (p.sum() * 2).backward()
    opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_zero_grad_to_zeros_keeps_tensor():
    p = tj.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    (p * p).sum().backward(create_graph=True)
    g = p.grad
    assert g.requires_grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is g
    assert_close(g, np.zeros(2, np.float32))
    assert not g.requires_grad and g.grad_fn is None
    (p * 3).sum().backward()
    assert_close(p.grad, np.full(2, 3.0, np.float32))


def test_param_groups_different_lr():
    a = tj.tensor(P0, requires_grad=True)
    b = tj.tensor(P0, requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 0.01, "momentum": 0.5}], lr=0.05,
                    momentum=0.9)
    assert opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[1]["lr"] == 0.01
    assert opt.param_groups[1]["params"] == [b] and opt.param_groups[1]["nesterov"] is False
    for _ in range(4):
        opt.zero_grad()
        (loss_fn(a) + loss_fn(b)).backward()
        opt.step()
    assert_close(a, ref_sgd(P0, 4, 0.05, momentum=0.9)[0], rtol=1e-12)
    assert_close(b, ref_sgd(P0, 4, 0.01, momentum=0.5)[0], rtol=1e-12)


def test_add_param_group():
    a = tj.tensor(P0, requires_grad=True)
    b = tj.tensor(P0, requires_grad=True)
    opt = optim.Adam([a], lr=0.05)
    opt.add_param_group({"params": [b], "amsgrad": True})
    assert opt.param_groups[1]["lr"] == 0.05 and opt.param_groups[1]["amsgrad"] is True
    for _ in range(3):
        opt.zero_grad()
        (loss_fn(a) + loss_fn(b)).backward()
        opt.step()
    assert_close(a, ref_adam(P0, 3, lr=0.05)[0], rtol=1e-12)
    assert_close(b, ref_adam(P0, 3, lr=0.05, amsgrad=True)[0], rtol=1e-12)
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        opt.add_param_group({"params": [tj.zeros(2, requires_grad=True)], "lr": -1})


def test_duplicate_params_warn():
    a = tj.zeros(2, requires_grad=True)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        optim.SGD([a, a], lr=0.1)


@pytest.mark.parametrize("make, exc, msg", [
    (lambda: optim.SGD([tj.zeros(2, requires_grad=True)], lr=-0.1), ValueError,
     "Invalid learning rate: -0.1"),
    (lambda: optim.SGD([tj.zeros(2)], lr=0.1, momentum=-1), ValueError,
     "Invalid momentum value: -1"),
    (lambda: optim.SGD([tj.zeros(2)], lr=0.1, weight_decay=-1), ValueError,
     "Invalid weight_decay value: -1"),
    (lambda: optim.SGD([tj.zeros(2)], lr=0.1, nesterov=True), ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: optim.SGD([tj.zeros(2)], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     ValueError, "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: optim.Adam([tj.zeros(2)], lr=-1e-3), ValueError, "Invalid learning rate"),
    (lambda: optim.Adam([tj.zeros(2)], eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    (lambda: optim.Adam([tj.zeros(2)], betas=(1.0, 0.9)), ValueError,
     r"Invalid beta parameter at index 0: 1.0"),
    (lambda: optim.AdamW([tj.zeros(2)], betas=(0.9, -0.1)), ValueError,
     r"Invalid beta parameter at index 1: -0.1"),
    (lambda: optim.Adam([tj.zeros(2)], weight_decay=-0.5), ValueError,
     "Invalid weight_decay value: -0.5"),
    (lambda: optim.Adam([tj.zeros(2)], betas=(tj.tensor(0.9), tj.tensor(0.99))),
     NotImplementedError, "tensor betas are not supported"),
    (lambda: optim.Adam([tj.zeros(2)], fused=True), NotImplementedError, "fused=True"),
    (lambda: optim.AdamW([tj.zeros(2)], capturable=True), NotImplementedError,
     r"AdamW\(capturable=True\)"),
    (lambda: optim.SGD([tj.zeros(2)], differentiable=True), NotImplementedError,
     "differentiating through the optimizer step is not supported"),
    (lambda: optim.SGD([], lr=0.1), ValueError, "optimizer got an empty parameter list"),
    (lambda: optim.SGD(tj.zeros(2), lr=0.1), TypeError,
     "params argument given to the optimizer should be an iterable of Tensors or dicts, but "
     "got .*Tensor"),
    (lambda: optim.SGD([np.zeros(2)], lr=0.1), TypeError,
     "optimizer can only optimize Tensors, but one of the params is .*ndarray"),
    (lambda: optim.SGD([{"params": {tj.zeros(2)}}], lr=0.1), TypeError,
     "ordering of tensors in sets will change"),
    (lambda: optim.SGD([tj.zeros(2, requires_grad=True) * 2], lr=0.1), ValueError,
     "can't optimize a non-leaf Tensor"),
    (lambda: optim.Optimizer([{"params": [tj.zeros(2)]}], {"lr": optim.optimizer.required}),
     ValueError,
     "parameter group didn't specify a value of required optimization parameter lr"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_errors(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()


def test_repr():
    opt = optim.SGD([tj.zeros(2)], lr=0.1, momentum=0.9)
    text = repr(opt)
    assert text.startswith("SGD (\nParameter Group 0\n")
    assert "    lr: 0.1\n" in text and "    momentum: 0.9\n" in text and text.endswith(")")


# ---------------------------------------------------------------------- state_dict
def _two_group_opt(cls, params, **kw):
    return cls([{"params": params[:1]}, {"params": params[1:], "lr": 0.02}], **kw)


@pytest.mark.parametrize("cls, kw", [
    (optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (optim.Adam, {"lr": 0.05, "amsgrad": True}),
    (optim.AdamW, {"lr": 0.05, "weight_decay": 0.1}),
], ids=["sgd", "adam", "adamw"])
def test_state_dict_round_trip_continues_identically(cls, kw):
    inits = [data((3,), np.float64, seed=s) for s in (1, 2, 3)]

    def train(opt, params, steps):
        for _ in range(steps):
            opt.zero_grad()
            sum(loss_fn(p.reshape(1, 3).expand(2, 3)) for p in params).backward()
            opt.step()

    pa = [tj.tensor(x, requires_grad=True) for x in inits]
    opt_a = _two_group_opt(cls, pa, **kw)
    train(opt_a, pa, 3)
    saved = opt_a.state_dict()
    saved_copy = copy.deepcopy(saved)

    # a fresh optimizer with other options, on parameters restored to the checkpoint
    pb = [tj.tensor(p.detach().numpy().copy(), requires_grad=True) for p in pa]
    opt_b = _two_group_opt(cls, pb, **{**kw, "lr": 0.5})
    opt_b.load_state_dict(saved)
    assert opt_b.param_groups[0]["lr"] == 0.05 and opt_b.param_groups[1]["lr"] == 0.02
    assert opt_b.param_groups[1]["params"] == pb[1:]

    train(opt_b, pb, 4)
    # loading copied the state: training opt_b did not touch opt_a's (the checkpoint's) tensors
    assert sorted(saved["state"]) == sorted(saved_copy["state"]) == [0, 1, 2]
    for i, st in saved_copy["state"].items():
        for k, v in st.items():
            np.testing.assert_array_equal(saved["state"][i][k].numpy(), v.numpy())
    train(opt_a, pa, 4)
    for a, b in zip(pa, pb):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_state_dict_layout():
    ps = [tj.tensor(data((2,), np.float64, seed=s), requires_grad=True) for s in range(3)]
    opt = optim.Adam([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01}], lr=0.1)
    for p in ps[:2]:
        p.grad = tj.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1, 2]]
    assert [g["lr"] for g in sd["param_groups"]] == [0.1, 0.01]
    assert sorted(sd["state"]) == [0, 1]  # no state for the parameter without a gradient
    assert list(sd["state"][0]) == ["step", "exp_avg", "exp_avg_sq"]
    assert sd["state"][1]["step"].item() == 1.0
    assert_close(sd["state"][1]["exp_avg"], np.full(2, 0.1))
    # the optimizer's own groups still hold the tensors
    assert opt.param_groups[1]["params"][0] is ps[1]


def test_load_state_dict_casts_state_and_restores_step_count():
    p = tj.tensor(P0, requires_grad=True)
    opt = optim.Adam([p], lr=0.05)
    sd = {"state": {0: {"step": 4.0,  # an old-style number is turned into a tensor
                        "exp_avg": tj.zeros(SHAPE, dtype=tj.float32),
                        "exp_avg_sq": tj.ones(SHAPE, dtype=tj.float32)}},
          "param_groups": [{"lr": 0.05, "betas": (0.9, 0.999), "eps": 1e-8,
                            "weight_decay": 0, "amsgrad": False, "params": [0]}]}
    opt.load_state_dict(sd)
    st = opt.state[p]
    assert st["exp_avg"].dtype == tj.float64 and st["step"].item() == 4.0
    assert opt.param_groups[0]["maximize"] is False  # missing options get the defaults
    p.grad = tj.tensor(np.ones(SHAPE))
    opt.step()
    assert st["step"].item() == 5.0
    m, v = 0.1 * np.ones(SHAPE), 0.999 + 0.001 * np.ones(SHAPE)
    want = P0 - 0.05 / (1 - 0.9 ** 5) * m / (np.sqrt(v) / np.sqrt(1 - 0.999 ** 5) + 1e-8)
    assert_close(p, want, rtol=1e-12)


def test_load_state_dict_errors():
    a, b = tj.zeros(2, requires_grad=True), tj.zeros(2, requires_grad=True)
    sd = optim.SGD([a, b], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        optim.SGD([a], lr=0.1).load_state_dict(sd)


# ---------------------------------------------------------------------- addcmul_ / addcdiv_
@pytest.mark.parametrize("value", [1, -0.5])
def test_addcmul_addcdiv_values(value):
    x, a = data((2, 3), np.float64, seed=1), data((2, 3), np.float64, seed=2)
    b = data((3,), np.float64, low=0.5, high=2.0, seed=3)
    t = tj.tensor(x)
    assert t.addcmul_(tj.tensor(a), tj.tensor(b), value=value) is t
    assert_close(t, x + value * a * b, rtol=1e-14)
    t = tj.tensor(x)
    t.addcdiv_(tj.tensor(a), tj.tensor(b), value=value)
    assert_close(t, x + value * a / b, rtol=1e-14)
    assert_close(tj.tensor(x).addcdiv(tj.tensor(a), tj.tensor(b), value=value),
                 x + value * a / b, rtol=1e-14)
    t32 = tj.tensor(x.astype(np.float32))
    t32.addcmul_(tj.tensor(a), tj.tensor(b), value=value)  # float64 result cast back
    assert_close(t32, (x + value * a * b).astype(np.float32), rtol=1e-6)


def test_addcmul_inplace_errors_and_grad():
    leaf = leaf64((3,))
    with pytest.raises(RuntimeError, match=r"leaf Variable that requires grad.*addcmul_"):
        leaf.addcmul_(tj.ones(3, dtype=tj.float64), tj.ones(3, dtype=tj.float64))
    a, b = leaf64((3,), seed=1), leaf64((3,), low=0.5, high=2.0, seed=2)
    assert gradcheck(lambda x, y, z: (x * 1).addcmul_(y, z, value=0.7), (leaf, a, b))
    assert gradcheck(lambda x, y, z: (x * 1).addcdiv_(y, z, value=-1.5), (leaf, a, b))
    with pytest.raises(tj.ShapeError, match="addcdiv_"):
        tj.zeros(3).addcdiv_(tj.ones(2, 3), tj.ones(3))


# ---------------------------------------------------------------------- StepLR
def test_step_lr():
    p = tj.zeros(2, requires_grad=True)
    opt = optim.SGD([{"params": [p]}, {"params": [tj.zeros(1)], "lr": 1.0}], lr=0.1)
    sched = StepLR(opt, step_size=3, gamma=0.5)
    lrs = [sched.get_last_lr()]
    for _ in range(7):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())
    want = [[0.1 * 0.5 ** (e // 3), 1.0 * 0.5 ** (e // 3)] for e in range(8)]
    np.testing.assert_allclose(np.array(lrs), np.array(want), rtol=1e-15)
    assert opt.param_groups[0]["initial_lr"] == 0.1
    state = sched.state_dict()
    assert state["last_epoch"] == 7 and "optimizer" not in state
    other = StepLR(optim.SGD([tj.zeros(1)], lr=0.1), step_size=1)
    other.load_state_dict(state)
    assert other.step_size == 3 and other.last_epoch == 7
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(optim.SGD([tj.zeros(1)], lr=0.1), step_size=2, last_epoch=3)


def test_multistep_and_exponential_lr():
    for make, want in (
            (lambda o: MultiStepLR(o, milestones=[2, 5, 5], gamma=0.1),
             lambda e: 0.1 * 0.1 ** ((e >= 2) + 2 * (e >= 5))),
            (lambda o: ExponentialLR(o, gamma=0.9), lambda e: 0.1 * 0.9 ** e)):
        opt = optim.SGD([tj.zeros(1, requires_grad=True)], lr=0.1)
        sched = make(opt)
        lrs = [sched.get_last_lr()[0]]
        for _ in range(7):
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr()[0])
        np.testing.assert_allclose(lrs, [want(e) for e in range(8)], rtol=1e-12)
        sched.step(3)  # the closed form
        np.testing.assert_allclose(sched.get_last_lr()[0], want(3), rtol=1e-12)
