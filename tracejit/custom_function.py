"""``tracejit.autograd.Function``: ops with a hand-written backward, as ``torch.autograd.Function``.

>>> class Exp(tracejit.autograd.Function):
...     @staticmethod
...     def forward(ctx, x):
...         y = x.exp()
...         ctx.save_for_backward(y)
...         return y
...     @staticmethod
...     def backward(ctx, g):
...         (y,) = ctx.saved_tensors
...         return g * y
>>> x = tracejit.ones(2, requires_grad=True)
>>> Exp.apply(x).sum().backward(); x.grad
tensor([2.7183, 2.7183])

``forward`` runs under ``no_grad``; its differentiable outputs (floating point, not marked
non-differentiable) get a ``grad_fn`` that hands their gradients to one node per call (the
*hub*, as for compiled graphs: runtime/backward.py), which calls ``backward`` once with all of
them. Because ``backward`` is written with Tensor ops, the same call computes gradients eagerly,
records them into the graph when ``backward()`` or ``tracejit.grad`` runs inside a traced
function, and is differentiated again for higher derivatives (``create_graph=True``).

A traced function whose *outputs* need a ``grad_fn`` from eager code (a traced model, then an
eager ``loss.backward()``) gets a compiled ``grad_fn`` built by replaying its graph
(tracing/backward.py): each ``apply`` is recorded as a ``Region`` of the graph, and the replay
applies the Function again instead of its nodes, so the tape calls ``backward`` and the
compiled backward graph holds its ops. A forward the graph cannot stand in for (it reads
tensors other than its arguments, or returns an argument itself) makes those calls run the
function eagerly instead (``Specialization.eager_grad``), with a one-time warning.
"""

from __future__ import annotations

import functools

import numpy as np

from .autograd import TapeNode, grad_mode, no_grad
from .dispatch import current_tracer
from .errors import TraceError
from .tensor import Tensor


class FunctionCtx:
    """The ``ctx`` of a ``Function``: what ``forward`` leaves for ``backward``. Any other
    attribute may be set on it too (``ctx.dim = dim``)."""

    def __init__(self):
        self._saved = ()
        self._saved_versions = []
        self._non_differentiable: set = set()
        self.materialize_grads = True
        self.needs_input_grad: tuple = ()

    def save_for_backward(self, *tensors) -> None:
        """Keep ``tensors`` (inputs, outputs or intermediates; None allowed) for backward, where
        ``ctx.saved_tensors`` gives them back; an in-place change meanwhile is an error."""
        for k, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward can only save tensors or None, but argument "
                                f"{k} is of type {type(t).__name__} (keep other values as "
                                f"attributes: ctx.value = ...)")
        self._saved = tensors

    @property
    def saved_tensors(self) -> tuple:
        return tuple(self._saved)

    def mark_non_differentiable(self, *tensors) -> None:
        """These outputs get no gradient (indices, masks): they carry no ``grad_fn`` and
        ``backward`` receives zeros (or None, see ``set_materialize_grads``) for them."""
        self._non_differentiable.update(id(t) for t in tensors)

    def set_materialize_grads(self, value: bool) -> None:
        """With False, ``backward`` receives None (not zeros) for outputs no gradient reached."""
        self.materialize_grads = bool(value)

    def mark_dirty(self, *tensors) -> None:
        raise NotImplementedError(
            "tracejit.autograd.Function: ctx.mark_dirty (forward modifying an input in place) "
            "is not supported; return a new tensor from forward instead (x.clone() then the "
            "in-place update, or the out-of-place op)")

    def mark_shared_storage(self, *pairs) -> None:  # torch's long-deprecated name: a no-op
        pass


class _Call:
    """One ``apply``: the ctx, the outputs' shapes and the gradients arrived so far."""

    __slots__ = ("fn", "ctx", "n_args", "arg_is_tensor", "outputs", "cots", "device")

    def __init__(self, fn, ctx, args, outputs, device):
        self.fn = fn
        self.ctx = ctx
        self.n_args = len(args)
        self.arg_is_tensor = [isinstance(a, Tensor) for a in args]
        self.outputs = outputs  # per output: (shape, dtype) of a tensor, or None
        self.cots: dict = {}
        self.device = device


class _FunctionNode(TapeNode):
    """A tape node named after the user's Function (``<MyFnBackward>``)."""

    __slots__ = ()

    def name(self) -> str:
        return self.op.display


class _OutputOp:
    """Each differentiable output's node: it hands the output's gradient to the call's hub."""

    saves_out = False

    def __init__(self, display: str):
        self.name = "autograd_function_output"
        self.display = display

    @staticmethod
    def vjp(g, out, hub, k: int, call: _Call):
        from .creation import zeros

        prev = call.cots.get(k)
        call.cots[k] = g if prev is None else prev + g
        # NOTE: a tracejit-made zero, so a tracer records it as a constant (never an input)
        return (zeros((), dtype=hub.dtype),)  # host: 0-d CPU tensors join CUDA ops


class _HubOp:
    """The node behind all outputs of one ``apply``: the engine reaches it after every
    output's node, so ``backward`` runs once with every output's gradient."""

    saves_out = False

    def __init__(self, display: str):
        self.name = "autograd_function"
        self.display = display

    @staticmethod
    def vjp(g, out, *inputs, call: _Call):
        from .creation import zeros

        fn, ctx = call.fn, call.ctx
        cots, call.cots = call.cots, {}
        grads_out = []
        for k, spec in enumerate(call.outputs):
            c = cots.get(k)
            if c is None and spec is not None and ctx.materialize_grads:
                c = zeros(spec[0], dtype=spec[1], device="cuda" if call.device else None)
            grads_out.append(c)
        try:
            backward = fn.backward
            if backward is Function.backward and fn.vjp is not None:
                backward = fn.vjp
            result = backward(ctx, *grads_out)
        except TraceError as e:
            raise TraceError(f"in the backward of tracejit.autograd.Function {fn.__name__}: "
                             f"{e}") from None
        return _check_grads(fn, call, inputs, result)


def _check_grads(fn, call: _Call, inputs, result) -> tuple:
    """``backward``'s results, one per forward argument, mapped to the tensor inputs."""
    if not isinstance(result, tuple):
        result = (result,)
    if len(result) > call.n_args and all(r is None for r in result[call.n_args:]):
        result = result[:call.n_args]  # extra Nones are allowed, as in torch
    if len(result) != call.n_args:
        raise RuntimeError(f"function {fn.__name__}Backward returned an incorrect number of "
                           f"gradients (expected {call.n_args}, got {len(result)}): one per "
                           f"argument of forward (None for those without a gradient)")
    grads = []
    it = iter(inputs)
    for i, (r, is_tensor) in enumerate(zip(result, call.arg_is_tensor)):
        if not is_tensor:
            if r is not None:
                raise RuntimeError(f"function {fn.__name__}Backward returned a gradient "
                                   f"different than None at position {i}, but the "
                                   f"corresponding forward input was not a Tensor")
            continue
        x = next(it)
        if r is not None and x.requires_grad:
            if not isinstance(r, Tensor):
                r = Tensor._make(np.asarray(r, dtype=x.dtype))
            if tuple(r.shape) != tuple(x.shape) and not _reducible(r.shape, x.shape):
                raise RuntimeError(f"Function {fn.__name__}Backward returned an invalid "
                                   f"gradient at index {i} - got {list(r.shape)} but expected "
                                   f"shape compatible with {list(x.shape)}")
        grads.append(r if x.requires_grad else None)
    return tuple(grads)


def _reducible(shape, target) -> bool:
    """``target`` broadcasts to ``shape`` (the gradient is summed back, as torch does)."""
    if len(target) > len(shape):
        return False
    for s, t in zip(shape[len(shape) - len(target):], target):
        if t != s and t != 1:
            return False
    return True


def _call_forward(cls, ctx, args, kwargs):
    try:
        if _uses_setup_context(cls):
            out = cls.forward(*args, **kwargs)
            cls.setup_context(ctx, args, out)
            return out
        return cls.forward(ctx, *args, **kwargs)
    except TraceError as e:
        raise TraceError(f"in the forward of tracejit.autograd.Function {cls.__name__}: {e}") \
            from None


def _uses_setup_context(cls) -> bool:
    return getattr(cls, "setup_context", None) is not None and \
        cls.setup_context is not Function.setup_context


class Function:
    """Subclass it with static ``forward(ctx, *args)`` and ``backward(ctx, *grad_outputs)``
    (or torch 2's ``forward(*args)`` plus ``setup_context(ctx, inputs, output)``), then call
    ``MyFn.apply(*args)``. See the module docstring for an example."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"tracejit.autograd.Function {type(self).__name__}: do not "
                           f"instantiate it; call {type(self).__name__}.apply(...)")

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("You must implement the forward function for custom "
                                  "tracejit.autograd.Function.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("You must implement either the backward or vjp method for "
                                  "your custom autograd.Function to use it with backward mode "
                                  "AD.")

    setup_context = None  # torch 2 style: forward without ctx, then setup_context(ctx, ...)

    vjp = None  # torch's other name for backward: define either

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = FunctionCtx()
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record = grad_mode.enabled and any(ctx.needs_input_grad)
        tracer = current_tracer() if record else None
        if tracer is not None:  # the forward's nodes form a region the graph can replay
            in_vars = [tracer.var_of(a).id if isinstance(a, Tensor) else None for a in args]
            start = len(tracer.builder.nodes)
        with no_grad():
            out = _call_forward(cls, ctx, args, kwargs)
        if not record:
            return out
        single = not isinstance(out, (tuple, list))
        outs = [out] if single else list(out)
        for k, o in enumerate(outs):
            if o is not None and not isinstance(o, (Tensor, bool, int, float, str)):
                raise TypeError(f"tracejit.autograd.Function {cls.__name__}: forward returned "
                                f"a {type(o).__name__} at output {k}; return tensors (or a "
                                f"tuple of them, plain numbers allowed)")
        inputs = [a for a in args if isinstance(a, Tensor)]
        ids = {id(a) for a in inputs}
        for k, o in enumerate(outs):
            if isinstance(o, Tensor) and id(o) in ids:  # an input returned as is: a new alias
                alias = Tensor._make(o._data)
                alias._version = o._version
                if tracer is not None:
                    tracer.alias(alias, o)
                if id(o) in ctx._non_differentiable:
                    ctx._non_differentiable.add(id(alias))
                outs[k] = alias
        diff = [k for k, o in enumerate(outs) if isinstance(o, Tensor) and o.dtype.kind == "f"
                and id(o) not in ctx._non_differentiable]
        if not diff:
            return outs[0] if single else type(out)(outs)
        if tracer is not None:
            tracer.custom_functions.append(cls.__name__)
            tracer.custom_regions.append(
                Region(cls, args, kwargs, in_vars, outs, tracer, start))
        device = outs[diff[0]].is_cuda
        call = _Call(cls, ctx, args, [(tuple(o.shape), o.dtype) if isinstance(o, Tensor) else
                                      None for o in outs], device)
        display = f"{cls.__name__}Backward"
        hub = Tensor._make(np.zeros((), outs[diff[0]].dtype))
        node = _FunctionNode(_HubOp(display), inputs, {"call": call}, hub._data, hub._version)
        # torch checks the saved tensors' versions (not every input's)
        node.versions = [(t._version, t._version[0]) for t in ctx._saved if t is not None]
        hub._grad_fn, hub.requires_grad = node, True
        out_op = _OutputOp(display)
        for k in diff:
            o = outs[k]
            o._grad_fn = _FunctionNode(out_op, [hub], {"k": k, "call": call}, o._data,
                                       o._version)
            o.requires_grad = True
        return outs[0] if single else type(out)(outs)


class Region:
    """Where one ``apply`` sits in a traced graph: its forward's nodes (contiguous), the Vars
    of its tensor arguments and outputs, and how to call it again. Replaying a graph
    (runtime/executor.replay) calls ``fn.apply`` for the region instead of its nodes, so the
    tape gets the Function's node and a compiled ``grad_fn`` built from the replay calls its
    ``backward`` (tracing/backward.py). ``valid`` is False when the region cannot stand for
    its nodes: the forward read tensors other than its arguments (a captured weight), returned
    an argument itself, made no node, or took tensors as keyword arguments."""

    __slots__ = ("fn", "template", "kwargs", "outs", "nodes", "first", "valid")

    def __init__(self, fn, args, kwargs, in_vars, outs, tracer, start):
        self.fn = fn
        self.kwargs = dict(kwargs)
        # per argument: ("t", var id) for a tensor, ("v", value) for anything else
        self.template = tuple(("t", v) if v is not None else ("v", a)
                              for a, v in zip(args, in_vars))
        nodes = tracer.builder.nodes[start:]
        self.nodes = frozenset(n.out.id for n in nodes)
        self.first = nodes[0].out.id if nodes else None
        self.outs = tuple(tracer.var_of(o).id if isinstance(o, Tensor) else None for o in outs)
        known = self.nodes | {v for v in in_vars if v is not None}
        self.valid = bool(nodes) and all(o is None or o in self.nodes for o in self.outs) \
            and not any(isinstance(v, Tensor) for v in kwargs.values()) \
            and all(not hasattr(x, "id") or x.id in known for n in nodes for x in n.inputs)

    def closed(self, graph) -> bool:
        """No node outside the region, nor an output, uses a value made inside it other than
        its outputs."""
        inner = self.nodes - set(self.outs)
        for n in graph.nodes:
            if n.out.id not in self.nodes and any(getattr(x, "id", None) in inner
                                                  for x in n.inputs):
                return False
        return not any(getattr(x, "id", None) in inner for x in graph.outputs)

    def call(self, env: dict) -> None:
        """Apply the Function to the values in ``env`` (var id -> Tensor), binding its outputs."""
        args = [env[x] if kind == "t" else x for kind, x in self.template]
        out = self.fn.apply(*args, **self.kwargs)
        outs = [out] if not isinstance(out, (tuple, list)) else list(out)
        for vid, o in zip(self.outs, outs):
            if vid is not None:
                env[vid] = o


def once_differentiable(fn):
    """Decorate a ``backward`` that is not itself differentiable: it runs under ``no_grad``,
    so a double backward through it gets no gradient from it."""
    @functools.wraps(fn)
    def wrapper(ctx, *args):
        with no_grad():
            return fn(ctx, *args)
    return wrapper


class InplaceFunction(Function):
    def __init__(self, inplace=False):  # pragma: no cover - torch's legacy base class
        super().__init__()


__all__ = ["Function", "FunctionCtx", "once_differentiable"]
