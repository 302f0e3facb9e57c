"""A random graph as a small program: inputs, a list of steps, and outputs.

A step is ``S(op, *args, **attrs)``: ``op`` is a row of ``tracejit.ops.OPS`` (run through
``ops.apply``), a Tensor method written with a leading dot (``".add_"``, ``".__setitem__"``,
``".clone"``), or ``"tensor"`` (a constant made inside the function from ``attrs["value"]``).
Arguments are value references ``V(i)`` (inputs are ``V(0) .. V(n-1)``, step k defines
``V(n + k)``), Python scalars, or tuples of those (indexing keys). The same program is replayed
eagerly and under ``tracejit.trace``, so every executor runs the very same Python.

``repr(program)`` is Python that rebuilds it, which is how shrunk failures become regression
tests (tests/fuzz/test_regressions.py)::

    P(inputs=[In((2, 3), 'float32', 'T', [[0.0, nan, 1.5], [-0.0, inf, 2.0]])],
      steps=[S('exp', V(0)), S('.add_', V(0), V(1))],
      outputs=[V(1), V(0)])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import tracejit as tj
from tracejit import ops
from tracejit.dispatch import apply


class V(int):
    """A reference to value ``i`` of a program (inputs first, then one per step)."""

    def __repr__(self):
        return f"V({int(self)})"


def _fmt(x) -> str:
    if isinstance(x, np.dtype):
        return f"np.dtype({x.name!r})"
    if isinstance(x, np.ndarray):
        if x.size == 0:  # tolist() loses the dims after a 0: [[], []] for shape (2, 0, 3)
            return f"np.zeros({x.shape!r}, dtype={x.dtype.name!r})"
        return f"np.array({_fmt_list(x.tolist())}, dtype={x.dtype.name!r})"
    if isinstance(x, float):
        return _fmt_float(x)
    if isinstance(x, tuple):
        inner = ", ".join(_fmt(v) for v in x)
        return f"({inner},)" if len(x) == 1 else f"({inner})"
    if isinstance(x, slice):
        return f"slice({x.start!r}, {x.stop!r}, {x.step!r})"
    if x is Ellipsis:
        return "..."
    return repr(x)


def _fmt_float(v: float) -> str:
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def _fmt_list(x) -> str:
    if isinstance(x, list):
        return "[" + ", ".join(_fmt_list(v) for v in x) + "]"
    return _fmt_float(x) if isinstance(x, float) else repr(x)


@dataclass(frozen=True, eq=False)
class In:
    """An input tensor: logical shape, dtype, memory layout and values.

    Layouts: ``"c"`` contiguous; ``"T"`` the last two axes transposed in memory; ``"s"``
    every other element of a larger buffer along the last axis; ``"o"`` a view at an offset
    into a larger buffer; ``"r"`` a negative-stride (reversed) view of the last axis."""

    shape: tuple
    dtype: str
    layout: str
    values: list  # nested lists (tolist()), so repr() is readable Python

    def array(self) -> np.ndarray:
        a = np.array(self.values, dtype=self.dtype).reshape(self.shape)
        return make_layout(a, self.layout)

    def __repr__(self):
        return (f"In({self.shape!r}, {self.dtype!r}, {self.layout!r}, "
                f"{_fmt_list(np.array(self.values, dtype=self.dtype).tolist())})")


def make_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """The values of ``a`` in an array with the given memory layout."""
    if layout == "T" and a.ndim >= 2:
        return np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    if layout == "s" and a.ndim >= 1:
        big = np.zeros(a.shape[:-1] + (a.shape[-1] * 2,), dtype=a.dtype)
        view = big[..., ::2]
        view[...] = a
        return view
    if layout == "o":
        flat = np.zeros(a.size + 3, dtype=a.dtype)
        view = flat[3:].reshape(a.shape)
        view[...] = a
        return view
    if layout == "r" and a.ndim >= 1:
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    return a.copy()


@dataclass(frozen=True, eq=False)
class S:
    op: str
    args: tuple
    attrs: tuple  # sorted (name, value) pairs

    def __init__(self, op, *args, **attrs):
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "args", tuple(args))
        object.__setattr__(self, "attrs", tuple(sorted(attrs.items())))

    @property
    def attr_dict(self) -> dict:
        return dict(self.attrs)

    def __repr__(self):
        parts = [repr(self.op)] + [_fmt(a) for a in self.args] + \
            [f"{k}={_fmt(v)}" for k, v in self.attrs]
        return f"S({', '.join(parts)})"


@dataclass(eq=False)
class P:
    inputs: list
    steps: list
    outputs: list
    bare: bool = False  # a single output returned as a bare tensor, not a 1-tuple
    meta: dict = field(default_factory=dict, repr=False, compare=False)  # strategy statistics

    def __repr__(self):
        ins = ",\n         ".join(repr(i) for i in self.inputs)
        steps = ",\n         ".join(repr(s) for s in self.steps)
        extra = ", bare=True" if self.bare else ""
        return (f"P(inputs=[{ins}],\n  steps=[{steps}],\n  outputs={self.outputs!r}{extra})")

    def _repr_pretty_(self, printer, cycle):  # hypothesis prints failing examples with this
        printer.text(repr(self))

    def make_args(self, requires_grad: bool = False) -> list:
        """Fresh input tensors (their own memory, in each input's layout)."""
        out = []
        for i in self.inputs:
            t = tj.from_numpy(i.array())
            if requires_grad and t.dtype.kind == "f":
                t.requires_grad_(True)
            out.append(t)
        return out

    def function(self, hook=None):
        """The program as a Python function of its inputs (what ``tj.trace`` traces)."""
        def fn(*xs):
            outs = replay(self, xs, hook)
            return outs[0] if self.bare else tuple(outs)
        fn.__name__ = "fuzz_program"
        return fn


_DEVICE = "cpu"  # where "tensor" steps make their constants (the CUDA row sets "cuda")


def _resolve(x, env):
    if isinstance(x, V):
        return env[x]
    if isinstance(x, tuple):
        return tuple(_resolve(v, env) for v in x)
    return x


def run_step(step: S, env: list):
    """The value a step defines (in-place methods and ``__setitem__`` give their target)."""
    args = [_resolve(a, env) for a in step.args]
    attrs = step.attr_dict
    if step.op == "tensor":
        return tj.tensor(np.array(attrs["value"]), device=_DEVICE)
    if step.op.startswith("."):
        name = step.op[1:]
        res = getattr(args[0], name)(*args[1:], **attrs)
        return args[0] if name == "__setitem__" else res
    res = apply(ops.OPS[step.op], *args, **attrs)
    if _DEVICE != "cpu" and ops.OPS[step.op].kind == ops.RANDOM:  # as tj.rand(device=...)
        res = res.to(_DEVICE)
    return res


def replay(program: P, inputs, hook=None) -> list:
    """Run ``program`` on input tensors; ``hook(step, env, result)`` may change each result
    (the perturbed runs of ``executors.tolerance`` use it)."""
    env = list(inputs)
    for step in program.steps:
        res = run_step(step, env)
        if hook is not None:
            res = hook(step, env, res)
        env.append(res)
    return [env[i] for i in program.outputs]


# names a regression test needs to eval a printed program
nan, inf = float("nan"), float("inf")
__all__ = ["P", "S", "V", "In", "replay", "run_step", "make_layout", "nan", "inf"]
