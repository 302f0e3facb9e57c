"""``@tracejit.trace``: record a function's ops into a Graph on its first call per input
signature, then run the graph on later calls.

>>> @tracejit.trace
... def f(x, w):
...     return (x @ w).relu()
>>> f(tracejit.ones(2, 3), tracejit.ones(3, 4)).shape      # traces, runs eagerly
(2, 4)
>>> f(tracejit.ones(2, 3), tracejit.ones(3, 4)).shape      # runs the graph
(2, 4)

While tracing, every op runs eagerly (so the first call returns real values) and is also
appended to the graph. Tensors the function reaches that are not arguments — parameters in
closures, globals, ``self`` or other objects — become extra graph inputs read afresh on each
call, never constants. Python that depends on tensor values (``if t > 0``, ``t.item()``,
``print(t)``) or on state the graph cannot see (``random``, numpy's global generator, clocks,
files) cannot be captured and raises ``TraceError`` (docs/tracing.md, "What tracing refuses").
Tracing is per thread: the tracer slot is a ``contextvars.ContextVar`` (see ``dispatch``).
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import types
import warnings

import numpy as np

from .. import autograd, dispatch
from .. import dtypes as D
from ..autograd import grad_mode
from ..dispatch import current_tracer
from ..errors import TraceError
from ..ir import Graph, Var
from ..runtime.executor import execute, recover, write_back
from ..tensor import Tensor
from .capture import discover_sources, guard_python_values
from .compiled import from_trace
from .debug import _debug_print, debug_enabled
from .mode import _eager_now, eager
from .pytree import _detached, flatten, leaf_names, unflatten
from .specializations import CacheInfo, Specialization, Specializations, arg_key
from .tracer import Tracer
from .watch import _call_watched

_MISS = object()  # the fast path declined: take the full one


def backends() -> tuple:
    """What ``trace(backend=...)`` accepts: the reference interpreter, and every code generation
    target (``codegen.TARGETS``)."""
    from .. import codegen
    return ("interpret", *codegen.TARGETS)


class TracedFunction:
    """The callable ``trace`` returns. See the module docstring."""
    def __init__(self, fn, *, max_specializations: int = 8, check_trace: bool = False,
                 passes=None, name: str | None = None, backend: str | None = None,
                 fastmath: bool = False, precise_math: bool = False, compile: str | None = None):
        from ..runtime.tiered import resolve_mode
        resolve_mode(compile)  # checks the value; None is read from the environment per compile
        self.compile_mode = compile
        self.fn = fn
        self.max_specializations = max_specializations
        self.check_trace = check_trace
        self.passes = passes
        backend = backend or os.environ.get("TRACEJIT_BACKEND", "cpu")
        # the default two are known without importing codegen (and numba: 0.2 s, which would
        # delay the compile workers' start on a cold first call)
        if backend not in ("cpu", "interpret") and backend not in backends():
            raise ValueError(f"trace: backend must be one of {', '.join(map(repr, backends()))}"
                             f", got {backend!r}")
        self.backend = backend
        self.fastmath = fastmath
        self.precise_math = precise_math
        self.name = name or getattr(fn, "__qualname__", type(fn).__name__)
        self.specializations = Specializations(max_specializations)
        self.stats = self.specializations.stats
        self.module = None  # the object, when tracing a module-like callable
        self._fast: dict = {}  # simple call key -> its specializations (see _fast_call)
        self._last_names: list = []
        # NOTE: held while one thread traces and compiles a new specialization; lookups and
        # compiled calls never take it (another thread meanwhile runs the function eagerly)
        self._trace_lock = threading.RLock()
        functools.update_wrapper(self, fn, updated=())

    # -- binding as a method
    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        bound = functools.partial(self.__call__, obj)
        bound.graph = functools.partial(self.graph, obj)
        bound.cache_info = self.cache_info
        return bound

    def __getattr__(self, name):  # a traced module still exposes its attributes
        module = self.__dict__.get("module")
        if module is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(module, name)

    def __repr__(self):
        return f"<tracejit.trace of {self.name}>"

    # -- public API
    def cache_info(self) -> CacheInfo:
        return self.specializations.cache_info()

    def specs(self) -> list:
        """Every specialization, least recently used argument key first."""
        return self.specializations.all()

    def graph(self, *args, optimized: bool = True, **kwargs) -> Graph:
        """The graph this function runs for these arguments (traces if needed)."""
        spec, _ = self._lookup(args, kwargs, run=False)
        if spec is None:
            raise TraceError(f"{self.name}: no graph: the specialization limit "
                             f"({self.max_specializations}) is reached and this call runs eagerly")
        return spec.compiled.graph if optimized else spec.compiled.raw

    def _simple_key(self, args):
        """A cheap key for the common call shape: flat tensors and plain Python values."""
        key = []
        tensors = 0
        for a in args:
            t = type(a)
            if t is Tensor:
                d = a._data
                key.append((d.shape, d.dtype, a.requires_grad, type(d)))  # type: the device
                tensors += 1
            elif t in (int, float, bool, str) or a is None:
                key.append((t, a))
            else:
                return None
        if tensors > 1 and len({id(a) for a in args if type(a) is Tensor}) != tensors:
            return None  # aliased arguments: the full path handles them
        return (tuple(key), grad_mode.enabled, D.get_default_dtype())

    @staticmethod
    def _needs_grad_fn(spec, args) -> bool:
        """Outputs need a grad_fn (inputs require grad, and the function computes no gradients
        itself): such calls take the full path (see tracing/backward.py)."""
        if not grad_mode.enabled or spec.compiled.ran_backward:
            return False
        return any(type(a) is Tensor and a.requires_grad for a in args) or any(
            c.requires_grad for c in spec.captured)

    def _fast_call(self, spec, args):
        """Run a specialization for flat arguments: the per-call path kept short on purpose."""
        if spec.captured or spec.guards:
            fresh = spec.fetch_captured(self.fn, args)
            if fresh is None:
                return _MISS
            arrays = [a._data for a in args if type(a) is Tensor] + [t._data for t in fresh]
        else:
            fresh = []
            arrays = [a._data for a in args if type(a) is Tensor]
        runner = spec.runner
        if runner is None or (self.check_trace and not spec.checked):
            return _MISS
        try:
            outs = runner(*arrays)
        except Exception as e:  # never run it twice: raise the failing node's error from here
            outs = recover(spec, [a for a in args if type(a) is Tensor] + fresh, e)
            if outs is None:
                return _MISS  # it failed to compile: the full path runs the interpreter
        self.stats.hits += 1
        spec.calls += 1
        cg = spec.compiled
        if cg.mutated or cg.grad_writes:
            write_back(cg, [a for a in args if type(a) is Tensor] + fresh, outs)
        if spec.single_tensor_result:
            return Tensor._make(outs[0])
        results = [Tensor._make(o) if isinstance(x, Var) else x
                   for o, x in zip(outs[:cg.n_results], cg.graph.outputs)]
        if cg.passthrough:
            inputs = [a for a in args if type(a) is Tensor] + fresh
            for pos, inp in cg.passthrough:
                results[pos] = inputs[inp]
        return unflatten(spec.out_tree, results)

    def __call__(self, *args, **kwargs):
        tracer = current_tracer()
        if not kwargs and tracer is None and self._fast:
            key = self._simple_key(args)
            specs = self._fast.get(key) if key is not None else None
            if specs and not _eager_now():
                for spec in specs:
                    out = self._fast_call(spec, args)
                    if out is not _MISS:
                        return out
        if tracer is not None or _eager_now():
            # eager mode, or called from inside another traced function: inline the Python
            if tracer is None:
                self.stats.eager_calls += 1
            return self.fn(*args, **kwargs)
        spec, result = self._lookup(args, kwargs, run=True)
        if spec is None:  # over the specialization limit, or another thread is tracing
            self.stats.eager_calls += 1
            stored = autograd.grads_stored()
            result = self.fn(*args, **kwargs)
            if autograd.grads_stored() != stored:
                result = _detached(result)  # as its traced calls give (see _trace)
            return result
        if not kwargs and spec.runner is not None and not self._needs_grad_fn(spec, args):
            key = self._simple_key(args)
            specs = self._fast.get(key, ()) if key is not None else None
            if specs is not None and spec not in specs:
                # copy on write: another thread may be iterating the old list
                self._fast[key] = [spec, *specs]
        return result

    # -- internals
    def _flat(self, args, kwargs):
        leaves: list = []
        tree = flatten((args, kwargs), leaves)
        return tree, leaves

    def _arg_names(self, tree):
        """Readable names for flat leaves: parameter names from the signature, plus paths."""
        try:
            params = [p.name for p in inspect.signature(self.fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            params = []
        return leaf_names(tree, params)

    def _lookup(self, args, kwargs, run: bool):
        tree, leaves = self._flat(args, kwargs)
        key = arg_key(tree, leaves)
        found = self.specializations.find(key, self.fn, leaves)
        if found is None:
            # graph()/source() wait for a trace in progress; calls run eagerly meanwhile (never
            # blocking: the tracing thread may itself wait on this one, e.g. at a barrier)
            if not self._trace_lock.acquire(blocking=not run):
                return None, None
            try:
                found = self.specializations.find(key, self.fn, leaves)  # traced meanwhile
                if found is None:
                    return self._trace_new(key, tree, leaves, args, kwargs)
            finally:
                self._trace_lock.release()
        spec, fresh = found
        self.stats.hits += 1
        if not run:
            return spec, None
        return spec, self._run(spec, leaves, fresh, args, kwargs)

    def _trace_new(self, key, tree, leaves, args, kwargs):
        """Trace a new specialization for this call (under ``_trace_lock``)."""
        reason = self.specializations.miss_reason(key, self.fn, leaves, self._last_names)
        self.stats.misses += 1
        if len(self.specializations) >= self.max_specializations:
            if not self.stats.warned_limit:
                self.stats.warned_limit = True
                warnings.warn(
                    f"tracejit: {self.name} reached its limit of {self.max_specializations} "
                    f"specializations ({reason}); new signatures now run eagerly. Raise the limit "
                    f"with tracejit.trace(fn, max_specializations=N).", RuntimeWarning,
                    stacklevel=3)
            return None, None
        if reason and debug_enabled("recompiles"):
            _debug_print(f"tracejit: recompiling {self.name}: {reason}")
        spec, result = self._trace(key, tree, leaves, args, kwargs)
        self.specializations.add(key, spec)
        return spec, result

    def _trace(self, key, tree, leaves, args, kwargs):
        from ..passes import run_pipeline

        names = self._arg_names(tree)
        self._last_names = names
        entry_grads: dict = {}
        sources = discover_sources(self.fn, leaves, names, entry_grads=entry_grads)
        tracer = Tracer(self.fn, sources, entry_grads)
        guard_python_values(self.fn, tracer)
        arg_positions = []
        for i, (name, x) in enumerate(zip(names, leaves)):
            if isinstance(x, Tensor):
                tracer.add_argument(name, x)
                arg_positions.append(i)
        if self.backend == "cpu" and not any(isinstance(x, Tensor) and x.is_cuda for x in leaves):
            self._prestart_workers()
        token = dispatch._TRACER.set(tracer)
        try:
            result = _call_watched(self.fn, args, kwargs)
            out_leaves: list = []
            out_tree = flatten(result, out_leaves)
            raw, mutated, grad_writes = tracer.finish(out_leaves)
        finally:
            dispatch._TRACER.reset(token)
        if not (tracer.grad_read or tracer.ran_backward or grad_writes):
            # the graph is the same whether or not gradients exist: a model traced for eager
            # training is not traced again once backward() has filled its .grad
            for c in tracer.captured:
                c.grad_none = None
        for c in tracer.captured:
            if id(c.tensor) in tracer.grads_reset_unseen:
                c.grad_none = None  # zero_grad() dropped its gradient unseen (Tracer.grad_reset)
        if debug_enabled("graph"):
            _debug_print(f"tracejit: traced {self.name}\n{raw.format(locs=True)}")
        optimized = run_pipeline(raw, self.passes, debug=debug_enabled("passes"))
        # the graph runs where its tensors live: CUDA when any input does (0-d CPU tensors
        # join CUDA ops, as in torch)
        device = "cuda:0" if tracer.on_cuda else "cpu"
        graph, lowered, runner = optimized, None, None
        if self.backend != "interpret":
            graph, lowered, runner = self._compile(optimized, device, mutated)
        compiled = from_trace(self.name, tracer, raw, optimized, graph, arg_positions, out_tree,
                              len(out_leaves), mutated, grad_writes, device)
        spec = Specialization(key, compiled, out_tree, tracer.captured, tracer.guards,
                              runner=runner, lowered=lowered,
                              compile_graph=functools.partial(self._graph_runner, device=device))
        if getattr(runner, "on_ready", False) is None:  # tiered: calls go straight to the
            runner.on_ready = functools.partial(_swap_runner, spec, runner)  # compiled code
            runner.on_lowered = functools.partial(setattr, spec, "lowered")
        if tracer.custom_functions and not tracer.ran_backward:
            regions = tracer.custom_regions
            if all(r.valid and r.closed(raw) for r in regions):
                spec.custom_regions = tuple(regions)  # replays call them: a compiled grad_fn
            else:
                spec.eager_grad = tuple(dict.fromkeys(tracer.custom_functions))
        if tracer.ran_backward:
            # later calls return plain values (the gradients were computed inside, the graph
            # keeps no tape): so does this call, or the kinds of results would change
            result = _detached(result)
        return spec, result

    def _prestart_workers(self) -> None:
        """A cold cache: the compile workers start up (about a second: numba's import and first
        compile) while this traces, so they are ready when its kernels are."""
        from ..runtime import tiered
        if tiered.resolve_mode(self.compile_mode) == "tiered":
            tiered.prestart()

    def _compile(self, graph, device: str = "cpu", updates=()):
        """(fused graph, generated code, runner) for an optimised graph: fused and lowered
        through numba for the device its inputs live on (machine code is made on the first
        run): the CPU backend, or ``numba.cuda`` kernels for CUDA inputs. In tiered mode (the
        default, ``runtime/tiered.py``) a CPU runner interprets the graph until a compile worker
        has made the machine code; CUDA targets compile synchronously. ``updates``: the graph's
        in-place updates of its inputs (``codegen.lower``)."""
        from ..passes import COMPILE_PIPELINE, run_pipeline

        target = "cuda" if device.startswith("cuda") else self.backend
        tiered = None
        if target == "cpu":  # CUDA targets compile synchronously
            from ..runtime import tiered
            if tiered.resolve_mode(self.compile_mode) != "tiered":
                tiered = None
        graph = run_pipeline(graph, COMPILE_PIPELINE, debug=debug_enabled("passes"))
        if tiered is not None and not debug_enabled("src"):
            # lowered when first run (the first call returns sooner; a specialization that
            # never runs twice is never lowered; nor is codegen, with numba, imported before)
            later = functools.partial(_lower, graph, target=target, updates=updates,
                                      fastmath=self.fastmath, precise_math=self.precise_math)
            return graph, None, tiered.TieredRunner(None, graph, self.name, lower=later)
        lowered = _lower(graph, target=target, updates=updates, fastmath=self.fastmath,
                         precise_math=self.precise_math)
        if debug_enabled("src"):
            _debug_print(f"tracejit: source for {self.name}\n{lowered.source}")
        if target == "cuda":
            from ..runtime.cuda_runner import compile_cuda
            return graph, lowered, compile_cuda(lowered)
        if tiered is not None:  # the interpreter until a worker has compiled it
            return graph, lowered, tiered.TieredRunner(lowered, graph, self.name)
        from ..runtime.compile import compile_lowered
        return graph, lowered, compile_lowered(lowered)

    def _graph_runner(self, graph, device: str = "cpu"):
        """A callable running an optimised graph on arrays, on this function's backend."""
        if self.backend != "interpret":
            return self._compile(graph, device)[2]
        from ..runtime.backward import interpret_runner
        return interpret_runner(graph)

    def source(self, *args, **kwargs) -> str:
        """The generated numba source this function runs for these arguments."""
        spec, _ = self._lookup(args, kwargs, run=False)
        if spec is not None and spec.lowered is None and hasattr(spec.runner, "program"):
            spec.runner.program()  # tiered: lowered when first run, or now
        if spec is None or getattr(spec, "lowered", None) is None:
            raise TraceError(f"{self.name}: no generated source for these arguments (backend "
                             f"{self.backend!r}, or over the specialization limit)")
        return spec.lowered.source

    def _run(self, spec, leaves, captured, args, kwargs):
        cg = spec.compiled
        inputs = [leaves[i] for i in cg.arg_positions] + list(captured)
        if spec.eager_grad and grad_mode.enabled and any(t.requires_grad for t in inputs):
            return self._eager_for_grad(spec, args, kwargs)
        outs = execute(spec, inputs)
        if self.check_trace and not spec.checked:
            spec.checked = True
            self._check(spec, inputs, outs, args, kwargs)  # eager ran: mutations applied
        else:
            write_back(cg, inputs, [o._data if isinstance(o, Tensor) else o for o in outs])
        spec.calls += 1
        results = outs[:cg.n_results]
        if cg.passthrough:
            results = list(results)
            for pos, inp in cg.passthrough:
                results[pos] = inputs[inp]
        return unflatten(spec.out_tree, results)

    def _eager_for_grad(self, spec, args, kwargs):
        """The outputs need a grad_fn, and the graph holds autograd.Functions it cannot replay
        (custom_function.Region.valid): a compiled grad_fn would differentiate their recorded
        forward ops instead of calling their backward, so the call runs eagerly."""
        if not self.stats.warned_custom:
            self.stats.warned_custom = True
            warnings.warn(
                f"tracejit: {self.name} runs eagerly when its outputs need gradients, because "
                f"it applies tracejit.autograd.Function {', '.join(spec.eager_grad)}, whose "
                f"forward reads tensors other than its arguments or returns an argument (a "
                f"compiled backward cannot stand in for it). Pass those tensors as arguments of "
                f"apply, or trace the whole training step (backward() inside the traced "
                f"function) to compile it.", RuntimeWarning,
                stacklevel=4)
        self.stats.eager_calls += 1
        return self.fn(*args, **kwargs)

    def _check(self, spec, inputs, outs, args, kwargs):
        """check_trace: run the function eagerly too and compare everything it produced."""
        with eager():
            expected = self.fn(*args, **kwargs)
        exp_leaves: list = []
        flatten(expected, exp_leaves)
        pairs = [(f"output {i}", o, e) for i, (o, e) in enumerate(zip(outs, exp_leaves))]
        cg = spec.compiled
        for inp, pos in cg.mutated:
            pairs.append((f"in-place update of input {cg.graph.input_names[inp]}", outs[pos],
                          inputs[inp]))
        for what, got, want in pairs:
            g = got._data if isinstance(got, Tensor) else np.asarray(got)
            w = want._data if isinstance(want, Tensor) else np.asarray(want)
            tol = 1e-4 if g.dtype == np.float32 else 1e-9
            if g.shape != w.shape or not np.allclose(g, w, rtol=tol, atol=tol, equal_nan=True):
                raise TraceError(
                    f"check_trace: {self.name}'s graph disagrees with eager execution on {what}: "
                    f"graph {g!r} vs eager {w!r}. The function probably depends on something "
                    f"tracing cannot see (Python state, randomness outside tracejit).")


def _lower(graph, **options):
    from ..codegen import lower
    return lower(graph, **options)


def _swap_runner(spec, old, new) -> None:
    """A tiered runner's compiled code is ready: the specialization calls it directly."""
    if spec.runner is old:
        spec.runner = new


def trace(fn=None, *, max_specializations: int = 8, check_trace: bool = False, passes=None,
          backend: str | None = None, fastmath: bool = False, precise_math: bool = False,
          compile: str | None = None):
    """Trace ``fn`` (a function, or an object with ``__call__`` such as a module) into graphs
    compiled through numba (``backend="cpu"``, the default) or run by the reference interpreter
    (``backend="interpret"``; the ``TRACEJIT_BACKEND`` environment variable sets the default).

    Usable as ``@trace``, ``@trace(check_trace=True)`` or ``trace(model)``. ``fastmath=True``
    lets numba drop NaN/Inf semantics; ``precise_math=True`` uses libm instead of the fast
    float32 approximations.

    ``compile="tiered"`` (the default): a new specialization runs on the reference interpreter
    while numba compiles it in a background worker process, and later calls switch to the
    compiled code when it is ready; ``compile="sync"`` (or ``TRACEJIT_SYNC_COMPILE=1``) makes
    the first call wait for the compile (docs/compiler.md, "Tiered execution").
    """
    options = dict(max_specializations=max_specializations, check_trace=check_trace,
                   passes=passes, backend=backend, fastmath=fastmath, precise_math=precise_math,
                   compile=compile)
    if fn is None:
        return lambda f: trace(f, **options)
    if isinstance(fn, TracedFunction):
        return fn
    if isinstance(fn, Tensor):  # torch.trace(x): the sum of the diagonal
        raise TypeError("tracejit.trace traces a function into a graph; for torch.trace(x), "
                        "the sum of a matrix's diagonal, use x.trace()")
    target = fn
    if not isinstance(fn, (types.FunctionType, types.MethodType, functools.partial)) and \
            callable(fn):
        target = fn.__call__  # a module-like object: trace its bound __call__
    traced = TracedFunction(target, name=type(fn).__name__ if target is not fn else None,
                            **options)
    if target is not fn:
        traced.module = fn
    return traced
