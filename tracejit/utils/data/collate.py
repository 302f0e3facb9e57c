"""Turning a list of samples into a batch (``default_collate``) and samples into tensors
(``default_convert``), with torch's rules:

- tensors are stacked on a new first dimension; numpy arrays become tensors, then are stacked;
  numpy scalars become a 1-d tensor of their dtype;
- Python floats become float64, ints int64 (bools bool), as torch does;
- strings and bytes stay a list; dicts, named tuples, tuples and lists are collated per field
  (a tuple of fields becomes a list, as in torch).

>>> default_collate([(1, 2.0), (3, 4.0)])
[tensor([1, 3]), tensor([2., 4.], dtype=tracejit.float64)]
"""

from __future__ import annotations

import collections.abc
import copy
import re
from typing import Callable

import numpy as np

from ...creation import from_numpy, tensor
from ...dispatch import current_tracer
from ...functions import stack
from ...tensor import Tensor

# numpy dtype strings of bytes, strings, unicode and objects: not tensor material
_NP_STR_OBJ = re.compile(r"[SaUO]")

default_collate_err_msg_format = (
    "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
    "found {}")


def _from_numpy(arr: np.ndarray) -> Tensor:
    # NOTE: tracejit tensors hold float32/float64/int32/int64/bool only; other dtypes (uint8
    # images, float16) raise tracejit's TypeError, which says to convert with .astype first.
    # (np.ascontiguousarray would turn a 0-d array into 1-d)
    return from_numpy(arr if arr.flags.c_contiguous else arr.copy())


def collate_tensor_fn(batch, *, collate_fn_map=None):
    # NOTE: samples that need no gradient (the usual case) are stacked by numpy directly:
    # tracejit's stack dispatches per input, 8 ms against 0.5 ms for 256 samples of 784 floats
    if current_tracer() is None and not any(t.requires_grad for t in batch):
        return Tensor._make(np.stack([t._data for t in batch]))
    return stack(list(batch), 0)


def collate_numpy_array_fn(batch, *, collate_fn_map=None):
    if _NP_STR_OBJ.search(batch[0].dtype.str) is not None:
        raise TypeError(default_collate_err_msg_format.format(batch[0].dtype))
    return collate([_from_numpy(b) for b in batch], collate_fn_map=collate_fn_map)


def collate_numpy_scalar_fn(batch, *, collate_fn_map=None):
    return _from_numpy(np.asarray(batch))


def collate_float_fn(batch, *, collate_fn_map=None):
    return tensor(list(batch), dtype=np.float64)


def collate_int_fn(batch, *, collate_fn_map=None):
    # torch.tensor(batch): ints -> int64, all bools -> bool
    return tensor(list(batch))


def collate_str_fn(batch, *, collate_fn_map=None):
    return batch


# Looked up by exact type first, then by isinstance in this order (torch's order: numpy
# scalars before float, since numpy.float64 is a float subclass but collates to float64 too).
default_collate_fn_map: dict = {
    Tensor: collate_tensor_fn,
    np.ndarray: collate_numpy_array_fn,
    (np.bool_, np.number, np.object_): collate_numpy_scalar_fn,
    float: collate_float_fn,
    int: collate_int_fn,
    str: collate_str_fn,
    bytes: collate_str_fn,
}


def collate(batch, *, collate_fn_map: dict[type | tuple, Callable] | None = None):
    """Collate ``batch`` with the per-type functions of ``collate_fn_map``, recursing into
    mappings, named tuples and sequences (torch's ``torch.utils.data._utils.collate.collate``)."""
    elem = batch[0]
    elem_type = type(elem)
    if collate_fn_map is not None:
        if elem_type in collate_fn_map:
            return collate_fn_map[elem_type](batch, collate_fn_map=collate_fn_map)
        for collate_type, fn in collate_fn_map.items():
            if isinstance(elem, collate_type):
                return fn(batch, collate_fn_map=collate_fn_map)

    def rec(samples):
        return collate(samples, collate_fn_map=collate_fn_map)

    if isinstance(elem, collections.abc.Mapping):
        fields = {key: rec([d[key] for d in batch]) for key in elem}
        try:
            if isinstance(elem, collections.abc.MutableMapping):
                clone = copy.copy(elem)  # keeps the mapping's type and extra state
                clone.update(fields)
                return clone
            return elem_type(fields)
        except TypeError:  # a mapping type that cannot be built from a dict
            return fields
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # named tuple
        return elem_type(*(rec(samples) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if not all(len(e) == size for e in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        transposed = list(zip(*batch))
        if isinstance(elem, tuple):
            return [rec(samples) for samples in transposed]  # torch returns a list here
        try:
            if isinstance(elem, collections.abc.MutableSequence):
                clone = copy.copy(elem)
                for i, samples in enumerate(transposed):
                    clone[i] = rec(samples)
                return clone
            return elem_type([rec(samples) for samples in transposed])
        except TypeError:
            return [rec(samples) for samples in transposed]
    raise TypeError(default_collate_err_msg_format.format(elem_type))


def default_collate(batch):
    """The DataLoader's default ``collate_fn`` when batching (see the module docstring)."""
    return collate(batch, collate_fn_map=default_collate_fn_map)


def default_convert(data):
    """The default ``collate_fn`` with ``batch_size=None``: numpy arrays and scalars inside
    ``data`` become tensors (arrays without a copy), containers are kept, the rest unchanged."""
    elem_type = type(data)
    if isinstance(data, Tensor):
        return data
    if elem_type.__module__ == "numpy" and elem_type.__name__ not in ("str_", "bytes_"):
        if isinstance(data, np.ndarray) and _NP_STR_OBJ.search(data.dtype.str) is not None:
            return data
        return from_numpy(data) if isinstance(data, np.ndarray) else _from_numpy(np.asarray(data))
    if isinstance(data, collections.abc.Mapping):
        fields = {key: default_convert(data[key]) for key in data}
        try:
            if isinstance(data, collections.abc.MutableMapping):
                clone = copy.copy(data)
                clone.update(fields)
                return clone
            return elem_type(fields)
        except TypeError:
            return fields
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return elem_type(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        try:
            if isinstance(data, collections.abc.MutableSequence):
                clone = copy.copy(data)
                for i, d in enumerate(data):
                    clone[i] = default_convert(d)
                return clone
            return elem_type([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data
