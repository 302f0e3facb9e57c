"""Traced-op cases of tests/test_trace_ops.py exported, saved, loaded and run: the loaded
callable gives what the function gives eagerly (results, and inputs updated in place). The
default run takes the first case of every fourth kind (unary, reduce, getitem, conv, nn, ...);
``-m slow`` runs every case."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

from ..test_trace_ops import CASES, _leaves, _make, _seed

_RUNNABLE = [c for c in CASES if not c.may_raise]


def _kind(case) -> str:
    return case.id.split("-")[0]


# the first case of every fourth kind: a spread at a few seconds (each case compiles kernels)
SAMPLE = list({_kind(c): c for c in reversed(_RUNNABLE)}.values())[::-1][::4]
SLOW = [c for c in _RUNNABLE if c not in SAMPLE]


def _same(got, want, what):
    g = got._data if isinstance(got, tj.Tensor) else np.asarray(got)
    w = want._data if isinstance(want, tj.Tensor) else np.asarray(want)
    assert g.shape == w.shape and g.dtype == w.dtype, f"{what}: {g.dtype}{g.shape} vs " \
                                                      f"{w.dtype}{w.shape}"
    if g.dtype.kind == "f":  # compiled kernels: fast float32 functions, reassociated sums
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(g, w, err_msg=what)


def check_round_trip(case, tmp_path):
    eager_args = _make(case)
    _seed(case)
    with tj.eager():
        expected = case.fn(*eager_args)
    args = _make(case)
    tj.export(case.fn, *args).save(tmp_path / "case.tjit")
    loaded = tj.load(tmp_path / "case.tjit")
    args = _make(case)
    _seed(case)
    got = loaded(*args)
    assert type(got) is type(expected) or isinstance(expected, tj.Tensor)
    want = _leaves(expected) + [t for t in eager_args if isinstance(t, tj.Tensor)]
    have = _leaves(got) + [t for t in args if isinstance(t, tj.Tensor)]
    assert len(have) == len(want)
    for i, (g, w) in enumerate(zip(have, want)):
        _same(g, w, f"{case.id}: output/input {i}")


@pytest.mark.parametrize("case", SAMPLE, ids=[c.id for c in SAMPLE])
def test_round_trip_sample(case, tmp_path):
    check_round_trip(case, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW, ids=[c.id for c in SLOW])
def test_round_trip_all(case, tmp_path):
    check_round_trip(case, tmp_path)
