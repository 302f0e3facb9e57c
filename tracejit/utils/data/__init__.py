"""Datasets, samplers and the DataLoader, with torch's ``torch.utils.data`` API.

>>> from tracejit.utils.data import DataLoader, TensorDataset
>>> ds = TensorDataset(tracejit.randn(10, 3), tracejit.arange(10))
>>> [x.shape for x, y in DataLoader(ds, batch_size=4)]
[(4, 3), (4, 3), (2, 3)]
"""

from .collate import default_collate, default_convert
from .dataloader import DataLoader
from .dataset import (
                      ChainDataset,
                      ConcatDataset,
                      Dataset,
                      IterableDataset,
                      Subset,
                      TensorDataset,
                      random_split,
)
from .sampler import (
                      BatchSampler,
                      DistributedSampler,
                      RandomSampler,
                      Sampler,
                      SequentialSampler,
                      SubsetRandomSampler,
                      WeightedRandomSampler,
)
from .worker import WorkerInfo, get_worker_info

__all__ = [
    "Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "ChainDataset",
    "random_split", "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
    "WeightedRandomSampler", "BatchSampler", "DataLoader", "default_collate", "default_convert",
    "get_worker_info", "WorkerInfo", "DistributedSampler",
]
