"""``python -m tracejit show|run|dot|svg|bench``, run as subprocesses on exported files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tracejit as tj

from .helpers import batch, mlp, train_step


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tracejit", *map(str, args)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = mlp()
    x, y = batch()
    tj.export(model, x).save(d / "mlp.tjit")
    want = model(x)._data.copy()  # before the training step's export updates the model
    # NOTE: the same entries, names and shapes as tests/export/test_export.py: generated source
    # names its inputs, so these reuse the kernels compiled there (the session's cache)
    tj.export({"train_step": (train_step(model), (x, y))}).save(d / "train.tjit")
    np.save(d / "x.npy", x._data)
    np.save(d / "y.npy", y._data)
    return d, want, x


def test_show(files):
    d, _, _ = files
    out = cli("show", d / "train.tjit")
    assert out.returncode == 0, out.stderr
    for text in ("tracejit export v1", "weights: 11 tensors", "group0.lr: f64[]",
                 "entry train_step",
                 "runs its own backward", "x: f32[4,8]  argument 0", "Linear attributes ==",
                 "= matmul", "mutation of"):
        assert text in out.stdout, text
    assert "fused[" in cli("show", d / "mlp.tjit", "--fused").stdout


def test_run_matches_the_model(files, tmp_path):
    d, want, x = files
    out = cli("run", d / "mlp.tjit", "--input", d / "x.npy", "--output", tmp_path / "o.npz")
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o.npz")["out0"], want)
    out = cli("run", d / "train.tjit", "--entry", "train_step", "--input", d / "x.npy",
              "--input", d / "y.npy")
    assert out.returncode == 0 and out.stdout.startswith("out0: f32[]"), out.stderr
    bad = cli("run", d / "train.tjit", "--input", d / "x.npy")
    assert bad.returncode == 2 and "takes 2 tensor arguments" in bad.stderr


def test_dot_has_kernels_as_clusters(files):
    d, _, _ = files
    out = cli("dot", d / "mlp.tjit")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("digraph tracejit {") and "subgraph cluster_" in out.stdout


def test_svg(files, tmp_path):
    d, _, _ = files
    if shutil.which("dot") is None:
        out = cli("svg", d / "mlp.tjit", "-o", tmp_path / "g.svg")
        assert out.returncode == 3 and "Graphviz" in out.stderr
    else:
        out = cli("svg", d / "mlp.tjit", "-o", tmp_path / "g.svg")
        assert out.returncode == 0, out.stderr
        assert "<svg" in (tmp_path / "g.svg").read_text()
    # without dot on PATH the message is clear either way
    out = cli("svg", d / "mlp.tjit", "-o", tmp_path / "h.svg", env={"PATH": ""})
    assert out.returncode == 3 and "not on PATH" in out.stderr


def test_bench(files):
    d, _, _ = files
    out = cli("bench", d / "train.tjit", "--entry", "train_step", "--repeat", "3")
    assert out.returncode == 0, out.stderr
    assert "median" in out.stdout and "over 3 calls" in out.stdout


def test_damaged_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.tjit").write_bytes(b"PK\x03\x04garbage")
    out = cli("show", tmp_path / "bad.tjit")
    assert out.returncode == 2 and "not a tracejit export" in out.stderr


def test_existing_commands_remain():
    assert cli("cache", "info").returncode == 0


def test_graph_to_svg(monkeypatch):
    g = tj.trace(lambda x: x + 1).graph(tj.zeros(2))
    if shutil.which("dot") is None:
        with pytest.raises(RuntimeError, match="Graphviz"):
            g.to_svg()
    else:
        assert "<svg" in g.to_svg()
