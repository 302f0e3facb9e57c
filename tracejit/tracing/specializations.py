"""Specializations: a traced function keeps one per argument key and guard set, and says why a
call needed a new one (``TRACEJIT_DEBUG=recompiles``).

The argument key (``arg_key``) covers what a cheap look at the call shows: the structure of the
arguments, each tensor's shape, dtype, device and ``requires_grad`` (and whether its ``.grad``
is None), the non-tensor values, which arguments are the same tensor, grad mode and the default
dtype. Variants of one key differ in what only a fetch shows: the captured tensors and the
Python state guarded while tracing (``Module.training``, optimizer settings).
"""

from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import dtypes as D
from ..autograd import grad_mode
from ..tensor import Tensor
from .compiled import CompiledGraph

CacheInfo = collections.namedtuple(
    "CacheInfo", ["hits", "misses", "specializations", "max_specializations", "eager_calls"])


@dataclass(eq=False)  # NOTE: compared by identity: the lists of variants are searched with `in`
class Specialization:
    """A CompiledGraph and the live parts that run it."""

    key: tuple
    compiled: CompiledGraph
    out_tree: object  # the results' structure as flatten gives it (unflatten calls its classes)
    captured: list  # Captured, one per captured graph input: how to fetch it on a call
    guards: list  # (fetch, value, description), see Tracer.guard
    runner: object = None  # compiled callable on arrays (set by a backend); None: interpreter
    lowered: object = None  # the backend's generated code
    compile_graph: object = None  # optimised Graph -> callable on arrays (the backend's)
    compiled_grad: object = None  # forward and backward graphs, built on the first call that
    # needs a grad_fn (see build_grad)
    checked: bool = False
    calls: int = 0
    eager_grad: tuple = ()  # autograd.Functions whose backward a compiled grad_fn would miss:
    # calls whose outputs need a grad_fn run eagerly (custom_function.py)
    custom_regions: tuple = ()  # custom_function.Region per autograd.Function on a gradient
    # path: the raw graph is replayed with them (build_grad, executor.execute)
    single_tensor_result: bool = field(init=False)  # read on every fast call: computed once

    def __post_init__(self):
        self.single_tensor_result = self.compiled.single_tensor_result

    # the graph facts most callers want, by their old names
    graph = property(lambda self: self.compiled.graph)
    raw_graph = property(lambda self: self.compiled.raw)
    optimized = property(lambda self: self.compiled.optimized)
    n_results = property(lambda self: self.compiled.n_results)
    mutated = property(lambda self: self.compiled.mutated)
    grad_writes = property(lambda self: self.compiled.grad_writes)
    passthrough = property(lambda self: self.compiled.passthrough)
    ran_backward = property(lambda self: self.compiled.ran_backward)
    name = property(lambda self: self.compiled.name)

    def build_grad(self, inputs: list):
        """The compiled forward and backward graphs for a call whose outputs need a grad_fn
        (the executor calls this; building them means tracing, which runtime/ may not do)."""
        from .backward import build

        if self.custom_regions:  # the raw graph: its Var ids are the regions'
            from .backward import NotCompilable
            try:
                return build(self.compiled.raw, inputs, self.compile_graph, self.compiled.name,
                             self.custom_regions)
            except NotCompilable as e:
                warnings.warn(
                    f"tracejit: {self.compiled.name}: the compiled backward cannot hold the "
                    f"backward of tracejit.autograd.Function {e}, which reads tensors that are "
                    f"neither arguments of apply nor saved from them; calls that need "
                    f"gradients replay the graph op by op instead (pass those tensors to apply "
                    f"and save them with ctx.save_for_backward to compile it)", RuntimeWarning,
                    stacklevel=2)
                return False  # the executor replays the graph (runtime/executor.execute)
        return build(self.compiled.optimized, inputs, self.compile_graph, self.compiled.name)

    def fetch_captured(self, fn, leaves):
        """Current captured tensors, or None if one (or a Python-state guard) no longer matches
        the trace."""
        for fetch, value, _ in self.guards:
            try:
                if fetch() != value:
                    return None
            except Exception:
                return None
        fresh = []
        for c in self.captured:
            if c.source is None:
                t = c.tensor
            else:
                try:
                    t = c.source.fetch(fn, leaves)
                except Exception:
                    return None
            if not isinstance(t, Tensor):
                return None
            d, var = t._data, c.var  # (attributes, not the properties: this runs every call)
            if d.shape != var.shape or d.dtype != var.dtype \
                    or t.requires_grad != c.requires_grad \
                    or type(d) is not type(c.tensor._data) or (
                        c.grad_none is not None and (t._grad is None) != c.grad_none):
                return None
            fresh.append(t)
        return fresh

    def captured_reason(self, fn, leaves) -> str:
        """Why the captured tensors no longer match (for recompile logs)."""
        for fetch, value, what in self.guards:
            try:
                now = fetch()
            except Exception as e:
                return f"{what} can no longer be read ({type(e).__name__}: {e})"
            if now != value:
                if _named_values(value) and _named_values(now):
                    old_d, new_d = dict(value), dict(now)
                    diff = [f"{k}: {old_d.get(k)!r} -> {new_d.get(k)!r}"
                            for k in dict.fromkeys(list(old_d) + list(new_d))
                            if old_d.get(k) != new_d.get(k)]
                    return f"{what} changed ({', '.join(diff)})"
                hint = ""
                if what.startswith(("closure ", "global ")) and type(value) in (int, float):
                    # a number baked into the graph (capture.guard_python_values)
                    hint = " (to change it without tracing again, make it tracejit.dynamic(...))"
                return f"{what} changed from {value!r} to {now!r}{hint}"
        for c in self.captured:
            name = c.source.name if c.source else c.var and f"captured tensor %{c.var.id}"
            try:
                t = c.tensor if c.source is None else c.source.fetch(fn, leaves)
            except Exception as e:
                return f"{name} can no longer be found ({type(e).__name__}: {e})"
            if not isinstance(t, Tensor):
                return f"{name} is no longer a tensor (got {type(t).__name__})"
            for what, old, new in (("shape", c.var.shape, t.shape),
                                   ("dtype", c.var.dtype.name, t.dtype.name),
                                   ("requires_grad", c.requires_grad, t.requires_grad),
                                   ("device", c.tensor.device, t.device),
                                   ("whether .grad is None", c.grad_none,
                                    t._grad is None if c.grad_none is not None else None)):
                if old != new:
                    return f"{name}: {what} changed from {old} to {new}"
        return "a captured tensor changed"


@dataclass
class _Stats:
    hits: int = 0
    misses: int = 0
    eager_calls: int = 0
    warned_limit: bool = False
    warned_custom: bool = False  # the autograd.Function eager-gradient warning (front.py)
    extra: dict = field(default_factory=dict)


class Specializations:
    """A traced function's specializations: argument key -> its variants, most recently used
    first, and the keys in least-recently-used order. Variants of one key differ in the state
    their guards read (Module.training, optimizer settings, captured tensors), so switching
    train()/eval() back and forth reuses both compiled graphs.

    NOTE: lock-free for readers: compiled calls of other threads look up while one thread adds
    (under the traced function's trace lock), so a key's list is replaced, never grown in place.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.by_key: collections.OrderedDict = collections.OrderedDict()
        self.stats = _Stats()

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_key.values())

    def all(self) -> list:
        """Every specialization, least recently used argument key first."""
        return [s for variants in self.by_key.values() for s in reversed(variants)]

    def cache_info(self) -> CacheInfo:
        return CacheInfo(self.stats.hits, self.stats.misses, len(self), self.limit,
                         self.stats.eager_calls)

    def find(self, key, fn, leaves):
        """(specialization, its current captured tensors) matching this call, or None."""
        variants = self.by_key.get(key)
        for spec in tuple(variants or ()):  # a snapshot: other threads may reorder the list
            fresh = spec.fetch_captured(fn, leaves)
            if fresh is None:
                continue
            if spec is not variants[0]:
                try:  # NOTE: lock-free LRU order; a racing thread's remove may win
                    variants.remove(spec)
                    variants.insert(0, spec)
                except ValueError:
                    pass
            try:
                self.by_key.move_to_end(key)
            except KeyError:
                pass
            return spec, fresh
        return None

    def add(self, key, spec: Specialization) -> None:
        variants = self.by_key.get(key, [])
        self.by_key[key] = [spec, *variants]  # copy on write (see find)
        self.by_key.move_to_end(key)

    def miss_reason(self, key, fn, leaves, names: list) -> str:
        """Why this call matches no specialization ("" for the first); ``names`` are the leaf
        names of the last traced signature."""
        variants = self.by_key.get(key)
        if variants:
            return variants[0].captured_reason(fn, leaves)
        return self._recompile_reason(key, names)

    def _recompile_reason(self, key, names: list) -> str:
        if not self.by_key:
            return ""
        old = next(reversed(self.by_key))
        tree, leaves, grad, dflt, alias = key
        otree, oleaves, ograd, odflt, oalias = old
        if tree != otree or len(leaves) != len(oleaves):
            return "the structure of the arguments changed"
        for i, (a, b) in enumerate(zip(oleaves, leaves)):
            if a != b:
                name = names[i] if i < len(names) else f"argument {i}"
                if a[0] == "tensor" and b[0] == "tensor":
                    for j, what in ((1, "shape"), (2, "dtype"), (3, "device"),
                                    (4, "requires_grad"), (5, "whether .grad is None")):
                        if a[j] != b[j]:
                            old_v, new_v = a[j], b[j]
                            if what == "dtype":
                                old_v, new_v = np.dtype(old_v).name, np.dtype(new_v).name
                            return f"{name}: {what} changed from {old_v} to {new_v}"
                if a[0] == "value" and b[0] == "value":
                    return f"{name}: value changed from {a[2]!r} to {b[2]!r}"
                return f"{name}: changed from {a[0]} {a[1]} to {b[0]} {b[1]}"
        if grad != ograd:
            return f"grad mode changed from {ograd} to {grad}"
        if dflt != odflt:
            return "the default dtype changed"
        if alias != oalias:
            return "which arguments are the same tensor changed"
        return "a new signature"


def arg_key(tree, leaves) -> tuple:
    """The argument key of a call (see the module docstring)."""
    ids = [id(x) for x in leaves if isinstance(x, Tensor)]
    aliasing = () if len(set(ids)) == len(ids) else tuple(ids.index(i) for i in ids)
    return (tree, tuple(_leaf_key(x) for x in leaves), grad_mode.enabled,
            D.get_default_dtype().str, aliasing)


def _leaf_key(x):
    if isinstance(x, Tensor):
        return ("tensor", x.shape, x.dtype.str, str(x.device), x.requires_grad,
                x.requires_grad and x.grad is None)
    try:
        hash(x)
    except TypeError:
        return ("object", type(x).__qualname__, id(x))
    return ("value", type(x).__qualname__, x)


def _named_values(x) -> bool:
    """``x`` is a tuple of ``(name, value)`` pairs (a module's attributes, for instance)."""
    return isinstance(x, tuple) and all(
        isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in x)
