"""SummaryWriter writes event files that TensorBoard's own reader (EventAccumulator) reads back."""

import os

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.utils.tensorboard import SummaryWriter

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")


def _read(path):
    acc = event_accumulator.EventAccumulator(
        str(path), size_guidance={event_accumulator.HISTOGRAMS: 0,
                                  event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0,
                                  event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


@pytest.fixture(params=["tensorboardX", "tensorboard"])
def writer_backend(request, monkeypatch):
    """Both writers: tensorboardX's (preferred) and tensorboard's own (tensorboardX hidden)."""
    pytest.importorskip(request.param)
    if request.param == "tensorboard":
        import sys
        for name in [m for m in sys.modules if m.split(".")[0] == "tensorboardX"]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails
    return request.param


def test_scalars_histograms_text_image(tmp_path, writer_backend):
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    with SummaryWriter(tmp_path) as w:
        assert type(w._file_writer()).__module__.split(".")[0] == writer_backend
        for step in range(5):
            w.add_scalar("loss", tj.tensor(1.0 / (step + 1)), step)
        w.add_scalar("lr", 0.1, 7, walltime=123.0)
        w.add_histogram("weights", tj.tensor(values), 3)
        w.add_histogram("counts", np.arange(10), 4, bins=5)
        w.add_text("note", "**hello**", 0)
        w.add_image("img", np.linspace(0, 1, 3 * 4 * 5).reshape(3, 4, 5), 1)
    acc = _read(tmp_path)
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == list(range(5))
    np.testing.assert_allclose([e.value for e in loss], [1 / (s + 1) for s in range(5)],
                               rtol=1e-6)
    (lr,) = acc.Scalars("lr")
    assert (lr.step, lr.wall_time) == (7, 123.0)
    (h,) = acc.Histograms("weights")
    hv = h.histogram_value
    assert h.step == 3 and hv.num == 1000
    assert hv.min == pytest.approx(values.min()) and hv.max == pytest.approx(values.max())
    assert hv.sum == pytest.approx(float(values.astype(np.float64).sum()), rel=1e-5, abs=1e-4)
    assert sum(hv.bucket) == 1000
    assert list(hv.bucket_limit) == sorted(hv.bucket_limit)
    (c,) = acc.Histograms("counts")
    assert list(c.histogram_value.bucket) == [2, 2, 2, 2, 2]
    (text,) = acc.Tensors("note/text_summary")
    assert text.tensor_proto.string_val[0] == b"**hello**"
    (img,) = acc.Images("img")
    assert (img.height, img.width) == (4, 5)
    assert img.encoded_image_string.startswith(b"\x89PNG")


def test_add_scalars_writes_one_run_per_curve(tmp_path):
    with SummaryWriter(tmp_path) as w:
        for step in range(3):
            w.add_scalars("loss", {"train": 1.0 * step, "val": 2.0 * step}, step)
    for name, scale in (("train", 1.0), ("val", 2.0)):
        run = tmp_path / f"loss_{name}"
        assert run.is_dir()
        events = _read(run).Scalars("loss")
        assert [e.value for e in events] == [scale * s for s in range(3)]


def test_add_graph_from_the_traced_ir(tmp_path, writer_backend):
    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with SummaryWriter(tmp_path) as w:
        w.add_graph(model, tj.randn(5, 4))
    graph = _read(tmp_path).Graph()
    ops = [n.op for n in graph.node]
    assert ops.count("input") == 5  # x and the four parameters
    assert "matmul" in ops and "output" in ops
    by_name = {n.name: n for n in graph.node}
    out = next(n for n in graph.node if n.op == "output")
    assert [d.size for d in out.attr["_output_shapes"].list.shape[0].dim] == [5, 2]
    for n in graph.node:  # every edge names a node of the graph
        assert all(i in by_name for i in n.input)
    assert any("test_tensorboard.py" in n.attr["source"].s.decode() for n in graph.node
               if "source" in n.attr)


def test_errors(tmp_path):
    w = SummaryWriter(tmp_path)
    with pytest.raises(ValueError, match="scalar value is needed, got shape \\(3,\\)"):
        w.add_scalar("x", tj.ones(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        w.add_histogram("h", [1.0, float("nan")])
    with pytest.raises(ValueError, match="input_to_model"):
        w.add_graph(nn.Linear(2, 2))
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.add_scalars("a", {"b": 1.0})


def test_default_log_dir_and_purge_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = SummaryWriter(comment="_lr0.1", purge_step=2)
    w.add_scalar("loss", 1.0, 2)
    w.close()
    assert w.get_logdir().startswith("runs" + os.sep) and w.get_logdir().endswith("_lr0.1")
    assert [e.step for e in _read(w.get_logdir()).Scalars("loss")] == [2]


def test_without_a_writer_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    import sys
    for name in [m for m in sys.modules if m.split(".")[0] in ("tensorboardX", "tensorboard")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'tracejit\[watch\]'"):
        SummaryWriter(tmp_path)
