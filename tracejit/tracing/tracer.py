"""The tracer: installed in the tracer slot (``dispatch.tracing``) while a function is traced, it
records every op into a ``GraphBuilder`` (running it eagerly too, so the tracing call returns
real values), lifts tensors from outside the function to graph inputs (``Captured``), keeps
in-place updates as new values and collects the guards library code asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import dispatch
from ..autograd import grad_mode
from ..errors import TraceError, user_frame, user_location
from ..ir import Const, GraphBuilder, Var
from ..tensor import Tensor, _host_data
from .capture import NumberSource, Source


@dataclass
class Captured:
    """A tensor the traced function reached that is not an argument: a graph input."""
    var: Var
    source: Source | NumberSource | None  # how to fetch it again; None: the very same
    # object is reused
    tensor: object  # the object seen while tracing
    requires_grad: bool = False  # guarded, with whether .grad was None, at every call
    grad_none: bool | None = True  # None: the function never reads .grad, so no guard


class Tracer:
    def __init__(self, fn, sources: dict, entry_grads: dict | None = None):
        self.fn = fn
        self.entry_grads = entry_grads or {}  # id(tensor) -> .grad before the function ran
        self.builder = GraphBuilder()
        self.vars: dict = {}  # id(tensor) -> (Var, version seen)
        self.keep: list = []  # tensors seen while tracing (keeps their ids unique)
        self.sources = sources
        self.captured: list = []
        self.originals: dict = {}  # var id of a graph input -> the tensor it came from
        self.const_ids: set = set()
        self.array_vars: dict = {}  # id(array) -> Var of the traced tensor that holds it
        self.initial_grads: dict = {}  # var id of a graph input -> its .grad when traced
        self.ran_backward = False  # backward() ran inside: gradients are part of the graph
        self.guards: list = []  # (fetch, value, description): Python state the graph relies on
        self.guard_keys: set = set()
        self.grad_read = False  # some tensor's .grad was read: the graph depends on it
        self.numbers: dict = {}  # key -> the 0-d tensor of a dynamic number (dynamic_number)
        self.on_cuda = False  # a graph input lives on the GPU: the graph runs there
        self.grads_reset_unseen: set = set()  # ids of tensors whose .grad was set to None
        # before anything read a gradient (see grad_reset)
        self.custom_functions: list = []  # names of autograd.Functions applied on a gradient
        # path (custom_function.py): a grad_fn from eager code would miss their backward
        self.custom_regions: list = []  # custom_function.Region of each of them

    # -- values
    def bind(self, t, var: Var) -> None:
        self.vars[id(t)] = (var, t._version[0])
        self.keep.append(t)

    def alias(self, new, old) -> None:
        """``new`` holds the same value as ``old`` (an internal copy, e.g. an in-place snapshot)."""
        self.vars[id(new)] = (self.var_of(old), new._version[0])
        self.keep.append(new)

    def bind_array(self, t) -> None:
        """Bind ``t`` to the value of the traced tensor whose array it wraps (autograd saves
        arrays, not tensors)."""
        entry = self.array_vars.get(id(t._data))
        if entry is not None:
            self.vars[id(t)] = (entry, t._version[0])
            self.keep.append(t)

    def guard(self, fetch, what: str, key=None) -> None:
        """Library code read a Python value (a learning rate, a module's ``training`` flag):
        the graph is valid only while ``fetch()`` keeps returning what it returns now. Guards
        with the same ``key`` (a module called at every step of a loop) are checked once."""
        if key is not None:
            if key in self.guard_keys:
                return
            self.guard_keys.add(key)
        self.guards.append((fetch, fetch(), what))

    def dynamic_number(self, read, name: str, key=None):
        """Library code reads a Python number that changes between calls (a scheduled learning
        rate): instead of a guard, it becomes a 0-d float64 graph input that ``read()`` fills
        on every call. Returns that tensor; the same ``key`` gives the same tensor."""
        if key is not None and key in self.numbers:
            return self.numbers[key]
        source = NumberSource(name, read)
        t = source.fetch(self.fn, ())
        v = self.add_argument(name, t)
        self.captured.append(Captured(v, source, t, False, True))
        if key is not None:
            self.numbers[key] = t
        return t

    def grad_reset(self, t) -> None:
        """``t.grad = None`` (``zero_grad()``) before any gradient was read or replaced: the
        graph does not depend on whether ``t`` came in with a gradient, so that is not guarded
        (a training step starting with ``zero_grad()`` is not traced again on its second call,
        when the parameters arrive with the first call's gradients)."""
        if not self.grad_read and self.entry_grads.get(id(t), t._grad) is t._grad:
            self.grads_reset_unseen.add(id(t))

    def note_backward(self) -> None:
        self.ran_backward = True

    def add_argument(self, name: str, t) -> Var:
        v = self.builder.add_input(name, t.shape, t.dtype)
        self.on_cuda = self.on_cuda or t.is_cuda
        self.bind(t, v)
        self.originals[v.id] = t
        # a parameter first used after zero_grad() had its .grad reset inside the function
        self.initial_grads[v.id] = self.entry_grads.get(id(t), t._grad)
        return v

    def var_of(self, t) -> Var:
        entry = self.vars.get(id(t))
        if entry is None:  # a tensor from outside the function: lift it to a graph input
            src = self.sources.get(id(t))
            name = src.name if src else f"captured{len(self.captured)}"
            v = self.add_argument(name, t)
            self.captured.append(Captured(v, src, t, t.requires_grad,
                                          self.initial_grads[v.id] is None))
            return v
        var, seen = entry
        if t._version[0] != seen:
            raise TraceError(
                f"a tensor of shape {tuple(t.shape)} was modified in place through another view "
                f"after this view was taken, inside a traced function; the graph cannot follow "
                f"views across in-place updates. clone() the view before the update"
                f"{_where()}")
        return var

    # -- recording
    def record(self, op, inputs, attrs):
        args = [self.var_of(x) if isinstance(x, Tensor) else x for x in inputs]
        out = dispatch.eager(op, inputs, attrs)
        loc = _loc()
        v = self.builder.add_node(op.name, args, attrs, out.shape, out.dtype, loc)
        if not grad_mode.enabled and not self.ran_backward and any(
                isinstance(x, Tensor) and x.requires_grad for x in inputs):
            # no_grad() cut a gradient path: keep the cut in the graph, or the compiled
            # backward (tracing/backward.py) would differentiate through it on later calls.
            # (After a backward() inside, e.g. an optimizer step, no grad_fn is ever built.)
            v = self.builder.add_node("detach", [v], {}, out.shape, out.dtype, loc)
        self.bind(out, v)
        self.array_vars[id(out._data)] = v
        return out

    def constant(self, t):
        """A tensor made inside the function from Python data: a ``const`` node."""
        data = _host_data(t)  # a constant made on the GPU is kept as host data
        v = self.builder.add_node("const", (), {"value": Const(data)}, t.shape, t.dtype,
                                  _loc())
        self.const_ids.add(v.id)
        self.bind(t, v)
        return t

    def assign(self, target, result) -> None:
        """``target`` was overwritten in place with ``result``'s value (functionalised)."""
        if target._base is not None:
            raise TraceError(
                f"in-place update of a view (of a tensor of shape {tuple(target._base.shape)}) "
                f"inside a traced function is not supported; write through the base tensor "
                f"(base[idx] = value) or clone() the view first{_where()}")
        var = self.var_of(result)
        self.vars[id(target)] = (var, target._version[0])

    def data_dependent(self, what: str, fix: str | None = None):
        raise TraceError(
            f"{what} inside a traced function depends on tensor values, which tracing cannot "
            f"capture (the graph would silently keep this call's branch or value){_where()}\n"
            f"  fix: " + (fix or "use tracejit.where(...) for data-dependent choices, pass the "
                          "value as a Python argument, or run this function eagerly "
                          "(tracejit.eager() / TRACEJIT_DISABLE=1)"))

    def check_data_access(self, t, what: str, fix: str | None = None):
        entry = self.vars.get(id(t))
        if entry is not None and entry[0].id in self.const_ids:
            return  # made from Python data inside the function: its value is known
        if entry is not None or id(t) in self.sources:
            self.data_dependent(what, fix)

    # -- result
    def finish(self, outputs: list):
        """Graph outputs: the results, then the final values of mutated inputs and of the
        ``.grad`` of inputs whose gradients were set inside."""
        out_refs = [self.var_of(o) if isinstance(o, Tensor) else o for o in outputs]
        position = {v.id: i for i, v in enumerate(self.builder.inputs)}
        mutated, grads = [], []
        for vid, t in list(self.originals.items()):
            var, _ = self.vars[id(t)]
            # the input now holds another value: computed in the graph, or another input's
            # (x.copy_(y)); the same tensor passed twice is bound to both of its inputs
            if var.id != vid and self.originals.get(var.id) is not t:
                mutated.append((position[vid], len(out_refs)))
                out_refs.append(var)
            # backward() or zero_grad() ran inside; NOTE: a gradient zero_grad() dropped unseen
            # is written back as None even when it came in None: later calls are not guarded on
            # it (grad_reset), and may bring one
            reset = id(t) in self.grads_reset_unseen and t._grad is None
            if t._grad is not self.initial_grads[vid] or reset:
                if t._grad is None:
                    grads.append((position[vid], None))
                else:
                    grads.append((position[vid], len(out_refs)))
                    out_refs.append(self.var_of(t._grad))
        return self.builder.build(out_refs), mutated, grads


def _loc() -> str:
    loc = user_location()
    return f"{loc[0]}:{loc[1]}" if loc else ""


def _where() -> str:
    return user_frame(3)
