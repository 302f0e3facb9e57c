"""Export a traced function or module to ONNX (docs/onnx.md).

>>> tj.onnx.export(model, tj.randn(8, 784), path="mlp.onnx",
...                dynamic={"x": {0: "batch"}})                           # doctest: +SKIP

The function is traced for the example arguments; the optimised, unfused graph is rendered by
``tracejit.codegen.onnx``. Tensor arguments are the model's inputs, captured tensors (weights)
its initializers, named by where they were found (``self.fc1.weight``). The ``onnx`` package
is imported only here, when exporting: ``import tracejit`` never needs it.
"""

from __future__ import annotations

import numpy as np

from .errors import TraceError
from .ir import Var

EXTRA = "pip install 'tracejit[onnx]'"


def _require():
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ImportError(f"tracejit.onnx needs the onnx package: {EXTRA}") from e
    from .codegen import onnx as render_onnx
    return render_onnx


def export(fn_or_module, *example_args, path=None, opset: int = 18, dynamic: dict | None = None,
           input_names: list | None = None, output_names: list | None = None):
    """Trace ``fn_or_module`` on ``example_args`` and write it as an ONNX model to ``path`` (a
    file name; None: nothing is written). Returns the ``onnx.ModelProto``.

    ``dynamic`` maps an input name to ``{axis: symbol}``: those axes keep a name instead of
    the example's size (``{"x": {0: "batch"}}``). ``input_names`` renames the tensor arguments
    (in order), ``output_names`` the outputs (default ``output`` or ``output_0``, ...).
    """
    render_onnx = _require()
    from .tracing import trace
    from .tracing.front import TracedFunction

    if isinstance(fn_or_module, TracedFunction):  # traced again: its backend need not compile
        fn_or_module = fn_or_module.module or fn_or_module.fn
    traced = trace(fn_or_module, backend="interpret")
    example = list(example_args)
    names, nice = _argument_names(traced, example)
    rename = dict(zip(names, input_names or nice))
    dynamic = {rename.get(k, k): v for k, v in (dynamic or {}).items()}
    unknown = set(dynamic) - set(rename.values())
    if unknown:
        raise ValueError(f"onnx export: dynamic names {sorted(unknown)}, which are not tensor "
                         f"arguments (those are {list(rename.values())})")
    symbols, sizes = _symbols(dynamic, rename, names, example)
    if symbols:  # traced at a size of 2 or more, so no size-1 broadcast is baked in
        example = _resized(example, names, rename, dynamic, sizes)
    spec = _specialization(traced, example)
    graph, n_inputs = _results_graph(spec, rename)
    dims = {}
    for sym in symbols:
        other = _specialization(traced, _resized(example, names, rename, dynamic,
                                                 {**sizes, sym: sizes[sym] + 1}))
        _dynamic_dims(graph, _results_graph(other, rename)[0], sym, sizes[sym], dims,
                      render_onnx.Dim)
    _, leaves = traced._flat(tuple(example), {})
    weights = spec.fetch_captured(traced.fn, leaves) or [c.tensor for c in spec.captured]
    inits = {n: np.asarray(t._data) for n, t in zip(graph.input_names[n_inputs:], weights)}
    where = {sym: (graph.input_names[names.index(_by_new(rename, inp))], axis)
             for sym, (inp, axis) in symbols.items()}
    model = render_onnx.render(graph, opset=opset, initializers=inits,
                               output_names=output_names, dims=dims, symbols=where,
                               name=spec.compiled.name)
    if path is not None:
        import onnx
        onnx.save(model, str(path))
    return model


def _by_new(rename, new):
    return next(k for k, v in rename.items() if v == new)


def _argument_names(traced, args) -> tuple:
    """The names tracing gives the tensor arguments (parameter names, ``arg0``, ``batch_0``),
    and the names the model's inputs get: for a module, its ``forward``'s parameter names."""
    import inspect

    from .tensor import Tensor
    from .tracing.pytree import leaf_names

    tree, leaves = traced._flat(tuple(args), {})
    names = traced._arg_names(tree)
    nice = names
    forward = getattr(traced.module, "forward", None)
    if forward is not None:
        try:
            params = [p.name for p in inspect.signature(forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            nice = leaf_names(tree, params)
        except (TypeError, ValueError):
            pass
    keep = [isinstance(x, Tensor) for x in leaves]
    return ([n for n, k in zip(names, keep) if k], [n for n, k in zip(nice, keep) if k])


def _specialization(traced, args):
    spec, _ = traced._lookup(tuple(args), {}, run=False)
    if spec is None:
        raise TraceError(f"onnx export: {traced.name} could not be traced for these arguments")
    return spec


def _results_graph(spec, rename):
    """The optimised graph with only the results as outputs (the in-place updates of inputs and
    gradients a training step writes are not part of an exported model), inputs renamed."""
    from .ir import Graph
    from .passes import dce

    cg = spec.compiled
    g = cg.optimized
    n_args = sum(1 for s in cg.inputs if s.kind == "argument")
    names = tuple(rename.get(n, n) if i < n_args else (s.weight or n)
                  for i, (n, s) in enumerate(zip(g.input_names, cg.inputs)))
    # None among the results (what ``x[i] = v`` returns) has no ONNX value: left out
    outputs = tuple(x for x in g.outputs[:cg.n_results] if x is not None)
    if not outputs:
        raise TraceError(f"onnx export: {cg.name} returns no tensors (an exported model computes "
                         f"its results; in-place updates of its inputs are not exported)")
    return dce(Graph(g.inputs, names, g.nodes, outputs)), n_args


def _symbols(dynamic, rename, names, example):
    """symbol -> (input, axis) where it first appears, and each symbol's traced size."""
    symbols, sizes = {}, {}
    from .tensor import Tensor
    tensors = [x for x in example if isinstance(x, Tensor)]
    for inp, axes in dynamic.items():
        t = tensors[names.index(_by_new(rename, inp))]
        for axis, sym in axes.items():
            axis = axis % max(t.ndim, 1)
            symbols.setdefault(sym, (inp, axis))
            sizes[sym] = max(sizes.get(sym, 0), t.shape[axis], 2)
    return symbols, sizes


def _resized(example, names, rename, dynamic, sizes):
    """The example arguments with every dynamic axis at its symbol's size (rows repeated)."""
    from .creation import from_numpy
    from .tensor import Tensor
    out, k = [], 0
    for x in example:
        if isinstance(x, Tensor):
            axes = dynamic.get(rename[names[k]], {})
            a = x._data
            for axis, sym in axes.items():
                n = a.shape[axis]
                take = np.arange(sizes[sym]) % n if n else None
                a = np.take(a, take, axis=axis) if n else np.zeros(
                    a.shape[:axis] + (sizes[sym],) + a.shape[axis + 1:], a.dtype)
            x = from_numpy(np.ascontiguousarray(a)) if axes else x
            k += 1
        out.append(x)
    return out


def _dynamic_dims(g1, g2, sym, size, dims, Dim):
    """Compare the graphs traced at ``size`` and ``size + 1`` of ``sym``: every dimension that
    changed by k is ``k * sym + c`` (recorded in ``dims``). The graphs must be the same
    computation, or the model depends on the size in a way ONNX cannot follow."""
    def fail(what, node=None):
        where = f" (op '{node.op}' at {node.loc})" if node is not None and node.loc else ""
        raise TraceError(f"onnx export: the graph changes with the size of dynamic axis "
                         f"'{sym}': {what}{where}; export with that axis static")

    if len(g1.nodes) != len(g2.nodes) or len(g1.outputs) != len(g2.outputs):
        fail("a different number of operations")
    vars2 = {}
    for v1, v2 in zip(g1.inputs, g2.inputs):
        vars2[v1.id] = (v1, v2)
    for n1, n2 in zip(g1.nodes, g2.nodes):
        if n1.op != n2.op or len(n1.inputs) != len(n2.inputs):
            fail(f"'{n1.op}' became '{n2.op}'", n1)
        for a, b in zip(n1.inputs, n2.inputs):
            scalar = not isinstance(a, Var)
            if scalar == isinstance(b, Var) or scalar and not _equal(a, b):
                fail("an operand follows the size", n1)
        shape_attrs = {"shape", "value"} if n1.op in ("reshape", "expand", "const") else set()
        for (k, a), (_, b) in zip(n1.attrs, n2.attrs):
            if k in shape_attrs:
                if k == "value" and not _same_fill(a.array, b.array):
                    fail("a constant's values follow the size", n1)
                continue
            if not _equal(a, b):
                fail(f"attribute {k} is {a!r} at one size and {b!r} at the other", n1)
        vars2[n1.out.id] = (n1.out, n2.out)
    for v1, v2 in vars2.values():
        old = dims.get(v1.id, v1.shape)
        if v1.shape == v2.shape:
            continue
        new = list(old)
        for i, (d1, d2) in enumerate(zip(v1.shape, v2.shape)):
            if d1 != d2:
                if isinstance(old[i], Dim):
                    fail(f"a dimension depends on two dynamic axes (value %{v1.id})")
                new[i] = Dim(sym, d2 - d1, d1 - (d2 - d1) * size)
        dims[v1.id] = tuple(new)


def _equal(a, b) -> bool:
    """Attribute or operand equality, NaN equal to NaN (clamp bounds, pad fills)."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _same_fill(a, b) -> bool:
    if a.shape == b.shape:
        return np.array_equal(a, b, equal_nan=True)
    fa, fb = a.reshape(-1), b.reshape(-1)
    return fa.size > 0 and fb.size > 0 and (
        np.all(fa == fa[0]) and np.all(fb == fa[0]) or np.isnan(fa).all() and np.isnan(fb).all())


__all__ = ["export", "EXTRA"]
