"""Utilities with torch's layout: ``tracejit.utils.data`` (datasets, samplers, DataLoader),
``tracejit.utils.tensorboard`` (SummaryWriter, imported on use) and ``progress`` (tqdm bars)."""

from . import data, safetensors  # safetensors files, no package needed
from .progress import progress
from .torch_interop import from_torch_state_dict, to_torch_state_dict  # torch imported lazily

__all__ = ["data", "progress", "to_torch_state_dict", "from_torch_state_dict", "safetensors"]


from .. import _torch_names  # noqa: E402

# a torch name tracejit lacks raises an AttributeError naming the alternative
__getattr__ = _torch_names.install(__name__)
