"""Background compiles: worker processes that compile generated modules into the on-disk cache.

numba's compiler holds the GIL, so a compile in a thread of the user's process would stall it;
a worker process compiles instead, on another core. A job is a pickled ``Program``
(``codegen/program.py``: the source and what its entry is called with) and the arrays of the
call that asked for it; the worker imports the module from the cache directory as
``compile.load_module`` does, so its machine code goes through ``cache.VerifiedCache``
(checksummed, atomic files), and runs the entry once on those arrays (numba compiles a function
at its first call per signature, the Python entry's kernels included). It answers the
signatures it compiled; the user's process loads them from the cache (``runtime/tiered.py``),
checked as any cached machine code is.

Protocol: on the worker's stdin, frames of an 8-byte little-endian length and a pickle; the
answers on its original stdout (anything the compiled code prints goes to stderr). A worker
exits when its stdin closes (so it never outlives the process that started it, even one killed
with SIGKILL) and ignores SIGINT (Ctrl-C is for the user's process). A worker that dies during a
job is noticed (its answer never comes: end of file), reaped and replaced, and the job runs once
more on the new worker; a second death fails the job (the user's function stays on the fast
tier). ``shutdown`` (at exit) closes, then kills and reaps every worker: no zombies.

``TRACEJIT_COMPILE_WORKERS`` sets how many workers there are (default: 2, or 1 on one core).
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback

WORKER_ENV = "TRACEJIT_COMPILE_WORKER"  # set in a worker: its own compiles are synchronous


# the thread counts of the BLAS libraries numpy and scipy may be built with
_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_count() -> int:
    raw = os.environ.get("TRACEJIT_COMPILE_WORKERS", "").strip()
    if raw:
        try:
            return max(0, int(raw))
        except ValueError:
            pass
    return min(2, os.cpu_count() or 1)


def _send(f, data: bytes) -> None:
    f.write(struct.pack("<Q", len(data)))
    f.write(data)
    f.flush()


def _recv(f):
    head = f.read(8)
    if len(head) < 8:
        raise EOFError("the stream ended")
    (n,) = struct.unpack("<Q", head)
    data = f.read(n)
    if len(data) < n:
        raise EOFError("the stream ended mid-frame")
    return pickle.loads(data)


class Job:
    """One compile: a pickled payload (pickled when submitted, so later changes to the arrays
    do not matter), and ``on_done(reply)``, called in the pool's thread with ``("ok", info)``
    or ``("error", message)``."""

    def __init__(self, payload: bytes, on_done, label: str = ""):
        self.payload = payload
        self.on_done = on_done
        self.label = label
        self.done = threading.Event()
        self.reply = None

    def finish(self, reply) -> None:
        self.reply = reply
        try:
            self.on_done(reply)
        finally:
            self.done.set()


class _Slot:
    """One worker process and the thread that feeds it jobs, one at a time."""

    def __init__(self, pool: Pool, index: int):
        self.pool = pool
        self.index = index
        self.proc = None
        self.lock = threading.Lock()  # guards proc against shutdown
        self.thread = threading.Thread(target=self._loop, name=f"tracejit-compile-{index}",
                                       daemon=True)

    def start(self) -> None:
        self._ensure()
        self.thread.start()

    def _ensure(self):
        with self.lock:
            if self.pool.closed:
                raise EOFError("the compile pool is shut down")
            if self.proc is None or self.proc.poll() is not None:
                if self.proc is not None:  # it died while idle: noticed now
                    code = self.proc.wait()
                    self.pool.deaths += 1
                    self.pool.log(f"tracejit: compile worker pid {self.proc.pid} had died (exit "
                                  f"code {code}); starting another")
                # one BLAS thread: a worker's run only types the kernels, and BLAS threads
                # spinning beside the compile took the cores the user's process needs
                env = dict(os.environ, **{WORKER_ENV: "1"}, **{v: "1" for v in _BLAS_THREADS})
                self.proc = subprocess.Popen(
                    [sys.executable, "-c",
                     "from tracejit.runtime.compile_worker import main; main()"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
                self.pool.started += 1
            return self.proc

    def _loop(self) -> None:
        while True:
            job = self.pool.jobs.get()
            if job is None:
                return
            try:
                self._run(job)
            except BaseException as e:  # never leave a job without an answer
                if not job.done.is_set():
                    job.finish(("error", f"the compile pool failed: {type(e).__name__}: {e}"))

    def _run(self, job: Job) -> None:
        deaths = []
        for _attempt in range(2):
            try:
                proc = self._ensure()
            except EOFError:
                job.finish(("error", "the compile pool was shut down"))
                return
            try:
                _send(proc.stdin, job.payload)
                reply = _recv(proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError):
                if self.pool.closed:
                    job.finish(("error", "the compile pool was shut down"))
                    return
                with self.lock:
                    try:
                        proc.kill()
                    except OSError:
                        pass
                    code = proc.wait()  # reaped: no zombie
                    if self.proc is proc:
                        self.proc = None
                deaths.append(code)
                self.pool.deaths += 1
                self.pool.log(f"tracejit: compile worker pid {proc.pid} died (exit code {code}) "
                              f"while compiling {job.label}; starting another")
                continue
            job.finish(reply)
            return
        job.finish(("error", f"the compile worker died twice while compiling it (exit codes "
                             f"{deaths})"))


class Pool:
    """``n`` worker processes taking jobs from one queue."""

    def __init__(self, n: int, log=None):
        self.pid = os.getpid()
        self.jobs: queue.Queue = queue.Queue()
        self.closed = False
        self.started = 0  # worker processes started (replacements included)
        self.submitted = 0  # jobs
        self.deaths = 0
        self.log = log or (lambda text: None)
        self.slots = [_Slot(self, i) for i in range(n)]
        for s in self.slots:
            s.start()

    def submit(self, payload: bytes, on_done, label: str = "") -> Job:
        job = Job(payload, on_done, label)
        self.submitted += 1
        if self.closed:
            job.finish(("error", "the compile pool was shut down"))
        else:
            self.jobs.put(job)
        return job

    def pids(self) -> list:
        """The worker processes now running."""
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop every worker: close its input (it exits), kill it after ``timeout``, reap it."""
        if self.closed:
            return
        self.closed = True
        for _ in self.slots:
            self.jobs.put(None)
        if os.getpid() != self.pid:
            return  # a forked child: the workers are the parent's
        deadline = time.monotonic() + timeout
        for s in self.slots:
            with s.lock:
                proc = s.proc
            if proc is None:
                continue
            try:
                proc.stdin.close()
            except OSError:
                pass
        for s in self.slots:
            proc = s.proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for f in (proc.stdout,):
                try:
                    f.close()
                except OSError:
                    pass


_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool(log=None) -> Pool:
    """This process's pool, started on first use (again in a forked child)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.closed or _pool.pid != os.getpid():
            _pool = Pool(max(1, worker_count()), log)
            atexit.register(_pool.shutdown)
        return _pool


def running() -> Pool | None:
    """The pool, if this process has started one."""
    p = _pool
    return p if p is not None and not p.closed and p.pid == os.getpid() else None


def shutdown() -> None:
    """Stop this process's workers (``pool()`` starts new ones when needed again)."""
    p = running()
    if p is not None:
        p.shutdown()


# ----------------------------------------------------------------------------------------------
# the worker process


def _layout(a) -> str:
    if a.flags.c_contiguous:
        return "C"
    if a.flags.f_contiguous:
        return "F"
    return "A"


def describe_array(a):
    """What a worker needs to rebuild an array numba types the same way: (values, layout,
    writeable)."""
    return (a, _layout(a), bool(a.flags.writeable))


def _rebuild(values, layout: str, writeable: bool):
    """An array equal to ``values`` with the layout and writeable flag numba saw in the user's
    process (pickling makes every array contiguous and writeable)."""
    import numpy as np
    a = values
    if layout == "F" and not a.flags.f_contiguous:
        a = np.asfortranarray(a)
    elif layout == "A" and (a.flags.c_contiguous or a.flags.f_contiguous):
        # strided, as the original was: every other element along an axis longer than 1
        axes = [k for k, n in enumerate(a.shape) if n > 1]
        if axes:
            k = axes[-1]
            big = np.empty(a.shape[:k] + (a.shape[k] * 2,) + a.shape[k + 1:], a.dtype)
            a = big[(slice(None),) * k + (slice(None, None, 2),)]
            a[...] = values
    elif layout == "C" and not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    if not writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _compile_job(job: dict):
    from numba.core.dispatcher import Dispatcher

    from . import cache
    from . import compile as rcompile

    t0 = time.perf_counter()
    configured, read, write, read_only = job["dirs"]
    os.environ["TRACEJIT_CACHE_DIR"] = str(configured)
    with cache._lock:
        cache._dirs[configured] = cache.Dirs(configured, tuple(read), write, read_only)
    import importlib
    helpers = [importlib.import_module(name) for name in job["helpers"]]
    with cache._lock:
        if cache._helper_modules != helpers:
            cache._helper_modules[:] = helpers
            cache._helpers_bound = None
    lowered = job["program"]
    if cache.entry_name(lowered.source) != job["name"]:
        return ("error", "the worker's tracejit/numba versions name the module differently "
                         "from the user's process (was tracejit upgraded meanwhile?)")
    lowered.consts = [_rebuild(c, layout, w) for c, (layout, w) in zip(lowered.consts,
                                                                        job["consts"])]
    arrays = [_rebuild(*a) for a in job["arrays"]]
    if job.get("simulate_failure"):  # tests: a numba error, as a compile that fails
        return ("error", "CompileError: simulated compile failure (tests)")
    runner = rcompile.compile_lowered(lowered)
    module = runner.module
    dispatchers = {name: value for name, value in vars(module).items()
                   if isinstance(value, Dispatcher) and value.py_func.__module__ == module.__name__}
    assign = job.get("assign")
    note = ""
    complete = True
    try:
        if assign is not None:
            _only(runner, dispatchers, set(assign))
        runner(*arrays)
    except rcompile.CompileError as e:
        return ("error", str(e))
    except Exception as e:  # the run failed after compiling (the user's process reports it)
        complete = False
        note = f"the run after compiling raised {type(e).__name__}: {e}"
    finally:
        vars(module).update(dispatchers)  # the module as it was, for later jobs
    sigs = {name: list(d.signatures) for name, d in dispatchers.items() if d.signatures}
    return ("ok", {"signatures": sigs, "seconds": time.perf_counter() - t0,
                   "pid": os.getpid(), "note": note, "complete": complete})


def _only(runner, dispatchers: dict, assign: set) -> None:
    """Compile only the kernels in ``assign`` (another worker compiles the others, at the same
    time): the Python entry runs with the other kernels skipped, on zeroed buffers. What it
    computes is meaningless; the types every kernel is called with are the real ones, which is
    all a compile needs. A kernel that raises on those values (an index out of range) has been
    compiled by then."""
    import numba

    def skip(*args):
        return None

    def guarded(disp):
        def call(*args):
            try:
                return disp(*args)
            except (numba.core.errors.NumbaError, ImportError):
                raise  # a compile error
            except Exception:
                return None  # the values are not real: only the compile matters
        return call

    for name, disp in dispatchers.items():
        vars(runner.module)[name] = guarded(disp) if name in assign else skip
    for a in runner._workspace():
        if a is not None:
            a[...] = 0
    from . import memory
    runner_outs = runner.outs
    if runner_outs:  # zeroed results too (an allocator block may hold anything)
        orig_empty = memory.allocator.empty

        def zeros(shape, dtype):
            out = orig_empty(shape, dtype)
            out[...] = 0
            return out
        memory.allocator.empty = zeros


def _prewarm() -> None:
    """numba's first compile in a process sets up its compiler (target context, LLVM): do it
    before the first job arrives."""
    try:
        import numba
        import numpy as np

        @numba.njit(cache=False)
        def _warm(a):
            s = 0.0
            for i in range(a.shape[0]):
                s += a[i]
            return s

        _warm(np.zeros(2))
    except Exception:  # the first job sets it up instead
        pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what compiled code prints goes to stderr, never into the answers
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    _prewarm()
    while True:
        try:
            job = _recv(inp)
        except EOFError:
            return
        try:
            reply = _compile_job(job)
        except BaseException as e:
            reply = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}")
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            data = pickle.dumps(("error", f"the answer does not pickle: {e}"))
        try:
            _send(out, data)
        except OSError:
            return


if __name__ == "__main__":
    main()
