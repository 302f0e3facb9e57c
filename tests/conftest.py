"""Shared test helpers: reference data, comparisons and gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.autograd import gradcheck, gradgradcheck  # noqa: F401 - re-exported for tests

# Shapes the op tests sweep: 0-d, size-0, size-1 broadcast dims, ordinary.
SHAPES = [(), (0,), (1,), (5,), (2, 3), (3, 1), (1, 4), (2, 0, 3), (2, 3, 4)]
# Pairs that broadcast against each other.
BROADCAST_PAIRS = [((), (2, 3)), ((3,), (2, 3)), ((2, 1), (1, 3)), ((1,), (0,)),
                   ((2, 3, 1), (3, 4)), ((4, 1, 3), (2, 1))]


@pytest.fixture(autouse=True)
def _seed():
    tj.manual_seed(0)


def data(shape, dtype=np.float32, low=-2.0, high=2.0, seed=0):
    """Deterministic random numpy data of a shape and dtype."""
    rng = np.random.default_rng(seed + len(shape) * 7 + int(np.prod(shape, dtype=np.int64)))
    if np.dtype(dtype) == np.bool_:
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind in "iu":
        return rng.integers(int(low), int(high) + 1, shape).astype(dtype)
    return rng.uniform(low, high, shape).astype(dtype)


def noncontig(a: np.ndarray) -> np.ndarray:
    """The same values in a non-contiguous array (every other element of a bigger one)."""
    if a.ndim == 0:
        return a
    big = np.empty(a.shape[:-1] + (a.shape[-1] * 2,), dtype=a.dtype)
    view = big[..., ::2]
    view[...] = a
    return view


def leaf64(shape, low=-2.0, high=2.0, seed=0):
    """A float64 leaf that requires grad, for gradcheck."""
    return tj.tensor(data(shape, np.float64, low, high, seed), requires_grad=True)


def assert_close(actual, expected, rtol=1e-5, atol=1e-6, check_dtype=True):
    a = actual.detach().numpy() if isinstance(actual, tj.Tensor) else np.asarray(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    if check_dtype:
        assert a.dtype == e.dtype, f"dtype {a.dtype} != expected {e.dtype}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True)


def pytest_configure(config):
    """One compile cache for the whole test session (numba machine code is reused across tests
    and, within a session directory, across processes); synchronous compiles."""
    import os
    import tempfile
    if "TRACEJIT_CACHE_DIR" not in os.environ:
        os.environ["TRACEJIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="tracejit-test-cache-")
    # compiles block, as before tiered execution: a test's compiled call runs compiled code
    # (tests/runtime/test_tiered.py asks for compile="tiered" itself)
    os.environ.setdefault("TRACEJIT_SYNC_COMPILE", "1")
