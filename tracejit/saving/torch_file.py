"""Reading weights from files ``torch.save`` wrote, without torch and without running code.

torch's default format is a zip: ``<name>/data.pkl`` (a pickle of the object, whose tensors
refer to storages by persistent id), ``<name>/data/<key>`` (each storage's raw bytes) and
``<name>/byteorder``. The pickle is read by an ``Unpickler`` whose ``find_class`` knows only a
fixed table of names (torch's tensor and parameter rebuild functions, its storage types and
dtypes, ``collections.OrderedDict``), each mapped to a function *here* that builds numpy arrays
and tracejit tensors: no torch function, nor any other named by the file, is ever imported or
called. Anything else (a pickled module, optimizer class, numpy object, custom class) is
refused with a message naming it.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile

import numpy as np

from ..utils.torch_interop import widen
from .checkpoint import CheckpointError, _device_for

# torch storage type -> (numpy dtype of its bytes, how to turn them into a tracejit dtype)
_STORAGES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
_DTYPES = {
    "float64": "float64", "double": "float64", "float32": "float32", "float": "float32",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16", "int64": "int64",
    "long": "int64", "int32": "int32", "int": "int32", "int16": "int16", "short": "int16",
    "int8": "int8", "uint8": "uint8", "bool": "bool",
}
MAX_PICKLE_BYTES = 256 << 20
MAX_EXPANDED = 1 << 28  # elements a tensor may have beyond its storage's (an expanded view)


class _StorageType:
    def __init__(self, name: str, dtype: str):
        self.name, self.dtype = name, dtype


class _TorchDtype:
    def __init__(self, name: str):
        self.name = name


class _Storage:
    """One storage's elements, as a flat numpy array (bfloat16 already widened to float32)."""

    def __init__(self, array: np.ndarray, location: str):
        self.array, self.location = array, location


def _widen_bfloat16(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


class TorchFileReader:
    def __init__(self, zf: zipfile.ZipFile, path: str, map_location=None):
        self.zip = zf
        self.path = path
        self.map_location = map_location
        names = zf.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise CheckpointError(f"{path}: not a torch.save file (no single data.pkl)")
        self.prefix = pkl[0][: -len("data.pkl")]
        self.names = set(names)
        order = self._small(self.prefix + "byteorder")
        self.byteorder = "<" if order in (None, b"little") else ">" if order == b"big" else None
        if self.byteorder is None:
            raise CheckpointError(f"{path}: unknown byteorder {order!r:.20} in the torch file")
        self.storages: dict = {}

    def _small(self, name: str):
        if name not in self.names:
            return None
        return self._read(name, 64).strip()

    def _read(self, name: str, cap: int) -> bytes:
        """A member's bytes, refusing more than ``cap`` (whatever its header claims) and zip
        bombs (torch stores members uncompressed)."""
        info = self.zip.getinfo(name)
        if info.file_size > cap:
            raise CheckpointError(f"{self.path}: member {name!r} is {info.file_size} bytes, "
                                  f"over the limit of {cap}")
        if info.file_size > 1 << 20 and info.file_size > 1000 * max(info.compress_size, 1):
            raise CheckpointError(f"{self.path}: member {name!r} inflates {info.file_size} "
                                  f"bytes from {info.compress_size}: refused as a zip bomb")
        try:
            with self.zip.open(info) as f:
                data = f.read(cap + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
            raise CheckpointError(f"{self.path}: member {name!r} is damaged: {e}") from None
        if len(data) > cap:
            raise CheckpointError(f"{self.path}: member {name!r} inflates past {cap} bytes")
        return data

    def fail(self, what: str):
        return CheckpointError(
            f"{self.path}: a torch.save file holding {what}: tj.load reads only plain tensors, "
            f"parameters, numbers, strings and dicts/lists/tuples of them from torch files, "
            f"and never runs code from them. Save a state_dict (torch.save(model.state_dict(), "
            f"f)) or load this file with torch itself")

    # -- the names the pickle may use
    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full == "collections.OrderedDict":
            return collections.OrderedDict
        if full == "torch._utils._rebuild_tensor_v2":
            return self._rebuild_tensor_v2
        if full == "torch._utils._rebuild_tensor":
            return self._rebuild_tensor
        if full == "torch._utils._rebuild_tensor_v3":
            return self._rebuild_tensor_v3
        if full in ("torch._utils._rebuild_parameter",
                    "torch._utils._rebuild_parameter_with_state"):
            return self._rebuild_parameter
        if full == "torch.Size":
            return tuple
        if full == "_codecs.encode":  # how protocol 2 pickles bytes
            return _codecs_encode
        if module == "torch" and name in _STORAGES:
            return _StorageType(name, _STORAGES[name])
        if module == "torch" and name in _DTYPES:
            return _TorchDtype(_DTYPES[name])
        raise self.fail(f"{full} (not a plain tensor)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise self.fail(f"a persistent reference {str(pid)[:60]}")
        _, stype, key, location, numel = pid
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or \
                not isinstance(location, str) or type(numel) is not int or numel < 0:
            raise self.fail(f"a storage reference {str(pid)[:60]}")
        cached = self.storages.get(key)
        if cached is not None:
            return cached
        member = f"{self.prefix}data/{key}"
        if member not in self.names:
            raise CheckpointError(f"{self.path}: storage {key!r} is missing (truncated file?)")
        raw_dtype = np.dtype("uint16" if stype.dtype == "bfloat16" else stype.dtype)
        raw_dtype = raw_dtype.newbyteorder(self.byteorder)
        nbytes = numel * raw_dtype.itemsize
        info = self.zip.getinfo(member)
        if info.file_size != nbytes:
            raise CheckpointError(f"{self.path}: storage {key!r} has {info.file_size} bytes, "
                                  f"its reference says {nbytes} (damaged file?)")
        data = self._read(member, nbytes)
        if len(data) != nbytes:
            raise CheckpointError(f"{self.path}: storage {key!r} is truncated")
        a = np.frombuffer(data, raw_dtype).astype(raw_dtype.newbyteorder("="))
        if stype.dtype == "bfloat16":
            a = _widen_bfloat16(a)
        storage = _Storage(a, location)
        self.storages[key] = storage
        return storage

    # -- rebuild functions: numpy arrays and tracejit tensors, never torch's
    def _rebuild_tensor(self, storage, offset, size, stride):
        from ..tensor import Tensor

        if not isinstance(storage, _Storage):
            raise self.fail("a tensor without a storage")
        if type(offset) is not int or not isinstance(size, tuple) or \
                not isinstance(stride, tuple) or len(size) != len(stride) or \
                not all(type(s) is int for s in size + stride):
            raise CheckpointError(f"{self.path}: a tensor with malformed size/stride")
        flat = storage.array
        if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise self.fail("a tensor with negative sizes, strides or offset")
        n_elem = math.prod(size)
        if n_elem > max(flat.size, MAX_EXPANDED):  # stride 0 (expand) could ask for petabytes
            raise CheckpointError(f"{self.path}: a tensor of {n_elem} elements built from a "
                                  f"storage of {flat.size}: refused (over {MAX_EXPANDED})")
        if n_elem == 0:
            a = np.zeros(size, flat.dtype)
        else:
            last = offset + sum((n - 1) * st for n, st in zip(size, stride))
            if last >= flat.size:
                raise CheckpointError(f"{self.path}: a tensor reaches element {last} of a "
                                      f"storage of {flat.size} (damaged file?)")
            a = np.array(np.lib.stride_tricks.as_strided(
                flat[offset:], size, tuple(st * flat.itemsize for st in stride), writeable=False))
        t = Tensor._make(widen(a))
        dev = _device_for(storage.location, self.map_location, self.path)
        return t.to(dev) if dev != "cpu" else t

    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None):
        t = self._rebuild_tensor(storage, offset, size, stride)
        if requires_grad is True and t.dtype.kind == "f":
            t.requires_grad_(True)
        return t

    def _rebuild_tensor_v3(self, storage, offset, size, stride, requires_grad, backward_hooks,
                           dtype, metadata=None):
        if not isinstance(dtype, _TorchDtype):
            raise self.fail(f"a tensor of dtype {dtype!r:.30}")
        return self._rebuild_tensor_v2(storage, offset, size, stride, requires_grad)

    def _rebuild_parameter(self, data, requires_grad, backward_hooks, state=None):
        from ..nn.parameter import Parameter
        from ..tensor import Tensor

        if not isinstance(data, Tensor):
            raise self.fail("a parameter without tensor data")
        if state:
            raise self.fail("a parameter with extra Python state")
        return Parameter(data, requires_grad=bool(requires_grad) and data.dtype.kind == "f")

    def load(self):
        data = self._read(self.prefix + "data.pkl", MAX_PICKLE_BYTES)
        unpickler = _Unpickler(io.BytesIO(data), self)
        try:
            return unpickler.load()
        except CheckpointError:
            raise
        except RecursionError:
            raise CheckpointError(f"{self.path}: data.pkl is nested too deeply") from None
        except Exception as e:  # a damaged pickle: UnpicklingError, EOFError, ...
            raise CheckpointError(f"{self.path}: data.pkl cannot be read ({type(e).__name__}: "
                                  f"{e})") from None


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("unsupported _codecs.encode call")
    return text.encode(encoding)


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, reader: TorchFileReader):
        super().__init__(f)
        self._reader = reader

    def find_class(self, module, name):
        return self._reader.find_class(module, name)

    def persistent_load(self, pid):
        return self._reader.persistent_load(pid)


def is_torch_zip(names) -> bool:
    return any(n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)
               for n in names)


def load_torch_file(zf: zipfile.ZipFile, path: str, map_location=None):
    return TorchFileReader(zf, path, map_location).load()


__all__ = ["is_torch_zip", "load_torch_file"]
