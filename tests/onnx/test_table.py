"""The op table and the export's edges: every op row either exports or is refused with a
reason; errors name the op and the user's line; the extra is optional."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import tracejit as tj  # noqa: E402
from tracejit import nn, ops  # noqa: E402
from tracejit.codegen import onnx as render  # noqa: E402

from .harness import run, session  # noqa: E402


def test_every_op_row_is_mapped_or_refused():
    names = set(ops.OPS)
    assert not set(render.RULES) & set(render.REFUSED)
    missing = sorted(names - set(render.RULES) - set(render.REFUSED))
    assert not missing, f"op rows with neither an ONNX rule nor a reason: {missing}"
    unknown = sorted((set(render.RULES) | set(render.REFUSED)) - names)
    assert not unknown, f"rules for ops the table does not have: {unknown}"
    assert all(isinstance(r, str) and r for r in render.REFUSED.values())


def test_import_tracejit_does_not_import_onnx():
    code = "import sys, tracejit; tracejit.onnx; print('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(ImportError, match=r"pip install 'tracejit\[onnx\]'"):
        tj.onnx.export(lambda x: x + 1, tj.ones(2))


def test_random_ops_are_refused_with_the_users_line():
    def noisy(x):
        return x + tj.rand(3)  # the line the error names

    with pytest.raises(render.OnnxExportError, match=r"op 'uniform' draws random.*eval.*"
                                                     r"test_table.py:\d+"):
        tj.onnx.export(noisy, tj.ones(3))


def test_dropout_in_training_mode_is_refused_and_eval_mode_exports():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.ReLU())
    x = tj.randn(2, 3)
    with pytest.raises(render.OnnxExportError, match="eval"):
        tj.onnx.export(model, x)
    model.eval()
    sess = session(tj.onnx.export(model, x))
    with tj.eager():
        want = model(x)._data
    np.testing.assert_allclose(run(sess, [x._data])[0], want, rtol=1e-5, atol=1e-6)


def test_float64_erf_is_refused():
    with pytest.raises(render.OnnxExportError, match="'erf' of float64"):
        tj.onnx.export(lambda x: x.erf(), tj.ones(2, dtype=tj.float64))


@pytest.mark.parametrize("opset", [render.MIN_OPSET, 20, render.MAX_OPSET])
def test_opsets_from_18_to_the_newest_run(opset):
    model = tj.onnx.export(lambda x, y: (x // y, x % y, x.amax(0)), tj.tensor([7.0, -7.0]),
                           tj.tensor([2.0, 2.0]), opset=opset)
    assert model.opset_import[0].version == opset
    got = run(session(model), [np.float32([7, -7]), np.float32([2, 2])])
    np.testing.assert_array_equal(got[0], [3, -4])
    np.testing.assert_array_equal(got[1], [1, 1])


@pytest.mark.parametrize("opset", [17, render.MAX_OPSET + 1])
def test_opsets_outside_the_range_are_refused(opset):
    with pytest.raises(ValueError, match="opset must be in"):
        tj.onnx.export(lambda x: x + 1, tj.ones(2), opset=opset)


def test_names_initializers_and_file(tmp_path):
    import onnx

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    path = tmp_path / "mlp.onnx"
    tj.onnx.export(model, tj.randn(2, 3), path=path, input_names=["features"],
                   output_names=["logits"])
    loaded = onnx.load(str(path))
    assert [i.name for i in loaded.graph.input] == ["features"]
    assert [o.name for o in loaded.graph.output] == ["logits"]
    inits = {i.name for i in loaded.graph.initializer}
    assert {"self.0.weight", "self.0.bias", "self.2.weight", "self.2.bias"} <= inits


def test_unknown_dynamic_name_is_an_error():
    with pytest.raises(ValueError, match="dynamic names"):
        tj.onnx.export(lambda x: x + 1, tj.ones(2), dynamic={"y": {0: "batch"}})


def test_results_that_are_none_are_left_out_and_none_at_all_is_an_error():
    def setter(x):
        x[0] = 1.0

    with pytest.raises(tj.TraceError, match="returns no tensors"):
        tj.onnx.export(setter, tj.zeros(3))


def test_docs_name_every_op_row():
    text = (Path(__file__).resolve().parents[2] / "docs" / "onnx.md").read_text()
    missing = [n for n in ops.OPS if f"`{n}`" not in text]
    assert not missing, f"docs/onnx.md does not say how {missing} export"


def test_an_already_traced_function_or_module_exports():
    @tj.trace
    def f(x, scale):
        return (x * scale).tanh()

    model = tj.trace(nn.Linear(3, 2))
    x = tj.randn(4, 3)
    got = run(session(tj.onnx.export(f, x, 2.0)), [x._data])[0]
    np.testing.assert_allclose(got, np.tanh(x._data * 2.0), rtol=1e-5, atol=1e-6)
    exported = tj.onnx.export(model, x)
    assert [i.name for i in exported.graph.input] == ["x"]
    with tj.eager():
        want = model.module(x)._data
    np.testing.assert_allclose(run(session(exported), [x._data])[0], want, rtol=1e-5, atol=1e-6)
