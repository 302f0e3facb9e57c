"""Is there a GPU for tracejit's CUDA backend? ``tracejit.cuda.is_available()`` like torch's.

numba-cuda (the ``cuda`` extra) is imported only when one of these functions is first called,
and every answer is found once per process. Without numba-cuda or without an NVIDIA driver,
``is_available()`` is False and anything that needs a GPU raises ``CudaUnavailableError``
naming what asked and what is missing, never numba's driver traceback::

    >>> tracejit.cuda.is_available()
    False
    >>> tracejit.cuda.require("Tensor.cuda")
    Traceback (most recent call last):
    tracejit.cuda.CudaUnavailableError: Tensor.cuda: CUDA is not available: no NVIDIA driver
    was found; tensors stay on the CPU

Under numba-cuda's simulator (``NUMBA_ENABLE_CUDASIM=1`` when numba.cuda is first imported)
the simulated device counts as available, so the CUDA backend runs there in CI.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

__all__ = ["CudaUnavailableError", "is_available", "is_simulator", "device_count",
           "synchronize", "require", "unavailable_reason", "simulator_requested"]

INSTALL_HINT = "pip install 'tracejit[cuda]'"
_TAIL = "tensors stay on the CPU"


class CudaUnavailableError(RuntimeError):
    """A CUDA operation was asked for where no GPU can run it (no numba-cuda, no driver, no
    device); the message names the operation and what is missing."""


def _numpy_compat() -> None:
    """numba-cuda 0.30.4 (its last release: it is in maintenance mode) registers an overload of
    ``np.row_stack`` when its target first loads, and numpy 2.5 removed that alias of
    ``np.vstack``: every kernel launch then fails with "module 'numpy' has no attribute
    'row_stack'" (NVIDIA/numba-cuda#907). Put the alias back for it."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


@functools.lru_cache(maxsize=None)
def _probe() -> tuple:
    """``(numba.cuda module or None, reason or None)``; the reason is why CUDA cannot run."""
    # NOTE: numba itself still ships its deprecated built-in numba.cuda, which imports without
    # numba-cuda: ask for the numba_cuda distribution first
    try:
        installed = importlib.util.find_spec("numba_cuda") is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        return None, f"numba-cuda is not installed ({INSTALL_HINT})"
    _numpy_compat()
    try:
        from numba import cuda
    except ImportError as e:  # numba-cuda without its CUDA Python bindings, typically
        if "bindings" in str(e) or (getattr(e, "name", None) or "").startswith("cuda"):
            return None, (f"numba-cuda's CUDA Python bindings are missing ({INSTALL_HINT} "
                          "installs them)")
        return None, f"numba-cuda failed to import ({' '.join(str(e).split())})"
    except Exception as e:  # a broken install must not break is_available()
        return None, f"numba-cuda failed to import ({type(e).__name__}: {e})"
    if getattr(cuda, "implementation", "NVIDIA") != "NVIDIA":
        return None, f"numba.cuda is numba's built-in target, not numba-cuda ({INSTALL_HINT})"
    try:
        if simulator_requested():
            return cuda, None
        from numba.cuda.cudadrv import driver, nvvm

        if not driver.driver.is_available:  # the library was not found
            return cuda, _driver_reason(driver.driver.initialization_error)
        if not nvvm.is_available():
            return cuda, f"numba-cuda cannot find NVVM (the CUDA toolkit; {INSTALL_HINT})"
        if not cuda.is_available():
            return cuda, _driver_reason(driver.driver.initialization_error)
        return cuda, None
    except Exception as e:  # CudaSupportError at cuInit (no device), and anything else
        return cuda, _driver_reason(getattr(e, "msg", None) or str(e))


def simulator_requested() -> bool:
    """True when numba.cuda runs in its simulator: ``NUMBA_ENABLE_CUDASIM=1`` when it was (or
    will be) first imported. Asks no driver; imports numba-cuda's config only."""
    try:
        from numba.cuda.core import config
    except ImportError:  # numba-cuda before its core/ split, or numba's built-in target
        from numba.core import config
    return bool(config.ENABLE_CUDASIM)


def _driver_reason(detail) -> str:
    detail = " ".join(str(detail or "").split())
    if "NUMBA_DISABLE_CUDA" in detail or os.environ.get("NUMBA_DISABLE_CUDA") == "1":
        return "CUDA is disabled by NUMBA_DISABLE_CUDA=1"
    if not detail or "driver library cannot be found" in detail:
        return "no NVIDIA driver was found"
    return f"the NVIDIA driver found no usable GPU ({detail})"


def unavailable_reason() -> str | None:
    """Why CUDA cannot run here (``"no NVIDIA driver was found"``), or None when it can."""
    return _probe()[1]


def is_available() -> bool:
    """True when a GPU (or numba-cuda's simulator) can run kernels; never raises."""
    try:
        return _probe()[1] is None
    except Exception:  # pragma: no cover - _probe already catches; belt and braces
        return False


def is_simulator() -> bool:
    """True when numba-cuda runs in its simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    return _probe()[0] is not None and simulator_requested()


def require(what: str):
    """Return numba.cuda if a GPU can run ``what`` (an op, ``"Tensor.cuda"``, ...), else raise
    CudaUnavailableError: ``require("matmul")``."""
    cuda, reason = _probe()
    if reason is not None:
        raise CudaUnavailableError(f"{what}: CUDA is not available: {reason}; {_TAIL}")
    return cuda


def device_count() -> int:
    """How many GPUs numba-cuda sees (0 without numba-cuda or a driver); never raises."""
    cuda, reason = _probe()
    if reason is not None:
        return 0
    try:
        return len(cuda.gpus)
    except Exception:
        return 0


def synchronize() -> None:
    """Wait for every kernel launched on the current device to finish."""
    cuda = require("tracejit.cuda.synchronize")
    try:
        cuda.synchronize()
    except Exception as e:  # a driver error after the probe (device lost, ...): no traceback
        raise CudaUnavailableError(f"tracejit.cuda.synchronize: CUDA failed: "
                                   f"{' '.join(str(e).split())}") from None


from . import _torch_names  # noqa: E402

# a torch name tracejit lacks raises an AttributeError naming the alternative
__getattr__ = _torch_names.install(__name__)
