"""Tests of ``tracejit.nn``: modules, layers, losses, and parity with ``torch.nn``."""
