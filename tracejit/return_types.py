"""The named results of ops that return values and indices, as ``torch.return_types``:
``tj.sort(x)`` returns ``tracejit.return_types.sort(values, indices)``.

Each class lives under its own name here so its qualified name (what an exported graph
records) names the class itself, and a loaded graph returns this very class."""

from collections import namedtuple

_FIELDS = ["values", "indices"]

max = namedtuple("max", _FIELDS)  # noqa: A001 (torch's names)
min = namedtuple("min", _FIELDS)  # noqa: A001
sort = namedtuple("sort", _FIELDS)
topk = namedtuple("topk", _FIELDS)
kthvalue = namedtuple("kthvalue", _FIELDS)
median = namedtuple("median", _FIELDS)
mode = namedtuple("mode", _FIELDS)

for _cls in (max, min, sort, topk, kthvalue, median, mode):
    _cls.__module__ = __name__
del _cls
