"""serialize: Graph <-> dict / JSON round trips exactly for every op, fused kernels and constants
of every dtype, the loaded graph computes the same, and damaged or tampered data gives a clear
``SerializeError`` (never code run from the file)."""

from __future__ import annotations

import base64
import builtins
import json
import math
import pickle

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit import ops, serialize
from tracejit.dispatch import apply
from tracejit.ir import Const, Graph, GraphBuilder, Node, Var
from tracejit.passes import verify
from tracejit.passes.fuse import fuse
from tracejit.runtime.interpret import interpret
from tracejit.serialize import (
    FORMAT_VERSION,
    SerializeError,
    dumps,
    graph_from_dict,
    graph_to_dict,
    loads,
    value_from_data,
    value_to_data,
)

from .conftest import data


@pytest.fixture(autouse=True)
def _trace_env(monkeypatch):
    monkeypatch.setenv("TRACEJIT_BACKEND", "interpret")
    monkeypatch.delenv("TRACEJIT_DISABLE", raising=False)
    monkeypatch.delenv("TRACEJIT_DEBUG", raising=False)
    tj.set_mode("trace")


F32, F64, I64, B = np.float32, np.float64, np.int64, np.bool_

# ----------------------------------------------------------------------------------------------
# one small program per op (a new op without an entry fails test_every_op_is_covered)

UNARY = ["neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tan",
         "sinh", "cosh", "tanh", "sigmoid", "erf", "relu", "sign", "floor", "ceil", "round",
         "isnan", "isfinite", "copy", "asin", "acos", "atan", "asinh", "acosh", "atanh"]
BINARY = ["add", "sub", "mul", "div", "floordiv", "remainder", "pow", "maximum", "minimum",
          "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor", "atan2",
          "fmod"]
IDX = np.array([2, 0, 2])
IDX2 = np.array([[0, 2], [1, 1]])


def _setitem(x, i, v):
    x[1:, None, ..., ::-2] = 0.5
    x[i, 1] = 2.0
    x[i] = v
    return x


PROGRAMS = {
    "scans-and-sort": (lambda x: (x.cumprod(1), x.logcumsumexp(0), x.argsort(1, descending=True),
                                  x.sort(0).values), data((2, 3), F32)),
    **{f"unary-{name}": (lambda x, name=name: apply(ops.OPS[name], x) * 1,
                         data((2, 3), F32, 0.5, 2.0)) for name in UNARY},
    **{f"binary-{name}": (lambda x, y, name=name: apply(ops.OPS[name], x, y),
                          data((2, 3), F32, 0.5, 2.0), data((3,), F32, 0.5, 2.0, seed=1))
       for name in BINARY},
    "logical_not": (lambda c: c.logical_not(), data((2, 3), B)),
    "binary-scalars": (lambda x: x * -0.0 + math.inf - 2 + (x > True) * math.nan,
                       data((2, 3), F32)),
    "where": (lambda c, x: tj.where(c, x, 0.5), data((2, 3), B), data((3,), F32)),
    "clamp": (lambda x: (x.clamp(-1, 1), x.clamp(min=0.5), x.clamp(max=0)), data((2, 3), F32)),
    "cast": (lambda x: (x.double(), x.long(), x.bool(), x.int()), data((2, 3), F32)),
    "reduce": (lambda x: (x.sum(1), x.prod(0, keepdim=True), x.amax((0, 1)), x.amin(-1),
                          x.mean()), data((2, 3), F32)),
    "arg": (lambda x: (x.argmax(1), x.argmin(), x.argmax(0, keepdim=True)), data((2, 3), F32)),
    "cumsum": (lambda x: x.cumsum(1), data((2, 3), I64)),
    "shape": (lambda x: (x.reshape(3, 2), x.permute(1, 0), x.reshape(2, 1, 3).expand(2, 4, 3)),
              data((2, 3), F32)),
    "cat": (lambda x, y: tj.cat([x, y], 0), data((2, 3), F32), data((1, 3), F64)),
    "pad": (lambda x: F.pad(x, (1, 2), value=0.5), data((2, 3), F32)),
    "getitem": (lambda x, i: (x[1:, None, ..., i], x[..., ::-1], x[-1], x[i, :2], x[None]),
                data((3, 4), F32), IDX),
    "index_put": (lambda x, i, v: (_setitem(x * 1, i, v), x.index_put((i,), v, accumulate=True)),
                  data((3, 4), F32), IDX, data((4,), F32)),
    "gather": (lambda x, i, s: (x.gather(1, i), x.scatter_add(0, i % 2, s)),
               data((2, 3), F32), IDX2, data((2, 2), F32)),
    "matmul": (lambda a, b: a @ b, data((2, 3), F32), data((3, 4), F32)),
    "window": (lambda x: (F.unfold(x, 2, padding=1), F.fold(F.unfold(x, 2), (4, 5), 2)),
               data((1, 2, 4, 5), F32)),
    "max_pool": (lambda x: (F.max_pool2d(x, 3, 2, 1),
                            tj.grad(lambda x: (F.max_pool2d(x, 2) ** 2).sum())(x)),
                 data((1, 2, 4, 5), F32)),
    "const": (lambda x: x + tj.tensor([1.0, math.nan, -0.0]) + tj.arange(30.0).reshape(10, 3),
              data((3,), F32)),
    "detach": (lambda x: x.detach() + x, data((3,), F32)),
    "random": (lambda x: (x + tj.rand(3), tj.randn(2, dtype=tj.float64), tj.randint(0, 9, (4,))),
               data((3,), F32)),
    "softmax-fused": (lambda x: x.softmax(-1) + x.log_softmax(0), data((3, 4), F32)),
    "multi-output-kernel": (lambda x: ((x.exp() * 2).sigmoid(), x.exp() + 1), data((3, 4), F32)),
    "python-outputs": (lambda x: (x * 2, "hello", None, 2.5, np.float16(1.0), np.True_),
                       data((3,), F32)),
    "0d-and-size0": (lambda x, e: (x * 2 + 1, e.sum(0), e.reshape(0, 3) + 1.5),
                     data((), F32), data((2, 0, 3), F32)),
}


def _graphs(fn, args):
    """The raw, optimised and fused graphs of ``fn`` traced on ``args`` (the interpreter
    backend's pipeline does not fuse: the compiler's does)."""
    f = tj.trace(fn, backend="interpret")
    tensors = [tj.from_numpy(a.copy()) for a in args]
    optimized = f.graph(*tensors)
    return f.graph(*tensors, optimized=False), optimized, fuse(optimized)


def _ops_in(graph: Graph) -> set:
    names = set()
    for n in graph.nodes:
        names.add(n.op)
        if n.op == "fused":
            names |= _ops_in(n.attr_dict["body"])
    return names


def _types(x):
    """Every value in a graph with its exact type: (1, 2) == (1.0, True) in Python, not here."""
    if isinstance(x, Graph):
        return [[(n.op, _types(n.out), _types(n.inputs), _types(n.attrs), n.loc)
                 for n in x.nodes], _types(x.inputs), x.input_names, _types(x.outputs)]
    if isinstance(x, (tuple, list)):
        return (type(x).__name__, [_types(v) for v in x])
    if isinstance(x, Const):
        return ("Const", x.array.dtype.str, x.array.shape, x.array.tobytes())
    if isinstance(x, Var):
        return ("Var", x.id, x.shape, x.dtype.str, x.device)
    if isinstance(x, float):
        return ("float", x.hex() if math.isfinite(x) else repr(x))
    return (type(x).__name__, repr(x))


def assert_same(got: Graph, want: Graph) -> None:
    assert got == want
    assert str(got) == str(want)
    assert got.format(locs=True) == want.format(locs=True)
    assert got.content_hash() == want.content_hash()
    assert _types(got) == _types(want)


def roundtrip(graph: Graph) -> Graph:
    """Through every form: inline JSON text, and a dict with arrays stored outside."""
    loaded = loads(dumps(graph))
    assert_same(loaded, graph)
    arrays: dict = {}
    d = json.loads(json.dumps(graph_to_dict(graph, arrays, inline_bytes=0), allow_nan=False))
    assert_same(graph_from_dict(d, arrays), graph)
    return loaded


def _interpret(graph, args, seed=3):
    tj.manual_seed(seed)  # random draws: the same stream for both graphs
    return interpret(graph, [a.copy() for a in args])


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_every_program_round_trips_and_runs_the_same(name):
    fn, *args = PROGRAMS[name]
    for graph in _graphs(fn, args):
        loaded = roundtrip(graph)
        verify(loaded)
        for got, want in zip(_interpret(loaded, args), _interpret(graph, args)):
            assert type(got) is type(want)
            np.testing.assert_array_equal(got, want)  # NaN equals NaN here
            assert np.asarray(got).dtype == np.asarray(want).dtype


def test_every_op_is_covered():
    seen = set()
    for fn, *args in PROGRAMS.values():
        for graph in _graphs(fn, args):
            seen |= _ops_in(graph)
    # all_reduce needs a process group: tests/distributed/test_distributed.py round-trips it
    missing = set(ops.OPS) - seen - {"all_reduce"}
    assert not missing, f"ops without a round-trip program in PROGRAMS: {sorted(missing)}"


def test_fused_graphs_keep_bodies_and_extra_outputs():
    fn, *args = PROGRAMS["multi-output-kernel"]
    fused = _graphs(fn, args)[2]
    kernels = [n for n in fused.nodes if n.op == "fused"]
    assert any("outputs" in n.attr_dict for n in kernels)  # a kernel that binds several Vars
    loaded = roundtrip(fused)
    for n in loaded.nodes:
        if n.op == "fused":
            assert isinstance(n.attr_dict["body"], Graph)
            assert all(type(v) is Var for v in n.attr_dict.get("outputs", ()))
            assert n.attrs[-1][0] == ("outputs" if "outputs" in n.attr_dict else "row_dims")


def test_a_training_step_graph_round_trips():
    """Backward and optimizer nodes, captured parameters, in-place updates as outputs."""
    model = tj.nn.Sequential(tj.nn.Linear(4, 8), tj.nn.ReLU(), tj.nn.Linear(8, 3))
    opt = tj.optim.Adam(model.parameters(), lr=1e-2)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    graphs = _graphs(step, [data((5, 4), F32), np.array([0, 1, 2, 0, 1])])
    assert any("outputs" in n.attr_dict for n in graphs[2].nodes if n.op == "fused")
    for graph in graphs:
        loaded = roundtrip(graph)
        args = [data(v.shape, v.dtype, 0, 2) for v in graph.inputs]
        for got, want in zip(interpret(loaded, args), interpret(graph, args)):
            np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------------
# constants and attribute values


SPECIAL = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e-300, 5e-324, 1.5]
ARRAYS = (
    [np.array(v, dtype=t) for t in (F32, F64, np.float16) for v in SPECIAL]
    + [np.arange(-6, 6).astype(t).reshape(3, 4) for t in serialize._DTYPES.values()]
    + [np.zeros((2, 0, 3), t) for t in serialize._DTYPES.values()]
    + [np.array(True), np.array([np.iinfo(I64).min, np.iinfo(I64).max]),
       np.array([np.iinfo(np.uint64).max], np.uint64), np.ones((5, 7), F32)[:, ::2]]
)


def _const_graph(arrays) -> Graph:
    b = GraphBuilder()
    outs = [b.add_node("const", (), {"value": Const(a)}, a.shape, a.dtype, f"consts.py:{i}")
            for i, a in enumerate(arrays)]
    return b.build(outs)


def test_constants_of_every_dtype_shape_and_special_value_are_bit_exact():
    graph = _const_graph(ARRAYS)
    arrays: dict = {}
    outside = dumps(graph, arrays, inline_bytes=0)
    for loaded in (roundtrip(graph), loads(outside, arrays)):
        for got, want in zip(interpret(loaded, []), ARRAYS):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == np.ascontiguousarray(want).tobytes()  # -0.0, NaN bits


def test_external_arrays_survive_npy_files_without_pickle(tmp_path):
    graph = _const_graph(ARRAYS)
    arrays: dict = {}
    text = dumps(graph, arrays, inline_bytes=16)
    assert arrays and len(arrays) < len(ARRAYS)  # small constants stayed inline
    for key, a in arrays.items():
        np.save(tmp_path / f"{key}.npy", a, allow_pickle=False)
    back = {p.stem: np.load(p, allow_pickle=False) for p in tmp_path.glob("*.npy")}
    assert_same(loads(text, back), graph)


def test_inline_form_is_base64_of_raw_bytes():
    d = graph_to_dict(_const_graph([np.array([1.0, -0.0], F32)]))
    value = d["graph"]["nodes"][0]["attrs"]["value"]
    assert value == {"$": "const", "dtype": "float32", "shape": [2],
                     "data": "AACAPwAAAIA="}  # little-endian 1.0f, -0.0f


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**70, 1.5, -0.0, math.nan, math.inf, -math.inf, "k0_add",
    (), (1, (2, 3), [4, (5,)]), [1, 2], (None, Ellipsis, (None, None, -1)), slice(1, None, -2),
    Ellipsis, np.dtype(np.float32), np.dtype(np.bool_), np.float16(1.0), np.True_, np.int32(-3),
    (((1, None, None), None, Ellipsis, 2), (None, 0, 1)),  # an index spec: (basic, adv)
    Var(4, (2, 0), np.dtype(np.int64), "cuda"),
])
def test_attribute_values_keep_value_and_type(value):
    text = json.dumps(value_to_data(value), allow_nan=False)
    got = value_from_data(json.loads(text))
    assert _types(got) == _types(value)
    if isinstance(value, float) and value == 0:
        assert math.copysign(1, got) == math.copysign(1, value)


def test_a_value_outside_the_closed_set_is_refused_on_write():
    b = GraphBuilder()
    x = b.add_input("x", (2,), F32)
    b.nodes.append(Node(Var(1, (2,), np.dtype(F32)), "relu", (x,), (("how", object()),)))
    g = b.build([Var(1, (2,), np.dtype(F32))])
    with pytest.raises(SerializeError, match=r"node 0 \(relu\).*type object"):
        graph_to_dict(g)
    g = GraphBuilder().build([Var(0, (), np.dtype(F32)), object()])
    with pytest.raises(SerializeError, match="output 1: an operand is a Var or a scalar"):
        graph_to_dict(g)
    for odd in (np.array([1j]), np.array([1.0], ">f8"), np.array(["a"])):
        with pytest.raises(SerializeError, match=f"dtype {odd.dtype.str} is not one"):
            graph_to_dict(_const_graph([odd]))


# ----------------------------------------------------------------------------------------------
# damaged and tampered data


def _sample() -> dict:
    fn, *args = PROGRAMS["softmax-fused"]
    return graph_to_dict(_graphs(fn, args)[2])


def _err(d, match, arrays=None):
    with pytest.raises(SerializeError, match=match) as info:
        graph_from_dict(d, arrays)
    assert isinstance(info.value, ValueError)


def test_versions_and_format():
    d = _sample()
    assert d["version"] == FORMAT_VERSION
    _err({**d, "version": FORMAT_VERSION + 1}, "newer than this tracejit reads")
    for bad in (0, "1", True, None):
        _err({**d, "version": bad}, "unknown format version")
    _err({**d, "format": "onnx"}, "format is 'onnx'")
    _err({k: v for k, v in d.items() if k != "version"}, "missing field 'version'")


def test_tampered_op_name_names_the_node():
    d = _sample()
    d["graph"]["nodes"][1]["op"] = "os.system"
    _err(d, r"graph, node 1 \(os.system\): unknown op 'os.system'")


def test_tampered_op_inside_a_kernel_body_names_both_levels():
    d = _sample()
    k = next(i for i, n in enumerate(d["graph"]["nodes"]) if n["op"] == "fused")
    d["graph"]["nodes"][k]["attrs"]["body"]["nodes"][0]["op"] = "bogus"
    _err(d, rf"node {k} \(fused\), attribute 'body', node 0 \(bogus\): unknown op")


def test_unknown_type_tag_and_dtype():
    d = _sample()
    node = next(n for n in d["graph"]["nodes"] if n["op"] == "fused")
    node["attrs"]["kernel"] = {"$": "pickle", "data": "gASV"}
    _err(d, r"node \d+ \(fused\), attribute 'kernel': unknown type tag 'pickle'")
    d = _sample()
    d["graph"]["inputs"][0]["dtype"] = "object"
    _err(d, r"input 0: unknown dtype 'object'")


def test_missing_fields_are_named():
    d = _sample()
    del d["graph"]["nodes"][0]["out"]
    _err(d, r"node 0 \(\w+\): missing field 'out'")
    d = _sample()
    del d["graph"]["outputs"]
    _err(d, "missing field 'outputs'")


def test_var_used_before_definition():
    d = _sample()
    nodes = d["graph"]["nodes"]
    nodes[0], nodes[1] = nodes[1], nodes[0]
    _err(d, r"node 0 \(\w+\), operand 0: Var %\d+ is used before it is defined")
    d = _sample()
    d["graph"]["outputs"] = [{"$": "ref", "id": 999}]
    _err(d, r"output 0: Var %999 is used before")
    d = _sample()
    d["graph"]["nodes"][1]["out"]["id"] = d["graph"]["nodes"][0]["out"]["id"]
    _err(d, r"node 1 .*defined twice")


def test_operand_must_be_a_reference_or_a_number():
    d = _sample()
    d["graph"]["nodes"][0]["inputs"][0] = {"$": "var", "id": 0, "shape": [3, 4],
                                           "dtype": "float32", "device": "cpu"}
    _err(d, r"operand 0: an operand is a Var reference or a scalar, got Var")


def test_truncated_or_non_standard_json():
    text = json.dumps(_sample())
    with pytest.raises(SerializeError, match="not valid JSON"):
        loads(text[: len(text) // 2])
    with pytest.raises(SerializeError, match="NaN"):
        loads(text.replace('"version": 1', '"version": NaN'))


def test_damaged_constants():
    graph = _const_graph([np.arange(40.0)])
    arrays: dict = {}
    d = graph_to_dict(graph, arrays)
    (key,) = arrays
    _err(d, "is missing from the arrays", {})
    _err(d, "does not match its digest", {key: np.arange(40.0) + 1})
    _err(d, r"is not a float64\[40\] array", {key: np.arange(40.0, dtype=F32)})
    d = graph_to_dict(_const_graph([np.arange(4.0)]))
    value = d["graph"]["nodes"][0]["attrs"]["value"]
    value["data"] = base64.b64encode(bytes(8)).decode()
    _err(d, "inline constant has 8 bytes, a float64\\[4\\] array has 32")
    value["data"] = "not base64!"
    _err(d, "not base64")


def test_loading_never_unpickles_or_evaluates(monkeypatch):
    fn, *args = PROGRAMS["const"]
    graph = _graphs(fn, args)[0]
    arrays: dict = {}
    text = dumps(graph, arrays)

    def forbidden(*a, **k):
        raise AssertionError("loading ran pickle or eval")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "__import__", forbidden)
    loaded = loads(text, arrays)
    monkeypatch.undo()
    assert_same(loaded, graph)


def test_the_example_in_docs_ir_md_loads():
    import pathlib
    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "ir.md").read_text()
    example = text.split("```json\n", 1)[1].split("```", 1)[0]
    graph = loads(example)
    verify(graph)
    assert str(graph) == ("graph(x: f32[2,3]):\n"
                          "  %1: f32[2] = sum[dims=(1,), keepdim=False] x\n"
                          "  return %1")
    assert graph.nodes[0].loc == "model.py:12"
    assert json.loads(dumps(graph)) == json.loads(example)  # the docs show what dumps writes
