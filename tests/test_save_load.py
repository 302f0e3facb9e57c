"""tj.save / tj.load: checkpoints (data only, atomic), torch.save files read without running
code, and state dicts between tracejit and torch."""

from __future__ import annotations

import collections
import io
import json
import math
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn


def make_model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def train(model, opt, steps=2, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = tj.tensor(rng.standard_normal((5, 4)).astype(np.float32))
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()


# ------------------------------------------------------------------------------ checkpoints

def test_state_dict_round_trip(tmp_path):
    model, other = make_model(), make_model()
    tj.save(model.state_dict(), tmp_path / "m.tj")
    sd = tj.load(tmp_path / "m.tj")
    assert isinstance(sd, collections.OrderedDict) and list(sd) == list(model.state_dict())
    other.load_state_dict(sd)
    x = tj.randn(2, 4)
    np.testing.assert_array_equal(other(x).detach().numpy(), model(x).detach().numpy())


def test_batchnorm_buffers_round_trip(tmp_path):
    bn = nn.BatchNorm1d(3)
    bn(tj.randn(8, 3))
    tj.save(bn.state_dict(), tmp_path / "bn.tj")
    back = tj.load(tmp_path / "bn.tj")
    for k, v in bn.state_dict().items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k].detach().numpy(), v.detach().numpy())


def test_optimizer_state_resumes_training_exactly(tmp_path):
    for make_opt in (lambda p: tj.optim.Adam(p, lr=0.01),
                     lambda p: tj.optim.SGD(p, lr=0.1, momentum=0.9)):
        model = make_model()
        opt = make_opt(model.parameters())
        train(model, opt)
        tj.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": 2},
                tmp_path / "ckpt.tj")
        ckpt = tj.load(tmp_path / "ckpt.tj")
        model2 = make_model()
        model2.load_state_dict(ckpt["model"])
        opt2 = make_opt(model2.parameters())
        opt2.load_state_dict(ckpt["opt"])
        assert ckpt["epoch"] == 2
        train(model, opt, 1, seed=5)
        train(model2, opt2, 1, seed=5)
        for a, b in zip(model.parameters(), model2.parameters()):
            np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_nested_plain_values(tmp_path):
    obj = {
        "none": None, "true": True, "int": 7, "big": 2 ** 70, "float": 0.1, "nan": math.nan,
        "inf": -math.inf, "str": "é", "bytes": b"\x00\xff", "tuple": (1, (2.5, "x")),
        "list": [1, [None, {"a": 1}]], 3: "int key", (1, "k"): "tuple key",
        "ndarray": np.arange(6, dtype=np.int16).reshape(2, 3), "scalar": np.float32(1.5),
        "dtype": np.dtype("float64"), "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "empty": {}, "zero_size": tj.zeros(0, 3), "scalar_tensor": tj.tensor(3.0),
        "bool_tensor": tj.tensor([True, False]), "long": tj.arange(5),
    }
    tj.save(obj, tmp_path / "o.tj")
    back = tj.load(tmp_path / "o.tj")
    assert set(back) == set(obj)
    for k in ("none", "true", "int", "big", "float", "inf", "str", "bytes", "tuple", "list", 3,
              (1, "k"), "dtype", "empty"):
        assert back[k] == obj[k] and type(back[k]) is type(obj[k]), k
    assert math.isnan(back["nan"])
    assert type(back["ordered"]) is collections.OrderedDict and list(back["ordered"]) == ["b", "a"]
    assert back["ndarray"].dtype == np.int16
    np.testing.assert_array_equal(back["ndarray"], obj["ndarray"])
    assert back["scalar"] == np.float32(1.5) and back["scalar"].dtype == np.float32
    for k in ("zero_size", "scalar_tensor", "bool_tensor", "long"):
        assert isinstance(back[k], tj.Tensor) and back[k].dtype == obj[k].dtype, k
        assert back[k].shape == obj[k].shape
        np.testing.assert_array_equal(back[k].detach().numpy(), obj[k].detach().numpy())


def test_tensors_keep_identity_requires_grad_and_parameters(tmp_path):
    w = nn.Parameter(tj.randn(3))
    t = tj.randn(2, requires_grad=True)
    tj.save({"a": w, "b": w, "t": t, "view": tj.arange(10.0)[::3]}, tmp_path / "t.tj")
    back = tj.load(tmp_path / "t.tj")
    assert back["a"] is back["b"] and isinstance(back["a"], nn.Parameter)
    assert back["a"].requires_grad and back["t"].requires_grad and back["t"].is_leaf
    np.testing.assert_array_equal(back["view"].detach().numpy(), [0, 3, 6, 9])
    with tj.no_grad():
        back["a"].add_(1)  # loaded arrays are writable
    assert zipfile.ZipFile(tmp_path / "t.tj").namelist().count("data/0.npy") == 1


def test_file_objects(tmp_path):
    buf = io.BytesIO()
    tj.save({"x": tj.ones(2)}, buf)
    buf.seek(0)
    assert tj.load(buf)["x"].tolist() == [1.0, 1.0]
    with open(tmp_path / "f.tj", "wb") as f:
        tj.save([1, 2], f)
    with open(tmp_path / "f.tj", "rb") as f:
        assert tj.load(f) == [1, 2]


def test_the_format_is_a_zip_of_npy_and_json(tmp_path):
    tj.save({"w": tj.ones(2, 2)}, tmp_path / "c.tj")
    with zipfile.ZipFile(tmp_path / "c.tj") as z:
        assert sorted(z.namelist()) == ["data/0.npy", "manifest.json"]
        m = json.loads(z.read("manifest.json"))
        arr = np.load(io.BytesIO(z.read("data/0.npy")), allow_pickle=False)
    assert m["format"] == "tracejit.checkpoint" and m["version"] == 1
    assert m["tensors"][0]["shape"] == [2, 2] and m["tensors"][0]["dtype"] == "float32"
    assert m["object"] == {"$": "dict", "items": [["w", {"$": "tensor", "index": 0}]]}
    np.testing.assert_array_equal(arr, np.ones((2, 2)))


@pytest.mark.parametrize("obj, match", [
    (nn.Linear(2, 2), r"torch\.nn|tracejit\.nn.*Linear.*state_dict\(\)"),
    ({"a": [object()]}, r"builtins\.object at \['a'\]\[0\]"),
    ({"f": lambda: 0}, "function"),
    ({tj.ones(1).detach().numpy().tobytes().hex(): {1, 2}}, "builtins.set"),
    ({1.5j: 1}, "key"),
    (np.array(["a"], dtype=object), "dtype object"),
])
def test_refuses_what_is_not_data(tmp_path, obj, match):
    with pytest.raises(TypeError, match=match):
        tj.save(obj, tmp_path / "x.tj")
    assert not (tmp_path / "x.tj").exists() and os.listdir(tmp_path) == []


def test_no_pickle_options():
    with pytest.raises(TypeError, match="never pickled"):
        tj.save(1, io.BytesIO(), pickle_module=pickle)
    with pytest.raises(ValueError, match="weights_only"):
        tj.load(io.BytesIO(b""), weights_only=False)


# ------------------------------------------------------------------------------ damaged files

def rewrite(src, dst, manifest=None, members=None, rehash=True):
    """Copy a checkpoint changing its manifest and members (and, by default, the hashes)."""
    from tracejit.export.format import sha256
    with zipfile.ZipFile(src) as z:
        m = json.loads(z.read("manifest.json"))
        data = {n: z.read(n) for n in z.namelist() if n != "manifest.json"}
    if members:
        data.update(members)
    if manifest:
        manifest(m)
    if rehash:
        m["members"] = {n: {"sha256": sha256(b), "size": len(b)} for n, b in data.items()}
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("manifest.json", json.dumps(m))
        for n, b in data.items():
            z.writestr(n, b)
    return dst


@pytest.fixture
def good(tmp_path):
    tj.save({"w": tj.ones(3), "n": 1}, tmp_path / "good.tj")
    return tmp_path / "good.tj"


def test_damaged_files_name_the_file(good, tmp_path):
    raw = good.read_bytes()
    (tmp_path / "trunc.tj").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(tj.ExportError, match="trunc.tj"):
        tj.load(tmp_path / "trunc.tj")
    (tmp_path / "junk.bin").write_bytes(b"hello world")
    with pytest.raises(tj.ExportError, match="junk.bin: not a tracejit export"):
        tj.load(tmp_path / "junk.bin")
    path = rewrite(good, tmp_path / "tampered.tj", members={"data/0.npy": raw[:10]},
                   rehash=False)
    with pytest.raises(tj.ExportError, match="tampered.tj.*sha256"):
        tj.load(path)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "x")
    with pytest.raises(tj.ExportError, match="other.zip: no manifest.json"):
        tj.load(tmp_path / "other.zip")


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(version=99), "checkpoint version 99 is newer"),
    (lambda m: m.update(object={"$": "exec", "code": "import os"}), "unknown value tag 'exec'"),
    (lambda m: m.update(object={"$": "tensor", "index": 5}), "out of range"),
    (lambda m: m["tensors"][0].update(dtype="object"), "dtype 'object'"),
    (lambda m: m["tensors"][0].update(shape=[4]), r"float32\[4\]"),
    (lambda m: m.update(format="tracejit.other"), "format is 'tracejit.other'"),
])
def test_tampered_manifests_are_refused(good, tmp_path, edit, match):
    with pytest.raises(tj.ExportError, match=match):
        tj.load(rewrite(good, tmp_path / "bad.tj", manifest=edit))


def test_an_object_array_member_is_refused(good, tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    path = rewrite(good, tmp_path / "obj.tj", members={"data/0.npy": buf.getvalue()})
    with pytest.raises(tj.ExportError, match="not a plain array"):
        tj.load(path)


def test_loading_never_unpickles(good, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("pickle used during tj.load")
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    assert tj.load(good)["n"] == 1


def test_cuda_tensors_without_cuda_say_map_location(good, tmp_path):
    if tj.cuda.is_available():
        pytest.skip("CUDA is available here")
    path = rewrite(good, tmp_path / "gpu.tj",
                   manifest=lambda m: m["tensors"][0].update(device="cuda:0"))
    with pytest.raises(RuntimeError, match="map_location='cpu'"):
        tj.load(path)
    assert tj.load(path, map_location="cpu")["w"].tolist() == [1, 1, 1]
    assert tj.load(path, map_location={"cuda:0": "cpu"})["w"].device == tj.device("cpu")


# ------------------------------------------------------------------------------ atomic writes

def test_a_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.tj"
    tj.save({"w": tj.ones(3), "step": 1}, path)
    before = path.read_bytes()
    real = zipfile.ZipFile.writestr
    calls = []

    def fail_midway(self, name, data, *a, **k):
        calls.append(name)
        if len(calls) == 2:  # the manifest and one array are in the temp file: crash now
            raise OSError("disk full (simulated)")
        return real(self, name, data, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", fail_midway)
    with pytest.raises(OSError, match="simulated"):
        tj.save({"w": tj.zeros(1000), "v": tj.zeros(10), "step": 2}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert tj.load(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ckpt.tj"]  # the temp file is gone


def test_a_process_killed_mid_write_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.tj"
    tj.save({"step": 1}, path)
    script = f"""
import os, zipfile
import tracejit as tj
real = zipfile.ZipFile.writestr
def die(self, name, data, *a, **k):
    real(self, name, data, *a, **k)
    if name.startswith("data/"):
        self.fp.flush()
        os._exit(3)   # the process dies with half a checkpoint written
zipfile.ZipFile.writestr = die
tj.save({{"step": 2, "w": tj.ones(100000), "v": tj.ones(10)}}, {str(path)!r})
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert r.returncode == 3, r.stderr.decode()
    assert tj.load(path) == {"step": 1}
    leftovers = [n for n in os.listdir(tmp_path) if n != "ckpt.tj"]
    assert all(n.startswith(".ckpt.tj.") and n.endswith(".tmp") for n in leftovers)


def test_exports_are_written_atomically_too(tmp_path, monkeypatch):
    @tj.trace
    def f(x):
        return x + 1
    exported = tj.export(f, tj.zeros(2))
    exported.save(tmp_path / "f.tjit")
    before = (tmp_path / "f.tjit").read_bytes()
    monkeypatch.setattr(zipfile.ZipFile, "writestr",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("simulated")))
    with pytest.raises(OSError):
        exported.save(tmp_path / "f.tjit")
    monkeypatch.undo()
    assert (tmp_path / "f.tjit").read_bytes() == before
    assert tj.load(tmp_path / "f.tjit")(tj.zeros(2)).tolist() == [1.0, 1.0]


# ------------------------------------------------------------------------------ torch files

torch_only = pytest.mark.torch


@torch_only
def test_torch_state_dict_file_loads_into_a_tracejit_model(tmp_path):
    torch = pytest.importorskip("torch")
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    torch.save(tmodel.state_dict(), tmp_path / "m.pt")
    sd = tj.load(tmp_path / "m.pt", map_location="cpu")
    model = make_model()
    model.load_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    want = tmodel(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(model(tj.tensor(x)).detach().numpy(), want, rtol=1e-5, atol=1e-6)


@torch_only
def test_torch_files_of_every_plain_kind(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    obj = {
        "f32": torch.randn(2, 3), "f64": base, "f16": torch.ones(3, dtype=torch.float16),
        "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "i64": torch.arange(5), "i32": torch.arange(3, dtype=torch.int32),
        "i8": torch.tensor([-1, 2], dtype=torch.int8), "u8": torch.tensor([255], dtype=torch.uint8),
        "bool": torch.tensor([True, False]), "scalar": torch.tensor(2.5),
        "strided": base[1:, ::2], "transposed": base.t(), "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2)), "grad": torch.ones(2, requires_grad=True),
        "nested": [torch.ones(1), (torch.zeros(2), "s", 3, 1.5, None, b"by")],
        "shared_a": base[0], "step": 7,
    }
    torch.save(obj, tmp_path / "all.pt")
    back = tj.load(tmp_path / "all.pt")
    widened = {"f16": np.float32, "i8": np.int32, "u8": np.int32}  # tracejit's dtypes
    for k in ("f32", "f64", "f16", "i64", "i32", "i8", "u8", "bool", "scalar", "strided",
              "transposed", "empty", "shared_a"):
        want = obj[k].detach().numpy()
        assert back[k].dtype == widened.get(k, want.dtype) and back[k].shape == want.shape, k
        np.testing.assert_array_equal(back[k].detach().numpy(), want)
    assert back["bf16"].dtype == np.float32 and back["bf16"].tolist() == [1.5, -2.0]
    assert isinstance(back["param"], nn.Parameter) and back["param"].requires_grad
    assert back["grad"].requires_grad and not isinstance(back["grad"], nn.Parameter)
    assert back["nested"][1][1:] == ("s", 3, 1.5, None, b"by") and back["step"] == 7
    assert tj.load(tmp_path / "all.pt", map_location={"cpu": "cpu"})["step"] == 7
    with open(tmp_path / "all.pt", "rb") as f:
        assert tj.load(f)["i64"].tolist() == [0, 1, 2, 3, 4]


@torch_only
def test_torch_optimizer_state_loads(tmp_path):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.ones(3))
    # NOTE: SGD, not Adam: torch's first Adam step imports torch._dynamo (seconds)
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    (p * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    sd = tj.load(tmp_path / "o.pt")
    assert sd["param_groups"][0]["lr"] == 0.1 and sd["param_groups"][0]["params"] == [0]
    np.testing.assert_allclose(sd["state"][0]["momentum_buffer"].detach().numpy(), [1, 2, 3])
    w = nn.Parameter(tj.tensor(p.detach().numpy()))  # where torch's parameter is now
    mine = tj.optim.SGD([w], lr=0.1, momentum=0.9)
    mine.load_state_dict(sd)  # torch's optimizer state resumes a tracejit optimizer
    w.grad = tj.tensor([1.0, 2.0, 3.0])
    mine.step()
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()
    np.testing.assert_allclose(w.detach().numpy(), p.detach().numpy(), rtol=1e-6)


@torch_only
def test_torch_files_that_are_not_plain_data_are_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(tj.ExportError, match=r"module.pt: a torch.save file holding "
                                             r"torch.nn.modules.linear.Linear"):
        tj.load(tmp_path / "module.pt")
    torch.save({"a": torch.ones(1)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(tj.ExportError, match="legacy.pt: a pickle file.*never unpickles"):
        tj.load(tmp_path / "legacy.pt")


def test_a_hostile_torch_file_runs_nothing(tmp_path):
    """A zip laid out like torch's whose pickle calls os.system: refused, never called."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
        z.writestr("archive/version", "3\n")
    with pytest.raises(tj.ExportError, match=r"evil.pt: a torch.save file holding "
                                             r"(posix|nt|os)\.system"):
        tj.load(tmp_path / "evil.pt")
    assert not marker.exists()
    with open(tmp_path / "pickle.pkl", "wb") as f:
        pickle.dump({"w": Evil()}, f)
    with pytest.raises(tj.ExportError, match="a pickle file"):
        tj.load(tmp_path / "pickle.pkl")
    assert not marker.exists()


def torch_style_pickle(numel: int, size: bytes, stride: bytes) -> bytes:
    """``{"w": _rebuild_tensor_v2(storage '0' of ``numel`` floats, 0, size, stride)}`` as
    torch.save pickles it (size and stride: pickle opcodes building tuples)."""
    return (b"\x80\x02}q\x00X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\nq\x01((X\x07"
            b"\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK"
            + bytes([numel]) + b"tQK\x00" + size + stride
            + b"\x89ccollections\nOrderedDict\n)RtRs.")


def test_expanded_torch_tensors_load_and_huge_ones_are_refused(tmp_path):
    def write(name, data):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr("archive/data.pkl", data)
            z.writestr("archive/data/0", np.arange(1, dtype=np.float32).tobytes())
        return tmp_path / name
    # size (3, 2), stride (0, 0): a stored expand()
    ok = write("expand.pt", torch_style_pickle(1, b"K\x03K\x02\x86", b"K\x00K\x00\x86"))
    np.testing.assert_array_equal(tj.load(ok)["w"].numpy(), np.zeros((3, 2)))
    huge = write("huge.pt", torch_style_pickle(1, b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85",
                                               b"K\x00\x85"))
    with pytest.raises(tj.CheckpointError, match="huge.pt: a tensor of 1099511627776 elements"):
        tj.load(huge)
    bad = tmp_path / "big.safetensors"
    bad.write_bytes(_safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [2 ** 32, 2 ** 32], "data_offsets": [0, 0]}}, b""))
    with pytest.raises(tj.CheckpointError, match="need 73786976294838206464"):
        tj.load(bad)


def test_a_damaged_torch_storage_is_refused(tmp_path):
    # a torch-style pickle written by hand: _rebuild_tensor_v2 on a storage of 4 floats
    # that the file holds only 2 of
    data = torch_style_pickle(4, b"K\x04\x85", b"K\x01\x85")
    with zipfile.ZipFile(tmp_path / "short.pt", "w") as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/data/0", np.ones(2, np.float32).tobytes())
    with pytest.raises(tj.ExportError, match="short.pt: storage '0' has 8 bytes, its "
                                             "reference says 16"):
        tj.load(tmp_path / "short.pt")
    with zipfile.ZipFile(tmp_path / "ok.pt", "w") as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
    assert tj.load(tmp_path / "ok.pt")["w"].tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------------------ to/from torch

@torch_only
def test_state_dicts_between_tracejit_and_torch():
    torch = pytest.importorskip("torch")
    model = make_model()
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    tsd = tj.utils.to_torch_state_dict(model.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in tsd.values())
    tmodel.load_state_dict(tsd)
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    want = model(tj.tensor(x)).detach().numpy()
    np.testing.assert_allclose(tmodel(torch.from_numpy(x)).detach().numpy(), want, rtol=1e-6)
    # and back: torch tensors load into a tracejit module directly, and as numpy arrays
    with torch.no_grad():
        for p in tmodel.parameters():
            p.mul_(2)
    model.load_state_dict(tmodel.state_dict())
    want = tmodel(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(model(tj.tensor(x)).detach().numpy(), want, rtol=1e-5, atol=1e-6)
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    np.testing.assert_allclose(model(tj.tensor(x)).detach().numpy(), want, rtol=1e-5, atol=1e-6)
    back = tj.utils.from_torch_state_dict({"a": {"b": torch.ones(2, dtype=torch.bfloat16)}})
    assert back["a"]["b"].dtype == np.float32


@torch_only
def test_tj_save_of_torch_tensors_stores_them_as_tracejit_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    w = torch.randn(2, 3)
    tj.save({"a": w, "b": w, "bf": torch.ones(1, dtype=torch.bfloat16)}, tmp_path / "t.tj")
    back = tj.load(tmp_path / "t.tj")
    assert isinstance(back["a"], tj.Tensor) and back["a"] is back["b"]
    np.testing.assert_array_equal(back["a"].numpy(), w.numpy())
    assert back["bf"].dtype == np.float32


def test_to_torch_without_torch_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="needs PyTorch"):
        tj.utils.to_torch_state_dict({"w": tj.ones(1)})


_CUDA_SNIPPET = """
import io
import numpy as np
import tracejit as tj

class Exp(tj.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y

def main(inputs):
    x = tj.tensor(inputs["x"]).cuda()
    buf = io.BytesIO()
    tj.save({"x": x, "p": tj.nn.Parameter(x.clone())}, buf)
    buf.seek(0)
    back = tj.load(buf)
    assert back["x"].is_cuda and back["p"].is_cuda and isinstance(back["p"], tj.nn.Parameter)
    buf.seek(0)
    host = tj.load(buf, map_location="cpu")
    assert not host["x"].is_cuda
    a = tj.tensor(inputs["x"], requires_grad=True, device="cuda")
    Exp.apply(a).sum().backward()
    assert a.grad.is_cuda
    return {"x": back["x"].cpu().numpy(), "host": host["x"].numpy(), "grad": a.grad.cpu().numpy()}
"""


def test_cuda_checkpoints_and_functions_under_the_simulator():
    sim = pytest.importorskip("tests.cuda.sim")
    pytest.importorskip("numba.cuda")
    x = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    out = sim.run_in_simulator(_CUDA_SNIPPET, {"x": x})
    np.testing.assert_array_equal(out["x"], x)
    np.testing.assert_array_equal(out["host"], x)
    np.testing.assert_allclose(out["grad"], np.exp(x), rtol=1e-6)


# ------------------------------------------------------------------------------ safetensors

def test_safetensors_round_trip_without_the_package(tmp_path):
    model = make_model()
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    sd["steps"] = tj.arange(3)
    tj.utils.safetensors.save_file(sd, tmp_path / "m.safetensors", metadata={"epoch": "3"})
    for back in (tj.load(tmp_path / "m.safetensors"),
                 tj.utils.safetensors.load_file(tmp_path / "m.safetensors")):
        assert set(back) == set(sd)
        for k, v in sd.items():
            assert back[k].dtype == v.dtype
            np.testing.assert_array_equal(back[k].detach().numpy(), v.detach().numpy())
    other = make_model()
    other.load_state_dict({k: v for k, v in back.items() if k != "steps"})
    x = tj.randn(2, 4)
    np.testing.assert_array_equal(other(x).detach().numpy(), model(x).detach().numpy())


def test_safetensors_files_of_the_real_library_both_ways(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    arrays = {"f32": np.arange(6, dtype=np.float32).reshape(2, 3),
              "f16": np.array([0.5, -2.0], np.float16), "u8": np.array([255, 0], np.uint8),
              "i64": np.array([-(2 ** 40)], np.int64), "b": np.array([True, False]),
              "scalar": np.array(1.5, np.float64), "empty": np.zeros((0, 2), np.float32)}
    st.save_file(arrays, str(tmp_path / "lib.safetensors"), metadata={"k": "v"})
    back = tj.load(tmp_path / "lib.safetensors")
    widened = {"f16": np.float32, "u8": np.int32}
    for k, a in arrays.items():
        assert back[k].dtype == widened.get(k, a.dtype) and back[k].shape == a.shape, k
        np.testing.assert_array_equal(back[k].detach().numpy(), a)
    tj.utils.safetensors.save_file({"w": tj.ones(2, 3), "i": tj.arange(4), "h": arrays["f16"]},
                                   tmp_path / "mine.safetensors", metadata={"a": "b"})
    read = st.load_file(str(tmp_path / "mine.safetensors"))
    np.testing.assert_array_equal(read["w"], np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(read["i"], np.arange(4))
    assert read["h"].dtype == np.float16
    from safetensors import safe_open
    with safe_open(str(tmp_path / "mine.safetensors"), "np") as f:
        assert f.metadata() == {"a": "b"}


@pytest.mark.torch
def test_safetensors_from_torch_bfloat16(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    st.save_file({"w": torch.tensor([1.5, -3.0], dtype=torch.bfloat16)},
                 str(tmp_path / "bf.safetensors"))
    back = tj.load(tmp_path / "bf.safetensors")
    assert back["w"].dtype == np.float32 and back["w"].tolist() == [1.5, -3.0]


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


@pytest.mark.parametrize("header, data, match", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4,
     "cover 8 bytes of a data section of 4"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "overlaps"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8,
     "need 12"),
    ({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0",
     "dtype 'F8_E4M3'"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "code": "x"}}, b"\0" * 4,
     "malformed"),
    ({"a": {"dtype": "U64", "shape": [1], "data_offsets": [0, 8]}}, b"\xff" * 8,
     "over int64's range"),
])
def test_damaged_safetensors_files_are_refused(tmp_path, header, data, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_safetensors_bytes(header, data))
    with pytest.raises(tj.CheckpointError, match=match):
        tj.load(path)
    with pytest.raises(tj.CheckpointError, match="bad.safetensors"):
        tj.load(path)


# ------------------------------------------------------------------------------ the example

@pytest.mark.parametrize("mode", ["eager", pytest.param("traced", marks=pytest.mark.slow)])
def test_digits_example_resumes_from_its_checkpoint_exactly(tmp_path, mode):
    from .test_examples import load_example
    digits = load_example("digits_dataloader")
    dataset = digits.build_dataset()
    if dataset is None:
        pytest.skip("scikit-learn is not installed")
    kw = dict(mode=mode, batch=256, lr=0.05)
    whole = digits.train(dataset, epochs=3, **kw)
    ckpt = str(tmp_path / "digits.tj")
    digits.train(dataset, epochs=1, checkpoint=ckpt, **kw)  # stopped after one epoch
    assert tj.load(ckpt)["epoch"] == 1
    resumed = digits.train(dataset, epochs=3, checkpoint=ckpt, **kw)
    np.testing.assert_allclose(resumed["losses"], whole["losses"], rtol=1e-6)
    assert resumed["accuracy"] == whole["accuracy"] and tj.load(ckpt)["epoch"] == 3
