"""Faults of the compile cache (issue 9), each with the failure it used to cause:

- a flipped byte in cached machine code crashed the process (and every later one): machine code
  files now carry a SHA-256 that is checked before numba loads them;
- with NUMBA_CACHE_DIR set, machine code went there and the repair looked elsewhere;
- the float32 helpers (codegen/mathlib.py) kept an unprotected cache of their own;
- a read-only warm cache was ignored silently;
- a call failing on bad data was taken for a damaged cache and recompiled on every call;
- the cache had no size limit and no CLI.

Anything that could crash runs in a subprocess with its own TRACEJIT_CACHE_DIR."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import tracejit as tj
from tracejit import __main__ as cli
from tracejit.runtime import cache
from tracejit.runtime import compile as rcompile

ROOT = Path(__file__).resolve().parents[2]
X = np.arange(4, dtype=np.float32)
EXPR = "(x * 2 + 1).tanh()"
OTHER = "(x * 3 - 1).tanh()"  # another graph that needs the same float32 helpers


EXPECTED = {EXPR: np.tanh(X * 2 + 1), OTHER: np.tanh(X * 3 - 1)}


def expected(expr):
    return EXPECTED[expr]


# A child process: trace and run each expression given, print results, numba stats, warnings.
CHILD = r"""
import json, sys, warnings
warnings.simplefilter("always")
import numpy as np
import tracejit as tj
from tracejit.runtime import cache
{setup}
out = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for k, expr in enumerate(sys.argv[1:]):
        ns = {{}}
        exec(f"def f{{k}}(x):\n    return {{expr}}\n", ns)
        f = tj.trace(ns[f"f{{k}}"], backend="cpu")
        x = tj.tensor(np.arange(4, dtype=np.float32))
        f(x)
        y = f(x)
        r = f.specs()[0].runner
        st = r.module.entry.stats
        out.append({{"y": y.numpy().tolist(), "file": r.module.__file__,
                    "hits": sum(st.cache_hits.values()),
                    "misses": sum(st.cache_misses.values())}})
print(json.dumps({{"runs": out, "warnings": [str(w.message) for w in caught]}}))
"""


def child(directory: Path, *exprs, setup: str = "", env: dict | None = None) -> dict:
    e = {k: v for k, v in os.environ.items()
         if k not in ("TRACEJIT_DISABLE", "TRACEJIT_DEBUG", "TRACEJIT_BACKEND", "NUMBA_CACHE_DIR",
                      "TRACEJIT_CACHE_MAX_MB")}
    e["TRACEJIT_CACHE_DIR"] = str(directory)
    e.update(env or {})
    proc = subprocess.run([sys.executable, "-c", CHILD.format(setup=setup), *exprs], env=e,
                          cwd=ROOT, text=True, capture_output=True, timeout=180)
    assert proc.returncode == 0, f"child died (rc {proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_runs_correct(out: dict, exprs=(EXPR,)):
    for run, expr in zip(out["runs"], exprs, strict=True):
        np.testing.assert_allclose(run["y"], expected(expr), rtol=1e-5, atol=1e-6)


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in directory.rglob("*") if p.is_file()}


def machine_code(directory: Path, group: str = "tj_", suffix: str = ".nbc") -> list:
    files = sorted(p for p in (directory / "__pycache__").glob(f"{group}*{suffix}")
                   if not p.name.startswith(cache.HELPERS) or group.startswith(cache.HELPERS))
    assert files, f"no {group}*{suffix} in {directory}/__pycache__"
    return files


def flip(p: Path, at: float = 0.6) -> None:
    data = bytearray(p.read_bytes())
    data[int(len(data) * at)] ^= 0x40
    p.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """A cache made by a fresh process: the graph's entry and the helpers' machine code."""
    d = tmp_path_factory.mktemp("faults-golden")
    out = child(d, EXPR)
    assert_runs_correct(out)
    assert out["runs"][0]["misses"] == 1 and not out["warnings"], out
    assert machine_code(d, cache.HELPERS)  # the helpers are cached in tracejit's directory
    return d


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(d))
    for name in ("TRACEJIT_DISABLE", "TRACEJIT_BACKEND", "TRACEJIT_CACHE_MAX_MB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cache, "_dirs", {})
    monkeypatch.setattr(cache, "_warned", set())
    rcompile.forget()
    yield d
    rcompile.forget()


@pytest.fixture
def warm_cache(fresh_cache, golden):
    shutil.copytree(golden, fresh_cache)
    return fresh_cache


def run_here(expr=EXPR):
    """Trace and run in this process; (result, (hits, misses), module file)."""
    ns: dict = {}
    exec(f"def f(x):\n    return {expr}\n", ns)
    f = tj.trace(ns["f"], backend="cpu")
    t = tj.tensor(X)
    f(t)
    y = f(t).numpy()
    r = f.specs()[0].runner
    st = r.module.entry.stats
    return y, (sum(st.cache_hits.values()), sum(st.cache_misses.values())), Path(r.module.__file__)


# ----------------------------------------------------------------------------------------------
# 1. damaged machine code is never loaded


def test_flipped_byte_in_machine_code_is_dropped_not_run(warm_cache):
    damaged = machine_code(warm_cache)
    for p in damaged:
        flip(p)
    out = child(warm_cache, EXPR)  # used to die with SIGSEGV/SIGILL here, and in every later run
    assert_runs_correct(out)
    assert out["runs"][0]["misses"] == 1, out  # compiled afresh
    for p in damaged:
        assert any(str(p) in w and "SHA-256" in w and "deleted" in w for w in out["warnings"]), \
            (p, out["warnings"])
    for p in machine_code(warm_cache):  # the rewritten files carry a valid checksum again
        assert cache.read_verified(p) is not None
    y, stats, _ = run_here()  # and the next process loads them
    np.testing.assert_allclose(y, expected(EXPR), rtol=1e-5)
    assert stats == (1, 0)


def _flip_index(p):
    flip(p, 0.7)


def _flip_checksum(p):
    data = bytearray(p.read_bytes())
    data[len(cache.MAGIC) + 3] ^= 0x01
    p.write_bytes(bytes(data))


def _strip_checksum(p):
    # numba's own format, as plain numba (or an older tracejit) would have written it: a file
    # without a recorded hash is never trusted
    p.write_bytes(p.read_bytes()[len(cache.MAGIC) + 32:])


@pytest.mark.parametrize("suffix,damage,says", [
    (".nbi", _flip_index, "SHA-256"),
    (".nbc", _flip_checksum, "SHA-256"),
    (".nbc", _strip_checksum, "no tracejit checksum"),
], ids=["index-byte", "checksum-byte", "no-checksum"])
def test_unverified_machine_code_is_not_loaded(warm_cache, suffix, damage, says):
    # in process: none of these can crash (the index holds no machine code; the machine code
    # itself is intact), but none may be loaded either
    files = machine_code(warm_cache, suffix=suffix)
    for p in files:
        damage(p)
    with pytest.warns(RuntimeWarning, match=says) as record:
        y, stats, _ = run_here()
    np.testing.assert_allclose(y, expected(EXPR), rtol=1e-5)
    assert stats == (0, 1)
    messages = " ".join(str(w.message) for w in record)
    assert all(p.name in messages for p in files)


# ----------------------------------------------------------------------------------------------
# 2. NUMBA_CACHE_DIR and 3. the helpers' machine code


def test_numba_cache_dir_and_helpers_stay_under_verification(warm_cache, tmp_path):
    """With NUMBA_CACHE_DIR set, numba used to write there and the repair looked beside the
    module; the float32 helpers kept their own unverified cache beside the installed package.
    Both now live, verified, in tracejit's cache directory."""
    numba_dir = tmp_path / "numba-cache"
    numba_dir.mkdir()
    damaged = machine_code(warm_cache)
    for p in damaged:
        flip(p)
    helpers = machine_code(warm_cache, cache.HELPERS) + machine_code(warm_cache, cache.HELPERS,
                                                                     ".nbi")
    for p in helpers:
        p.write_bytes(b"\x80\x05garbage" * 50)
    package_cache = ROOT / "codegen" / "__pycache__"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in package_cache.glob("*.nb*"))

    # EXPR loads (repairing its damaged code), OTHER compiles and so calls the helpers
    out = child(warm_cache, EXPR, OTHER, env={"NUMBA_CACHE_DIR": str(numba_dir)})
    assert_runs_correct(out, (EXPR, OTHER))
    for p in damaged:
        assert any(str(p) in w and "SHA-256" in w for w in out["warnings"]), out["warnings"]
    assert any(cache.HELPERS in w and "no tracejit checksum" in w for w in out["warnings"])
    for p in machine_code(warm_cache, cache.HELPERS):
        assert cache.read_verified(p) is not None  # rewritten, verified
    assert machine_code(warm_cache, Path(out["runs"][1]["file"]).stem)  # the new graph's code
    assert not list(numba_dir.rglob("*"))  # numba wrote nothing there, made no directories
    assert sorted((p.name, p.stat().st_mtime_ns) for p in package_cache.glob("*.nb*")) == before


# ----------------------------------------------------------------------------------------------
# 4. a read-only warm cache is used


def test_read_only_warm_cache_is_used_and_new_code_goes_elsewhere(warm_cache):
    before = snapshot(warm_cache)
    modes = {p: p.stat().st_mode for p in [warm_cache, *warm_cache.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    # root ignores permissions: make the directory refuse writes for tracejit's check as well
    setup = f"""
_check = cache._check_writable
def _refuse(d, _check=_check):
    if str(d).startswith({str(warm_cache)!r}):
        raise PermissionError(13, "Permission denied", str(d))
    _check(d)
cache._check_writable = _refuse
"""
    try:
        out = child(warm_cache, EXPR, OTHER, setup=setup)
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert_runs_correct(out, (EXPR, OTHER))
    cached, new = out["runs"]
    assert Path(cached["file"]).parent == warm_cache
    assert cached["hits"] == 1 and cached["misses"] == 0  # loaded from the read-only cache
    assert Path(new["file"]).parent != warm_cache and new["misses"] == 1
    read_only = [w for w in out["warnings"] if "read-only" in w]
    assert len(read_only) == 1 and str(warm_cache) in read_only[0], out["warnings"]
    assert snapshot(warm_cache) == before  # not a byte changed


# ----------------------------------------------------------------------------------------------
# 5. an error raised by the compiled code is the user's, not the cache's


def test_error_from_running_code_propagates_and_leaves_cache_alone(fresh_cache):
    @tj.trace(backend="cpu")
    def g(x, i):
        return x.gather(0, i) * 2

    x = tj.tensor(np.arange(5, dtype=np.float32))
    good = tj.tensor(np.array([0, 4, 2]))
    for _ in range(2):  # the first call traces, the second compiles and runs the entry
        np.testing.assert_array_equal(g(x, good).numpy(), [0, 8, 4])
    spec = g.specs()[0]
    assert spec.runner.compiled
    before = snapshot(fresh_cache)
    bad = np.array([0, 1, 7])

    # a new runner of the same module (another specialization, or a later process): its very
    # first call fails on the data. This used to delete the machine code and compile again.
    runner = rcompile.compile_lowered(spec.lowered)
    for _ in range(3):
        t0 = time.perf_counter()
        with pytest.raises(IndexError, match="out of bounds"):
            runner(x.numpy(), bad)
        assert time.perf_counter() - t0 < 0.5  # no compile
    for _ in range(2):
        with pytest.raises(IndexError, match="out of bounds"):
            g(x, tj.tensor(bad))
    assert snapshot(fresh_cache) == before
    assert sum(runner.entry.stats.cache_misses.values()) == 1  # compiled once, at the start
    np.testing.assert_array_equal(runner(x.numpy(), good.numpy())[0], [0, 8, 4])


# ----------------------------------------------------------------------------------------------
# 6. size limit, eviction, CLI


def fake_entry(directory: Path, name: str, size: int, age_s: float) -> list:
    """An entry on disk (a module file and two machine-code files), last used ``age_s`` ago."""
    pyc = directory / "__pycache__"
    pyc.mkdir(parents=True, exist_ok=True)
    files = [directory / f"{name}.py", pyc / f"{name}.entry-29.py311.nbi",
             pyc / f"{name}.entry-29.py311.1.nbc"]
    files[0].write_text("# module\n")
    files[1].write_bytes(b"i" * 100)
    files[2].write_bytes(b"c" * size)
    t = time.time() - age_s
    for f in files:
        os.utime(f, (t, t))
    return files


def test_eviction_is_lru_and_spares_recent_entries_and_other_files(tmp_path, monkeypatch):
    d = tmp_path / "c"
    mb = 2**20
    old = {k: fake_entry(d, f"tj_{k:032x}", mb, age_s=10_000 - k * 1000) for k in range(5)}
    recent = fake_entry(d, "tj_" + "f" * 32, mb, age_s=5)  # within GRACE_S: maybe loading
    helpers = fake_entry(d, cache.helpers_group(), mb, age_s=100_000)
    (d / "notes.txt").write_text("not tracejit's")
    debris = d / "__pycache__" / ".tj_x.nbc.abc.tmp"
    debris.write_bytes(b"x" * 10)
    os.utime(debris, (1, 1))
    # "use" entry 0 now: it becomes the most recent of the old ones
    cache._mark_used(old[0][0])
    os.utime(old[0][0], (time.time() - 400, old[0][0].stat().st_mtime))

    evicted = cache.enforce_limit(d, limit=int(4.5 * mb))
    # 7 MiB and a bit over 4.5: evict down to 90% (4.05 MiB), oldest use first: 1, 2, 3
    assert evicted == [f"tj_{k:032x}" for k in (1, 2, 3)]
    for k in (1, 2, 3):
        assert not any(f.exists() for f in old[k])
    assert all(f.exists() for f in old[0] + old[4] + recent + helpers)
    assert (d / "notes.txt").exists() and not debris.exists()

    # over the limit with only recent entries: nothing is removed (it may be being loaded)
    assert cache.enforce_limit(d, limit=0) == [f"tj_{k:032x}" for k in (4, 0)]
    assert all(f.exists() for f in recent + helpers)
    assert cache.enforce_limit(d, limit=None) == []


@pytest.mark.parametrize("remove", ["index", "data", "module", "all-machine-code"])
def test_any_partial_eviction_state_loads(warm_cache, remove):
    """Eviction (or clear) in another process deletes files one by one: a loader that sees any
    subset of an entry's files compiles what is missing and never fails."""
    module = next(warm_cache.glob("tj_*.py"))
    targets = {
        "index": list((warm_cache / "__pycache__").glob(f"{module.stem}.entry*.nbi")),
        "data": list((warm_cache / "__pycache__").glob(f"{module.stem}.entry*.nbc")),
        "module": [module],
        "all-machine-code": list((warm_cache / "__pycache__").glob(f"{module.stem}.*")),
    }[remove]
    for p in targets:
        p.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing file is a plain cache miss: no warning
        y, (hits, misses), path = run_here()
    np.testing.assert_allclose(y, expected(EXPR), rtol=1e-5)
    assert path == module and module.exists()
    assert hits + misses == 1


def test_limit_is_applied_after_a_compile(warm_cache, monkeypatch):
    monkeypatch.setattr(cache, "GRACE_S", 0.0)
    old = fake_entry(warm_cache, "tj_" + "a" * 32, 3 * 2**20, age_s=10_000)
    monkeypatch.setenv("TRACEJIT_CACHE_MAX_MB", "1")
    y, stats, path = run_here(OTHER)  # compiles and saves: the cache is now over 1 MB
    np.testing.assert_allclose(y, expected(OTHER), rtol=1e-5)
    assert not any(f.exists() for f in old)
    assert path.exists()  # the entry just compiled is the most recently used: kept


def test_max_mb_setting(monkeypatch):
    monkeypatch.setattr(cache, "_warned", set())
    monkeypatch.delenv("TRACEJIT_CACHE_MAX_MB", raising=False)
    assert cache.max_bytes() == 1024 * 2**20
    monkeypatch.setenv("TRACEJIT_CACHE_MAX_MB", "2.5")
    assert cache.max_bytes() == int(2.5 * 2**20)
    monkeypatch.setenv("TRACEJIT_CACHE_MAX_MB", "unlimited")
    assert cache.max_bytes() is None
    monkeypatch.setenv("TRACEJIT_CACHE_MAX_MB", "lots")
    with pytest.warns(RuntimeWarning, match="TRACEJIT_CACHE_MAX_MB='lots'"):
        assert cache.max_bytes() == 1024 * 2**20


def test_cli_cache_info_and_clear(fresh_cache, capsys, monkeypatch):
    assert cli.main(["cache", "info"]) == 0
    assert f"location: {fresh_cache}" in capsys.readouterr().out
    fake_entry(fresh_cache, "tj_" + "b" * 32, 2**20, age_s=60)
    fake_entry(fresh_cache, cache.helpers_group(), 1000, age_s=60)
    (fresh_cache / "notes.txt").write_text("kept")
    monkeypatch.setenv("TRACEJIT_CACHE_MAX_MB", "512")
    assert cli.main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert "entries:  1 compiled graphs, 6 files" in out
    assert "size:     1.0 MB" in out and "limit 512.0 MB" in out
    assert cli.main(["cache", "clear"]) == 0
    assert "deleted 6 files (1.0 MB)" in capsys.readouterr().out
    assert [p.name for p in fresh_cache.iterdir()] == ["notes.txt"]


def test_cli_runs_as_module(golden):
    env = dict(os.environ, TRACEJIT_CACHE_DIR=str(golden))
    proc = subprocess.run([sys.executable, "-m", "tracejit", "cache", "info"], env=env, cwd=ROOT,
                          text=True, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert str(golden) in proc.stdout and "1 compiled graphs" in proc.stdout


# ----------------------------------------------------------------------------------------------
# 7. long runs and big tensors


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_thousands_of_calls_do_not_grow_memory(fresh_cache):
    import gc
    import tracemalloc

    @tj.trace(backend="cpu")
    def f(x, y):
        return (x * y + 1).relu()

    for n, calls, rss_budget in ((16_384, 3000, 16), (1_048_576, 200, 64)):
        x = tj.tensor(np.linspace(-1, 1, n, dtype=np.float32))
        for _ in range(50):  # compile, fill the workspace and the allocator's free lists
            f(x, x)
        rss0 = _rss()
        tracemalloc.start()
        try:
            traced = []
            for _ in range(2):  # two equal batches: the second must not grow what the first left
                for _ in range(calls):
                    y = f(x, x)
                del y
                gc.collect()
                traced.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
        grown = (_rss() - rss0) / 2**20
        # a leaked result would be calls * n * 4 bytes (190 MiB, 800 MiB); a leaked Python
        # object per call shows in tracemalloc as growth from one batch to the next (what the
        # caching allocator keeps in its free lists is bounded and stays the same)
        assert grown < rss_budget, f"RSS grew {grown:.1f} MiB over {2 * calls} calls of size {n}"
        assert traced[1] - traced[0] < 256 * 1024, \
            f"{traced[1] - traced[0]} more bytes allocated after {calls} more calls"
    assert f.stats.hits >= 3000


@pytest.mark.parametrize("millions", [16, pytest.param(64, marks=pytest.mark.slow)])
def test_big_tensor_through_a_compiled_function(fresh_cache, millions):
    # 64M float32 (256 MiB in, 256 MiB out) takes ~10 s on a loaded 2-core machine: slow
    n = millions * 2**20
    x = np.arange(n, dtype=np.float32)
    x *= np.float32(1e-6)

    @tj.trace(backend="cpu")
    def f(x):
        return x * 2 + 1

    t = tj.tensor(x)
    f(t)
    y = f(t).numpy()
    assert y.shape == (n,) and y.dtype == np.float32
    ref = x * np.float32(2)
    ref += np.float32(1)
    assert np.array_equal(y, ref)  # x * 2 is exact: a fused multiply-add rounds the same
    assert f.specs()[0].runner.compiled


# Three processes on one cache: the first compiles only a graph's threaded kernels (calling its
# entry as plain Python), the second the rest, the third loads everything.
THREADED = r"""
import sys
import numpy as np
import tracejit as tj
from tracejit.codegen import cpu
from tracejit.runtime import compile as rcompile
cpu.PARALLEL_MIN = 1 << 12  # threaded kernels at this size
if sys.argv[1] == "kernels-only":
    def first_call(self, arrays, bufs):
        entry = getattr(self.entry, "py_func", self.entry)
        return entry(*self.prefix, *arrays, *self.consts, *bufs)
    rcompile.Runner._first_call = first_call
f = tj.trace(lambda x, w: ((x @ w + 1).relu() @ w) > 0.5, backend="cpu", compile="sync")
rng = np.random.default_rng(0)
x, w = (tj.tensor(rng.standard_normal((256, 256)).astype(np.float32)) for _ in range(2))
f(x, w)
y = f(x, w).numpy()
want = ((np.maximum(x.numpy() @ w.numpy() + 1, 0) @ w.numpy()) > 0.5)
assert (y == want).all()
assert "numba.prange" in f.specs()[-1].runner.source
print("ok")
"""


def test_threaded_kernels_cached_by_another_process_never_crash_a_later_one(tmp_path):
    # numba links a callee's machine code into its caller's: an @njit entry compiled over
    # threaded kernels that came from the cache (two ranks or two compile workers on one
    # cache) crashed the next process that loaded it (numba issues 4807, 10128). Entries that
    # call threaded kernels are plain Python, so each kernel keeps its own cached code.
    e = {k: v for k, v in os.environ.items() if not k.startswith("TRACEJIT_")}
    e["TRACEJIT_CACHE_DIR"] = str(tmp_path)
    for step in ("kernels-only", "compile", "load"):
        proc = subprocess.run([sys.executable, "-c", THREADED, step], env=e, cwd=ROOT,
                              text=True, capture_output=True, timeout=180)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", \
            f"{step}: rc {proc.returncode}\n{proc.stderr[-3000:]}"
