"""Every op through the compiler: compiled == eager (and == interpreted) for each primitive and
the main compositions, on float32, float64, int and bool operands and on edge shapes.

Ops are batched into a few traced functions (one kernel per output) to keep numba's compile
time small."""

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit import ops

from ..conftest import noncontig

UNARY_FLOAT = ["neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos",
               "tan", "sinh", "cosh", "tanh", "sigmoid", "erf", "relu", "sign", "floor", "ceil",
               "round", "isnan", "isfinite", "logical_not", "clone"]
BINARY = ["add", "sub", "mul", "div", "floordiv", "remainder", "pow", "maximum", "minimum",
          "eq", "ne", "lt", "le", "gt", "ge"]


def _binary(name):
    return {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
            "div": lambda a, b: a / b, "floordiv": lambda a, b: a // b,
            "remainder": lambda a, b: a % b, "pow": lambda a, b: a ** b,
            "maximum": tj.maximum, "minimum": tj.minimum, "eq": lambda a, b: a == b,
            "ne": lambda a, b: a != b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
            "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b}[name]


def _compare(fn, args, rtol, atol):
    eager = fn(*args)
    comp = tj.trace(fn, backend="cpu")
    comp(*args)
    got = comp(*args)
    interp = tj.trace(fn, backend="interpret")
    interp(*args)
    ref = interp(*args)
    for k, (g, r, e) in enumerate(zip(got, ref, eager)):
        e, g, r = e.numpy(), g.numpy(), r.numpy()
        assert g.dtype == e.dtype and g.shape == e.shape, (k, g.dtype, e.dtype, g.shape, e.shape)
        np.testing.assert_array_equal(r, e, err_msg=f"interpreted output {k}")
        if e.dtype.kind == "f":
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True,
                                       err_msg=f"compiled output {k}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"compiled output {k}")
    return comp


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unary_ops(dtype):
    x = tj.tensor(np.linspace(0.05, 3.0, 24).reshape(4, 6), dtype=dtype)
    y = tj.tensor(np.linspace(-3, 3, 24).reshape(4, 6), dtype=dtype)
    fns = [getattr(tj.Tensor, n) if n != "clone" else tj.Tensor.clone for n in UNARY_FLOAT]
    # positive inputs for log-like ops, a signed range for the rest
    f = lambda x, y: tuple(fn(x) if name in ("log", "sqrt", "rsqrt") else fn(y)  # noqa: E731
                           for name, fn in zip(UNARY_FLOAT, fns))
    tol = 2e-6 if dtype == "float32" else 1e-12
    _compare(f, (x, y), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "int64", "int32"])
def test_binary_ops_with_broadcasting(dtype):
    rng = np.random.default_rng(0)
    if dtype == "float32":
        a = tj.tensor(rng.uniform(0.5, 3, (3, 4)), dtype=dtype)
        b = tj.tensor(rng.uniform(0.5, 2, (4,)), dtype=dtype)
    else:
        a = tj.tensor(rng.integers(-6, 7, (3, 4)), dtype=dtype)
        b = tj.tensor(rng.integers(1, 4, (4,)), dtype=dtype)
    names = [n for n in BINARY if not (n == "div" and dtype != "float32")] + ["div"]
    f = lambda a, b: tuple(_binary(n)(a, b) for n in names) + (  # noqa: E731
        a * 2, 3 - a, a / 2, a ** 2)
    _compare(f, (a, b), rtol=2e-6, atol=1e-6)


def test_where_clamp_cast_logical_and_scalars():
    rng = np.random.default_rng(1)
    x = tj.tensor(rng.standard_normal((5, 3)).astype(np.float32))
    i = tj.tensor(rng.integers(-3, 4, (5, 3)))
    m = x > 0
    f = lambda x, i, m: (  # noqa: E731
        tj.where(m, x, 0.5), tj.where(m, i, x), x.clamp(-0.5, 0.5), i.clamp(min=0),
        x.clamp(max=0.1), x.long(), i.float(), m.int(), x.double(), m & (i > 0),
        m | (i < 0), m ^ (x < 0.5), ~m, x.gelu(), x.gelu(approximate="tanh"), x.silu(),
        x.softplus(), F.leaky_relu(x), x.detach() * 2)
    _compare(f, (x, i, m), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("shape, dims", [((6, 5), -1), ((6, 5), 0), ((2, 3, 4), (1, 2)),
                                         ((2, 3, 4), (0, 2)), ((7,), None)])
def test_reductions(shape, dims):
    x = tj.randn(*shape)
    b = x > 0
    f = lambda x, b: (x.sum(dims), x.mean(dims), x.amax(dims if dims is not None else ()),  # noqa
                      x.amin(dims if dims is not None else ()), x.prod(dims),
                      x.var(dims), x.sum(dims, keepdim=True), b.sum(dims),
                      (x * 2).exp().sum(dims) if dims is not None else x.exp().sum())
    _compare(f, (x, b), rtol=1e-5, atol=1e-6)


def test_row_functions_and_losses():
    x = tj.randn(6, 10)
    y = tj.randint(0, 10, (6,))
    w, b = tj.randn(10), tj.randn(10)
    f = lambda x, y, w, b: (  # noqa: E731
        x.softmax(-1), x.log_softmax(-1), x.logsumexp(-1), x.softmax(0),
        F.layer_norm(x, (10,), w, b), F.cross_entropy(x, y), F.mse_loss(x, x * 0.5),
        x.std(-1), x.norm(dim=-1))
    _compare(f, (x, y, w, b), rtol=2e-5, atol=2e-6)


def test_views_indexing_and_library_ops():
    x = tj.randn(4, 6)
    idx = tj.tensor([3, 0, 3])
    imgs, k = tj.randn(2, 3, 6, 6), tj.randn(4, 3, 3, 3)
    f = lambda x, idx, imgs, k: (  # noqa: E731
        x.T * 2, x[1:3, ::-1] + 1, x.reshape(6, 4).sum(0), x.unsqueeze(0).expand(3, 4, 6) * 1,
        x[idx] * 3, x.gather(1, idx.reshape(3, 1).expand(3, 2)[:, :1].expand(3, 2) * 0 + 1),
        tj.cat([x, x * 2], 1), tj.stack([x, x]), x.cumsum(1), x.argmax(1),
        F.conv2d(imgs, k, padding=1).relu(), F.max_pool2d(imgs, 2), F.avg_pool2d(imgs, 3),
        x.pad((1, 1)), x @ x.T, x.flip(0))
    _compare(f, (x, idx, imgs, k), rtol=1e-5, atol=1e-5)


def test_max_pool2d_and_max_pool2d_grad_kernels():
    """Overlapping windows with padding and dilation, ties, a NaN, an integer image; the
    gradient (max_pool2d_grad) goes to each window's first maximum."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    x[0, 0, 2:4, 2:4] = 1.5  # ties
    x[1, 2, 0, 5] = np.nan
    xi = tj.tensor(rng.integers(-5, 5, (1, 2, 5, 5)))
    pools = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
             dict(kernel_size=3, stride=1, padding=1, dilation=2)]

    def f(x, xi):
        outs = []
        for kw in pools:
            outs += [F.max_pool2d(x, **kw),
                     tj.grad(lambda x, kw=kw: (F.max_pool2d(x, **kw) ** 2).sum())(x).detach()]
        return (*outs, F.max_pool2d(xi, 3, stride=1, padding=1))
    comp = _compare(f, (tj.tensor(x), xi), rtol=1e-6, atol=1e-6)
    src = comp.source(tj.tensor(x), xi)
    assert "def max_pool2d_grad" in src and "unfold" not in src and "scatter_add" not in src


def test_edge_shapes_and_layouts():
    zero_d, empty = tj.tensor(2.5), tj.zeros(0, 3)
    strided = tj.from_numpy(noncontig(np.arange(12, dtype=np.float32).reshape(3, 4)))
    f = lambda z, e, s: (z * 2 + 1, (e + 1).exp(), e.sum(0), s * z, s.T.tanh(),  # noqa: E731
                         s.sum(-1), (s + z).softmax(-1))
    _compare(f, (zero_d, empty, strided), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inverse_trig_fmod_scans_and_argsort(dtype):
    rng = np.random.default_rng(2)
    u = tj.tensor(np.linspace(-0.9, 0.9, 24).reshape(4, 6), dtype=dtype)  # |u| < 1
    y = tj.tensor(rng.uniform(-3, 3, (4, 6)), dtype=dtype)
    big = tj.tensor(np.linspace(1.0, 4.0, 24).reshape(4, 6), dtype=dtype)  # acosh: >= 1
    i = tj.tensor(rng.integers(-7, 8, (4, 6)))
    f = lambda u, y, big, i: (  # noqa: E731
        u.asin(), u.acos(), y.atan(), y.asinh(), big.acosh(), u.atanh(), tj.atan2(y, u),
        tj.atan2(u, -big), tj.fmod(y, 0.7), tj.fmod(-y, u), tj.fmod(i, 3), tj.fmod(-i, 4),
        u.cumprod(1), y.cumprod(0), y.logcumsumexp(1), y.argsort(1), (-y).argsort(0))
    tol = 5e-6 if dtype == "float32" else 1e-12
    _compare(f, (u, y, big, i), rtol=tol, atol=tol)


def test_every_primitive_is_compiled_somewhere():
    """New ops must be added to this file's sweeps (random and graph-only ops excepted)."""
    covered = set()
    for name, fn in list(globals().items()):
        if name.startswith("test_") and name != "test_every_primitive_is_compiled_somewhere":
            covered |= set(fn.__code__.co_names) | set(fn.__code__.co_consts.__repr__().split())
    text = open(__file__).read()
    skip = {"const", "detach", "fused", "uniform", "normal", "randint", "copy", "index_put",
            "scatter_add", "fold", "unfold", "getitem", "permute", "reshape", "expand", "cast",
            "logical_and", "logical_or", "logical_xor", "matmul", "pad", "cat", "argmin",
            "all_reduce"}  # all_reduce: compiled on two ranks in tests/distributed
    missing = [n for n in ops.OPS if n not in skip and n not in text]
    assert not missing, f"ops without a compiled test here: {missing}"
