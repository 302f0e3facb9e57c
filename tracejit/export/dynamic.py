"""Symbolic sizes: ``dynamic={"x": {0: "batch"}}``.

Graphs have static shapes, but the generated kernels take their sizes as arguments, so one
exported graph serves every batch size once the numbers in it that depend on the size are
known. Export finds them by tracing the function again with each symbol's size changed (twice:
s0+1 and s0+2) and comparing the serialised graphs: the structure must be the same, and every
number that changes must be an affine function of the size (an int ``a*s + b``, or a float
``c*s`` / ``c/s``, as a mean's divisor). Those positions are stored as substitutions; a call
with a new size fills them in, and the result is verified and compiled like any loaded graph.
A graph whose structure depends on the size (a loop over it, say) is refused at export.

The extra traces run the function: the captured tensors, their ``.grad`` and tracejit's random
generator are put back afterwards, so exporting leaves the state as one trace left it.
"""

from __future__ import annotations

import copy

import numpy as np

from .. import creation
from ..tensor import Tensor
from ..tracing import trace
from ..tracing.pytree import flatten, unflatten
from .format import ExportError


def infer(traced, args, kwargs, dims: dict, cg, graph: dict, where: str) -> dict:
    """The manifest's ``dynamic`` entry: which argument dims are which symbol, each symbol's
    example size, and the substitutions that make the graph for other sizes."""
    by_name = {s.name: s for s in cg.inputs if s.kind == "argument"}
    table, symbols = [], {}
    if not isinstance(dims, dict):
        raise ExportError(f"{where}: dynamic is {{argument: {{dim: 'symbol'}}}}, got {dims!r}")
    for key, spec in dims.items():
        arg = _resolve(traced, args, cg, key)
        s = by_name.get(arg)
        if s is None or not isinstance(spec, dict):
            raise ExportError(f"{where}: dynamic[{key!r}] must name a tensor argument (by "
                              f"parameter name or position; the graph's are "
                              f"{', '.join(by_name)}) and map dims to symbols, got {spec!r:.60}")
        for dim, sym in spec.items():
            if type(dim) is not int or not -len(s.shape) <= dim < len(s.shape) or \
                    not isinstance(sym, str):
                raise ExportError(f"{where}: dynamic[{arg!r}]: {dim!r}: {sym!r} is not a dim of "
                                  f"{arg} (shape {s.shape}) and a symbol name")
            dim %= len(s.shape)
            size = s.shape[dim]
            if symbols.setdefault(sym, size) != size:
                raise ExportError(f"{where}: symbol {sym!r} is {symbols[sym]} and {size} in "
                                  f"the example arguments")
            table.append([arg, dim, sym])
    subs: dict = {}  # JSON path -> [symbol, kind, a, b]
    for sym, s0 in symbols.items():
        variants = [_graph_at(traced, args, kwargs, cg, table, sym, s0 + d) for d in (1, 2)]
        found: dict = {}
        _diff(graph, variants, (), found, where)
        for path, values in found.items():
            if values[0] == "fill":
                subs[path] = [sym, "fill", values[1], 0]
                continue
            if path in subs:
                raise ExportError(f"{where}: a number at {_show(path)} depends on several "
                                  f"symbols ({subs[path][0]} and {sym}): not supported")
            subs[path] = [sym, *_fit(values, (s0, s0 + 1, s0 + 2), where, path)]
    for path in subs:
        if path[:1] == ("inputs",) and _input_name(graph, path) not in by_name:
            raise ExportError(f"{where}: weight {_input_name(graph, path)} changes shape with "
                              f"a symbolic size")
    return {"dims": table, "symbols": symbols,
            "substitutions": [[list(p), *v] for p, v in subs.items()]}


def _resolve(traced, args, cg, key):
    """The graph input name for ``key``: itself, a parameter name of the function (a module's
    ``forward``), or a position among the positional arguments."""
    import inspect

    names = {s.name for s in cg.inputs if s.kind == "argument"}
    if key in names:
        return key
    fn = getattr(getattr(traced, "module", None), "forward", None) or traced.fn
    if isinstance(key, str):
        try:
            params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            return key
        if key not in params:
            return key
        key = params.index(key)
    if type(key) is int and 0 <= key < len(args) and isinstance(args[key], Tensor):
        position = sum(len(_leaves(a)) for a in args[:key])
        for s in cg.inputs:
            if s.kind == "argument" and s.position == position:
                return s.name
    return key


def _leaves(x):
    out: list = []
    flatten(x, out)
    return out


def _input_name(graph, path):
    return graph["inputs"][path[1]]["name"]


def _graph_at(traced, args, kwargs, cg, table, sym, size):
    """The serialised optimised graph traced with symbol ``sym`` at ``size``."""
    from .. import serialize

    leaves: list = []
    tree = flatten((args, kwargs), leaves)
    positions = {s.name: s.position for s in cg.inputs if s.kind == "argument"}
    new = list(leaves)
    rng = np.random.default_rng(0)
    for arg, dim, name in table:
        k = positions[arg]
        t = new[k]
        shape = list(t.shape)
        if name == sym:
            shape[dim] = size
        if list(t.shape) != shape:
            data = rng.standard_normal(shape) if t.dtype.kind == "f" else np.zeros(shape)
            fresh = Tensor._make(data.astype(t.dtype))
            fresh.requires_grad = t.requires_grad
            new[k] = fresh
    args2, kwargs2 = unflatten(tree, new)
    other = trace(traced.fn, backend=traced.backend, fastmath=traced.fastmath,
                  precise_math=traced.precise_math)
    saved = _snapshot(traced, leaves)
    try:
        spec, _ = other._lookup(args2, kwargs2, run=False)
    except Exception as e:
        raise ExportError(f"tracing again with {sym} = {size} failed: {type(e).__name__}: "
                          f"{e}") from e
    finally:
        _restore(saved)
    return serialize.graph_to_dict(spec.compiled.optimized)  # constants inline, as the base


def _snapshot(traced, leaves):
    """Everything a trace may change that export must leave alone."""
    tensors = [t for t in leaves if isinstance(t, Tensor)]
    for s in traced.specs():
        tensors += [c.tensor for c in s.captured if c.tensor is not None]
    rng = creation._rng().bit_generator
    return rng, rng.state, [(t, t._data.copy(), t._grad) for t in tensors]


def _restore(saved):
    rng, state, tensors = saved
    rng.state = state
    for t, data, grad in tensors:
        if t._data.shape == data.shape:
            np.copyto(t._data, data)
        else:
            t._data = data
        t._grad = grad


def _diff(base, variants, path, found, where):
    """Record in ``found`` the numbers that differ between ``base`` and the variants."""
    kinds = {type(v) for v in variants} | {type(base)}
    if isinstance(base, dict) and base.get("$") == "const" and "data" in base and any(
            v.get("data") != base["data"] for v in variants if isinstance(v, dict)):
        # a constant of a size-dependent shape (the ones a backward pass starts from): allowed
        # when it is one value repeated, regenerated for each size
        fill = _fill_value([base, *variants])
        if fill is None:
            raise _structure(where, path)
        found[(*path, "data")] = ("fill", fill)
        _diff(base["shape"], [v.get("shape") for v in variants], (*path, "shape"), found,
              where)
    elif isinstance(base, dict):
        if any(not isinstance(v, dict) or v.keys() != base.keys() for v in variants):
            raise _structure(where, path)
        for k in base:
            _diff(base[k], [v[k] for v in variants], (*path, k), found, where)
    elif isinstance(base, list):
        if any(not isinstance(v, list) or len(v) != len(base) for v in variants):
            raise _structure(where, path)
        for i, item in enumerate(base):
            _diff(item, [v[i] for v in variants], (*path, i), found, where)
    elif all(v == base for v in variants) and len(kinds) == 1:
        return
    elif kinds <= {int, float} and bool not in kinds:
        found[path] = (base, *variants)
    else:
        raise _structure(where, path)


def _fill_value(consts):
    from .. import serialize

    values = set()
    for c in consts:
        try:
            a = serialize.value_from_data(c).array
        except (serialize.SerializeError, AttributeError):
            return None
        if a.size == 0 or a.dtype.kind not in "biuf" or not (a == a.flat[0]).all():
            return None
        values.add(a.flat[0].item())
    return values.pop() if len(values) == 1 else None


def _structure(where, path):
    return ExportError(f"{where}: the graph's structure depends on a symbolic size (at "
                       f"{_show(path)}): export it with static shapes, one file per size")


def _fit(values, sizes, where, path):
    """[kind, a, b] with value = a*s + b (int), a*s or a/s (float), checked on all three."""
    x0, x1, x2 = values
    s0, s1, s2 = sizes
    if all(type(x) is int for x in values):
        a, b = x1 - x0, x0 - (x1 - x0) * s0
        if a * s2 + b == x2:
            return ["affine", a, b]
    else:
        c = x0 / s0
        if all(np.isclose(c * s, x, rtol=1e-12, atol=0) for s, x in zip(sizes, values)):
            return ["mul", c, 0]
        c = x0 * s0
        if all(np.isclose(c / s, x, rtol=1e-12, atol=0) for s, x in zip(sizes, values)):
            return ["div", c, 0]
    raise ExportError(f"{where}: a number at {_show(path)} is {x0}, {x1}, {x2} for sizes "
                      f"{s0}, {s1}, {s2}: not a simple function of the size")


def _show(path) -> str:
    return "graph" + "".join(f"[{p!r}]" for p in path)


# ----------------------------------------------------------------------------------------------
# at call time


def bind(entry_dynamic: dict, shapes: dict, fn: str, labels: dict | None = None) -> dict:
    """Symbol -> size for a call (``shapes``: argument name -> shape), or a ValueError naming
    the argument (by ``labels``, when given), dim and constraint that fails."""
    sizes: dict = {}
    seen: dict = {}
    for name, dim, sym in entry_dynamic["dims"]:
        n = shapes[name][dim]
        arg = (labels or {}).get(name, name)
        if n < 1:
            raise ValueError(f"{fn}: argument {arg!r} dim {dim} ({sym}) is {n}: a symbolic "
                             f"size must be >= 1")
        if sym in sizes and sizes[sym] != n:
            raise ValueError(f"{fn}: symbol {sym!r} must agree: argument {seen[sym][0]!r} dim "
                             f"{seen[sym][1]} is {sizes[sym]}, argument {arg!r} dim {dim} is {n}")
        sizes[sym] = n
        seen[sym] = (arg, dim)
    return sizes


def instantiate(graph: dict, entry_dynamic: dict, sizes: dict) -> dict:
    """The graph dict for these symbol sizes (a copy; ``graph`` is left alone)."""
    import base64

    out = copy.deepcopy(graph)
    fills = []
    for path, sym, kind, a, b in entry_dynamic["substitutions"]:
        s = sizes[sym]
        if kind == "fill":
            fills.append((path, a))
            continue
        value = a * s + b if kind == "affine" else (a * s if kind == "mul" else a / s)
        target = out
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value
    for path, value in fills:  # after the shapes: the constant's new shape is known
        target = out
        for p in path[:-1]:
            target = target[p]
        dtype = np.dtype(_DTYPE_NAMES[target["dtype"]])
        a = np.full(target["shape"], value, dtype.newbyteorder("<"))
        target["data"] = base64.b64encode(a.tobytes()).decode("ascii")
    return out


_DTYPE_NAMES = {n: n for n in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                               "uint32", "uint64", "float16", "float32", "float64")}
