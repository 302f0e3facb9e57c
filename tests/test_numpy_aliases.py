"""``axis=`` / ``keepdims=`` as aliases of ``dim=`` / ``keepdim=`` wherever torch takes them:
Tensor methods, top-level functions and nn.functional, against torch's own aliases."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

from .conftest import data

X = data((2, 3, 4), np.float64)

CASES = [
    ("sum", {"axis": 1}), ("sum", {"axis": (0, 2), "keepdims": True}),
    ("mean", {"axis": -1, "keepdims": True}), ("prod", {"axis": 0}),
    ("amax", {"axis": 1, "keepdims": True}), ("amin", {"axis": (1, 2)}),
    ("argmax", {"axis": 2}), ("argmin", {"axis": 0, "keepdims": True}),
    ("var", {"axis": 1}), ("std", {"axis": 2, "keepdims": True}),
    ("logsumexp", {"axis": 1}), ("softmax", {"axis": -1}), ("log_softmax", {"axis": 0}),
    ("cumsum", {"axis": 1}), ("squeeze", {"axis": 0}), ("unsqueeze", {"axis": 1}),
    ("all", {"axis": 1}), ("any", {"axis": 0, "keepdims": True}),
]


def _np(t):
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


@pytest.mark.parametrize("name, kw", CASES, ids=[f"{n}-{kw}" for n, kw in CASES])
def test_method_and_function_aliases(name, kw):
    x = tj.tensor(X if name not in ("all", "any") else X > 0)
    dim_kw = {{"axis": "dim", "keepdims": "keepdim"}[k]: v for k, v in kw.items()}
    if name == "squeeze":
        x = x[:1]
    want = getattr(x, name)(**dim_kw)
    got = getattr(x, name)(**kw)
    np.testing.assert_array_equal(_np(got), _np(want))
    if hasattr(tj, name):
        np.testing.assert_array_equal(_np(getattr(tj, name)(x, **kw)), _np(want))


def test_max_min_cat_stack_functional():
    x = tj.tensor(X)
    assert tj.max(x, axis=1, keepdims=True).values.shape == (2, 1, 4)
    assert x.min(axis=2).indices.shape == (2, 3)
    assert tj.cat([x, x], axis=2).shape == (2, 3, 8)
    assert tj.stack([x, x], axis=0).shape == (2, 2, 3, 4)
    np.testing.assert_array_equal(_np(tj.nn.functional.softmax(x, axis=1)),
                                  _np(tj.nn.functional.softmax(x, dim=1)))
    with pytest.raises(TypeError, match="both dim= and its alias axis="):
        x.sum(dim=0, axis=1)


def test_aliases_trace():
    f = tj.trace(lambda t: t.sum(axis=1, keepdims=True) + t.mean(axis=1, keepdims=True),
                 backend="interpret")
    x = tj.tensor(X)
    np.testing.assert_allclose(_np(f(x)), _np(x.sum(1, True) + x.mean(1, True)))


@pytest.mark.parametrize("name, kw", [c for c in CASES if c[0] not in ("all", "any")],
                         ids=[f"{n}-{kw}" for n, kw in CASES if n not in ("all", "any")])
def test_matches_torch_aliases(name, kw):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(X[:1] if name == "squeeze" else X)
    try:
        want = getattr(xt, name)(**kw)
    except TypeError:
        pytest.skip(f"torch's {name} does not take {kw}")
    got = getattr(tj.tensor(X[:1] if name == "squeeze" else X), name)(**kw)
    if isinstance(want, tuple):
        want = want[0]
    np.testing.assert_allclose(_np(got), want.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name, kw", [("sort", {"axis": 1}), ("cumprod", {"axis": 2}),
                                      ("median", {"axis": 1, "keepdims": True}),
                                      ("logcumsumexp", {"axis": 0})])
def test_composed_ops_take_aliases(name, kw):
    x = tj.tensor(X)
    if not hasattr(x, name):
        pytest.skip(f"no {name} in this build")
    dim_kw = {{"axis": "dim", "keepdims": "keepdim"}[k]: v for k, v in kw.items()}
    want, got = getattr(x, name)(**dim_kw), getattr(x, name)(**kw)
    want = want[0] if isinstance(want, tuple) else want
    got = got[0] if isinstance(got, tuple) else got
    np.testing.assert_array_equal(_np(got), _np(want))
    f = getattr(tj, name)(x, **kw)
    np.testing.assert_array_equal(_np(f[0] if isinstance(f, tuple) else f), _np(want))
