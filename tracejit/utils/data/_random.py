"""Where the data utilities draw randomness from.

``generator=`` arguments take a ``tracejit.Generator`` or a ``numpy.random.Generator`` (or
None). None means tracejit's global generator, the one
``tracejit.manual_seed`` seeds, so ``tj.manual_seed(0)`` makes shuffling reproducible as
``torch.manual_seed(0)`` does.
"""

from __future__ import annotations

import numpy as np

from ...creation import _rng


def check_generator(generator, who: str) -> None:
    from ...random import Generator
    if generator is not None and not isinstance(generator, (np.random.Generator, Generator)):
        raise TypeError(f"{who}: generator should be a numpy.random.Generator, a "
                        f"tracejit.Generator or None, got {type(generator).__name__}")


def source(generator) -> np.random.Generator:
    """The generator to draw from: the one given, else tracejit's global one."""
    from ...random import Generator
    check_generator(generator, "generator")
    if isinstance(generator, Generator):
        return generator.numpy_generator
    return _rng() if generator is None else generator


def draw_seed(generator=None) -> int:
    """A seed in [0, 2**63), as torch's ``torch.empty((), dtype=int64).random_()``."""
    return int(source(generator).integers(0, 2 ** 63, dtype=np.int64))


def permutation(n: int, generator=None) -> list[int]:
    return source(generator).permutation(n).tolist()
