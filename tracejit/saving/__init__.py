"""Saving and loading: ``tj.save(obj, f)`` and one ``tj.load(f)`` for every file tracejit
reads (docs/saving.md):

| file | written by | ``tj.load`` gives |
| --- | --- | --- |
| zip, manifest ``format: "tracejit.checkpoint"`` | ``tj.save`` | the saved object |
| zip, manifest ``format: "tracejit.export"`` | ``tj.export(...).save`` | a ``Loaded`` graph |
| zip with ``<name>/data.pkl`` | ``torch.save`` | its tensors (weights only, no code) |
| safetensors (size, JSON header, bytes) | ``tj.utils.safetensors.save_file`` | ``{name: Tensor}`` |

Every format is recognised by its contents (the zip's manifest, or torch's ``data.pkl``), never
by the file name; anything else is refused with an error naming the file. Nothing is ever
unpickled with the standard unpickler, imported or evaluated.

| module | holds |
| --- | --- |
| ``checkpoint.py`` | ``save``; the checkpoint's JSON encoding of objects and its loader |
| ``torch_file.py`` | torch.save zips read through a restricted unpickler, into numpy |
| ``safetensors_file.py`` | the safetensors format, read and written without the package |
| ``atomic.py`` | ``atomic_write``: temp file, fsync, ``os.replace`` |
"""

from __future__ import annotations

import io
import os
import zipfile

from ..export.format import MANIFEST, ExportError, Reader
from .atomic import atomic_write
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import CheckpointError, load_checkpoint, save
from .safetensors_file import looks_like_safetensors
from .safetensors_file import read as read_safetensors
from .torch_file import is_torch_zip, load_torch_file

_PICKLE_REFUSED = (
    "{path}: a pickle file (torch.save's legacy format, or pickle itself): tj.load never "
    "unpickles, since unpickling can run any code. Re-save it with torch.save's default "
    "(zip) format to load its tensors, or as a tracejit checkpoint with tj.save")


def _name(f) -> str:
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return str(getattr(f, "name", None) or f"<{type(f).__name__}>")


def load(f, map_location=None, *, device=None, weights_only=True, mmap=None, **unused):
    """Load what ``tj.save``, ``tj.export(...).save``, ``torch.save`` or a safetensors writer
    wrote to ``f`` (a path or a binary file object).

    ``map_location`` (a device, ``"cpu"``/``"cuda"``, or a dict such as ``{"cuda:0": "cpu"}``)
    says where loaded tensors go, as in torch; by default they go back where they were saved.
    For an exported graph, ``device=`` (or ``map_location``) is where it runs.

    >>> model.load_state_dict(tj.load("model.tj"))                    # doctest: +SKIP
    >>> tj.load("resnet.pt", map_location="cpu")                       # doctest: +SKIP
    """
    if weights_only is False:
        raise ValueError("tj.load(weights_only=False): tracejit loads data only and never runs "
                         "code from a file; leave weights_only at its default")
    if unused:
        raise TypeError(f"tj.load: unexpected arguments {', '.join(unused)} (torch's "
                        f"pickle_load_args do not apply: nothing is unpickled)")
    del mmap  # accepted for torch's signature; members are read, not mapped
    path = _name(f)
    if hasattr(f, "read"):
        data = f.read()
        if not isinstance(data, bytes):
            raise TypeError(f"tj.load: {path} is opened in text mode; open it with 'rb'")
        src = io.BytesIO(data)
        head, size = data[:16], len(data)
    else:
        src = f
        with open(f, "rb") as fh:  # FileNotFoundError and friends: the usual errors
            head = fh.read(16)
            size = os.fstat(fh.fileno()).st_size
    if looks_like_safetensors(head, size):
        if not isinstance(src, io.BytesIO):
            with open(src, "rb") as fh:
                src = io.BytesIO(fh.read())
        return read_safetensors(src.getvalue(), path, map_location)
    if not head.startswith(b"PK"):
        if head[:1] == b"\x80":  # pickle protocol 2+ (torch's legacy format starts so too)
            raise CheckpointError(_PICKLE_REFUSED.format(path=path))
        raise ExportError(f"{path}: not a tracejit export or checkpoint, nor a torch.save file "
                          f"(not a zip file); tj.load reads what tj.save, tj.export and "
                          f"torch.save write")
    try:
        with zipfile.ZipFile(src) as z:
            names = z.namelist()
            if MANIFEST not in names and is_torch_zip(names):
                return load_torch_file(z, path, map_location)
    except zipfile.BadZipFile as e:
        raise ExportError(f"{path}: not a tracejit export or checkpoint (not a readable zip "
                          f"file: {e}; truncated or damaged?)") from None
    if hasattr(src, "seek"):
        src.seek(0)
    reader = Reader(src, name=path)
    try:
        fmt = reader.manifest.get("format")
        if fmt == CHECKPOINT_FORMAT:
            return load_checkpoint(reader, map_location)
        from ..export.loaded import LOADERS
        from ..tensor import _check_device

        loader = LOADERS.get(fmt) if isinstance(fmt, str) else None
        if loader is None:
            raise ExportError(
                f"{path}: this file's format is {fmt!r:.60}; only exported graphs "
                f"('tracejit.export', from tj.export) and checkpoints "
                f"({CHECKPOINT_FORMAT!r}, from tj.save) load")
        if device is None:
            device = map_location if isinstance(map_location, str) or map_location is None \
                else str(map_location)
        return loader(reader, str(_check_device(device or "cpu", "tracejit.load")))
    finally:
        reader.close()


__all__ = ["save", "load", "atomic_write", "CheckpointError"]
