"""Checkpoints: ``tj.save(obj, f)`` writes tensors, state dicts, optimizer state and nested
containers of them as data only, in the same zip container as exports (``export/format.py``):
a JSON manifest describing the object, one ``.npy`` member per tensor or array, every member
listed with its size and sha256. Nothing is pickled, and loading builds values from a closed set
of tags: a file can at worst raise ``CheckpointError``.

>>> tj.save({"model": model.state_dict(), "step": 10}, "ckpt.tj")      # doctest: +SKIP
>>> tj.load("ckpt.tj")["step"]                                          # doctest: +SKIP
10

The object is encoded as JSON (docs/export.md, "Checkpoints"): ``null``, booleans, strings,
integers, finite floats and lists stand for themselves; everything else is an object with a
``"$"`` tag (``tuple``, ``dict``, ``odict``, ``float``, ``tensor``, ``ndarray``, ``dtype``,
``bytes``). Tensors are kept in a table, so a tensor saved twice (tied weights) is stored once
and loads as one tensor.
"""

from __future__ import annotations

import base64
import collections
import math
import numbers

import numpy as np

from ..export.format import DTYPES, ExportError, npy_bytes, write
from ..tensor import Tensor, _host_data
from ..utils.torch_interop import is_torch_tensor, torch_to_numpy
from ..version import __version__

FORMAT = "tracejit.checkpoint"
VERSION = 1  # bump on any change an older reader would misread
MAX_DEPTH = 200
_TENSOR_DTYPES = ("float32", "float64", "int32", "int64", "bool")  # tracejit tensors' dtypes


class CheckpointError(ExportError):
    """A checkpoint that cannot be written, or a file ``tj.load`` cannot read as one (damaged,
    tampered, newer, or holding something other than data)."""


def _refuse(x, where: str):
    kind = type(x).__module__ + "." + type(x).__qualname__
    hint = ""
    if hasattr(x, "state_dict") and callable(x.state_dict):
        hint = "; save its state_dict() instead"
    raise TypeError(
        f"tj.save: cannot store {kind} at {where or 'the top level'}: a checkpoint holds data "
        f"only (tensors, numpy arrays, numbers, strings, bytes, None, dtypes, and dicts, "
        f"lists and tuples of them), never pickled objects{hint}")


class _Encoder:
    def __init__(self):
        self.members: dict = {}
        self.tensors: list = []
        self._tensor_ids: dict = {}  # id(tensor) -> index in self.tensors
        self._keep: list = []  # keeps saved objects alive, so their ids stay unique
        self._from_torch: dict = {}  # id(torch tensor) -> its tracejit copy

    def array_member(self, a: np.ndarray, where: str) -> str:
        if DTYPES.get(a.dtype.name) != a.dtype:
            raise TypeError(f"tj.save: the array at {where or 'the top level'} has dtype "
                            f"{a.dtype}, which a checkpoint cannot hold (supported: "
                            f"{', '.join(DTYPES)})")
        name = f"data/{len(self.members)}.npy"
        self.members[name] = npy_bytes(a)
        return name

    def encode(self, x, where: str = "", depth: int = 0):
        if depth > MAX_DEPTH:
            raise ValueError(f"tj.save: the object is nested more than {MAX_DEPTH} levels deep "
                             f"(at {where}); a cycle?")
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, Tensor):
            return {"$": "tensor", "index": self.tensor(x, where)}
        if isinstance(x, np.ndarray):
            return {"$": "ndarray", "member": self.array_member(x, where)}
        if is_torch_tensor(x):  # a torch state dict saved by tj.save: stored as tracejit's
            t = self._from_torch.get(id(x))
            if t is None:
                t = Tensor._make(torch_to_numpy(x))
                t.requires_grad = bool(x.requires_grad) and t.dtype.kind == "f"
                self._from_torch[id(x)] = t
                self._keep.append(x)
            return {"$": "tensor", "index": self.tensor(t, where)}
        if isinstance(x, np.generic):
            return {"$": "ndarray", "member": self.array_member(np.asarray(x), where),
                    "scalar": True}
        if isinstance(x, numbers.Integral):
            return int(x)
        if isinstance(x, float):
            if math.isfinite(x):
                return x
            return {"$": "float", "value": repr(x)}  # 'nan', 'inf', '-inf'
        if isinstance(x, np.dtype):
            return {"$": "dtype", "name": x.name}
        if isinstance(x, type) and issubclass(x, np.generic):  # np.float32 as a dtype
            return {"$": "dtype", "name": np.dtype(x).name}
        if isinstance(x, (bytes, bytearray)):
            return {"$": "bytes", "base64": base64.b64encode(bytes(x)).decode("ascii")}
        if type(x) is list:
            return [self.encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(x)]
        if type(x) is tuple:
            return {"$": "tuple",
                    "items": [self.encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(x)]}
        if isinstance(x, dict) and type(x) in (dict, collections.OrderedDict,
                                               collections.defaultdict):
            items = []
            for k, v in x.items():
                key = self.encode_key(k, where)
                items.append([key, self.encode(v, f"{where}[{k!r}]", depth + 1)])
            tag = "odict" if isinstance(x, collections.OrderedDict) else "dict"
            return {"$": tag, "items": items}
        _refuse(x, where)

    def encode_key(self, k, where: str):
        if isinstance(k, tuple):
            return {"$": "tuple", "items": [self.encode_key(v, where) for v in k]}
        if k is None or isinstance(k, (bool, str, numbers.Integral)) or (
                isinstance(k, float) and math.isfinite(k)):
            return self.encode(k, where)
        raise TypeError(f"tj.save: the dict at {where or 'the top level'} has a key {k!r:.60} "
                        f"of type {type(k).__name__}; keys may be strings, numbers, None, or "
                        f"tuples of them")

    def tensor(self, t: Tensor, where: str) -> int:
        index = self._tensor_ids.get(id(t))
        if index is not None:
            return index
        from ..nn.parameter import Parameter

        data = _host_data(t)
        entry = {"member": self.array_member(np.asarray(data), where),
                 "dtype": data.dtype.name, "shape": list(data.shape),
                 "requires_grad": bool(t.requires_grad), "device": str(t.device)}
        if isinstance(t, Parameter):
            entry["parameter"] = True
        index = len(self.tensors)
        self.tensors.append(entry)
        self._tensor_ids[id(t)] = index
        self._keep.append(t)
        return index


def save(obj, f, pickle_module=None, pickle_protocol=None,
         _use_new_zipfile_serialization=True) -> None:
    """Write ``obj`` (tensors, state dicts, optimizer state, numbers, strings, None, and
    dicts/lists/tuples of them) to ``f`` (a path, written atomically, or a binary file object).

    >>> tj.save(model.state_dict(), "model.tj")                        # doctest: +SKIP
    >>> model.load_state_dict(tj.load("model.tj"))                    # doctest: +SKIP
    """
    if pickle_module is not None:
        raise TypeError("tj.save(pickle_module=...): tracejit checkpoints are data only and never "
                        "pickled")
    del pickle_protocol, _use_new_zipfile_serialization  # torch's options; nothing to choose here
    enc = _Encoder()
    tree = enc.encode(obj)
    manifest = {"format": FORMAT, "version": VERSION, "tracejit": __version__,
                "tensors": enc.tensors, "object": tree}
    write(f, manifest, enc.members)


# ---------------------------------------------------------------------------------------------
# loading


def _device_for(saved: str, map_location, path: str) -> str:
    if map_location is None:
        dev = saved
    elif isinstance(map_location, dict):
        dev = map_location.get(saved, saved)
        dev = str(dev)
    elif callable(map_location):
        raise TypeError("tj.load: map_location as a function is not supported (tracejit has no "
                        "storages to hand it); pass a device, e.g. map_location='cpu', or a dict "
                        "{'cuda:0': 'cpu'}")
    else:
        dev = str(map_location)
    if str(dev).startswith("cuda"):
        from .. import cuda
        if not cuda.is_available():
            raise RuntimeError(
                f"{path}: the checkpoint holds tensors saved on {saved}, but CUDA is not "
                f"available here; load them on the CPU with tj.load(f, map_location='cpu')")
    return dev


class _Decoder:
    def __init__(self, reader, map_location):
        self.reader = reader
        self.path = reader.path
        self.map_location = map_location
        self.tensors: list = []

    def error(self, what: str):
        return CheckpointError(f"{self.path}: {what} (damaged or tampered checkpoint?)")

    def load_tensors(self, table):
        from ..nn.parameter import Parameter

        if not isinstance(table, list):
            raise self.error("the manifest's 'tensors' is not a list")
        for i, e in enumerate(table):
            if not isinstance(e, dict):
                raise self.error(f"tensors[{i}] is not an object")
            dtype, shape = e.get("dtype"), e.get("shape")
            if not isinstance(dtype, str) or dtype not in _TENSOR_DTYPES:
                raise self.error(f"tensors[{i}] has dtype {dtype!r:.40}")
            if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
                raise self.error(f"tensors[{i}] has shape {shape!r:.60}")
            member, device = e.get("member"), e.get("device", "cpu")
            if not isinstance(member, str) or not isinstance(device, str):
                raise self.error(f"tensors[{i}] names no member or device")
            a = self.reader.array(member, DTYPES[dtype], shape)
            if not a.flags.writeable:
                a = np.array(a)
            t = Tensor._make(a)
            dev = _device_for(device, self.map_location, self.path)
            if dev != "cpu":
                t = t.to(dev)
            if e.get("parameter") is True:
                t = Parameter(t, requires_grad=e.get("requires_grad") is True)
            elif e.get("requires_grad") is True and t.dtype.kind == "f":
                t.requires_grad_(True)
            self.tensors.append(t)

    def decode(self, x, depth: int = 0):
        if depth > MAX_DEPTH:
            raise self.error(f"the object is nested more than {MAX_DEPTH} levels deep")
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, list):
            return [self.decode(v, depth + 1) for v in x]
        if not isinstance(x, dict):
            raise self.error(f"unexpected value {x!r:.60} in the object")
        tag = x.get("$")
        if tag == "tensor":
            i = x.get("index")
            if type(i) is not int or not 0 <= i < len(self.tensors):
                raise self.error(f"a tensor reference {i!r:.20} is out of range")
            return self.tensors[i]
        if tag == "ndarray":
            member = x.get("member")
            if not isinstance(member, str):
                raise self.error("an array names no member")
            a = self.reader.array(member)
            if x.get("scalar") is True:
                return a[()] if a.ndim == 0 else self._bad(x)
            return a if a.flags.writeable else np.array(a)
        if tag == "float":
            v = x.get("value")
            if v not in ("nan", "inf", "-inf"):
                raise self.error(f"a float value {v!r:.20}")
            return float(v)
        if tag == "dtype":
            name = x.get("name")
            if name not in DTYPES:
                raise self.error(f"a dtype {name!r:.20}")
            return DTYPES[name]
        if tag == "bytes":
            try:
                return base64.b64decode(x.get("base64", ""), validate=True)
            except (ValueError, TypeError):
                raise self.error("a bytes value is not base64") from None
        if tag == "tuple":
            return tuple(self.decode(v, depth + 1) for v in self._items(x))
        if tag in ("dict", "odict"):
            out = collections.OrderedDict() if tag == "odict" else {}
            for pair in self._items(x):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise self.error("a dict item is not a [key, value] pair")
                key = self.decode(pair[0], depth + 1)
                try:
                    hash(key)
                except TypeError:
                    raise self.error(f"a dict key of type {type(key).__name__}") from None
                out[key] = self.decode(pair[1], depth + 1)
            return out
        return self._bad(x)

    def _items(self, x):
        items = x.get("items")
        if not isinstance(items, list):
            raise self.error(f"a {x.get('$')} has no item list")
        return items

    def _bad(self, x):
        raise self.error(f"unknown value tag {x.get('$')!r:.40}")


def load_checkpoint(reader, map_location=None):
    """The object a checkpoint holds (``reader``: an open ``export.format.Reader``)."""
    m = reader.manifest
    version = m.get("version")
    if type(version) is not int:
        raise CheckpointError(f"{reader.path}: the checkpoint names no version")
    if version > VERSION:
        raise CheckpointError(f"{reader.path}: checkpoint version {version} is newer than this "
                              f"tracejit reads ({VERSION}); upgrade tracejit to load it")
    dec = _Decoder(reader, map_location)
    dec.load_tensors(m.get("tensors", []))
    if "object" not in m:
        raise CheckpointError(f"{reader.path}: the checkpoint's manifest holds no object")
    obj = dec.decode(m["object"])
    reader.check_all_read()
    return obj


__all__ = ["FORMAT", "VERSION", "CheckpointError", "save", "load_checkpoint"]
