"""Random-number state with torch's API: ``tracejit.Generator``, ``manual_seed``,
``initial_seed``, ``seed``, ``get_rng_state`` / ``set_rng_state`` and ``fork_rng``.

tracejit draws from one global numpy ``PCG64`` generator (``rand``, ``randn``, dropout,
parameter init, DataLoader shuffling); ``default_generator`` is that generator. A
``Generator`` of your own is passed as ``generator=`` to ``rand``/``randn``/``randint``/
``randperm`` (eagerly), to the data utilities and to ``nn.init``.

>>> state = tracejit.get_rng_state(); a = tracejit.rand(2)
>>> tracejit.set_rng_state(state); bool((tracejit.rand(2) == a).all())
True

A state is an int64 tensor of 10 numbers (the generator's 128-bit state and increment in
32-bit pieces, then its buffered 32-bit draw), so ``tj.save`` stores it as plain data; torch's
states are ByteTensors of its own (Mersenne Twister) layout and do not load here.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import creation

__all__ = ["Generator", "default_generator", "manual_seed", "seed", "initial_seed",
           "get_rng_state", "set_rng_state", "fork_rng"]

_MASK32 = (1 << 32) - 1
_SEEDS = {"default": 0}  # the default generator's initial seed (tracejit starts seeded with 0)


def _encode(bit_generator) -> np.ndarray:
    st = bit_generator.state
    if st.get("bit_generator") != "PCG64":
        raise NotImplementedError(f"rng state of a {st.get('bit_generator')} generator; "
                                  f"tracejit's generators are PCG64")
    words = []
    for v in (st["state"]["state"], st["state"]["inc"]):
        words += [(v >> (32 * i)) & _MASK32 for i in range(4)]
    words += [int(st["has_uint32"]), int(st["uinteger"])]
    return np.array(words, dtype=np.int64)


def _decode(state) -> dict:
    from .tensor import Tensor
    arr = state.numpy() if isinstance(state, Tensor) else np.asarray(state)
    if arr.shape != (10,) or arr.dtype.kind not in "iu" or (arr < 0).any() or \
            (arr > _MASK32).any():
        raise ValueError(f"set_rng_state: expected the int64 tensor of 10 numbers that "
                         f"get_rng_state returns, got shape {arr.shape} dtype {arr.dtype} "
                         f"(torch's ByteTensor states are not tracejit states)")
    w = [int(x) for x in arr]
    join = lambda ws: sum(x << (32 * i) for i, x in enumerate(ws))  # noqa: E731
    return {"bit_generator": "PCG64", "state": {"state": join(w[0:4]), "inc": join(w[4:8])},
            "has_uint32": w[8], "uinteger": w[9]}


class Generator:
    """A random-number generator, as ``torch.Generator``: ``manual_seed`` (returns itself),
    ``seed``, ``initial_seed``, ``get_state``/``set_state``. Its numpy generator is
    ``generator.numpy_generator``.

    >>> g = tracejit.Generator().manual_seed(42)
    >>> tracejit.rand(2, generator=g).shape
    (2,)
    """

    def __init__(self, device="cpu") -> None:
        from .tensor import device as _device
        self.device = _device(device) if not isinstance(device, _device) else device
        if self.device.type != "cpu":
            raise NotImplementedError(f"Generator(device={device!r}): draws are made on the "
                                      f"host and copied; use Generator('cpu')")
        self._initial_seed = 67280421310721  # torch's default seed of a new Generator
        self._np = np.random.default_rng(self._initial_seed)

    @property
    def numpy_generator(self) -> np.random.Generator:
        return self._np

    def manual_seed(self, seed: int) -> "Generator":
        seed = int(seed)
        self._np = np.random.default_rng(seed & ((1 << 64) - 1))
        self._initial_seed = seed
        return self

    def seed(self) -> int:
        s = int(np.random.SeedSequence().entropy % (2 ** 63))
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._initial_seed

    def get_state(self):
        from .creation import tensor
        return tensor(_encode(self._np.bit_generator))

    def set_state(self, state) -> "Generator":
        self._np.bit_generator.state = _decode(state)
        return self

    def __getattr__(self, name: str):
        # numpy's drawing methods (integers, permutation, random...), so code written for a
        # numpy.random.Generator (the data utilities) takes a tracejit.Generator as it is
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._np, name)

    def __repr__(self) -> str:
        return f"<tracejit.Generator object (device={self.device})>"


class _DefaultGenerator(Generator):
    """tracejit's global generator (``creation._GEN``) seen as a Generator."""

    def __init__(self) -> None:
        from .tensor import device as _device
        self.device = _device("cpu")

    @property
    def _np(self) -> np.random.Generator:
        return creation._GEN[0]

    @_np.setter
    def _np(self, value: np.random.Generator) -> None:
        creation._GEN[0] = value

    @property
    def _initial_seed(self) -> int:
        return _SEEDS["default"]

    @_initial_seed.setter
    def _initial_seed(self, value: int) -> None:
        _SEEDS["default"] = value

    def __repr__(self) -> str:
        return "<tracejit.default_generator (the global generator)>"


default_generator = _DefaultGenerator()


def manual_seed(seed: int) -> Generator:
    """Seed tracejit's global generator (rand, randn, randint, dropout, parameter init,
    DataLoader shuffling); returns ``default_generator``, as torch does."""
    creation.manual_seed(seed)
    _SEEDS["default"] = int(seed)
    return default_generator


def seed() -> int:
    """Seed the global generator from OS entropy; returns the seed."""
    s = creation.seed()
    _SEEDS["default"] = s
    return s


def initial_seed() -> int:
    """The seed the global generator was last seeded with."""
    return _SEEDS["default"]


def get_rng_state():
    """The global generator's state, an int64 tensor (see the module docstring)."""
    return default_generator.get_state()


def set_rng_state(new_state) -> None:
    """Restore the global generator to a state from ``get_rng_state``."""
    default_generator.set_state(new_state)


@contextlib.contextmanager
def fork_rng(devices=None, enabled: bool = True, **kwargs):
    """Draws inside the ``with`` block leave the global generator as it was."""
    if not enabled:
        yield
        return
    state = creation._GEN[0].bit_generator.state
    try:
        yield
    finally:
        creation._GEN[0].bit_generator.state = state


def _numpy_generator(generator, who: str):
    """The numpy generator behind ``generator=`` (None: the global one)."""
    if generator is None:
        return creation._GEN[0]
    if isinstance(generator, Generator):
        return generator._np
    if isinstance(generator, np.random.Generator):
        return generator
    raise TypeError(f"{who}: generator must be a tracejit.Generator (or a "
                    f"numpy.random.Generator), got {type(generator).__name__}")
