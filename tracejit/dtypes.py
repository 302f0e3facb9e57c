"""dtypes and torch-style type promotion.

tracejit's dtypes are numpy dtypes, so ``x.dtype == tracejit.float32 == np.float32`` holds.

>>> promote_types(float32, int64)
dtype('float32')
"""

from __future__ import annotations

import numpy as np

float32 = np.dtype("float32")
float64 = np.dtype("float64")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
bool_ = np.dtype("bool")

SUPPORTED = (float32, float64, int32, int64, bool_)
_NAMES = {
    "float32": float32, "float": float32, "float64": float64, "double": float64,
    "int32": int32, "int": int32, "int64": int64, "long": int64, "bool": bool_,
}
_DEFAULT_FLOAT = [float32]

# category: 0 bool, 1 integer, 2 floating
_CATEGORY = {bool_: 0, int32: 1, int64: 1, float32: 2, float64: 2}


def get_default_dtype() -> np.dtype:
    """The dtype Python floats and float factories produce (float32 unless changed)."""
    return _DEFAULT_FLOAT[0]


def set_default_dtype(dtype) -> None:
    """Set the default floating dtype, as ``torch.set_default_dtype``."""
    d = as_dtype(dtype)
    if d not in (float32, float64):
        raise TypeError(f"set_default_dtype: only float32 and float64 are allowed, got {d}")
    _DEFAULT_FLOAT[0] = d
    _promote_cache.clear()
    for listener in on_default_dtype_change:
        listener()


on_default_dtype_change: list = []  # callbacks that drop caches keyed on the default dtype


def as_dtype(dtype) -> np.dtype:
    """Normalise a dtype given as a numpy dtype, numpy type, Python type or name."""
    if dtype is None:
        return get_default_dtype()
    if isinstance(dtype, str):
        d = _NAMES.get(dtype.removeprefix("tracejit."))
        if d is None:
            names = ", ".join(n.name for n in SUPPORTED)
            raise TypeError(f"unknown dtype {dtype!r}; supported: {names}")
        return d
    if dtype is float:
        return get_default_dtype()
    if dtype is int:
        return int64
    if dtype is bool:
        return bool_
    try:
        d = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}") from None
    if d not in _CATEGORY:
        raise TypeError(
            f"dtype {d} is not supported by tracejit; supported: "
            f"{', '.join(n.name for n in SUPPORTED)} (convert with .astype first)")
    return d


def is_floating(dtype) -> bool:
    return _CATEGORY[dtype] == 2


def category(dtype) -> int:
    return _CATEGORY[dtype]


def promote_types(a: np.dtype, b: np.dtype) -> np.dtype:
    """Promotion between two tensors' dtypes (torch's rule: any float beats any int)."""
    ca, cb = _CATEGORY[a], _CATEGORY[b]
    if ca != cb:
        return a if ca > cb else b
    return a if a.itemsize >= b.itemsize else b


def scalar_dtype(value) -> np.dtype:
    """The dtype a Python scalar becomes on its own (``tensor(2.0)`` is float32)."""
    if isinstance(value, (bool, np.bool_)):
        return bool_
    if isinstance(value, (int, np.integer)):
        return int64
    if isinstance(value, (float, np.floating)):
        return get_default_dtype()
    raise TypeError(f"expected a number, got {type(value).__name__}")


_promote_cache: dict = {}


def result_type(*keys) -> np.dtype:
    """torch's ``result_type`` over operands described by keys.

    A key is ``(dtype, rank_class)``: rank_class 2 for tensors with dimensions, 1 for 0-d tensors,
    0 for Python scalars. Higher rank classes win within the winning category, so
    ``float32[3] + float64 0-d`` stays float32 and ``int32[3] * 2.5`` becomes float32.
    """
    r = _promote_cache.get(keys)
    if r is not None:
        return r
    best_cat = max(_CATEGORY[d] for d, _ in keys)
    for rank_class in (2, 1, 0):
        group = [d for d, rc in keys if rc == rank_class and _CATEGORY[d] == best_cat]
        if group:
            if rank_class == 0 and best_cat == 2:
                r = get_default_dtype()
            else:
                r = group[0]
                for d in group[1:]:
                    r = promote_types(r, d)
            break
    _promote_cache[keys] = r
    return r
