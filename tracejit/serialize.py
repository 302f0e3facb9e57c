"""Graph <-> plain data: a versioned dict (JSON text with ``dumps``/``loads``) for exports and
caches shared between processes.

>>> text = dumps(graph)                                               # doctest: +SKIP
>>> str(loads(text)) == str(graph)                                    # doctest: +SKIP
True

Attribute values come from a closed set of types, each with a type tag (see ``docs/ir.md``):
JSON's own values (null, bools, numbers, strings) stand for themselves, a JSON array is a
tuple, and everything else is an object ``{"$": tag, ...}``. Loading builds values from that
table only: it never imports, evaluates or unpickles anything named by the file, so a tampered
file can at worst give a ``SerializeError``.

Constant arrays are written inline (base64 of their little-endian bytes, with dtype and shape)
or, when the caller passes an ``arrays`` dict, stored there under their content digest for the
caller to save as ``.npy`` (``allow_pickle=False``); loading checks each one against its digest.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np

from . import ops
from .ir import Const, Graph, Node, Var, defined_vars

__all__ = ["FORMAT_VERSION", "SerializeError", "dumps", "graph_from_dict", "graph_to_dict",
           "loads", "value_from_data", "value_to_data"]

FORMAT = "tracejit.graph"
FORMAT_VERSION = 1  # bump on any change an older reader would misread

INLINE_BYTES = 64  # with an ``arrays`` dict, constants up to this size still go inline


class SerializeError(ValueError):
    """A graph that cannot be written, or data that is not a graph this version can read."""


# NOTE: a closed table, not np.dtype(name): a name from the file is only ever looked up here,
# so no structured, object or otherwise surprising dtype can come out of a file.
_DTYPES = {np.dtype(t).name: np.dtype(t) for t in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64")}


class _Ctx:
    """What encoding and decoding carry along: the external constant arrays."""

    def __init__(self, arrays: dict | None, inline_bytes: int = INLINE_BYTES):
        self.arrays = arrays
        self.inline_bytes = inline_bytes


# ----------------------------------------------------------------------------------------------
# encoding: one function per Python type


def _enc_float(x: float, ctx):
    # JSON has no nan/inf; finite floats (-0.0 included) are written exactly by ``repr``
    if math.isfinite(x):
        return x
    return {"$": "float", "value": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


def _dtype_name(dt: np.dtype) -> str:
    # NOTE: a byte-swapped dtype has the same name; refused, as it would not come back the same
    if _DTYPES.get(dt.name) != dt or not dt.isnative:
        raise SerializeError(f"dtype {dt.str} is not one a graph file can hold")
    return dt.name


def _enc_dtype(x: np.dtype, ctx):
    return {"$": "dtype", "name": _dtype_name(x)}


def _enc_numpy_scalar(x: np.generic, ctx):
    # a Python value a traced function returned, e.g. np.float16(1.0): kept with its type
    return {"$": "np", "dtype": _dtype_name(x.dtype), "value": _encode(x.item(), ctx)}


def _enc_const(c: Const, ctx):
    a = c.array
    head = {"$": "const", "dtype": _dtype_name(a.dtype), "shape": list(a.shape)}
    if ctx.arrays is not None and a.nbytes > ctx.inline_bytes:
        ctx.arrays[c.digest] = a
        return {**head, "key": c.digest}
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return {**head, "data": base64.b64encode(raw).decode("ascii")}


def _enc_var(v: Var, ctx):
    # a Var inside attributes (a multi-output kernel's ``outputs``) is a binder: full type
    return {"$": "var", **_var_fields(v)}


def _enc_slice(s: slice, ctx):
    return {"$": "slice", "start": _encode(s.start, ctx), "stop": _encode(s.stop, ctx),
            "step": _encode(s.step, ctx)}


_ENCODE = {
    type(None): lambda x, ctx: x,
    bool: lambda x, ctx: x,
    int: lambda x, ctx: x,
    float: _enc_float,
    str: lambda x, ctx: x,
    tuple: lambda x, ctx: [_encode(v, ctx) for v in x],  # tuples are the common case: bare
    list: lambda x, ctx: {"$": "list", "items": [_encode(v, ctx) for v in x]},
    slice: _enc_slice,
    type(Ellipsis): lambda x, ctx: {"$": "ellipsis"},
    Const: _enc_const,
    Var: _enc_var,
    Graph: lambda g, ctx: {"$": "graph", **_graph_fields(g, ctx)},
}


def _encode(x, ctx: _Ctx):
    enc = _ENCODE.get(type(x))  # exact types: a subclass (an IntEnum, say) is not in the set
    if enc is None:
        if isinstance(x, np.dtype):  # each dtype has its own class (numpy.dtypes.Float32DType)
            enc = _enc_dtype
        elif isinstance(x, np.generic):
            enc = _enc_numpy_scalar
        else:
            raise SerializeError(f"a value of type {type(x).__name__} ({x!r:.60}) is outside "
                                 f"the types a graph file can hold")
    return enc(x, ctx)


def _var_fields(v: Var) -> dict:
    return {"id": v.id, "shape": list(v.shape), "dtype": _dtype_name(v.dtype), "device": v.device}


def _is_scalar(x) -> bool:
    """What an operand or graph output may be besides a Var: a Python value a traced function
    used or returned (a numpy scalar too)."""
    return x is None or type(x) in (bool, int, float, str) or isinstance(x, np.generic)


def _operand(x, ctx, where: str):
    # a use of a Var is a reference to its definition; anything else is a scalar value
    if isinstance(x, Var):
        return {"$": "ref", "id": x.id}
    if not _is_scalar(x):
        raise SerializeError(f"{where}: an operand is a Var or a scalar, got {type(x).__name__}")
    return _encode(x, ctx)


def _graph_fields(g: Graph, ctx) -> dict:
    def node(n: Node, i: int) -> dict:
        here = f"node {i} ({n.op})"
        try:
            attrs = {k: _encode(v, ctx) for k, v in n.attrs}
            out = _var_fields(n.out)
        except SerializeError as e:
            raise SerializeError(f"{here}: {e}") from None
        inputs = [_operand(x, ctx, f"{here}, operand {k}") for k, x in enumerate(n.inputs)]
        return {"op": n.op, "out": out, "inputs": inputs, "attrs": attrs, "loc": n.loc}

    return {"inputs": [{"name": name, **_var_fields(v)} for v, name in zip(g.inputs,
                                                                          g.input_names)],
            "nodes": [node(n, i) for i, n in enumerate(g.nodes)],
            "outputs": [_operand(x, ctx, f"output {k}") for k, x in enumerate(g.outputs)]}


def graph_to_dict(graph: Graph, arrays: dict | None = None,
                  inline_bytes: int = INLINE_BYTES) -> dict:
    """``graph`` as plain JSON-ready data. Constants go inline, or with an ``arrays`` dict,
    those over ``inline_bytes`` into it (digest -> array) for the caller to store.

    >>> graph_to_dict(g)["version"]                                   # doctest: +SKIP
    1
    """
    ctx = _Ctx(arrays, inline_bytes)
    return {"format": FORMAT, "version": FORMAT_VERSION, "graph": _graph_fields(graph, ctx)}


def dumps(graph: Graph, arrays: dict | None = None, inline_bytes: int = INLINE_BYTES,
          indent: int | None = None) -> str:
    """``graph`` as JSON text (strict JSON: no NaN literals), see ``graph_to_dict``."""
    return json.dumps(graph_to_dict(graph, arrays, inline_bytes), allow_nan=False,
                      indent=indent)


def value_to_data(value, arrays: dict | None = None, inline_bytes: int = INLINE_BYTES):
    """One value of the closed set of attribute types as JSON-ready data, for files that keep
    more than a graph (an export's input specs, say).

    >>> value_to_data((1, None, np.dtype("float32")))
    [1, None, {'$': 'dtype', 'name': 'float32'}]
    """
    return _encode(value, _Ctx(arrays, inline_bytes))


def value_from_data(data, arrays: dict | None = None, where: str = "value"):
    """The value ``value_to_data`` wrote.

    >>> value_from_data([1, {"$": "ellipsis"}])
    (1, Ellipsis)
    """
    try:
        return _decode(data, _Ctx(arrays), where)
    except RecursionError:
        raise SerializeError(f"{where}: values are nested too deeply") from None


# ----------------------------------------------------------------------------------------------
# decoding: one function per type tag


def _field(d, key: str, where: str):
    if not isinstance(d, dict):
        raise SerializeError(f"{where}: expected an object, got {_kind(d)}")
    if key not in d:
        raise SerializeError(f"{where}: missing field {key!r}")
    return d[key]


def _kind(x) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a bool",
            type(None): "null"}.get(type(x), "a number")


def _typed(x, types, what: str, where: str):
    # NOTE: JSON true/false load as bool, a subclass of int: never accept one as an int
    if not isinstance(x, types) or (isinstance(x, bool) and bool not in types):
        raise SerializeError(f"{where}: {what} must be {types[0].__name__}, got {_kind(x)}")
    return x


def _dtype(name, where: str) -> np.dtype:
    dt = _DTYPES.get(name) if isinstance(name, str) else None
    if dt is None:
        raise SerializeError(f"{where}: unknown dtype {name!r}")
    return dt


def _shape(x, where: str) -> tuple:
    _typed(x, (list,), "a shape", where)
    for n in x:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SerializeError(f"{where}: bad shape {x!r}")
    return tuple(x)


def _var(d, where: str) -> Var:
    return Var(_typed(_field(d, "id", where), (int,), "a Var id", where),
               _shape(_field(d, "shape", where), where),
               _dtype(_field(d, "dtype", where), where),
               _typed(_field(d, "device", where), (str,), "a device", where))


def _dec_float(d, ctx, where):
    value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(_field(d, "value", where))
    if value is None:
        raise SerializeError(f"{where}: a tagged float is 'nan', 'inf' or '-inf'")
    return value


def _dec_numpy_scalar(d, ctx, where):
    value = _decode(_field(d, "value", where), ctx, where)
    if type(value) not in (bool, int, float):
        raise SerializeError(f"{where}: a numpy scalar holds a number, got {value!r:.60}")
    dtype = _dtype(_field(d, "dtype", where), where)
    try:
        return dtype.type(value)
    except (OverflowError, ValueError, TypeError):
        raise SerializeError(f"{where}: {value!r} is not a {dtype} value") from None


def _dec_const(d, ctx, where):
    dtype = _dtype(_field(d, "dtype", where), where)
    shape = _shape(_field(d, "shape", where), where)
    if "key" in d:
        key = d["key"]
        a = (ctx.arrays or {}).get(key) if isinstance(key, str) else None
        if a is None:
            raise SerializeError(f"{where}: constant array {key!r} is missing from the arrays")
        if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
            raise SerializeError(f"{where}: constant array {key!r} is not a {dtype}{list(shape)} "
                                 f"array")
        c = Const(a)
        if c.digest != key:
            raise SerializeError(f"{where}: constant array {key!r} does not match its digest "
                                 f"(damaged or replaced)")
        return c
    data = _typed(_field(d, "data", where), (str,), "inline constant data", where)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SerializeError(f"{where}: inline constant data is not base64") from None
    if len(raw) != dtype.itemsize * math.prod(shape):
        raise SerializeError(f"{where}: inline constant has {len(raw)} bytes, a "
                             f"{dtype}{list(shape)} array has {dtype.itemsize * math.prod(shape)}")
    return Const(np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(shape))


def _dec_slice(d, ctx, where):
    parts = [_decode(_field(d, k, where), ctx, where) for k in ("start", "stop", "step")]
    if any(p is not None and type(p) is not int for p in parts):
        raise SerializeError(f"{where}: slice bounds are ints or null")
    return slice(*parts)


_DECODE = {
    "float": _dec_float,
    "list": lambda d, ctx, where: [_decode(v, ctx, where) for v in
                                   _typed(_field(d, "items", where), (list,), "items", where)],
    "dtype": lambda d, ctx, where: _dtype(_field(d, "name", where), where),
    "np": _dec_numpy_scalar,
    "slice": _dec_slice,
    "ellipsis": lambda d, ctx, where: Ellipsis,
    "const": _dec_const,
    "var": lambda d, ctx, where: _var(d, where),
    "graph": lambda d, ctx, where: _graph(d, ctx, where),
}


def _decode(x, ctx: _Ctx, where: str):
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return tuple(_decode(v, ctx, where) for v in x)
    tag = _field(x, "$", where)
    dec = _DECODE.get(tag) if isinstance(tag, str) else None
    if dec is None:
        raise SerializeError(f"{where}: unknown type tag {tag!r} (known: {', '.join(_DECODE)})")
    return dec(x, ctx, where)


def _dec_operand(x, env: dict, ctx, where: str):
    if isinstance(x, dict) and x.get("$") == "ref":
        vid = _field(x, "id", where)
        if type(vid) is not int or vid not in env:
            raise SerializeError(f"{where}: Var %{vid} is used before it is defined")
        return env[vid]
    value = _decode(x, ctx, where)
    if not _is_scalar(value):
        raise SerializeError(f"{where}: an operand is a Var reference or a scalar, got "
                             f"{type(value).__name__}")
    return value


def _graph(d, ctx: _Ctx, where: str) -> Graph:
    env: dict = {}  # Var id -> Var, in definition order

    def define(v: Var, here: str):
        if v.id in env:
            raise SerializeError(f"{here}: Var %{v.id} is defined twice")
        env[v.id] = v

    inputs, names = [], []
    for i, entry in enumerate(_typed(_field(d, "inputs", where), (list,), "inputs", where)):
        here = f"{where}, input {i}"
        names.append(_typed(_field(entry, "name", here), (str,), "an input name", here))
        inputs.append(_var(entry, here))
        define(inputs[-1], here)
    nodes = []
    for i, entry in enumerate(_typed(_field(d, "nodes", where), (list,), "nodes", where)):
        op = _field(entry, "op", f"{where}, node {i}")
        here = f"{where}, node {i} ({op})"
        if not isinstance(op, str) or op not in ops.OPS:
            raise SerializeError(f"{here}: unknown op {op!r}")
        out = _var(_field(entry, "out", here), here)
        args = tuple(_dec_operand(x, env, ctx, f"{here}, operand {k}") for k, x in
                     enumerate(_typed(_field(entry, "inputs", here), (list,), "inputs", here)))
        raw_attrs = _typed(_field(entry, "attrs", here), (dict,), "attrs", here)
        # NOTE: attribute order is kept as written, not re-sorted: a fused node's ``outputs``
        # comes last (ir.defined_vars looks for it there)
        attrs = tuple((k, _decode(v, ctx, f"{here}, attribute {k!r}"))
                      for k, v in raw_attrs.items())
        loc = _typed(_field(entry, "loc", here), (str,), "a source location", here)
        node = Node(out, op, args, attrs, loc)
        for v in defined_vars(node):
            define(v, here)
        nodes.append(node)
    outputs = tuple(_dec_operand(x, env, ctx, f"{where}, output {k}") for k, x in
                    enumerate(_typed(_field(d, "outputs", where), (list,), "outputs", where)))
    return Graph(tuple(inputs), tuple(names), tuple(nodes), outputs)


def graph_from_dict(d: dict, arrays: dict | None = None) -> Graph:
    """The Graph ``graph_to_dict`` wrote; ``arrays`` holds the constants it stored outside.
    Raises ``SerializeError`` naming what is wrong and where (node index and op)."""
    fmt = _field(d, "format", "graph file")
    if fmt != FORMAT:
        raise SerializeError(f"graph file: format is {fmt!r}, expected {FORMAT!r}")
    version = _field(d, "version", "graph file")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SerializeError(f"graph file: unknown format version {version!r}")
    if version > FORMAT_VERSION:
        raise SerializeError(f"graph file: format version {version} is newer than this "
                             f"tracejit reads ({FORMAT_VERSION}); upgrade tracejit")
    try:
        return _graph(_field(d, "graph", "graph file"), _Ctx(arrays), "graph")
    except RecursionError:
        raise SerializeError("graph file: values are nested too deeply") from None


def loads(text: str | bytes, arrays: dict | None = None) -> Graph:
    """The Graph in JSON ``text`` written by ``dumps``."""
    def no_constant(name):  # strict JSON: dumps never writes NaN/Infinity literals
        raise SerializeError(f"graph file: non-standard JSON constant {name}")

    try:
        d = json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as e:
        raise SerializeError(f"graph file is not valid JSON (truncated or damaged?): {e}") \
            from None
    except RecursionError:
        raise SerializeError("graph file: values are nested too deeply") from None
    return graph_from_dict(d, arrays)
