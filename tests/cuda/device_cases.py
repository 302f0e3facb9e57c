"""Device tensors and eager CUDA ops, as tests/cuda/test_eager_cuda.py runs them: every case is
``fn(dev) -> tuple of tensors`` on tiny shapes, run on "cpu" in the test process and on "cuda"
in ONE simulator child (``run``: the child side), whose results must agree. ``checks`` are
the CUDA-only behaviours (errors, printing, zero-copy interop, the kernel cache), run in the
same child and reported as text."""

from __future__ import annotations

import numpy as np


def _seeded(tj, dev, *shape, dtype=None):
    return tj.randn(*shape, dtype=dtype, device=dev)


def elementwise(tj, dev):
    tj.manual_seed(0)
    x, y, c = _seeded(tj, dev, 3, 4), _seeded(tj, dev, 4), _seeded(tj, dev, 3, 1)
    i = tj.arange(12, device=dev).reshape(3, 4) - 5
    return ((x * y + c).tanh() * 0.5 - x, x.exp() / (y.abs() + 1.0), x.sigmoid() > 0.5,
            tj.where(x > 0, x, y), i // 3, i % 4, i + x, x.to(tj.float64) ** 2, -i,
            x.clamp(min=-0.5, max=0.5))


def reductions(tj, dev):
    tj.manual_seed(1)
    x = _seeded(tj, dev, 3, 5)
    return (x.sum(1), x.mean(), x.amax(0), x.softmax(-1), x.argmax(1), x.var(1),
            (x > 0).sum(), x.sum(0, keepdim=True))


def views_and_copies(tj, dev):
    tj.manual_seed(2)
    x = _seeded(tj, dev, 2, 3, 4)
    return (x.reshape(6, 4), x.permute(2, 0, 1), x.T.contiguous(), x[:, 1], x[..., ::2] + 1,
            x.unsqueeze(0).expand(2, 2, 3, 4) * 2, tj.cat([x, x * 2], 1), x.flatten(),
            x.transpose(0, 1).reshape(3, 8))


def indexing(tj, dev):
    tj.manual_seed(7)
    x = _seeded(tj, dev, 3, 4)
    y = tj.zeros(3, 4, device=dev)
    y[0] = 5.0
    y[1] = tj.ones(4)  # a CPU value crosses devices, as copy_ does
    y[:, 3] = x[:, 0]
    z = tj.zeros(2, 4, device=dev)
    z.copy_(tj.ones(2, 4))  # from the CPU
    e = tj.zeros(0, 4, device=dev)
    return (x[[0, 2]], x[tj.tensor([2, 0])], x[x > 0], x.index_select(1, tj.tensor([3, 1])),
            x.gather(1, tj.tensor([[0], [1], [2]], device=dev)), y, z, e + 1, e.sum(0))


def matmul(tj, dev):
    tj.manual_seed(3)
    a, b = _seeded(tj, dev, 5, 3), _seeded(tj, dev, 3, 6)
    p, q = _seeded(tj, dev, 2, 3, 4), _seeded(tj, dev, 2, 4, 2)
    return a @ b, p @ q, a @ b.T.T, (a.T @ a)


def inplace(tj, dev):
    x = tj.arange(6, dtype=tj.float32, device=dev).reshape(2, 3)
    y = x.clone()
    y.add_(1).mul_(2).sub_(x, alpha=0.5).clamp_(max=9.0)
    z = tj.zeros(2, 3, device=dev)
    z.copy_(x[0])
    w = tj.ones(4, device=dev)
    w.fill_(3.5)
    v = tj.ones(2, 3, device=dev)
    v[0].zero_()  # in place on a view: the base sees it
    return y, z, w, v, x


def factories(tj, dev):
    tj.manual_seed(4)
    t = tj.ones(2, 2, device=dev)
    return (tj.zeros(2, 3, device=dev), tj.full((2,), 7, device=dev), tj.arange(5, device=dev),
            tj.linspace(0, 1, 5, device=dev), tj.eye(3, device=dev), tj.rand(2, 3, device=dev),
            tj.randint(0, 9, (4,), device=dev), tj.randperm(5, device=dev),
            tj.tensor([1.5, 2.5], device=dev), tj.zeros_like(t), tj.full_like(t, 2.0),
            tj.ones_like(t, dtype=tj.int64), t.new_zeros(3))


def autograd(tj, dev):
    tj.manual_seed(5)
    x = tj.randn(4, 3, device=dev)
    w = tj.randn(3, 2, device=dev, requires_grad=True)
    b = tj.zeros(2, device=dev, requires_grad=True)
    for _ in range(2):  # the second backward accumulates into .grad
        loss = ((x @ w + b).tanh() ** 2).mean() + w.abs().sum() * 0.1
        loss.backward()
    g, = tj.autograd.grad((x * w.sum(1)).sum(), w)
    return loss.detach(), w.grad, b.grad, g


def _train(tj, dev, opt_cls, steps, **opt):
    import tracejit.nn as nn
    import tracejit.nn.functional as F
    tj.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.LayerNorm(3))
    params = list(model.parameters())
    model.to(dev)
    assert all(p is q for p, q in zip(params, model.parameters()))  # moved in place
    optimizer = opt_cls(model.parameters(), **opt)
    x = tj.randn(6, 4, device=dev)
    y = tj.tensor([0, 1, 2, 0, 1, 2], device=dev)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    result = tuple(losses) + tuple(p.detach().clone() for p in params) + tuple(
        p.grad for p in params)
    model.cpu()
    assert all(not p.is_cuda and not p.grad.is_cuda for p in model.parameters())
    return result


def mlp_sgd(tj, dev):
    return _train(tj, dev, tj.optim.SGD, 2, lr=0.1, momentum=0.9)


def mlp_adam(tj, dev):
    return _train(tj, dev, tj.optim.Adam, 2, lr=0.01)


CASES = {f.__name__: f for f in (elementwise, reductions, views_and_copies, indexing, matmul,
                                 inplace, factories, autograd, mlp_sgd, mlp_adam)}


def as_arrays(results) -> list:
    """Host arrays (and each tensor's device) for a case's results."""
    out = []
    for r in results:
        out.append((r.cpu().numpy() if not r.requires_grad else r.detach().cpu().numpy(),
                    str(r.device)))
    return out


def _text(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), np.uint8)


def checks(tj) -> dict:
    """name -> text: what only a CUDA tensor does (the test compares the text)."""
    from numba import cuda

    from tracejit.runtime import cuda_eager
    out = {}
    x = tj.arange(4, dtype=tj.float32).cuda()
    out["device"] = f"{x.device} {x.is_cuda} {tj.ones(1).device} {x.cpu().is_cuda}"
    out["repr"] = repr(x)
    out["repr_grad"] = repr(tj.ones(2, device="cuda", requires_grad=True))
    for name, fn in [("numpy", lambda: x.numpy()), ("mixed", lambda: x + tj.ones(4)),
                     ("array", lambda: np.asarray(x)), ("cuda1", lambda: x.to("cuda:1")),
                     ]:
        try:
            fn()
            out[name] = "no error"
        except Exception as e:
            out[name] = f"{type(e).__name__}: {e}"
    d = tj.nn.functional.dropout(x, 0.5, training=True)  # the mask is drawn on the host
    out["dropout"] = f"{d.is_cuda} " + str(all(v in (0.0, 2 * k) for k, v in enumerate(d.tolist())))
    v = tj.ones(3, requires_grad=True)  # a CPU leaf: the copy's gradient comes back to it
    (v.cuda() * x[:3]).sum().backward()
    out["to_grad"] = f"{v.grad.device} {v.grad.tolist()} {v.cuda().grad_fn}"
    # a CUDA model loads a CPU state dict in place, and its state dict is on the device
    m = tj.nn.Linear(2, 1).cuda()
    m.load_state_dict({"weight": tj.ones(1, 2), "bias": tj.zeros(1)})
    sd = m.state_dict()
    out["state_dict"] = f"{sd['weight'].device} {m(tj.ones(1, 2, device='cuda')).tolist()}"
    # an Adam checkpoint saved on the CPU resumes a CUDA model: the moments follow the device
    m_cpu = tj.nn.Linear(2, 1)
    opt = tj.optim.Adam(m_cpu.parameters())
    m_cpu(tj.ones(1, 2)).sum().backward()
    opt.step()
    m.load_state_dict(m_cpu.state_dict())
    opt_cuda = tj.optim.Adam(m.parameters())
    opt_cuda.load_state_dict(opt.state_dict())
    m(tj.ones(1, 2, device="cuda")).sum().backward()
    opt_cuda.step()
    moments = [s["exp_avg"].device for s in opt_cuda.state.values()]
    out["optimizer_state"] = f"{moments} {m.weight.is_cuda}"
    out["scalar_tensor"] = str((x + tj.tensor(2.0)).tolist())  # CPU 0-d tensors may join
    out["item"] = str(x.sum().item())

    # zero-copy interop: a numba device array in, a view of its memory out
    arr = cuda.to_device(np.arange(3, dtype=np.float32))
    t = tj.as_tensor(arr)
    t.add_(10)
    u = tj.from_dlpack(arr)
    out["interop"] = (f"{t.is_cuda} {arr.copy_to_host().tolist()} {u.tolist()} "
                      f"{t.data_ptr() == u.data_ptr()} "
                      f"{t.__cuda_array_interface__['data'][0] == t.data_ptr()}")

    # one runner per op and signature: the second call of the same op is a cache hit
    before = cuda_eager.cache_info()
    for _ in range(3):
        x * 3.0
    after = cuda_eager.cache_info()
    out["cache"] = f"{after['misses'] - before['misses']} {after['hits'] - before['hits']}"

    @tj.trace
    def f(a):
        return a * 2 + 1
    out["traced"] = f"{[f(x).tolist() for _ in range(3)][-1]} {f(x).device}"
    with tj.eager():
        out["traced_eager"] = str(f(x).tolist())
    return out


def run(inputs) -> dict:
    """The simulated child: every case on "cuda", then the checks."""
    import time

    import tracejit as tj
    res = {}
    for name, fn in CASES.items():
        t0 = time.perf_counter()
        try:
            for k, (a, dev) in enumerate(as_arrays(fn(tj, "cuda"))):
                res[f"{name}.{k}"] = a
                res[f"{name}.{k}.device"] = _text(dev)
        except Exception as e:
            import traceback
            res[f"{name}.error"] = _text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        res[f"{name}.seconds"] = np.array(time.perf_counter() - t0)
    for name, text in checks(tj).items():
        res[f"check.{name}"] = _text(text)
    return res
