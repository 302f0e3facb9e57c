"""tracejit.datasets: .npz, .npy and .csv files into TensorDatasets, never unpickling."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.datasets import load_csv, load_npy, load_npz
from tracejit.utils.data import DataLoader, TensorDataset


def test_load_npz_keeps_the_saved_order_and_dtypes(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_npz(tmp_path / "d.npz")
    assert isinstance(ds, TensorDataset) and len(ds) == 4
    xi, yi = ds[2]
    assert xi.tolist() == [6.0, 7.0, 8.0] and yi.item() == 0
    assert ds.tensors[0].dtype == tj.float32 and ds.tensors[1].dtype == tj.int64
    swapped = load_npz(tmp_path / "d.npz", keys=["y", "x"])
    assert swapped[0][0].item() == 0 and swapped[0][1].shape == (3,)
    with pytest.raises(KeyError, match="has no arrays \\['z'\\]"):
        load_npz(tmp_path / "d.npz", keys=["z"])
    batches = list(DataLoader(ds, batch_size=3))
    assert batches[0][0].shape == (3, 3)


def test_load_npz_widens_dtypes_tracejit_lacks(tmp_path):
    np.savez(tmp_path / "img.npz", x=np.full((2, 2), 255, np.uint8),
             h=np.ones((2,), np.float16), i=np.ones(2, np.int16))
    x, h, i = load_npz(tmp_path / "img.npz").tensors
    assert x.dtype == tj.int64 and x[0, 0].item() == 255
    assert h.dtype == tj.float32 and i.dtype == tj.int64


def test_load_refuses_pickled_objects_and_ragged_arrays(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npy(tmp_path / "obj.npy")
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(ValueError, match="share their first dimension"):
        load_npz(tmp_path / "bad.npz")


def test_load_npy_one_file_per_tensor(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((5, 2), np.float64))
    np.save(tmp_path / "y.npy", np.arange(5))
    ds = load_npy(tmp_path / "x.npy", tmp_path / "y.npy")
    assert len(ds) == 5 and ds[4][1].item() == 4 and ds.tensors[0].dtype == tj.float64
    mapped = load_npy(tmp_path / "x.npy", mmap_mode="r")
    assert mapped[0][0].tolist() == [1.0, 1.0]


def test_load_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n3,4.5,1\n5,6,2\n")
    x, y = load_csv(path).tensors  # the last column by default
    assert x.shape == (3, 2) and x.dtype == tj.float32 and x[1, 1].item() == 4.5
    assert y.dtype == tj.int64 and y.tolist() == [0, 1, 2]
    x, y = load_csv(path, target_column="a").tensors
    assert y.tolist() == [1, 3, 5] and x[:, 1].tolist() == [0.0, 1.0, 2.0]
    x, y = load_csv(path, target_column=1).tensors
    assert y.dtype == tj.float32 and y.tolist() == [2.0, 4.5, 6.0]
    (only,) = load_csv(path, target_column=None).tensors
    assert only.shape == (3, 3)
    semi = tmp_path / "s.csv"
    semi.write_text("1;2\n3;4\n")
    x, y = load_csv(semi, delimiter=";", header=False, target_column=0).tensors
    assert y.tolist() == [1, 3] and x.tolist() == [[2.0], [4.0]]
    with pytest.raises(KeyError, match="no column 'z'"):
        load_csv(path, target_column="z")
    with pytest.raises(IndexError, match="out of range"):
        load_csv(path, target_column=5)
    with pytest.raises(ValueError, match="needs header=True"):
        load_csv(semi, header=False, delimiter=";", target_column="a")
