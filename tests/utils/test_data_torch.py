"""Parity with torch.utils.data where the results are deterministic: batch contents and
order for sequential samplers, collate outputs and dtypes, lengths, random_split's sizes.
Skipped without torch (``pip install torch==2.13.0``)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

import tracejit as tj
from tracejit.utils import data as tjd

torch = pytest.importorskip("torch")
tud = torch.utils.data
pytestmark = pytest.mark.torch

Pair = collections.namedtuple("Pair", "a b")


def _same(ours, theirs):
    """Equal structure, values and dtypes, tensors compared as arrays."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, tj.Tensor), type(ours)
        ref = theirs.numpy()
        assert ours.shape == ref.shape and ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
        np.testing.assert_array_equal(ours.numpy(), ref)
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs)
        for k in theirs:
            _same(ours[k], theirs[k])
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            _same(a, b)
    else:
        assert ours == theirs


SAMPLES = {
    "ints": [1, 2, 3],
    "floats": [1.5, 2.0, -3.25],
    "bools": [True, False],
    "np_f32": [np.float32(1.5), np.float32(2)],
    "np_i32": [np.int32(4), np.int32(5)],
    "np_bool": [np.bool_(True), np.bool_(False)],
    "arrays": [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)],
    "int_arrays": [np.arange(3), np.arange(3) * 2],
    "f64_arrays": [np.linspace(0, 1, 4), np.zeros(4)],
    "strings": ["a", "bc"],
    "bytes": [b"a", b"b"],
    "dicts": [{"x": 1, "y": "s", "z": [1.0, 2.0]}, {"x": 2, "y": "t", "z": [3.0, 4.0]}],
    "tuples": [(1, "a", 2.5), (2, "b", 3.5)],
    "lists": [[1, 2], [3, 4]],
    "named": [Pair(1, np.float32(2)), Pair(3, np.float32(4))],
    "nested": [{"p": (np.ones(2), [1, 2])}, {"p": (np.zeros(2), [3, 4])}],
    "ordered": [collections.OrderedDict(b=1, a=2.0), collections.OrderedDict(b=3, a=4.0)],
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_default_collate_matches_torch(name):
    batch = SAMPLES[name]
    _same(tjd.default_collate(batch), tud.default_collate(batch))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_default_convert_matches_torch(name):
    for sample in SAMPLES[name]:
        _same(tjd.default_convert(sample), tud.default_convert(sample))


def test_tensor_samples_collate_like_torch():
    ours = tjd.default_collate([tj.arange(3), tj.arange(3) + 1])
    theirs = tud.default_collate([torch.arange(3), torch.arange(3) + 1])
    _same(ours, theirs)


def test_collate_error_messages_match_torch():
    for batch in ([object()], [np.array(["a"])], [[1, 2], [3]]):
        with pytest.raises((TypeError, RuntimeError)) as theirs:
            tud.default_collate(batch)
        with pytest.raises(type(theirs.value)) as ours:
            tjd.default_collate(batch)
        assert str(ours.value) == str(theirs.value)


class Items:
    def __init__(self, n):
        self.n = n

    def __getitem__(self, i):
        return {"x": np.full(2, i, np.float32), "i": i, "f": i / 2, "s": str(i)}

    def __len__(self):
        return self.n


@pytest.mark.parametrize("kwargs", [
    dict(), dict(batch_size=3), dict(batch_size=3, drop_last=True), dict(batch_size=None),
    dict(batch_size=4, sampler=[5, 0, 3, 3, 1]), dict(batch_sampler=[[1, 2], [0], [6, 5, 4]]),
])
def test_loader_batches_match_torch(kwargs):
    ours = list(tjd.DataLoader(Items(7), **kwargs))
    theirs = list(tud.DataLoader(Items(7), **kwargs))
    assert len(tjd.DataLoader(Items(7), **kwargs)) == len(tud.DataLoader(Items(7), **kwargs))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        _same(a, b)


def test_loader_with_workers_matches_torch():
    ours = list(tjd.DataLoader(Items(7), batch_size=2, num_workers=2, timeout=20))
    theirs = list(tud.DataLoader(Items(7), batch_size=2))
    for a, b in zip(ours, theirs):
        _same(a, b)


class Stream(tud.IterableDataset):
    def __iter__(self):
        return iter(range(7))


class OurStream(tjd.IterableDataset):
    def __iter__(self):
        return iter(range(7))


@pytest.mark.parametrize("kwargs", [dict(batch_size=3), dict(batch_size=3, drop_last=True),
                                    dict(batch_size=None)])
def test_iterable_loader_matches_torch(kwargs):
    ours = list(tjd.DataLoader(OurStream(), **kwargs))
    theirs = list(tud.DataLoader(Stream(), **kwargs))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        _same(a, b)


@pytest.mark.parametrize("lengths", [[3, 20], [0.3, 0.7], [0.33, 0.33, 0.34],
                                     [0.5, 0.25, 0.25], [0.1] * 10, [0.6, 0.6], [3, 3]])
def test_random_split_sizes_match_torch(lengths):
    try:
        theirs = [len(s) for s in tud.random_split(range(23), lengths)]
    except ValueError as e:
        with pytest.raises(ValueError, match=str(e).replace("!", "")):
            tjd.random_split(range(23), lengths)
        return
    assert [len(s) for s in tjd.random_split(range(23), lengths)] == theirs


def test_samplers_match_torch():
    assert list(tjd.SequentialSampler(range(5))) == list(tud.SequentialSampler(range(5)))
    for bs, drop in ((2, False), (2, True), (5, False), (6, True)):
        assert list(tjd.BatchSampler(range(5), bs, drop)) == list(tud.BatchSampler(range(5), bs,
                                                                                  drop))
        assert len(tjd.BatchSampler(range(5), bs, drop)) == len(tud.BatchSampler(range(5), bs,
                                                                                drop))
    assert len(tjd.RandomSampler(range(5), num_samples=12)) == \
        len(tud.RandomSampler(range(5), num_samples=12))
    ours = list(tjd.RandomSampler(range(5), num_samples=12))
    theirs = list(tud.RandomSampler(range(5), num_samples=12))
    assert sorted(ours[:10]) == sorted(theirs[:10]) and len(ours) == len(theirs)


def test_concat_and_subset_match_torch():
    a, b = list(range(3)), list(range(10, 14))
    ours, theirs = tjd.ConcatDataset([a, b]), tud.ConcatDataset([a, b])
    assert ours.cumulative_sizes == theirs.cumulative_sizes
    assert [ours[i] for i in range(-7, 7)] == [theirs[i] for i in range(-7, 7)]
    assert list(tjd.Subset(b, [3, 1])) == list(tud.Subset(b, [3, 1]))


def test_loader_argument_errors_match_torch():
    cases = [dict(num_workers=-1), dict(timeout=-1), dict(prefetch_factor=2),
             dict(persistent_workers=True), dict(shuffle=True, sampler=[0]),
             dict(batch_sampler=[[0]], batch_size=2), dict(batch_size=None, drop_last=True),
             dict(multiprocessing_context="fork")]
    for kwargs in cases:
        with pytest.raises(ValueError) as theirs:
            tud.DataLoader(Items(3), **kwargs)
        with pytest.raises(ValueError) as ours:
            tjd.DataLoader(Items(3), **kwargs)
        assert str(ours.value) == str(theirs.value), kwargs
