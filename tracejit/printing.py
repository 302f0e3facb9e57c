"""torch-like ``repr`` of tensors."""

from __future__ import annotations

import numpy as np

from . import dtypes as D

_DEFAULT_SHOWN = {D.int64, D.bool_}


def tensor_repr(t, device=None) -> str:
    """torch's repr; ``device`` (a CUDA tensor's, its values ``t`` copied to the host) is
    shown first among the extras, as torch shows it."""
    a = t._data
    prefix = "tensor("
    if a.size == 0:
        body = "[]" if a.ndim == 1 else f"[], size={a.shape}"
    else:
        with np.printoptions(precision=4, threshold=1000, edgeitems=3, linewidth=80,
                             floatmode="maxprec_equal" if a.dtype.kind == "f" else "maxprec"):
            formatter = None
            if a.dtype == D.bool_:  # torch pads True only when a False needs the width
                width = 5 if not a.all() else 4
                formatter = {"bool": lambda v: str(bool(v)).rjust(width)}
            body = np.array2string(a, separator=", ", prefix=prefix, formatter=formatter)
    extras = [f"device='{device}'"] if device is not None else []
    if a.dtype not in _DEFAULT_SHOWN and a.dtype != D.get_default_dtype():
        extras.append(f"dtype=tracejit.{a.dtype.name}")
    if t._grad_fn is not None:
        extras.append(f"grad_fn=<{t._grad_fn.name()}>")
    elif t.requires_grad:
        extras.append("requires_grad=True")
    return prefix + body + "".join(", " + e for e in extras) + ")"
