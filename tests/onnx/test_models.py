"""The example models (CNN, LSTM, an MLP) and the semantic traps: exported with a dynamic batch,
checked, run in onnxruntime at two batch sizes and compared with tracejit; NaN inputs,
negative operands of // and %, size-0 and 0-d tensors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import tracejit as tj  # noqa: E402
from tracejit import nn  # noqa: E402
from tracejit.nn import functional as F  # noqa: E402

from .harness import assert_close, run, session  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAN, INF = float("nan"), float("inf")


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"tracejit_onnx_example_{name}",
                                                  EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_model(model, example_shape, batches=(3, 5), seed=0):
    """Export with a dynamic batch; run at each batch size; compare with eager tracejit."""
    x = tj.from_numpy(np.random.default_rng(seed).standard_normal(example_shape)
                      .astype(np.float32))
    exported = tj.onnx.export(model, x, dynamic={"x": {0: "batch"}})
    sess = session(exported)
    assert sess.get_inputs()[0].shape[0] == "batch"
    for n in batches:
        a = np.random.default_rng(n).standard_normal((n,) + tuple(example_shape[1:]))
        a = a.astype(np.float32)
        with tj.eager():
            want = model(tj.from_numpy(a))
        assert_close(run(sess, [a])[0], want, f"batch {n}")
    return exported


def _ops(model) -> set:
    return {n.op_type for n in model.graph.node}


def test_mlp():
    tj.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 32),
                        nn.GELU(), nn.Linear(32, 5), nn.LogSoftmax(dim=-1))
    mlp.eval()
    exported = _check_model(mlp, (4, 20))
    names = {i.name for i in exported.graph.initializer}
    assert {"self.0.weight", "self.0.bias", "self.5.weight"} <= names


def test_cnn_example_exports_conv():
    cnn = _example("cnn").build_model(0)
    exported = _check_model(cnn, (2, 3, 32, 32), batches=(1, 3))
    assert sum(n.op_type == "Conv" for n in exported.graph.node) == 2
    assert "MatMul" in _ops(exported)  # the Linear layers


def test_lstm_example():
    lstm = _example("lstm").build_model(0, hidden=16, layers=2)
    _check_model(lstm, (2, 20, 10), batches=(2, 4))


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1), dict(padding="same", dilation=2),
                                    dict(groups=2), dict(padding="same")])
def test_conv2d_variants_become_conv(kwargs):
    w = tj.randn(4, 2 if kwargs.get("groups") else 4, 3, 3)
    b = tj.randn(4)
    fn = lambda x: F.conv2d(x, w, b, **kwargs)  # noqa: E731
    x = tj.randn(2, 4, 7, 6)
    exported = tj.onnx.export(fn, x)
    assert "Conv" in _ops(exported) and "Gather" not in _ops(exported)
    with tj.eager():
        want = fn(x)
    assert_close(run(session(exported), [x._data])[0], want, str(kwargs))


def test_pooling_exports_exactly_with_nan_and_inf():
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, 1, 1], x[0, 1, 4, 4], x[0, 1, 0, 0] = NAN, INF, -INF
    fn = lambda t: (F.max_pool2d(t, 2), F.avg_pool2d(t, 3, 1, padding=1),  # noqa: E731
                    F.max_pool2d(t, 3, stride=2, padding=1))
    sess = session(tj.onnx.export(fn, tj.from_numpy(x)))
    with tj.eager():
        want = fn(tj.from_numpy(x))
    for i, (g, w) in enumerate(zip(run(sess, [x]), want)):
        assert_close(g, w, f"pool {i}")


def test_max_pool_gradient_exports():
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 6)).astype(np.float32)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = 2.0  # a tie: the first tap takes the gradient
    x[1, 1, 3, 3] = NAN

    def fn(t):
        return tuple(tj.grad(lambda t, kw=kw: (F.max_pool2d(t, **kw) ** 2).sum())(t)
                     for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)))
    exported = tj.onnx.export(fn, tj.from_numpy(x))
    assert "ScatterElements" in _ops(exported)
    sess = session(exported)
    with tj.eager():
        want = fn(tj.from_numpy(x))
    for i, (g, w) in enumerate(zip(run(sess, [x]), want)):
        assert_close(g, w.detach(), f"gradient {i}")


def _same(fn, *arrays):
    sess = session(tj.onnx.export(fn, *[tj.from_numpy(a) for a in arrays]))
    with tj.eager():
        want = fn(*[tj.from_numpy(a) for a in arrays])
    want = want if isinstance(want, tuple) else (want,)
    got = run(sess, list(arrays))
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, f"output {i}")
        if w.dtype.kind == "f":  # signs of zeros and infinities too (NaN's sign is not kept)
            keep = ~np.isnan(w._data)
            np.testing.assert_array_equal(np.signbit(g[keep]), np.signbit(w._data[keep]),
                                          f"sign {i}")


SPECIALS = np.array([NAN, -INF, -3.5, -1.0, -0.0, 0.0, 0.1, 1.0, 2.5, INF], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_floordiv_and_remainder_follow_numpy(dtype):
    a = np.repeat(SPECIALS, len(SPECIALS)).astype(dtype)
    b = np.tile(SPECIALS, len(SPECIALS)).astype(dtype)
    _same(lambda x, y: (x // y, x % y, x // 0.1, 1.0 % y), a, b)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_floordiv_and_remainder_floor(dtype):
    a = np.repeat(np.arange(-7, 8), 6).astype(dtype)
    b = np.tile(np.array([-3, -2, -1, 1, 2, 5]), 15).astype(dtype)
    _same(lambda x, y: (x // y, x % y, x // 2, x % -3), a, b)


def test_nan_propagates_like_tracejit():
    x = np.array([[1.0, NAN, 3.0], [-2.0, 0.5, NAN], [4.0, -1.0, 2.0]], np.float32)
    _same(lambda t: (t.amax(1), t.amin(0), t.argmax(1), t.argmin(0), t.argmax(), t.relu(),
                     t.sign(), t.clamp(0.0, 2.0), tj.maximum(t, t.flip(0)),
                     tj.minimum(t, 1.0), t.sum(1), t.max(), t.softmax(1), t.isnan(),
                     t.isfinite(), t.cumsum(1)), x)


def test_precise_near_zero():
    x = np.array([1e-8, -1e-7, 1e-30, 0.0, -0.0, 0.5, -0.9, 20.0, INF, -INF, NAN], np.float32)
    _same(lambda t: (t.log1p(), t.expm1()), x)
    _same(lambda t: (t.sinh(), t.cosh(), t.tan(), t.log1p(), t.expm1()), x.astype(np.float64))


def test_size_zero_and_zero_d():
    _same(lambda t, s: (t.sum(0), t * s, t.reshape(3, 0), (t + 1).permute(1, 0), s.exp(),
                        s.sum(), tj.cat([t, t], 0), s + t.sum()),
          np.zeros((0, 3), np.float32), np.array(2.5, np.float32))


def test_integer_promotion_casts():
    a = np.array([1, -2, 3], np.int32)
    b = np.array([0.5, 2.0, -1.0], np.float32)
    _same(lambda x, y: (x + y, x * 2.5, x / 2, x > y, (x + 1).sum(), x.float().mean(),
                        (x > 0).sum()), a, b)


def test_indexing_and_scatter():
    x = np.arange(36, dtype=np.float32).reshape(3, 3, 4)
    i = np.array([2, 0, -1], np.int64)

    def fn(t, idx):
        y = t.clone()
        y[:, idx] = -1.0
        y[0, 1:, ::2] = y[0, 1:, ::2] + 10.0
        z = t.clone()
        z[idx, idx] = 5.0
        return (t[:, idx], t[..., idx], t[idx, :, idx], t[1, None, ::-2], y, z,
                t.gather(2, (idx.abs() % 4).reshape(1, 1, 3).expand(3, 3, 3)),
                t.index_select(1, idx.abs()))

    _same(fn, x, i)


def test_dynamic_batch_with_a_constant_of_the_batch_size():
    def fn(x):
        h = tj.zeros(x.shape[0], 4)  # a constant made at the traced size follows the batch
        return x.reshape(x.shape[0], -1) @ tj.ones(6, 4) + h

    sess = session(tj.onnx.export(fn, tj.ones(3, 2, 3), dynamic={"x": {0: "batch"}}))
    for n in (1, 4, 7):
        a = np.random.default_rng(n).standard_normal((n, 2, 3)).astype(np.float32)
        with tj.eager():
            want = fn(tj.from_numpy(a))
        assert_close(run(sess, [a])[0], want, f"batch {n}")


def test_a_graph_that_depends_on_the_batch_size_is_refused():
    def fn(x):
        return x[: x.shape[0] - 1]

    with pytest.raises(tj.TraceError, match="changes with the size of dynamic axis 'batch'"):
        tj.onnx.export(fn, tj.ones(4, 2), dynamic={"x": {0: "batch"}})


# programs the fuzz test's onnxruntime row found (tests/fuzz/executors.py)
def _fuzz_regressions():
    from ..fuzz.program import In, P, S, V
    return [
        P(inputs=[In((0, 0), 'int32', 'o', [])],
          steps=[S('logical_and', V(0), -3), S('.clone', V(0)),
                 S('tensor', value=np.array([], dtype='int32')),
                 S('.__setitem__', V(2), (), V(3)), S('neg', V(4))],
          outputs=[V(5)]),
        P(inputs=[In((3, 0), 'int32', 'c', [[], [], []])],
          steps=[S('tensor', value=np.array([1, 2, 0, 0, -2], dtype='int64')),
                 S('.index_put', V(0), (V(1),), False, accumulate=True),
                 S('pad', V(2), pad=(2, 1, 0, 0), value=0), S('.clone', V(3)),
                 S('.mul_', V(4), True)],
          outputs=[V(5), V(5)]),
    ]


@pytest.mark.parametrize("k", range(2))
def test_fuzz_regressions(k):
    from ..fuzz.executors import check_all, run_onnxruntime

    check_all(_fuzz_regressions()[k], {"onnxruntime": run_onnxruntime})


def test_dynamic_batch_with_nan_attributes():
    fn = lambda x: tj.where(F.pad(x, (1, 1), value=NAN).isnan(), 0.5, x.sum()) * 2  # noqa: E731
    sess = session(tj.onnx.export(fn, tj.ones(2, 3), dynamic={"x": {0: "n"}}))
    for n in (1, 5):
        a = np.random.default_rng(n).standard_normal((n, 3)).astype(np.float32)
        with tj.eager():
            want = fn(tj.from_numpy(a))
        assert_close(run(sess, [a])[0], want, f"batch {n}")


def test_broadcasts_to_size_zero():
    # onnxruntime's optimizer keeps (1, 1) where an Expand makes it (1, 0): export avoids it
    x = np.array([[-0.0]], np.float32)
    _same(lambda t: (t.expand(1, 0), t.expand(3, 0) + 1, t.expand(0, 1)), x)

    def put(t, v):
        y = t.clone()
        y[::-1] += v
        return y

    _same(put, np.zeros((1, 0), np.int32), np.ones((1, 1), np.int64))


def test_a_dynamic_sequence_length_of_an_unrolled_lstm_is_refused():
    lstm = _example("lstm").build_model(0, hidden=4, layers=1)
    x = tj.randn(2, 5, 10)
    with pytest.raises(tj.TraceError, match="dynamic axis 'seq'"):
        tj.onnx.export(lstm, x, dynamic={"x": {0: "batch", 1: "seq"}})
