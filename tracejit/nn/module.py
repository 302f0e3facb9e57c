"""``Module``, the base of every layer, and the containers ``Sequential``, ``ModuleList``,
``ModuleDict``, ``ParameterList`` and ``ParameterDict``.

Parameters, buffers and submodules are stored as plain instance attributes (``vars(module)``),
with their names kept in registration order in ``_parameter_names`` / ``_buffer_names`` /
``_module_names``. ``tracejit.trace`` finds weights by walking attributes, so this keeps the
paths short (``model.layers.0.weight``) and attribute access free of ``__getattr__``.

>>> net = tracejit.nn.Sequential(tracejit.nn.Linear(2, 3), tracejit.nn.ReLU())
>>> [name for name, _ in net.named_parameters()]
['0.weight', '0.bias']
"""

from __future__ import annotations

import collections
import itertools
from typing import Callable, Iterator

import numpy as np

from .. import dtypes as D
from ..autograd import no_grad
from ..creation import tensor as _tensor
from ..dispatch import current_tracer
from ..tensor import Tensor, _check_device, parse_to_args
from ..utils.torch_interop import is_torch_tensor as _is_torch_tensor
from ..utils.torch_interop import torch_to_numpy as _torch_to_numpy
from .parameter import Parameter

_IncompatibleKeys = collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _addindent(text: str, n: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * n + line for line in lines[1:])


def _shape_str(shape) -> str:
    return f"({', '.join(str(s) for s in shape)})" if len(shape) != 1 else f"({shape[0]},)"


_PLAIN = (bool, int, float, str, type(None))  # attribute types a module guard compares

class Module:
    """Base class of layers and models, as ``torch.nn.Module``: subclasses set parameters and
    submodules as attributes in ``__init__`` (after ``super().__init__()``) and define
    ``forward``; calling the module runs ``forward``."""

    training: bool

    def __init__(self) -> None:
        d = self.__dict__
        d["training"] = True
        d["_parameter_names"] = {}
        d["_buffer_names"] = {}
        d["_non_persistent"] = set()
        d["_module_names"] = {}

    # ------------------------------------------------------------------ registration
    def _check_init(self, what: str) -> None:
        if "_parameter_names" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call "
                                 f"(call super().__init__() first in {type(self).__name__})")

    def _check_name(self, name, kind: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain ".", got {name!r}')

    def _forget(self, name: str) -> None:
        for names in (self._parameter_names, self._buffer_names, self._module_names):
            names.pop(name, None)
        self._non_persistent.discard(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or ``None``, a declared but absent one, like ``bias=False``)."""
        self._check_init("parameters")
        self._check_name(name, "parameter")
        if name in self.__dict__ and name not in self._parameter_names:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter "
                            f"'{name}' (tracejit.nn.Parameter or None required)")
        if param is not None and param.grad_fn is not None:
            raise ValueError(f"Cannot assign non-leaf Tensor to parameter '{name}'. Model "
                             f"parameters must be created explicitly; use .detach() first")
        self._forget(name)
        self._parameter_names[name] = None
        self.__dict__[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a tensor that is state but not a parameter (e.g. BatchNorm's running mean);
        ``persistent=False`` keeps it out of ``state_dict``."""
        self._check_init("buffers")
        self._check_name(name, "buffer")
        if name in self.__dict__ and name not in self._buffer_names:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            f"(tracejit.Tensor or None required)")
        self._forget(name)
        self._buffer_names[name] = None
        if not persistent:
            self._non_persistent.add(name)
        self.__dict__[name] = tensor

    def add_module(self, name: str, module: "Module | None") -> None:
        """Add a child module, reachable as ``self.<name>``."""
        self._check_init("child modules")
        self._check_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        if name in self.__dict__ and name not in self._module_names:
            raise KeyError(f"attribute '{name}' already exists")
        self._forget(name)
        self._module_names[name] = None
        self.__dict__[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        if isinstance(value, Parameter):
            self._check_init("parameters")
            self._forget(name)
            d.pop(name, None)
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            self._check_init("child modules")
            self._forget(name)
            d.pop(name, None)
            self.add_module(name, value)
        elif "_parameter_names" in d and name in self._parameter_names:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                f"(tracejit.nn.Parameter or None expected)")
            d[name] = None
        elif "_module_names" in d and name in self._module_names:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                f"'{name}' (tracejit.nn.Module or None expected)")
            d[name] = None
        elif "_buffer_names" in d and name in self._buffer_names:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                f"(tracejit.Tensor or None expected)")
            d[name] = value
        else:
            object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if "_parameter_names" in self.__dict__:
            self._forget(name)
        object.__delattr__(self, name)

    # ------------------------------------------------------------------ running
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required '
                                  f'"forward" function')

    def __call__(self, *args, **kwargs):
        tracer = current_tracer()
        if tracer is not None:
            # a traced graph bakes in the Python values forward() reads (training, p, eps,
            # stride...): it is only valid while they keep the values it was traced with
            tracer.guard(self._python_state, f"{type(self).__name__} attributes",
                         key=("module", id(self)))
        return self.forward(*args, **kwargs)

    def _python_state(self) -> tuple:
        """``(name, value)`` of the attributes holding Python numbers, strings, None or tuples
        of them (``training`` among them)."""
        return tuple((k, v) for k, v in self.__dict__.items()
                     if type(v) in _PLAIN or (type(v) is tuple and all(type(e) in _PLAIN
                                                                        for e in v)))

    def train(self, mode: bool = True) -> "Module":
        """Set training mode here and in every submodule (Dropout, BatchNorm behave differently)."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for m in self.children():
            m.train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's ``.grad``: to ``None`` (default) or to zeros in place."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.zero_()

    # ------------------------------------------------------------------ walking
    def _named_members(self, kind: str, prefix: str, recurse: bool, remove_duplicate: bool):
        memo = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for mod_prefix, mod in mods:
            for name in getattr(mod, kind):
                value = mod.__dict__[name]
                if value is None:
                    continue
                if remove_duplicate:
                    if id(value) in memo:
                        continue
                    memo.add(id(value))
                yield (mod_prefix + "." if mod_prefix else "") + name, value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, parameter)`` pairs: this module's in registration order, then each
        child's; a parameter shared by two modules is listed once."""
        return self._named_members("_parameter_names", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffer_names", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        memo = set()
        for name in self._module_names:
            m = self.__dict__[name]
            if m is not None and id(m) not in memo:
                memo.add(id(m))
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, "Module"]]:
        """This module and all below it, depth first, each once (by identity)."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name in self._module_names:
            m = self.__dict__[name]
            if m is None:
                continue
            yield from m.named_modules(memo, (prefix + "." if prefix else "") + name,
                                       remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def get_submodule(self, target: str) -> "Module":
        """``model.get_submodule("encoder.0")``."""
        mod = self
        for part in target.split(".") if target else ():
            if part not in mod._module_names or mod.__dict__[part] is None:
                raise AttributeError(f"{type(mod).__name__} has no attribute `{part}`")
            mod = mod.__dict__[part]
        return mod

    def get_parameter(self, target: str) -> Parameter:
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in mod._parameter_names:
            raise AttributeError(f"`{name}` is not an nn.Parameter")
        return mod.__dict__[name]

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        """Call ``fn`` on every submodule (children first) and then on ``self``."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ dtype / device
    def _cast(self, fn) -> "Module":
        for m in self.modules():
            for names in (m._parameter_names, m._buffer_names):
                for name in names:
                    t = m.__dict__[name]
                    if t is None:
                        continue
                    new = fn(t)
                    if new is not t:
                        # NOTE: keep the Parameter object (optimizers hold references to it)
                        t._data = new._data
                        if t.grad is not None:
                            t.grad = fn(t.grad)
        return self

    def to(self, *args, dtype=None, device=None) -> "Module":
        """Move parameters and buffers to ``device`` and cast floating-point ones to ``dtype``,
        in place as torch does (the Parameter objects stay, so optimizers keep working; integer
        buffers such as BatchNorm's ``num_batches_tracked`` keep their dtype):
        ``model.to("cuda")``."""
        dtype, dev = parse_to_args(args, dtype, device, with_device=True)
        if dev is not None:
            self._cast(lambda t: t.detach().to(dev))
        if dtype is None:
            return self
        dtype = D.as_dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired "
                            f"dtype={dtype}")
        return self._cast(lambda t: t.detach().to(dtype) if t.dtype.kind == "f" else t)

    def float(self) -> "Module":
        return self.to(D.float32)

    def double(self) -> "Module":
        return self.to(D.float64)

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self, device=None) -> "Module":
        """Parameters and buffers to the GPU, in place; ``CudaUnavailableError`` without one."""
        return self.to(_check_device("cuda" if device is None else device, "Module.cuda"))

    # ------------------------------------------------------------------ state dict
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """An ordered ``{name: tensor}`` of parameters and persistent buffers with torch's key
        names; values share memory with the module (detached unless ``keep_vars``)."""
        if destination is None:
            destination = collections.OrderedDict()
        for name in self._parameter_names:
            p = self.__dict__[name]
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name in self._buffer_names:
            b = self.__dict__[name]
            if b is not None and name not in self._non_persistent:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name in self._module_names:
            m = self.__dict__[name]
            if m is not None:
                m.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def _local_state(self):
        for name in itertools.chain(self._parameter_names, self._buffer_names):
            t = self.__dict__[name]
            if t is not None and name not in self._non_persistent:
                yield name, t

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy values into the parameters and buffers (in place, casting to their dtype).

        With ``strict`` a missing or unexpected key is an error; a shape mismatch always is.
        Returns ``(missing_keys, unexpected_keys)``. Values may be tensors or numpy arrays.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        missing, errors = [], []
        expected = set()
        for prefix, mod in self.named_modules(remove_duplicate=False):
            prefix = prefix + "." if prefix else ""
            for name, target in mod._local_state():
                key = prefix + name
                expected.add(key)
                if key not in state_dict:
                    missing.append(key)
                    continue
                value = state_dict[key]
                if _is_torch_tensor(value):  # a torch state_dict loads directly
                    value = _torch_to_numpy(value)
                if isinstance(value, np.ndarray) or np.isscalar(value):
                    value = _tensor(value, dtype=np.asarray(value).dtype)
                if not isinstance(value, Tensor):
                    errors.append(f'While copying the parameter named "{key}", expected '
                                  f'tensor or numpy array from checkpoint but received '
                                  f'{type(value).__name__}')
                    continue
                if tuple(value.shape) != tuple(target.shape):
                    errors.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{_shape_str(value.shape)} from checkpoint, the shape in "
                                  f"current model is {_shape_str(target.shape)}.")
                    continue
                with no_grad():
                    if assign:
                        target._data = value.detach().to(target.dtype, device=target.device)._data
                    else:
                        target.copy_(value.detach())
        unexpected = [k for k in state_dict.keys() if k not in expected]
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in missing) + ".")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """The text inside this module's parentheses; layers override it."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        lines = self.extra_repr().split("\n") if self.extra_repr() else []
        for name in self._module_names:
            m = self.__dict__[name]
            lines.append(f"({name}): " + _addindent(repr(m), 2))
        if not lines:
            return self._get_name() + "()"
        if len(lines) == 1 and not self._module_names:
            return f"{self._get_name()}({lines[0]})"
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self):
        return sorted(set(super().__dir__()))


class Sequential(Module):
    """Modules run one after another: ``Sequential(Linear(2, 3), ReLU())`` or from an
    ``OrderedDict`` of named modules. Supports indexing, slicing, ``len`` and iteration."""

    def __init__(self, *args) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], collections.OrderedDict):
            for name, m in args[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), m)

    def _names(self) -> list:
        return list(self._module_names)

    def _index(self, idx: int) -> str:
        names = self._names()
        if not -len(names) <= idx < len(names):
            raise IndexError(f"index {idx} is out of range")
        return names[idx % len(names)]

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(collections.OrderedDict(
                (name, self.__dict__[name]) for name in self._names()[idx]))
        return self.__dict__[self._index(idx)]

    def __setitem__(self, idx: int, module: Module) -> None:
        setattr(self, self._index(idx), module)

    def __delitem__(self, idx) -> None:
        names = self._names()[idx] if isinstance(idx, slice) else [self._index(idx)]
        for name in names:
            delattr(self, name)
        # keep integer names dense, as torch does
        kept = [(n, self.__dict__[n]) for n in self._names()]
        if all(n.isdigit() for n, _ in kept):
            for n, _ in kept:
                delattr(self, n)
            for i, (_, m) in enumerate(kept):
                self.add_module(str(i), m)

    def __len__(self) -> int:
        return len(self._module_names)

    def __iter__(self) -> Iterator[Module]:
        return iter([self.__dict__[n] for n in self._names()])

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        for name in self._module_names:
            x = self.__dict__[name](x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered (a plain Python list hides them)."""

    def __init__(self, modules=None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _modules_list(self) -> list:
        return [self.__dict__[n] for n in self._module_names]

    def _reset(self, mods) -> None:
        for n in list(self._module_names):
            delattr(self, n)
        for i, m in enumerate(mods):
            self.add_module(str(i), m)

    def _index(self, idx: int) -> str:
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range")
        return str(idx % n)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(self._modules_list()[idx])
        return self.__dict__[self._index(idx)]

    def __setitem__(self, idx: int, module: Module) -> None:
        setattr(self, self._index(idx), module)

    def __delitem__(self, idx) -> None:
        mods = self._modules_list()
        del mods[idx]
        self._reset(mods)

    def __len__(self) -> int:
        return len(self._module_names)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules_list())

    def __iadd__(self, modules) -> "ModuleList":
        return self.extend(modules)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        mods = self._modules_list()
        mods.insert(index, module)
        self._reset(mods)


def _check_container_key(container: Module, key) -> str:
    """A ModuleDict/ParameterDict key is stored as an attribute: it must be a string and may
    not shadow the container's own methods (``keys``, ``update``...)."""
    if not isinstance(key, str):
        raise TypeError(f"{type(container).__name__} keys must be strings, got "
                        f"{type(key).__name__}")
    if hasattr(type(container), key):
        raise KeyError(f"{type(container).__name__}: key {key!r} would shadow the method or "
                       f"attribute of the same name; choose another key")
    return key


class ModuleDict(Module):
    """An ordered dict of modules whose parameters are registered, as ``torch.nn.ModuleDict``.

    >>> d = tracejit.nn.ModuleDict({"enc": tracejit.nn.Linear(2, 3)})
    >>> list(d.keys())
    ['enc']
    """

    def __init__(self, modules=None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        if key not in self._module_names:
            raise KeyError(key)
        return self.__dict__[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(_check_container_key(self, key), module)

    def __delitem__(self, key: str) -> None:
        if key not in self._module_names:
            raise KeyError(key)
        delattr(self, key)

    def __len__(self) -> int:
        return len(self._module_names)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._module_names))

    def __contains__(self, key) -> bool:
        return key in self._module_names

    def clear(self) -> None:
        for k in list(self._module_names):
            delattr(self, k)

    def pop(self, key: str) -> Module:
        v = self[key]
        del self[key]
        return v

    def keys(self):
        return list(self._module_names)

    def items(self):
        return [(k, self.__dict__[k]) for k in self._module_names]

    def values(self):
        return [self.__dict__[k] for k in self._module_names]

    def update(self, modules) -> None:
        """Add ``(key, module)`` pairs from a mapping or an iterable of pairs."""
        if isinstance(modules, (dict, ModuleDict)):
            pairs = modules.items()
        else:
            pairs = []
            for j, pair in enumerate(modules):
                if len(pair) != 2:
                    raise ValueError(f"ModuleDict update sequence element #{j} has length "
                                     f"{len(pair)}; 2 is required")
                pairs.append(pair)
        for k, m in pairs:
            self[k] = m

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict is a container and has no forward; call one of "
                                  "its modules: d[key](x)")


class ParameterList(Module):
    """A list of parameters registered as ``0``, ``1``...; plain tensors are wrapped in
    ``Parameter``, as ``torch.nn.ParameterList`` does.

    >>> ps = tracejit.nn.ParameterList([tracejit.nn.Parameter(tracejit.zeros(2))])
    >>> len(ps), [n for n, _ in ps.named_parameters()]
    (1, ['0'])
    """

    def __init__(self, values=None) -> None:
        super().__init__()
        self.__dict__["_list_names"] = []
        if values is not None:
            self.extend(values)

    @staticmethod
    def _wrap(value):
        if isinstance(value, Tensor) and not isinstance(value, Parameter):
            return Parameter(value)
        return value

    def _set(self, name: str, value) -> None:
        value = self._wrap(value)
        if isinstance(value, Parameter):
            self.register_parameter(name, value)
        else:  # torch's ParameterList also holds plain objects
            self._forget(name)
            object.__setattr__(self, name, value)
        if name not in self._list_names:
            self._list_names.append(name)

    def _names(self) -> list:
        return self._list_names

    def _index(self, idx: int) -> str:
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range")
        return str(idx % n)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ParameterList([self.__dict__[n] for n in self._names()[idx]])
        return self.__dict__[self._index(idx)]

    def __setitem__(self, idx: int, value) -> None:
        self._set(self._index(idx), value)

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self):
        return iter([self.__dict__[n] for n in self._names()])

    def __iadd__(self, values) -> "ParameterList":
        return self.extend(values)

    def append(self, value) -> "ParameterList":
        self._set(str(len(self)), value)
        return self

    def extend(self, values) -> "ParameterList":
        for v in values:
            self.append(v)
        return self

    def extra_repr(self) -> str:
        lines = []
        for i, p in enumerate(self):
            if isinstance(p, Tensor):
                lines.append(f"({i}): Parameter containing: [{type(p).__name__} of size "
                             f"{'x'.join(str(s) for s in p.shape)}]")
            else:
                lines.append(f"({i}): Object of type: {type(p).__name__}")
        return "\n".join(lines)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ParameterList is a container and has no forward")


class ParameterDict(Module):
    """An ordered dict of parameters; plain tensors are wrapped in ``Parameter``, as
    ``torch.nn.ParameterDict`` does.

    >>> pd = tracejit.nn.ParameterDict({"scale": tracejit.ones(3)})
    >>> [n for n, _ in pd.named_parameters()]
    ['scale']
    """

    def __init__(self, parameters=None) -> None:
        super().__init__()
        self.__dict__["_dict_names"] = []
        if parameters is not None:
            self.update(parameters)

    def __getitem__(self, key: str):
        if key not in self._dict_names:
            raise KeyError(key)
        return self.__dict__[key]

    def __setitem__(self, key: str, value) -> None:
        _check_container_key(self, key)
        value = ParameterList._wrap(value)
        if isinstance(value, Parameter):
            self.register_parameter(key, value)
        else:
            self._forget(key)
            object.__setattr__(self, key, value)
        if key not in self._dict_names:
            self._dict_names.append(key)

    def __delitem__(self, key: str) -> None:
        if key not in self._dict_names:
            raise KeyError(key)
        self._dict_names.remove(key)
        delattr(self, key)

    def __len__(self) -> int:
        return len(self._dict_names)

    def __iter__(self):
        return iter(list(self._dict_names))

    def __contains__(self, key) -> bool:
        return key in self._dict_names

    def keys(self):
        return list(self._dict_names)

    def items(self):
        return [(k, self.__dict__[k]) for k in self._dict_names]

    def values(self):
        return [self.__dict__[k] for k in self._dict_names]

    def get(self, key: str, default=None):
        return self[key] if key in self else default

    def pop(self, key: str):
        v = self[key]
        del self[key]
        return v

    def clear(self) -> None:
        for k in list(self._dict_names):
            del self[k]

    def update(self, parameters) -> None:
        pairs = parameters.items() if isinstance(parameters, (dict, ParameterDict)) \
            else parameters
        for k, v in pairs:
            self[k] = v

    def extra_repr(self) -> str:
        return "\n".join(f"({k}): Parameter containing: [{type(v).__name__} of size "
                         f"{'x'.join(str(s) for s in v.shape)}]" for k, v in self.items()
                         if isinstance(v, Tensor))

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ParameterDict is a container and has no forward")
