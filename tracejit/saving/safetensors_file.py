"""The safetensors format (Hugging Face's weight files), read and written here without the
``safetensors`` package: an 8-byte little-endian header size, a JSON header naming each
tensor's dtype, shape and byte range, then the raw little-endian bytes. There is no code in
the format at all; reading checks every range against the buffer (contiguous, in order,
exactly the size its shape and dtype say).

>>> tj.utils.safetensors.save_file(model.state_dict(), "model.safetensors")   # doctest: +SKIP
>>> model.load_state_dict(tj.load("model.safetensors"))                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from ..utils.torch_interop import widen
from .atomic import atomic_write
from .checkpoint import CheckpointError, _device_for

_TO_NUMPY = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
             "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16",
             "F32": "float32", "F64": "float64", "BF16": "bfloat16"}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items() if k != "BF16"}
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """The first bytes of a file (at least 9) are a safetensors header's."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= min(MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{"


def _error(path: str, what: str):
    return CheckpointError(f"{path}: {what} (not a valid safetensors file: damaged or "
                           f"truncated?)")


def read(data: bytes, path: str, map_location=None, device: str | None = None) -> dict:
    """``{name: Tensor}`` from a safetensors file's bytes (header order)."""
    from ..tensor import Tensor

    if len(data) < 8:
        raise _error(path, "shorter than its header size")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise _error(path, f"a header of {n} bytes in a file of {len(data)}")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _error(path, f"the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise _error(path, "the header is not a JSON object")
    header.pop("__metadata__", None)
    buf = memoryview(data)[8 + n:]
    entries = []
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise _error(path, f"tensor {name!r:.60} has a malformed entry")
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in _TO_NUMPY:
            raise CheckpointError(f"{path}: tensor {name!r:.60} has dtype {dtype!r:.20}, which "
                                  f"tracejit does not read (supported: "
                                  f"{', '.join(_TO_NUMPY)})")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise _error(path, f"tensor {name!r:.60} has shape {shape!r:.60}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and
                all(type(o) is int for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise _error(path, f"tensor {name!r:.60} has data_offsets {offsets!r:.60}")
        entries.append((offsets[0], offsets[1], name, dtype, tuple(shape)))
    end = 0
    for begin, stop, name, _, _ in sorted(entries):
        if begin != end:
            raise _error(path, f"tensor {name!r:.60} starts at byte {begin}, not {end}: the "
                               f"data has holes or overlaps")
        end = stop
    if end != len(buf):
        raise _error(path, f"the tensors cover {end} bytes of a data section of {len(buf)}")
    out = {}
    for begin, stop, name, dtype, shape in entries:
        raw = np.dtype("uint16" if dtype == "BF16" else _TO_NUMPY[dtype]).newbyteorder("<")
        count = math.prod(shape)  # Python ints: a huge shape cannot wrap around
        if (stop - begin) != count * raw.itemsize:
            raise _error(path, f"tensor {name!r:.60} has {stop - begin} bytes, its shape "
                               f"{list(shape)} and dtype {dtype} need {count * raw.itemsize}")
        a = np.frombuffer(buf[begin:stop], raw).astype(raw.newbyteorder("="))
        if dtype == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        try:
            t = Tensor._make(widen(a.reshape(shape), f"tensor {name!r:.60}"))
        except TypeError as e:
            raise CheckpointError(f"{path}: {e}") from None
        dev = device or _device_for("cpu", map_location, path)
        out[name] = t.to(dev) if dev != "cpu" else t
    return out


def save_file(tensors: dict, filename, metadata: dict | None = None) -> None:
    """Write ``{name: tensor}`` (tracejit tensors or numpy arrays) as a safetensors file,
    atomically, as ``safetensors.torch.save_file`` does."""
    from ..tensor import Tensor, _host_data

    if not isinstance(tensors, dict):
        raise TypeError(f"save_file: expected a dict of tensors, got {type(tensors).__name__}")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError("save_file: metadata must be a dict of str to str")
    arrays = []
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"save_file: tensor names must be strings, got {name!r:.40}")
        a = np.asarray(_host_data(t) if isinstance(t, Tensor) else t)
        if a.dtype.name not in _FROM_NUMPY:
            raise TypeError(f"save_file: tensor {name!r} has dtype {a.dtype}, which safetensors "
                            f"cannot hold")
        arrays.append((name, a))
    # as the safetensors library: larger elements first (aligned), then by name
    arrays.sort(key=lambda p: (-p[1].dtype.itemsize, p[0]))
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    chunks = []
    for name, a in arrays:
        b = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _FROM_NUMPY[a.dtype.name], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        chunks.append(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with atomic_write(filename) as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in chunks:
            f.write(b)


def load_file(filename, device="cpu") -> dict:
    """``{name: Tensor}`` from a safetensors file, as ``safetensors.torch.load_file``."""
    with open(filename, "rb") as f:
        data = f.read()
    return read(data, os.fspath(filename), device=str(device))


__all__ = ["save_file", "load_file"]
