"""tracejit.nn modules against torch.nn (float64): weights are copied through numpy in both
directions, then outputs, gradients (inputs and parameters) and updated buffers must agree.
Each case builds the same module in both libraries from one ``make(lib, **dtype)`` lambda."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tracejit as tj  # noqa: E402

from ..conftest import data  # noqa: E402

pytestmark = pytest.mark.torch


def _flat(out):
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [out]


def _np(t):
    return t.detach().numpy()


def _randomize(m, lib):
    """Non-default parameter values (LayerNorm/BatchNorm start at ones and zeros)."""
    with lib.no_grad():
        for i, p in enumerate(m.parameters()):
            p.copy_(lib.tensor(data(tuple(p.shape), np.float64, seed=10 + i)))


def _pair(make, direction, randomize=False):
    """The same module in both libraries (float64), weights copied in ``direction``."""
    mt = make(torch.nn).double()
    mj = make(tj.nn).double()
    assert list(mj.state_dict()) == list(mt.state_dict())  # same keys, same order
    if randomize:
        _randomize(mt, torch) if direction == "torch->tj" else _randomize(mj, tj)
    if direction == "torch->tj":
        mj.load_state_dict({k: _np(v).copy() for k, v in mt.state_dict().items()})
    else:
        mt.load_state_dict({k: torch.from_numpy(_np(v).copy())
                            for k, v in mj.state_dict().items()})
    for (k, a), (_, b) in zip(mj.state_dict().items(), mt.state_dict().items()):
        np.testing.assert_array_equal(_np(a), _np(b), err_msg=k)
    return mj, mt


def _compare(mj, mt, arrays, grad=True, call=lambda m, *xs: m(*xs), rtol=1e-10, atol=1e-12):
    """Run both modules on the same inputs; compare outputs, then gradients of inputs and
    parameters under one random cotangent, then the state dicts (buffers included)."""
    xj = [tj.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    xt = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    outs_j, outs_t = _flat(call(mj, *xj)), _flat(call(mt, *xt))
    assert len(outs_j) == len(outs_t)
    for a, b in zip(outs_j, outs_t):
        assert tuple(a.shape) == tuple(b.shape)
        np.testing.assert_allclose(_np(a), _np(b), rtol=rtol, atol=atol)
    if grad:
        rng = np.random.default_rng(0)
        cts = [rng.standard_normal(tuple(o.shape)) for o in outs_j]
        sum((o * tj.tensor(c)).sum() for o, c in zip(outs_j, cts)).backward()
        sum((o * torch.tensor(c)).sum() for o, c in zip(outs_t, cts)).backward()
        for i, (a, b) in enumerate(zip(xj, xt)):
            if b.grad is not None:
                np.testing.assert_allclose(_np(a.grad), _np(b.grad), rtol=1e-9, atol=1e-11,
                                           err_msg=f"input {i}")
        grads_t = {k: p.grad for k, p in mt.named_parameters()}
        for k, p in mj.named_parameters():
            if grads_t[k] is None:
                assert p.grad is None or not _np(p.grad).any(), k
            else:
                np.testing.assert_allclose(_np(p.grad), _np(grads_t[k]), rtol=1e-9,
                                           atol=1e-11, err_msg=k)
    sd_t = mt.state_dict()
    for k, v in mj.state_dict().items():
        np.testing.assert_allclose(_np(v), _np(sd_t[k]), rtol=1e-12, atol=1e-14, err_msg=k)


DIRECTIONS = ["torch->tj", "tj->torch"]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_linear(direction):
    mj, mt = _pair(lambda nn: nn.Linear(3, 4), direction)
    _compare(mj, mt, [data((2, 5, 3), np.float64)])


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(stride=2, padding=1, groups=2),
    dict(stride=(1, 2), padding=(2, 0), dilation=2, bias=False),
    dict(padding="same", dilation=(1, 2)),
])
def test_conv2d(direction, kwargs):
    mj, mt = _pair(lambda nn: nn.Conv2d(2, 4, (3, 2), **kwargs), direction)
    _compare(mj, mt, [data((2, 2, 6, 5), np.float64)])


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_layer_norm(direction):
    mj, mt = _pair(lambda nn: nn.LayerNorm((2, 3)), direction, randomize=True)
    _compare(mj, mt, [data((4, 2, 3), np.float64)])


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_2d_train_then_eval(direction, momentum):
    mj, mt = _pair(lambda nn: nn.BatchNorm2d(3, momentum=momentum), direction, randomize=True)
    for seed in (1, 2):  # two training steps: running stats and num_batches_tracked move
        mt.zero_grad()
        mj.zero_grad()
        _compare(mj, mt, [data((2, 3, 3, 2), np.float64, seed=seed) * seed])
    assert mj.num_batches_tracked.item() == 2
    mj.eval()
    mt.eval()
    mt.zero_grad()
    mj.zero_grad()
    _compare(mj, mt, [data((2, 3, 3, 2), np.float64, seed=5)])


def test_batch_norm_1d_sequence_input():
    mj, mt = _pair(lambda nn: nn.BatchNorm1d(2), "torch->tj")
    _compare(mj, mt, [data((3, 2, 4), np.float64)])


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding(direction, padding_idx):
    mj, mt = _pair(lambda nn: nn.Embedding(5, 3, padding_idx=padding_idx), direction)
    _compare(mj, mt, [np.array([[0, 2, 4], [2, 2, 1]])])


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_two_layers_batch_first(direction, with_state):
    mj, mt = _pair(lambda nn: nn.LSTM(3, 4, num_layers=2, batch_first=True), direction)
    x = data((2, 5, 3), np.float64)
    if not with_state:
        _compare(mj, mt, [x])
        return
    h0, c0 = data((2, 2, 4), np.float64, seed=1), data((2, 2, 4), np.float64, seed=2)
    _compare(mj, mt, [x, h0, c0], call=lambda m, x, h, c: m(x, (h, c)))


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("kwargs", [dict(), dict(num_layers=2, bidirectional=True),
                                    dict(batch_first=True, bias=False)])
def test_gru(direction, kwargs):
    mj, mt = _pair(lambda nn: nn.GRU(3, 4, **kwargs), direction)
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    x = data((4, 2, 3), np.float64)
    h0 = data((layers, 4 if kwargs.get("batch_first") else 2, 4), np.float64, seed=1)
    _compare(mj, mt, [x, h0])


def test_lstm_bidirectional_unbatched():
    mj, mt = _pair(lambda nn: nn.LSTM(2, 3, bidirectional=True), "torch->tj")
    _compare(mj, mt, [data((4, 2), np.float64)])


@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells(cls):
    mj, mt = _pair(lambda nn: getattr(nn, cls)(3, 2), "torch->tj")
    x, h = data((4, 3), np.float64), data((4, 2), np.float64, seed=1)
    if cls == "LSTMCell":
        _compare(mj, mt, [x, h, h * 0.5], call=lambda m, x, h, c: m(x, (h, c)))
    else:
        _compare(mj, mt, [x, h])


def test_rnn_relu():
    mj, mt = _pair(lambda nn: nn.RNN(3, 2, num_layers=2, nonlinearity="relu"), "tj->torch")
    _compare(mj, mt, [data((3, 2, 3), np.float64)])


def test_model_state_dict_round_trip_through_torch():
    def make(nn):
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    mj, mt = _pair(make, "tj->torch", randomize=True)
    _compare(mj, mt, [data((2, 1, 4, 4), np.float64)])
    mj.eval()
    mt.eval()
    mj.zero_grad()
    mt.zero_grad()
    _compare(mj, mt, [data((2, 1, 4, 4), np.float64, seed=4)])


@pytest.mark.parametrize("name,kwargs", [
    ("CrossEntropyLoss", dict()),
    ("CrossEntropyLoss", dict(ignore_index=1, reduction="sum")),
    ("CrossEntropyLoss", dict(label_smoothing=0.1)),
    ("NLLLoss", dict(reduction="none")),
])
def test_class_losses(name, kwargs):
    logits = data((5, 3), np.float64)
    target = np.array([0, 1, 2, 1, 0])
    w = np.array([1.0, 0.5, 2.0])
    for weight in (None, w) if "label_smoothing" not in kwargs else (None,):
        lj = getattr(tj.nn, name)(weight=None if weight is None else tj.tensor(weight), **kwargs)
        lt = getattr(torch.nn, name)(weight=None if weight is None else torch.tensor(weight),
                                     **kwargs)
        xj = tj.tensor(logits, requires_grad=True)
        xt = torch.tensor(logits, requires_grad=True)
        oj, ot = lj(xj, tj.tensor(target)), lt(xt, torch.tensor(target))
        np.testing.assert_allclose(_np(oj), _np(ot), rtol=1e-12)
        oj.sum().backward()
        ot.sum().backward()
        np.testing.assert_allclose(_np(xj.grad), _np(xt.grad), rtol=1e-10, atol=1e-12)
