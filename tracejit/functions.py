"""Top-level functions, as in torch: ``tracejit.exp(x)`` is ``x.exp()``.

Each is the Tensor method of the same name, applied to the first argument (Python numbers and
arrays become tensors first).
"""

from __future__ import annotations

from .tensor import Tensor, _t, cat, matmul, maximum, minimum, stack, where

_METHODS = (
    "abs", "neg", "exp", "exp2", "log", "log2", "log10", "log1p", "expm1", "sqrt", "rsqrt",
    "sin", "cos", "tan", "sinh", "cosh", "tanh", "sigmoid", "relu", "erf", "sign", "floor",
    "ceil", "round", "trunc", "square", "reciprocal", "clamp", "clip", "isnan", "isfinite", "isinf",
    "logical_not", "logical_and", "logical_or", "logical_xor", "eq", "ne", "lt", "le", "gt", "ge",
    "add", "sub", "mul", "div", "pow", "remainder", "lerp",
    "sum", "mean", "prod", "amax", "amin", "argmax", "argmin", "var", "std", "logsumexp",
    "softmax", "log_softmax", "cumsum", "all", "any", "norm",
    "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "t", "split", "chunk",
    "unbind", "flip", "index_select", "gather", "scatter_add", "masked_fill", "repeat",
    "broadcast_to", "clone", "detach",
    "asin", "acos", "atan", "asinh", "acosh", "atanh", "arcsin", "arccos", "arctan", "arcsinh",
    "arccosh", "arctanh", "atan2", "arctan2", "fmod",
)


def _function(name):
    method = getattr(Tensor, name)

    def fn(input, *args, **kwargs):
        return method(_t(input), *args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__code__ = fn.__code__.replace(co_name=name)  # errors name tracejit.<name>, not "fn"
    fn.__doc__ = f"``tracejit.{name}(x, ...)`` is ``x.{name}(...)``."
    return fn


for _name in _METHODS:
    globals()[_name] = _function(_name)


def max(input, dim=None, keepdim=False):  # noqa: A001 - torch's name
    """Full max, ``(values, indices)`` along ``dim``, or elementwise max of two tensors."""
    return _t(input).max(dim, keepdim)


def min(input, dim=None, keepdim=False):  # noqa: A001 - torch's name
    return _t(input).min(dim, keepdim)


def numel(input) -> int:
    return _t(input).numel()


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def broadcast_tensors(*tensors):
    from .ops import broadcast_shapes
    shape = broadcast_shapes("broadcast_tensors", *(_t(t).shape for t in tensors))
    return tuple(_t(t).expand(shape) for t in tensors)


__all__ = list(_METHODS) + ["max", "min", "numel", "is_tensor", "broadcast_tensors", "cat",
                            "stack", "matmul", "maximum", "minimum", "where"]


# torch ops composed from the op table's rows (tracejit/extra_ops.py), and tracejit.linalg
from . import linalg  # noqa: E402
from .extra_ops import *  # noqa: E402,F401,F403
from .extra_ops import __all__ as _extra_names  # noqa: E402

for _name in ("addcmul", "addcdiv"):  # functions of the Tensor methods extra_ops adds
    globals()[_name] = _function(_name)

__all__ += list(_extra_names) + ["linalg", "addcmul", "addcdiv"]  # noqa: F405


# numpy's axis= / keepdims= (the method wrappers pass them on to the Tensor methods)
from . import extra_ops as _extra_ops  # noqa: E402
from ._aliases import add_aliases as _add_aliases  # noqa: E402
from ._aliases import add_method_aliases_like as _add_method_aliases_like  # noqa: E402

_add_aliases(globals())
_add_method_aliases_like(Tensor, vars(_extra_ops))  # x.sort(axis=0): methods made there
