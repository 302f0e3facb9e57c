"""Loading array files into ``TensorDataset``s: ``.npz``, ``.npy`` and ``.csv``, numpy only.

Nothing is downloaded and nothing is unpickled (``allow_pickle=False``): a data file can
hold numbers, never code.

>>> ds = load_npz("digits.npz")             # doctest: +SKIP
>>> x, y = ds[0]
"""

from __future__ import annotations

import os

import numpy as np

from .creation import from_numpy
from .utils.data import TensorDataset

# tracejit tensors hold these; other numeric dtypes are widened (uint8 images -> int64, float16
# -> float32) so that a file saved by another tool loads without a manual conversion
_WIDEN = {"b": np.bool_, "u": np.int64, "i": np.int64, "f": np.float32}
_KEEP = (np.float32, np.float64, np.int32, np.int64, np.bool_)


def _as_tensor(arr: np.ndarray, name: str):
    if arr.dtype.type in _KEEP:
        return from_numpy(arr if arr.flags.c_contiguous else arr.copy())
    if arr.dtype.kind not in _WIDEN:
        raise TypeError(f"{name}: dtype {arr.dtype} cannot become a tracejit tensor "
                        "(numbers and bools only)")
    if arr.dtype.kind == "u" and arr.dtype.itemsize < 8:
        return from_numpy(arr.astype(np.int64))
    if arr.dtype.kind == "u":
        raise TypeError(f"{name}: dtype {arr.dtype} does not fit a tracejit tensor (int64)")
    return from_numpy(arr.astype(_WIDEN[arr.dtype.kind]))


def _check_lengths(arrays: dict) -> None:
    lengths = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
    if None in lengths.values() or len(set(lengths.values())) > 1:
        shapes = ", ".join(f"{k}: {a.shape}" for k, a in arrays.items())
        raise ValueError(f"arrays must share their first dimension (one row per sample), "
                         f"got shapes {{{shapes}}}")


def load_npz(path: str | os.PathLike, keys: list[str] | None = None) -> TensorDataset:
    """A TensorDataset of the arrays in an ``.npz`` file, in ``keys`` order (default: the
    order they were saved in, e.g. ``np.savez(path, x=..., y=...)`` -> samples ``(x[i], y[i])``).
    """
    with np.load(path, allow_pickle=False) as f:
        keys = list(f.files) if keys is None else list(keys)
        missing = [k for k in keys if k not in f.files]
        if missing:
            raise KeyError(f"load_npz: {os.fspath(path)} has no arrays {missing}; "
                           f"it holds {f.files}")
        arrays = {k: f[k] for k in keys}
    if not arrays:
        raise ValueError(f"load_npz: {os.fspath(path)} holds no arrays")
    _check_lengths(arrays)
    return TensorDataset(*(_as_tensor(a, f"load_npz({k!r})") for k, a in arrays.items()))


def load_npy(*paths: str | os.PathLike, mmap_mode: str | None = None) -> TensorDataset:
    """A TensorDataset of one ``.npy`` file per tensor: ``load_npy("x.npy", "y.npy")``.

    ``mmap_mode="r"`` maps float32/float64/int32/int64/bool files instead of reading them.
    """
    if not paths:
        raise TypeError("load_npy expects at least one path")
    arrays = {os.fspath(p): np.load(p, allow_pickle=False, mmap_mode=mmap_mode) for p in paths}
    _check_lengths(arrays)
    return TensorDataset(*(_as_tensor(np.asarray(a), f"load_npy({k!r})")
                           for k, a in arrays.items()))


def load_csv(path: str | os.PathLike, target_column: int | str | None = -1,
             delimiter: str = ",", header: bool = True, dtype=np.float32,
             target_dtype=None) -> TensorDataset:
    """A TensorDataset ``(features, target)`` from a numeric CSV file.

    ``target_column`` is a column index or (with ``header=True``) a column name; None gives a
    dataset of the features only. Features are ``dtype`` (float32); the target is int64 when
    every value is a whole number (class labels), else ``dtype``, unless ``target_dtype`` says.
    """
    names = None
    with open(path, newline="") as f:
        if header:
            first = f.readline()
            names = [n.strip().strip('"') for n in first.rstrip("\r\n").split(delimiter)]
        data = np.loadtxt(f, delimiter=delimiter, dtype=np.float64, ndmin=2)
    if data.size == 0:
        raise ValueError(f"load_csv: {os.fspath(path)} has no data rows")
    if target_column is None:
        return TensorDataset(from_numpy(data.astype(dtype)))
    if isinstance(target_column, str):
        if names is None:
            raise ValueError("load_csv: a target column name needs header=True")
        if target_column not in names:
            raise KeyError(f"load_csv: no column {target_column!r}; columns are {names}")
        col = names.index(target_column)
    else:
        col = int(target_column)
        if not -data.shape[1] <= col < data.shape[1]:
            raise IndexError(f"load_csv: target_column {col} out of range for "
                             f"{data.shape[1]} columns")
        col %= data.shape[1]
    target = data[:, col]
    features = np.delete(data, col, axis=1).astype(dtype)
    if target_dtype is None:
        target_dtype = np.int64 if np.all(np.mod(target, 1) == 0) else dtype
    return TensorDataset(from_numpy(features), from_numpy(target.astype(target_dtype)))
