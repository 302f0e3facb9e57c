"""Traced functions on CUDA tensors, as tests/cuda/test_traced_cuda.py runs them: every case is
``fn(tj, dev) -> tuple of tensors`` on tiny shapes that calls a traced function three times
(the tracing call, the first compiled call, the fast path), run on "cpu" in the test process
and on "cuda" in ONE simulator child (``run``), whose results must agree. Each case also
reports which runner its specializations got (``runners``), so a silent fallback to the
interpreter fails the test. ``checks`` are the CUDA-only behaviours, reported as text."""

from __future__ import annotations

import numpy as np

_TRACED: list = []  # every traced function a case made (for the runner report)


def _traced(tj, fn, **options):
    f = tj.trace(fn, **options)
    _TRACED.append(f)
    return f


def _calls(f, *args, n=3):
    for _ in range(n):
        out = f(*args)
    return out


def elementwise(tj, dev):
    tj.manual_seed(0)
    x, y, c = (tj.randn(3, 4, device=dev), tj.randn(4, device=dev),
               tj.randn(3, 1, device=dev))
    f = _traced(tj, lambda x, y, c: ((x * y + c).tanh() * 0.5 - x, (x > 0).float() + y ** 3,
                                     tj.where(x > c, x.exp(), y.abs().sqrt())))
    return _calls(f, x, y, c)


def rows(tj, dev):
    import tracejit.nn.functional as F
    tj.manual_seed(1)
    x = tj.randn(4, 6, device=dev)
    w, b = tj.randn(6, device=dev), tj.randn(6, device=dev)
    f = _traced(tj, lambda x: (x.softmax(-1), F.layer_norm(x, (6,), w, b), x.log_softmax(1),
                               x.sum(), x.mean(0), x.amax(1), x.argmax(1)))
    return _calls(f, x)


def matmul(tj, dev):
    tj.manual_seed(2)
    a, b = tj.randn(5, 3, device=dev), tj.randn(3, 4, device=dev)
    p, q = tj.randn(2, 3, 4, device=dev), tj.randn(2, 4, 2, device=dev)
    f = _traced(tj, lambda a, b, p, q: ((a @ b).relu() + 1.0, p @ q, a.T @ a))
    return _calls(f, a, b, p, q)


def constants_and_scalars(tj, dev):
    """Values made inside the function on the graph's device, a CPU 0-d tensor argument
    (torch lets it join CUDA ops), a Python number."""
    tj.manual_seed(3)
    x = tj.randn(2, 3, device=dev)
    f = _traced(tj, lambda x, s, k: x * tj.arange(3.0, device=dev) + tj.ones(2, 3, device=dev)
                * s + k)
    return _calls(f, x, tj.tensor(2.5), 0.5)


def inplace(tj, dev):
    """In-place updates of arguments are written back into their device memory."""
    def f(x, y):
        x.mul_(2.0).add_(1.0)
        y[0] = x[1]
        return x.sum()
    g = _traced(tj, f)
    x = tj.arange(6.0, device=dev).reshape(2, 3).clone()
    y = tj.zeros(2, 3, device=dev)
    s = _calls(g, x, y)
    return s, x, y


def grad_fn(tj, dev):
    """A traced model called from eager code: the compiled backward runs on the device."""
    tj.manual_seed(4)
    model = tj.nn.Sequential(tj.nn.Linear(3, 4), tj.nn.Tanh(), tj.nn.Linear(4, 2)).to(dev)
    f = _traced(tj, model)
    x = tj.randn(5, 3, device=dev)
    for _ in range(3):
        model.zero_grad()
        loss = (f(x) ** 2).mean()
        loss.backward()
    return (loss.detach(),) + tuple(p.grad for p in model.parameters())


def _training(tj, dev, opt_cls, **opt):
    import tracejit.nn.functional as F
    tj.manual_seed(5)
    model = tj.nn.Sequential(tj.nn.Linear(4, 6), tj.nn.ReLU(), tj.nn.Linear(6, 3)).to(dev)
    optimizer = opt_cls(model.parameters(), **opt)

    def step(x, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    f = _traced(tj, step)
    x = tj.randn(6, 4, device=dev)
    y = tj.tensor([0, 1, 2, 0, 1, 2], device=dev)
    losses = tuple(f(x, y) for _ in range(4))
    return losses + tuple(p.detach() for p in model.parameters())


def train_sgd(tj, dev):
    return _training(tj, dev, tj.optim.SGD, lr=0.1, momentum=0.9)


def train_adam(tj, dev):
    return _training(tj, dev, tj.optim.Adam, lr=0.01)


def conv_step(tj, dev):
    """A conv + pool + linear training step (unfold kernels + batched matmul on CUDA)."""
    import tracejit.nn.functional as F
    tj.manual_seed(6)
    conv = tj.nn.Conv2d(1, 2, 3, padding=1).to(dev)
    fc = tj.nn.Linear(2 * 2 * 2, 2).to(dev)
    params = list(conv.parameters()) + list(fc.parameters())
    optimizer = tj.optim.SGD(params, lr=0.05)

    def step(x, y):
        optimizer.zero_grad()
        h = F.max_pool2d(conv(x).relu(), 2)
        loss = F.cross_entropy(fc(h.flatten(1)), y)
        loss.backward()
        optimizer.step()
        return loss

    f = _traced(tj, step)
    x = tj.randn(2, 1, 4, 4, device=dev)
    y = tj.tensor([1, 0], device=dev)
    losses = tuple(f(x, y) for _ in range(3))
    return losses + tuple(p.detach() for p in params)


def interpret_backend(tj, dev):
    """backend="interpret" runs a CUDA graph on host copies; results come back to the GPU."""
    x = tj.arange(4.0, device=dev)
    f = _traced(tj, lambda x: (x * 3).cumsum(0), backend="interpret")
    return (_calls(f, x),)


def more_ops(tj, dev):
    """The inverse trigonometric rows, atan2 and fmod in one kernel; integer fmod; the scans
    and the sort family (numpy fallbacks between kernels)."""
    tj.manual_seed(4)
    x, y = tj.rand(3, 4, device=dev) * 1.8 - 0.9, tj.rand(4, device=dev) + 0.5
    i, j = tj.tensor([-7, 7, 5, -3], device=dev), tj.tensor([2, -2, 3, 3], device=dev)
    f = _traced(tj, lambda x, y, i, j: (
        x.asin() + x.acos() * x.atan() - x.asinh() + (x.abs() + 1).acosh() * x.atanh(),
        tj.atan2(x, y) + tj.fmod(x * 7, y), tj.fmod(i, j), x.cumprod(1), x.sort(1).values,
        x.argsort(0, descending=True), x.triu() + x.roll(1, 1)))
    return _calls(f, x, y, i, j)


CASES = {f.__name__: f for f in (elementwise, rows, matmul, constants_and_scalars, inplace,
                                 grad_fn, train_sgd, interpret_backend, more_ops)}
# ~10 s each under the simulator (its threads poll each other): run with -m slow
SLOW_CASES = {f.__name__: f for f in (train_adam, conv_step)}


def as_arrays(results) -> list:
    """Host arrays (and each tensor's device) for a case's results."""
    return [(r.detach().cpu().numpy(), str(r.device)) for r in results]


def runners() -> str:
    """Which runner every specialization of the traced functions made so far got."""
    kinds = []
    for f in _TRACED:
        for spec in f.specs():
            kinds.append(f"{spec.compiled.device}:{type(spec.runner).__name__}")
    _TRACED.clear()
    return " ".join(kinds)


def _text(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), np.uint8)


def checks(tj) -> dict:
    """name -> text: what only traced CUDA code does (the test compares the text)."""
    out = {}

    @tj.trace
    def f(x, i):
        return x[i] * 2.0

    x = tj.arange(4.0, device="cuda")
    f(x, tj.tensor([0, 1], device="cuda"))
    try:  # an index out of range in compiled CUDA code: the node's error, the user's line
        f(x, tj.tensor([0, 9], device="cuda"))
        out["index_error"] = "no error"
    except Exception as e:
        out["index_error"] = f"{type(e).__name__}: {e}"

    @tj.trace
    def g(x):
        return x + 1.0

    g(tj.ones(3)), g(tj.ones(3, device="cuda")), g(tj.ones(3, device="cuda"))
    out["devices"] = " ".join(str(s.compiled.device) for s in g.specs()) + \
        f" {g(tj.ones(3)).device} {g(tj.ones(3, device='cuda')).device}"
    out["source"] = "cuda.jit" if "cuda.jit" in g.source(tj.ones(3, device="cuda")) else \
        g.source(tj.ones(3, device="cuda"))[:400]

    # an export made on the CPU, loaded for CUDA: weights on the GPU, CUDA kernels, in-place
    # updates of its weights written back there
    import tempfile
    model = tj.nn.Linear(3, 2)
    opt = tj.optim.SGD(model.parameters(), lr=0.1)

    def step(x):
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        return loss

    with tempfile.TemporaryDirectory() as d:
        x = tj.ones(4, 3)
        tj.export(step, x).save(f"{d}/step.tjit")
        cpu, gpu = tj.load(f"{d}/step.tjit"), tj.load(f"{d}/step.tjit", device="cuda")
        losses = [(cpu(x).item(), gpu(x.cuda()).item()) for _ in range(3)]
        w = gpu.state_dict()["model.weight"]
        try:
            gpu(x)
            wrong = "no error"
        except RuntimeError as e:
            wrong = str(e)
        # and the other way: exported while traced on the GPU, loaded on the CPU
        m2 = tj.nn.Linear(3, 2).cuda()
        tj.export(lambda x: m2(x).sum(), x.cuda()).save(f"{d}/gpu.tjit")
        back = tj.load(f"{d}/gpu.tjit")(x).item()
        back_ok = abs(back - m2(x.cuda()).sum().item()) < 1e-5
    same = all(abs(a - b) < 1e-5 for a, b in losses) and losses[0] != losses[-1]
    out["export"] = f"{same} {back_ok} {w.device} {wrong}"

    @tj.trace
    def h(x):
        return x.cpu()
    try:
        h(tj.ones(2, device="cuda"))
        out["to_cpu"] = "no error"
    except NotImplementedError as e:
        out["to_cpu"] = f"NotImplementedError: {e}"
    return out


def run(inputs) -> dict:
    """The simulated child: the cases ``inputs["names"]`` names (default: CASES) on "cuda", then
    the checks. Fallback warnings are
    errors here: a case that ran on the interpreter instead of CUDA kernels must fail."""
    import time
    import warnings

    import tracejit as tj
    warnings.filterwarnings("error", message="tracejit")
    res = {}
    names = bytes(inputs["names"]).decode().split() if "names" in inputs else list(CASES)
    for name in names:
        fn = {**CASES, **SLOW_CASES}[name]
        t0 = time.perf_counter()
        try:
            for k, (a, dev) in enumerate(as_arrays(fn(tj, "cuda"))):
                res[f"{name}.{k}"] = a
                res[f"{name}.{k}.device"] = _text(dev)
        except Exception as e:
            import traceback
            res[f"{name}.error"] = _text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        res[f"{name}.runners"] = _text(runners())
        res[f"{name}.seconds"] = np.array(time.perf_counter() - t0)
    for name, text in checks(tj).items():
        res[f"check.{name}"] = _text(text)
    return res
