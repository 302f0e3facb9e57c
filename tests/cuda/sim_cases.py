"""The graphs tests/cuda/test_cuda_sim.py runs under the simulator, on tiny shapes (each
simulated thread costs ~0.4 ms, each barrier 20-40 ms): ``CASES()`` -> name -> (fn, args as
numpy arrays). Imported by the test and by the simulated child alike."""

from __future__ import annotations

import numpy as np


def _rng(seed=0):
    return np.random.default_rng(seed)


def _f32(*shape, seed=0):
    return _rng(seed).standard_normal(shape).astype(np.float32)


def chain(a, b, c):  # broadcasting: (3, 5) with (5,) and (3, 1)
    x = (a * b + c).tanh() * 0.5 - a
    return (x.exp() / (b + 2.0)).clamp(min=0.1).sqrt() * c


def gelu(x):
    return 0.5 * x * (1 + (0.79788456 * (x + 0.044715 * x ** 3)).tanh())


def softmax(x):
    return x.softmax(-1)


def layer_norm(x, w, b):
    import tracejit.nn.functional as F
    return F.layer_norm(x, (x.shape[-1],), w, b)


def full_sum(x):
    return x.sum(), (x * x).mean()


def row_exports(x):
    """A row kernel that also writes a vector computed in a reduction's loop (e) and in the
    output loop (xm), and row scalars (s, ls): one thread per element, thread 0 per row."""
    m = x.amax(-1, keepdim=True)
    xm = x - m
    e = xm.exp()
    s = e.sum(-1, keepdim=True)
    ls = s.log()
    return xm - ls, e, s, ls, xm


def full_sum_export(x):  # a full reduction that writes its summand and 0-d total too
    return (x * x).sum() / 3, (x * x).sum(), x * x


def big_sums(x):  # past codegen.cuda.TWO_STAGE_MIN: two-stage reductions
    return (x * x).sum() / 3, x.amax(), x.long().sum()


def matmul(a, b):
    return (a @ b).relu()


def conv_step(x, w):  # conv2d is unfold + batched matmul (+ max pooling: a kernel of its own)
    import tracejit.nn.functional as F
    return F.max_pool2d(F.conv2d(x, w, padding=1).relu(), 2)


def pool_grad(x):
    """max_pool2d's gradient kernel (overlapping windows with padding, a tie and a NaN)."""
    import tracejit as tj
    import tracejit.nn.functional as F
    return tj.grad(lambda x: (F.max_pool2d(x, 3, stride=2, padding=1) ** 2).sum())(x)


def _pool_input():
    x = _f32(1, 2, 5, 5, seed=3)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = 3.0  # a tie: the first tap gets the gradient
    x[0, 1, 4, 4] = np.nan
    return x


def int_floordiv(x, y):
    return x // y, x % 3


def mlp_step(x, y, w1, b1, w2, b2):
    """Forward, backward (tracejit.grad) and an SGD update in one traced graph."""
    import tracejit as tj
    import tracejit.nn.functional as F

    def loss(w1, b1, w2, b2):
        h = (x @ w1 + b1).relu()
        return F.cross_entropy(h @ w2 + b2, y)
    grads = tj.grad(loss, argnums=(0, 1, 2, 3))(w1, b1, w2, b2)
    return tuple(p - 0.1 * g for p, g in zip((w1, b1, w2, b2), grads))


def rank_generic(p4, g4, p2, g2t, p1, g1):
    """One update of a 4-d, a 2-d (its gradient a transposed view) and a 1-d parameter: one
    rank-generic kernel, called with padded views (codegen/kernel.py pad_ranks)."""
    return tuple(x for p, g in ((p4, g4), (p2, g2t.mT), (p1, g1)) for x in (p - 0.1 * g, g * 0.9))


def CASES() -> dict:
    """A case is (fn, args) or (fn, args, trace_args): traced on trace_args (tracing runs
    the ops eagerly, which would raise for the zero divisor), run on args."""
    return {
        "chain": (chain, (_f32(3, 5), _f32(5, seed=1), _f32(3, 1, seed=2))),
        "gelu": (gelu, (_f32(40),)),
        "softmax": (softmax, (_f32(3, 10),)),
        "layer_norm": (layer_norm, (_f32(2, 12), _f32(12, seed=1), _f32(12, seed=2))),
        "full_sum": (full_sum, (_f32(4, 6),)),
        "row_exports": (row_exports, (_f32(2, 3, 7),)),
        "full_sum_export": (full_sum_export, (_f32(4, 6),)),
        "big_sums": (big_sums, (_f32(300, 230) * 4,)),
        "matmul": (matmul, (_f32(5, 6), _f32(6, 7, seed=1))),
        "conv_step": (conv_step, (_f32(1, 2, 4, 4), _f32(3, 2, 3, 3, seed=1))),
        "pool_grad": (pool_grad, (_pool_input(),)),
        "int_floordiv": (int_floordiv, (np.arange(6, dtype=np.int64),
                                        np.array([1, 2, 0, 1, 2, 3], np.int64)),
                         (np.arange(6, dtype=np.int64), np.ones(6, np.int64))),
        "rank_generic": (rank_generic, (_f32(2, 1, 2, 2), _f32(2, 1, 2, 2, seed=1),
                                        _f32(3, 2, seed=2), _f32(2, 3, seed=3), _f32(3, seed=4),
                                        _f32(3, seed=5))),
        "mlp_step": (mlp_step, (_f32(4, 6), np.array([0, 2, 1, 2], np.int64),
                                _f32(6, 5, seed=1) * 0.3, np.zeros(5, np.float32),
                                _f32(5, 3, seed=2) * 0.3, np.zeros(3, np.float32))),
    }
