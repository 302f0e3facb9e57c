"""``tracejit.linalg``: vector and matrix norms, as ``torch.linalg`` spells them.

Norms are compositions of reductions (so they trace and differentiate); a norm at the zero
vector has the zero subgradient, as in torch, not NaN. Matrix norms that need singular values
(``ord=2``, ``-2``, ``'nuc'``) are not supported and say so.

>>> import tracejit as tj
>>> tj.linalg.vector_norm(tj.tensor([3.0, 4.0])).item()
5.0
"""

from __future__ import annotations

import math

from . import dtypes as D
from .errors import ShapeError, user_frame
from .ops import norm_dims
from .tensor import Tensor, _t, where

__all__ = ["vector_norm", "matrix_norm", "norm"]

_SVD = ("needs singular values, which tracejit does not compute; use "
        "numpy.linalg.norm(x.numpy(), ord) outside traced code")


def _float(x: Tensor, dtype) -> Tensor:
    if dtype is not None:
        return x.to(dtype)
    return x if D.is_floating(x.dtype) else x.to(D.get_default_dtype())


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None) -> Tensor:  # noqa: A002
    """``sum(|x| ** ord) ** (1 / ord)`` over ``dim`` (all elements when None); ``inf``:
    max |x|, ``-inf``: min |x|, ``0``: the number of nonzero elements."""
    x = _float(_t(x), dtype)
    dims = norm_dims("vector_norm", dim, x.shape)
    if isinstance(ord, str):
        raise ValueError(f"vector_norm: ord must be a number, got {ord!r} (use matrix_norm)"
                         f"{user_frame()}")
    a = x.abs()
    if ord == math.inf:
        return a.amax(dims, keepdim) if x.numel() else a.sum(dims, keepdim)
    if ord == -math.inf:
        return a.amin(dims, keepdim)
    if ord == 0:
        return (x != 0).to(x.dtype).sum(dims, keepdim)
    if ord == 1:
        return a.sum(dims, keepdim)
    s = (x * x if ord == 2 else a ** ord).sum(dims, keepdim)
    if ord < 0:
        return s ** (1.0 / ord)
    # the zero subgradient at 0, as torch (sqrt's derivative there is inf, times 0 is nan)
    pos = s > 0
    safe = where(pos, s, 1.0)
    return where(pos, safe.sqrt() if ord == 2 else safe ** (1.0 / ord), 0.0)


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None) -> Tensor:  # noqa: A002
    """Frobenius (``'fro'``), max column sum (``1``; ``-1``: min), max row sum (``inf``;
    ``-inf``: min) of the matrices over ``dim``."""
    A = _float(_t(A), dtype)
    if len(dim) != 2:
        raise ValueError(f"matrix_norm: dim must be a pair of dims, got {dim}{user_frame()}")
    r, c = norm_dims("matrix_norm", dim[0], A.shape)[0], norm_dims("matrix_norm", dim[1],
                                                                   A.shape)[0]
    if r == c:
        raise ValueError(f"matrix_norm: dims {dim} must be different{user_frame()}")
    if ord == "fro":
        return vector_norm(A, 2, (r, c), keepdim)
    if ord in ("nuc", 2, -2):
        raise NotImplementedError(f"matrix_norm: ord={ord!r} {_SVD}{user_frame()}")
    if ord in (1, -1, math.inf, -math.inf):
        along, across = (r, c) if ord in (1, -1) else (c, r)
        sums = A.abs().sum(along, keepdim=True)
        out = sums.amax(across, keepdim=True) if ord > 0 else sums.amin(across, keepdim=True)
        return out if keepdim else out.squeeze((r, c))
    raise ValueError(f"matrix_norm: unsupported ord {ord!r} (one of 'fro', 'nuc', inf, -inf, "
                     f"1, -1, 2, -2){user_frame()}")


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None) -> Tensor:  # noqa: A002
    """``torch.linalg.norm``: a vector norm over one dim (or all, with neither ``ord`` nor
    ``dim``), a matrix norm over two dims or with a string ``ord``."""
    A = _t(A)
    if isinstance(dim, int):
        dim = (dim,)
    if dim is None:
        if ord is None:
            return vector_norm(A, 2, None, keepdim, dtype=dtype)
        if A.ndim == 1 and not isinstance(ord, str):
            return vector_norm(A, ord, None, keepdim, dtype=dtype)
        if A.ndim == 2:
            return matrix_norm(A, ord, (-2, -1), keepdim, dtype=dtype)
        raise ShapeError(f"linalg.norm: with ord={ord!r} and no dim the input must be 1-d or "
                         f"2-d, got shape {tuple(A.shape)}{user_frame()}")
    dim = tuple(dim)
    if len(dim) == 1:
        return vector_norm(A, 2 if ord is None else ord, dim, keepdim, dtype=dtype)
    if len(dim) == 2:
        return matrix_norm(A, "fro" if ord is None else ord, dim, keepdim, dtype=dtype)
    raise ValueError(f"linalg.norm: dim must name 1 or 2 dims, got {dim}{user_frame()}")


def tensor_norm(x, p="fro", dim=None, keepdim=False, dtype=None) -> Tensor:
    """``torch.norm`` / ``Tensor.norm``: ``p`` of the flattened tensor (or over ``dim``);
    ``'fro'`` is the 2-norm, ``'nuc'`` a matrix norm."""
    x = _t(x)
    if p == "fro" or p is None:
        if dim is not None and not isinstance(dim, int) and len(dim) == 2:
            return matrix_norm(x, "fro", tuple(dim), keepdim, dtype=dtype)
        return vector_norm(x, 2, dim, keepdim, dtype=dtype)
    if p == "nuc":
        return matrix_norm(x, "nuc", (-2, -1) if dim is None else tuple(dim), keepdim,
                           dtype=dtype)
    return vector_norm(x, p, dim, keepdim, dtype=dtype)


# torch.linalg names tracejit does not have: a clear AttributeError, never a bare one
_MISSING = {name: "needs a matrix factorisation, which tracejit does not compute; use numpy."
            f"linalg.{name}(x.numpy()) outside traced code" for name in (
                "svd", "svdvals", "inv", "pinv", "det", "slogdet", "solve", "lstsq", "eig",
                "eigh", "eigvals", "eigvalsh", "qr", "cholesky", "lu", "lu_factor",
                "matrix_rank", "matrix_power", "matrix_exp", "cond")}
_MISSING.update(cross="is not supported yet; compose it: a[..., [1, 2, 0]] * b[..., [2, 0, 1]] "
                      "- a[..., [2, 0, 1]] * b[..., [1, 2, 0]]",
                vecdot="is not supported yet; use (a * b).sum(dim)",
                multi_dot="is not supported yet; chain @ (matmul)")


def __getattr__(name):
    if name in _MISSING:
        raise AttributeError(f"tracejit.linalg has no {name!r} (torch.linalg.{name}): it "
                             f"{_MISSING[name]}")
    raise AttributeError(f"module 'tracejit.linalg' has no attribute {name!r}")
