"""``export``: trace each entry point for its example arguments and turn its CompiledGraph
into plain data (manifest entries, a JSON graph, ``.npy`` weights). No code is ever written:
loading lowers the IR again (docs/export.md)."""

from __future__ import annotations

import json
import platform

import numpy as np

from .. import serialize
from ..tensor import Tensor, _host_data
from ..tracing import TracedFunction, trace
from ..tracing.pytree import plain
from ..version import __version__
from . import dynamic as dyn
from .format import FORMAT, VERSION, ExportError, npy_bytes, write

IR_SCHEMA = {"name": serialize.FORMAT, "major": serialize.FORMAT_VERSION, "minor": 0}
DEFAULT_ENTRY = "main"


class Exported:
    """What ``tracejit.export`` made: the manifest and the members of a ``.tjit`` file.

    >>> tj.export(model, x).save("model.tjit")                       # doctest: +SKIP
    """

    def __init__(self, manifest: dict, members: dict):
        self.manifest = manifest
        self.members = members

    @property
    def entries(self) -> list:
        return list(self.manifest["entries"])

    def save(self, path) -> None:
        """Write the file (a zip; see docs/export.md for its layout)."""
        write(path, self.manifest, self.members)

    def __repr__(self):
        return f"<Exported: entries {', '.join(self.entries)}; " \
               f"{len(self.manifest['weights'])} weights>"


def export(fn, *example_args, dynamic=None, **example_kwargs) -> Exported:
    """Export ``fn`` (a function, traced or not, or a module) as traced for the example
    arguments, or several entry points: ``export({"predict": (model, (x,)), "train_step":
    (step, (x, y))})`` (a value may add a dict of keyword arguments as a third item; ``dynamic``
    is then a dict per entry name). ``dynamic={"x": {0: "batch"}}`` makes dim 0 of argument
    ``x`` a named symbolic size.

    NOTE: a signature not traced yet is traced now, which runs ``fn`` as its first calls
    would (a training step updates its parameters, once, or twice when its first step creates
    optimizer state): the weights are saved as they are after.
    """
    if isinstance(fn, dict):
        if example_args or example_kwargs:
            raise TypeError("export({...}): example arguments go with each entry point: "
                            "{'name': (fn, (args...)), ...}")
        entries = {}
        for name, value in fn.items():
            if not isinstance(value, tuple) or len(value) not in (2, 3) or \
                    not isinstance(value[1], (tuple, list)):
                raise TypeError(f"export: entry {name!r} must be (fn, (args...)) or "
                                f"(fn, (args...), {{kwargs}}), got {type(value).__name__}")
            entries[name] = (value[0], tuple(value[1]), dict(value[2]) if len(value) == 3
                             else {}, (dynamic or {}).get(name))
        unknown = set(dynamic or {}) - set(entries)
        if unknown:
            raise ExportError(f"export: dynamic names entries that do not exist: "
                              f"{sorted(unknown)}")
    else:
        entries = {DEFAULT_ENTRY: (fn, example_args, example_kwargs, dynamic)}
    builder = _Builder()
    for name, (f, args, kwargs, dynamic_dims) in entries.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ExportError(f"export: entry names are identifiers, got {name!r}")
        builder.add(name, f, args, kwargs, dynamic_dims)
    return builder.finish()


class _Builder:
    def __init__(self):
        self.entries: dict = {}
        self.weights: dict = {}  # name -> manifest entry
        self.members: dict = {}  # member name -> bytes
        self.by_tensor: dict = {}  # id(Tensor) -> weight name: entries share parameters
        # (member, Tensor): written at the end, as a later entry's trace may update weights an
        # earlier one shares (a training step after predict); also keeps their ids unique
        self.keep: list = []

    def add(self, name, fn, args, kwargs, dynamic_dims):
        traced = fn if isinstance(fn, TracedFunction) else trace(fn)
        tree, leaves = traced._flat(args, kwargs)
        # NOTE: the tracing call may change the state it was traced on (an optimizer creates
        # its momentum buffers on its first step): then its next call traces again, and so
        # does export, until the graph matches the state it saves (a few traces at most)
        for _ in range(3):
            spec, _ = traced._lookup(args, kwargs, run=False)
            if spec is None:
                raise ExportError(f"export {name!r}: {traced.name} has no graph for these "
                                  f"arguments (over its specialization limit)")
            captured = spec.fetch_captured(traced.fn, leaves)
            if captured is not None:
                break
        else:
            raise ExportError(f"export {name!r}: {traced.name}'s graph keeps changing the "
                              f"state it was traced on "
                              f"({spec.captured_reason(traced.fn, leaves)})")
        cg = spec.compiled
        where = f"export {name!r} ({cg.name})"
        values = []
        for i, x in enumerate(leaves):
            if isinstance(x, Tensor):
                values.append({"tensor": True})
            else:
                values.append({"tensor": False, "value": _data(x, f"{where}: argument leaf {i}")})
        guards = [{"what": g.what, "value": _data(g.value, f"{where}: guard {g.what}")}
                  for g in cg.guards]
        labels = _labels(traced, args)
        inputs = []
        fresh = iter(captured)
        for s in cg.inputs:
            item = {"name": s.name, "kind": s.kind, "shape": list(s.shape),
                    "dtype": s.dtype.name, "requires_grad": s.requires_grad}
            if s.kind == "argument":
                item["position"] = s.position
                item["label"] = labels.get(s.position, s.name)
            else:
                item["weight"] = self._weight(next(fresh), s.weight or s.name)
            inputs.append(item)
        # NOTE: a dynamic entry keeps its constants inline: the ones whose shape depends on a
        # symbolic size are compared and regenerated in the JSON (see dynamic.py)
        arrays: dict = {}
        graph = serialize.graph_to_dict(cg.optimized, None if dynamic_dims else arrays)
        for key, a in arrays.items():
            self.members[f"consts/{key}.npy"] = npy_bytes(a)
        entry = {
            "function": cg.name,
            "graph": f"entries/{name}.json",
            "in_tree": _data(plain(tree), f"{where}: argument structure"),
            "leaves": values,
            "inputs": inputs,
            "outputs": [{"kind": o.kind, "shape": None if o.shape is None else list(o.shape),
                         "dtype": None if o.dtype is None else o.dtype.name, "input": o.input}
                        for o in cg.outputs],
            "out_tree": _data(cg.out_tree, f"{where}: result structure"),
            "n_results": cg.n_results,
            "mutated": [list(m) for m in cg.mutated],
            "passthrough": [list(p) for p in cg.passthrough],
            "guards": guards,
            "ran_backward": cg.ran_backward,
            "lowering": {"backend": traced.backend, "fastmath": traced.fastmath,
                         "precise_math": traced.precise_math},
            "constants": sorted(f"consts/{key}.npy" for key in arrays),
        }
        if dynamic_dims:
            entry["dynamic"] = dyn.infer(traced, args, kwargs, dynamic_dims, cg, graph, where)
        self.members[entry["graph"]] = json.dumps(graph, allow_nan=False).encode()
        self.entries[name] = entry

    def _weight(self, t: Tensor, name: str) -> str:
        known = self.by_tensor.get(id(t))
        if known is not None:
            return known
        base, k = name, 1
        while name in self.weights:
            k += 1
            name = f"{base}#{k}"
        member = f"weights/{len(self.weights)}.npy"
        self.weights[name] = {"member": member, "shape": list(t.shape), "dtype": t.dtype.name,
                              "requires_grad": bool(t.requires_grad)}
        self.by_tensor[id(t)] = name
        self.keep.append((member, t))
        return name

    def finish(self) -> Exported:
        import numba

        for member, t in self.keep:
            self.members[member] = npy_bytes(np.asarray(_host_data(t)))  # CUDA: a host copy
        manifest = {
            "format": FORMAT, "version": VERSION, "ir": IR_SCHEMA,
            "writer": {"tracejit": __version__, "numpy": np.__version__,
                       "numba": numba.__version__, "python": platform.python_version()},
            "entries": self.entries, "weights": self.weights,
        }
        return Exported(manifest, self.members)


def _labels(traced, args) -> dict:
    """Flat leaf position -> the parameter's name, for tensor arguments passed as themselves,
    for messages: a module's graph inputs are named after ``__call__(*args)`` (``arg0``), its
    ``forward`` names them (``x``)."""
    import inspect

    from ..tracing.pytree import flatten

    fn = getattr(getattr(traced, "module", None), "forward", None) or traced.fn
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return {}
    labels, position = {}, 0
    for i, a in enumerate(args):
        leaves: list = []
        flatten(a, leaves)
        if isinstance(a, Tensor) and i < len(params):
            labels[position] = params[i]
        position += len(leaves)
    return labels


def _data(value, where: str):
    """``value`` as plain data, or an ExportError naming what cannot be recorded."""
    try:
        return serialize.value_to_data(value)
    except serialize.SerializeError as e:
        raise ExportError(f"{where}: the graph depends on Python state that cannot be "
                          f"recorded in a file ({e}); pass it as a tensor argument, or make it "
                          f"a number, string or tuple") from None
