"""``Parameter``: a Tensor that a ``Module`` registers as a learnable weight.

>>> p = tracejit.nn.Parameter(tracejit.zeros(2))
>>> p.requires_grad, isinstance(p, tracejit.Tensor)
(True, True)
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as D
from ..creation import _to_array
from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf Tensor with ``requires_grad=True`` by default; assigning one to a Module attribute
    registers it. Like torch, ``Parameter(t)`` shares ``t``'s memory."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            arr = np.empty(0, dtype=D.get_default_dtype())
        elif isinstance(data, Tensor):
            arr = data._data
        else:
            arr = _to_array(data)
        self._init(arr)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):
        return (Parameter, (self._data, self.requires_grad))
