"""``load``: a ``.tjit`` file back as callables on Tensors, rebuilt from the IR.

Everything read from the file is data checked against a closed set of shapes and types: the
manifest's fields here, graphs by ``tracejit.serialize`` (every op must be in the op table) and
the IR verifier; then the graph is fused, lowered and compiled by this tracejit, exactly as a
trace would be (the compile cache makes a second load of the same file fast)."""

from __future__ import annotations

import numpy as np

from .. import serialize
from ..runtime import arrays as A
from ..runtime.executor import aliased_mutations, write_mutations
from ..tensor import Tensor, _check_device
from ..tracing.pytree import flatten, plain
from . import dynamic as dyn
from .checks import Check, check_dynamic, check_versions, tree_leaves
from .format import FORMAT, ExportError, Reader, parse_json
from .trees import build_tree


class Loaded:
    """An exported file, loaded: call it (one entry point), index it or use attributes
    (``loaded["train_step"](x, y)``, ``loaded.predict(x)``); the weights are shared by all
    entries and updated in place by calls that update them (a training step).

    >>> m = tj.load("model.tjit"); y = m(x)                            # doctest: +SKIP
    """

    def __init__(self, reader: Reader, device: str = "cpu"):
        m = reader.manifest
        c = Check(reader.path)
        self.path = reader.path
        self.manifest = m
        check_versions(reader.path, m)
        self._weights: dict = {}
        for name, w in c.field(m, "weights", (dict,), "").items():
            where = f"weights[{name!r}]"
            dtype = c.dtype(c.field(w, "dtype", (str,), where), where)
            shape = c.shape(c.field(w, "shape", (list,), where), where)
            a = reader.array(c.field(w, "member", (str,), where), dtype, shape)
            w = Tensor._make(np.array(a))  # writable, owned
            self._weights[name] = w.cuda() if device != "cpu" else w
        self._entries = {}
        for name, e in c.field(m, "entries", (dict,), "").items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ExportError(f"{reader.path}: entry name {name!r:.40} is not an identifier")
            self._entries[name] = Entry(name, e, reader, self._weights, c, device)
        reader.check_all_read()

    # -- entry points
    @property
    def entries(self) -> list:
        return list(self._entries)

    def __getitem__(self, name: str) -> "Entry":
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self.path} has no entry {name!r} (entries: "
                           f"{', '.join(self._entries)})") from None

    def __getattr__(self, name: str):
        entries = self.__dict__.get("_entries", {})
        if name in entries:
            return entries[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or entry {name!r}")

    def __call__(self, *args, **kwargs):
        if len(self._entries) != 1:
            raise TypeError(f"{self.path} has several entries ({', '.join(self._entries)}): "
                            f"call one, e.g. loaded[{self.entries[0]!r}](...)")
        return next(iter(self._entries.values()))(*args, **kwargs)

    # -- weights
    def state_dict(self) -> dict:
        """The stored weights by name (the tensors themselves: calls update them in place)."""
        return dict(self._weights)

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy values into the stored weights (same shapes and dtypes)."""
        missing = set(self._weights) - set(state)
        unexpected = set(state) - set(self._weights)
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing {sorted(missing)}, unexpected "
                           f"{sorted(unexpected)}")
        for name, value in state.items():
            if name not in self._weights:
                continue
            t = self._weights[name]
            a = value._data if isinstance(value, Tensor) else np.asarray(value)
            if tuple(a.shape) != t.shape:
                raise ValueError(f"load_state_dict: {name} has shape {tuple(a.shape)}, the "
                                 f"stored weight {t.shape}")
            if not np.can_cast(a.dtype, t.dtype, "same_kind"):
                raise TypeError(f"load_state_dict: {name} is {a.dtype}, the stored weight "
                                f"{t.dtype}")
            A.copy_into(t._data, a)  # on either device
            t._version[0] += 1

    def __repr__(self):
        return f"<Loaded {self.path}: entries {', '.join(self._entries)}; " \
               f"{len(self._weights)} weights>"


class Entry:
    """One loaded entry point: takes and returns what the traced function did."""

    def __init__(self, name, e, reader, weights, c: Check, device):
        where = f"entries[{name!r}]"
        self.name = name
        self.function = c.field(e, "function", (str,), where)
        self.in_tree = c.value(c.field(e, "in_tree", (list, str), where), f"{where}.in_tree")
        self.out_tree = c.value(c.field(e, "out_tree", (list, str), where), f"{where}.out_tree")
        self.leaves = []
        for i, leaf in enumerate(c.field(e, "leaves", (list,), where)):
            here = f"{where}.leaves[{i}]"
            if c.field(leaf, "tensor", (bool,), here):
                self.leaves.append((True, None))
            else:
                self.leaves.append((False, c.value(c.field(leaf, "value", (object,), here),
                                                   here)))
        self.inputs = []  # (name, kind, position or weight name, shape, dtype)
        self.labels = {}  # argument input name -> the name messages use
        for i, s in enumerate(c.field(e, "inputs", (list,), where)):
            here = f"{where}.inputs[{i}]"
            kind = c.field(s, "kind", (str,), here)
            shape = c.shape(c.field(s, "shape", (list,), here), here)
            dtype = c.dtype(c.field(s, "dtype", (str,), here), here)
            if kind == "argument":
                pos = c.field(s, "position", (int,), here)
                if not 0 <= pos < len(self.leaves) or not self.leaves[pos][0]:
                    raise ExportError(f"{reader.path}: manifest {here}: bad position {pos}")
            elif kind == "captured":
                pos = c.field(s, "weight", (str,), here)
                w = weights.get(pos)
                if w is None or w.shape != shape or w.dtype != dtype:
                    raise ExportError(f"{reader.path}: manifest {here}: weight {pos!r} is "
                                      f"missing or not {dtype}{list(shape)}")
            else:
                raise ExportError(f"{reader.path}: manifest {here}: unknown kind {kind!r:.40}")
            self.inputs.append((c.field(s, "name", (str,), here), kind, pos, shape, dtype))
            if kind == "argument":  # how messages name it (a module's forward parameter)
                self.labels[self.inputs[-1][0]] = c.typed(s.get("label", self.inputs[-1][0]),
                                                          (str,), f"{here}.label")
        self.n_results = c.field(e, "n_results", (int,), where)
        # the trees are rebuilt on every call: check them now, so a hostile tree fails here
        if tree_leaves(self.in_tree, c, f"{where}.in_tree") != len(self.leaves) or \
                tree_leaves(self.out_tree, c, f"{where}.out_tree") != self.n_results:
            raise ExportError(f"{reader.path}: manifest {where}: the argument or result "
                              f"structure does not match the number of leaves")
        self.mutated = [tuple(c.typed(m, (list,), f"{where}.mutated")) for m in
                        c.field(e, "mutated", (list,), where)]
        self.passthrough = [tuple(c.typed(p, (list,), f"{where}.passthrough")) for p in
                            c.field(e, "passthrough", (list,), where)]
        self.guards = [(c.field(g, "what", (str,), f"{where}.guards"),
                        c.value(c.field(g, "value", (object,), f"{where}.guards"),
                                f"{where}.guards")) for g in c.field(e, "guards", (list,), where)]
        self.outputs = [(c.field(o, "kind", (str,), f"{where}.outputs")) for o in
                        c.field(e, "outputs", (list,), where)]
        low = c.field(e, "lowering", (dict,), where)
        self.options = {"fastmath": c.field(low, "fastmath", (bool,), f"{where}.lowering"),
                        "precise_math": c.field(low, "precise_math", (bool,),
                                                f"{where}.lowering")}
        arrays = {}
        for member in c.field(e, "constants", (list,), where):
            c.typed(member, (str,), f"{where}.constants")
            key = member.removeprefix("consts/").removesuffix(".npy")
            arrays[key] = reader.array(member)
        self.arrays = arrays
        self.graph_dict = parse_json(reader.member(c.field(e, "graph", (str,), where)),
                                     f"{reader.path}: {e['graph']}")
        self.where = f"{reader.path}: entry {name!r}"
        self.dynamic = check_dynamic(e.get("dynamic"), self, c, where)
        self.device = device
        self._weights = weights  # shared by all entries of the file
        graph = self._build(self.graph_dict)
        self._check_io(graph)
        self.graph = graph  # the unfused graph at the example sizes, as stored
        self.aliased = aliased_mutations(graph, self.mutated)
        self._runners = {}  # symbol sizes -> (fused graph, lowered, runner)
        self._runners[()] = self._compile(graph)

    # -- building
    def _build(self, graph_dict):
        from ..passes import IRError, verify

        try:
            graph = serialize.graph_from_dict(graph_dict, self.arrays)
        except serialize.SerializeError as e:
            raise ExportError(f"{self.where}: {e}") from None
        try:
            verify(graph)
        except IRError as e:
            raise ExportError(f"{self.where}: the graph does not verify: {e}") from None
        return graph

    def _check_io(self, graph):
        if len(graph.inputs) != len(self.inputs) or len(graph.outputs) != len(self.outputs):
            raise ExportError(f"{self.where}: the graph's inputs or outputs do not match the "
                              f"manifest's specs")
        for v, (name, _, _, shape, dtype) in zip(graph.inputs, self.inputs):
            if v.shape != shape or v.dtype != dtype:
                raise ExportError(f"{self.where}: input {name} is {v.type} in the graph, "
                                  f"{dtype}{list(shape)} in the manifest")
        n = len(self.outputs)
        if not 0 <= self.n_results <= n or any(
                len(m) != 2 or not all(type(i) is int for i in m) or
                not (0 <= m[0] < len(self.inputs) and self.n_results <= m[1] < n)
                for m in self.mutated) or any(
                len(p) != 2 or not all(type(i) is int for i in p) or
                not (0 <= p[0] < self.n_results and 0 <= p[1] < len(self.inputs))
                for p in self.passthrough):
            raise ExportError(f"{self.where}: malformed result or in-place update positions")

    def _compile(self, graph):
        from ..codegen import lower
        from ..passes import COMPILE_PIPELINE, run_pipeline

        fused = run_pipeline(graph, COMPILE_PIPELINE)
        if self.device != "cpu":
            from ..runtime.cuda_runner import compile_cuda
            lowered = lower(fused, target="cuda", **self.options)
            return fused, lowered, compile_cuda(lowered)
        from ..runtime.compile import compile_lowered
        lowered = lower(fused, target="cpu", updates=self.mutated, **self.options)
        return fused, lowered, compile_lowered(lowered)

    def _runner(self, sizes: dict):
        if not sizes or sizes == self.dynamic["symbols"]:
            return self._runners[()]
        key = tuple(sorted(sizes.items()))
        got = self._runners.get(key)
        if got is None:
            graph = self._build(dyn.instantiate(self.graph_dict, self.dynamic, sizes))
            got = self._runners[key] = self._compile(graph)
        return got

    # -- calling
    def __call__(self, *args, **kwargs):
        leaves: list = []
        tree = plain(flatten((args, kwargs), leaves))
        if tree != self.in_tree:
            raise TypeError(f"{self.name}: the arguments' structure {tree!r} is not the exported "
                            f"one {self.in_tree!r}")
        for i, (x, (is_tensor, value)) in enumerate(zip(leaves, self.leaves)):
            if is_tensor != isinstance(x, Tensor) or (not is_tensor and (
                    type(x) is not type(value) or x != value)):
                want = "a tensor" if is_tensor else f"{value!r} (exported for this value)"
                raise TypeError(f"{self.name}: argument leaf {i} must be {want}, got {x!r:.60}")
        sizes = self._check_shapes(leaves)
        fused, _, runner = self._runner(sizes)
        inputs = [leaves[pos] if kind == "argument" else self._weights[pos]
                  for _, kind, pos, _, _ in self.inputs]
        arrays = [t._data for t in inputs]
        try:
            outs = runner(*arrays)
        except Exception as e:
            outs = self._explain(e, sizes, arrays)
        write_mutations(self.mutated, inputs, outs, self.aliased)  # as the traced function
        results = [Tensor._make(o) if not _is_value(x) else x
                   for o, x in zip(outs[:self.n_results], fused.outputs)]
        for pos, inp in self.passthrough:
            results[pos] = inputs[inp]
        return build_tree(self.out_tree, iter(results))

    def _explain(self, exc, sizes, arrays):
        """The compiled code raised: the reference interpreter runs the unfused graph and
        raises the failing node's error (as a live traced function does, runtime/executor.py).
        A compile failure (a tracejit bug) runs on the interpreter instead, with a warning."""
        import warnings

        from ..runtime.backward import interpret_runner
        from ..runtime.compile import CompileError
        from ..runtime.interpret import GraphRuntimeError

        graph = self.graph if not sizes or sizes == self.dynamic["symbols"] else self._build(
            dyn.instantiate(self.graph_dict, self.dynamic, sizes))
        if isinstance(exc, CompileError):
            warnings.warn(f"tracejit: compiling {self.name} failed, it runs on the reference "
                          f"interpreter instead: {exc}", RuntimeWarning, stacklevel=3)
            return interpret_runner(graph)(*arrays)
        from .. import creation

        rng = creation._rng().bit_generator
        state = rng.state  # the re-run draws nothing: the generator is put back
        try:
            interpret_runner(graph)(*arrays)  # NOTE: compiled graphs never write their inputs
        except GraphRuntimeError as e:
            raise e.with_traceback(None) from exc
        finally:
            rng.state = state
        raise exc

    def _check_shapes(self, leaves) -> dict:
        dims = {}
        if self.dynamic:
            for arg, dim, sym in self.dynamic["dims"]:
                dims[(arg, dim)] = sym
        shapes = {}
        for name, kind, pos, shape, dtype in self.inputs:
            if kind != "argument":
                continue
            t = leaves[pos]
            label = self.labels.get(name, name)
            if str(t.device) != self.device:
                raise RuntimeError(f"{self.name}: argument {label!r} is on {t.device}, this "
                                   f"entry was loaded for {self.device} (tracejit.load(..., "
                                   f"device=...)); move it with .to({self.device!r})")
            if t.dtype != dtype:
                raise TypeError(f"{self.name}: argument {label!r} must be {dtype}, got {t.dtype}")
            ok = len(t.shape) == len(shape) and all(
                n == m or (name, d) in dims for d, (n, m) in enumerate(zip(t.shape, shape)))
            if not ok:
                want = [dims.get((name, d), m) for d, m in enumerate(shape)]
                shown = f"[{', '.join(map(str, want))}]"
                if len(t.shape) != len(shape):
                    raise ValueError(f"{self.name}: argument {label!r} must have shape {shown} "
                                     f"({len(shape)} dims), got {list(t.shape)}")
                d = next(d for d, (n, m) in enumerate(zip(t.shape, shape))
                         if n != m and (name, d) not in dims)
                raise ValueError(f"{self.name}: argument {label!r} dim {d} must be {shape[d]} "
                                 f"(shape {shown}), got {t.shape[d]} (shape {list(t.shape)})")
            shapes[name] = t.shape
        return dyn.bind(self.dynamic, shapes, self.name, self.labels) if self.dynamic else {}

    def __repr__(self):
        return f"<exported entry {self.name} ({self.function})>"


def _is_value(x) -> bool:
    from ..ir import Var
    return not isinstance(x, Var)


def load(path, device: str = "cpu"):
    """Load a file ``tracejit.export`` wrote: a ``Loaded`` (see its docstring). With
    ``device="cuda"`` its weights move to the GPU and its graphs compile to CUDA kernels; calls
    then take CUDA tensors.

    The file's manifest names its format; only exported graphs load today."""
    device = str(_check_device(device or "cpu", "tracejit.load"))
    reader = Reader(path)
    try:
        fmt = reader.manifest.get("format")
        loader = LOADERS.get(fmt) if isinstance(fmt, str) else None
        if loader is None:
            raise ExportError(f"{path}: this file's format is {fmt!r:.60}; only exported graphs "
                              f"({FORMAT!r}, written by tracejit.export) load here (tj.load "
                              f"also reads checkpoints, from tj.save)")
        return loader(reader, device)
    finally:
        reader.close()


# format name (the manifest's "format") -> loader(reader, device): later formats plug in here
LOADERS = {FORMAT: Loaded}
