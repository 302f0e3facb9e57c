"""tracejit's random state with torch's API: Generator, manual_seed, initial_seed,
get_rng_state/set_rng_state, fork_rng, and generator= on the factories and data utilities."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj


def _np(t):
    return t.detach().numpy()


def test_manual_seed_returns_default_generator():
    g = tj.manual_seed(123)
    assert g is tj.default_generator and tj.initial_seed() == 123 == g.initial_seed()
    a = tj.rand(4)
    tj.manual_seed(123)
    np.testing.assert_array_equal(_np(tj.rand(4)), _np(a))


def test_rng_state_round_trip():
    tj.manual_seed(0)
    tj.randn(3)
    state = tj.get_rng_state()
    assert state.dtype == tj.int64 and state.shape == (10,)
    a, b = tj.rand(5), tj.randint(0, 10, (4,))
    tj.set_rng_state(state)
    np.testing.assert_array_equal(_np(tj.rand(5)), _np(a))
    np.testing.assert_array_equal(_np(tj.randint(0, 10, (4,))), _np(b))
    with pytest.raises(ValueError, match="10 numbers"):
        tj.set_rng_state(tj.zeros(5000, dtype=tj.int64))


def test_generator_is_independent_and_reproducible():
    g = tj.Generator().manual_seed(7)
    tj.manual_seed(0)
    before = tj.get_rng_state()
    a = tj.randn(3, generator=g)
    assert (_np(tj.get_rng_state()) == _np(before)).all()  # the global one did not move
    b = tj.rand(2, 2, generator=g)
    c = tj.randperm(6, generator=g)
    g2 = tj.Generator().manual_seed(7)
    np.testing.assert_array_equal(_np(tj.randn(3, generator=g2)), _np(a))
    np.testing.assert_array_equal(_np(tj.rand(2, 2, generator=g2)), _np(b))
    np.testing.assert_array_equal(_np(tj.randperm(6, generator=g2)), _np(c))
    s = g.get_state()
    d = tj.randint(0, 100, (5,), generator=g)
    g.set_state(s)
    np.testing.assert_array_equal(_np(tj.randint(0, 100, (5,), generator=g)), _np(d))
    assert g.initial_seed() == 7


def test_fork_rng():
    tj.manual_seed(1)
    with tj.random.fork_rng():
        tj.rand(10)
    after = tj.rand(2)
    tj.manual_seed(1)
    np.testing.assert_array_equal(_np(tj.rand(2)), _np(after))


def test_generator_in_trace_is_refused_global_works():
    g = tj.Generator().manual_seed(0)
    with pytest.raises(NotImplementedError, match="global generator"):
        tj.trace(lambda x: x + tj.rand(3, generator=g), backend="interpret")(tj.zeros(3))
    f = tj.trace(lambda x: x + tj.rand(3, generator=tj.default_generator), backend="interpret")
    tj.manual_seed(5)
    a = f(tj.zeros(3))
    tj.manual_seed(5)
    np.testing.assert_array_equal(_np(f(tj.zeros(3))), _np(a))


def test_data_utilities_take_a_generator():
    from tracejit.utils.data import DataLoader, TensorDataset, random_split
    ds = TensorDataset(tj.arange(10))
    order = [int(b[0][0]) for b in DataLoader(ds, batch_size=1, shuffle=True,
                                             generator=tj.Generator().manual_seed(3))]
    again = [int(b[0][0]) for b in DataLoader(ds, batch_size=1, shuffle=True,
                                             generator=tj.Generator().manual_seed(3))]
    assert order == again and sorted(order) == list(range(10))
    a, b = random_split(ds, [7, 3], generator=tj.Generator().manual_seed(0))
    assert len(a) == 7 and len(b) == 3


def test_torch_names_exist():
    torch = pytest.importorskip("torch")
    for name in ("manual_seed", "initial_seed", "seed", "get_rng_state", "set_rng_state",
                 "Generator", "default_generator"):
        assert hasattr(torch, name) and hasattr(tj, name), name
    for name in ("manual_seed", "seed", "initial_seed", "get_state", "set_state"):
        assert hasattr(torch.Generator(), name) and hasattr(tj.Generator(), name), name


def test_init_takes_a_generator():
    torch = pytest.importorskip("torch")
    for name in ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                 "xavier_normal_"):
        import inspect
        assert "generator" in inspect.signature(getattr(torch.nn.init, name)).parameters
        w1, w2 = tj.empty(4, 3), tj.empty(4, 3)
        getattr(tj.nn.init, name)(w1, generator=tj.Generator().manual_seed(9))
        before = tj.get_rng_state()
        getattr(tj.nn.init, name)(w2, generator=tj.Generator().manual_seed(9))
        np.testing.assert_array_equal(_np(w1), _np(w2))
        assert (_np(tj.get_rng_state()) == _np(before)).all(), name
