"""A whole training step — forward, loss, backward, optimizer update — traced into one compiled
graph gives the parameters eager training gives."""

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn, optim


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # no bias before BatchNorm: it would get a gradient of pure rounding noise, which Adam
        # amplifies to full-size steps in either run
        self.fc1 = nn.Linear(6, 16, bias=False)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.drop(self.bn(self.fc1(x)).relu()))


def _run(make_opt, compiled, steps=20):
    tj.manual_seed(0)
    model = Net()
    opt = make_opt(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(1)
    x = tj.tensor(rng.standard_normal((32, 6)).astype(np.float32))
    y = tj.tensor(rng.integers(0, 3, 32))

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    run = tj.trace(step, backend="cpu") if compiled else step
    tj.manual_seed(123)  # the dropout masks
    losses = [run(x, y).item() for _ in range(steps)]
    return model, losses, run


@pytest.mark.parametrize("name, make_opt", [
    ("sgd_momentum", lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                         weight_decay=1e-4)),
    ("adam", lambda p: optim.Adam(p, lr=0.01)),
])
def test_compiled_training_matches_eager(name, make_opt):
    eager_model, eager_losses, _ = _run(make_opt, compiled=False)
    model, losses, run = _run(make_opt, compiled=True)
    np.testing.assert_allclose(losses, eager_losses, rtol=2e-4, atol=1e-5)
    for (k, a), (_, b) in zip(model.state_dict().items(), eager_model.state_dict().items()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-4, atol=2e-5, err_msg=k)
    info = run.cache_info()
    # traced twice (the optimizer creates its state on the first step), then the graph ran
    assert info.misses <= 2 and info.hits >= 18
    spec = run.specs()[-1]
    assert spec.ran_backward and spec.runner is not None
    ops_run = {n.op for n in spec.graph.nodes}
    assert "fused" in ops_run and "matmul" in ops_run


def test_eval_mode_switch_retraces():
    tj.manual_seed(0)
    model = Net()
    f = tj.trace(model, backend="cpu")
    x = tj.randn(8, 6)
    f(x)
    f(x)
    model.eval()
    with tj.no_grad():
        np.testing.assert_allclose(f(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_grads_written_back_when_step_only_runs_backward():
    tj.manual_seed(0)
    lin = nn.Linear(3, 2)
    x = tj.randn(4, 3)

    @tj.trace
    def f(x):
        loss = lin(x).square().sum()
        loss.backward()
        return loss.detach()

    f(x)
    g1 = lin.weight.grad.numpy().copy()
    f(x)  # the graph accumulates into .grad, as eager backward() would
    np.testing.assert_allclose(lin.weight.grad.numpy(), 2 * g1, rtol=1e-5)
