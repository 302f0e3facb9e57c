"""RMSprop and Adagrad, as ``torch.optim.RMSprop``/``Adagrad`` (torch's single-tensor
implementations, the same arithmetic in the same order).

>>> opt = tracejit.optim.RMSprop(params, lr=1e-2, momentum=0.9)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..creation import full_like, tensor, zeros_like
from ..dtypes import get_default_dtype
from ..errors import user_frame
from .optimizer import Optimizer, _check_unsupported, scaled


def _check(name: str, value, what: str) -> None:
    if not 0.0 <= value:
        raise ValueError(f"Invalid {what}: {value}{user_frame()}")


class RMSprop(Optimizer):
    """torch's RMSprop update, per parameter ``p`` with gradient ``g``::

        g = -g if maximize;  g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        avg = sqrt(v - m * m) (centered, m = lerp(m, g, 1 - alpha))  or  sqrt(v);  avg += eps
        buf = momentum * buf + g / avg;  p -= lr * buf   (momentum > 0)
        p -= lr * g / avg                                (otherwise)

    lr, alpha, eps, weight_decay and momentum are graph inputs in a traced step.
    """

    dynamic_options = ("lr", "alpha", "eps", "weight_decay", "momentum")

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False,
                 capturable: bool = False, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False):
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps,
                    "centered": centered, "weight_decay": weight_decay, "capturable": capturable,
                    "foreach": foreach, "maximize": maximize, "differentiable": differentiable}
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        _check("RMSprop", group["lr"], "learning rate")
        _check("RMSprop", group["eps"], "epsilon value")
        _check("RMSprop", group["momentum"], "momentum value")
        _check("RMSprop", group["weight_decay"], "weight_decay value")
        _check("RMSprop", group["alpha"], "alpha value")
        _check_unsupported(group, "RMSprop")

    def _init_state(self, p, group) -> dict:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = tensor(0.0, dtype=get_default_dtype())
            state["square_avg"] = zeros_like(p)
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = zeros_like(p)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = zeros_like(p)
        return state

    def _prepare_state(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._init_state(p, group)

    def _update_group(self, group: dict[str, Any], options: dict[str, Any]) -> None:
        lr, alpha, eps = options["lr"], options["alpha"], options["eps"]
        weight_decay, momentum = options["weight_decay"], options["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self._init_state(p, group)
            grad = -p.grad if group["maximize"] else p.grad
            self._next_step(p)
            if group["weight_decay"] != 0:
                grad = grad.add(scaled(p, weight_decay))
            square_avg = state["square_avg"]
            square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            if group["centered"]:
                grad_avg = state["grad_avg"]
                # torch: grad_avg.lerp_(grad, 1 - alpha), weight below 0.5: self + w * (end - self)
                grad_avg.add_(scaled(grad - grad_avg, 1 - alpha))
                avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt()
            else:
                avg = square_avg.sqrt()
            avg = avg.add_(eps)
            if group["momentum"] > 0:
                buf = state["momentum_buffer"]
                buf.mul_(momentum).addcdiv_(grad, avg)
                p.add_(scaled(buf, -lr))
            else:
                p.addcdiv_(grad, avg, value=-lr)


class Adagrad(Optimizer):
    """torch's Adagrad update at step ``t``::

        g = -g if maximize;  g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        sum = sum + g * g;   p -= clr * g / (sqrt(sum) + eps)

    The accumulator starts at ``initial_accumulator_value`` when the optimizer is made, as in
    torch. lr, lr_decay, weight_decay and eps are graph inputs in a traced step.
    """

    dynamic_options = ("lr", "lr_decay", "weight_decay", "eps")

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10,
                 foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None):
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "fused": fused}
        self._check_group(defaults)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = tensor(0.0, dtype=get_default_dtype())
                state["sum"] = full_like(p, group["initial_accumulator_value"])

    def _check_group(self, group: dict[str, Any]) -> None:
        _check("Adagrad", group["lr"], "learning rate")
        _check("Adagrad", group["lr_decay"], "lr_decay value")
        _check("Adagrad", group["weight_decay"], "weight_decay value")
        _check("Adagrad", group["initial_accumulator_value"], "initial_accumulator_value")
        _check("Adagrad", group["eps"], "epsilon value")
        _check_unsupported(group, "Adagrad")

    def _update_group(self, group: dict[str, Any], options: dict[str, Any]) -> None:
        lr, lr_decay = options["lr"], options["lr_decay"]
        weight_decay, eps = options["weight_decay"], options["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "sum" not in state:  # a parameter group added later
                state["step"] = tensor(0.0, dtype=get_default_dtype())
                state["sum"] = full_like(p, group["initial_accumulator_value"])
            step = self._next_step(p)
            if not isinstance(step, int):
                step = step.to(np.float64)  # traced: the state's tensor, float64 math as eager
            grad = -p.grad if group["maximize"] else p.grad
            if group["weight_decay"] != 0:
                grad = grad.add(scaled(p, weight_decay))
            clr = lr / (1 + (step - 1) * lr_decay) if group["lr_decay"] != 0 else lr
            state_sum = state["sum"]
            state_sum.addcmul_(grad, grad, value=1)
            std = state_sum.sqrt().add_(eps)
            p.addcdiv_(grad, std, value=-clr)
