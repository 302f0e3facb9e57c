"""Native lowering of the convolution building blocks: unfold / fold kernels, batched matmul
(np.dot per batch element), argmax / gather / scatter_add kernels, and a CNN training step that
compiles to one njit entry. Compiled == eager == interpreted throughout; shapes stay small and
graphs few, since every distinct graph costs a numba compile."""

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit import nn, optim
from tracejit.codegen import cpu

from ..conftest import noncontig
from .test_cpu import check

JIT_ENTRY = "@numba.njit(cache=True, error_model='numpy')\ndef entry("


def _data(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _window(**attrs):
    """unfold of x and fold of cols with the same window attrs, in one graph."""
    def f(x, cols):
        return (F.unfold(x, **attrs), F.fold(cols, output_size=x.shape[2:], **attrs))
    return f


@pytest.mark.parametrize("shape, attrs", [
    # large enough for the parallel variant (N * C * OH * OW * kh * kw >= PARALLEL_MIN = 2**15)
    ((4, 4, 16, 16), dict(kernel_size=3, padding=1)),
    ((2, 3, 9, 11), dict(kernel_size=3, dilation=2, padding=2, stride=2)),
    ((1, 2, 7, 8), dict(kernel_size=(2, 3), dilation=(1, 2), padding=(0, 1), stride=(2, 1))),
    ((2, 1, 5, 5), dict(kernel_size=2, stride=3)),  # windows skip the last row and column
], ids=["conv3x3_parallel", "dilated_strided", "asymmetric", "gaps"])
def test_unfold_fold_kernels(shape, attrs, monkeypatch):
    monkeypatch.setattr(cpu, "PARALLEL_MIN", 1 << 15)
    x = tj.from_numpy(noncontig(_data(*shape)))  # kernels read through strides
    cols_shape = tuple(F.unfold(x, **attrs).shape)
    cols = tj.from_numpy(_data(*cols_shape, seed=1))
    f = check(_window(**attrs), x, cols, rtol=1e-5, atol=1e-5)
    src = f.source(x, cols)
    assert "def unfold" in src and "def fold" in src and "_fallback" not in src
    assert ("numba.prange" in src) == (shape == (4, 4, 16, 16))


def test_max_and_avg_pool_pad_with_their_identity():
    # max_pool2d's padding taps never win (its kernel starts each window from -inf and skips
    # them); avg_pool2d pads with 0 through unfold
    x = tj.from_numpy(_data(2, 3, 7, 7))
    x.numpy()[0, 0, 0, :3] = np.nan  # as torch: a window holding a NaN is NaN
    f = check(lambda x: (F.max_pool2d(x, 3, stride=2, padding=1),
                         F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)), x)
    src = f.source(x)
    assert "best = np.float32(-np.inf)" in src and "# a padding tap" in src
    assert "def max_pool2d" in src and "def unfold" in src and "def gather" not in src


def test_identical_window_kernels_are_generated_once():
    x = tj.randn(2, 3, 6, 6)
    f = check(lambda x: F.unfold(x, 3, padding=1) + F.unfold(x * 2, 3, padding=1), x)
    assert f.source(x).count("def unfold") == 1


MATMUL_SHAPES = [
    ((4, 5), (3, 5, 2)),            # 2-d @ 3-d: conv2d's weight @ cols
    ((3, 4, 5), (5, 2)),            # 3-d @ 2-d
    ((3, 4, 5), (3, 5, 2)),         # 3-d @ 3-d
    ((2, 1, 4, 5), (1, 3, 5, 2)),   # 4-d, broadcast batch dims
    ((1, 4, 5), (1, 5, 1)),         # size-1 batch and size-1 matrix dims
    ((0, 4, 5), (5, 2)),            # empty batch
    ((2, 3, 0), (2, 0, 4)),         # empty inner dim: zeros
]


def _matmuls(*xs):
    pairs = list(zip(xs[::2], xs[1::2]))
    return tuple(a @ b for a, b in pairs) + (pairs[2][0].mT.mT @ pairs[2][1].mT.mT,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_matmul(dtype):
    args = [tj.from_numpy(_data(*s, dtype=dtype, seed=k)) for k, pair in enumerate(MATMUL_SHAPES)
            for s in pair]
    f = check(_matmuls, *args, rtol=1e-5, atol=1e-5)
    src = f.source(*args)
    if cpu._HAVE_SCIPY:
        assert JIT_ENTRY in src and "_fallback" not in src
        assert "for i0 in range(" in src and "np.dot(" in src
    else:
        assert "_fallback" in src


def test_batched_matmul_of_transposed_operands_reads_them_as_F_layout():
    a, b = tj.randn(3, 5, 4), tj.randn(3, 2, 5)
    f = check(lambda a, b: (a.mT @ b.mT, a.mT @ b.mT[0]), a, b, rtol=1e-5, atol=1e-5)
    if cpu._HAVE_SCIPY:  # src[i].T is 'F' for BLAS; a slice of np.transpose(...) would copy
        assert "np.dot(in0[i0].T, in1[i0].T," in f.source(a, b)


def test_integer_batched_matmul_stays_on_numpy():
    a, b = tj.randint(-3, 3, (2, 3, 4)), tj.randint(-3, 3, (4, 2))
    f = check(lambda a, b: a @ b, a, b)
    assert "_fallback" in f.source(a, b)


def test_arg_reductions_gather_and_scatter_add():
    x = tj.from_numpy(_data(3, 5, 4))
    x.numpy()[1, 2, 3] = np.nan
    i = tj.randint(-4, 4, (3, 5, 4))
    idx = tj.tensor([[0, 2], [1, 1], [4, 0]])

    def f(x, i, idx):
        return (x.argmax(1), x.argmin(-1, keepdim=True), i.argmax(0),
                x.gather(1, idx.unsqueeze(-1)),
                tj.zeros(3, 5).scatter_add(1, idx, x[:, :2, 0]),
                tj.zeros(6, 2).scatter_add(0, idx, x[:, :2, 1]))

    f_c = check(f, x, i, idx)
    src = f_c.source(x, i, idx)
    assert "_fallback" not in src and "def scatter_add" in src and "def argmin" in src


def test_gather_out_of_bounds_raises():
    f = tj.trace(lambda x, idx: x.gather(0, idx), backend="cpu")
    x = tj.randn(4)
    f(x, tj.tensor([0, 3]))
    f(x, tj.tensor([0, 3]))
    with pytest.raises(IndexError, match="out of bounds"):
        f(x, tj.tensor([0, 4]))


def test_conv2d_forward_and_gradients():
    x, w, b = tj.randn(2, 3, 6, 7), tj.randn(4, 3, 3, 3), tj.randn(4)

    def loss(x, w, b):
        return (F.conv2d(x, w, b, padding=1, stride=(1, 2)).relu() ** 2).mean()

    f = tj.value_and_grad(loss, argnums=(0, 1, 2), backend="cpu")
    f(x, w, b)
    value, grads = f(x, w, b)
    xs = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    want = loss(*xs)
    want.backward()
    np.testing.assert_allclose(value.item(), want.item(), rtol=1e-5)
    for g, t in zip(grads, xs):
        np.testing.assert_allclose(g.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5)
    src = f.source(x, w, b)
    assert "def unfold" in src and "def fold" in src
    assert (JIT_ENTRY in src) == cpu._HAVE_SCIPY


def _cnn_step(compiled: bool, steps: int = 3):
    """A tiny examples/cnn.py: conv-relu-maxpool-linear, cross-entropy, backward, SGD."""
    tj.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    # NOTE: no momentum: its buffers appear on the first step, a second graph to compile
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    x = tj.from_numpy(_data(6, 3, 8, 8))
    y = tj.tensor(np.random.default_rng(1).integers(0, 5, 6))

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    run = tj.trace(step, backend="cpu") if compiled else step
    losses = [run(x, y).item() for _ in range(steps)]
    return losses, [p.detach().numpy().copy() for p in model.parameters()], run, (x, y)


def _check_cnn_step():
    want_losses, want_params, _, _ = _cnn_step(compiled=False)
    losses, params, run, args = _cnn_step(compiled=True)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for p, w in zip(params, want_params):
        np.testing.assert_allclose(p, w, rtol=1e-4, atol=1e-6)
    return run.source(*args)


@pytest.mark.skipif(not cpu._HAVE_SCIPY, reason="numba's np.dot needs scipy: without it matmul "
                                                "runs through numpy and the entry is Python")
def test_cnn_training_step_can_be_one_njit_entry(monkeypatch):
    # by default a graph this large gets a Python entry (JIT_ENTRY_MAX_ELEMENTS: its kernels' work
    # hides the calls); everything in it can still be compiled into one @njit entry
    monkeypatch.setattr(cpu, "JIT_ENTRY_MAX_ELEMENTS", 1 << 40)
    src = _check_cnn_step()
    assert JIT_ENTRY in src and "_fallback" not in src


def test_cnn_training_step_without_scipy(monkeypatch):
    monkeypatch.setattr(cpu, "_HAVE_SCIPY", False)
    src = _check_cnn_step()
    assert JIT_ENTRY not in src and "= matmul (numpy)" in src
    # the window kernels need no BLAS
    assert "def unfold" in src and "def max_pool2d_grad" in src
