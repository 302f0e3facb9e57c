"""tracejit: a JIT-compiling graph tracer with a torch-like eager Tensor on numpy.

>>> import tracejit as tj
>>> x = tj.randn(3, requires_grad=True)
>>> (x.sin() ** 2).sum().backward()
"""

import os as _os

# NOTE: numba's OpenMP threads otherwise spin after each parallel kernel and starve BLAS and the
# next kernel on small machines (16 ms per kernel measured here under load); passive waiting
# costs microseconds. Set before numba starts its threads; a value you set yourself wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# cuda_ops registers eager CUDA ops (dispatch.cuda_backend); numba-cuda is imported on first use;
# onnx imports the onnx package only when exporting
from . import autograd, cuda, cuda_ops, dtypes, nn, onnx, ops, optim, return_types, utils  # noqa: E402, F401 - nn and optim build on the names above
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .creation import (
                       arange,
                       as_tensor,
                       empty,
                       empty_like,
                       eye,
                       from_dlpack,
                       from_numpy,
                       full,
                       full_like,
                       linspace,
                       ones,
                       ones_like,
                       rand,
                       rand_like,
                       randint,
                       randn,
                       randn_like,
                       randperm,
                       tensor,
                       zeros,
                       zeros_like,
)
from .dtypes import bool_, float32, float64, get_default_dtype, int32, int64, set_default_dtype
from .errors import DTypeError, GraphRuntimeError, ShapeError, TraceError
from .export import ExportError, export
from .functions import *  # noqa: F401,F403 - torch-style top-level functions
from .functions import __all__ as _function_names
from .jit import compile  # noqa: E402, A004 - torch.compile; binds tracejit.jit too
from .random import (  # noqa: E402 - torch's names for the random state
                       Generator,
                       default_generator,
                       fork_rng,
                       get_rng_state,
                       initial_seed,
                       manual_seed,
                       seed,
                       set_rng_state,
)
from .runtime.cache import clear_cache
from .runtime.memory import empty_cache
from .saving import CheckpointError, load, save  # one tj.load: checkpoints, exports, torch
from .tensor import Tensor, device
from .tracing import dynamic, eager, get_mode, set_mode, trace
from .transforms import grad, value_and_grad
from .version import __version__  # noqa: F401

bool = bool_  # noqa: A001 - ``tracejit.bool`` as ``torch.bool``
float = float32  # noqa: A001
double = float64
long = int64
int = int32  # noqa: A001

__all__ = [
    "Tensor", "device", "tensor", "as_tensor", "from_numpy", "from_dlpack", "zeros", "ones",
    "full", "empty", "arange", "linspace", "eye", "rand", "randn", "randint", "randperm",
    "zeros_like", "ones_like", "full_like", "empty_like", "rand_like", "randn_like",
    "manual_seed", "seed", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
    "float32", "float64", "int32", "int64", "bool_", "get_default_dtype", "set_default_dtype",
    "ShapeError", "DTypeError", "TraceError", "GraphRuntimeError", "autograd", "dtypes", "ops",
    "nn", "optim", "cuda", "utils", "onnx",
    "trace", "dynamic", "set_mode", "get_mode", "eager", "empty_cache", "grad", "value_and_grad",
    "clear_cache", "export", "load", "ExportError", "save", "CheckpointError",
    "Generator", "default_generator", "get_rng_state", "set_rng_state", "initial_seed",
    "fork_rng", "compile",
    *_function_names,
]

from .runtime.tiered import wait_compiles  # noqa: E402 - background compiles (runtime/tiered.py)

__all__ += ["wait_compiles"]

from . import _torch_names  # noqa: E402

# a torch name tracejit lacks raises an AttributeError naming the alternative
__getattr__ = _torch_names.install(__name__)
