"""Damaged and hostile files: each gives one clear ``tj.ExportError`` and runs no code from the
file (no unpickling, eval, exec of anything but tracejit's own generated kernels, imports or
extraction)."""

from __future__ import annotations

import builtins
import io
import json
import pickle
import sys
import zipfile

import numpy as np
import pytest

import tracejit as tj
from tracejit.export import format as fmt
from tracejit.runtime import cache

from .helpers import mlp


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "good.tjit"
    tj.export(mlp(), tj.randn(4, 8)).save(path)
    return path


def members(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def manifest(path) -> dict:
    return json.loads(members(path)["manifest.json"])


def rewrite(path, out, change=None, man=None, rehash=True, extra=()):
    """A copy of ``path`` with members changed (``change(name, bytes) -> bytes``), the manifest
    edited (``man(dict)``), hashes recomputed (as an attacker would) unless ``rehash=False``."""
    data = members(path)
    m = json.loads(data.pop("manifest.json"))
    if change:
        data = {k: change(k, v) for k, v in data.items()}
    data.update(extra)  # listed, as the other members
    if rehash:
        m["members"] = {k: {"sha256": fmt.sha256(v), "size": len(v)} for k, v in data.items()}
    if man:
        man(m)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(m))
        for k, v in data.items():
            z.writestr(k, v)
    return out


def graph_member(path) -> str:
    return manifest(path)["entries"]["main"]["graph"]


def edit_graph(path, fn):
    def change(name, data):
        if name != graph_member(path):
            return data
        g = json.loads(data)
        fn(g["graph"])
        return json.dumps(g).encode()
    return change


def load_error(path, match):
    with pytest.raises(tj.ExportError, match=match):
        tj.load(path)


def test_good_file_loads(good):
    assert tj.load(good)(tj.randn(4, 8)).shape == (4, 3)


def test_truncated(good, tmp_path):
    raw = good.read_bytes()
    for n in (0, 10, len(raw) // 2, len(raw) - 30):
        (tmp_path / "t.tjit").write_bytes(raw[:n])
        load_error(tmp_path / "t.tjit", "tracejit export|damaged|missing|sha256")


def test_bit_flipped_member(good, tmp_path):
    def flip(name, data):
        if name != "weights/0.npy":
            return data
        b = bytearray(data)
        b[-5] ^= 0x10
        return bytes(b)
    load_error(rewrite(good, tmp_path / "f.tjit", flip, rehash=False),
               "'weights/0.npy' does not match its sha256")


def test_wrong_hash(good, tmp_path):
    def man(m):
        m["members"][graph_member(good)]["sha256"] = "0" * 64
    load_error(rewrite(good, tmp_path / "h.tjit", man=man), "does not match its sha256")


def test_zip_bomb(good, tmp_path):
    bomb = b"\0" * (64 << 20)  # inflates 64 MB from ~64 KB

    def man(m):  # the manifest claims what the weight should be
        m["members"]["weights/0.npy"] = {"sha256": fmt.sha256(members(good)["weights/0.npy"]),
                                         "size": len(members(good)["weights/0.npy"])}
    path = rewrite(good, tmp_path / "b.tjit",
                   lambda k, v: bomb if k == "weights/0.npy" else v, man=man)
    load_error(path, "zip bomb|over the limit")


def test_zip_bomb_stops_at_the_cap_even_when_headers_lie(good, tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "MAX_RATIO", 10 ** 9)  # only the read cap is left
    path = rewrite(good, tmp_path / "b.tjit",
                   lambda k, v: b"\0" * (8 << 20) if k == "weights/0.npy" else v,
                   man=lambda m: m["members"]["weights/0.npy"].update(size=128))
    load_error(path, "over the limit|inflates past")


class _Touch:
    """Unpickling this creates a file: the proof that a file's pickle ran."""
    target = None

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_pickle_member_never_unpickled(good, tmp_path):
    _Touch.target = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _Touch()
    buf = io.BytesIO()
    np.save(buf, evil, allow_pickle=True)
    path = rewrite(good, tmp_path / "p.tjit",
                   lambda k, v: buf.getvalue() if k == "weights/0.npy" else v)
    load_error(path, "not a plain array|dtype")
    assert not (tmp_path / "pwned").exists()
    # a raw pickle as the graph, and as an extra listed member nothing refers to
    raw = pickle.dumps(_Touch())
    load_error(rewrite(good, tmp_path / "q.tjit",
                       lambda k, v: raw if k == graph_member(good) else v), "not valid JSON")
    load_error(rewrite(good, tmp_path / "r.tjit", extra=[("model.pkl", raw)]),
               "nothing in the manifest refers to")
    assert not (tmp_path / "pwned").exists()


def test_object_dtype_npy(good, tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.array([1, "a"], dtype=object), allow_pickle=True)
    load_error(rewrite(good, tmp_path / "o.tjit",
                       lambda k, v: buf.getvalue() if k == "weights/1.npy" else v),
               "not a plain array")


def test_weight_of_another_dtype_or_shape(good, tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.zeros(16, np.float64))
    load_error(rewrite(good, tmp_path / "w.tjit",
                       lambda k, v: buf.getvalue() if k == "weights/1.npy" else v),
               "the manifest says float32")


def test_unknown_op(good, tmp_path):
    def bogus(g):
        g["nodes"][0]["op"] = "os.system"
    load_error(rewrite(good, tmp_path / "u.tjit", edit_graph(good, bogus)),
               "unknown op 'os.system'")


def test_shape_that_disagrees_with_its_type(good, tmp_path):
    def wrong(g):
        g["nodes"][0]["out"]["shape"][-1] += 1
    load_error(rewrite(good, tmp_path / "s.tjit", edit_graph(good, wrong)),
               "does not verify")


def test_input_spec_that_disagrees_with_the_graph(good, tmp_path):
    def wrong(m):
        m["entries"]["main"]["inputs"][0]["shape"] = [5, 8]
    load_error(rewrite(good, tmp_path / "i.tjit", man=wrong), "input .* in the manifest")


def test_newer_major_versions_refused_with_both_numbers(good, tmp_path):
    def newer(m):
        m["version"] = fmt.VERSION + 1
    load_error(rewrite(good, tmp_path / "v.tjit", man=newer),
               f"version {fmt.VERSION + 1} is newer .*version {fmt.VERSION}")

    def newer_ir(m):
        m["ir"]["major"] += 1
    load_error(rewrite(good, tmp_path / "v2.tjit", man=newer_ir), "IR schema 2.0 is newer .*1.0")


def test_older_and_newer_minor_versions_load(good, tmp_path):
    def minor(m):
        m["ir"]["minor"] = 7
    assert tj.load(rewrite(good, tmp_path / "m.tjit", man=minor)) is not None


def test_extra_unlisted_member(good, tmp_path):
    path = rewrite(good, tmp_path / "x.tjit", man=lambda m: None)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("payload.py", "import os")
    load_error(path, "members the manifest does not list: 'payload.py'")


def test_member_path_with_dotdot(good, tmp_path):
    path = rewrite(good, tmp_path / "d.tjit", extra=[("../evil.npy", b"x")], rehash=True)
    load_error(path, r"member path '../evil.npy' is refused")


def test_other_formats_are_named(good, tmp_path):
    path = rewrite(good, tmp_path / "sd.tjit", man=lambda m: m.update(format="tracejit.state"))
    load_error(path, "format is 'tracejit.state'; only exported graphs")
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY")
    load_error(tmp_path / "x.npy", "not a tracejit export")


def test_loading_runs_no_code_from_the_file(good, tmp_path, monkeypatch):
    """pickle, eval and import never run during a load; exec only runs tracejit's own kernel
    modules (source this tracejit generated, from the cache directory); nothing is extracted."""
    def refuse(*args, **kwargs):
        raise AssertionError("code execution during load")

    real_exec = builtins.exec
    ran = []

    def guarded_exec(code, *args, **kwargs):
        filename = getattr(code, "co_filename", "")
        if not filename.startswith(str(cache.cache_dir())):
            raise AssertionError(f"exec of {filename or code!r:.60} during load")
        ran.append(filename)
        return real_exec(code, *args, **kwargs)

    from tracejit.runtime import compile as rt_compile
    rt_compile.forget()  # the kernels' modules are made again, through exec
    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", guarded_exec)
    monkeypatch.setattr(zipfile.ZipFile, "extract", refuse)
    monkeypatch.setattr(zipfile.ZipFile, "extractall", refuse)
    before = set(sys.modules)
    loaded = tj.load(good)
    # the only modules a load may add are tracejit's generated kernel modules
    new = {m for m in set(sys.modules) - before if not m.startswith(cache.PREFIX)}
    monkeypatch.undo()
    assert ran, "the kernels were built by exec of generated source"
    assert not new, new
    assert loaded(tj.randn(4, 8)).shape == (4, 3)


def _leaf_paths(x, path=()):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _leaf_paths(v, (*path, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _leaf_paths(v, (*path, i))
    else:
        yield path


@pytest.fixture(scope="module")
def dynamic_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "dynamic.tjit"
    tj.export(mlp(), tj.randn(4, 8), dynamic={"x": {0: "batch"}}).save(path)
    return path


@pytest.mark.parametrize("which", ["predict", "train_step", "dynamic"])
def test_any_manifest_field_of_a_wrong_value_is_an_export_error(which, good, dynamic_file,
                                                                tmp_path):
    """Every manifest field, each replaced by values of the wrong type or range:
    the file loads (the field was informational) or raises ExportError, nothing else."""
    import random

    from .make_golden import GOLDEN

    good = {"predict": good, "train_step": GOLDEN / "mlp_train_step.tjit",
            "dynamic": dynamic_file}[which]
    base = manifest(good)
    paths = [p for p in _leaf_paths(base) if p[:1] != ("members",)]
    rng = random.Random(0)
    # NOTE: a sample of 40 fields per file, different each file (each load that
    # passes lowers the graph again: ~50 ms)
    for k, path in enumerate(rng.sample(paths, min(len(paths), 40))):
        for value in (None, -1, "x", [], {"$": "bogus"}, 10 ** 12):
            def man(m, path=path, value=value):
                target = m
                for p in path[:-1]:
                    target = target[p]
                target[path[-1]] = value
            path_file = rewrite(good, tmp_path / f"f{k}.tjit", man=man)
            try:
                loaded = tj.load(path_file)
            except tj.ExportError:
                continue
            if which == "dynamic":  # the substitutions are used by a call with a new size
                try:
                    loaded(tj.randn(3, 8))
                except (tj.ExportError, ValueError, TypeError):
                    pass


def test_a_missing_file_is_the_usual_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        tj.load(tmp_path / "nothing.tjit")
