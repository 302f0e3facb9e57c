"""Utilities with torch's layout: ``tracejit.utils.data`` (datasets, samplers, DataLoader)."""

from . import data

__all__ = ["data"]


from .. import _torch_names  # noqa: E402

# a torch name tracejit lacks raises an AttributeError naming the alternative
__getattr__ = _torch_names.install(__name__)
