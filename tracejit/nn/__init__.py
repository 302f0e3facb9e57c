"""Neural-network building blocks. ``tracejit.nn.functional`` holds the functional forms."""

from . import functional

__all__ = ["functional"]
