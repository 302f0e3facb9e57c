"""``python -m tracejit show|run|dot|svg|bench FILE``: look into and run exported files."""

from __future__ import annotations

import argparse
import shutil
import sys
import time

import numpy as np

from ..ir import Graph, Var, type_str


def add_commands(sub) -> None:
    """Register the subcommands on ``__main__``'s parser."""
    p = sub.add_parser("show", help="an exported file: entries, specs, weights and IR")
    p.add_argument("file")
    p.add_argument("--fused", action="store_true", help="print the fused graph that runs")
    p = sub.add_parser("run", help="run an entry of an exported file on .npy inputs")
    p.add_argument("file")
    p.add_argument("--entry", help="the entry point (needed when there are several)")
    p.add_argument("--input", action="append", default=[], metavar="X.npy",
                   help="one per tensor argument, in order")
    p.add_argument("--output", metavar="OUT.npz", help="save the results (out0, out1, ...)")
    p = sub.add_parser("dot", help="Graphviz DOT of an entry's graph, kernels as clusters")
    p.add_argument("file")
    p.add_argument("--entry")
    p = sub.add_parser("svg", help="an entry's graph as SVG (needs Graphviz's dot)")
    p.add_argument("file")
    p.add_argument("--entry")
    p.add_argument("-o", "--output", required=True, metavar="G.svg")
    p = sub.add_parser("bench", help="median time of a call on random inputs")
    p.add_argument("file")
    p.add_argument("--entry")
    p.add_argument("--repeat", type=int, default=20)


def main(args) -> int:
    from . import ExportError, load

    try:
        loaded = load(args.file)
        return COMMANDS[args.command](loaded, args)
    except (ExportError, KeyError, ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _entry(loaded, args):
    name = getattr(args, "entry", None)
    if name is None:
        if len(loaded.entries) != 1:
            raise ValueError(f"{loaded.path} has several entries ({', '.join(loaded.entries)}):"
                             f" pick one with --entry")
        name = loaded.entries[0]
    return loaded[name]


def show(loaded, args) -> int:
    m = loaded.manifest
    w = m["writer"]
    print(f"{loaded.path}: tracejit export v{m['version']}, IR {m['ir']['major']}."
          f"{m['ir']['minor']}, written by tracejit {w.get('tracejit')} (numpy "
          f"{w.get('numpy')}, numba {w.get('numba')})")
    state = loaded.state_dict()
    total = sum(t._data.size for t in state.values())
    nbytes = sum(t._data.nbytes for t in state.values())
    print(f"weights: {len(state)} tensors, {total} values, {nbytes / 1024:.1f} KiB")
    for name, t in state.items():
        print(f"  {name}: {type_str(t.shape, t.dtype)}")
    for name in loaded.entries:
        e = loaded[name]
        raw = m["entries"][name]
        backward = " runs its own backward" if raw["ran_backward"] else ""
        print(f"\nentry {name} ({e.function}){backward}")
        print("  inputs:")
        for iname, kind, pos, shape, dtype in e.inputs:
            what = f"argument {pos}" if kind == "argument" else f"weight {pos}"
            if kind == "argument" and e.labels.get(iname, iname) != iname:
                what += f" ({e.labels[iname]})"
            print(f"    {iname}: {type_str(shape, dtype)}  {what}")
        print("  outputs:")
        for k, (kind, x) in enumerate(zip(e.outputs, e.graph.outputs)):
            typ = x.type if isinstance(x, Var) else repr(x)
            target = ""
            if raw["outputs"][k]["input"] is not None:
                target = f" of {e.inputs[raw['outputs'][k]['input']][0]}"
            print(f"    {k}: {typ}  {kind}{target}")
        if e.dynamic:
            dims = ", ".join(f"{a}[{d}] = {s}" for a, d, s in e.dynamic["dims"])
            print(f"  symbolic sizes: {dims} (exported with {e.dynamic['symbols']})")
        print("  guards (recorded values):" if e.guards else "  guards: none")
        for what, value in e.guards:
            print(f"    {what} == {value!r}")
        graph = e._runners[()][0] if args.fused else e.graph
        print("  " + str(graph).replace("\n", "\n  "))
    return 0


def run(loaded, args) -> int:
    from .. import Tensor
    from ..tracing.pytree import flatten
    from .trees import build_tree

    e = _entry(loaded, args)
    n_tensors = sum(1 for is_tensor, _ in e.leaves if is_tensor)
    if len(args.input) != n_tensors:
        raise ValueError(f"entry {e.name} takes {n_tensors} tensor arguments, got "
                         f"{len(args.input)} --input files")
    arrays = iter([np.load(p, allow_pickle=False) for p in args.input])
    leaves = [Tensor._make(np.array(next(arrays))) if is_tensor else value
              for is_tensor, value in e.leaves]
    call_args, call_kwargs = build_tree(e.in_tree, iter(leaves))
    result = e(*call_args, **call_kwargs)
    outs: list = []
    flatten(result, outs)
    named = {f"out{k}": o._data if isinstance(o, Tensor) else np.asarray(o)
             for k, o in enumerate(outs)}
    if args.output:
        np.savez(args.output, **named)
    for k, a in named.items():
        print(f"{k}: {type_str(a.shape, a.dtype)}" + (f" = {a.tolist()!r:.200}"
                                                     if a.size <= 16 else ""))
    return 0


def dot_text(graph: Graph) -> str:
    """DOT of a fused graph: each kernel a cluster holding the nodes it computes."""
    names = graph.names()
    out = ["digraph tracejit {", "  rankdir=TB;", '  node [shape=box, fontname="monospace"];']
    for v, n in zip(graph.inputs, graph.input_names):
        out.append(f'  v{v.id} [label="{n}\\n{v.type}", shape=ellipse];')
    for k, node in enumerate(graph.nodes):
        label = f"{names[node.out.id]} = {node.op}\\n{node.out.type}"
        if node.op == "fused":
            body = node.attr_dict["body"]
            kernel = node.attr_dict.get("kernel", f"k{k}")
            out.append(f"  subgraph cluster_{k} {{")
            out.append(f'    label="{kernel}"; style=rounded; color=blue;')
            for j, inner in enumerate(body.nodes):
                out.append(f'    c{k}_{j} [label="{inner.op}\\n{inner.out.type}"];')
            ids = {n.out.id: j for j, n in enumerate(body.nodes)}
            for j, inner in enumerate(body.nodes):
                for x in inner.inputs:
                    if isinstance(x, Var) and x.id in ids:
                        out.append(f"    c{k}_{ids[x.id]} -> c{k}_{j};")
            out.append(f'    v{node.out.id} [label="{label}", shape=point];')
            if body.nodes:
                out.append(f"    c{k}_{len(body.nodes) - 1} -> v{node.out.id};")
            out.append("  }")
            first = f"c{k}_0" if body.nodes else f"v{node.out.id}"
        else:
            out.append(f'  v{node.out.id} [label="{label}"];')
            first = f"v{node.out.id}"
        for x in node.inputs:
            if isinstance(x, Var):
                out.append(f"  v{x.id} -> {first};")
    for i, x in enumerate(graph.outputs):
        out.append(f'  out{i} [label="output {i}", shape=ellipse];')
        if isinstance(x, Var):
            out.append(f"  v{x.id} -> out{i};")
    out.append("}")
    return "\n".join(out)


def dot(loaded, args) -> int:
    print(dot_text(_entry(loaded, args)._runners[()][0]))
    return 0


def svg(loaded, args) -> int:
    from ..ir import render_svg

    if shutil.which("dot") is None:
        print("error: svg needs Graphviz's `dot` program, which is not on PATH (install "
              "graphviz, e.g. apt-get install graphviz); `python -m tracejit dot FILE` prints "
              "the DOT text without it", file=sys.stderr)
        return 3
    with open(args.output, "w") as f:
        f.write(render_svg(dot_text(_entry(loaded, args)._runners[()][0])))
    print(f"wrote {args.output}")
    return 0


def random_inputs(entry, seed: int = 0) -> list:
    """Arguments of the recorded shapes: normal floats, zeros for integers and bools (valid
    class labels and indices)."""
    from .. import Tensor
    from .trees import build_tree

    rng = np.random.default_rng(seed)
    shapes = {pos: (shape, dtype) for _, kind, pos, shape, dtype in entry.inputs
              if kind == "argument"}
    leaves = []
    for k, (is_tensor, value) in enumerate(entry.leaves):
        if not is_tensor:
            leaves.append(value)
            continue
        shape, dtype = shapes[k]
        a = rng.standard_normal(shape) if dtype.kind == "f" else np.zeros(shape)
        leaves.append(Tensor._make(a.astype(dtype)))
    return build_tree(entry.in_tree, iter(leaves))


def bench(loaded, args) -> int:
    e = _entry(loaded, args)
    call_args, call_kwargs = random_inputs(e)
    t0 = time.perf_counter()
    e(*call_args, **call_kwargs)  # compiles, or loads machine code from the cache
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(args.repeat, 1)):
        t0 = time.perf_counter()
        e(*call_args, **call_kwargs)
        times.append(time.perf_counter() - t0)
    print(f"{e.name}: first call {first * 1e3:.1f} ms, median {np.median(times) * 1e3:.3f} ms "
          f"over {len(times)} calls")
    return 0


COMMANDS = {"show": show, "run": run, "dot": dot, "svg": svg, "bench": bench}


def parser() -> argparse.ArgumentParser:  # for tests: the subcommands alone
    p = argparse.ArgumentParser(prog="python -m tracejit")
    add_commands(p.add_subparsers(dest="command", required=True))
    return p
