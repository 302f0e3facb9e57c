"""Code generation (installed as ``tracejit.codegen``): a fused graph becomes target-neutral
plans, then a target's source.

``lower(graph, target="cpu", **options)`` is the one entry. It runs ``LOWERING``, a list of
named steps: ``kernel.py`` plans one kernel per fused group and per unfold/fold/argmax/gather/
scatter_add node, ``entry.py`` plans the entry function's steps (launches, library calls, numpy
fallbacks), ``memory_plan.py`` gives results buffers and storage slots by liveness, and the
target's renderer (``cpu.py``; ``TARGETS`` names each) spells the plans as source.
``TRACEJIT_DEBUG=passes`` prints what each step made. ``prelude`` and ``mathlib`` are the
scalar helpers CPU source calls.

>>> program = lower(fused_graph, target="cpu")                        # doctest: +SKIP
>>> print(program.source)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from .cpu import CpuTarget
from .cuda import CudaTarget
from .entry import EntryPlan, plan_entry
from .kernel import plan_kernels
from .memory_plan import plan_memory
from .program import Lowered, Program

# target name -> its class: built with the lowering's options, it answers the neutral planning's
# questions (entry.Target) and renders the plans. A new target is one more entry.
TARGETS = {"cpu": CpuTarget, "cuda": CudaTarget}


@dataclass
class _Lowering:
    """What the steps of one lowering have made so far."""

    graph: object
    target: object
    kernels: dict | None = None  # value id -> KernelPlan
    entry: EntryPlan | None = None
    program: Program | None = None
    updates: tuple = ()  # (input position, output position): inputs updated in place


def _plan_kernels(s: _Lowering):
    s.kernels = plan_kernels(s.graph)
    return "\n".join(str(p) for p in s.kernels.values())


def _plan_entry(s: _Lowering):
    s.entry = plan_entry(s.graph, s.kernels, s.target)
    return s.entry


def _plan_memory(s: _Lowering):
    # a target that writes inputs' new values into their arrays, or a cat's pieces into the
    # cat's array, says so (CpuTarget)
    return plan_memory(s.entry, s.updates if getattr(s.target, "writes_inputs", False) else (),
                       pieces=getattr(s.target, "places_pieces", False))


def _render(s: _Lowering):
    s.program = s.target.render(s.entry)
    return s.program.source


LOWERING = [
    ("plan_kernels", _plan_kernels,
     "one neutral kernel plan per fused group and per unfold/fold/argmax/gather/scatter_add node"),
    ("plan_entry", _plan_entry,
     "the entry's steps in graph order; identical kernels are launched under one name"),
    ("plan_memory", _plan_memory,
     "intermediates share workspace slots by liveness; nothing an output views is reused; "
     "inputs updated in place are written by their kernel"),
    ("render", _render, "the target spells the plans as source (kernels, then the entry)"),
]


def _debug() -> bool:
    flags = os.environ.get("TRACEJIT_DEBUG", "")
    return "passes" in (f.strip() for f in flags.split(",")) or flags.strip() == "all"


def lower(graph, target: str = "cpu", updates=(), **options) -> Program:
    """Source for a fused graph (``tracejit.passes.fuse``) on ``target``; ``updates``: the
    (input position, output position) pairs of inputs the graph updates in place (a
    CompiledGraph's ``mutated``), whose new values the entry may write into the inputs'
    arrays; ``options`` go to the target (cpu: ``fastmath``, ``precise_math``, ``parallel``;
    cuda: ``fastmath``, ``host_fallback``)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: one of {sorted(TARGETS)}")
    state = _Lowering(graph, TARGETS[target](**options), updates=tuple(map(tuple, updates)))
    debug = _debug()
    for name, step, why in LOWERING:
        made = step(state)
        if debug:
            print(f"tracejit: lowering step {name} ({why})\n{made}", file=sys.stderr)
    return state.program


__all__ = ["lower", "LOWERING", "TARGETS", "Program", "Lowered"]
