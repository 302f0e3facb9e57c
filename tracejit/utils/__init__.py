"""Utilities with torch's layout: ``tracejit.utils.data`` (datasets, samplers, DataLoader)."""

from . import data

__all__ = ["data"]
