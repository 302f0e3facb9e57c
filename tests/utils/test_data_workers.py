"""DataLoader with worker processes: order, seeds, errors, persistence, timeouts and clean
shutdown (no live children, no shared memory segments left). Datasets are module-level so the
"spawn" start method can import them in the workers. Every loader gets a ``timeout`` and the
module a watchdog, so a bug fails a test instead of hanging the suite."""

from __future__ import annotations

import _thread
import faulthandler
import gc
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import tracejit as tj
from tracejit.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset, get_worker_info
from tracejit.utils.data._shm import Header, leftover_segments, pack, unpack

WAIT = 20  # seconds: any single batch taking longer is a bug


class Slow(Dataset):
    """Odd items are slow, so with two workers answers arrive out of order."""

    def __init__(self, n, delay=0.03):
        self.n, self.delay = n, delay

    def __getitem__(self, i):
        if i % 2:
            time.sleep(self.delay)
        return {"x": np.full(3, i, np.float32), "i": i, "name": f"s{i}"}

    def __len__(self):
        return self.n


class Seeds(Dataset):
    def __getitem__(self, i):
        info = get_worker_info()
        return (info.id, info.num_workers, info.seed, random.random(), float(np.random.rand()),
                tj.rand(1).item())

    def __len__(self):
        return 4


class Fails(Dataset):
    def __init__(self, bad=2, exc=ValueError):
        self.bad, self.exc = bad, exc

    def __getitem__(self, i):
        if i == self.bad:
            raise self.exc(f"bad item {i}")
        return i

    def __len__(self):
        return 4


class Sleeps(Dataset):
    def __init__(self, seconds):
        self.seconds = seconds

    def __getitem__(self, i):
        time.sleep(self.seconds)
        return i

    def __len__(self):
        return 100


class Dies(Dataset):
    def __getitem__(self, i):
        if i == 1:
            os._exit(3)
        return i

    def __len__(self):
        return 4


class Sharded(IterableDataset):
    """Splits range(n) between the workers, as torch's docs show."""

    def __init__(self, n, shard=True):
        self.n, self.shard = n, shard

    def __iter__(self):
        info = get_worker_info()
        if info is None or not self.shard:
            return iter(range(self.n))
        return iter(range(info.id, self.n, info.num_workers))


class Big(Dataset):
    def __getitem__(self, i):
        return tj.full((256, 1024), float(i)), np.full(1000, i)

    def __len__(self):
        return 4


class CountingPids(Dataset):
    def __getitem__(self, i):
        return os.getpid()

    def __len__(self):
        return 4


def _record_init(worker_id):
    info = get_worker_info()
    assert info.id == worker_id
    np.save(os.path.join(os.environ["TJ_TEST_INIT_DIR"], f"w{worker_id}.npy"),
            np.array([info.seed]))


def _failing_init(worker_id):
    raise RuntimeError(f"init of worker {worker_id} failed")


@pytest.fixture(autouse=True)
def clean_after():
    """A hang dumps every thread and exits; after each test the workers and segments are gone."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    assert_clean()


def assert_clean():
    gc.collect()
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert multiprocessing.active_children() == []
    assert leftover_segments(f"tjdl_{os.getpid()}_") == []


def _ids(batches):
    return [b["i"].tolist() for b in batches]


def test_two_workers_give_the_same_batches_in_order():
    ds = Slow(9)
    ref = list(DataLoader(ds, batch_size=2))
    loader = DataLoader(ds, batch_size=2, num_workers=2, timeout=WAIT)
    out = list(loader)
    assert _ids(out) == _ids(ref) == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    assert len(loader) == 5
    for a, b in zip(out, ref):
        np.testing.assert_array_equal(a["x"].numpy(), b["x"].numpy())
        assert a["name"] == b["name"] and a["x"].dtype == tj.float32


def test_out_of_order_answers_are_held_back():
    # batch_size 1: worker 1 gets the slow odd items, worker 0 races ahead
    out = list(DataLoader(Slow(8, delay=0.05), num_workers=2, timeout=WAIT))
    assert _ids(out) == [[i] for i in range(8)]


def test_in_order_false_yields_what_arrives_first():
    out = list(DataLoader(Slow(6, delay=0.05), num_workers=2, timeout=WAIT, in_order=False))
    assert sorted(sum(_ids(out), [])) == list(range(6))


def test_shuffle_with_workers_matches_no_workers_for_the_same_seed():
    ds = Slow(10, delay=0.0)
    tj.manual_seed(11)
    ref = _ids(DataLoader(ds, batch_size=3, shuffle=True))
    tj.manual_seed(11)
    assert _ids(DataLoader(ds, batch_size=3, shuffle=True, num_workers=2, timeout=WAIT)) == ref


def test_big_batches_travel_through_shared_memory():
    header = pack((tj.ones(512, 512), {"a": np.arange(10)}, "meta"), f"tjdl_{os.getpid()}_t_")
    assert isinstance(header, Header) and header.segment is not None
    assert len(header.structure) < 1000  # the pipe carries only a small header
    x, d, meta = unpack(header)
    assert x.shape == (512, 512) and x.sum().item() == 512 * 512 and meta == "meta"
    assert d["a"].tolist() == list(range(10))
    batches = list(DataLoader(Big(), batch_size=2, num_workers=2, timeout=WAIT))
    assert [float(b[0][:, 0, 0].sum().item()) for b in batches] == [1.0, 5.0]
    assert batches[1][1].shape == (2, 1000) and batches[1][1][1, 0].item() == 3


def test_worker_info_and_seeds():
    tj.manual_seed(5)
    rows = [tuple(r.tolist() for r in b) for b in
            DataLoader(Seeds(), batch_size=2, num_workers=2, timeout=WAIT)]
    (ids0, n0, seed0, py0, np0, tj0), (ids1, n1, seed1, py1, np1, tj1) = rows
    assert ids0 == [0, 0] and ids1 == [1, 1] and n0 == n1 == [2, 2]
    assert seed1[0] == seed0[0] + 1  # base_seed + worker_id
    assert py0[0] != py1[0] and np0[0] != np1[0] and tj0[0] != tj1[0]
    tj.manual_seed(5)
    again = [tuple(r.tolist() for r in b) for b in
             DataLoader(Seeds(), batch_size=2, num_workers=2, timeout=WAIT)]
    assert again == rows  # tj.manual_seed fixes the workers' seeds too
    assert get_worker_info() is None


def test_generator_fixes_the_base_seed():
    def seeds():
        loader = DataLoader(Seeds(), batch_size=4, num_workers=1, timeout=WAIT,
                            generator=np.random.default_rng(9))
        return [b[2].tolist() for b in loader]
    assert seeds() == seeds()


def test_worker_init_fn(tmp_path, monkeypatch):
    monkeypatch.setenv("TJ_TEST_INIT_DIR", str(tmp_path))
    list(DataLoader(Slow(4, 0.0), num_workers=2, worker_init_fn=_record_init, timeout=WAIT))
    seeds = [int(np.load(tmp_path / f"w{w}.npy")[0]) for w in (0, 1)]
    assert seeds[1] == seeds[0] + 1


def test_worker_exception_is_reraised_with_its_traceback():
    it = iter(DataLoader(Fails(), num_workers=1, timeout=WAIT))
    assert next(it).tolist() == [0] and next(it).tolist() == [1]
    with pytest.raises(ValueError) as e:
        next(it)
    text = str(e.value)
    assert text.startswith("Caught ValueError in DataLoader worker process 0.\n"
                           "Original Traceback (most recent call last):")
    assert "bad item 2" in text and "__getitem__" in text
    assert next(it).tolist() == [3]  # the loader goes on, as torch's does
    del it


def test_worker_key_error_stays_readable():
    with pytest.raises(KeyError) as e:
        list(DataLoader(Fails(bad=0, exc=KeyError), num_workers=1, timeout=WAIT))
    assert "Caught KeyError in DataLoader worker process 0" in str(e.value)
    assert "\\n" not in str(e.value)  # not repr()-escaped


def test_worker_init_fn_error_is_reported_on_the_first_batch():
    with pytest.raises(RuntimeError, match="Caught RuntimeError in DataLoader worker process 0"
                                           "(.|\n)*init of worker 0 failed"):
        list(DataLoader(Slow(2, 0.0), num_workers=1, worker_init_fn=_failing_init, timeout=WAIT))


def test_iterable_dataset_with_workers():
    loader = DataLoader(Sharded(7), batch_size=2, num_workers=2, timeout=WAIT)
    batches = [b.tolist() for b in loader]
    # worker 0 has 0 2 4 6, worker 1 has 1 3 5; batches alternate between the workers
    assert batches == [[0, 2], [1, 3], [4, 6], [5]]
    unsharded = DataLoader(Sharded(3, shard=False), batch_size=None, num_workers=2, timeout=WAIT)
    assert sorted(b.item() if hasattr(b, "item") else b for b in unsharded) == [0, 0, 1, 1, 2, 2]
    dropped = DataLoader(Sharded(7), batch_size=2, drop_last=True, num_workers=2, timeout=WAIT)
    assert [b.tolist() for b in dropped] == [[0, 2], [1, 3], [4, 6]]


def test_persistent_workers_survive_epochs():
    loader = DataLoader(CountingPids(), batch_size=2, num_workers=2, persistent_workers=True,
                        timeout=WAIT)
    first = sorted(sum((b.tolist() for b in loader), []))
    second = sorted(sum((b.tolist() for b in loader), []))
    assert first == second and len(set(first)) == 2
    assert len(multiprocessing.active_children()) == 2
    for _ in loader:  # an epoch left half way ...
        break
    third = sorted(sum((b.tolist() for b in loader), []))
    assert third == first  # ... then a full one: the stale answers were dropped
    del loader


def test_persistent_iterable_dataset_restarts_each_epoch():
    loader = DataLoader(Sharded(5), batch_size=2, num_workers=2, persistent_workers=True,
                        timeout=WAIT)
    assert [b.tolist() for b in loader] == [[0, 2], [1, 3], [4]]
    assert [b.tolist() for b in loader] == [[0, 2], [1, 3], [4]]
    del loader


def test_break_out_of_the_loop_shuts_the_workers_down():
    for i, _ in enumerate(DataLoader(Slow(40), num_workers=2, timeout=WAIT)):
        if i == 2:
            break
    assert_clean()


def test_timeout():
    it = iter(DataLoader(Sleeps(1.5), num_workers=1, timeout=0.3))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"DataLoader timed out after 0.3 seconds"):
        next(it)
    assert time.monotonic() - t0 < 1.2
    del it  # shutting down waits for the worker to finish its item, as torch does


def test_dead_worker_is_an_error():
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid\(s\) \d+\) exited "
                                           "unexpectedly"):
        list(DataLoader(Dies(), num_workers=1, timeout=WAIT))


def test_ctrl_c_shuts_the_workers_down():
    loader = DataLoader(Sleeps(0.2), num_workers=2, timeout=WAIT)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        for _ in loader:
            pass
    timer.join()
    assert_clean()


@pytest.mark.parametrize("method", [m for m in ("spawn", "forkserver")
                                    if m in multiprocessing.get_all_start_methods()])
def test_other_start_methods(method):
    loader = DataLoader(TensorDataset(tj.arange(6)), batch_size=4, num_workers=1,
                        multiprocessing_context=method, timeout=60)
    assert [b[0].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5]]


class Touches(Dataset):
    """Leaves a file per item fetched, to count what the workers fetched ahead."""

    def __init__(self, folder):
        self.folder = folder

    def __getitem__(self, i):
        open(os.path.join(self.folder, str(i)), "w").close()
        return i

    def __len__(self):
        return 50


@pytest.mark.parametrize("workers, prefetch", [(1, 1), (2, 2)])
def test_prefetch_factor_bounds_the_work_in_flight(tmp_path, workers, prefetch):
    it = iter(DataLoader(Touches(str(tmp_path)), num_workers=workers, prefetch_factor=prefetch,
                         timeout=WAIT))
    assert next(it).tolist() == [0]
    time.sleep(0.3)  # let the workers run ahead as far as they are allowed
    # the batch taken out, plus prefetch_factor batches per worker in flight
    assert len(os.listdir(tmp_path)) == 1 + workers * prefetch
    del it


_ORPHAN_SCRIPT = textwrap.dedent("""
    import multiprocessing, time
    import tracejit as tj
    from tracejit.utils.data import DataLoader, TensorDataset

    if __name__ == "__main__":
        loader = DataLoader(TensorDataset(tj.arange(10 ** 6)), batch_size=100, num_workers=2)
        it = iter(loader)
        next(it)
        print(*[p.pid for p in multiprocessing.active_children()], flush=True)
        time.sleep(60)
""")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="looks processes up in /proc")
def test_workers_exit_when_the_main_process_is_killed(tmp_path):
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
    finally:
        proc.kill()
        proc.wait(timeout=WAIT)
    assert len(pids) == 2
    deadline = time.monotonic() + WAIT
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert alive == []  # each worker sees its parent gone and exits
