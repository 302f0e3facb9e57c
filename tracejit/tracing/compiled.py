"""A ``CompiledGraph``: what tracing one signature of a function produced, as plain data.

It holds the graphs (as traced, optimised, and the fused one that runs), what every graph input
and output is, the structure of the results and the guards the graph relies on with the values
it was traced with. Nothing in it is alive: no tensors, callables or generated code, only
str/int/float/bool/None, tuples, numpy dtypes and IR ``Graph`` objects (and guard values, which
are the Python values library code chose to guard). So it prints (``describe()``), compares,
and is what an export saves.

A ``Specialization`` (specializations.py) pairs it with the live parts: the compiled runner,
the captured tensors, the guards' fetch functions. The executor, the compiled backward and
``write_back`` read graph facts from here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Var, type_str
from .pytree import _LEAF, plain


@dataclass(frozen=True)
class InputSpec:
    """One graph input: a tensor argument, or a tensor the function reached (a weight)."""

    name: str  # the graph input's name
    shape: tuple
    dtype: np.dtype
    kind: str  # "argument" (passed by the caller) or "captured" (a weight, read every call)
    position: int | None  # argument: its position among the call's flat leaves
    weight: str | None  # captured: where it is found (``self.fc1.weight``, a global's name);
    # None: no path to it was found, the very object seen while tracing is reused
    requires_grad: bool
    grad_none: bool | None = None  # captured: whether its .grad was None (guarded); None: the
    # graph does not depend on it (and for arguments, whose key covers it)


@dataclass(frozen=True)
class OutputSpec:
    """One graph output: a result, or a value written back to an input after the call."""

    kind: str  # "result", "mutation" (an input's new value) or "grad" (an input's new .grad)
    shape: tuple | None  # None: a Python value among the results, not a tensor
    dtype: np.dtype | None
    input: int | None = None  # mutation and grad: the graph input it is written to


@dataclass(frozen=True)
class GuardSpec:
    """Python state the graph relies on (see ``Tracer.guard``): valid while it reads ``value``."""

    what: str  # as recompile messages name it: "closure 'lr'", "Linear attributes"
    value: object


@dataclass(frozen=True, repr=False)
class CompiledGraph:
    """The data of one specialization. Graph outputs are the ``n_results`` results, then the new
    values of mutated inputs and the new ``.grad`` of inputs whose gradients were set inside."""

    name: str  # the traced function's
    raw: Graph  # as traced
    optimized: Graph  # after the passes, before fusion (replayed for autograd)
    graph: Graph  # what runs: optimised, and fused for compiled backends
    inputs: tuple  # InputSpec per graph input: the tensor arguments, then the captured ones
    outputs: tuple  # OutputSpec per graph output
    out_tree: object  # the results' structure (pytree.plain of flatten's description)
    n_results: int  # graph outputs that are results
    mutated: tuple  # (input position, output position): in-place updates, written back
    grad_writes: tuple  # (input position, output position | None): .grad set (None: to None)
    passthrough: tuple  # (result position, input position): an input returned as it is
    guards: tuple  # GuardSpec
    ran_backward: bool  # the function computes its own gradients (a training step)
    device: str = "cpu"  # where its inputs live and its kernels run: "cpu" or "cuda:0"

    @functools.cached_property
    def aliased_mutations(self) -> frozenset:
        """Mutation outputs that may view another mutated input (see executor.write_back)."""
        from ..runtime.executor import aliased_mutations
        return aliased_mutations(self.optimized, self.mutated)

    @property
    def arg_positions(self) -> tuple:
        """Flat call positions of the tensor arguments, in graph input order."""
        return tuple(s.position for s in self.inputs if s.kind == "argument")

    @property
    def weights(self) -> tuple:
        return tuple(s for s in self.inputs if s.kind == "captured")

    @property
    def single_tensor_result(self) -> bool:
        """The function returns one tensor, computed by the graph (the fast path's case)."""
        return self.out_tree == _LEAF and isinstance(self.graph.outputs[0], Var) and \
            not self.passthrough

    def describe(self) -> str:
        """A readable account: inputs, outputs, guards and the graph that runs."""
        names = self.graph.input_names
        n_args = len(self.inputs) - len(self.weights)
        lines = [f"CompiledGraph of {self.name}: {_count(n_args, 'argument')}, "
                 f"{_count(len(self.weights), 'weight')} -> {_count(len(self.outputs), 'output')}"
                 + (" (runs its own backward)" if self.ran_backward else "")
                 + (f", on {self.device}" if self.device != "cpu" else ""), "inputs:"]
        for s in self.inputs:
            if s.kind == "argument":
                what = f"argument {s.position}"
            elif s.weight is None:
                what = "weight (the very tensor seen while tracing)"
            else:
                what = "weight" if s.weight == s.name else f"weight {s.weight}"
            flags = ", requires grad" if s.requires_grad else ""
            lines.append(f"  {s.name}: {type_str(s.shape, s.dtype)}  {what}{flags}")
        lines.append("outputs:")
        for k, s in enumerate(self.outputs):
            typ = "value" if s.shape is None else type_str(s.shape, s.dtype)
            what = {"result": "result", "mutation": "in-place update of",
                    "grad": ".grad of"}[s.kind]
            target = f" {names[s.input]}" if s.input is not None else ""
            lines.append(f"  {k}: {typ}  {what}{target}")
        for inp, pos in self.grad_writes:
            if pos is None:
                lines.append(f"  (.grad of {names[inp]} set to None)")
        for pos, inp in self.passthrough:
            lines.append(f"  (result {pos} is the input {names[inp]} itself)")
        lines.append(f"result structure: {self.out_tree!r}")
        lines.append("guards:" if self.guards else "guards: none")
        lines.extend(f"  {g.what} == {g.value!r}" for g in self.guards)
        lines.append(str(self.graph))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<CompiledGraph of {self.name}: {len(self.inputs)} inputs, " \
               f"{len(self.graph.nodes)} nodes, {len(self.outputs)} outputs>"


def from_trace(name: str, tracer, raw: Graph, optimized: Graph, graph: Graph,
               arg_positions: list, out_tree, n_results: int, mutated: list,
               grad_writes: list, device: str = "cpu") -> CompiledGraph:
    """The CompiledGraph of a finished trace (``tracer``: the Tracer that recorded ``raw``)."""
    captured = {c.var.id: c for c in tracer.captured}
    positions = iter(arg_positions)
    inputs = []
    for v, name_ in zip(raw.inputs, raw.input_names):
        c = captured.get(v.id)
        t = tracer.originals[v.id]
        if c is None:
            inputs.append(InputSpec(name_, v.shape, v.dtype, "argument", next(positions), None,
                                    bool(t.requires_grad)))
        else:
            inputs.append(InputSpec(name_, v.shape, v.dtype, "captured", None,
                                    c.source.name if c.source is not None else None,
                                    bool(c.requires_grad), c.grad_none))
    roles = [("result", None)] * len(raw.outputs)
    for inp, pos in mutated:
        roles[pos] = ("mutation", inp)
    for inp, pos in grad_writes:
        if pos is not None:
            roles[pos] = ("grad", inp)
    outputs = tuple(OutputSpec(kind, x.shape, x.dtype, inp) if isinstance(x, Var) else
                    OutputSpec(kind, None, None, inp)
                    for (kind, inp), x in zip(roles, graph.outputs))
    return CompiledGraph(
        name, raw, optimized, graph, tuple(inputs), outputs, plain(out_tree), n_results,
        tuple(mutated), tuple(grad_writes), _passthrough(raw, n_results),
        tuple(GuardSpec(what, value) for _, value, what in tracer.guards),
        bool(tracer.ran_backward), device)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _passthrough(raw: Graph, n_results: int) -> tuple:
    """(result position, input position) of each result that is a graph input returned as is."""
    position = {v.id: i for i, v in enumerate(raw.inputs)}
    return tuple((k, position[v.id]) for k, v in enumerate(raw.outputs[:n_results])
                 if isinstance(v, Var) and v.id in position)
