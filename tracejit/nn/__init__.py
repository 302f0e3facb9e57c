"""Neural-network building blocks, as ``torch.nn``: ``Module`` and ``Parameter``, layers,
recurrent layers, losses; ``tracejit.nn.functional`` holds the functional forms and
``tracejit.nn.init`` the initialisers.

>>> model = tracejit.nn.Sequential(tracejit.nn.Linear(4, 8), tracejit.nn.ReLU(),
...                                tracejit.nn.Linear(8, 2))
>>> model(tracejit.ones(3, 4)).shape
(3, 2)
"""

from . import functional, init, parallel, utils  # parallel: DistributedDataParallel
from .layers import (
    GELU,
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Embedding,
    Flatten,
    GroupNorm,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MaxPool2d,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
    Upsample,
)
from .loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from .module import Module, ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential
from .parameter import Parameter
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell
from .transformer import (
    MultiheadAttention,
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

__all__ = [
    "functional", "init", "Module", "Parameter", "Sequential", "ModuleList",
    "Identity", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Dropout",
    "ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "SiLU", "Softmax", "LogSoftmax",
    "LayerNorm", "BatchNorm1d", "BatchNorm2d", "Embedding",
    "RNNBase", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "MSELoss", "L1Loss", "BCEWithLogitsLoss", "NLLLoss", "CrossEntropyLoss",
    "ModuleDict", "ParameterList", "ParameterDict", "Conv1d", "ConvTranspose2d",
    "AdaptiveAvgPool2d", "Upsample", "GroupNorm", "MultiheadAttention",
    "TransformerEncoderLayer", "TransformerEncoder",
    "BCELoss", "SmoothL1Loss", "HuberLoss", "KLDivLoss", "utils",
    "Transformer", "TransformerDecoder", "TransformerDecoderLayer", "parallel",
]


from .. import _torch_names  # noqa: E402

# a torch name tracejit lacks raises an AttributeError naming the alternative
__getattr__ = _torch_names.install(__name__)
