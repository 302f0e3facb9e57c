"""The IR: a flat SSA graph of frozen nodes that prints like a jaxpr.

>>> print(graph)                                          # doctest: +SKIP
graph(x: f32[2,3], w: f32[3,4]):
  %0: f32[2,4] = matmul x, w
  %1: f32[2,4] = relu %0
  return %1

Every value is a ``Var`` (id, shape, dtype, device); a ``Node`` computes one Var from input Vars
and Python scalars with an op from the op table and hashable attributes, and remembers the user
source line that created it. Constants are ``const`` nodes whose value is a ``Const`` (an
array compared and hashed by content), so a graph's content hash covers them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_SHORT = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "bool"}


def type_str(shape, dtype) -> str:
    return f"{_SHORT.get(np.dtype(dtype).name, np.dtype(dtype).name)}[{','.join(map(str, shape))}]"


class Const:
    """An array held by a ``const`` node: immutable, compared and hashed by content."""

    __slots__ = ("array", "digest")

    def __init__(self, array):
        a = np.array(array)  # a private copy
        a.flags.writeable = False
        self.array = a
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        self.digest = h.hexdigest()

    def __eq__(self, other):
        return isinstance(other, Const) and other.digest == self.digest

    def __hash__(self):
        return hash(self.digest)

    def __repr__(self):
        a = self.array
        if a.size <= 4:
            return np.array2string(a, separator=",").replace("\n", "")
        return f"<{type_str(a.shape, a.dtype)} {self.digest[:8]}>"


@dataclass(frozen=True)
class Var:
    """An SSA value: ``%id`` (or a graph input's name) with its static type."""

    id: int
    shape: tuple
    dtype: np.dtype
    device: str = "cpu"

    @property
    def type(self) -> str:
        return type_str(self.shape, self.dtype)


@dataclass(frozen=True)
class Node:
    out: Var
    op: str
    inputs: tuple  # Var or Python scalar
    attrs: tuple = ()  # sorted (name, value) pairs, all hashable
    loc: str = field(default="", compare=False)  # the user's file:line; not part of identity

    @property
    def attr_dict(self) -> dict:
        return dict(self.attrs)


def defined_vars(node: Node) -> tuple:
    """The Vars a node defines: its ``out``, plus a multi-output kernel's other results (the
    ``outputs`` attribute of a ``fused`` node)."""
    if node.op == "fused" and node.attrs and node.attrs[-1][0] == "outputs":
        return (node.out,) + node.attrs[-1][1]
    return (node.out,)


def freeze_attrs(attrs: dict) -> tuple:
    return tuple(sorted(attrs.items()))


@dataclass(frozen=True)
class Graph:
    """Inputs (with display names), nodes in dependency order, and outputs."""

    inputs: tuple  # Var
    input_names: tuple  # str, one per input
    nodes: tuple  # Node
    outputs: tuple  # Var or Python scalar

    # ------------------------------------------------------------------ queries
    def names(self) -> dict:
        """Display name of every Var id: graph inputs by name, the rest as %n."""
        names = {v.id: n for v, n in zip(self.inputs, self.input_names)}
        for node in self.nodes:
            for v in defined_vars(node):
                names[v.id] = f"%{v.id}"
        return names

    def producers(self) -> dict:
        return {v.id: n for n in self.nodes for v in defined_vars(n)}

    def users(self) -> dict:
        """Var id -> number of uses by nodes and outputs."""
        count: dict = {}
        for node in self.nodes:
            for x in node.inputs:
                if isinstance(x, Var):
                    count[x.id] = count.get(x.id, 0) + 1
        for x in self.outputs:
            if isinstance(x, Var):
                count[x.id] = count.get(x.id, 0) + 1
        return count

    def op_counts(self) -> dict:
        counts: dict = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self.nodes)

    # ------------------------------------------------------------------ printing
    def format(self, locs: bool = False) -> str:
        names = self.names()

        def ref(x):
            return names[x.id] if isinstance(x, Var) else repr(x)

        params = ", ".join(f"{n}: {v.type}" for v, n in zip(self.inputs, self.input_names))
        lines = [f"graph({params}):"]
        for node in self.nodes:
            attrs = ""
            if node.op == "fused":  # a kernel prints as its name and the ops it computes
                d = node.attr_dict
                ops_in = " ".join(dict.fromkeys(n.op for n in d["body"].nodes))
                attrs = f"[{d['kernel'].split('_')[0]}: {ops_in}]"
            elif node.attrs:
                attrs = "[" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in node.attrs) + "]"
            args = ", ".join(ref(x) for x in node.inputs)
            binders = ", ".join(f"{names[v.id]}: {v.type}" for v in defined_vars(node))
            line = f"  {binders} = {node.op}{attrs}"
            if args:
                line += " " + args
            if locs and node.loc:
                line += f"    # {node.loc}"
            lines.append(line)
        lines.append("  return " + ", ".join(ref(x) for x in self.outputs))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"<Graph: {len(self.inputs)} inputs, {len(self.nodes)} nodes, " \
               f"{len(self.outputs)} outputs>"

    def to_dot(self) -> str:
        """Graphviz DOT text of the dataflow."""
        names = self.names()
        out = ["digraph tracejit {", "  rankdir=TB;", '  node [shape=box, fontname="monospace"];']
        for v, n in zip(self.inputs, self.input_names):
            out.append(f'  v{v.id} [label="{n}\\n{v.type}", shape=ellipse];')
        for node in self.nodes:
            label = f"{names[node.out.id]} = {node.op}\\n{node.out.type}"
            out.append(f'  v{node.out.id} [label="{label}"];')
            for x in node.inputs:
                if isinstance(x, Var):
                    out.append(f"  v{x.id} -> v{node.out.id};")
        for i, x in enumerate(self.outputs):
            out.append(f'  out{i} [label="output {i}", shape=ellipse];')
            if isinstance(x, Var):
                out.append(f"  v{x.id} -> out{i};")
        out.append("}")
        return "\n".join(out)

    def to_svg(self) -> str:
        """SVG of ``to_dot()``, drawn by Graphviz's ``dot`` program (RuntimeError without it)."""
        return render_svg(self.to_dot())

    # ------------------------------------------------------------------ identity
    def content_hash(self) -> str:
        """A hash of what the graph computes (ops, types, attributes, constants, wiring),
        independent of Var numbering and source locations."""
        renumber = {v.id: i for i, v in enumerate(self.inputs)}
        h = hashlib.sha256()
        for v in self.inputs:
            h.update(f"in {v.type} {v.device};".encode())
        for node in self.nodes:
            args = ",".join(f"%{renumber[x.id]}" if isinstance(x, Var) else _scalar_key(x)
                            for x in node.inputs)
            for v in defined_vars(node):
                renumber[v.id] = len(renumber)
            h.update(f"{node.op}[{_attr_key(node.attrs)}]({args})->{node.out.type};".encode())
        outs = ",".join(f"%{renumber[x.id]}" if isinstance(x, Var) else _scalar_key(x)
                        for x in self.outputs)
        h.update(f"out({outs})".encode())
        return h.hexdigest()


def render_svg(dot_text: str) -> str:
    """DOT text drawn as SVG by Graphviz's ``dot`` program, which must be on PATH."""
    import shutil
    import subprocess

    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError("drawing SVG needs Graphviz's `dot` program on PATH (install "
                           "graphviz); Graph.to_dot() gives the DOT text without it")
    done = subprocess.run([exe, "-Tsvg"], input=dot_text, capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dot failed: {done.stderr.strip()}")
    return done.stdout


def _scalar_key(x) -> str:
    return f"{type(x).__name__}:{x!r}"


def _attr_key(attrs) -> str:
    # NOTE: a fused node's body is a Graph, whose repr only counts its nodes: hash its content
    return ";".join(f"{k}={v.digest if isinstance(v, Const) else v.content_hash()}"
                    if isinstance(v, (Const, Graph)) else f"{k}={v!r}" for k, v in attrs)


def _fmt_attr(v) -> str:
    if isinstance(v, np.dtype):
        return _SHORT.get(v.name, v.name)
    return repr(v)


class GraphBuilder:
    """Appends nodes with fresh Var ids; ``build`` freezes the result."""

    def __init__(self):
        self.inputs: list = []
        self.input_names: list = []
        self.nodes: list = []
        self._next = 0

    def new_var(self, shape, dtype, device="cpu") -> Var:
        v = Var(self._next, tuple(int(s) for s in shape), np.dtype(dtype), device)
        self._next += 1
        return v

    def add_input(self, name: str, shape, dtype) -> Var:
        v = self.new_var(shape, dtype)
        self.inputs.append(v)
        self.input_names.append(name)
        return v

    def add_node(self, op: str, inputs, attrs: dict, shape, dtype, loc: str = "") -> Var:
        v = self.new_var(shape, dtype)
        self.nodes.append(Node(v, op, tuple(inputs), freeze_attrs(attrs), loc))
        return v

    def build(self, outputs) -> Graph:
        return Graph(tuple(self.inputs), tuple(self.input_names), tuple(self.nodes),
                     tuple(outputs))


def rebuild(graph: Graph, nodes, outputs=None) -> Graph:
    """A copy of ``graph`` with new nodes (and outputs)."""
    return Graph(graph.inputs, graph.input_names, tuple(nodes),
                 graph.outputs if outputs is None else tuple(outputs))


def substitute(x: Any, mapping: dict):
    """Replace a Var by its mapping (if any); scalars pass through."""
    if isinstance(x, Var):
        return mapping.get(x.id, x)
    return x
