"""Adam and AdamW, as ``torch.optim.Adam``/``AdamW`` (torch's single-tensor implementation).

>>> opt = tracejit.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..creation import tensor, zeros_like
from ..dtypes import get_default_dtype
from ..errors import user_frame
from ..tensor import maximum
from .optimizer import Optimizer, _check_unsupported, scaled


class Adam(Optimizer):
    """torch's Adam update at step ``t`` for parameter ``p`` with gradient ``g``::

        g = -g if maximize
        p = p * (1 - lr * weight_decay)   (decoupled)   or   g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g * g
        v_hat = max(v_hat, v) if amsgrad else v
        denom = sqrt(v_hat) / sqrt(1 - beta2 ** t) + eps
        p = p - lr / (1 - beta1 ** t) * m / denom

    In a traced step lr, betas, eps and weight_decay are graph inputs and the step count is the
    state's tensor, so neither a scheduler nor the count traces again; the scalar math (the
    bias corrections, ``lr / bias_correction1``) is float64 there as it is in eager Python.
    """

    dynamic_options = ("lr", "betas", "eps", "weight_decay")

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                    "capturable": capturable, "differentiable": differentiable, "fused": fused,
                    "decoupled_weight_decay": decoupled_weight_decay}
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        lr, eps, betas, wd = group["lr"], group["eps"], group["betas"], group["weight_decay"]
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}{user_frame()}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}{user_frame()}")
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            if not isinstance(beta, (int, float)):
                raise NotImplementedError(
                    f"{type(self).__name__}: betas[{i}] of type {type(beta).__name__}; tensor "
                    f"betas are not supported, pass Python floats")
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}{user_frame()}")
        if not 0.0 <= wd:
            raise ValueError(f"Invalid weight_decay value: {wd}{user_frame()}")
        _check_unsupported(group, type(self).__name__)

    def _init_state(self, p, amsgrad: bool) -> dict:
        state = self.state[p]
        if len(state) == 0:
            # torch keeps the step as a 0-d float tensor (float32 unless the default is float64)
            state["step"] = tensor(0.0, dtype=get_default_dtype())
            state["exp_avg"] = zeros_like(p)
            state["exp_avg_sq"] = zeros_like(p)
        if amsgrad and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = zeros_like(p)
        return state

    def _prepare_state(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._init_state(p, group["amsgrad"])

    def _update_group(self, group: dict[str, Any], options: dict[str, Any]) -> None:
        # numbers from options (0-d tensors when traced), branches on the group's values
        lr, eps, weight_decay = options["lr"], options["eps"], options["weight_decay"]
        beta1, beta2 = options["betas"]
        amsgrad = group["amsgrad"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self._init_state(p, amsgrad)
            grad = -p.grad if group["maximize"] else p.grad
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            step = self._next_step(p)

            if group["weight_decay"] != 0:
                if group["decoupled_weight_decay"]:
                    p.mul_(1 - lr * weight_decay)
                else:
                    grad = grad.add(scaled(p, weight_decay))

            # torch: exp_avg.lerp_(grad, 1 - beta1); the same average with mul_/add_
            exp_avg.mul_(beta1).add_(scaled(grad, 1 - beta1))
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

            if not isinstance(step, int):
                # traced: the step is the state's float32 tensor (an exact count); the
                # corrections are float64 graph values, as Python floats are eagerly
                step = step.to(np.float64)
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            step_size = lr / bias_correction1
            bias_correction2_sqrt = bias_correction2 ** 0.5

            if amsgrad:
                max_exp_avg_sq = state["max_exp_avg_sq"]
                max_exp_avg_sq.copy_(maximum(max_exp_avg_sq, exp_avg_sq))
                denom = (max_exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            else:
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr * weight_decay`` before the update)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state):
        super().__setstate__(state)
        # as torch: an AdamW always decouples, whatever the loaded groups say
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
