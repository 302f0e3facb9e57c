"""Utilities with torch's layout: ``tracejit.utils.data`` (datasets, samplers, DataLoader)."""

from . import data

__all__ = ["data"]

# state dicts to and from torch (torch imported lazily), safetensors files (no package needed)
from . import safetensors  # noqa: E402
from .torch_interop import from_torch_state_dict, to_torch_state_dict  # noqa: E402

__all__ += ["to_torch_state_dict", "from_torch_state_dict", "safetensors"]
