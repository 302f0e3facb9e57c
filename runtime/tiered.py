"""Tiered execution: a new specialization never waits for numba.

A ``TieredRunner`` stands where a compiled ``Runner`` would (``spec.runner``). Its first call
sends the generated module to a compile worker (``compile_worker.py``: another process, so the
compile runs on another core and does not hold this process's GIL) and runs the graph on the
fast tier, the numpy reference interpreter (``interpret.py``, on the fused graph: each fused
group node by node), as does every call until the worker is done. Then a thread of this process
loads the machine code the worker left in the on-disk cache (checked like any cached code,
``cache.VerifiedCache``), and the next call runs the compiled entry. In-place updates and
gradients go through the same outputs in both tiers (compiled graphs never write their inputs;
``executor.write_back`` does), so a switch between two calls changes no result beyond float
rounding (the interpreter is the oracle the compiled code is tested against).

When the machine code is in the cache already (a warm start), the first call loads it and runs
compiled, as a synchronous compile would. A compile that fails in a worker, or a worker that
dies twice on one job, leaves the function on the fast tier: a ``RuntimeWarning`` on the next
call says so, once. ``TRACEJIT_DEBUG=compiles`` logs, to stderr, when each function starts on a
tier and switches, and how long compiles and loads took.

``trace(fn, compile="sync")``, ``TRACEJIT_SYNC_COMPILE=1`` or ``TRACEJIT_COMPILE_WORKERS=0``
make compiles blocking again (the first call compiles), as benchmarks and tests want;
``tracejit.wait_compiles()`` waits for the background compiles in flight.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import sys
import threading
import time
import warnings

import numpy as np

from . import cache, compile_worker
from .backward import interpret_runner
from .compile import Runner, kernel_opt, load_module, loaded_module

MODES = ("tiered", "sync")

_pending: set = set()  # TieredRunners whose compile is in flight
_inflight: dict = {}  # module name -> the TieredRunner whose job compiles it
_pending_lock = threading.Lock()


def debug_enabled() -> bool:
    flags = os.environ.get("TRACEJIT_DEBUG", "")
    return "compiles" in (f.strip() for f in flags.split(",")) or flags.strip() == "all"


def log(text: str) -> None:
    if debug_enabled():
        print(text, file=sys.stderr, flush=True)


def resolve_mode(mode: str | None) -> str:
    """The compile mode for ``trace(compile=mode)``: ``None`` reads the environment."""
    if mode is None:
        if os.environ.get("TRACEJIT_SYNC_COMPILE", "").strip().lower() in ("1", "true", "yes") \
                or os.environ.get(compile_worker.WORKER_ENV) \
                or compile_worker.worker_count() == 0:
            return "sync"
        return "tiered"
    if mode not in MODES:
        raise ValueError(f"trace: compile must be one of {', '.join(map(repr, MODES))}, "
                         f"got {mode!r}")
    return mode


def prestart() -> None:
    """Start the compile workers now, while this process traces, if the cache is empty (a cold
    start: every graph will compile). Otherwise they start with the first compile they get:
    in a warm start nothing compiles, and starting workers (each imports numba) would only take
    the cores the cache loads need."""
    if compile_worker.running() is not None:
        return
    try:
        write = cache.current().write
        empty = not any(write.glob(f"{cache.PREFIX}*.py"))
    except OSError:
        empty = True
    if empty:
        compile_worker.pool(log)


def wait_compiles(timeout: float | None = None) -> bool:
    """Wait until every background compile in flight is done and its machine code loaded, so
    the next calls run compiled (``timeout`` in seconds; None: no limit). True if none is left.

    >>> tracejit.wait_compiles()   # before timing a traced function
    True
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _pending_lock:
            pending = list(_pending)
        if not pending:
            return True
        for r in pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not r.done.wait(left):
                return False


def _layout_info(c):
    if isinstance(c, np.ndarray):
        return (compile_worker._layout(c), bool(c.flags.writeable))
    return ("C", True)


def _in_cache(lowered) -> bool:
    """Is the machine code of every function the first call needs on disk already (the entry,
    when it is compiled, else every kernel)?"""
    name = cache.entry_name(lowered.source)
    needed = {lowered.entry} if lowered.jit_entry else set(lowered.kernels)
    if not needed:
        return True
    module = loaded_module(name)
    if module is not None and all(getattr(getattr(module, f, None), "signatures", None)
                                  for f in needed):
        return True  # this process has run it already (the same step of a new model)
    read, _ = cache.machine_code_dirs()
    found = set()
    for d in read:
        for p in d.glob(f"{name}.*.nbi"):
            found.add(p.name.split(".", 2)[1].rsplit("-", 1)[0])
    return needed <= found


class TieredRunner:
    """The runner of one specialization in tiered mode (see the module docstring): a callable
    on arrays, returning one array (or Python value) per graph output."""

    def __init__(self, lowered, graph, name: str = "a traced function", lower=None):
        self.lowered = lowered  # the Program; None: ``lower()`` makes it when first needed
        self._lower = lower
        self.on_lowered = None  # called with the Program once made (the front end keeps it)
        self.graph = graph  # the fused graph: what the fast tier interprets
        self.name = name
        self.compiled = None  # the Runner, once its machine code is loaded
        self.state = "new"  # new -> compiling -> ready | failed
        self.failure = None
        self.interpreted_calls = 0
        self.done = threading.Event()
        self._interpret = interpret_runner(graph)
        self._lock = threading.Lock()
        self._warned = False
        self._followers: list = []  # runners of the same module waiting for this compile
        self.on_ready = None  # called with the compiled Runner (the front end swaps it in)
        self._t_start = None

    def __repr__(self):
        return f"<TieredRunner of {self.name}: {self.state}>"

    def program(self):
        """The generated code (lowered on first use: a specialization that never runs twice,
        such as a training step's first, is never lowered)."""
        if self.lowered is None:
            with self._lock:
                if self.lowered is None:
                    self.lowered = self._lower()
            if self.on_lowered is not None:
                self.on_lowered(self.lowered)
        return self.lowered

    @property
    def source(self) -> str:
        return self.program().source

    @property
    def tier(self) -> str:
        """Where the next call runs: "compiled" or "interpreter"."""
        return "compiled" if self.compiled is not None else "interpreter"

    def __call__(self, *arrays):
        runner = self.compiled
        if runner is None and self.state == "new":
            self._start(arrays)
            runner = self.compiled
        if runner is not None:
            return runner(*arrays)
        if self.state == "failed" and not self._warned:
            self._warned = True
            warnings.warn(f"tracejit: compiling {self.name} failed in a compile worker, so it "
                          f"keeps running on the reference interpreter (slower, same results): "
                          f"{self.failure}", RuntimeWarning, stacklevel=2)
        self.interpreted_calls += 1
        with _blas_share():
            return self._interpret(*arrays)

    # -- the compile
    def _start(self, arrays) -> None:
        with self._lock:
            if self.state != "new":
                return
            self.state = "compiling"
        self._t_start = time.perf_counter()
        lowered = self.program()
        if _in_cache(lowered):  # a warm start: load it now, as a synchronous compile would
            log(f"tracejit: {self.name}: machine code found in the cache, loading it")
            self._ready(Runner(lowered, load_module(lowered.source)))
            return
        module_name = cache.entry_name(lowered.source)
        with _pending_lock:
            leader = _inflight.get(module_name)
            if leader is not None:  # the same module is compiling already: share its result
                leader._followers.append(self)
                _pending.add(self)
        if leader is not None:
            log(f"tracejit: {self.name}: runs on the interpreter while the same code compiles "
                f"for {leader.name}")
            return
        pool = compile_worker.pool(log)
        parts = _split(lowered, len(pool.slots))
        try:
            if len(parts) < 2:
                payloads = [self._payload(arrays)]
            else:
                payloads = [self._payload(arrays, assign=part) for part in parts]
        except Exception as e:  # it cannot go to a worker: compile here, on first call
            log(f"tracejit: {self.name}: compiling in this process ({type(e).__name__}: {e})")
            self._ready(Runner(lowered, load_module(lowered.source)))
            return
        with _pending_lock:
            _pending.add(self)
            _inflight[module_name] = self
        _prepare_loads()
        if len(payloads) == 1:
            log(f"tracejit: {self.name}: runs on the interpreter while a worker compiles "
                f"{len(lowered.kernels)} kernel(s)")
            pool.submit(payloads[0], self._finished, label=self.name)
            return
        log(f"tracejit: {self.name}: runs on the interpreter while {len(parts)} workers compile "
            f"{' + '.join(str(len(p)) for p in parts)} kernels")
        gather = _Gather(self, len(parts), lambda: self._submit_whole(arrays))
        for payload in payloads:
            pool.submit(payload, gather.add, label=self.name)

    def _submit_whole(self, arrays) -> None:
        """A split compile missed a kernel (the skipped ones' values upset a numpy step): one
        worker runs the whole entry; what the others compiled loads from the cache there."""
        log(f"tracejit: {self.name}: a kernel was left out of the split compile; one worker "
            f"compiles the rest")
        compile_worker.pool(log).submit(self._payload(arrays), self._finished, label=self.name)

    def _payload(self, arrays, assign=None) -> bytes:
        lowered = self.lowered
        dirs = cache.current()
        job = {
            "program": lowered,
            "name": cache.entry_name(lowered.source),
            "dirs": (dirs.configured, dirs.read, dirs.write, dirs.read_only),
            "helpers": [m.__name__ for m in cache._helper_modules],
            "consts": [_layout_info(c) for c in lowered.consts],
            "arrays": [compile_worker.describe_array(np.asarray(a)) for a in arrays],
            "simulate_failure": _simulate_failure.pop() if _simulate_failure else False,
            "assign": assign,  # the kernels this worker compiles (None: all)
        }
        return pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)

    def _finished(self, reply) -> None:
        """The worker answered (in the pool's thread): load the machine code, or give up."""
        try:
            kind, info = reply
            if kind != "ok":
                self._failed(str(info))
                return  # (its followers fail too: finally)
            t0 = time.perf_counter()
            module = load_module(self.lowered.source)
            misses = self._load(module, info["signatures"])
            how = "loaded" if not misses else f"loaded ({misses} signature(s) compiled here)"
            log(f"tracejit: {self.name}: compiled by worker pid {info['pid']} in "
                f"{info['seconds']:.2f} s, {how} in {time.perf_counter() - t0:.2f} s"
                + (f"; {info['note']}" if info.get("note") else ""))
            self._ready(Runner(self.lowered, module))
            for f in self._take_followers():
                f._ready(Runner(f.lowered, module))
        except Exception as e:
            message = f"loading its machine code failed: {type(e).__name__}: {e}"
            self._failed(message)
        finally:
            for f in self._take_followers():  # the compile failed: so does theirs
                f._failed(self.failure or "the compile they waited for failed")
            cache.enforce_limit_if_needed()

    def _take_followers(self) -> list:
        with _pending_lock:
            if _inflight.get(cache.entry_name(self.lowered.source)) is self:
                del _inflight[cache.entry_name(self.lowered.source)]
            followers, self._followers = self._followers, []
        return followers

    def _load(self, module, signatures: dict) -> int:
        """Load every function the first call needs, with the signatures the worker compiled,
        from the cache (numba looks there first); the number that were not found there."""
        misses = 0
        wanted = {self.lowered.entry} if self.lowered.jit_entry else None
        for name, sigs in signatures.items():
            if wanted is not None and name not in wanted:
                continue  # the compiled entry carries its kernels' code
            disp = getattr(module, name)
            for sig in sigs:
                before = sum(disp._cache_misses.values())
                with kernel_opt():  # a miss compiles here
                    disp.compile(sig)
                misses += sum(disp._cache_misses.values()) - before
        return misses

    def _ready(self, runner) -> None:
        self.compiled = runner
        self.state = "ready"
        if self._t_start is not None and self.interpreted_calls:
            log(f"tracejit: {self.name}: switched to compiled code after "
                f"{self.interpreted_calls} interpreted call(s), "
                f"{time.perf_counter() - self._t_start:.2f} s after its first call")
        if self.on_ready is not None:
            self.on_ready(runner)
        self._done()

    def _failed(self, message: str) -> None:
        self.failure = message
        self.state = "failed"
        log(f"tracejit: {self.name}: the background compile failed, it stays on the "
            f"interpreter: {message}")
        self._done()

    def _done(self) -> None:
        self.done.set()
        with _pending_lock:
            _pending.discard(self)


_simulate_failure: list = []  # tests: the next job's worker reports a compile failure
_loads_prepared = threading.Event()


def _prepare_loads() -> None:
    """While the workers compile, set up what loading their machine code needs in this process
    (numba's target context and its runtime: 0.03-0.04 s on the first load of a process,
    otherwise between the compile's end and the switch). Once per process, in a daemon
    thread; numba's compiler lock keeps it apart from the load itself."""
    if _loads_prepared.is_set():
        return
    _loads_prepared.set()

    def prepare():
        try:
            from numba.core.compiler_lock import global_compiler_lock
            from numba.core.registry import cpu_target
            with global_compiler_lock:
                cache.prepare_loads(cpu_target.target_context)
        except Exception:  # noqa: BLE001 - the first load does it instead
            pass
    threading.Thread(target=prepare, name="tracejit-prepare-loads", daemon=True).start()


_blas = {}  # "controller": threadpoolctl's, made on first use (None: not installed), and
# "modules": len(sys.modules) then (an import since, scipy's, may have loaded another BLAS)


def _blas_share():
    """While workers compile, the interpreter's BLAS calls (its matmuls) leave them their cores:
    a context limiting BLAS to the cores the workers do not hold (threadpoolctl, when
    installed). OpenBLAS threads spinning beside two compiling workers on two cores made the
    LSTM example's interpreted steps 1.2 s against 0.15 s, and the compile itself slower.
    Entered around each interpreted call, on the caller's thread (threadpoolctl changes a
    process-wide setting: it is meant to be called where the BLAS calls are made)."""
    pool = compile_worker.running()
    if pool is None or not _pending:
        return contextlib.nullcontext()
    if "controller" not in _blas or _blas["controller"] is not None and \
            _blas["modules"] != len(sys.modules):
        try:
            from threadpoolctl import ThreadpoolController
            _blas["controller"] = ThreadpoolController()
        except Exception:  # not installed (the ``blas`` extra), or it cannot read the libraries
            _blas["controller"] = None
            log("tracejit: threadpoolctl is not installed (pip install 'tracejit[blas]'): "
                "BLAS threads are not limited while workers compile")
        _blas["modules"] = len(sys.modules)
    controller = _blas["controller"]
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=max(1, (os.cpu_count() or 1) - len(pool.slots)),
                            user_api="blas")


# numba's compile time of a generated kernel, estimated from its source in units of ~10 ms
# (fitted on the MLP step's kernels: ~30 ms each, ~25 ms a loop, ~10 ms an array access)
KERNEL_COST, LOOP_COST, INDEX_COST = 3, 2.5, 1
PARALLEL_COST = 3  # a parallel kernel costs numba about this many times a serial one's compile
MATHLIB_COST = 28  # a float32 approximation a kernel calls (exp_f32: ~0.28 s), once per worker
_KERNEL = re.compile(r"^@numba\.njit\(parallel=(True|False)[^\n]*\ndef (\w+)\(.*?(?=^\S|\Z)",
                     re.M | re.S)
_CALL = re.compile(r"\b(\w+)\(")


def _mathlib_names() -> frozenset:
    """The prelude names generated code calls whose float32 overload is an approximation
    (``exp`` for ``exp_f32``), from the helper modules code generators registered."""
    from . import cache
    return frozenset(n[:-4] for m in cache._helper_modules for n in dir(m) if n.endswith("_f32"))


def _costs(src: str) -> dict:
    """Each kernel's estimated compile cost and the float32 approximations of
    ``codegen.mathlib`` it calls (numba compiles each once per process)."""
    fast = _mathlib_names()
    out = {}
    for m in _KERNEL.finditer(src):
        text = m.group(0)
        cost = KERNEL_COST + LOOP_COST * text.count(" for ") + INDEX_COST * text.count("[")
        calls = {c for c in _CALL.findall(text) if c in fast} if "f32" in text else set()
        out[m.group(2)] = (cost * (PARALLEL_COST if m.group(1) == "True" else 1), frozenset(calls))
    return out


def _split(lowered, workers: int) -> list:
    """The kernels of a Python entry in ``workers`` groups of about equal compile cost (each
    compiled by another worker at the same time); one group when the entry is compiled itself
    (numba compiles it and its kernels in one process). Kernels calling the same float32
    approximation go together where that keeps the groups even: each worker compiles the
    approximations its kernels call."""
    if lowered.jit_entry or workers < 2 or len(lowered.kernels) < 2:
        return [list(lowered.kernels)]
    costs = _costs(lowered.source)

    def alone(name):
        cost, calls = costs.get(name, (KERNEL_COST, frozenset()))
        return cost + MATHLIB_COST * len(calls)

    groups = [[] for _ in range(min(workers, len(lowered.kernels)))]
    load = [0] * len(groups)
    have = [set() for _ in groups]
    for name in sorted(lowered.kernels, key=lambda n: -alone(n)):
        cost, calls = costs.get(name, (KERNEL_COST, frozenset()))
        after = [load[g] + cost + MATHLIB_COST * len(calls - have[g]) for g in range(len(groups))]
        g = after.index(min(after))
        groups[g].append(name)
        load[g] = after[g]
        have[g] |= calls
    return [g for g in groups if g]


class _Gather:
    """The answers of a split compile: when all are in, one answer for the runner (or the whole
    compile again, on one worker, should a kernel have been left out)."""

    def __init__(self, runner: TieredRunner, n: int, redo):
        self.runner = runner
        self.left = n
        self.replies = []
        self.redo = redo
        self.lock = threading.Lock()

    def add(self, reply) -> None:
        with self.lock:
            self.replies.append(reply)
            self.left -= 1
            if self.left:
                return
        try:
            self._combine()
        except Exception as e:  # never leave the runner waiting
            self.runner._finished(("error", f"combining the split compile's answers failed: "
                                            f"{type(e).__name__}: {e}"))

    def _combine(self) -> None:
        errors = [info for kind, info in self.replies if kind != "ok"]
        if errors:
            self.runner._finished(("error", errors[0]))
            return
        infos = [info for _, info in self.replies]
        sigs: dict = {}
        for info in infos:
            sigs.update(info["signatures"])
        if not all(info.get("complete", True) for info in infos) or \
                not set(self.runner.lowered.kernels) <= set(sigs):
            self.redo()
            return
        self.runner._finished(("ok", {
            "signatures": sigs, "seconds": max(i["seconds"] for i in infos),
            "pid": "/".join(str(i["pid"]) for i in infos),
            "note": "; ".join(i["note"] for i in infos if i.get("note"))}))


__all__ = ["MODES", "TieredRunner", "prestart", "resolve_mode", "wait_compiles"]
