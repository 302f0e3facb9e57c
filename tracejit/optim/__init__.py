"""Optimizers with torch's API: ``tracejit.optim.SGD``, ``Adam``, ``AdamW``.

>>> opt = tracejit.optim.Adam(model_params, lr=1e-3)
>>> loss.backward(); opt.step(); opt.zero_grad()
"""

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
