"""State dicts between tracejit and torch: ``to_torch_state_dict`` and
``from_torch_state_dict`` (torch is imported only when called, and only if installed).

>>> sd = tj.utils.to_torch_state_dict(model.state_dict())             # doctest: +SKIP
>>> torch_model.load_state_dict(sd)                                    # doctest: +SKIP
>>> model.load_state_dict(torch_model.state_dict())  # torch tensors load  # doctest: +SKIP
"""

from __future__ import annotations

import collections

import numpy as np


def _torch(what: str):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{what} needs PyTorch, which is not installed (pip install torch); "
                          f"without it, plain numpy arrays load into both: "
                          f"{{k: v.numpy() for k, v in state_dict.items()}}") from None
    return torch


def _convert(x, fn):
    if isinstance(x, dict):
        out = collections.OrderedDict() if isinstance(x, collections.OrderedDict) else {}
        for k, v in x.items():
            out[k] = _convert(v, fn)
        return out
    if isinstance(x, (list, tuple)) and type(x) in (list, tuple):
        return type(x)(_convert(v, fn) for v in x)
    return fn(x)


def to_torch_state_dict(state_dict):
    """A copy of ``state_dict`` (nested dicts/lists allowed) with every tracejit tensor turned
    into a CPU ``torch.Tensor`` of the same dtype and values; other values are kept."""
    from ..tensor import Tensor, _host_data

    torch = _torch("tj.utils.to_torch_state_dict")

    def conv(v):
        if isinstance(v, Tensor):
            return torch.from_numpy(np.array(_host_data(v)))
        return v

    return _convert(state_dict, conv)


def is_torch_tensor(x) -> bool:
    """True for a ``torch.Tensor`` (without importing torch: it is loaded if ``x`` is one)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and \
        hasattr(x, "numpy") and hasattr(x, "cpu")


def widen(a: np.ndarray, what: str = "a tensor") -> np.ndarray:
    """``a`` in a dtype tracejit tensors have (float32/64, int32/64, bool), exactly: float16 as
    float32, the small integers as int32, uint32 as int64 (uint64 when its values fit)."""
    kind, size = a.dtype.kind, a.dtype.itemsize
    if a.dtype in (np.float32, np.float64, np.int32, np.int64, np.bool_):
        return a
    if kind == "f" and size < 4:
        return a.astype(np.float32)
    if (kind == "i" and size < 4) or (kind == "u" and size < 4):
        return a.astype(np.int32)
    if kind == "u" and size == 4:
        return a.astype(np.int64)
    if kind == "u" and size == 8:
        if a.size and int(a.max()) >= 2 ** 63:
            raise TypeError(f"{what} of dtype uint64 holds values over int64's range, which a "
                            f"tracejit tensor cannot hold")
        return a.astype(np.int64)
    raise TypeError(f"{what} has dtype {a.dtype}, which a tracejit tensor cannot hold")


def torch_to_numpy(x) -> np.ndarray:
    """The values of a torch tensor as a numpy array in a tracejit dtype (bfloat16 and float16
    widened to float32, small integers to int32: ``widen``)."""
    x = x.detach().cpu()
    if str(x.dtype) == "torch.bfloat16":
        x = x.float()
    return widen(x.numpy().copy(), f"a torch tensor of dtype {x.dtype}")


def from_torch_state_dict(state_dict):
    """A copy of a torch ``state_dict`` with every ``torch.Tensor`` turned into a tracejit
    tensor (``model.load_state_dict`` also accepts torch tensors directly)."""
    from ..tensor import Tensor

    def conv(v):
        return Tensor._make(torch_to_numpy(v)) if is_torch_tensor(v) else v

    return _convert(state_dict, conv)


__all__ = ["to_torch_state_dict", "from_torch_state_dict"]
