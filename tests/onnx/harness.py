"""Export a function, check the model, run it in onnxruntime and compare with tracejit."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

import tracejit as tj

TOL = {np.dtype("float16"): (1e-3, 1e-3), np.dtype("float32"): (1e-4, 1e-5),
       np.dtype("float64"): (1e-10, 1e-12)}


def session(model) -> ort.InferenceSession:
    onnx.checker.check_model(model, full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # the test machines are small and shared
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def run(sess, arrays: list) -> list:
    feed = {i.name: np.array(a, order="C") for i, a in zip(sess.get_inputs(), arrays)}
    return sess.run(None, feed)


def leaves(obj) -> list:
    if isinstance(obj, (tuple, list)):
        return [x for o in obj for x in leaves(o)]
    if isinstance(obj, dict):
        return [x for o in obj.values() for x in leaves(o)]
    return [obj]


def assert_close(got, want, what: str) -> None:
    want = want._data if isinstance(want, tj.Tensor) else np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != tracejit {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != tracejit {want.dtype}"
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    rtol, atol = TOL[want.dtype]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
    # NaN positions and infinities with their signs must agree exactly (allclose allows none)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN positions differ"
