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
    n, c, h, w = x.shape
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    cols = _unfold(x.reshape(n * c, 1, h, w), kernel, dilation, padding, stride, pad_value=low)
    out = cols.max(1).values
    oh = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out = out.reshape(n, c, oh, -1)
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


__all__ = [n for n in dir() if not n.startswith("_") and n not in (
    "annotations", "math", "np", "D", "ops", "ones", "rand", "zeros", "DTypeError", "ShapeError",
    "user_frame", "Tensor", "where")]
