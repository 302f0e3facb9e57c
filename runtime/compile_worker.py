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

Starting a worker costs about a second of CPU (importing numba, then numba's first compile sets
up its compiler); on Linux the pool pays it once: it starts a *zygote* process that imports and
warms numba up, and every worker (replacements included) is a fork of it, connected to the
user's process by a socket pair whose end the zygote receives over its control socket
(``socket.send_fds``). The zygote never compiles a job, so its forks start from a clean,
warmed-up numba; it auto-reaps them (SIGCHLD ignored) and exits when its control socket
closes. Should the zygote die, workers start as processes of their own again. Elsewhere every
worker is a ``python -c`` process of its own.

``TRACEJIT_COMPILE_WORKERS`` sets how many workers there are (default: 2, or 1 on one core).
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

WORKER_ENV = "TRACEJIT_COMPILE_WORKER"  # set in a worker: its own compiles are synchronous


# the thread counts of the BLAS libraries numpy and scipy may be built with
_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# A worker needs the runtime, codegen and numba, not tracejit's front end (nn, tensors, ~0.25 s
# of imports on the zygote's critical path): the package is registered without running its
# __init__, so ``tracejit.x`` imports only ``x`` and what it imports
_BOOT = ("import importlib.util as u, sys; "
         "sys.modules['tracejit'] = u.module_from_spec(u.find_spec('tracejit'))")
_MAIN = _BOOT + "; from tracejit.runtime.compile_worker import main; main()"
# workers are forks of one warmed-up zygote (Linux: fork after numba's setup, fds over sockets);
# TRACEJIT_COMPILE_FORK=0 starts each worker as a process of its own
FORK = sys.platform.startswith("linux") and hasattr(socket, "send_fds") and \
    os.environ.get("TRACEJIT_COMPILE_FORK", "").strip() != "0"


PREIMPORT_ENV = "TRACEJIT_WORKER_PREIMPORT"


def _worker_env() -> dict:
    # one BLAS thread: a worker's run only types the kernels, and BLAS threads spinning beside
    # the compile took the cores the user's process needs. The helper modules code generators
    # registered (codegen's prelude and float32 math, ~0.25 s to import) are imported by the
    # zygote before it forks, not by every worker's first job
    from . import cache
    helpers = ",".join(m.__name__ for m in cache._helper_modules)
    return dict(os.environ, **{WORKER_ENV: "1", PREIMPORT_ENV: helpers},
                **{v: "1" for v in _BLAS_THREADS})


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
        self.thread.start()  # the thread starts the worker (it may wait for the zygote)

    def _ensure(self):
        """The slot's worker, started (or replaced) if it is not running. Only the slot's own
        thread calls this."""
        with self.lock:
            if self.pool.closed:
                raise EOFError("the compile pool is shut down")
            proc = self.proc
            if proc is not None and proc.poll() is None:
                return proc
            if proc is not None:  # it died while idle: noticed now
                code = proc.wait()
                self.pool.deaths += 1
                self.pool.log(f"tracejit: compile worker pid {proc.pid} had died "
                              f"({_exit(code)}); starting another")
            self.proc = None
        proc = self.pool.spawn()  # outside the lock: a fork waits for the zygote's warm-up
        with self.lock:
            if self.pool.closed:
                _stop(proc, 0.0)
                raise EOFError("the compile pool is shut down")
            self.proc = proc
            self.pool.started += 1
        return proc

    def _loop(self) -> None:
        try:
            self._ensure()  # ready before the first job arrives
        except Exception as e:  # noqa: BLE001 - the first job tries again and reports it
            if not self.pool.closed:  # (a process that ends before its workers are up: quiet)
                self.pool.log(f"tracejit: starting compile worker {self.index} failed: {e}")
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
                self.pool.log(f"tracejit: compile worker pid {proc.pid} died ({_exit(code)}) "
                              f"while compiling {job.label}; starting another")
                continue
            job.finish(reply)
            return
        job.finish(("error", f"the compile worker died twice while compiling it "
                             f"({', '.join(map(_exit, deaths))})"))


def _exit(code) -> str:
    return "exit code unknown: a fork of the zygote" if code is None else f"exit code {code}"


def _alive(pid: int) -> bool:
    """Whether a process that is not our child (a fork of the zygote) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - its pid was reused by another user's process
        return False
    try:  # a zombie whose parent is gone and whose new parent does not reap it
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class _Forked:
    """A worker forked by the zygote, seen through what ``_Slot`` uses of a ``Popen``: its
    frames travel over one end of a socket pair (``stdin``/``stdout`` are files on it)."""

    def __init__(self, pid: int, sock: socket.socket):
        self.pid = pid
        self.sock = sock
        self.stdin = sock.makefile("wb")
        self.stdout = sock.makefile("rb")
        self.returncode = None  # -1 once gone (the zygote reaps it and keeps its code)

    def poll(self):
        if self.returncode is None and not _alive(self.pid):
            self.returncode = -1
            self.close()
        return self.returncode

    def wait(self, timeout: float | None = None):
        """None once it is gone: its exit code is the zygote's to read (``_exit``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"compile worker pid {self.pid}", timeout)
            time.sleep(0.005)
        return None

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close_input(self) -> None:
        """End of its input: the worker exits after the job it runs."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        for f in (self.stdin, self.stdout, self.sock):
            try:
                f.close()
            except OSError:
                pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("the zygote closed its control socket")
        data += chunk
    return data


class _Zygote:
    """The process every worker is forked from (see the module's docstring)."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _MAIN, "--zygote", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, env=_worker_env(), pass_fds=(theirs.fileno(),),
                close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.ctl = ours
        self.lock = threading.Lock()

    def fork(self) -> _Forked:
        """A new worker (blocks until the zygote has warmed up)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self.lock:
                socket.send_fds(self.ctl, [b"f"], [theirs.fileno()])
                (pid,) = struct.unpack("<Q", _recv_exact(self.ctl, 8))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return _Forked(pid, ours)

    def close(self, timeout: float = 2.0) -> None:
        try:
            self.ctl.close()  # it exits
        except OSError:
            pass
        _stop(self.proc, timeout)


def _close_input(proc) -> None:
    """End a worker's input (a fork's socket, a process's pipe): it exits after its job."""
    if isinstance(proc, _Forked):
        proc.close_input()
    elif proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass


def _stop(proc, timeout: float) -> None:
    """End a worker (or the zygote): close its input, wait ``timeout``, then kill and reap it."""
    _close_input(proc)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if isinstance(proc, _Forked):
        proc.close()
    elif proc.stdout is not None:
        try:
            proc.stdout.close()
        except OSError:
            pass


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
        self.zygote = None
        if FORK:
            try:
                self.zygote = _Zygote()
            except OSError as e:
                self.log(f"tracejit: no compile zygote ({e}); workers start on their own")
        self.slots = [_Slot(self, i) for i in range(n)]
        for s in self.slots:
            s.start()

    def spawn(self):
        """A new worker: a fork of the zygote, or (without one) a process of its own."""
        z = self.zygote
        if z is not None:
            try:
                return z.fork()
            except (OSError, EOFError) as e:
                if self.closed:
                    raise EOFError("the compile pool is shut down") from e
                self.log(f"tracejit: the compile zygote pid {z.proc.pid} is gone ({e}); "
                         f"workers start on their own")
                self.zygote = None
                z.close(0.0)
        return subprocess.Popen([sys.executable, "-c", _MAIN], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=_worker_env(), close_fds=True)

    def submit(self, payload: bytes, on_done, label: str = "") -> Job:
        job = Job(payload, on_done, label)
        self.submitted += 1
        if self.closed:
            job.finish(("error", "the compile pool was shut down"))
        else:
            self.jobs.put(job)
        return job

    def pids(self) -> list:
        """The pool's processes now running: its workers and the zygote they fork from."""
        procs = [s.proc for s in self.slots if s.proc is not None]
        if self.zygote is not None:
            procs.append(self.zygote.proc)
        return [p.pid for p in procs if p.poll() is None]

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop every worker: close its input (it exits), kill it after ``timeout``, reap it;
        then the zygote."""
        if self.closed:
            return
        self.closed = True
        for _ in self.slots:
            self.jobs.put(None)
        if os.getpid() != self.pid:
            return  # a forked child: the workers are the parent's
        deadline = time.monotonic() + timeout
        procs = []
        for s in self.slots:
            with s.lock:
                if s.proc is not None:
                    procs.append(s.proc)
        for proc in procs:  # every input closed first: they exit at the same time
            _close_input(proc)
        for proc in procs:
            _stop(proc, max(0.0, deadline - time.monotonic()))
        if self.zygote is not None:  # last: it reaps the forks it made until they are gone
            self.zygote.close(max(0.0, deadline - time.monotonic()))


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
    before the first job arrives, and import the helper modules jobs' kernels call."""
    import importlib
    for name in filter(None, os.environ.get(PREIMPORT_ENV, "").split(",")):
        try:
            importlib.import_module(name)
        except Exception:  # the job imports it (and reports what fails) instead
            pass
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


def _serve(inp, out) -> None:
    """Answer jobs from ``inp`` on ``out`` until ``inp`` ends."""
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


def _zygote(fd: int) -> None:
    """Fork a worker for each socket end that arrives on the control socket ``fd``; answer its
    pid. Ends when the control socket closes."""
    ctl = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the forks: no zombies
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctl, 1, 1)
        except OSError:
            return
        if not msg:
            return
        if not fds:
            continue
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                ctl.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                sock = socket.socket(fileno=fds[0])
                _serve(sock.makefile("rb"), sock.makefile("wb"))
            except BaseException:
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        for f in fds:
            os.close(f)  # only the worker holds its end: it sees the user's process go
        try:
            ctl.sendall(struct.pack("<Q", pid))
        except OSError:
            return


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what compiled code prints goes to stderr, never into the answers
    sys.stdout = sys.stderr
    _prewarm()
    if len(sys.argv) > 2 and sys.argv[1] == "--zygote":
        out.close()
        _zygote(int(sys.argv[2]))
        return
    _serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
