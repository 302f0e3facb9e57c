"""A fused graph as a target-neutral entry plan: the ordered steps one call of the compiled
graph takes, before any target spells them.

Each graph node becomes one ``Step``: a kernel ``launch`` (identical kernels, an unrolled loop's
steps, are generated once: ``KernelPlan.key()``; an elementwise group that appears at several
ranks, each parameter's optimizer update, is made rank-generic first, ``kernel.pad_ranks``,
where the target allows it: ``Target.pad_at``), a library call the target runs natively
(``call``: reshape, transpose, broadcast, concat, a basic index; ``matmul``,
``batched_matmul``, ``index_put``), a ``const`` passed in as an array, or a numpy
``fallback`` for what the target renders no code for. Which of these a node gets is asked of
the target through ``Target`` (a small capability interface), never decided here by name, so
a target that renders more nodes natively gets more real views and fewer fallbacks.

Memory planning (``codegen/memory_plan.py``) then gives the results their buffers; a renderer
(``codegen/cpu.py``) spells the plan. Sizes that are not 1 become the ``sz`` tuple the entry
receives, numbered as the renderer meets them (``Sizes``), so one source serves every batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Protocol

from tracejit import ops
from tracejit.ir import Graph, Node, Var, defined_vars

from .kernel import KernelPlan, pad_ranks

STEP_KINDS = ("launch", "call", "matmul", "batched_matmul", "index_put", "const", "fallback")


class Target(Protocol):
    """What the neutral planning asks of a target (``codegen/cpu.py`` CpuTarget)."""

    def renders(self, plan: KernelPlan) -> bool:
        """Can it generate this kernel (every call in its templates spelled)?"""

    def kernel_variant(self, plan: KernelPlan) -> Hashable:
        """What, besides the plan's key, makes it render a kernel differently (the CPU: serial
        or parallel): kernels are shared only within one variant."""

    def runs_natively(self, node: Node) -> str | None:
        """The step kind it runs a node without a kernel with ("call", "matmul",
        "batched_matmul", "index_put"), or None: numpy runs it. A native "call" of a view op
        returns a real view (memory planning reads that)."""

    def pad_at(self, plan: KernelPlan) -> int | None:
        """Where a call may insert size-1 dims into the operands of this elementwise kernel so
        that it shares one rank-generic kernel with the same update at other ranks
        (``kernel.pad_ranks``), or None: it keeps its rank. Optional: a target without it
        pads nothing."""


@dataclass
class Step:
    """One node of the graph as the entry runs it."""

    kind: str  # one of STEP_KINDS
    node: Node
    results: tuple  # the Vars it defines
    plan: KernelPlan | None = None  # launch: this node's kernel plan (its sizes are the call's)
    call: str = ""  # launch: the kernel to call (the first identical one's name)
    index: int = -1  # const: position in consts; fallback: position in fallbacks
    donated: bool = False  # fallback: input 0's array is handed over (memory_plan.donations)


@dataclass
class EntryPlan:
    """The entry function of a fused graph, target-neutral."""

    graph: Graph
    steps: list
    kernels: list  # KernelPlan, each generated once, in order of first launch
    consts: list  # arrays passed after the graph inputs
    fallbacks: list  # callables for the nodes numpy runs
    buffers: list = field(default_factory=list)  # memory_plan.Buffer, entry-parameter order
    storage: dict = field(default_factory=dict)  # value id -> index in buffers
    # value id -> graph input position: a new value written into that input's own array
    # (memory_plan.write_in_place)
    written: dict = field(default_factory=dict)
    # value id -> (id of a 1-d ``cat``'s result, element offset): a piece of that cat its
    # producer writes straight into the cat's array (memory_plan.place_pieces)
    pieces: dict = field(default_factory=dict)

    @property
    def outputs(self) -> list:
        """What the entry returns: the graph's outputs (Vars, or Python values)."""
        return list(self.graph.outputs)

    def __str__(self) -> str:
        lines = [f"entry: {len(self.steps)} steps, {len(self.kernels)} kernels, "
                 f"{len(self.consts)} consts, {len(self.fallbacks)} numpy fallbacks"]
        for s in self.steps:
            what = f"{s.kind} {s.call}" if s.kind == "launch" else f"{s.kind} {s.node.op}"
            ins = ", ".join(f"%{x.id}" if isinstance(x, Var) else repr(x) for x in s.node.inputs)
            outs = ", ".join(f"%{v.id}" + (f" -> b{self.storage[v.id]}" if v.id in self.storage
                                          else f" -> in{self.written[v.id]}"
                                          if v.id in self.written else "") for v in s.results)
            lines.append(f"  {outs} = {what}({ins})")
        for k, b in enumerate(self.buffers):
            lines.append(f"  b{k}: {b.kind} {b.dtype}{list(b.shape)}" +
                         (f" slot {b.slot}" if b.kind == "work" else ""))
        return "\n".join(lines)


class Sizes:
    """Hands out ``sz[k]`` for each size that is not 1, in emission order (never deduplicated
    by value, so coincidentally equal sizes do not change the source)."""

    def __init__(self):
        self.values: list = []

    def ref(self, n: int) -> str:
        if n == 1:
            return "1"
        self.values.append(int(n))
        return f"sz[{len(self.values) - 1}]"

    def shape(self, shape) -> str:
        refs = [self.ref(n) for n in shape]
        return "(" + ", ".join(refs) + ("," if len(refs) == 1 else "") + ")"


def plan_entry(graph: Graph, plans: dict, target: Target) -> EntryPlan:
    """The steps of ``graph``'s entry. ``plans``: value id -> KernelPlan (``plan_kernels``)."""
    entry = EntryPlan(graph, [], [], [], [])
    pad_at = getattr(target, "pad_at", None)
    if pad_at is not None:  # the same elementwise group at several ranks: one kernel
        plans = pad_ranks(plans, pad_at, target.kernel_variant)
    names: dict = {}  # (plan key, variant) -> the kernel's name
    for node in graph.nodes:
        plan = plans.get(node.out.id)
        if plan is not None and target.renders(plan):
            call = names.setdefault((plan.key(), target.kernel_variant(plan)), plan.name)
            if call == plan.name:
                entry.kernels.append(plan)
            results = tuple(defined_vars(node)) if node.op == "fused" else (node.out,)
            entry.steps.append(Step("launch", node, results, plan, call))
        elif node.op == "const":
            entry.consts.append(node.attr_dict["value"].array)
            entry.steps.append(Step("const", node, (node.out,), index=len(entry.consts) - 1))
        elif (kind := target.runs_natively(node)) is not None:
            entry.steps.append(Step(kind, node, (node.out,)))
        else:
            # a kernel the target cannot render still defines every value it exports
            entry.fallbacks.append(fallback(node))
            entry.steps.append(Step("fallback", node, tuple(defined_vars(node)),
                                    index=len(entry.fallbacks) - 1))
    return entry


def fallback(node: Node):
    """A callable running ``node`` with numpy (a fused group: all of its results). It takes the
    node's array operands only: its Python scalars (inf and nan among them) stay the node's
    own objects, never spelled as source text. It pickles (a node is data), so a Program can be
    compiled in another process (``runtime/compile_worker.py``)."""
    return _Fallback(node)


class _Fallback:
    """See ``fallback``."""

    def __init__(self, node: Node, donated: bool = False):
        self.node = node
        self.donated = donated  # its op's impl may write into input 0's array
        self.arrays_at = [k for k, x in enumerate(node.inputs) if isinstance(x, Var)]
        self.group = len(defined_vars(node)) > 1  # a fused group with extra outputs
        self.op = ops.OPS[node.op]
        self.attrs = attrs = node.attr_dict
        self.__name__ = f"numpy_{attrs['kernel']}" if self.group else f"numpy_{node.op}"

    def _operands(self, arrays) -> list:
        vals = list(self.node.inputs)
        for k, a in zip(self.arrays_at, arrays, strict=True):
            vals[k] = a
        return vals

    def __call__(self, *arrays):
        if self.group:  # all of the group's results
            from tracejit.runtime.interpret import interpret
            return tuple(interpret(self.attrs["body"], self._operands(arrays)))
        attrs = {**self.attrs, "donated": True} if self.donated else self.attrs
        return ops.compute(self.op, self._operands(arrays), attrs)

    def __reduce__(self):  # the node is all it needs (op rows hold closures: not pickled)
        return (_Fallback, (self.node, self.donated))

    def __repr__(self):
        return f"<fallback {self.__name__}>"
