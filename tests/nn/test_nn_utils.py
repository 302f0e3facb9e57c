"""tracejit.nn.utils against torch.nn.utils: clip_grad_norm_ (every norm type),
clip_grad_value_, parameters_to_vector, vector_to_parameters; clipping inside a traced step."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

from ..conftest import data

U = tj.nn.utils


def _torch():
    return pytest.importorskip("torch")


def _np(t):
    return t.detach().numpy()


def _params(lib, scale=1.0):
    ps = []
    for i, shape in enumerate([(3, 4), (4,), (2, 2, 2)]):
        p = lib.tensor(data(shape, np.float64, seed=i), requires_grad=True)
        p.grad = lib.tensor(data(shape, np.float64, seed=10 + i) * scale)
        ps.append(p)
    return ps


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf"), 0.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    torch = _torch()
    pj, pt = _params(tj), _params(torch)
    nj = U.clip_grad_norm_(pj, max_norm, norm_type)
    nt = torch.nn.utils.clip_grad_norm_(pt, max_norm, norm_type)
    np.testing.assert_allclose(nj.item(), nt.item(), rtol=1e-12)
    for a, b in zip(pj, pt):
        np.testing.assert_allclose(_np(a.grad), _np(b.grad), rtol=1e-12)


def test_clip_grad_norm_edge_cases():
    p = tj.zeros(3, requires_grad=True)
    assert U.clip_grad_norm_([p], 1.0).item() == 0.0  # no gradients
    p.grad = tj.tensor([3.0, 4.0, 0.0])
    assert U.clip_grad_norm_(p, 1.0).item() == pytest.approx(5.0)  # a single tensor
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8, 0.0], rtol=1e-5)
    p.grad = tj.tensor([float("nan"), 1.0, 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        U.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)


def test_clip_grad_value_matches_torch():
    torch = _torch()
    pj, pt = _params(tj, 3.0), _params(torch, 3.0)
    U.clip_grad_value_(pj, 1.5)
    torch.nn.utils.clip_grad_value_(pt, 1.5)
    for a, b in zip(pj, pt):
        np.testing.assert_array_equal(_np(a.grad), _np(b.grad))


def test_parameters_vector_round_trip():
    torch = _torch()
    pj, pt = _params(tj), _params(torch)
    vj, vt = U.parameters_to_vector(pj), torch.nn.utils.parameters_to_vector(pt)
    np.testing.assert_array_equal(_np(vj), _np(vt))
    new = np.arange(vj.shape[0], dtype=np.float64)
    U.vector_to_parameters(tj.tensor(new), pj)
    torch.nn.utils.vector_to_parameters(torch.tensor(new), pt)
    for a, b in zip(pj, pt):
        np.testing.assert_array_equal(_np(a), _np(b))
    with pytest.raises(ValueError, match="elements"):
        U.vector_to_parameters(tj.zeros(3), pj)


def test_parameters_to_vector_is_differentiable():
    lin = tj.nn.Linear(2, 3)
    (U.parameters_to_vector(lin.parameters()) ** 2).sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), 2 * lin.weight.detach().numpy())


def test_clip_inside_traced_step():
    def run(traced):
        tj.manual_seed(0)
        model = tj.nn.Linear(4, 2)
        opt = tj.optim.SGD(model.parameters(), lr=0.1)

        def step(x, y):
            opt.zero_grad()
            loss = tj.nn.functional.mse_loss(model(x), y)
            loss.backward()
            norm = U.clip_grad_norm_(model.parameters(), 0.1)
            opt.step()
            return norm

        f = tj.trace(step, backend="interpret") if traced else step
        x, y = tj.tensor(data((8, 4), seed=1)) * 5, tj.tensor(data((8, 2), seed=2))
        norms = [f(x, y).item() for _ in range(3)]
        return norms, model.weight.detach().numpy().copy()

    (ne, we), (nt, wt) = run(False), run(True)
    np.testing.assert_allclose(nt, ne, rtol=1e-5)
    np.testing.assert_allclose(wt, we, rtol=1e-5, atol=1e-7)
    assert ne[0] > 0.1  # the clip was active
