"""Export traced functions to data-only ``.tjit`` files and load them back (docs/export.md).

>>> tj.export(model, x).save("model.tjit")                          # doctest: +SKIP
>>> tj.load("model.tjit")(x)                                         # doctest: +SKIP

| module | holds |
| --- | --- |
| ``format.py`` | the zip container: manifest, hashed members, capped reads, ``ExportError`` |
| ``build.py`` | ``export``: CompiledGraph -> manifest entries, JSON graphs, ``.npy`` weights |
| ``dynamic.py`` | symbolic sizes: found at export, filled in at call time |
| ``loaded.py`` | ``load``: checks everything, rebuilds kernels from the IR; ``Loaded``, ``Entry`` |
| ``checks.py`` | typed checks of the untrusted manifest (versions, trees, the dynamic table) |
| ``trees.py`` | argument and result structures rebuilt from plain data (namedtuples without exec) |
| ``cli.py`` | ``python -m tracejit show/run/dot/svg/bench`` |
"""

from .build import Exported, export
from .format import ExportError
from .loaded import Entry, Loaded, load

__all__ = ["export", "load", "Exported", "Loaded", "Entry", "ExportError"]
