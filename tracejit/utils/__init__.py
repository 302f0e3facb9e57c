"""Utilities with torch's layout: ``tracejit.utils.data`` (datasets, samplers, DataLoader),
``tracejit.utils.tensorboard`` (SummaryWriter, imported on use) and ``progress`` (tqdm bars)."""

from . import data
from .progress import progress

__all__ = ["data", "progress"]
