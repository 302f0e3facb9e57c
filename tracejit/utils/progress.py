"""Progress bars through ``tqdm`` when it is installed; without it, the iterable unchanged.

>>> from tracejit.utils import progress
>>> sum(progress(range(3), desc="steps", disable=True))
3

Wrap any loop: ``for x, y in progress(loader, desc="epoch 1")``. Bars go to stderr and, as
tqdm's ``disable=None`` does, hide themselves where stderr is not a terminal (CI logs).
"""

from __future__ import annotations


def have_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def progress(iterable=None, desc: str | None = None, total: int | None = None,
             disable: bool | None = None, **tqdm_options):
    """``tqdm(iterable, desc=..., total=..., disable=...)`` when tqdm is installed (``pip
    install 'tracejit[watch]'``), else ``iterable`` itself (no bar)."""
    if not have_tqdm():
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, disable=disable, **tqdm_options)


__all__ = ["have_tqdm", "progress"]
