"""What lowering hands the runtime: a target's generated source and what to call it with."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Program:
    """Generated source and what the runtime passes to its entry function
    (``runtime/compile.py`` ``Runner``)."""

    source: str
    entry: str  # the entry function's name in the module
    sizes: tuple  # the concrete values of sz[...]
    consts: list  # arrays passed after the graph inputs
    fallbacks: list  # callables the Python entry uses for nodes no kernel runs
    jit_entry: bool  # the entry itself is compiled (one dispatch) or plain Python
    kernels: list = field(default_factory=list)  # kernel names, in source order
    buffers: list = field(default_factory=list)  # memory_plan.Buffer, in entry-parameter order
    written: tuple = ()  # graph input positions whose array the entry writes a new value into


Lowered = Program  # the name the runtime and older code use
