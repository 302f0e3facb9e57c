"""The compile cache (runtime/cache.py, runtime/compile.py): generated modules and numba's machine
code on disk, reused by later processes; damaged or stale entries are rebuilt, never trusted.

Every test gets its own cache directory. Whether numba compiled or loaded machine code is read
from the entry dispatcher's ``stats`` (cache_hits / cache_misses), never from timings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime import cache
from tracejit.runtime import compile as rcompile

ROOT = Path(__file__).resolve().parents[2]
X = np.arange(4, dtype=np.float32)
EXPECTED = np.tanh(X * 2 + 1)

# A second process: trace the same tiny graph, print its result and the entry's numba stats.
SCRIPT = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import tracejit as tj
from tracejit.runtime import cache
{setup}
@tj.trace(backend="cpu")
def f(x):
    return (x * 2 + 1).tanh()
x = tj.tensor(np.arange(4, dtype=np.float32))
f(x)
y = f(x)
runner = f.specs()[0].runner
stats = runner.module.entry.stats
print(json.dumps({{"y": y.numpy().tolist(), "file": runner.module.__file__,
                  "hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values()),
                  "registries": "numba.np.arraymath" in sys.modules}}))
"""

# Both racers wait at a barrier so that they really trace and compile at the same moment.
BARRIER = """
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.005)
"""


def make_f():
    """A fresh traced function (its own specializations, so loading starts from scratch)."""
    @tj.trace(backend="cpu")
    def f(x):
        return (x * 2 + 1).tanh()
    return f


def run(f, x=X):
    """Call twice: the first call traces, the second runs the compiled entry. Returns
    (result, entry stats as (hits, misses), module file)."""
    t = tj.tensor(x)
    f(t)
    y = f(t).numpy()
    runner = f.specs()[0].runner
    st = runner.module.entry.stats
    return y, (sum(st.cache_hits.values()), sum(st.cache_misses.values())), \
        Path(runner.module.__file__)


def assert_correct(y, expected=EXPECTED):
    y = np.asarray(y, dtype=np.asarray(expected).dtype)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def subprocess_env(directory: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRACEJIT_DISABLE", "TRACEJIT_DEBUG", "TRACEJIT_BACKEND")}
    env["TRACEJIT_CACHE_DIR"] = str(directory)
    return env


def start_process(directory: Path, setup: str = "", args=()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT.format(setup=setup), *map(str, args)],
                            env=subprocess_env(directory), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_process(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"subprocess failed:\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def snapshot(directory: Path) -> dict:
    """Every file under ``directory`` with its size and mtime."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file()}


def machine_code(directory: Path, suffix: str) -> list:
    files = sorted(p for p in (directory / "__pycache__").glob(f"tj_*{suffix}")
                   if not p.name.startswith(cache.HELPERS))  # the graph's own code
    assert files, f"no {suffix} files in {directory}/__pycache__"
    return files


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache directory for this test, and no modules remembered in memory."""
    d = tmp_path / "cache"
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(d))
    for name in ("TRACEJIT_DISABLE", "TRACEJIT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cache, "_dirs", {})
    monkeypatch.setattr(cache, "_warned", set())
    rcompile.forget()
    yield d
    rcompile.forget()


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """A cache directory holding the tiny graph's module and machine code (compiled once)."""
    d = tmp_path_factory.mktemp("golden")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRACEJIT_CACHE_DIR", str(d))
        mp.delenv("TRACEJIT_BACKEND", raising=False)
        rcompile.forget()
        y, (hits, misses), path = run(make_f())
        rcompile.forget()
    assert_correct(y)
    assert (hits, misses) == (0, 1) and path.parent == d
    return d


@pytest.fixture
def warm_cache(fresh_cache, golden):
    """This test's cache directory, holding a copy of ``golden`` (mtimes kept)."""
    shutil.copytree(golden, fresh_cache)
    return fresh_cache


# ----------------------------------------------------------------------------------------------
# reuse: in memory and across processes


def test_warm_cache_loads_machine_code_in_process(warm_cache):
    y, stats, path = run(make_f())
    assert_correct(y)
    assert stats == (1, 0)
    assert path.parent == warm_cache


def test_memory_cache_is_keyed_by_graph_and_signature(warm_cache):
    f, g = make_f(), make_f()
    _, _, path_f = run(f)
    _, _, path_g = run(g)
    assert path_f == path_g
    assert (f.specs()[0].runner.module
            is g.specs()[0].runner.module)
    y64, stats, path64 = run(make_f(), X.astype(np.float64))  # another signature: another entry
    assert path64 != path_f and path64.parent == warm_cache
    assert stats == (0, 1)
    assert_correct(y64, EXPECTED.astype(np.float64))


def test_second_process_reuses_source_and_machine_code(warm_cache):
    before = snapshot(warm_cache)
    out = finish_process(start_process(warm_cache))
    assert_correct(out["y"])
    assert out["hits"] > 0 and out["misses"] == 0, out  # no numba compile in that process
    # loading needs numba's runtime, not its typing and lowering registries (0.2 s of imports)
    assert not out["registries"], out
    assert Path(out["file"]).parent == warm_cache
    assert snapshot(warm_cache) == before  # nothing was rewritten


# ----------------------------------------------------------------------------------------------
# damaged entries are rebuilt


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x80\x05garbage \xff\x00 (not python, not a pickle) " * 40)


def _other_python(p: Path) -> None:
    # valid Python of the same length that computes something else: loading the file as it is
    # (numba then recompiles it, its mtime changed) would give x * 3 + 1
    text = p.read_text()
    other = text.replace("np.float32(2.0)", "np.float32(3.0)")
    assert other != text and len(other) == len(text)
    p.write_text(other)


@pytest.mark.parametrize("suffix,damage", [
    (".py", _truncate), (".py", _garbage), (".py", _other_python), (".py", _empty),
    (".nbi", _truncate), (".nbi", _garbage), (".nbi", _empty),
    (".nbc", _truncate), (".nbc", _garbage),
], ids=lambda v: v if isinstance(v, str) else v.__name__.strip("_"))
def test_damaged_entry_is_rebuilt(warm_cache, suffix, damage):
    module = next(warm_cache.glob("tj_*.py"))
    original = module.read_text()
    files = [module] if suffix == ".py" else machine_code(warm_cache, suffix)
    for p in files:
        damage(p)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y, (hits, misses), path = run(make_f())
    if suffix != ".py":  # damaged machine code is named in a warning, and what was done
        messages = " ".join(str(w.message) for w in caught)
        assert all(f"{p}: " in messages for p in files), messages
        assert "deleted it; the function is compiled again" in messages
    assert_correct(y)
    assert path == module
    assert (hits, misses) == (0, 1)  # compiled afresh, the damaged machine code was not used
    assert module.read_text() == original

    rcompile.forget()  # the rebuilt entry is whole again: a fresh load hits numba's cache
    y, stats, _ = run(make_f())
    assert_correct(y)
    assert stats == (1, 0)


def test_interrupted_write_keeps_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "tj_x.py"
    target.write_text("old")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        cache.atomic_write(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tj_x.py"]


# ----------------------------------------------------------------------------------------------
# stale entries and concurrent processes


def test_stale_version_gets_its_own_entry(warm_cache):
    old = {p: p.read_bytes() for p in warm_cache.rglob("*") if p.is_file()}
    out = finish_process(start_process(
        warm_cache, setup='cache._version_tag = lambda: "tracejit 0.0.0 numba 0.0 (stale test)"'))
    assert_correct(out["y"])
    new_file = Path(out["file"])
    assert new_file.parent == warm_cache and new_file not in old
    assert out["hits"] == 0 and out["misses"] == 1, out  # the old machine code was not loaded
    assert len(list(warm_cache.glob("tj_*.py"))) == 2
    assert all(p.read_bytes() == data for p, data in old.items())  # the old entry is untouched


def test_two_processes_compile_the_same_graph_at_once(fresh_cache, tmp_path):
    go = tmp_path / "go"
    ready = [tmp_path / "ready0", tmp_path / "ready1"]
    procs = [start_process(fresh_cache, BARRIER, (r, go)) for r in ready]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break  # one died before the barrier: finish_process shows its error
        time.sleep(0.01)
    go.touch()
    outs = [finish_process(p) for p in procs]
    for out in outs:
        assert_correct(out["y"])
    assert outs[0]["file"] == outs[1]["file"]
    assert [p.name for p in fresh_cache.glob("*") if p.is_file()] == [Path(outs[0]["file"]).name]
    assert not list(fresh_cache.rglob("*.tmp*"))  # no half-written files left behind
    y, _, _ = run(make_f())  # and what they left loads (from machine code or compiled again)
    assert_correct(y)


# ----------------------------------------------------------------------------------------------
# clear_cache and an unusable cache directory


def test_clear_cache_empties_dir_and_later_calls_work(warm_cache):
    f = make_f()
    y, stats, _ = run(f)
    assert stats == (1, 0)
    (warm_cache / "notes.txt").write_text("not tracejit's")

    tj.clear_cache()
    assert [p.name for p in warm_cache.iterdir()] == ["notes.txt"]  # only tracejit's files go

    assert_correct(f(tj.tensor(X)).numpy())  # already compiled functions keep working
    y, stats, path = run(make_f())  # a new one compiles again, into the same directory
    assert_correct(y)
    assert stats == (0, 1) and path.parent == warm_cache and path.exists()


def test_clear_cache_on_missing_dir_is_a_no_op(fresh_cache):
    tj.clear_cache()
    assert not fresh_cache.exists()


def test_unwritable_cache_dir_warns_and_compiles_in_private_dir(tmp_path, monkeypatch,
                                                                fresh_cache):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    bad = blocker / "cache"  # a directory cannot be made under a file
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(bad))

    with pytest.warns(RuntimeWarning, match=r"cannot write to the compile cache .*a_file"
                                            r".*TRACEJIT_CACHE_DIR"):
        y, stats, path = run(make_f())
    assert_correct(y)
    assert stats == (0, 1)
    assert blocker.is_file() and blocker not in path.parents
    assert path.parent.name.startswith("tracejit-cache-")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not per graph
        y64, _, path64 = run(make_f(), X.astype(np.float64))
    assert_correct(y64, EXPECTED.astype(np.float64))
    assert path64.parent == path.parent

    tj.clear_cache()  # clears the private directory too
    assert not list(path.parent.glob("tj_*"))


# ----------------------------------------------------------------------------------------------
# the optimisation level kernels compile at


def test_kernels_compile_at_kernel_opt_and_the_users_level_is_kept(fresh_cache, monkeypatch):
    import numba
    from numba.core import codegen

    seen = []
    real = codegen.JITCPUCodegen._pass_builder

    def spy(self, **kwargs):
        seen.append(kwargs.get("opt", numba.config.OPT))
        return real(self, **kwargs)
    monkeypatch.setattr(codegen.JITCPUCodegen, "_pass_builder", spy)
    monkeypatch.delenv("NUMBA_OPT", raising=False)
    before = numba.config.OPT
    f = tj.trace(lambda x: (x * 3 - 1).sin(), backend="cpu", compile="sync")
    for _ in range(2):  # the first call traces (running eagerly), the second compiles
        np.testing.assert_allclose(f(tj.tensor(X)).numpy(), np.sin(X * 3 - 1), rtol=1e-6)
    assert rcompile.KERNEL_OPT in seen and 3 not in seen  # (0: numba's cheap first pass)
    assert numba.config.OPT == before  # restored for the user's own numba code
    monkeypatch.setenv("NUMBA_OPT", "3")  # the user's choice wins
    with rcompile.kernel_opt():
        assert numba.config.OPT == before
