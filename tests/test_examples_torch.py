"""The example models against PyTorch: the same architecture built in torch, its weights copied
into the tracejit model through numpy (the state_dict keys match), give the same loss and the
same gradients on one batch, in float64."""

import numpy as np
import pytest

import tracejit as tj

from .test_examples import cnn, lstm

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def torch_cnn():
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(3, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(),
        tnn.Linear(4096, 128), tnn.ReLU(),
        tnn.Linear(128, 10),
    )


class TorchLSTMClassifier(torch.nn.Module):
    def __init__(self, hidden, layers):
        super().__init__()
        self.lstm = torch.nn.LSTM(10, hidden, num_layers=layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, 5)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


@pytest.fixture(autouse=True)
def _torch_seed():
    torch.manual_seed(0)


def _check_against_torch(tj_model, torch_model, x, y):
    torch_model = torch_model.double()
    tj_model = tj_model.double()
    torch_state = torch_model.state_dict()
    assert list(tj_model.state_dict()) == list(torch_state)
    tj_model.load_state_dict({k: v.numpy() for k, v in torch_state.items()})

    tx, ty = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y)
    t_logits = torch_model(tx)
    t_loss = torch.nn.functional.cross_entropy(t_logits, ty)
    t_loss.backward()

    logits = tj_model(tj.tensor(x.astype(np.float64)))
    loss = tj.nn.CrossEntropyLoss()(logits, tj.tensor(y))
    loss.backward()

    assert loss.dtype == tj.float64
    np.testing.assert_allclose(logits.detach().numpy(), t_logits.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(loss.item(), t_loss.item(), rtol=1e-12)
    grads = dict(tj_model.named_parameters())
    for name, p in torch_model.named_parameters():
        g = grads[name].grad
        assert g is not None and g.dtype == tj.float64, name
        np.testing.assert_allclose(g.numpy(), p.grad.numpy(), rtol=1e-8, atol=1e-12,
                                   err_msg=name)


def test_cnn_matches_torch():
    images, labels = cnn.make_data(3, seed=5)
    _check_against_torch(cnn.build_model(), torch_cnn(), images, labels)


@pytest.mark.parametrize("hidden, layers, seq_len", [(256, 2, 20), (7, 3, 4)])
def test_lstm_matches_torch(hidden, layers, seq_len):
    seqs, labels = lstm.make_data(4, seed=5, seq_len=seq_len)
    _check_against_torch(lstm.build_model(hidden=hidden, layers=layers),
                         TorchLSTMClassifier(hidden, layers), seqs, labels)
