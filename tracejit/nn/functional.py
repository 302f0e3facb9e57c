"""Functional neural-network ops, as ``torch.nn.functional``. All are compositions of the
primitives in the op table (conv2d is unfold + matmul, pooling is unfold + a reduction), so
they differentiate, trace and fuse like any other op.

>>> import tracejit.nn.functional as F
>>> F.relu(tracejit.tensor([-1.0, 2.0]))
tensor([0., 2.])
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..creation import arange, ones, rand
from ..dispatch import apply, current_tracer
from ..errors import DTypeError, ShapeError, user_frame
from ..tensor import Tensor, _t, where


def _pair(v, name) -> tuple:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v}")
    return v


def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# ---------------------------------------------------------------- activations

def relu(x, inplace=False):
    return x.relu_() if inplace else _t(x).relu()


def gelu(x, approximate="none"):
    return _t(x).gelu(approximate)


def silu(x):
    return _t(x).silu()


def softplus(x, beta=1.0, threshold=20.0):
    return _t(x).softplus(beta, threshold)


def sigmoid(x):
    return _t(x).sigmoid()


def tanh(x):
    return _t(x).tanh()


def leaky_relu(x, negative_slope=0.01):
    x = _t(x)
    return where(x > 0, x, x * negative_slope)


def softmax(x, dim):
    return _t(x).softmax(dim)


def log_softmax(x, dim):
    """Torch's log_softmax (see ``Tensor.log_softmax``): a row holding +inf is all nan.

    >>> log_softmax(tj.tensor([1.0, float("inf")]), -1).tolist()     # doctest: +SKIP
    [nan, nan]
    """
    return _t(x).log_softmax(dim)


def pad(x, pad, mode="constant", value=0.0):
    if mode != "constant":
        raise NotImplementedError(f"pad: mode {mode!r} is not supported; only 'constant' is "
                                  f"(reflect/replicate can be built with cat and flip)")
    return _t(x).pad(pad, value)


# ---------------------------------------------------------------- layers

def linear(x, weight, bias=None):
    """``x @ weight.T + bias``, weight of shape (out_features, in_features)."""
    y = _t(x) @ weight.T
    return y if bias is None else y + bias


def _unfold(x, kernel, dilation, padding, stride, pad_value=0.0):
    return apply(ops.UNFOLD, x, kernel=kernel, dilation=dilation, padding=padding,
                     stride=stride, pad_value=pad_value)


def unfold(x, kernel_size, dilation=1, padding=0, stride=1):
    """im2col: (N, C, H, W) -> (N, C*kh*kw, L), as ``torch.nn.functional.unfold``."""
    return _unfold(_t(x), _pair(kernel_size, "kernel_size"), _pair(dilation, "dilation"),
                   _pair(padding, "padding"), _pair(stride, "stride"))


def fold(x, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """col2im, the adjoint of ``unfold`` (overlapping windows add up)."""
    return apply(ops.FOLD, _t(x), output_size=_pair(output_size, "output_size"),
                     kernel=_pair(kernel_size, "kernel_size"), dilation=_pair(dilation, "dilation"),
                     padding=_pair(padding, "padding"), stride=_pair(stride, "stride"))


def _batched(x, name):
    if x.ndim == 3:
        return x.unsqueeze(0), True
    if x.ndim != 4:
        raise ShapeError(f"{name}: expected a 3-d (C, H, W) or 4-d (N, C, H, W) input, got shape "
                         f"{tuple(x.shape)}{user_frame(2)}")
    return x, False


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d convolution (cross-correlation) as in torch: unfold (im2col) then a batched matmul."""
    x, unbatched = _batched(_t(x), "conv2d")
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if c != cg * groups or o % groups:
        raise ShapeError(
            f"conv2d: weight of shape {tuple(weight.shape)} with groups={groups} expects an input "
            f"with {cg * groups} channels (and out channels divisible by groups), got input of "
            f"shape {tuple(x.shape)}{user_frame()}")
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        if stride != (1, 1):
            raise ValueError("conv2d: padding='same' is only supported with stride 1")
        total = [d * (k - 1) for d, k in zip(dilation, (kh, kw))]
        if any(t % 2 for t in total):  # asymmetric: the extra row/column goes after, as torch
            x = x.pad((total[1] // 2, total[1] - total[1] // 2,
                       total[0] // 2, total[0] - total[0] // 2))
            padding = (0, 0)
        else:
            padding = (total[0] // 2, total[1] // 2)
    padding = _pair(padding, "padding")
    cols = _unfold(x, (kh, kw), dilation, padding, stride)  # (N, C*kh*kw, L)
    oh = (x.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (x.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    k = cg * kh * kw
    if groups == 1:
        out = weight.reshape(o, k) @ cols  # (N, O, L)
    else:
        out = weight.reshape(1, groups, o // groups, k) @ cols.reshape(n, groups, k, oh * ow)
    out = out.reshape(n, o, oh, ow)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out.squeeze(0) if unbatched else out


def _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode, name):
    if ceil_mode:
        raise NotImplementedError(f"{name}: ceil_mode=True is not supported; pad the input "
                                  f"explicitly instead")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride")
    padding, dilation = _pair(padding, "padding"), _pair(dilation, "dilation")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{name}: pad should be at most half of the effective kernel size, got "
                         f"padding {padding} for kernel {kernel}")
    x, unbatched = _batched(_t(x), name)
    return x, unbatched, kernel, stride, padding, dilation


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over each window; the gradient goes to the (first) maximal element, as in torch."""
    if return_indices:
        raise NotImplementedError("max_pool2d: return_indices=True is not supported; compute "
                                  "argmax over F.unfold(x, ...) instead")
    x, unbatched, kernel, stride, padding, dilation = _pool_setup(
        x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    out = apply(ops.MAX_POOL2D, x, kernel=kernel, dilation=dilation, padding=padding,
                stride=stride)
    return out.squeeze(0) if unbatched else out


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    x, unbatched, kernel, stride, padding, dilation = _pool_setup(
        x, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    n, c, h, w = x.shape
    cols = _unfold(x.reshape(n * c, 1, h, w), kernel, dilation, padding, stride)
    total = cols.sum(1)
    if divisor_override:
        out = total / divisor_override
    elif count_include_pad or padding == (0, 0):
        out = total / (kernel[0] * kernel[1])
    else:
        ones_hw = ones(1, 1, h, w, dtype=x.dtype, device=x.device)
        counts = _unfold(ones_hw, kernel, dilation, padding, stride)
        out = total / counts.sum(1)
    oh = (h + 2 * padding[0] - (kernel[0] - 1) - 1) // stride[0] + 1
    out = out.reshape(n, c, oh, -1)
    return out.squeeze(0) if unbatched else out


def embedding(input, weight, padding_idx=None):
    """Rows of ``weight`` picked by the integer tensor ``input``."""
    input = _t(input)
    if input.dtype.kind not in "iu":
        raise DTypeError(f"embedding: indices must be an integer tensor (int64 or int32), got "
                         f"{input.dtype}{user_frame()}")
    out = weight[input]
    if padding_idx is not None:
        if padding_idx < 0:
            padding_idx += weight.shape[0]
        out = where((input == padding_idx).unsqueeze(-1), out.detach(), out)
    return out


def dropout(x, p=0.5, training=True, inplace=False):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (training only)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    x = _t(x)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        out = x * 0.0
    else:
        keep = rand(x.shape, dtype=x.dtype if x.dtype.kind == "f" else None,
                    device=x.device) >= p
        out = x * keep / (1.0 - p)
    return x.copy_(out) if inplace else out


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing ``normalized_shape`` dims (biased variance, as torch)."""
    x = _t(x)
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else \
        tuple(normalized_shape)
    k = len(normalized_shape)
    if tuple(x.shape[x.ndim - k:]) != normalized_shape or k > x.ndim:
        raise ShapeError(f"layer_norm: normalized_shape {normalized_shape} does not match the "
                         f"trailing dims of input of shape {tuple(x.shape)}{user_frame()}")
    dims = tuple(range(x.ndim - k, x.ndim))
    mean = x.mean(dims, keepdim=True)
    d = x - mean
    var = (d * d).mean(dims, keepdim=True)
    y = d * (var + eps).rsqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding with a new trailing dim of size ``num_classes``."""
    tensor = _t(tensor)
    if tensor.dtype.kind not in "iu":
        raise DTypeError(f"one_hot: expects an integer class-index tensor, got {tensor.dtype}")
    if num_classes < 0:
        num_classes = int(tensor.amax().item()) + 1 if tensor.numel() else 0
    classes = arange(num_classes, device=tensor.device)
    return (tensor.unsqueeze(-1) == classes).long()


# ---------------------------------------------------------------- losses

def mse_loss(input, target, reduction="mean"):
    d = _t(input) - target
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input, target, reduction="mean"):
    return _reduce((_t(input) - target).abs(), reduction, "l1_loss")


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    x = _t(input)
    loss = x.relu() - x * target + (-x.abs()).exp().log1p()
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def _check_classes(name, input, target):
    if target.dtype.kind not in "iu":
        raise DTypeError(f"{name}: target must be an integer tensor of class indices (int64), got "
                         f"{target.dtype}{user_frame(2)}")
    expect = (input.shape[0],) + tuple(input.shape[2:]) if input.ndim >= 2 else ()
    if tuple(target.shape) != expect:
        raise ShapeError(f"{name}: input of shape {tuple(input.shape)} expects a target of shape "
                         f"{expect}, got {tuple(target.shape)}{user_frame(2)}")


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices; input holds log-probabilities (N, C, ...)."""
    input, target = _t(input), _t(target)
    _check_classes("nll_loss", input, target)
    class_dim = 1 if input.ndim >= 2 else 0
    n_classes = input.shape[class_dim]
    # values are only known eagerly; on CUDA the gather kernel counts indices out of range and
    # raises after its launch (no host copy of the target here)
    if current_tracer() is None and not target.is_cuda:
        t = target._data
        bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
        if bad.any():
            raise IndexError(f"nll_loss: target {int(t[bad].flat[0])} is out of bounds for "
                             f"{n_classes} classes{user_frame()}")
    valid = target != ignore_index
    safe = where(valid, target, 0)
    picked = -input.gather(class_dim, safe.unsqueeze(class_dim)).squeeze(class_dim)
    w = valid.to(input.dtype)
    if weight is not None:
        w = w * weight[safe]
    loss = picked * w
    if reduction == "mean":
        return loss.sum() / w.sum()
    return _reduce(loss, reduction, "nll_loss")


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """log_softmax over the class dim (1, or 0 for unbatched input) then nll_loss; ``target``
    may also hold class probabilities of the input's shape."""
    input, target = _t(input), _t(target)
    class_dim = 1 if input.ndim >= 2 else 0
    logp = log_softmax(input, class_dim)
    if target.dtype.kind == "f":
        if tuple(target.shape) != tuple(input.shape):
            raise ShapeError(
                f"cross_entropy: target must hold integer class indices (int64) or class "
                f"probabilities of the input's shape {tuple(input.shape)}; got a {target.dtype} "
                f"target of shape {tuple(target.shape)}{user_frame()}")
        n = input.shape[class_dim]
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / n
        terms = logp * target if weight is None else \
            logp * target * weight.reshape((-1,) + (1,) * (input.ndim - class_dim - 1))
        loss = -terms.sum(class_dim)
        return _reduce(loss, reduction, "cross_entropy")
    loss = nll_loss(logp, target, weight, ignore_index, reduction)
    if not label_smoothing:
        return loss
    if weight is not None:
        raise NotImplementedError("cross_entropy: label_smoothing together with weight is not "
                                  "supported; apply the class weights to probability targets")
    valid = (target != ignore_index).to(input.dtype)
    smooth = -logp.mean(class_dim) * valid
    if reduction == "mean":
        smooth = smooth.sum() / valid.sum()
    else:
        smooth = _reduce(smooth, reduction, "cross_entropy")
    return (1 - label_smoothing) * loss + label_smoothing * smooth



# ---------------------------------------------------------------- more layers (issue 15)

def _single(v, name) -> int:
    if isinstance(v, int):
        return v
    v = tuple(int(x) for x in v)
    if len(v) != 1:
        raise ValueError(f"{name} must be an int or a 1-tuple, got {v}")
    return v[0]


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-d convolution over (N, C, L) (or unbatched (C, L)) input: conv2d over (N, C, 1, L)."""
    x = _t(x)
    if x.ndim not in (2, 3):
        raise ShapeError(f"conv1d: expected a 2-d (C, L) or 3-d (N, C, L) input, got shape "
                         f"{tuple(x.shape)}{user_frame()}")
    if weight.ndim != 3:
        raise ShapeError(f"conv1d: weight must be 3-d (out, in/groups, k), got shape "
                         f"{tuple(weight.shape)}{user_frame()}")
    unbatched = x.ndim == 2
    if unbatched:
        x = x.unsqueeze(0)
    if not isinstance(padding, str):
        padding = (0, _single(padding, "padding"))
    out = conv2d(x.unsqueeze(2), weight.unsqueeze(2), bias, (1, _single(stride, "stride")),
                 padding, (1, _single(dilation, "dilation")), groups).squeeze(2)
    return out.squeeze(0) if unbatched else out


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 2-d convolution, as torch: a matmul with the weight, then fold (col2im), the
    adjoint of conv2d's unfold. Weight of shape (in, out/groups, kh, kw)."""
    x, unbatched = _batched(_t(x), "conv_transpose2d")
    n, c, h, w = x.shape
    cin, cog, kh, kw = weight.shape
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    output_padding, dilation = _pair(output_padding, "output_padding"), _pair(dilation, "dilation")
    if c != cin or cin % groups:
        raise ShapeError(
            f"conv_transpose2d: weight of shape {tuple(weight.shape)} with groups={groups} "
            f"expects an input with {cin} channels (divisible by groups), got input of shape "
            f"{tuple(x.shape)}{user_frame()}")
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"conv_transpose2d: output_padding {output_padding} must be smaller "
                         f"than either stride {stride} or dilation {dilation}")
    oh = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    ow = (w - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"conv_transpose2d: input of shape {tuple(x.shape)} gives an empty "
                         f"output ({oh}, {ow}){user_frame()}")
    k = cog * kh * kw
    cg = cin // groups
    if groups == 1:
        cols = weight.reshape(cin, k).T @ x.reshape(n, cin, h * w)  # (N, O*kh*kw, L)
    else:
        wg = weight.reshape(groups, cg, k).transpose(1, 2)  # (G, O/G*kh*kw, C/G)
        cols = (wg @ x.reshape(n, groups, cg, h * w)).reshape(n, groups * k, h * w)
    out = fold(cols, (oh, ow), (kh, kw), dilation, padding, stride)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out.squeeze(0) if unbatched else out


def _const(arr, like):
    from ..creation import tensor
    return tensor(np.asarray(arr, dtype=like.dtype), device=like.device)


def _adaptive_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) averaging weights of torch's adaptive bins [floor(i*n/m), ceil((i+1)*n/m))."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        a, b = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, a:b] = 1.0 / (b - a)
    return m


def adaptive_avg_pool2d(x, output_size):
    """Average over torch's adaptive bins; separable, so two matmuls with constant averaging
    matrices (exact for overlapping bins too). ``None`` in ``output_size`` keeps that size."""
    x, unbatched = _batched(_t(x), "adaptive_avg_pool2d")
    h, w = x.shape[2], x.shape[3]
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    oh, ow = h if oh is None else int(oh), w if ow is None else int(ow)
    if oh <= 0 or ow <= 0 or h == 0 or w == 0:
        raise ShapeError(f"adaptive_avg_pool2d: output_size {(oh, ow)} for input of shape "
                         f"{tuple(x.shape)}{user_frame()}")
    if x.dtype.kind != "f":
        raise DTypeError(f"adaptive_avg_pool2d: expects a floating point input, got {x.dtype}")
    if (oh, ow) == (1, 1):
        out = x.mean((2, 3), keepdim=True)
    elif h % oh == 0 and w % ow == 0:
        out = avg_pool2d(x, (h // oh, w // ow))
    else:
        out = _const(_adaptive_matrix(h, oh), x) @ x @ _const(_adaptive_matrix(w, ow).T, x)
    return out.squeeze(0) if unbatched else out


def _linear_matrix(n_in: int, n_out: int, scale, align_corners: bool) -> np.ndarray:
    """(n_out, n_in) weights of torch's 1-d linear interpolation (the bilinear axes)."""
    j = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = j * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        r = 1.0 / scale if scale is not None else n_in / n_out
        src = np.maximum((j + 0.5) * r - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def _nearest_index(n_in: int, n_out: int, scale) -> np.ndarray:
    r = 1.0 / scale if scale is not None else n_in / n_out
    return np.minimum(np.floor(np.arange(n_out) * r).astype(np.int64), n_in - 1)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize (N, C, L) or (N, C, H, W) input, as ``torch.nn.functional.interpolate``: modes
    'nearest' (index_select), 'linear' and 'bilinear' (constant interpolation matrices)."""
    x = _t(input)
    if mode not in ("nearest", "linear", "bilinear"):
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported; use 'nearest', "
                                  f"'linear' (3-d input) or 'bilinear' (4-d input)")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported; use "
                                  "antialias=False")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    want = {"linear": 3, "bilinear": 4}.get(mode)
    if x.ndim not in (3, 4) or (want is not None and x.ndim != want):
        raise NotImplementedError(
            f"interpolate: mode {mode!r} with a {x.ndim}-d input is not supported (got shape "
            f"{tuple(x.shape)}); 'nearest' takes 3-d or 4-d, 'linear' 3-d, 'bilinear' 4-d")
    spatial = tuple(x.shape[2:])
    k = len(spatial)
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined")
    if size is not None:
        sizes = (size,) * k if isinstance(size, int) else tuple(int(s) for s in size)
        scales = (None,) * k
    else:
        scales = (float(scale_factor),) * k if isinstance(scale_factor, (int, float)) else \
            tuple(float(s) for s in scale_factor)
        sizes = tuple(int(np.floor(n * s)) for n, s in zip(spatial, scales))
        if recompute_scale_factor:
            scales = (None,) * k
    if len(sizes) != k or len(scales) != k:
        raise ValueError(f"interpolate: size/scale_factor must have {k} elements for a "
                         f"{x.ndim}-d input")
    if any(s <= 0 for s in sizes):
        raise ValueError(f"interpolate: output size {sizes} must be positive")
    if mode == "nearest":
        for d, (n_in, n_out, sc) in enumerate(zip(spatial, sizes, scales)):
            if n_in != n_out:
                x = x.index_select(2 + d, _const(_nearest_index(n_in, n_out, sc), x).long())
        return x
    if x.dtype.kind != "f":
        raise DTypeError(f"interpolate: mode {mode!r} expects a floating point input, got "
                         f"{x.dtype}")
    ac = bool(align_corners)
    mats = [_const(_linear_matrix(n, m, sc, ac), x) for n, m, sc in zip(spatial, sizes, scales)]
    if k == 1:
        return x @ mats[0].T
    return mats[0] @ x @ mats[1].T


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    return interpolate(input, size, scale_factor, mode, align_corners)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise each of ``num_groups`` channel groups of (N, C, *) input over its channels and
    positions (biased variance), then the per-channel affine."""
    x = _t(x)
    if x.ndim < 2 or x.shape[1] % num_groups:
        raise ShapeError(f"group_norm: expected input (N, C, *) with C divisible by "
                         f"num_groups={num_groups}, got shape {tuple(x.shape)}{user_frame()}")
    n, c = x.shape[0], x.shape[1]
    g = x.reshape(n, num_groups, -1)
    mean = g.mean(2, keepdim=True)
    d = g - mean
    var = (d * d).mean(2, keepdim=True)
    y = (d * (var + eps).rsqrt()).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _float_mask(mask, like, name):
    """A boolean mask (True = not allowed) as -inf/0; a float mask is added as it is."""
    if mask is None:
        return None
    mask = _t(mask)
    if mask.dtype == np.bool_:
        return where(mask, _const(-np.inf, like), _const(0.0, like))
    if mask.dtype.kind != "f":
        raise DTypeError(f"{name}: a mask must be bool or floating point, got {mask.dtype}")
    return mask


def _causal_mask(n_q, n_k, like):
    return _const(np.triu(np.full((n_q, n_k), -np.inf), 1), like)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """``softmax(q @ k^T * scale + mask) @ v`` over (..., L, E) inputs, as torch; a bool mask
    keeps the True positions (torch's convention here)."""
    q, k, v = _t(query), _t(key), _t(value)
    if enable_gqa:
        raise NotImplementedError("scaled_dot_product_attention: enable_gqa is not supported; "
                                  "repeat the key/value heads with repeat_interleave")
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: pass either attn_mask or "
                             "is_causal=True, not both")
        scores = scores + _causal_mask(q.shape[-2], k.shape[-2], scores)
    elif attn_mask is not None:
        m = _t(attn_mask)
        scores = scores + (_float_mask(m.logical_not(), scores, "scaled_dot_product_attention")
                           if m.dtype == np.bool_ else m)
    p = scores.softmax(-1)
    if dropout_p > 0.0:
        p = dropout(p, dropout_p)
    return p @ v


def multi_head_attention_forward(query, key, value, num_heads, in_proj_weight, in_proj_bias,
                                 out_proj_weight, out_proj_bias, key_padding_mask=None,
                                 need_weights=True, attn_mask=None, dropout_p=0.0,
                                 training=True, average_attn_weights=True, is_causal=False,
                                 q_proj_weight=None, k_proj_weight=None, v_proj_weight=None):
    """torch's multi-head attention on (L, N, E) query and (S, N, E) key/value (sequence
    first; unbatched (L, E) too): projections, per-head scaled dot products with the masks
    (bool True = not allowed, float added), dropout on the weights, the output projection.
    Returns ``(output, weights)``; weights averaged over heads unless told otherwise."""
    q, k, v = _t(query), _t(key), _t(value)
    unbatched = q.ndim == 2
    if unbatched:
        q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = _t(key_padding_mask).unsqueeze(0)
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ShapeError(f"multi_head_attention: expected query/key/value of 2 or 3 dims, got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
                         f"{user_frame()}")
    n_q, batch, e = q.shape
    n_k = k.shape[0]
    if e % num_heads:
        raise ValueError(f"embed_dim {e} must be divisible by num_heads {num_heads}")
    hd = e // num_heads
    if in_proj_weight is not None:
        wq, wk, wv = in_proj_weight[:e], in_proj_weight[e:2 * e], in_proj_weight[2 * e:]
    else:
        wq, wk, wv = q_proj_weight, k_proj_weight, v_proj_weight
    if in_proj_bias is not None:
        bq, bk, bv = in_proj_bias[:e], in_proj_bias[e:2 * e], in_proj_bias[2 * e:]
    else:
        bq = bk = bv = None
    q, k, v = linear(q, wq, bq), linear(k, wk, bk), linear(v, wv, bv)

    def heads(t, n):  # (n, N, E) -> (N, H, n, hd)
        return t.reshape(n, batch, num_heads, hd).permute(1, 2, 0, 3)

    q, k, v = heads(q, n_q), heads(k, n_k), heads(v, n_k)
    scores = (q * (1.0 / np.sqrt(hd))) @ k.transpose(-2, -1)  # (N, H, L, S)
    if attn_mask is None and is_causal:
        attn_mask = _causal_mask(n_q, n_k, scores)
    mask = _float_mask(attn_mask, scores, "multi_head_attention")
    if mask is not None:
        if mask.ndim == 3:
            if mask.shape[0] != batch * num_heads:
                raise ShapeError(f"multi_head_attention: a 3-d attn_mask must be (N*num_heads, "
                                 f"L, S) = {(batch * num_heads, n_q, n_k)}, got "
                                 f"{tuple(mask.shape)}{user_frame()}")
            mask = mask.reshape(batch, num_heads, n_q, n_k)
        scores = scores + mask
    kpm = _float_mask(key_padding_mask, scores, "multi_head_attention")
    if kpm is not None:
        scores = scores + kpm.reshape(batch, 1, 1, n_k)
    weights = scores.softmax(-1)
    dropped = dropout(weights, dropout_p) if training and dropout_p > 0.0 else weights
    out = (dropped @ v).permute(2, 0, 1, 3).reshape(n_q, batch, e)
    out = linear(out, out_proj_weight, out_proj_bias)
    if unbatched:
        out = out.squeeze(1)
    if not need_weights:
        return out, None
    if average_attn_weights:
        weights = weights.mean(1)
    return out, (weights.squeeze(0) if unbatched else weights)


# ---------------------------------------------------------------- more losses (issue 15)

def _clamped_log(x):
    """``max(log(x), -100)`` with a zero (not nan) gradient where x is 0: the clamped log is
    flat there. NOTE: torch's own backward gives (x - t) / 1e-12 at x = 0 or 1 instead."""
    positive = x > 0
    return where(positive, where(positive, x, 1.0).log(), -100.0).clamp(min=-100.0)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """``-(t * log(x) + (1 - t) * log(1 - x))`` on probabilities, each log clamped at -100 as
    torch does (so x = 0 or 1 gives a finite loss)."""
    x, t = _t(input), _t(target)
    if tuple(t.shape) != tuple(x.shape):
        raise ShapeError(f"binary_cross_entropy: target of shape {tuple(t.shape)} must match the "
                         f"input's shape {tuple(x.shape)}{user_frame()}")
    if current_tracer() is None and not x.is_cuda and x.numel() and (
            (x._data < 0).any() or (x._data > 1).any()):
        raise ValueError("binary_cross_entropy: all elements of input should be between 0 and 1 "
                         "(use BCEWithLogitsLoss for logits)")
    loss = -(t * _clamped_log(x) + (1 - t) * _clamped_log(1 - x))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``beta=0``: L1)."""
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    d = (_t(input) - target).abs()
    if beta == 0:
        return _reduce(d, reduction, "smooth_l1_loss")
    loss = where(d < beta, d * d * (0.5 / beta), d - 0.5 * beta)
    return _reduce(loss, reduction, "smooth_l1_loss")


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """``0.5 d^2`` where ``|d| <= delta``, else ``delta * (|d| - 0.5 delta)``."""
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    d = (_t(input) - target).abs()
    loss = where(d <= delta, d * d * 0.5, (d - 0.5 * delta) * delta)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "huber_loss")


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Pointwise ``target * (log(target) - input)`` with ``input`` log-probabilities (0 where
    target is 0); ``log_target`` takes the target as log-probabilities. 'batchmean' divides the
    sum by the batch size (the KL divergence); 'mean' by the element count, as torch."""
    if size_average is not None or reduce is not None:
        raise NotImplementedError("kl_div: size_average and reduce are deprecated in torch and "
                                  "not supported; use reduction=")
    x, t = _t(input), _t(target)
    if log_target:
        loss = t.exp() * (t - x)
    else:
        # xlogy(t, t) - t * x; NOTE: the log of a safe 1 where t == 0 keeps 0 * log(0) (nan)
        # out of the value and of the gradient
        safe = where(t == 0, 1.0, t)
        loss = t * safe.log() - t * x
    if reduction == "batchmean":
        return loss.sum() / (x.shape[0] if x.ndim else 1)
    if reduction == "mean":
        import warnings
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the "
                      "support size.'batchmean' divides only by the batch size, and aligns with "
                      "the KL div math definition.'mean' will be changed to behave the same as "
                      "'batchmean' in the next major release.", stacklevel=2)
    return _reduce(loss, reduction, "kl_div")

__all__ = [n for n in dir() if not n.startswith("_") and n not in (
    "annotations", "math", "np", "D", "ops", "ones", "rand", "zeros", "DTypeError", "ShapeError",
    "user_frame", "Tensor", "where")]


# numpy's axis= / keepdims= for dim= / keepdim=
from .._aliases import add_aliases as _add_aliases  # noqa: E402

_add_aliases(globals())

from .. import _torch_names  # noqa: E402

# a torch name tracejit lacks raises an AttributeError naming the alternative
__getattr__ = _torch_names.install(__name__)
