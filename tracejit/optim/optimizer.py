"""Optimizer base class with torch's interface: param groups with per-group options,
``zero_grad``, ``step(closure)`` and ``state_dict``/``load_state_dict`` in torch's layout.

>>> w = tracejit.zeros(3, requires_grad=True)
>>> opt = tracejit.optim.SGD([w], lr=0.1)
>>> (w - 1).square().sum().backward(); opt.step(); opt.zero_grad()

Every update is written with in-place Tensor ops under ``no_grad`` and every state tensor is
made with tracejit ops, so a traced training step records the update as graph nodes.

Inside a traced step the options a scheduler changes (``dynamic_options``: lr, momentum,
betas, eps, weight_decay) are graph inputs, not guards: ``step`` hands ``_update_group`` the
group's numbers as 0-d float64 tensors read afresh on every call (``Tracer.dynamic_number``),
so one compiled graph serves every learning rate. 0-d tensors promote as Python scalars do
(the float32 result keeps its dtype, the number is rounded to float32 where it meets a float32
tensor) and arithmetic among them is float64 like Python's, so the traced update does the
same arithmetic as the eager one. Branches on an option (``if weight_decay != 0``) read the
Python value and are guarded by whether it is zero.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from itertools import chain
from typing import Any, Callable, Iterable

from .. import autograd, dispatch
from ..creation import tensor
from ..dispatch import current_tracer
from ..dtypes import get_default_dtype
from ..errors import user_frame
from ..tensor import Tensor


class _RequiredParameter:
    """Marks a default that each param group must set (torch.optim.optimizer.required)."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


def _typename(x) -> str:
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _is_number(v) -> bool:
    return type(v) in (int, float)


def _number_shape(v):
    """What a traced graph depends on in a dynamic option: only whether it is zero (the
    updates branch on that) and its kind; tuples (betas) element by element."""
    if isinstance(v, tuple):
        return tuple(_number_shape(x) for x in v)
    if _is_number(v):
        return "zero" if v == 0 else "nonzero"
    return v


def scaled(t, factor):
    """``t * factor``, skipping the Python number 1 as ``add(t, alpha=1)`` does; a tensor
    factor (a dynamic option inside a trace) always multiplies."""
    return t if not isinstance(factor, Tensor) and factor == 1 else t * factor


def _check_unsupported(defaults: dict, name: str) -> None:
    """Options torch has that change the algorithm's contract, not just speed."""
    if defaults.get("differentiable"):
        raise NotImplementedError(
            f"{name}(differentiable=True): differentiating through the optimizer step is not "
            f"supported; tracejit updates parameters in place under no_grad. Use "
            f"differentiable=False.")
    if defaults.get("capturable"):
        raise NotImplementedError(
            f"{name}(capturable=True): CUDA-graph capture is torch-specific; compile the "
            f"training step with @tracejit.trace instead. Use capturable=False.")
    if defaults.get("fused"):
        raise NotImplementedError(
            f"{name}(fused=True): there is no fused kernel; tracejit fuses the update when the "
            f"training step is traced. Use fused=None.")


class Optimizer:
    """Base class: holds ``param_groups`` (list of dicts) and per-parameter ``state``.

    Subclasses pass their ``defaults`` and implement ``_update_group``. ``foreach`` is accepted
    for torch compatibility and has no effect (updates always run one tensor at a time).
    """

    #: group options read as graph inputs inside a traced step (see the module docstring)
    dynamic_options: tuple = ()

    def __init__(self, params: Iterable, defaults: dict[str, Any]):
        self.defaults = defaults
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Tensors or dicts, but got " + _typename(params))
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        # NOTE: the Python step counts used by the math (Adam's bias correction); the tensor
        # ``state[p]["step"]`` mirrors it for state_dict compatibility, so step() never reads
        # a tensor's value (which a traced step could not do).
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own options (missing ones use the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        else:
            param_group["params"] = list(params)
        for param in param_group["params"]:
            if not isinstance(param, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                + _typename(param))
            if not param.is_leaf:
                raise ValueError(f"can't optimize a non-leaf Tensor (a tensor of shape "
                                 f"{tuple(param.shape)} computed by {param.grad_fn.name()}); "
                                 f"pass the leaf parameters themselves{user_frame()}")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            param_group.setdefault(name, default)
        self._check_group(param_group)
        ids = [id(p) for p in param_group["params"]]
        if len(ids) != len(set(ids)):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; in "
                          "future, this will cause an error", stacklevel=3)
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if not existing.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate one group's options (subclasses check their hyperparameters here, so a
        group added later gets the same checks as the constructor's arguments)."""
        _check_unsupported(group, type(self).__name__)

    # ------------------------------------------------------------------ stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset gradients: ``.grad = None`` (default) or zero them in place."""
        tracer = current_tracer()
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    # NOTE: set without reading .grad: a read would make a traced step depend on
                    # whether the parameters came in with gradients (see Tracer.grad_reset)
                    if tracer is not None:
                        tracer.grad_reset(p)
                    p.grad = None
                    continue
                if p.grad is None:
                    continue
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                else:
                    p.grad.requires_grad_(False)
                p.grad.zero_()

    def step(self, closure: Callable[[], Any] | None = None):
        """Update the parameters once; ``closure`` re-evaluates the loss and is returned."""
        loss = None
        if closure is not None:
            with autograd.enable_grad():
                loss = closure()
        tracer = current_tracer()
        if tracer is not None:
            # state made on the first step is made before the graph reads it (eagerly, not as
            # graph constants), so the second call does not trace again for a new state layout
            with dispatch.tracing(None), autograd.no_grad():
                self._prepare_state()
            # the static options and the layout of the state are baked into the graph: a
            # change retraces; the dynamic options are inputs (see the module docstring)
            tracer.guard(self._trace_signature, f"{type(self).__name__} settings")
        with autograd.no_grad():
            for i, group in enumerate(self.param_groups):
                self._update_group(group, self._options(tracer, i, group))
        return loss

    def _trace_signature(self):
        """What a traced step bakes in, as (name, value) pairs (a recompile names the ones that
        changed): every static option, whether each dynamic one is zero, the state's layout."""
        def option(k, v):
            if k in self.dynamic_options:
                return _number_shape(v)
            return tuple(v) if isinstance(v, list) else v

        options = tuple((f"param_groups[{i}][{k!r}]", option(k, v))
                        for i, g in enumerate(self.param_groups)
                        for k, v in g.items() if k != "params")
        state = tuple(tuple(sorted(self.state[p])) if p in self.state else ()
                      for g in self.param_groups for p in g["params"])
        return options + (("state layout", state),)

    def _options(self, tracer, index: int, group: dict[str, Any]) -> dict[str, Any]:
        """The group's options as the update reads them: the group itself eagerly; inside a
        trace, its dynamic options as 0-d float64 graph inputs."""
        if tracer is None:
            return group
        options = dict(group)
        for name in self.dynamic_options:
            value = group.get(name)
            if _is_number(value):
                options[name] = tracer.dynamic_number(
                    lambda name=name: self.param_groups[index][name], f"group{index}.{name}",
                    key=(id(self), index, name))
            elif isinstance(value, tuple):  # betas
                options[name] = tuple(
                    tracer.dynamic_number(lambda name=name, j=j: self.param_groups[index][name][j],
                                          f"group{index}.{name}[{j}]",
                                          key=(id(self), index, name, j))
                    if _is_number(v) else v for j, v in enumerate(value))
        return options

    def _prepare_state(self) -> None:
        """Create the state the next step would create, when that needs no step to run
        (Adam's zeros; not SGD's momentum buffer, which is the first gradient)."""

    def _update_group(self, group: dict[str, Any], options: dict[str, Any]) -> None:
        """Update ``group``'s parameters; numbers come from ``options`` (Python numbers, or
        0-d tensors inside a trace), branches read ``group``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement its update")

    def _next_step(self, p: Tensor):
        """Advance ``p``'s step count (a tensor in the state, as torch keeps it). Returns the new
        count as a Python int eagerly, or, inside a traced function, as the step tensor itself
        (a Python int would be baked into the graph)."""
        step = self.state[p]["step"]
        step.add_(1)
        if current_tracer() is not None:
            return step
        return int(step.item())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``.

        As in torch, the state tensors are the optimizer's own (not copies).
        """
        index: dict[int, int] = {}
        start = 0
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                index.setdefault(id(p), i)
            packed["params"] = [index[id(p)] for p in group["params"]]
            start += len(packed["params"])
            groups.append(packed)
        state = {(index[id(k)] if isinstance(k, Tensor) else k): v
                 for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore options and state saved by ``state_dict`` (tensors are copied; floating
        point state is cast to its parameter's dtype, except ``step``)."""
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(self.param_groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"])
               for g, s in zip(self.param_groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
        id_map = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                          chain.from_iterable(g["params"] for g in self.param_groups)))

        def cast(param, value, key=None):
            if isinstance(value, Tensor):
                if key != "step" and param.is_floating_point() and value.is_floating_point():
                    value = value.to(param.dtype, device=param.device)  # as torch: the
                    # moments follow their parameter (a CPU checkpoint into a CUDA model)
                return value.clone()
            if isinstance(value, dict):
                return {k: cast(param, v, k) for k, v in value.items()}
            return copy.deepcopy(value)

        state: defaultdict = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                state[id_map[k]] = cast(id_map[k], v)
            else:
                state[k] = copy.deepcopy(v)
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            saved["params"] = group["params"]
            for name, default in self.defaults.items():
                if default is not required:
                    saved.setdefault(name, default)
            self._check_group(saved)
            new_groups.append(saved)
        self.__setstate__({"state": state, "param_groups": new_groups})

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state,
                "param_groups": self.param_groups}

    def __setstate__(self, state):
        self.__dict__.update(state)
        for p, s in self.state.items():
            if isinstance(p, Tensor) and isinstance(s, dict) and "step" in s:
                if not isinstance(s["step"], Tensor):  # old checkpoints keep a number
                    s["step"] = tensor(float(s["step"]), dtype=get_default_dtype())
        for group in self.param_groups:
            for name, default in self.defaults.items():
                if default is not required:
                    group.setdefault(name, default)

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {group[k]}" for k in sorted(group) if k != "params")
        return "\n".join(lines) + "\n)"
