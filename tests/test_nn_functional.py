"""tracejit.nn.functional against written-out numpy references, with gradchecks in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

from .conftest import assert_close, data, gradcheck, gradgradcheck, leaf64


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def t64(a, grad=False):
    return tj.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# ============================================================================ numpy references


def ref_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation, one output element at a time."""
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if padding == "valid":
        pads = ((0, 0), (0, 0))
    elif padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = ((th // 2, th - th // 2), (tw // 2, tw - tw // 2))
    else:
        ph, pw = _pair(padding)
        pads = ((ph, ph), (pw, pw))
    xp = np.pad(x, ((0, 0), (0, 0)) + pads)
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow), dtype=np.float64)
    for b_ in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0
                    for ci in range(cg):
                        for ki in range(kh):
                            for kj in range(kw):
                                acc += (xp[b_, g * cg + ci, i * sh + ki * dh, j * sw + kj * dw]
                                        * w[oc, ci, ki, kj])
                    out[b_, oc, i, j] = acc + (0.0 if b is None else b[oc])
    return out[0] if unbatched else out


def ref_unfold(x, kernel, dilation=1, padding=0, stride=1):
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = map(_pair, (kernel, dilation, padding, stride))
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, c * kh * kw, oh * ow), dtype=x.dtype)
    for b in range(n):
        for ci in range(c):
            for ki in range(kh):
                for kj in range(kw):
                    for i in range(oh):
                        for j in range(ow):
                            out[b, (ci * kh + ki) * kw + kj, i * ow + j] = \
                                xp[b, ci, i * sh + ki * dh, j * sw + kj * dw]
    return out


def ref_fold(cols, output_size, kernel, dilation=1, padding=0, stride=1):
    (h, w), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = map(
        _pair, (output_size, kernel, dilation, padding, stride))
    n, ckk, _ = cols.shape
    c = ckk // (kh * kw)
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for b in range(n):
        for ci in range(c):
            for ki in range(kh):
                for kj in range(kw):
                    for i in range(oh):
                        for j in range(ow):
                            out[b, ci, i * sh + ki * dh, j * sw + kj * dw] += \
                                cols[b, (ci * kh + ki) * kw + kj, i * ow + j]
    return out[:, :, ph:ph + h, pw:pw + w]


def _windows(x, kernel, stride, padding, dilation, fill):
    """Yield (n, c, i, j, window values, in-bounds mask) for 2-d pooling."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel, stride, padding, dilation))
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    mask = np.pad(np.ones((h, w), bool), ((ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    for b in range(n):
        for ci in range(c):
            for i in range(oh):
                for j in range(ow):
                    rows = slice(i * sh, i * sh + dh * (kh - 1) + 1, dh)
                    cols = slice(j * sw, j * sw + dw * (kw - 1) + 1, dw)
                    yield b, ci, i, j, xp[b, ci, rows, cols], mask[rows, cols], (oh, ow)


def ref_max_pool2d(x, kernel, stride=None, padding=0, dilation=1):
    stride = kernel if stride is None else stride
    out = None
    for b, ci, i, j, win, _, (oh, ow) in _windows(x, kernel, stride, padding, dilation, -np.inf):
        if out is None:
            out = np.zeros(x.shape[:2] + (oh, ow), dtype=x.dtype)
        out[b, ci, i, j] = win.max()
    return out


def ref_avg_pool2d(x, kernel, stride=None, padding=0, count_include_pad=True,
                   divisor_override=None):
    stride = kernel if stride is None else stride
    out = None
    for b, ci, i, j, win, mask, (oh, ow) in _windows(x, kernel, stride, padding, 1, 0.0):
        if out is None:
            out = np.zeros(x.shape[:2] + (oh, ow), dtype=x.dtype)
        if divisor_override:
            div = divisor_override
        elif count_include_pad:
            div = win.size
        else:
            div = mask.sum()
        out[b, ci, i, j] = win.sum() / div
    return out


def ref_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def ref_nll(logp, target, weight=None, ignore_index=-100, reduction="mean"):
    """Written out per sample: logp (N, C, *d) or (C,), target (N, *d) or ()."""
    if logp.ndim == 1:
        logp, target = logp[None], np.asarray(target)[None]
        squeeze = True
    else:
        squeeze = False
    c = logp.shape[1]
    lp = np.moveaxis(logp, 1, -1).reshape(-1, c)
    t = np.asarray(target).reshape(-1)
    w = np.ones(c) if weight is None else weight
    losses, weights = np.zeros(len(t)), np.zeros(len(t))
    for k, cls in enumerate(t):
        if cls == ignore_index:
            continue
        losses[k] = -lp[k, cls] * w[cls]
        weights[k] = w[cls]
    if reduction == "mean":
        return losses.sum() / weights.sum()
    if reduction == "sum":
        return losses.sum()
    out = losses.reshape(np.asarray(target).shape)
    return out[0] if squeeze else out


# ============================================================================ conv2d

CONV_CASES = [
    # (x shape, w shape, kwargs)
    ((2, 3, 6, 6), (4, 3, 3, 3), dict()),
    ((1, 2, 7, 6), (3, 2, 3, 2), dict(stride=2)),
    ((1, 2, 6, 7), (3, 2, 3, 3), dict(stride=(2, 1), padding=(1, 2))),
    ((2, 2, 5, 5), (2, 2, 3, 3), dict(padding=1)),
    ((1, 3, 5, 6), (2, 3, 3, 3), dict(padding="valid")),
    ((1, 2, 5, 6), (3, 2, 3, 3), dict(padding="same")),
    ((1, 2, 5, 6), (3, 2, 2, 2), dict(padding="same")),  # even kernel: asymmetric padding
    ((1, 2, 5, 6), (3, 2, 2, 3), dict(padding="same", dilation=(1, 2))),
    ((1, 2, 5, 6), (2, 2, 4, 1), dict(padding="same", dilation=(2, 1))),
    ((1, 2, 7, 7), (3, 2, 3, 3), dict(dilation=2)),
    ((1, 2, 8, 7), (3, 2, 2, 3), dict(dilation=(3, 1), stride=(1, 2), padding=1)),
    ((2, 4, 5, 5), (6, 2, 3, 3), dict(groups=2)),
    ((1, 4, 5, 5), (4, 1, 3, 3), dict(groups=4, padding=1)),  # depthwise
    ((1, 3, 5, 5), (6, 1, 2, 2), dict(groups=3, stride=2)),  # depthwise multiplier 2
    ((3, 5, 5), (4, 3, 3, 3), dict(padding=1)),  # unbatched
    ((2, 4, 5, 4), (4, 2, 1, 1), dict(groups=2)),  # 1x1
]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("xs,ws,kw", CONV_CASES)
def test_conv2d_matches_reference(xs, ws, kw, bias):
    x, w = data(xs, np.float64, seed=1), data(ws, np.float64, seed=2)
    b = data(ws[:1], np.float64, seed=3) if bias else None
    out = F.conv2d(tj.tensor(x), tj.tensor(w), None if b is None else tj.tensor(b), **kw)
    assert_close(out, ref_conv2d(x, w, b, **kw), rtol=1e-10, atol=1e-10)


def test_conv2d_float32_dtype_and_shape():
    x, w = data((2, 3, 6, 5), np.float32), data((4, 3, 3, 3), np.float32, seed=1)
    out = F.conv2d(tj.tensor(x), tj.tensor(w), stride=2, padding=1)
    assert out.dtype == np.float32
    assert out.shape == (2, 4, 3, 3)
    assert_close(out, ref_conv2d(x.astype(np.float64), w.astype(np.float64), stride=2,
                                 padding=1).astype(np.float32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("xs,ws,kw", [
    ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding=1)),
    ((2, 2, 5, 6), (2, 2, 2, 3), dict(stride=(2, 1), dilation=(1, 2))),
    ((1, 4, 4, 4), (4, 2, 3, 3), dict(groups=2, padding="same")),
    ((1, 3, 5, 5), (3, 1, 2, 2), dict(groups=3, padding="same")),  # depthwise, even kernel
    ((2, 4, 4), (2, 2, 3, 3), dict(padding=(0, 1))),  # unbatched
])
def test_conv2d_gradcheck(xs, ws, kw):
    x, w, b = leaf64(xs, seed=1), leaf64(ws, seed=2), leaf64(ws[:1], seed=3)
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, **kw), (x, w, b))


def test_conv2d_grad_values_match_reference():
    """d(sum(conv))/dw[o, c, i, j] is the sum of the inputs that tap meets."""
    x = leaf64((1, 2, 5, 5), seed=4)
    w = leaf64((3, 2, 2, 2), seed=5)
    F.conv2d(x, w, stride=1).sum().backward()
    xd = x.detach().numpy()
    expect = np.zeros((3, 2, 2, 2))
    for i in range(2):
        for j in range(2):
            expect[:, :, i, j] = xd[0, :, i:i + 4, j:j + 4].sum(axis=(1, 2))
    assert_close(w.grad, expect, rtol=1e-10)


def test_conv2d_same_with_stride_raises():
    with pytest.raises(ValueError, match="padding='same'.*stride 1"):
        F.conv2d(tj.zeros(1, 1, 4, 4), tj.zeros(1, 1, 3, 3), stride=2, padding="same")


def test_conv2d_channel_mismatch_names_shapes():
    with pytest.raises(tj.ShapeError, match=r"conv2d.*weight of shape \(4, 3, 3, 3\).*"
                                            r"input of shape \(1, 2, 5, 5\)"):
        F.conv2d(tj.zeros(1, 2, 5, 5), tj.zeros(4, 3, 3, 3))


def test_conv2d_groups_not_dividing_out_channels_raises():
    with pytest.raises(tj.ShapeError, match=r"conv2d.*groups=2"):
        F.conv2d(tj.zeros(1, 4, 5, 5), tj.zeros(3, 2, 3, 3), groups=2)


def test_conv2d_bad_rank_raises():
    with pytest.raises(tj.ShapeError, match=r"conv2d: expected a 3-d.*got shape \(5, 5\)"):
        F.conv2d(tj.zeros(5, 5), tj.zeros(1, 1, 3, 3))


def test_conv2d_kernel_too_large_raises():
    with pytest.raises(tj.ShapeError, match="too small for kernel"):
        F.conv2d(tj.zeros(1, 1, 2, 2), tj.zeros(1, 1, 3, 3))


# ============================================================================ unfold / fold

UNFOLD_CASES = [
    ((1, 2, 4, 5), dict(kernel_size=2)),
    ((2, 1, 5, 5), dict(kernel_size=3, padding=1)),
    ((1, 2, 6, 5), dict(kernel_size=(2, 3), stride=(2, 1))),
    ((1, 2, 6, 6), dict(kernel_size=2, dilation=2, padding=1, stride=2)),
    ((1, 3, 5, 4), dict(kernel_size=(3, 1), dilation=(2, 1), padding=(1, 0))),
]


@pytest.mark.parametrize("shape,kw", UNFOLD_CASES)
def test_unfold_matches_reference(shape, kw):
    x = data(shape, np.float64)
    out = F.unfold(tj.tensor(x), **kw)
    kw = dict(kw)
    assert_close(out, ref_unfold(x, kw.pop("kernel_size"), **kw), rtol=0, atol=0)


@pytest.mark.parametrize("shape,kw", UNFOLD_CASES)
def test_fold_matches_reference_and_is_adjoint(shape, kw):
    x = data(shape, np.float64, seed=1)
    cols_shape = F.unfold(tj.tensor(x), **kw).shape
    y = data(cols_shape, np.float64, seed=2)
    folded = F.fold(tj.tensor(y), shape[2:], **kw)
    kw = dict(kw)
    k = kw.pop("kernel_size")
    assert_close(folded, ref_fold(y, shape[2:], k, **kw), rtol=1e-12, atol=1e-12)
    # <unfold(x), y> == <x, fold(y)>
    lhs = float((ref_unfold(x, k, **kw) * y).sum())
    rhs = float((x * folded.numpy()).sum())
    assert math.isclose(lhs, rhs, rel_tol=1e-10, abs_tol=1e-10)


def test_fold_of_unfold_counts_overlaps():
    ones = tj.ones(1, 1, 4, 4, dtype=tj.float64)
    back = F.fold(F.unfold(ones, 2, stride=1), (4, 4), 2, stride=1)
    expect = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]], np.float64)
    assert_close(back, expect[None, None])


@pytest.mark.parametrize("shape,kw", UNFOLD_CASES[:4])
def test_unfold_fold_gradcheck(shape, kw):
    x = leaf64(shape, seed=3)
    assert gradcheck(lambda x: F.unfold(x, **kw), (x,))
    cols_shape = F.unfold(x.detach(), **kw).shape
    y = leaf64(cols_shape, seed=4)
    assert gradcheck(lambda y: F.fold(y, shape[2:], **kw), (y,))


def test_fold_shape_mismatch_raises():
    with pytest.raises(tj.ShapeError, match=r"fold: input of shape \(1, 5, 9\)"):
        F.fold(tj.zeros(1, 5, 9), (4, 4), 2)


def test_unfold_bad_rank_raises():
    with pytest.raises(tj.ShapeError, match="unfold: expected a 4-d"):
        F.unfold(tj.zeros(2, 4, 4), 2)


# ============================================================================ pooling

MAX_POOL_CASES = [
    ((1, 2, 4, 4), dict(kernel_size=2)),  # stride defaults to the kernel
    ((2, 1, 5, 5), dict(kernel_size=3, stride=1)),
    ((1, 2, 5, 6), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1))),
    ((1, 1, 6, 6), dict(kernel_size=2, stride=1, dilation=2)),
    ((1, 2, 7, 6), dict(kernel_size=3, stride=2, padding=1, dilation=(2, 1))),
    ((2, 5, 5), dict(kernel_size=2, stride=1)),  # unbatched
]


@pytest.mark.parametrize("shape,kw", MAX_POOL_CASES)
def test_max_pool2d_matches_reference(shape, kw):
    x = data(shape, np.float64)
    out = F.max_pool2d(tj.tensor(x), **kw)
    kw = dict(kw)
    k = kw.pop("kernel_size")
    batched = x if x.ndim == 4 else x[None]
    expect = ref_max_pool2d(batched, k, **kw)
    assert_close(out, expect if x.ndim == 4 else expect[0], rtol=0, atol=0)


def test_max_pool2d_int_and_float32_keep_dtype():
    xi = data((1, 1, 4, 4), np.int64, low=-9, high=9)
    out = F.max_pool2d(tj.tensor(xi), 2, padding=1)
    assert out.dtype == np.int64
    assert_close(out, ref_max_pool2d(xi.astype(np.float64), 2, padding=1).astype(np.int64))
    xf = data((1, 1, 4, 4), np.float32)
    assert F.max_pool2d(tj.tensor(xf), 2).dtype == np.float32


@pytest.mark.parametrize("shape,kw", MAX_POOL_CASES)
def test_max_pool2d_gradcheck(shape, kw):
    # distinct values, well apart, so the max is stable under the finite-difference step
    n = int(np.prod(shape))
    vals = np.random.default_rng(0).permutation(n).astype(np.float64).reshape(shape) * 0.1
    x = t64(vals, grad=True)
    assert gradcheck(lambda x: F.max_pool2d(x, **kw), (x,))


def test_max_pool2d_gradient_goes_to_one_element_on_ties():
    x = tj.ones(1, 1, 2, 4, dtype=tj.float64, requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    g = x.grad.numpy()[0, 0]
    # one window per 2x2 block: exactly one element of each block gets the whole gradient
    for blk in (g[:, :2], g[:, 2:]):
        assert blk.sum() == 1.0
        assert np.count_nonzero(blk) == 1
    assert g[0, 0] == 1.0 and g[0, 2] == 1.0  # the first maximal element, as torch


def test_max_pool2d_overlapping_windows_accumulate_grad():
    x = t64([[[[0.0, 1.0, 0.0], [0.0, 5.0, 0.0], [0.0, 2.0, 0.0]]]], grad=True)
    F.max_pool2d(x, 2, stride=1).sum().backward()
    expect = np.zeros((1, 1, 3, 3))
    expect[0, 0, 1, 1] = 4.0  # centre is the max of all four windows
    assert_close(x.grad, expect)


AVG_POOL_CASES = [
    ((1, 2, 4, 4), dict(kernel_size=2)),
    ((2, 1, 5, 5), dict(kernel_size=3, stride=1, padding=1)),
    ((1, 2, 5, 6), dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1))),
    ((1, 1, 5, 5), dict(kernel_size=3, stride=2, padding=1, divisor_override=2)),
    ((2, 5, 4), dict(kernel_size=2, stride=1, padding=1)),  # unbatched
]


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape,kw", AVG_POOL_CASES)
def test_avg_pool2d_matches_reference(shape, kw, count_include_pad):
    x = data(shape, np.float64)
    out = F.avg_pool2d(tj.tensor(x), count_include_pad=count_include_pad, **kw)
    kw = dict(kw)
    k = kw.pop("kernel_size")
    batched = x if x.ndim == 4 else x[None]
    expect = ref_avg_pool2d(batched, k, count_include_pad=count_include_pad, **kw)
    assert_close(out, expect if x.ndim == 4 else expect[0], rtol=1e-12, atol=1e-12)


def test_avg_pool2d_count_include_pad_differs_at_border():
    x = tj.ones(1, 1, 3, 3, dtype=tj.float64)
    inc = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)
    exc = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    assert_close(exc, np.ones((1, 1, 3, 3)))
    assert_close(inc[0, 0, 0, 0], np.float64(4 / 9))
    assert_close(inc[0, 0, 1, 1], np.float64(1.0))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape,kw", AVG_POOL_CASES[1:4])
def test_avg_pool2d_gradcheck(shape, kw, count_include_pad):
    x = leaf64(shape)
    assert gradcheck(lambda x: F.avg_pool2d(x, count_include_pad=count_include_pad, **kw), (x,))


@pytest.mark.parametrize("fn,kw,match", [
    (F.max_pool2d, dict(ceil_mode=True), "max_pool2d: ceil_mode"),
    (F.max_pool2d, dict(return_indices=True), "max_pool2d: return_indices"),
    (F.avg_pool2d, dict(ceil_mode=True), "avg_pool2d: ceil_mode"),
])
def test_pool_unsupported_options_raise(fn, kw, match):
    with pytest.raises(NotImplementedError, match=match):
        fn(tj.zeros(1, 1, 4, 4), 2, **kw)


@pytest.mark.parametrize("fn", [F.max_pool2d, F.avg_pool2d])
def test_pool_padding_too_large_raises(fn):
    with pytest.raises(ValueError, match="pad should be at most half"):
        fn(tj.zeros(1, 1, 6, 6), 2, padding=2)


# ============================================================================ embedding, dropout


def test_embedding_values_and_shape():
    w = data((5, 3), np.float64)
    idx = np.array([[0, 4, 2], [1, 1, 3]])
    out = F.embedding(tj.tensor(idx), tj.tensor(w))
    assert out.shape == (2, 3, 3)
    assert_close(out, w[idx])


def test_embedding_grad_accumulates_repeats_and_skips_padding_idx():
    w = leaf64((5, 3))
    idx = tj.tensor([[0, 4, 2], [1, 1, 2]])
    F.embedding(idx, w, padding_idx=2).sum().backward()
    expect = np.zeros((5, 3))
    for i, count in {0: 1, 4: 1, 1: 2}.items():
        expect[i] = count
    assert_close(w.grad, expect)  # row 2 (padding_idx) gets no gradient


def test_embedding_negative_padding_idx():
    w = leaf64((4, 2))
    out = F.embedding(tj.tensor([3, 0, 3]), w, padding_idx=-1)
    assert_close(out, w.detach().numpy()[[3, 0, 3]])  # forward unchanged
    out.sum().backward()
    assert_close(w.grad, np.array([[1.0, 1.0], [0, 0], [0, 0], [0, 0]]))


def test_embedding_gradcheck():
    w = leaf64((4, 3))
    idx = tj.tensor([[1, 3], [3, 0]])
    assert gradcheck(lambda w: F.embedding(idx, w) * F.embedding(idx, w), (w,))


def test_embedding_float_indices_raise():
    with pytest.raises(tj.DTypeError, match="embedding: indices must be an integer tensor"):
        F.embedding(tj.tensor([0.0, 1.0]), tj.zeros(3, 2))


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_training_zeroes_and_scales(p):
    x = data((40, 50), np.float64, low=1.0, high=2.0)  # no zeros in x
    out = F.dropout(tj.tensor(x), p=p).numpy()
    assert out.shape == x.shape and out.dtype == np.float64
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-12)
    assert abs((~kept).mean() - p) < 0.05


def test_dropout_float32_keeps_dtype():
    out = F.dropout(tj.ones(10, 10), p=0.5)
    assert out.dtype == np.float32
    assert set(np.unique(out.numpy())) <= {0.0, 2.0}


def test_dropout_eval_and_p0_are_identity():
    x = tj.tensor(data((3, 4), np.float64))
    assert_close(F.dropout(x, p=0.7, training=False), x.numpy())
    assert_close(F.dropout(x, p=0.0), x.numpy())


def test_dropout_p1_zeroes_everything_and_grad():
    x = leaf64((3, 4))
    out = F.dropout(x, p=1.0)
    assert_close(out, np.zeros((3, 4)))
    out.sum().backward()
    assert_close(x.grad, np.zeros((3, 4)))


def test_dropout_reproducible_with_manual_seed():
    x = tj.ones(6, 7, dtype=tj.float64)
    tj.manual_seed(123)
    a = F.dropout(x, p=0.5).numpy()
    tj.manual_seed(123)
    b = F.dropout(x, p=0.5).numpy()
    c = F.dropout(x, p=0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_dropout_grad_is_mask_over_keep_prob():
    x = leaf64((5, 6), low=1.0, high=2.0)
    out = F.dropout(x, p=0.25)
    out.sum().backward()
    mask = out.detach().numpy() != 0
    assert_close(x.grad, mask / 0.75)


def test_dropout_inplace_writes_into_input():
    x = tj.ones(4, 5, dtype=tj.float64)
    out = F.dropout(x, p=0.5, inplace=True)
    np.testing.assert_array_equal(x.numpy(), out.numpy())
    assert set(np.unique(x.numpy())) <= {0.0, 2.0}


def test_dropout_bad_p_raises():
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        F.dropout(tj.ones(2), p=1.5)


# ============================================================================ layer_norm, linear


def ref_layer_norm(x, shape, w=None, b=None, eps=1e-5):
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


@pytest.mark.parametrize("xs,ns", [((3, 5), (5,)), ((2, 3, 4), (3, 4)), ((4,), 4),
                                   ((2, 2, 3), (2, 2, 3))])
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm_matches_formula(xs, ns, affine):
    x = data(xs, np.float64)
    shape = (ns,) if isinstance(ns, int) else ns
    w = data(shape, np.float64, seed=1) if affine else None
    b = data(shape, np.float64, seed=2) if affine else None
    out = F.layer_norm(tj.tensor(x), ns, None if w is None else tj.tensor(w),
                       None if b is None else tj.tensor(b), eps=1e-3)
    assert_close(out, ref_layer_norm(x, shape, w, b, eps=1e-3), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("xs,ns", [((3, 4), (4,)), ((2, 2, 3), (2, 3))])
def test_layer_norm_gradcheck(xs, ns):
    x, w, b = leaf64(xs), leaf64(ns, seed=1), leaf64(ns, seed=2)
    assert gradcheck(lambda x, w, b: F.layer_norm(x, ns, w, b), (x, w, b))


def test_layer_norm_float32():
    x = data((2, 6), np.float32)
    out = F.layer_norm(tj.tensor(x), (6,))
    assert out.dtype == np.float32
    assert_close(out, ref_layer_norm(x.astype(np.float64), (6,)).astype(np.float32),
                 rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("xs,ns", [((3, 4), (3,)), ((2, 3), (2, 3, 1)), ((3, 4), (3, 4, 5))])
def test_layer_norm_shape_mismatch_raises(xs, ns):
    with pytest.raises(tj.ShapeError, match=r"layer_norm: normalized_shape .* does not match "
                                            r"the trailing dims of input of shape"):
        F.layer_norm(tj.zeros(*xs), ns)


@pytest.mark.parametrize("xs", [(4,), (3, 4), (2, 3, 4)])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_formula_and_gradcheck(xs, bias):
    x, w = leaf64(xs), leaf64((5, 4), seed=1)
    b = leaf64((5,), seed=2) if bias else None
    out = F.linear(x, w, b)
    expect = x.detach().numpy() @ w.detach().numpy().T
    if bias:
        expect = expect + b.detach().numpy()
    assert_close(out, expect, rtol=1e-12)
    inputs = (x, w, b) if bias else (x, w)
    assert gradcheck(lambda *a: F.linear(*a), inputs)


# ============================================================================ one_hot, activations


def test_one_hot_explicit_and_inferred_classes():
    t = tj.tensor([[0, 2], [1, 0]])
    out = F.one_hot(t, num_classes=4)
    assert out.dtype == np.int64 and out.shape == (2, 2, 4)
    np.testing.assert_array_equal(out.numpy(), np.eye(4, dtype=np.int64)[[[0, 2], [1, 0]]])
    inferred = F.one_hot(t)
    assert inferred.shape == (2, 2, 3)
    np.testing.assert_array_equal(inferred.numpy(), np.eye(3, dtype=np.int64)[[[0, 2], [1, 0]]])


def test_one_hot_float_raises():
    with pytest.raises(tj.DTypeError, match="one_hot: expects an integer"):
        F.one_hot(tj.tensor([0.0, 1.0]))


_erf = np.vectorize(math.erf)


def _softplus(x, beta=1.0, threshold=20.0):
    return np.where(x * beta > threshold, x, np.log1p(np.exp(beta * x)) / beta)


ACTIVATIONS = [
    ("relu", F.relu, lambda x: np.maximum(x, 0)),
    ("gelu", F.gelu, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)))),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"),
     lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
    ("silu", F.silu, lambda x: x / (1 + np.exp(-x))),
    ("sigmoid", F.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    ("tanh", F.tanh, np.tanh),
    ("softplus", F.softplus, _softplus),
    ("softplus_beta", lambda x: F.softplus(x, beta=2.0, threshold=3.0),
     lambda x: _softplus(x, 2.0, 3.0)),
    ("leaky_relu", F.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x)),
    ("leaky_relu_0.2", lambda x: F.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    ("softmax0", lambda x: F.softmax(x, 0), lambda x: np.exp(ref_log_softmax(x, 0))),
    ("softmax-1", lambda x: F.softmax(x, -1), lambda x: np.exp(ref_log_softmax(x, -1))),
    ("log_softmax1", lambda x: F.log_softmax(x, 1), lambda x: ref_log_softmax(x, 1)),
]


@pytest.mark.parametrize("name,fn,ref", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_values(name, fn, ref):
    x = data((3, 5), np.float64, low=-3, high=3)
    x[0, :3] = [-0.5, 1e-3, 2.5]
    assert_close(fn(tj.tensor(x)), ref(x), rtol=1e-10, atol=1e-12)
    x32 = x.astype(np.float32)
    out32 = fn(tj.tensor(x32))
    assert out32.dtype == np.float32
    assert_close(out32, ref(x).astype(np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,fn,ref", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_gradcheck(name, fn, ref):
    x = data((3, 4), np.float64, low=-3, high=3)
    x[np.abs(x) < 0.05] = 0.3  # keep away from kinks (relu, leaky_relu at 0)
    if name == "softplus_beta":
        x[np.abs(2 * x - 3.0) < 0.05] = 0.3  # and from the threshold switch
    assert gradcheck(fn, (t64(x, grad=True),))


def test_softmax_is_stable_for_large_inputs():
    x = tj.tensor([[1000.0, 1001.0, 1002.0]], dtype=tj.float64)
    assert_close(F.softmax(x, -1), np.exp(ref_log_softmax(np.array([[0.0, 1.0, 2.0]]), -1)))
    assert_close(F.log_softmax(x, -1), ref_log_softmax(np.array([[0.0, 1.0, 2.0]]), -1))


def test_relu_inplace():
    x = tj.tensor([-1.0, 2.0, -3.0])
    out = F.relu(x, inplace=True)
    np.testing.assert_array_equal(x.numpy(), [0.0, 2.0, 0.0])
    np.testing.assert_array_equal(out.numpy(), [0.0, 2.0, 0.0])


@pytest.mark.parametrize("pad,value", [((1, 2), 0.0), ((0, 1, 2, 0), -1.5),
                                       ((1, 1, 1, 1, 1, 0), 3.0)])
def test_pad_constant(pad, value):
    x = data((2, 3, 4), np.float64)
    out = F.pad(tj.tensor(x), pad, value=value)
    widths = [(0, 0)] * 3
    for k in range(len(pad) // 2):
        widths[-1 - k] = (pad[2 * k], pad[2 * k + 1])
    assert_close(out, np.pad(x, widths, constant_values=value))
    xl = t64(x, grad=True)
    assert gradcheck(lambda t: F.pad(t, pad, value=value), (xl,))


def test_pad_unsupported_mode_raises():
    with pytest.raises(NotImplementedError, match="pad: mode 'reflect' is not supported"):
        F.pad(tj.zeros(1, 2, 3), (1, 1), mode="reflect")


# ============================================================================ losses

REDUCTIONS = ["none", "mean", "sum"]


def _reduce_np(loss, reduction):
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_l1_losses(reduction):
    a, b = data((3, 4), np.float64, seed=1), data((3, 4), np.float64, seed=2)
    assert_close(F.mse_loss(t64(a), t64(b), reduction=reduction),
                 _reduce_np((a - b) ** 2, reduction), rtol=1e-12)
    assert_close(F.l1_loss(t64(a), t64(b), reduction=reduction),
                 _reduce_np(np.abs(a - b), reduction), rtol=1e-12)
    x, y = leaf64((3, 4), seed=1), leaf64((3, 4), seed=2)
    assert gradcheck(lambda x, y: F.mse_loss(x, y, reduction=reduction), (x, y))
    assert gradcheck(lambda x, y: F.l1_loss(x, y, reduction=reduction), (x, y))


def test_mse_loss_broadcast_target():
    a, b = data((3, 4), np.float64), data((4,), np.float64, seed=3)
    assert_close(F.mse_loss(t64(a), t64(b)), np.float64(((a - b) ** 2).mean()))


def test_loss_bad_reduction_raises():
    with pytest.raises(ValueError, match="mse_loss: reduction must be"):
        F.mse_loss(tj.zeros(2), tj.zeros(2), reduction="avg")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits(reduction):
    x = data((4, 3), np.float64, low=-30, high=30)
    x[0, :3] = [0.0, 50.0, -50.0]  # saturated logits must stay finite
    y = data((4, 3), np.float64, low=0, high=1, seed=5)
    expect = -(y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 / (1 + np.exp(x))))
    expect[0, 1] = 50.0 * (1 - y[0, 1])  # the exact log(sigmoid) in saturated spots
    expect[0, 2] = 50.0 * y[0, 2]
    out = F.binary_cross_entropy_with_logits(t64(x), t64(y), reduction=reduction)
    assert np.all(np.isfinite(out.numpy()))
    assert_close(out, _reduce_np(expect, reduction), rtol=1e-9, atol=1e-12)
    xl, yl = leaf64((4, 3), seed=1), leaf64((4, 3), low=0, high=1, seed=2)
    assert gradcheck(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction=reduction),
                     (xl, yl))


NLL_CASES = [
    # (input shape, target values)
    ((4, 3), [0, 2, 1, 2]),
    ((2, 3, 4), [[0, 1, 2, 2], [1, 1, 0, 2]]),  # K-d: (N, C, d1)
    ((2, 3, 2, 2), [[[0, 1], [2, 0]], [[1, 2], [2, 2]]]),  # (N, C, d1, d2)
    ((3,), 1),  # unbatched (C,)
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("shape,target", NLL_CASES)
def test_nll_and_cross_entropy_match_formula(shape, target, use_weight, reduction):
    x = data(shape, np.float64)
    t = np.array(target, dtype=np.int64)
    c = shape[1] if len(shape) > 1 else shape[0]
    w = np.array([0.3, 1.7, 0.9])[:c] if use_weight else None
    wt = None if w is None else t64(w)
    logp = ref_log_softmax(x, 1 if x.ndim > 1 else 0)
    nll = F.nll_loss(t64(logp), tj.tensor(t), weight=wt, reduction=reduction)
    assert_close(nll, np.asarray(ref_nll(logp, t, w, reduction=reduction)), rtol=1e-10)
    ce = F.cross_entropy(t64(x), tj.tensor(t), weight=wt, reduction=reduction)
    assert_close(ce, np.asarray(ref_nll(logp, t, w, reduction=reduction)), rtol=1e-10)
    xl = t64(x, grad=True)
    assert gradcheck(lambda a: F.cross_entropy(a, tj.tensor(t), weight=wt, reduction=reduction),
                     (xl,))
    assert gradcheck(lambda a: F.nll_loss(a, tj.tensor(t), weight=wt, reduction=reduction),
                     (xl,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_weight", [False, True])
def test_ignore_index(reduction, use_weight):
    x = data((5, 4), np.float64)
    t = np.array([1, -100, 3, 3, -100])
    w = np.array([1.0, 2.0, 0.5, 3.0]) if use_weight else None
    wt = None if w is None else t64(w)
    logp = ref_log_softmax(x, 1)
    expect = np.asarray(ref_nll(logp, t, w, reduction=reduction))
    assert_close(F.cross_entropy(t64(x), tj.tensor(t), weight=wt, reduction=reduction), expect,
                 rtol=1e-10)
    # a custom ignore_index that is also a valid class
    t2 = np.array([1, 2, 3, 2, 0])
    expect2 = np.asarray(ref_nll(logp, t2, w, ignore_index=2, reduction=reduction))
    assert_close(F.nll_loss(t64(logp), tj.tensor(t2), weight=wt, ignore_index=2,
                            reduction=reduction), expect2, rtol=1e-10)
    xl = t64(x, grad=True)
    out = F.cross_entropy(xl, tj.tensor(t), weight=wt, reduction=reduction)
    out.sum().backward()
    assert_close(xl.grad[1], np.zeros(4))  # ignored rows get no gradient
    assert_close(xl.grad[4], np.zeros(4))
    assert gradcheck(lambda a: F.cross_entropy(a, tj.tensor(t), weight=wt, reduction=reduction),
                     (xl,))


def test_cross_entropy_weight_gradcheck():
    x, w = leaf64((4, 3)), t64([0.5, 1.0, 2.0], grad=True)
    t = tj.tensor([0, 2, 2, 1])
    assert gradcheck(lambda a, b: F.cross_entropy(a, t, weight=b), (x, w))


def _ref_ce_probs(x, p, class_dim, w=None, smoothing=0.0, reduction="mean"):
    logp = ref_log_softmax(x, class_dim)
    c = x.shape[class_dim]
    p = p * (1 - smoothing) + smoothing / c
    if w is not None:
        shape = [1] * x.ndim
        shape[class_dim] = c
        p = p * w.reshape(shape)
    loss = -(logp * p).sum(axis=class_dim)
    return _reduce_np(loss, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2), (3,)])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("use_weight", [False, True])
def test_cross_entropy_probability_targets(shape, reduction, smoothing, use_weight):
    class_dim = 1 if len(shape) > 1 else 0
    x = data(shape, np.float64)
    p = np.exp(ref_log_softmax(data(shape, np.float64, seed=9), class_dim))
    w = np.array([0.5, 2.0, 1.0]) if use_weight else None
    wt = None if w is None else t64(w)
    out = F.cross_entropy(t64(x), t64(p), weight=wt, reduction=reduction,
                          label_smoothing=smoothing)
    expect = _ref_ce_probs(x, p, class_dim, w, smoothing, reduction)
    assert_close(out, np.asarray(expect), rtol=1e-10)
    xl, pl = t64(x, grad=True), t64(p, grad=True)
    assert gradcheck(lambda a, b: F.cross_entropy(a, b, weight=wt, reduction=reduction,
                                                  label_smoothing=smoothing), (xl, pl))


def _ref_ce_smooth(x, t, smoothing, ignore_index=-100, reduction="mean"):
    """torch's formula: (1 - eps) * nll + eps * mean over classes of -log p, over valid rows."""
    logp = ref_log_softmax(x, 1)
    valid = t != ignore_index
    safe = np.where(valid, t, 0)
    nll = -np.take_along_axis(logp, safe[:, None], 1)[:, 0] * valid
    smooth = -logp.mean(axis=1) * valid
    loss = (1 - smoothing) * nll + smoothing * smooth
    if reduction == "mean":
        return loss.sum() / valid.sum()
    return _reduce_np(loss, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.1, 0.5])
def test_cross_entropy_label_smoothing_index_targets(reduction, smoothing):
    x = data((5, 4), np.float64)
    t = np.array([0, 3, -100, 1, 3])
    out = F.cross_entropy(t64(x), tj.tensor(t), reduction=reduction, label_smoothing=smoothing)
    assert_close(out, np.asarray(_ref_ce_smooth(x, t, smoothing, reduction=reduction)),
                 rtol=1e-10)
    # equals cross-entropy against the smoothed one-hot probabilities (no ignored rows)
    keep = t != -100
    onehot = np.eye(4)[t[keep]]
    ref = _ref_ce_probs(x[keep], onehot, 1, smoothing=smoothing, reduction="sum")
    got = F.cross_entropy(t64(x[keep]), tj.tensor(t[keep]), reduction="sum",
                          label_smoothing=smoothing)
    assert_close(got, np.asarray(ref), rtol=1e-10)
    xl = t64(x, grad=True)
    assert gradcheck(lambda a: F.cross_entropy(a, tj.tensor(t), reduction=reduction,
                                               label_smoothing=smoothing), (xl,))


def test_cross_entropy_label_smoothing_with_weight_not_supported():
    with pytest.raises(NotImplementedError, match="cross_entropy: label_smoothing together "
                                                  "with weight"):
        F.cross_entropy(tj.zeros(2, 3), tj.tensor([0, 1]), weight=tj.ones(3),
                        label_smoothing=0.1)


def test_cross_entropy_kd_label_smoothing():
    x = data((2, 3, 4), np.float64)
    t = np.array([[0, 1, 2, 2], [1, 1, 0, 2]])
    flat_x = np.moveaxis(x, 1, -1).reshape(-1, 3)
    expect = _ref_ce_smooth(flat_x, t.reshape(-1), 0.3)
    assert_close(F.cross_entropy(t64(x), tj.tensor(t), label_smoothing=0.3), np.asarray(expect),
                 rtol=1e-10)


def test_cross_entropy_int32_targets():
    x = data((3, 4), np.float64)
    t = np.array([0, 3, 1], dtype=np.int32)
    assert_close(F.cross_entropy(t64(x), tj.tensor(t)),
                 np.asarray(ref_nll(ref_log_softmax(x, 1), t)), rtol=1e-10)


def test_cross_entropy_float32_result_dtype():
    out = F.cross_entropy(tj.tensor(data((3, 4))), tj.tensor([0, 1, 2]))
    assert out.dtype == np.float32 and out.shape == ()


# ---------------------------------------------------------------------------- loss errors


def test_cross_entropy_probability_target_wrong_shape_raises():
    with pytest.raises(tj.ShapeError, match=r"cross_entropy: .*probabilities .*input's shape "
                                            r"\(4, 3\).* \(4, 2\)"):
        F.cross_entropy(tj.zeros(4, 3), tj.zeros(4, 2))


@pytest.mark.parametrize("bad", [3, -1, 7])
def test_nll_loss_target_out_of_range_raises(bad):
    with pytest.raises(IndexError, match=rf"nll_loss: target {bad} is out of bounds for 3 "
                                         r"classes"):
        F.nll_loss(tj.zeros(2, 3), tj.tensor([0, bad]))
    with pytest.raises(IndexError, match=rf"target {bad} is out of bounds"):
        F.cross_entropy(tj.zeros(2, 3), tj.tensor([bad, 0]))


def test_nll_loss_float_target_raises():
    with pytest.raises(tj.DTypeError, match="nll_loss: target must be an integer tensor"):
        F.nll_loss(tj.zeros(2, 3), tj.tensor([0.0, 1.0]))


def test_nll_loss_target_shape_mismatch_raises():
    with pytest.raises(tj.ShapeError, match=r"nll_loss: input of shape \(2, 3, 4\) expects a "
                                            r"target of shape \(2, 4\), got \(2, 3\)"):
        F.nll_loss(tj.zeros(2, 3, 4), tj.zeros(2, 3, dtype=tj.int64))


# ============================================================================ second order


@pytest.mark.parametrize("name", ["conv2d", "unfold", "max_pool2d", "avg_pool2d", "layer_norm",
                                  "cross_entropy", "bce_with_logits", "gelu", "softplus"])
def test_second_order(name):
    w = leaf64((2, 2, 2, 2), seed=7)
    fns = {
        "conv2d": lambda x: F.conv2d(x, w, padding=1, stride=(1, 2)) ** 2,
        "unfold": lambda x: F.unfold(x, 2, padding=1) ** 2,
        "max_pool2d": lambda x: F.max_pool2d(x, 2, stride=1) ** 2,
        "avg_pool2d": lambda x: F.avg_pool2d(x * x, 2, padding=1, count_include_pad=False),
        "layer_norm": lambda x: F.layer_norm(x, (3, 3)),
        "cross_entropy": lambda x: F.cross_entropy(x, tj.tensor([[[0, 1, 1], [1, 0, 1],
                                                                  [0, 0, 1]]]),
                                                   label_smoothing=0.1),
        "bce_with_logits": lambda x: F.binary_cross_entropy_with_logits(x, x.sin() * 0.4 + 0.5),
        "gelu": lambda x: F.gelu(x),
        "softplus": lambda x: F.softplus(x, beta=1.5),
    }
    x = t64(np.random.default_rng(3).permutation(18).reshape(1, 2, 3, 3) * 0.2 - 1.7, grad=True)
    fn = fns[name]
    assert gradgradcheck(fn, (x,))
    if name == "conv2d":
        assert gradgradcheck(lambda x, w: F.conv2d(x, w, padding=1), (x, w))
