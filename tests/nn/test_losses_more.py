"""Issue 15's losses against torch (float64): BCELoss, SmoothL1Loss, HuberLoss, KLDivLoss and
their functional forms, every reduction; gradients by torch parity and gradcheck; one traced
check each."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit.autograd import gradcheck

from ..conftest import data, leaf64

F = tj.nn.functional


def _torch():
    return pytest.importorskip("torch")


def _np(t):
    return t.detach().numpy()


def _inputs(name):
    rng = np.random.default_rng(0)
    if name == "bce":
        x = rng.uniform(0.02, 0.98, (4, 3))
        x[0, 0], x[0, 1] = 0.0, 1.0  # the clamped logs
        return x, (rng.random((4, 3)) > 0.5).astype(np.float64)
    if name == "kl":
        logp = np.log(rng.dirichlet(np.ones(5), 4))
        t = rng.dirichlet(np.ones(5), 4)
        t[1, 2] = 0.0
        return logp, t
    return data((4, 3), np.float64, seed=1) * 2, data((4, 3), np.float64, seed=2)


CASES = {
    "bce": ("bce", lambda lib, **kw: lib.nn.BCELoss(**kw), "binary_cross_entropy", {}),
    "bce_weight": ("bce", lambda lib, **kw: lib.nn.BCELoss(
        weight=lib.tensor(np.array([0.5, 1.0, 2.0])), **kw), None, {}),
    "smooth_l1": ("reg", lambda lib, **kw: lib.nn.SmoothL1Loss(**kw), "smooth_l1_loss", {}),
    "smooth_l1_beta": ("reg", lambda lib, **kw: lib.nn.SmoothL1Loss(beta=0.5, **kw), None, {}),
    "smooth_l1_beta0": ("reg", lambda lib, **kw: lib.nn.SmoothL1Loss(beta=0.0, **kw), None, {}),
    "huber": ("reg", lambda lib, **kw: lib.nn.HuberLoss(**kw), "huber_loss", {}),
    "huber_delta": ("reg", lambda lib, **kw: lib.nn.HuberLoss(delta=2.5, **kw), None, {}),
    "kl": ("kl", lambda lib, **kw: lib.nn.KLDivLoss(**kw), "kl_div", {}),
    "kl_log_target": ("kl", lambda lib, **kw: lib.nn.KLDivLoss(log_target=True, **kw), None,
                      {"log_target": True}),
}


def _reductions(name):
    return ("mean", "sum", "none", "batchmean") if name.startswith("kl") else \
        ("mean", "sum", "none")


@pytest.mark.parametrize("name", list(CASES))
def test_loss_matches_torch(name):
    torch = _torch()
    kind, make, _, _ = CASES[name]
    x, t = _inputs(kind)
    if name == "kl_log_target":
        t = np.log(np.where(t == 0, 1e-3, t))
    for reduction in _reductions(name):
        xj, xt = tj.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # kl_div's 'mean' warning, in both
            lj = make(tj, reduction=reduction)(xj, tj.tensor(t))
            lt = make(torch, reduction=reduction).double()(xt, torch.tensor(t))
        np.testing.assert_allclose(_np(lj), _np(lt), rtol=1e-10, atol=1e-12, err_msg=reduction)
        cot = data(tuple(lt.shape), np.float64, seed=3)
        (lj * tj.tensor(cot)).sum().backward()
        (lt * torch.tensor(cot)).sum().backward()
        gj, gt = _np(xj.grad), _np(xt.grad)
        if kind == "bce":  # at x = 0 and 1 the clamped log is flat: tracejit's gradient is 0,
            # torch's backward divides by its eps 1e-12 there
            assert (gj[0, :2] == 0).all()
            gj, gt = gj[1:], gt[1:]
        np.testing.assert_allclose(gj, gt, rtol=1e-8, atol=1e-10, err_msg=reduction)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[2]])
def test_functional_matches_torch(name):
    torch = _torch()
    kind, _, fname, kw = CASES[name]
    x, t = _inputs(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = getattr(F, fname)(tj.tensor(x), tj.tensor(t), reduction="sum", **kw)
        want = getattr(torch.nn.functional, fname)(torch.tensor(x), torch.tensor(t),
                                                    reduction="sum", **kw)
    np.testing.assert_allclose(_np(got), _np(want), rtol=1e-10)


def test_kl_div_mean_warns_as_torch():
    logp, t = _inputs("kl")
    with pytest.warns(UserWarning, match="batchmean"):
        F.kl_div(tj.tensor(logp), tj.tensor(t))


@pytest.mark.parametrize("fn", [
    lambda x: F.binary_cross_entropy(x.sigmoid(), tj.tensor(data((3, 4), np.float64) > 0)
                                     .double()),
    lambda x: F.smooth_l1_loss(x, tj.zeros(3, 4, dtype=tj.float64), beta=0.7),
    lambda x: F.huber_loss(x, tj.zeros(3, 4, dtype=tj.float64), delta=0.9),
    lambda x: F.kl_div(x.log_softmax(1), tj.ones(3, 4, dtype=tj.float64) / 4,
                       reduction="batchmean"),
], ids=["bce", "smooth_l1", "huber", "kl_div"])
def test_gradcheck(fn):
    assert gradcheck(fn, (leaf64((3, 4), seed=4),))


@pytest.mark.parametrize("name", list(CASES))
def test_loss_traced(name):
    kind, make, _, _ = CASES[name]
    x, t = (tj.tensor(a.astype(np.float32)) for a in _inputs(kind))
    loss = make(tj, reduction="sum")
    got = tj.trace(lambda a, b: loss(a, b), backend="interpret")(x, t)
    np.testing.assert_allclose(got.item(), loss(x, t).item(), rtol=1e-5)


def test_loss_errors():
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.binary_cross_entropy(tj.tensor([1.5]), tj.tensor([1.0]))
    with pytest.raises(tj.ShapeError, match="must match"):
        F.binary_cross_entropy(tj.tensor([0.5, 0.5]), tj.tensor([1.0]))
    with pytest.raises(ValueError, match="batchmean"):
        tj.nn.KLDivLoss(reduction="avg")
