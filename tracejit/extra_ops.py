"""Torch ops built from the op table's rows: comparisons (``isclose``), shape and triangle ops
(``roll``, ``diagonal``, ``tril``, ...), the sort family (on the ``argsort`` row and ``gather``),
scans (``cumprod``, ``logcumsumexp``), norms and distances, and the eager-only ops whose result
shape depends on the values (``nonzero``, ``unique``, ``bincount``).

Each is a ``Tensor`` method and a ``tracejit.<name>`` function, as in torch. Being
compositions, they trace, differentiate and compile with no code of their own in the passes.

>>> import tracejit as tj
>>> tj.tensor([[1., 2.], [3., 4.]]).triu().tolist()
[[1.0, 2.0], [0.0, 4.0]]
"""

from __future__ import annotations

import math

import numpy as np

from . import dtypes as D
from . import ops, return_types
from .dispatch import apply, current_tracer
from .errors import ShapeError, user_frame
from .ops import norm_dim
from .tensor import Tensor, _t, _wrap, cat, where

__all__ = ["isclose", "allclose", "roll", "repeat_interleave", "diag", "diagonal", "diag_embed",
           "tril", "triu", "cumprod", "logcumsumexp", "sort", "argsort", "msort",
           "topk", "kthvalue", "median", "mode", "unique", "nonzero", "bincount", "histc",
           "baddbmm", "cdist", "std_mean", "var_mean", "einsum"]

SortResult, TopKResult = return_types.sort, return_types.topk
KthResult, MedianResult, ModeResult = \
    return_types.kthvalue, return_types.median, return_types.mode


def _const(array, like=None) -> Tensor:
    """A tensor of Python/numpy data (a constant of the graph when traced), on ``like``'s
    device."""
    from .creation import tensor
    return tensor(np.asarray(array), device=None if like is None else like.device)


def _zero_like(t: Tensor) -> Tensor:
    """A 0-d zero of ``t``'s dtype (a where branch that keeps the dtype, bool included)."""
    from .creation import zeros
    return zeros((), dtype=t.dtype, device=t.device)


def _eager_only(t: Tensor, name: str, fix: str) -> np.ndarray:
    """``t``'s values for an op whose result shape depends on them: refused while tracing
    (unless ``t`` is a constant of the traced function) with a TraceError naming ``fix``."""
    tracer = current_tracer()
    if tracer is not None:
        tracer.check_data_access(t, f"{name}() (its result's shape depends on the values)",
                                 fix)
    from .tensor import _host_data
    return _host_data(t)


# ----------------------------------------------------------------------------------------------
# comparisons


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> Tensor:
    """``|input - other| <= atol + rtol * |other|`` elementwise (equal infinities are close; NaN
    only with ``equal_nan``), as torch."""
    a, b = _t(input), _wrap(other)
    if not isinstance(b, Tensor):
        b = _const(np.asarray(b, dtype=a.dtype if a.dtype != D.bool_ else None), a)
    if a.dtype == D.bool_ or b.dtype == D.bool_:
        return a == b
    fa = a if D.is_floating(a.dtype) else a.to(D.get_default_dtype())
    fb = b if D.is_floating(b.dtype) else b.to(fa.dtype)
    close = (a == b) | (((fa - fb).abs() <= atol + rtol * fb.abs()) & (fa - fb).isfinite())
    if equal_nan:
        close = close | (fa.isnan() & fb.isnan())
    return close


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    """``isclose(...).all()`` as a Python bool (a data-dependent value: eager only)."""
    return bool(isclose(input, other, rtol, atol, equal_nan).all())


# ----------------------------------------------------------------------------------------------
# shape and triangle ops


def roll(input, shifts, dims=None) -> Tensor:
    """Elements shifted along ``dims`` (wrapping around); no ``dims``: over the flattened
    tensor, reshaped back. ``cat`` of two slices."""
    x = _t(input)
    if dims is None:
        if isinstance(shifts, (tuple, list)):
            if len(shifts) != 1:
                raise ValueError(f"roll: shifts {tuple(shifts)} need dims{user_frame()}")
            shifts = shifts[0]
        return roll(x.reshape(-1), shifts, 0).reshape(x.shape)
    shifts = tuple(shifts) if isinstance(shifts, (tuple, list)) else (shifts,)
    dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
    if len(shifts) != len(dims):
        raise ValueError(f"roll: shifts {shifts} and dims {dims} must have the same length"
                         f"{user_frame()}")
    for s, d in zip(shifts, dims):
        d = norm_dim("roll", d, x.shape)
        n = x.shape[d]
        s = int(s) % n if n else 0
        if s:
            head = (slice(None),) * d
            x = cat([x[head + (slice(n - s, None),)], x[head + (slice(0, n - s),)]], d)
    return x.clone() if x is input else x


def repeat_interleave(input, repeats, dim=None, *, output_size=None) -> Tensor:
    """Each element repeated ``repeats`` times along ``dim`` (flattened when None). Integer
    repeats trace; a tensor of repeats is read eagerly (its values fix the result's shape)."""
    x = _t(input)
    if dim is None:
        x, dim = x.reshape(-1), 0
    d = norm_dim("repeat_interleave", dim, x.shape)
    if isinstance(repeats, Tensor) and repeats.numel() == 1 and current_tracer() is None:
        repeats = int(repeats.item())
    if isinstance(repeats, Tensor):
        reps = _eager_only(repeats, "repeat_interleave",
                           "pass repeats as a Python int, or build the index outside the "
                           "traced function and use index_select")
        if reps.ndim != 1 or reps.shape[0] != x.shape[d]:
            raise ShapeError(f"repeat_interleave: repeats must have shape ({x.shape[d]},), "
                             f"got {tuple(reps.shape)}{user_frame()}")
        index = np.repeat(np.arange(x.shape[d]), reps)
        return x.index_select(d, _const(index, x))
    r = int(repeats)
    if r < 0:
        raise ValueError(f"repeat_interleave: repeats must be non-negative, got {r}")
    shape = x.shape[:d + 1] + (r,) + x.shape[d + 1:]
    out = x.unsqueeze(d + 1).expand(shape)
    return out.reshape(x.shape[:d] + (x.shape[d] * r,) + x.shape[d + 1:]).clone()


def diagonal(input, offset=0, dim1=0, dim2=1) -> Tensor:
    """The diagonal ``offset`` of the matrices over ``dim1``, ``dim2``, as a last dim."""
    x = _t(input)
    if x.ndim < 2:
        raise ShapeError(f"diagonal: expected a tensor of at least 2 dims, got shape "
                         f"{tuple(x.shape)}{user_frame()}")
    d1, d2 = norm_dim("diagonal", dim1, x.shape), norm_dim("diagonal", dim2, x.shape)
    if d1 == d2:
        raise ValueError(f"diagonal: dim1 and dim2 cannot be the same dimension ({d1})")
    rest = [i for i in range(x.ndim) if i not in (d1, d2)]
    x = x.permute(*rest, d1, d2)
    n1, n2 = x.shape[-2:]
    r0, c0 = max(-offset, 0), max(offset, 0)
    n = max(0, min(n1 - r0, n2 - c0))
    rows, cols = _const(np.arange(n) + r0, x), _const(np.arange(n) + c0, x)
    return x[..., rows, cols]


def diag_embed(input, offset=0, dim1=-2, dim2=-1) -> Tensor:
    """Matrices over ``dim1``, ``dim2`` (of the result) with ``input``'s last dim on their
    diagonal ``offset``, zero elsewhere: a ``where`` with a constant mask."""
    x = _t(input)
    r = x.ndim + 1
    d1, d2 = norm_dim("diag_embed", dim1, r), norm_dim("diag_embed", dim2, r)
    if d1 == d2:
        raise ValueError(f"diag_embed: dim1 and dim2 cannot be the same dimension ({d1})")
    k = abs(int(offset))
    n = (x.shape[-1] if x.ndim else 1) + k
    v = x.reshape(1) if x.ndim == 0 else x
    v = v.pad((0, k)) if k else v
    i, j = np.indices((n, n))
    mask = _const(j - i == offset, x)
    # the element of row i, column j is v[i] above the main diagonal, v[j] below it
    out = where(mask, v.unsqueeze(-1) if offset >= 0 else v.unsqueeze(-2), _zero_like(x))
    perm = [None] * r
    perm[d1], perm[d2] = r - 2, r - 1
    others = iter(range(r - 2))
    perm = [next(others) if p is None else p for p in perm]
    return out.permute(*perm) if perm != list(range(r)) else out


def diag(input, diagonal=0) -> Tensor:
    """A 1-d input: the square matrix with it on diagonal ``diagonal``; a 2-d input: that
    diagonal of it."""
    x = _t(input)
    if x.ndim == 1:
        return diag_embed(x, diagonal)
    if x.ndim == 2:
        return globals()["diagonal"](x, diagonal)
    raise ShapeError(f"diag: expected a 1-d or 2-d tensor, got shape {tuple(x.shape)}"
                     f"{user_frame()}")


def _triangle(name, x, diagonal, lower):
    x = _t(x)
    if x.ndim < 2:
        raise ShapeError(f"{name}: expected a tensor of at least 2 dims, got shape "
                         f"{tuple(x.shape)}{user_frame()}")
    i, j = np.indices(x.shape[-2:])
    keep = (j - i <= diagonal) if lower else (j - i >= diagonal)
    return where(_const(keep, x), x, _zero_like(x))


def tril(input, diagonal=0) -> Tensor:
    """The lower triangle of the last two dims (``j - i <= diagonal``), zero above."""
    return _triangle("tril", input, diagonal, True)


def triu(input, diagonal=0) -> Tensor:
    """The upper triangle of the last two dims (``j - i >= diagonal``), zero below."""
    return _triangle("triu", input, diagonal, False)


# NOTE: not exported as tracejit.trace, which is the tracing decorator: the matrix trace is
# the method, ``x.trace()`` (or ``tracejit.einsum("ii", x)``)
def trace(input) -> Tensor:
    """The sum of a matrix's main diagonal."""
    x = _t(input)
    if x.ndim != 2:
        raise ShapeError(f"trace: expected a matrix, got shape {tuple(x.shape)}{user_frame()}")
    return diagonal(x).sum()


# ----------------------------------------------------------------------------------------------
# scans


def _scan_dim(name, x, dim):
    return norm_dim(name, dim, x.shape) if x.ndim else 0


def cumprod(input, dim, *, dtype=None) -> Tensor:
    """Running products along ``dim`` (its gradient is exact where the input holds zeros)."""
    x = _t(input) if dtype is None else _t(input).to(dtype)
    return apply(ops.CUMPROD, x, dim=_scan_dim("cumprod", x, dim))


def logcumsumexp(input, dim) -> Tensor:
    """``log(cumsum(exp(x)))`` along ``dim``, computed stably (``logaddexp`` step by step)."""
    x = _t(input)
    return apply(ops.LOGCUMSUMEXP, x, dim=_scan_dim("logcumsumexp", x, dim))


# ----------------------------------------------------------------------------------------------
# the sort family: argsort (a row) and gather; NaN sorts as the largest value, as in torch


def argsort(input, dim=-1, descending=False, stable=False) -> Tensor:
    """The indices that sort ``input`` along ``dim`` (always stable: ties keep their order)."""
    x = _t(input)
    return apply(ops.ARGSORT, x, dim=_scan_dim("argsort", x, dim), descending=bool(descending))


def sort(input, dim=-1, descending=False, stable=False):
    """``(values, indices)`` sorted along ``dim``; the gradient flows to the values' places."""
    x = _t(input)
    idx = argsort(x, dim, descending)
    values = x.gather(_scan_dim("sort", x, dim), idx) if x.ndim else x.clone()
    return SortResult(values, idx)


def msort(input) -> Tensor:
    return sort(input, 0).values


def _take(x, dim, idx, keepdim):
    values = x.gather(dim, idx)
    if not keepdim:
        values, idx = values.squeeze(dim), idx.squeeze(dim)
    return values, idx


def topk(input, k, dim=-1, largest=True, sorted=True):
    """The ``k`` largest (``largest=False``: smallest) elements along ``dim`` and their indices,
    in sorted order."""
    x = _t(input)
    d = _scan_dim("topk", x, dim)
    n = x.shape[d] if x.ndim else 1
    if not 0 <= k <= n:
        raise IndexError(f"topk: k ({k}) out of range for dimension {d} of size {n}"
                         f"{user_frame()}")
    if x.ndim == 0:
        return TopKResult(x.clone(), argsort(x))
    idx = argsort(x, d, descending=largest)[(slice(None),) * d + (slice(0, k),)]
    return TopKResult(x.gather(d, idx), idx)


def kthvalue(input, k, dim=-1, keepdim=False):
    """The ``k``-th smallest element along ``dim`` (``k`` from 1) and its index."""
    x = _t(input)
    d = _scan_dim("kthvalue", x, dim)
    n = x.shape[d] if x.ndim else 1
    if not 1 <= k <= n:
        raise IndexError(f"kthvalue: k ({k}) out of range for dimension {d} of size {n}"
                         f"{user_frame()}")
    if x.ndim == 0:
        return KthResult(x.clone(), argsort(x))
    idx = argsort(x, d)[(slice(None),) * d + (slice(k - 1, k),)]
    return KthResult(*_take(x, d, idx, keepdim))


def median(input, dim=None, keepdim=False):
    """The lower median (as torch: the element at ``(n - 1) // 2`` in sorted order; NaN when
    the row holds one). With no ``dim``: of all elements, a 0-d tensor."""
    x = _t(input)
    if dim is None:
        flat = x.reshape(-1)
        if flat.numel() == 0:
            raise IndexError(f"median: cannot take the median of an empty tensor{user_frame()}")
        return median(flat, 0).values.reshape(())
    d = _scan_dim("median", x, dim)
    if x.ndim == 0:
        return MedianResult(x.clone(), argsort(x))
    n = x.shape[d]
    if n == 0:
        raise IndexError(f"median: dimension {d} is empty{user_frame()}")
    order = argsort(x, d)
    if D.is_floating(x.dtype):  # NaNs sort last: the row's median is its first NaN
        nans = x.isnan().sum(d, keepdim=True)
        pos = where(nans > 0, n - nans, (n - 1) // 2)
    else:
        pos = _const(np.full(tuple(1 if i == d else m for i, m in enumerate(x.shape)),
                             (n - 1) // 2, np.int64), x)
    idx = order.gather(d, pos)
    return MedianResult(*_take(x, d, idx, keepdim))


def mode(input, dim=-1, keepdim=False):
    """The most frequent value along ``dim`` (the smallest of equally frequent ones) and the
    index of its last occurrence, as torch. Counts compare every pair: n * n per row."""
    x = _t(input)
    d = _scan_dim("mode", x, dim)
    if x.ndim == 0:
        return ModeResult(x.clone(), argsort(x))
    n = x.shape[d]
    if n == 0:
        raise IndexError(f"mode: dimension {d} is empty{user_frame()}")
    s = sort(x, d).values.detach()
    counts = (s.unsqueeze(d + 1) == s.unsqueeze(d)).sum(d + 1)
    best = s.gather(d, counts.argmax(d, keepdim=True))  # first max: the smallest value
    shape = [1] * x.ndim
    shape[d] = n
    at = _const(np.arange(n).reshape(shape), x)
    idx = where(x == best, at, -1).amax(d, keepdim=True)
    return ModeResult(*_take(x, d, idx, keepdim))


# ----------------------------------------------------------------------------------------------
# eager-only: the result's shape depends on the values


def nonzero(input, *, as_tuple=False):
    """The indices of the nonzero elements: an ``(n, ndim)`` int64 tensor, or a tuple of
    ``ndim`` 1-d tensors with ``as_tuple``. Eager only."""
    x = _t(input)
    a = _eager_only(x, "nonzero", "use a mask with tracejit.where(mask, x, 0) (fixed shape), or "
                                  "call nonzero outside the traced function")
    if as_tuple:
        return tuple(_const(i.astype(np.int64), x) for i in np.nonzero(a if a.ndim else a[None]))
    return _const(np.argwhere(a).astype(np.int64).reshape(-1, a.ndim), x)


def argwhere(input):
    return nonzero(input)


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct values (sorted), with the inverse indices and counts on request. Eager
    only."""
    x = _t(input)
    a = _eager_only(x, "unique", "call unique outside the traced function, or compare "
                                 "against a known set of values")
    res = np.unique(a if dim is None else a, return_inverse=True, return_counts=True,
                    axis=None if dim is None else norm_dim("unique", dim, a.shape))
    values, inverse, counts = res
    out = [_const(values, x)]
    if return_inverse:
        shape = a.shape if dim is None else (a.shape[norm_dim("unique", dim, a.shape)],)
        out.append(_const(inverse.reshape(shape).astype(np.int64), x))
    if return_counts:
        out.append(_const(counts.astype(np.int64), x))
    return out[0] if len(out) == 1 else tuple(out)


def bincount(input, weights=None, minlength=0) -> Tensor:
    """Counts of each value of a 1-d non-negative int tensor (summed ``weights`` if given), of
    length ``max(input) + 1`` or ``minlength``. Eager only."""
    x = _t(input)
    a = _eager_only(x, "bincount", "scatter_add into zeros of a fixed length: "
                                   "tj.zeros(n).scatter_add(0, x, tj.ones_like(x, dtype=float))")
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"bincount: expected a 1-d integer tensor, got {a.dtype}"
                         f"{tuple(a.shape)}{user_frame()}")
    if a.size and a.min() < 0:
        raise ValueError(f"bincount: input must be non-negative, got {a.min()}{user_frame()}")
    if weights is None:
        return _const(np.bincount(a, minlength=minlength).astype(np.int64), x)
    w = _t(weights)
    n = max(int(a.max()) + 1 if a.size else 0, minlength)
    from .creation import zeros
    return zeros(n, dtype=w.dtype if D.is_floating(w.dtype) else D.float64,
                 device=x.device).scatter_add(0, _const(a.astype(np.int64), x),
                                              w if D.is_floating(w.dtype) else w.double())


def histc(input, bins=100, min=0, max=0) -> Tensor:  # noqa: A002 - torch's names
    """A histogram of ``bins`` equal bins over ``[min, max]`` (both 0: the data's range);
    elements outside are ignored, ``max`` itself falls in the last bin. Traces (the bin edges
    may be tensors computed from the data: the shape is ``(bins,)`` either way)."""
    x = _t(input).detach()
    if not D.is_floating(x.dtype):
        raise NotImplementedError(f"histc: not implemented for {x.dtype} (as torch); "
                                  f"call .float() first{user_frame()}")
    flat = x.reshape(-1)
    if min == 0 and max == 0 and flat.numel():
        lo, hi = flat.amin(), flat.amax()
    else:
        lo, hi = _const(np.asarray(min, x.dtype), x), _const(np.asarray(max, x.dtype), x)
    if isinstance(min, (int, float)) and isinstance(max, (int, float)) and min > max:
        raise ValueError(f"histc: max ({max}) must be larger than min ({min}){user_frame()}")
    lo, hi = where(lo == hi, lo - 1, lo), where(lo == hi, hi + 1, hi)
    inside = (flat >= lo) & (flat <= hi)
    at = ((flat - lo) * bins / (hi - lo)).floor().long().clamp(0, bins - 1)
    from .creation import zeros
    return zeros(bins, dtype=x.dtype, device=x.device).scatter_add(
        0, where(inside, at, 0), inside.to(x.dtype))


# ----------------------------------------------------------------------------------------------
# products, distances and moments


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1) -> Tensor:
    """``beta * input + alpha * (batch1 @ batch2)`` (``beta=0`` ignores ``input``, NaN too)."""
    b1, b2 = _t(batch1), _t(batch2)
    if b1.ndim != 3 or b2.ndim != 3:
        raise ShapeError(f"baddbmm: batch1 and batch2 must be 3-d, got {tuple(b1.shape)} and "
                         f"{tuple(b2.shape)}{user_frame()}")
    prod = b1 @ b2
    prod = prod if alpha == 1 else prod * alpha
    x = _t(input)
    if ops.broadcast_shapes("baddbmm", x.shape, prod.shape) != prod.shape:
        raise ShapeError(f"baddbmm: input of shape {tuple(x.shape)} does not broadcast to the "
                         f"product's shape {tuple(prod.shape)}{user_frame()}")
    if beta == 0:
        return prod
    return (x if beta == 1 else x * beta) + prod


def _safe_root(s, p):
    """``s ** (1 / p)`` with a zero gradient at 0 (torch's norm subgradient), not nan."""
    pos = s > 0
    safe = where(pos, s, 1.0)
    r = safe.sqrt() if p == 2 else safe ** (1.0 / p)
    return where(pos, r, 0.0)


def cdist(x1, x2, p=2.0, compute_mode=None) -> Tensor:
    """The ``p``-norm distance between each row of ``x1`` (…, P, M) and of ``x2`` (…, R, M):
    (…, P, R)."""
    a, b = _t(x1), _t(x2)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-1]:
        raise ShapeError(f"cdist: expected (..., P, M) and (..., R, M) inputs, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}{user_frame()}")
    from .linalg import vector_norm
    return vector_norm(a.unsqueeze(-2) - b.unsqueeze(-3), p, -1)


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """``(var, mean)`` over ``dim``."""
    x = _t(input)
    return (x.var(dim, unbiased, keepdim, correction=correction),
            x.mean(dim, keepdim=keepdim))


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """``(std, mean)`` over ``dim``."""
    x = _t(input)
    return (x.std(dim, unbiased, keepdim, correction=correction),
            x.mean(dim, keepdim=keepdim))


# ----------------------------------------------------------------------------------------------
# einsum: each operand's repeated letters become a diagonal and its own letters are summed;
# then operands are contracted pairwise with one batched matmul each


def _parse_einsum(equation: str, operands):
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum: {equation!r} names {len(terms)} operands, got "
                         f"{len(operands)}{user_frame(2)}")
    # '...' stands for the same broadcast dims in every operand (aligned from the right): it
    # becomes letters the equation does not use
    spare = [c for c in "ZYXWVUTSRQPONMLKJIHGFEDCBA" if c not in eq]
    n_ell = max((x.ndim - len(t.replace("...", "")) for t, x in zip(terms, operands)
                 if "..." in t), default=0)
    ell = "".join(spare[:n_ell][::-1])
    for k, (t, x) in enumerate(zip(terms, operands)):
        if "..." in t:
            n = x.ndim - len(t.replace("...", ""))
            terms[k] = t.replace("...", ell[len(ell) - n:] if n > 0 else "", 1)
    for t in terms + [rhs.replace("...", "", 1)]:
        if not all(c.isalpha() for c in t):
            raise ValueError(f"einsum: invalid subscripts {t!r} in {equation!r}{user_frame(2)}")
    if not arrow:  # implicit output: '...', then the letters used once, in alphabetical order
        letters = "".join(terms)
        rhs = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1
                                   and c not in ell))
    rhs = rhs.replace("...", ell, 1)
    if len(set(rhs)) != len(rhs) or any(c not in "".join(terms) for c in rhs):
        raise ValueError(f"einsum: output subscripts {rhs!r} of {equation!r} must be distinct "
                         f"letters of the inputs{user_frame(2)}")
    return terms, rhs


def einsum(equation: str, *operands) -> Tensor:
    """Einstein summation, e.g. ``einsum("bij,bjk->bik", a, b)``, lowered to diagonals, sums,
    permutes, reshapes and batched matmuls (so it traces, fuses and differentiates);
    ``...`` broadcasts, as in torch."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    xs = [_t(x) for x in operands]
    terms, out = _parse_einsum(equation, xs)
    sizes: dict = {}
    for t, x in zip(terms, xs):
        if len(t) != x.ndim:
            raise ShapeError(f"einsum: subscripts {t!r} name {len(t)} dims of an operand of "
                             f"shape {tuple(x.shape)}{user_frame()}")
        for c, n in zip(t, x.shape):
            if sizes.setdefault(c, n) != n and n != 1 and sizes[c] != 1:
                raise ShapeError(f"einsum: dim {c!r} has sizes {sizes[c]} and {n} in "
                                 f"{equation!r}{user_frame()}")
            sizes[c] = max(sizes[c], n)
    items = [_einsum_prepare(t, x, terms, out, k) for k, (t, x) in enumerate(zip(terms, xs))]
    while len(items) > 1:
        (ta, a), (tb, b) = items[0], items[1]
        later = set(out) | {c for t, _ in items[2:] for c in t}
        items = [_contract(ta, a, tb, b, later, sizes)] + items[2:]
    t, x = items[0]
    extra = tuple(i for i, c in enumerate(t) if c not in out)
    if extra:
        x, t = x.sum(extra), "".join(c for c in t if c in out)
    if t != out:
        x = x.permute(*[t.index(c) for c in out])
    return x if x is not xs[0] else x.clone()



def _einsum_prepare(t, x, terms, out, k):
    """One operand with its repeated letters merged (a diagonal) and the letters no other
    operand nor the output uses summed away."""
    while len(set(t)) != len(t):
        c = next(c for c in t if t.count(c) > 1)
        i, j = t.index(c), t.index(c, t.index(c) + 1)
        x = diagonal(x, 0, i, j)
        t = "".join(ch for n, ch in enumerate(t) if n not in (i, j)) + c
    others = set(out) | {ch for n, tt in enumerate(terms) if n != k for ch in tt}
    own = tuple(i for i, c in enumerate(t) if c not in others)
    if own:
        x = x.sum(own)
        t = "".join(c for i, c in enumerate(t) if i not in own)
    return t, x


def _contract(ta, a, tb, b, later, sizes):
    """Two operands as one: batch letters (in both and needed later), contracted letters (in
    both, not needed later), and each side's own letters; one batched matmul."""
    batch = [c for c in ta if c in tb and c in later]
    summed = [c for c in ta if c in tb and c not in later]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]

    def arrange(x, t, order):
        x = x.permute(*[t.index(c) for c in order]) if list(t) != order else x
        shape = tuple(max(1, sizes[c]) if x.shape[i] == 1 else x.shape[i]
                      for i, c in enumerate(order))
        return x.expand(shape) if shape != x.shape else x

    def size(cs):
        return math.prod(sizes[c] for c in cs)

    a = arrange(a, ta, batch + left + summed)
    b = arrange(b, tb, batch + summed + right)
    nb = tuple(sizes[c] for c in batch)
    a = a.reshape(nb + (size(left), size(summed)))
    b = b.reshape(nb + (size(summed), size(right)))
    r = a @ b
    return "".join(batch + left + right), r.reshape(nb + tuple(sizes[c] for c in left + right))


# ----------------------------------------------------------------------------------------------
# Tensor methods, as torch names them


def _method(fn):
    def method(self, *args, **kwargs):
        return fn(self, *args, **kwargs)
    method.__name__ = method.__qualname__ = fn.__name__
    method.__code__ = method.__code__.replace(co_name=fn.__name__)
    method.__doc__ = fn.__doc__
    return method


for _fn in (isclose, allclose, roll, repeat_interleave, diag, diagonal, diag_embed, tril, triu,
            trace, cumprod, logcumsumexp, sort, argsort, msort, topk, kthvalue, median, mode,
            unique, nonzero, argwhere, bincount, histc, baddbmm):
    setattr(Tensor, _fn.__name__, _method(_fn))


def _inplace_of(fn):
    def method(self, *args, **kwargs):
        return self.copy_(fn(self, *args, **kwargs))
    method.__name__ = fn.__name__ + "_"
    method.__doc__ = f"In-place {fn.__name__}."
    return method


for _fn in (tril, triu, cumprod, baddbmm):
    setattr(Tensor, _fn.__name__ + "_", _inplace_of(_fn))
del _fn

__all__ += ["argwhere"]
