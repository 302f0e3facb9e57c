"""Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

>>> opt = tracejit.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)
"""

from __future__ import annotations

from typing import Any

from ..errors import user_frame
from .optimizer import Optimizer, _check_unsupported, scaled


class SGD(Optimizer):
    """torch's SGD update, per parameter ``p`` with gradient ``g``::

        g = -g if maximize;  g = g + weight_decay * p
        buf = g (first step)  or  buf = momentum * buf + (1 - dampening) * g
        g = g + momentum * buf (nesterov)  or  g = buf
        p = p - lr * g

    lr, momentum and weight_decay are graph inputs in a traced step (a scheduler does not
    retrace); the first step with momentum differs (the buffer starts as the gradient), so a
    traced step with momentum is traced for its first step and once more for the others.
    """

    dynamic_options = ("lr", "momentum", "weight_decay")

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False,
                 fused: bool | None = None):
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                    "foreach": foreach, "differentiable": differentiable, "fused": fused}
        _check_sgd(defaults)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        _check_sgd(group)

    def _update_group(self, group: dict[str, Any], options: dict[str, Any]) -> None:
        # numbers from options (0-d tensors when traced), branches on the group's values
        lr, momentum, weight_decay = options["lr"], options["momentum"], options["weight_decay"]
        dampening, nesterov = group["dampening"], group["nesterov"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = -p.grad if group["maximize"] else p.grad
            if group["weight_decay"] != 0:
                grad = grad.add(scaled(p, weight_decay))
            if group["momentum"] != 0:
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = grad.detach().clone()
                    state["momentum_buffer"] = buf
                else:
                    buf.mul_(momentum).add_(scaled(grad, 1 - dampening))
                grad = grad.add(scaled(buf, momentum)) if nesterov else buf
            p.add_(scaled(grad, -lr))


def _check_sgd(group: dict[str, Any]) -> None:
    if group["lr"] < 0.0:
        raise ValueError(f"Invalid learning rate: {group['lr']}{user_frame()}")
    if group["momentum"] < 0.0:
        raise ValueError(f"Invalid momentum value: {group['momentum']}{user_frame()}")
    if group["weight_decay"] < 0.0:
        raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}{user_frame()}")
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    _check_unsupported(group, "SGD")
