"""Tests of the graph passes, one file per pass. Shared helpers live here."""

from __future__ import annotations

import numpy as np

import tracejit as tj
from tracejit.ir import Const, GraphBuilder
from tracejit.passes import verify
from tracejit.runtime.interpret import interpret


def random_args(graph, seed: int = 0) -> list:
    """Random input arrays for ``graph``'s inputs (floats in [-2, 2], ints in [-3, 3])."""
    rng = np.random.default_rng(seed)
    out = []
    for v in graph.inputs:
        if v.dtype == np.bool_:
            out.append(rng.random(v.shape) > 0.5)
        elif v.dtype.kind in "iu":
            out.append(rng.integers(-3, 4, v.shape).astype(v.dtype))
        else:
            out.append(rng.uniform(-2, 2, v.shape).astype(v.dtype))
    return out


def run(graph, args, seed: int = 0) -> list:
    """Interpret ``graph`` on ``args`` with tracejit's generator seeded (random nodes repeat)."""
    tj.manual_seed(seed)
    return interpret(graph, [a.copy() for a in args])


def assert_agree(before, after, trials: int = 3, exact: bool = True) -> None:
    """Both graphs verify and give the same outputs (values, shapes, dtypes) on random inputs."""
    verify(before)
    verify(after)
    assert [v.type for v in before.inputs] == [v.type for v in after.inputs]
    for seed in range(trials):
        args = random_args(before, seed)
        want, got = run(before, args, seed), run(after, args, seed)
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape and g.dtype == w.dtype, f"output {i}: {g!r} vs {w!r}"
            if exact:
                np.testing.assert_array_equal(g, w, err_msg=f"output {i}")
            else:
                np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=f"output {i}")


def const(b: GraphBuilder, value, dtype=None):
    """A ``const`` node holding ``value``."""
    arr = np.asarray(value, dtype=dtype)
    return b.add_node("const", (), {"value": Const(arr)}, arr.shape, arr.dtype)


def node(b: GraphBuilder, op: str, *inputs, **attrs):
    """A node whose type comes from the op's own shape/dtype rule."""
    avals = [(x.shape, x.dtype) if hasattr(x, "shape") else x for x in inputs]
    shape, dtype = tj.ops.OPS[op].infer(avals, **attrs)
    return b.add_node(op, inputs, attrs, shape, dtype)


def traced(fn, *args):
    """(raw graph, optimised graph) of ``fn`` traced on ``args`` (interpreter backend)."""
    f = tj.trace(fn, backend="interpret")
    return f.graph(*args, optimized=False), f.graph(*args)


def ops_of(graph) -> list:
    return [n.op for n in graph.nodes]
