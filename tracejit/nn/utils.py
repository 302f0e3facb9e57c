"""``tracejit.nn.utils``, as ``torch.nn.utils``: gradient clipping and flattening parameters
into one vector. Written with Tensor ops under ``no_grad``, so they also run inside a traced
training step (the norm stays a tensor; nothing reads a value back to Python).

>>> total = tracejit.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # doctest: +SKIP
"""

from __future__ import annotations

import math

from ..autograd import no_grad
from ..creation import tensor
from ..dispatch import current_tracer
from ..tensor import Tensor, cat, stack

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_",
           "parameters_to_vector", "vector_to_parameters"]


def _tensors(parameters) -> list:
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


def _grads(parameters) -> list:
    return [p.grad for p in _tensors(parameters) if p.grad is not None]


def _vector_norm(t: Tensor, p: float) -> Tensor:
    if p == math.inf:
        return t.abs().amax()
    if p == -math.inf:
        return t.abs().amin()
    if p == 2.0:
        return (t * t).sum().sqrt()
    if p == 1.0:
        return t.abs().sum()
    if p == 0.0:
        return (t != 0).sum().to(t.dtype)
    return (t.abs() ** p).sum() ** (1.0 / p)


def get_total_norm(tensors, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                   foreach=None) -> Tensor:
    """The ``norm_type`` norm of the tensors' norms (for p > 0, of all elements together)."""
    tensors = _tensors(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return tensor(0.0)
    with no_grad():
        # as torch: the norm of the per-tensor norms (for p > 0 the norm of all the elements
        # together; for norm_type 0 the count of tensors with a nonzero element)
        total = _vector_norm(stack([_vector_norm(t, norm_type) for t in tensors]), norm_type)
    if error_if_nonfinite:
        if current_tracer() is not None:
            raise NotImplementedError(
                "clip_grad_norm_(error_if_nonfinite=True) inside a traced function: the check "
                "reads the norm's value; check the returned norm outside the traced step")
        if not math.isfinite(total.item()):
            raise RuntimeError(f"The total norm of order {norm_type} for gradients from "
                               f"`parameters` is non-finite, so it cannot be clipped. To "
                               f"disable this error and scale the gradients by the non-finite "
                               f"norm anyway, set `error_if_nonfinite=False`")
    return total


def clip_grads_with_norm_(parameters, max_norm: float, total_norm: Tensor, foreach=None) -> None:
    """Scale the gradients by ``min(1, max_norm / (total_norm + 1e-6))`` in place."""
    grads = _grads(parameters)
    if not grads:
        return
    with no_grad():
        coef = (float(max_norm) / (total_norm + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype))


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach=None) -> Tensor:
    """Rescale the gradients so their total ``norm_type`` norm is at most ``max_norm`` (as
    torch: by ``max_norm / (norm + 1e-6)`` when that is below 1); returns the norm before."""
    parameters = _tensors(parameters)
    total = get_total_norm(_grads(parameters), norm_type, error_if_nonfinite)
    clip_grads_with_norm_(parameters, max_norm, total)
    return total


def clip_grad_value_(parameters, clip_value: float, foreach=None) -> None:
    """Clamp every gradient into ``[-clip_value, clip_value]`` in place."""
    clip_value = float(clip_value)
    with no_grad():
        for g in _grads(parameters):
            g.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters) -> Tensor:
    """All parameters flattened and concatenated into one 1-d tensor (a copy)."""
    params = _tensors(parameters)
    devices = {p.device for p in params}
    if len(devices) > 1:
        raise TypeError(f"parameters_to_vector: found parameters on several devices "
                        f"{sorted(str(d) for d in devices)}; move them to one first")
    return cat([p.reshape(-1) for p in params])


def vector_to_parameters(vec: Tensor, parameters) -> None:
    """Copy consecutive slices of the 1-d ``vec`` into the parameters (in place)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected tracejit.Tensor, but got: {type(vec).__name__}")
    params = _tensors(parameters)
    total = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.shape[0] != total:
        raise ValueError(f"vector_to_parameters: vec of shape {tuple(vec.shape)} must be 1-d "
                         f"with {total} elements (the parameters' total)")
    offset = 0
    with no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vec[offset:offset + n].reshape(p.shape))
            offset += n


from .. import _torch_names  # noqa: E402

# a torch name tracejit lacks raises an AttributeError naming the alternative
__getattr__ = _torch_names.install(__name__)
