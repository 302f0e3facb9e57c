"""Optimizers with torch's API: ``tracejit.optim.SGD``, ``Adam``, ``AdamW``, ``RMSprop``,
``Adagrad``, ``LBFGS``.

>>> opt = tracejit.optim.Adam(model_params, lr=1e-3)
>>> loss.backward(); opt.step(); opt.zero_grad()
"""

from . import lr_scheduler
from .adam import Adam, AdamW
from .lbfgs import LBFGS
from .optimizer import Optimizer
from .rmsprop import Adagrad, RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler", "RMSprop", "Adagrad", "LBFGS"]


from .. import _torch_names  # noqa: E402

# a torch name tracejit lacks raises an AttributeError naming the alternative
__getattr__ = _torch_names.install(__name__)
