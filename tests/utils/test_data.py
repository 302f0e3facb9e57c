"""tracejit.utils.data in one process: datasets, samplers, collate and the DataLoader's
arguments, against torch's documented behaviour (workers: test_data_workers.py)."""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit.utils import data as D
from tracejit.utils.data import (
    BatchSampler,
    ChainDataset,
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
    default_collate,
    default_convert,
    random_split,
)


def _ds(n=10):
    return TensorDataset(tj.arange(2 * n).reshape(n, 2).float(), tj.arange(n))


class Squares(Dataset):
    def __init__(self, n):
        self.n = n

    def __getitem__(self, i):
        return i * i

    def __len__(self):
        return self.n


class Stream(IterableDataset):
    def __init__(self, n, with_len=True):
        self.n = n
        self.with_len = with_len

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        if not self.with_len:
            raise TypeError("no len")
        return self.n


# ---------------------------------------------------------------------------------- datasets

def test_tensor_dataset_indexes_every_tensor():
    ds = _ds(5)
    assert len(ds) == 5
    x, y = ds[3]
    assert x.tolist() == [6.0, 7.0] and y.item() == 3
    with pytest.raises(AssertionError, match="Size mismatch between tensors"):
        TensorDataset(tj.zeros(3), tj.zeros(4))


def test_tensor_dataset_rows_are_views_and_keep_gradients():
    base = tj.arange(8).reshape(4, 2)
    ds = TensorDataset(base, tj.arange(4))
    row, label = ds[1]
    assert np.asarray(label).shape == () and label.item() == 1
    assert np.shares_memory(np.asarray(row), np.asarray(base))  # a view, as torch's t[i]
    with pytest.raises(TypeError, match="unsupported index True"):
        ds[True]  # bools take tracejit's indexing path, not the fast path for rows
    w = tj.randn(4, 3, requires_grad=True)
    batch = default_collate([TensorDataset(w)[i] for i in (0, 2)])
    batch[0].sum().backward()  # collate and indexing stay on the tape when gradients flow
    assert w.grad.sum(1).tolist() == [3.0, 0.0, 3.0, 0.0]


def test_dataset_base_class():
    with pytest.raises(NotImplementedError, match="should implement __getitem__"):
        Dataset()[0]
    with pytest.raises(TypeError):
        len(Dataset())  # no default __len__, as in torch


def test_subset_and_getitems():
    sub = Subset(Squares(10), [9, 2, 4])
    assert len(sub) == 3 and [sub[i] for i in range(3)] == [81, 4, 16]
    assert sub.__getitems__([0, 2]) == [81, 16]
    nested = Subset(sub, [2, 0])
    assert nested.__getitems__([0, 1]) == [16, 81]


def test_concat_dataset():
    ds = ConcatDataset([Squares(3), Squares(2)])
    assert len(ds) == 5 and ds.cumulative_sizes == [3, 5]
    assert [ds[i] for i in range(5)] == [0, 1, 4, 0, 1]
    assert ds[-1] == 1 and ds[-5] == 0
    with pytest.raises(ValueError, match="absolute value of index should not exceed"):
        ds[-6]
    assert isinstance(Squares(2) + Squares(1), ConcatDataset)
    assert [(Squares(2) + Squares(3))[i] for i in range(5)] == [0, 1, 0, 1, 4]
    with pytest.raises(AssertionError, match="should not be an empty iterable"):
        ConcatDataset([])
    with pytest.raises(AssertionError, match="does not support IterableDataset"):
        ConcatDataset([Stream(2)])


def test_chain_dataset():
    chain = Stream(2) + Stream(3)
    assert isinstance(chain, ChainDataset)
    assert list(chain) == [0, 1, 0, 1, 2] and len(chain) == 5
    with pytest.raises(AssertionError, match="only supports IterableDataset"):
        list(ChainDataset([Squares(2)]))


def test_random_split_lengths_cover_and_reproduce():
    a, b = random_split(range(10), [3, 7], generator=np.random.default_rng(42))
    assert len(a) == 3 and len(b) == 7
    assert sorted(list(a) + list(b)) == list(range(10))
    c, d = random_split(range(10), [3, 7], generator=np.random.default_rng(42))
    assert list(a) == list(c) and list(b) == list(d)
    tj.manual_seed(1)
    first = [list(s) for s in random_split(range(10), [5, 5])]
    tj.manual_seed(1)
    assert [list(s) for s in random_split(range(10), [5, 5])] == first


def test_random_split_fractions_distribute_the_remainder_round_robin():
    parts = random_split(range(10), [0.33, 0.33, 0.34])
    assert [len(p) for p in parts] == [4, 3, 3]  # floor gives 3, 3, 3; one left for the first
    parts = random_split(range(30), [0.3, 0.3, 0.4])
    assert [len(p) for p in parts] == [9, 9, 12]
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        random_split(range(3), [0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="Fraction at index 0 is not between 0 and 1"):
        random_split(range(10), [-0.5, 1.5])
    with pytest.raises(ValueError, match="Sum of input lengths does not equal"):
        random_split(range(10), [3, 3])
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        random_split(range(10), [5, 5], generator=0)


# ---------------------------------------------------------------------------------- samplers

def test_sequential_sampler():
    s = SequentialSampler(range(4))
    assert list(s) == [0, 1, 2, 3] and len(s) == 4


def test_random_sampler_is_a_permutation_seeded_by_manual_seed():
    s = RandomSampler(range(20))
    tj.manual_seed(3)
    first, second = list(s), list(s)
    assert sorted(first) == list(range(20)) and first != second  # a new order every epoch
    tj.manual_seed(3)
    assert list(s) == first and list(s) == second
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    assert list(RandomSampler(range(20), generator=g1)) == \
        list(RandomSampler(range(20), generator=g2))


def test_random_sampler_replacement_and_num_samples():
    s = RandomSampler(range(3), replacement=True, num_samples=50)
    out = list(s)
    assert len(out) == len(s) == 50 and set(out) <= {0, 1, 2}
    s = RandomSampler(range(4), num_samples=10)  # more than n without replacement: permutations
    out = list(s)
    assert len(out) == 10 and sorted(out[:4]) == [0, 1, 2, 3] and sorted(out[4:8]) == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="replacement should be a boolean value"):
        RandomSampler(range(3), replacement=1)
    with pytest.raises(ValueError, match="num_samples should be a positive integer value"):
        RandomSampler(range(3), num_samples=0)
    with pytest.raises(ValueError, match="num_samples should be a positive integer value"):
        RandomSampler([])
    with pytest.raises(TypeError, match="generator should be a numpy.random.Generator"):
        RandomSampler(range(3), generator=object())


def test_subset_random_sampler():
    s = SubsetRandomSampler([10, 20, 30, 40], generator=np.random.default_rng(0))
    out = list(s)
    assert sorted(out) == [10, 20, 30, 40] and len(s) == 4


def test_weighted_random_sampler():
    s = WeightedRandomSampler([0.0, 1.0, 3.0], num_samples=200)
    out = list(s)
    assert len(out) == len(s) == 200 and 0 not in out
    assert out.count(2) > out.count(1)
    assert s.weights.dtype == tj.float64
    no_rep = list(WeightedRandomSampler([1, 1, 1, 1], 4, replacement=False,
                                        generator=np.random.default_rng(0)))
    assert sorted(no_rep) == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="cannot sample n_sample > prob_dist"):
        list(WeightedRandomSampler([1, 0, 1], 3, replacement=False))
    with pytest.raises(ValueError, match="num_samples should be a positive integer"):
        WeightedRandomSampler([1, 2], num_samples=True)
    with pytest.raises(ValueError, match="replacement should be a boolean value"):
        WeightedRandomSampler([1, 2], 2, replacement=0)
    with pytest.raises(ValueError, match="weights should be a 1d sequence"):
        WeightedRandomSampler([[1, 2]], 2)


def test_batch_sampler():
    assert list(BatchSampler(SequentialSampler(range(10)), 3, False)) == \
        [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert list(BatchSampler(range(10), 3, True)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len(BatchSampler(range(10), 3, False)) == 4
    assert len(BatchSampler(range(10), 3, True)) == 3
    with pytest.raises(ValueError, match="batch_size should be a positive integer value"):
        BatchSampler(range(3), 0, False)
    with pytest.raises(ValueError, match="batch_size should be a positive integer value"):
        BatchSampler(range(3), True, False)
    with pytest.raises(ValueError, match="drop_last should be a boolean value"):
        BatchSampler(range(3), 2, 1)


def test_sampler_base_warns_about_data_source():
    with pytest.warns(UserWarning, match="`data_source` argument is not used"):
        D.Sampler(range(3))
    with pytest.raises(NotImplementedError):
        iter(D.Sampler())


# ---------------------------------------------------------------------------------- collate

Point = collections.namedtuple("Point", "x y")


def test_collate_numbers_follow_torch_dtypes():
    assert default_collate([1, 2]).dtype == tj.int64
    floats = default_collate([1.5, 2.0])
    assert floats.dtype == tj.float64 and floats.tolist() == [1.5, 2.0]
    assert default_collate([True, False]).dtype == tj.bool
    assert default_collate([np.float32(1), np.float32(2)]).dtype == tj.float32
    assert default_collate([np.float64(1), np.float64(2)]).dtype == tj.float64
    assert default_collate([np.int32(1)]).dtype == tj.int32


def test_collate_tensors_and_arrays_stack_on_a_new_first_dimension():
    out = default_collate([tj.ones(2, 3), tj.zeros(2, 3)])
    assert out.shape == (2, 2, 3) and out[0].sum().item() == 6
    arr = default_collate([np.ones(3, np.float32), np.zeros(3, np.float32)])
    assert isinstance(arr, tj.Tensor) and arr.shape == (2, 3) and arr.dtype == tj.float32
    assert default_collate([np.arange(2), np.arange(2)]).dtype == tj.int64


def test_collate_containers():
    out = default_collate([{"a": 1, "s": "x"}, {"a": 2, "s": "y"}])
    assert out["a"].tolist() == [1, 2] and out["s"] == ["x", "y"]
    p = default_collate([Point(1, 2.0), Point(3, 4.0)])
    assert isinstance(p, Point) and p.x.tolist() == [1, 3] and p.y.dtype == tj.float64
    t = default_collate([(1, "a"), (2, "b")])
    assert isinstance(t, list) and t[0].tolist() == [1, 2] and list(t[1]) == ["a", "b"]
    lists = default_collate([[1, 2], [3, 4]])
    assert isinstance(lists, list) and [x.tolist() for x in lists] == [[1, 3], [2, 4]]
    assert default_collate(["a", "b"]) == ["a", "b"]
    assert default_collate([b"a", b"b"]) == [b"a", b"b"]
    od = default_collate([collections.OrderedDict(k=1)])
    assert isinstance(od, collections.OrderedDict) and od["k"].tolist() == [1]


def test_collate_errors():
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="default_collate: batch must contain tensors, numpy "
                                        "arrays, numbers, dicts or lists; found <class 'object'>"):
        default_collate([object()])
    with pytest.raises(TypeError, match="found <U1"):
        default_collate([np.array(["a"])])
    with pytest.raises(TypeError, match="uint8 is not supported by tracejit"):
        default_collate([np.zeros(2, np.uint8)])


def test_collate_with_a_custom_map():
    from tracejit.utils.data.collate import collate, default_collate_fn_map
    fn_map = {**default_collate_fn_map, str: lambda batch, *, collate_fn_map: "".join(batch)}
    assert collate([("a", 1), ("b", 2)], collate_fn_map=fn_map)[0] == "ab"


def test_default_convert():
    a = np.arange(3.0)
    t = default_convert(a)
    assert isinstance(t, tj.Tensor) and t.dtype == tj.float64
    a[0] = 7.0
    assert t[0].item() == 7.0  # no copy, as torch.as_tensor
    x = tj.ones(2)
    assert default_convert(x) is x
    assert default_convert(np.float32(2)).dtype == tj.float32
    assert isinstance(default_convert((np.zeros(1), 1)), list)  # tuples become lists
    p = default_convert(Point(np.zeros(1), "s"))
    assert isinstance(p, Point) and isinstance(p.x, tj.Tensor) and p.y == "s"
    s = np.array(["a"])
    assert default_convert(s) is s
    assert default_convert({"k": np.ones(1)})["k"].shape == (1,)
    assert default_convert("text") == "text" and default_convert(3) == 3


# ------------------------------------------------------------------------------- DataLoader

def test_loader_batches_and_len():
    loader = DataLoader(_ds(10), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    assert [y.tolist() for _, y in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][0].shape == (4, 2)
    dropped = DataLoader(_ds(10), batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [y.tolist() for _, y in dropped] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    it = iter(loader)
    assert len(it) == 3


def test_loader_default_batch_size_is_one():
    batches = list(DataLoader(Squares(3)))
    assert [b.tolist() for b in batches] == [[0], [1], [4]]


def test_loader_without_batching_converts_samples():
    loader = DataLoader(Squares(3), batch_size=None)
    assert list(loader) == [0, 1, 4] and len(loader) == 3
    arrays = list(DataLoader([np.ones(2), np.zeros(2)], batch_size=None))
    assert all(isinstance(a, tj.Tensor) and a.shape == (2,) for a in arrays)


def test_loader_shuffle_is_reproducible_with_manual_seed():
    loader = DataLoader(Squares(20), batch_size=5, shuffle=True)
    tj.manual_seed(7)
    epoch1 = [b.tolist() for b in loader]
    epoch2 = [b.tolist() for b in loader]
    assert sorted(sum(epoch1, [])) == sorted(i * i for i in range(20))
    assert epoch1 != epoch2
    tj.manual_seed(7)
    assert [b.tolist() for b in loader] == epoch1
    assert [b.tolist() for b in loader] == epoch2
    g = DataLoader(Squares(20), batch_size=5, shuffle=True, generator=np.random.default_rng(1))
    h = DataLoader(Squares(20), batch_size=5, shuffle=True, generator=np.random.default_rng(1))
    assert [b.tolist() for b in g] == [b.tolist() for b in h]
    assert isinstance(loader.sampler, RandomSampler)


def test_loader_custom_sampler_batch_sampler_and_collate_fn():
    loader = DataLoader(Squares(5), sampler=[4, 3, 2, 1, 0], batch_size=2)
    assert [b.tolist() for b in loader] == [[16, 9], [4, 1], [0]]
    loader = DataLoader(Squares(5), batch_sampler=[[0, 4], [2]])
    assert loader.batch_size is None and [b.tolist() for b in loader] == [[0, 16], [4]]
    loader = DataLoader(Squares(4), batch_size=2, collate_fn=sum)
    assert list(loader) == [1, 13]


def test_loader_uses_getitems_for_whole_batches():
    calls = []

    class Batched(Squares):
        def __getitems__(self, indices):
            calls.append(list(indices))
            return [self[i] for i in indices]

    assert [b.tolist() for b in DataLoader(Batched(5), batch_size=3)] == [[0, 1, 4], [9, 16]]
    assert calls == [[0, 1, 2], [3, 4]]


def test_loader_iterable_dataset():
    loader = DataLoader(Stream(7), batch_size=3)
    assert [b.tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6]] and len(loader) == 3
    loader = DataLoader(Stream(7), batch_size=3, drop_last=True)
    assert [b.tolist() for b in loader] == [[0, 1, 2], [3, 4, 5]] and len(loader) == 2
    assert list(DataLoader(Stream(3), batch_size=None)) == [0, 1, 2]
    with pytest.raises(TypeError):
        len(DataLoader(Stream(3, with_len=False)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_workers=-1), "num_workers option should be non-negative; use num_workers=0"),
    (dict(timeout=-1), "timeout option should be non-negative"),
    (dict(prefetch_factor=2), "prefetch_factor option could only be specified in multiproc"),
    (dict(num_workers=1, prefetch_factor=-1), "prefetch_factor option should be non-negative"),
    (dict(persistent_workers=True), "persistent_workers option needs num_workers > 0"),
    (dict(shuffle=True, sampler=[0, 1]), "sampler option is mutually exclusive with shuffle"),
    (dict(batch_sampler=[[0]], batch_size=2), "batch_sampler option is mutually exclusive"),
    (dict(batch_sampler=[[0]], shuffle=True), "batch_sampler option is mutually exclusive"),
    (dict(batch_sampler=[[0]], sampler=[0]), "batch_sampler option is mutually exclusive"),
    (dict(batch_sampler=[[0]], drop_last=True), "batch_sampler option is mutually exclusive"),
    (dict(batch_size=None, drop_last=True), "batch_size=None option disables auto-batching"),
    (dict(multiprocessing_context="fork"), "multiprocessing_context can only be used with"),
    (dict(num_workers=1, multiprocessing_context="nope"), "should specify a valid start method"),
])
def test_loader_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataLoader(Squares(3), **kwargs)


def test_loader_argument_type_errors():
    with pytest.raises(TypeError, match="multiprocessing_context option should be a valid"):
        DataLoader(Squares(3), num_workers=1, multiprocessing_context=3)
    with pytest.raises(TypeError, match="generator should be a numpy.random.Generator"):
        DataLoader(Squares(3), shuffle=True, generator=5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(shuffle=True), "expected unspecified shuffle option, but got shuffle=True"),
    (dict(sampler=[0]), "expected unspecified sampler option"),
    (dict(batch_sampler=[[0]]), "expected unspecified batch_sampler option"),
])
def test_loader_iterable_dataset_refuses_samplers(kwargs, message):
    with pytest.raises(ValueError, match=f"DataLoader with IterableDataset: {message}"):
        DataLoader(Stream(3), **kwargs)


def test_loader_settings_are_frozen_after_init():
    loader = DataLoader(Squares(3))
    for attr in ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset",
                 "persistent_workers"):
        with pytest.raises(ValueError, match=f"{attr} attribute should not be set after "
                                             "DataLoader is initialized"):
            setattr(loader, attr, None)
    loader.collate_fn = sum  # not frozen in torch either
    assert loader.num_workers == 0 and loader.timeout == 0 and loader.prefetch_factor is None


def test_pin_memory_is_accepted_with_a_one_time_note(monkeypatch):
    from tracejit.utils.data import dataloader
    monkeypatch.setattr(dataloader, "_pin_memory_noted", [False])
    loader = DataLoader(Squares(2), pin_memory=True)
    with pytest.warns(UserWarning, match="pin_memory=True is ignored"):
        assert [b.tolist() for b in loader] == [[0], [1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(loader)  # once per process


def test_docstring_examples():
    import doctest
    import importlib
    for name in ("", ".dataset", ".sampler", ".collate", ".dataloader", ".worker"):
        module = importlib.import_module("tracejit.utils.data" + name)
        result = doctest.testmod(module, extraglobs={"tracejit": tj})
        assert result.failed == 0, module.__name__
