"""Eager reverse-mode autograd: the tape (``TapeNode``), grad mode, ``backward``/``grad`` and
``gradcheck``. Gradients come from the op table's vjp rules, written with Tensor ops, so the
backward pass can itself be recorded (``create_graph=True``) for higher-order derivatives.

>>> import tracejit as tj
>>> x = tj.tensor([1.0, 2.0], requires_grad=True)
>>> (x * x).sum().backward(); x.grad
tensor([2., 4.])
"""

from __future__ import annotations

import functools
import threading
import weakref

import numpy as np

from .errors import user_frame


class _GradMode(threading.local):
    enabled = True


grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    return grad_mode.enabled


class _GradSwitch:
    """Context manager and decorator that sets grad mode for its body."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.prev = grad_mode.enabled
        grad_mode.enabled = self.enabled

    def __exit__(self, *exc):
        grad_mode.enabled = self.prev

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)(self.enabled):
                return fn(*args, **kwargs)
        return wrapper


def no_grad() -> _GradSwitch:
    """``with tracejit.no_grad():`` records no gradients (also usable as a decorator)."""
    return _GradSwitch(False)


def enable_grad() -> _GradSwitch:
    """``with tracejit.enable_grad():`` records gradients even inside ``no_grad``."""
    return _GradSwitch(True)


class set_grad_enabled(_GradSwitch):
    """``set_grad_enabled(False)`` as a context manager, decorator or plain call."""

    def __init__(self, mode: bool):
        super().__init__(bool(mode))
        self.prev = grad_mode.enabled
        grad_mode.enabled = self.enabled

    def __enter__(self):  # the mode was already set by the constructor
        pass


class TapeNode:
    """One recorded op: the tape entry behind a tensor's ``grad_fn``.

    Ops have one output, so a non-leaf tensor and its node correspond one to one; the gradient
    arriving at a node is the gradient of that tensor.
    """

    __slots__ = ("op", "inputs", "attrs", "out_data", "edges", "versions", "hooks", "retained",
                 "__weakref__")

    def __init__(self, op, inputs, attrs, out_data, out_version):
        self.op = op
        self.inputs = inputs
        self.attrs = attrs
        self.out_data = out_data
        edges, versions = [], [(out_version, out_version[0])] if op.saves_out else []
        for x in inputs:
            if getattr(x, "requires_grad", False):
                edges.append(x._grad_fn if x._grad_fn is not None else x)
                versions.append((x._version, x._version[0]))
            else:
                edges.append(None)
                if hasattr(x, "_version"):
                    versions.append((x._version, x._version[0]))
        self.edges = edges
        self.versions = versions
        self.hooks = None
        self.retained = None

    def name(self) -> str:
        return "".join(p.capitalize() for p in self.op.name.split("_")) + "Backward0"

    @property
    def next_functions(self):
        return tuple(e if isinstance(e, TapeNode) or e is None else "AccumulateGrad"
                     for e in self.edges)

    def __repr__(self) -> str:
        return f"<{self.name()}>"


_SECOND_BACKWARD = (
    "Trying to backward through the graph a second time (or directly access saved tensors "
    "after they have already been freed). Specify retain_graph=True if you need to backward "
    "through the graph a second time.")


def _modified_message(node: TapeNode, counter, seen) -> str:
    """Which saved value of ``node`` an in-place update changed, with its shape."""
    what = "a saved value"
    if node.op.saves_out and counter is node.versions[0][0]:
        what = f"its output of shape {tuple(node.out_data.shape)}"
    else:
        for k, x in enumerate(node.inputs):
            if getattr(x, "_version", None) is counter:
                what = f"its input {k} of shape {tuple(x.shape)}"
                break
    return (f"one of the variables needed for gradient computation has been modified by an "
            f"inplace operation: {what}, saved by {node.op.name} ({node.name()}), is at version "
            f"{counter[0]}, expected version {seen}. Fix: clone() the tensor before the in-place "
            f"update, use the out-of-place op, or do the update after backward()")


def _topo_order(roots):
    """Nodes reachable from ``roots``, each before the nodes it feeds into (reverse postorder)."""
    order, seen = [], set()
    for root in roots:
        if root is None or id(root) in seen:
            continue
        seen.add(id(root))
        stack = [(root, iter(root.edges))]
        while stack:
            node, it = stack[-1]
            for e in it:
                if isinstance(e, TapeNode) and id(e) not in seen:
                    seen.add(id(e))
                    stack.append((e, iter(e.edges)))
                    break
            else:
                stack.pop()
                order.append(node)
    order.reverse()
    return order


def _accumulate(table, key, g):
    prev = table.get(key)
    table[key] = g if prev is None else prev + g


_stores = threading.local()  # .count: gradients stored into .grad by this thread, eagerly


# post-accumulate-grad hooks (``Tensor.register_post_accumulate_grad_hook``): id(leaf) ->
# (weak reference, [hooks]); NOTE: kept here rather than in a Tensor slot, and the backward pass
# only looks when the table is not empty
_post_hooks: dict = {}


def register_post_accumulate_grad_hook(t, hook):
    """``hook(t)`` runs once per backward pass after ``t.grad`` has received all of this pass's
    gradient (torch's ``register_post_accumulate_grad_hook``); returns a handle with
    ``remove()``."""
    if not t.requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    if t._grad_fn is not None:
        raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
    key = id(t)
    entry = _post_hooks.get(key)
    if entry is None or entry[0]() is not t:
        # (the table is bound, not looked up: at interpreter exit the global may be None)
        forget = lambda _, k=key, table=_post_hooks: table.pop(k, None)  # noqa: E731
        entry = _post_hooks[key] = (weakref.ref(t, forget), [])
    entry[1].append(hook)
    return _HookHandle(entry[1], hook)


class _HookHandle:
    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


# leaves whose gradients go straight into a buffer someone keeps for them (the slot of
# DistributedDataParallel's bucket), already scaled: id(leaf) -> (weak reference, slot).
# ``slot.begin(leaf)``, asked when a pass's first gradient arrives for a leaf whose .grad is
# None, gives the factor (or None: store it as usual) and ``slot.filled(leaf)`` the factor of
# later gradients of the same pass (None when ``begin`` declined); ``slot.view`` is the array.
# Saves the copy into a fresh array that the buffer's owner would copy again.
_grad_slots: dict = {}


def set_grad_slot(t, slot) -> None:
    """Send ``t``'s gradients into ``slot.view`` (see ``_grad_slots``)."""
    key = id(t)
    forget = lambda _, k=key, table=_grad_slots: table.pop(k, None)  # noqa: E731
    _grad_slots[key] = (weakref.ref(t, forget), slot)


def _slot_of(t):
    entry = _grad_slots.get(id(t))
    return entry[1] if entry is not None and entry[0]() is t else None


def _leaf_deliveries(order) -> dict:
    """id(leaf) -> [gradients this pass may still deliver to it, the leaf, delivered any?] for
    the leaves with post-accumulate hooks."""
    count: dict = {}
    for node in order:
        for e in node.edges:
            if e is not None and not isinstance(e, TapeNode) and id(e) in _post_hooks:
                count.setdefault(id(e), [0, e, False])[0] += 1
    return count


def _run_post_hooks(t):
    entry = _post_hooks.get(id(t))
    if entry is not None and entry[0]() is t:
        for hook in list(entry[1]):
            hook(t)


def grads_stored() -> int:
    """How many gradients this thread has stored into ``.grad`` eagerly (tracing/front.py: did a
    traced function that ran eagerly call ``backward()``?)."""
    return getattr(_stores, "count", 0)


def _store_grad(t, g, create_graph):
    """Accumulate ``g`` into ``t.grad`` the way torch does."""
    from .dispatch import current_tracer
    from .tensor import Tensor

    tracer = current_tracer()
    if tracer is not None:  # inside a traced function: .grad is a traced value
        tracer.note_backward()
        t.grad = g.clone() if t.grad is None else t.grad + g
        return
    _stores.count = getattr(_stores, "count", 0) + 1
    if t.is_cuda:  # device arrays: the same steps as Tensor ops (generated kernels)
        if t.grad is None:
            t.grad = g if create_graph else g.to(t.dtype).clone()
        elif create_graph:
            t.grad = t.grad + g
        else:
            t.grad._assign(t.grad + g, "add", False)
        return
    slot = _slot_of(t) if _grad_slots and not create_graph else None
    if slot is not None and slot.view.shape == g.shape:
        view = slot.view
        if t.grad is None:  # this pass's first gradient for it
            scale = slot.begin(t)
            if scale is not None:
                np.multiply(g._data, view.dtype.type(scale), out=view, casting="unsafe")
                t.grad = Tensor._make(view)
                return
        elif t.grad._data is view:
            scale = slot.filled(t)
            if scale is not None:  # more of this pass (a weight used twice): scaled too
                view += (g._data * view.dtype.type(scale)).astype(view.dtype, copy=False)
                t.grad._version[0] += 1
                return
    if t.grad is None:
        # a gradient has its leaf's layout (torch's AccumulateGrad): a weight's gradient is
        # computed transposed (the vjp of x @ w.T), and a transposed .grad made the optimizer's
        # and DDP's passes over it walk memory across rows; the copy is made anyway
        order = "C" if t._data.flags.c_contiguous else "K"
        t.grad = g if create_graph else Tensor._make(np.array(g._data, dtype=t.dtype,
                                                              order=order))
    elif create_graph or not t.grad._data.flags.writeable:
        t.grad = t.grad + g
    else:
        np.add(t.grad._data, g._data, out=t.grad._data, casting="unsafe")
        t.grad._version[0] += 1


def run_backward(outputs, grad_outputs, inputs=None, retain_graph=None, create_graph=False,
                 allow_unused=False):
    """The engine. With ``inputs`` it returns their gradients (``autograd.grad``); without, it
    accumulates into the ``.grad`` of the leaves it reaches (``Tensor.backward``)."""
    from .creation import ones, tensor
    from .dispatch import current_tracer
    from .tensor import Tensor

    if retain_graph is None:
        retain_graph = create_graph
    pending: dict = {}  # id(node) -> gradient of the node's output tensor
    leaf_grads: dict = {}  # id(leaf) -> gradient (autograd.grad only)
    roots = []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not out.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a "
                               f"grad_fn (an output of shape {tuple(out.shape)}; did you create "
                               f"its inputs with requires_grad=True, outside no_grad()?)"
                               f"{user_frame()}")
        if g is None:
            if out.numel() != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs (got an output of "
                    f"shape {tuple(out.shape)}; reduce it first, e.g. .sum() or .mean(), or pass "
                    f"gradient= of the same shape){user_frame()}")
            g = ones(out.shape, dtype=out.dtype, device="cuda" if out.is_cuda else None)
        elif not isinstance(g, Tensor):
            g = tensor(g, dtype=out.dtype)
        if tuple(g.shape) != tuple(out.shape):
            raise RuntimeError(f"backward: gradient of shape {tuple(g.shape)} does not match the "
                               f"output's shape {tuple(out.shape)}{user_frame()}")
        if out._grad_fn is None:  # a leaf: its gradient is the given one
            _deliver_leaf(out, g, inputs, leaf_grads, create_graph)
        else:
            _accumulate(pending, id(out._grad_fn), g)
            roots.append(out._grad_fn)

    targets = {}
    if inputs is not None:
        for k, t in enumerate(inputs):
            if t._grad_fn is not None:
                targets[id(t._grad_fn)] = k
    captured: dict = {}

    order = _topo_order(roots)
    # leaves with post-accumulate hooks: the hook runs after the leaf's last gradient of the pass
    post = _leaf_deliveries(order) if _post_hooks and inputs is None else None
    if post is not None:
        for out in outputs:
            if out._grad_fn is None and id(out) in _post_hooks:
                _run_post_hooks(out)
    prev, grad_mode.enabled = grad_mode.enabled, create_graph
    try:
        for node in order:
            g = pending.pop(id(node), None)
            if g is None:
                continue
            if node.hooks:
                for hook in node.hooks:
                    r = hook(g)
                    g = r if r is not None else g
            if id(node) in targets:
                _accumulate(captured, targets[id(node)], g)
            if node.retained is not None:
                t = node.retained()
                if t is not None:
                    _store_grad(t, g, create_graph)
            if node.inputs is None:
                raise RuntimeError(f"{_SECOND_BACKWARD} ({node.name()} was already freed)"
                                   f"{user_frame()}")
            for counter, seen in node.versions:
                if counter[0] != seen:
                    raise RuntimeError(_modified_message(node, counter, seen) + user_frame())
            out = Tensor._make(node.out_data)
            if current_tracer() is not None:  # the vjp reads the output's traced value
                current_tracer().bind_array(out)
            if create_graph:
                out._grad_fn, out.requires_grad = node, True
            grads = node.op.vjp(g, out, *node.inputs, **node.attrs)
            for x, e, gx in zip(node.inputs, node.edges, grads):
                if e is None or gx is None:
                    continue
                if not isinstance(gx, Tensor):
                    gx = tensor(gx, dtype=x.dtype)
                if tuple(gx.shape) != tuple(x.shape):
                    gx = gx.sum_to_shape(x.shape)
                if gx.dtype != x.dtype:
                    gx = gx.to(x.dtype)
                if isinstance(e, TapeNode):
                    _accumulate(pending, id(e), gx)
                else:
                    _deliver_leaf(e, gx, inputs, leaf_grads, create_graph)
                    if post is not None and id(e) in post:
                        left = post[id(e)]
                        left[0] -= 1
                        left[2] = True
                        if not left[0]:
                            _run_post_hooks(e)
            if not retain_graph:
                node.inputs = node.out_data = None
    finally:
        grad_mode.enabled = prev

    if inputs is None:
        return None
    result = []
    for k, t in enumerate(inputs):
        g = captured.get(k) if t._grad_fn is not None else leaf_grads.get(id(t))
        if g is None and not allow_unused:
            raise RuntimeError(
                f"One of the differentiated Tensors (input {k}, shape {tuple(t.shape)}) appears "
                f"to not have been used in the graph. Set allow_unused=True if this is the "
                f"desired behavior.{user_frame()}")
        result.append(g)
    return tuple(result)


def _deliver_leaf(t, g, inputs, leaf_grads, create_graph):
    for hook in t._hooks or ():
        r = hook(g)
        g = r if r is not None else g
    if inputs is None:
        _store_grad(t, g, create_graph)
    else:
        _accumulate(leaf_grads, id(t), g)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Gradients of ``outputs`` with respect to ``inputs``, as ``torch.autograd.grad``.

    >>> x = tracejit.tensor(3.0, requires_grad=True)
    >>> tracejit.autograd.grad(x ** 3, x)
    (tensor(27.),)
    """
    from .tensor import Tensor

    single = isinstance(outputs, Tensor)
    outputs = [outputs] if single else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    for k, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"input {k} of autograd.grad (shape {tuple(t.shape)}) does not "
                               f"require grad{user_frame()}")
    return run_backward(outputs, list(grad_outputs), inputs, retain_graph, create_graph,
                        allow_unused)


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    """Accumulate gradients of ``tensors`` into the leaves' ``.grad``."""
    from .tensor import Tensor

    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_tensors is None or isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors] * len(tensors) if grad_tensors is None else [grad_tensors]
    run_backward(tensors, list(grad_tensors), None, retain_graph, create_graph)


def register_retain(t):
    t._grad_fn.retained = weakref.ref(t)


# ----------------------------------------------------------------------------------------------
# gradcheck: analytic gradients against central finite differences in float64


class GradcheckError(AssertionError):
    pass


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _numeric_grads(fn, inputs, projections, eps):
    from .tensor import Tensor

    def value():
        with no_grad():
            outs = _as_tuple(fn(*inputs))
        return sum(float(np.sum(o._data * p)) for o, p in zip(outs, projections)
                   if isinstance(o, Tensor) and p is not None)

    grads = []
    for t in inputs:
        if not (isinstance(t, Tensor) and t.requires_grad):
            grads.append(None)
            continue
        flat = t._data.reshape(-1)  # a view: perturb in place, restore after
        if flat.size and not np.shares_memory(flat, t._data):  # size 0: nothing to perturb
            raise ValueError("gradcheck needs contiguous inputs")
        num = np.zeros(t._data.size)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            hi = value()
            flat[j] = orig - eps
            lo = value()
            flat[j] = orig
            num[j] = (hi - lo) / (2 * eps)
        grads.append(num.reshape(t.shape))
    return grads


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0) -> bool:
    """Check ``fn``'s gradients against central finite differences (float64 inputs).

    The outputs are projected on fixed random weights, so every output element takes part.
    Raises ``GradcheckError`` naming the input and the worst element on failure.

    >>> x = tracejit.randn(3, dtype=tracejit.float64, requires_grad=True)
    >>> tracejit.autograd.gradcheck(lambda t: t.sin() * t, (x,))
    True
    """
    from .tensor import Tensor

    inputs = _as_tuple(inputs)
    for t in inputs:
        if isinstance(t, Tensor) and t.requires_grad and t.dtype != np.float64:
            raise ValueError(f"gradcheck: inputs must be float64, got {t.dtype}")
    with enable_grad():
        outs = _as_tuple(fn(*inputs))
    rng = np.random.default_rng(seed)
    projections = [rng.standard_normal(o.shape) if isinstance(o, Tensor) and o.dtype.kind == "f"
                   else None for o in outs]
    numeric = _numeric_grads(fn, inputs, projections, eps)
    wanted = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    pairs = [(o, p) for o, p in zip(outs, projections) if p is not None and o.requires_grad]
    if pairs:
        with enable_grad():
            s = sum((o * Tensor._make(p.astype(o.dtype))).sum() for o, p in pairs)
        analytic = grad(s, wanted, allow_unused=True)
    else:
        analytic = [None] * len(wanted)
    analytic_iter = iter(analytic)
    for k, (t, num) in enumerate(zip(inputs, numeric)):
        if num is None:
            continue
        a = next(analytic_iter)
        a = np.zeros(t.shape) if a is None else a._data
        if not np.allclose(a, num, atol=atol, rtol=rtol, equal_nan=True):
            j = np.unravel_index(np.argmax(np.abs(a - num)), num.shape) if num.size else ()
            raise GradcheckError(
                f"gradcheck: gradient of input {k} (shape {tuple(t.shape)}) differs from finite "
                f"differences; worst at index {tuple(int(i) for i in j)}: analytic "
                f"{a[j]!r} vs numeric {num[j]!r}\nanalytic:\n{a}\nnumeric:\n{num}")
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0) -> bool:
    """Check second derivatives: gradcheck of the first-order gradients (built with
    ``create_graph=True``) against finite differences."""
    from .tensor import Tensor

    inputs = _as_tuple(inputs)
    wanted = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    with enable_grad():
        outs = _as_tuple(fn(*inputs))
    rng = np.random.default_rng(seed + 1)
    projections = [rng.standard_normal(o.shape) for o in outs]

    def first_grads(*xs):
        with enable_grad():
            ys = _as_tuple(fn(*xs))
            s = sum((y * Tensor._make(p.astype(y.dtype))).sum() for y, p in zip(ys, projections))
            req = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
            gs = grad(s, req, create_graph=True, allow_unused=True)
        return tuple(g if g is not None else Tensor._make(np.zeros(x.shape))
                     for g, x in zip(gs, req))

    del wanted
    return gradcheck(first_grads, inputs, eps=eps, atol=atol, rtol=rtol, seed=seed)


# ----------------------------------------------------------------------------------------------
# tracejit.autograd.Function (custom_function.py) and tracejit.autograd.functional
# (autograd_functional.py), importable by torch's module paths too
import sys as _sys  # noqa: E402

from . import autograd_functional as functional  # noqa: E402
from . import custom_function as function  # noqa: E402
from .custom_function import Function, FunctionCtx, once_differentiable  # noqa: E402, F401

_sys.modules[__name__ + ".functional"] = functional
_sys.modules[__name__ + ".function"] = function


from . import _torch_names  # noqa: E402

# a torch name tracejit lacks raises an AttributeError naming the alternative
__getattr__ = _torch_names.install(__name__)
