"""DistributedSampler with explicit num_replicas and rank (no process group needed); the
sampler on real ranks is in tests/distributed/cases.py."""

from __future__ import annotations

import pytest

import tracejit as tj
from tracejit.utils.data import DataLoader, DistributedSampler, TensorDataset


@pytest.mark.parametrize("n,replicas", [(12, 3), (13, 3), (2, 4), (1, 1)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shares_partition_the_epoch(n, replicas, drop_last):
    shares = [list(DistributedSampler(range(n), replicas, r, seed=7, drop_last=drop_last))
              for r in range(replicas)]
    lengths = {len(s) for s in shares}
    assert len(lengths) == 1
    assert lengths.pop() == len(DistributedSampler(range(n), replicas, 0, drop_last=drop_last))
    flat = [i for s in shares for i in s]
    if drop_last:
        assert len(flat) == len(set(flat)) == n - n % replicas
    else:
        assert set(flat) == set(range(n))
        assert len(flat) == -(-n // replicas) * replicas  # padded with the first indices


def test_epochs_reshuffle_identically_on_every_rank():
    a, b = DistributedSampler(range(10), 2, 0), DistributedSampler(range(10), 2, 1)
    first = list(a) + list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    second = list(a) + list(b)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert list(DistributedSampler(range(6), 2, 1, shuffle=False)) == [1, 3, 5]


def test_feeds_the_dataloader():
    ds = TensorDataset(tj.arange(8), tj.arange(8) * 2)
    loader = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, 2, 1, shuffle=False))
    assert [x.tolist() for x, _ in loader] == [[1, 3], [5, 7]]


def test_errors():
    with pytest.raises(ValueError,
                       match=r"Invalid rank 2, rank should be in the interval \[0, 1\]"):
        DistributedSampler(range(4), 2, 2)
    with pytest.raises(RuntimeError, match="pass num_replicas and rank, or call "
                                           "tracejit.distributed.init_process_group"):
        DistributedSampler(range(4))
