"""The ``.tjit`` file: a zip of a JSON manifest, one JSON graph per entry point and ``.npy``
arrays, written and read without ever running code from it.

Reading is defensive by construction (see docs/export.md, "Security"): the manifest is the
only member read first, and only members it lists are read after that, each with its size
capped before a byte is inflated and its sha256 checked; arrays go through ``np.load`` with
``allow_pickle=False`` and a dtype allow-list. Nothing is extracted to disk, imported,
evaluated or unpickled. Every problem raises ``ExportError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np

FORMAT = "tracejit.export"
VERSION = 1  # the container's major version: bump on any change an older reader would misread
MANIFEST = "manifest.json"

# NOTE: caps, checked against the manifest's sizes and the zip's own headers before reading:
# a member that claims to be small but inflates to gigabytes is stopped at its cap.
MAX_MANIFEST_BYTES = 16 << 20
MAX_MEMBER_BYTES = 4 << 30
MAX_RATIO = 1000  # inflated / compressed, beyond which a member is a zip bomb, not data

DTYPES = {np.dtype(t).name: np.dtype(t) for t in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64")}


class ExportError(ValueError):
    """An export that cannot be written, or a file that is not an export this tracejit loads
    (damaged, tampered, newer, or something else entirely)."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npy_bytes(a: np.ndarray) -> bytes:
    if DTYPES.get(a.dtype.name) != a.dtype:
        raise ExportError(f"an array of dtype {a.dtype} cannot be exported")
    buf = io.BytesIO()
    # NOTE: not np.ascontiguousarray, which makes a 0-d array 1-d
    np.save(buf, np.array(a, order="C"), allow_pickle=False)
    return buf.getvalue()


def write(path, manifest: dict, members: dict) -> None:
    """Write ``members`` (name -> bytes) and a manifest that lists each with its hash."""
    manifest = dict(manifest)
    manifest["members"] = {name: {"sha256": sha256(data), "size": len(data)}
                           for name, data in members.items()}
    text = json.dumps(manifest, indent=1, sort_keys=False, allow_nan=False).encode()

    def fill(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, text)
            for name, data in members.items():
                z.writestr(name, data)

    if hasattr(path, "write"):  # an open binary file (io.BytesIO, ...)
        fill(path)
        return
    # NOTE: atomic: a crash mid-write leaves the old file in place, never a truncated one
    from ..saving.atomic import atomic_write
    with atomic_write(path) as f:
        fill(f)


class Reader:
    """An open export: the manifest, and members read on request (checked, never extracted)."""

    def __init__(self, path, name: str | None = None):
        self.path = name or str(path)
        try:
            self.zip = zipfile.ZipFile(path)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise  # not the file's fault: the usual errors
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ExportError(f"{self.path}: not a tracejit export or checkpoint (not a "
                              f"readable zip file: {e}); tj.load reads files written by "
                              f"tj.export, tj.save and torch.save") from None
        self.infos = {}
        for info in self.zip.infolist():
            name = info.filename
            if name in self.infos:
                raise ExportError(f"{self.path}: member {name!r} appears twice")
            _check_name(self.path, name)
            self.infos[name] = info
        if MANIFEST not in self.infos:
            raise ExportError(f"{self.path}: no {MANIFEST}: not a tracejit export or "
                              f"checkpoint, nor a torch.save file (tj.load reads files written "
                              f"by tj.export, format {FORMAT!r}, tj.save and torch.save)")
        raw = self._read(MANIFEST, MAX_MANIFEST_BYTES)
        self.manifest = parse_json(raw, f"{self.path}: {MANIFEST}")
        if not isinstance(self.manifest, dict):
            raise ExportError(f"{self.path}: {MANIFEST} is not a JSON object")
        listed = self.manifest.get("members")
        if not isinstance(listed, dict):
            raise ExportError(f"{self.path}: {MANIFEST} lists no members")
        self.listed = listed
        self.read: set = set()  # the members read so far (an export references every one)
        extra = sorted(set(self.infos) - set(listed) - {MANIFEST})
        if extra:
            raise ExportError(f"{self.path}: members the manifest does not list: "
                              f"{', '.join(map(repr, extra))} (tampered file?)")

    def close(self):
        self.zip.close()

    def _read(self, name: str, cap: int) -> bytes:
        info = self.infos.get(name)
        if info is None:
            raise ExportError(f"{self.path}: member {name!r} is missing (truncated file?)")
        if info.file_size > cap:
            raise ExportError(f"{self.path}: member {name!r} is {info.file_size} bytes, over "
                              f"the limit of {cap}")
        if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ExportError(f"{self.path}: member {name!r} inflates {info.file_size} bytes "
                              f"from {info.compress_size}: refused as a zip bomb")
        try:
            with self.zip.open(info) as f:
                data = f.read(cap + 1)  # never more than the cap, whatever the header says
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
            raise ExportError(f"{self.path}: member {name!r} is damaged: {e}") from None
        if len(data) > cap:
            raise ExportError(f"{self.path}: member {name!r} inflates past the limit of {cap} "
                              f"bytes: refused as a zip bomb")
        return data

    def member(self, name: str) -> bytes:
        """A listed member's bytes, after checking its size and sha256 against the manifest."""
        entry = self.listed.get(name) if isinstance(name, str) else None
        if not isinstance(entry, dict):
            raise ExportError(f"{self.path}: the manifest refers to {name!r} but does not "
                              f"list it")
        size, digest = entry.get("size"), entry.get("sha256")
        if type(size) is not int or size < 0 or not isinstance(digest, str):
            raise ExportError(f"{self.path}: the manifest's entry for {name!r} is malformed")
        data = self._read(name, min(size, MAX_MEMBER_BYTES))
        if len(data) != size or sha256(data) != digest:
            raise ExportError(f"{self.path}: member {name!r} does not match its sha256 in "
                              f"the manifest (damaged or tampered)")
        self.read.add(name)
        return data

    def check_all_read(self) -> None:
        """An export references every member it lists: one nothing refers to is smuggled in."""
        unread = sorted(set(self.listed) - self.read)
        if unread:
            raise ExportError(f"{self.path}: members nothing in the manifest refers to: "
                              f"{', '.join(map(repr, unread))} (tampered file?)")

    def array(self, name: str, dtype=None, shape=None) -> np.ndarray:
        data = self.member(name)
        if not name.endswith(".npy") or not data.startswith(b"\x93NUMPY"):
            raise ExportError(f"{self.path}: member {name!r} is not an .npy array")
        try:
            a = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:  # object arrays need pickle: refused here
            raise ExportError(f"{self.path}: member {name!r} is not a plain array: {e}") \
                from None
        if not isinstance(a, np.ndarray) or DTYPES.get(a.dtype.name) != a.dtype:
            raise ExportError(f"{self.path}: member {name!r} has dtype {a.dtype}, not one an "
                              f"export may hold")
        if dtype is not None and (a.dtype != dtype or a.shape != tuple(shape)):
            raise ExportError(f"{self.path}: member {name!r} is {a.dtype}{list(a.shape)}, the "
                              f"manifest says {dtype}{list(shape)}")
        return a


def _check_name(path: str, name: str) -> None:
    # NOTE: nothing is ever extracted, but a hostile path is a sign of a hostile file: refuse
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or ":" in name or "\x00" in name:
        raise ExportError(f"{path}: member path {name!r} is refused (absolute or with '..')")


def parse_json(raw: bytes, where: str):
    def no_constant(name):
        raise ExportError(f"{where}: non-standard JSON constant {name}")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{where}: not valid JSON (damaged?): {e}") from None
    except RecursionError:
        raise ExportError(f"{where}: nested too deeply") from None
