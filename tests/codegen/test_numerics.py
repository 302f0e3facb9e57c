"""Compiled numerics against eager (numpy) and torch semantics (issue 9): graphs that used to
be unrenderable, integer division by zero, pow's special cases, float32 sum accuracy, and
sign / log_softmax / softmax at NaN and inf.

Each test traces one function with several outputs, to keep numba's compile time small."""

import math

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit.codegen import cpu, kernel, lower

inf, nan = math.inf, math.nan


def _run(fn, *args, **kw):
    """(compiled, eager) outputs as numpy tuples; the compiled function's 2nd call runs the
    generated code (the 1st returns the values computed while tracing)."""
    comp = tj.trace(fn, backend="cpu", **kw)
    comp(*args)
    got = comp(*args)
    want = fn(*args)
    got, want = (x if isinstance(x, tuple) else (x,) for x in (got, want))
    return comp, [g.numpy() for g in got], [w.numpy() for w in want]


def _same(got, want, rtol=2e-6, atol=1e-6):
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape and g.dtype == w.dtype, (k, g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True,
                                   err_msg=f"output {k}")


def _no_numpy_kernels(comp, *args):
    """Every fused group became a numba kernel (none runs through the numpy fallback)."""
    src = comp.source(*args)
    assert "(numpy)" not in src, src


# ---------------------------------------------------------------- 1. unrenderable groups


def _ce_step(x, t):
    out = F.cross_entropy(x, t)
    return out, (out * 0.7).sum()


def _zero_d(x, s, i):
    # reductions of 0-d values (over no dims) next to the values themselves
    a = (s * 0.7).sum()
    return s * 2 + a, s.exp().amax() - s.amin(), (s * 3).prod(), i.sum(), (i > 0).sum(), \
        (x * s).sum()


def test_identity_reduction_of_an_exported_value():
    # fuse made a group rooted at a sum over no dims, exporting %22: KeyError in lower()
    x, t = tj.randn(4, 5), tj.randint(0, 5, (4,))
    comp, got, want = _run(_ce_step, x, t)
    _same(got, want)
    _no_numpy_kernels(comp, x, t)
    comp, got, want = _run(lambda x, t: F.nll_loss(F.log_softmax(x, -1), t), x, t)
    _same(got, want)


def test_zero_d_graph_and_unsimplified_identity_reductions():
    x, s, i = tj.randn(1, 5), tj.tensor(0.25), tj.tensor(3)
    for passes in (None, []):  # [] : no simplify, so fuse and the kernels meet them as they are
        comp, got, want = _run(_zero_d, x, s, i, passes=passes)
        _same(got, want)
        _no_numpy_kernels(comp, x, s, i)
    assert got[3].dtype == np.int64 and got[4].dtype == np.int64  # torch: sum of ints is int64


def test_unrenderable_group_still_defines_every_output(monkeypatch):
    # robustness: a fused node the generator refuses runs through numpy, all of its results
    def refuse(self):
        raise cpu.Unsupported("test")

    monkeypatch.setattr(cpu._Kernel, "source", refuse)
    gates, c = tj.randn(3, 4), tj.randn(3, 4)

    def cell(g, c):
        i, f = g.sigmoid(), (g * 2).tanh()
        c2 = f * c + i
        return c2.tanh(), c2, i, f

    comp, got, want = _run(cell, gates, c)
    assert any(len(n.attr_dict.get("outputs", ())) for n in comp.graph(gates, c).nodes)
    _same(got, want)


_UNARY = [lambda x: x.exp(), lambda x: x * 0.7, lambda x: x.sum(), lambda x: x.amax(-1),
          lambda x: x.sum(-1, keepdim=True), lambda x: x.mean(0), lambda x: x.softmax(-1),
          lambda x: x - x.amax(-1, keepdim=True), lambda x: F.log_softmax(x, -1),
          lambda x: (x > 0).sum(), lambda x: x.prod(), lambda x: x.sum(0, keepdim=True),
          lambda x: x.var(-1), lambda x: x.tanh().sum(), lambda x: x.long().sum()]


@pytest.mark.parametrize("passes", [None, []])
def test_random_graphs_have_no_unrenderable_group(passes, monkeypatch):
    """Random chains of elementwise ops and reductions over 2-d, 1-d and 0-d values, some
    intermediates returned: every fused group renders as a kernel (source only: no numba)."""
    import random

    from tracejit.passes.fuse import fuse

    refused = []
    source = cpu._Kernel.source

    def watch(self):
        try:
            return source(self)
        except cpu.Unsupported as e:
            refused.append((self.name, e))
            raise

    plan = kernel.plan_kernel

    def watch_plan(node):  # a group is refused while planned (no template) or rendered
        try:
            return plan(node)
        except cpu.Unsupported as e:
            refused.append((node.attr_dict["kernel"], e))
            raise

    monkeypatch.setattr(cpu._Kernel, "source", watch)
    monkeypatch.setattr(kernel, "plan_kernel", watch_plan)
    args = tj.randn(4, 5), tj.randn(5), tj.randn(())
    for seed in range(120):
        def fn(*vals, seed=seed):
            r, vals, outs = random.Random(seed), list(vals), []
            for _ in range(r.randint(2, 7)):
                a, b = r.choice(vals), r.choice(vals)
                v = r.choice(_UNARY)(a) if r.random() < 0.6 or a.ndim != b.ndim else a * b + a
                vals.append(v.float())
                if r.random() < 0.3:
                    outs.append(vals[-1])
            return tuple(outs) + (vals[-1],)

        graph = tj.trace(fn, backend="interpret", passes=passes).graph(*args)
        lower(fuse(graph), target="cpu")
        assert not refused, (seed, refused, fuse(graph))


# ---------------------------------------------------------------- 2. integer // and % by zero


@pytest.mark.parametrize("n", [6, 1 << 15])  # serial, and numba.prange (exceptions are lost there)
def test_integer_division_by_zero_raises(n, monkeypatch):
    monkeypatch.setattr(cpu, "PARALLEL_MIN", 1 << 14)  # threads for the larger size
    a = tj.tensor(np.arange(n, dtype=np.int64) - 3)
    ones, zero = tj.ones(n, dtype=tj.int64), tj.ones(n, dtype=tj.int64)
    zero._data[n // 2] = 0

    def fn(a, b, c):  # float // and % by zero stay inf and nan, as in numpy and torch
        return a // b, (a % c * 2).sum(), a.float() // 0.0, a.float() % 0.0

    comp = tj.trace(fn, backend="cpu")
    comp(a, ones, ones)
    _same([r.numpy() for r in comp(a, ones, ones)], [r.numpy() for r in fn(a, ones, ones)])
    assert ("numba.prange" in comp.specs()[-1].runner.source) == (n > 6)
    for name, args in (("floordiv", (a, zero, ones)), ("remainder", (a, ones, zero))):
        for call in (comp, fn):  # compiled and eager: the same error
            with pytest.raises(RuntimeError, match=f"{name}: ZeroDivisionError"):
                call(*args)


# ---------------------------------------------------------------- 3. pow's special cases

BASES = [-inf, -8.0, -2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, inf, nan]
EXPONENTS = [0.5, 1 / 3, -1.0, 3.0, 0.0, nan, -0.5, -2.0, inf, -inf, 0.25]  # 1, 2: simplify


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pow_special_cases_match_numpy(dtype):
    x = tj.tensor(BASES, dtype=dtype)
    xs = tj.tensor(np.repeat(BASES, len(EXPONENTS)), dtype=dtype)
    ys = tj.tensor(np.tile(EXPONENTS, len(BASES)), dtype=dtype)
    half = tj.tensor(0.5, dtype=dtype)
    fn = lambda x, xs, ys, half: tuple(x ** e for e in EXPONENTS) + (xs ** ys, x ** half)  # noqa
    comp, got, want = _run(fn, x, xs, ys, half)
    base, t = np.array(BASES, dtype), np.dtype(dtype).type
    with np.errstate(all="ignore"):
        ref = [np.power(base, t(e)) for e in EXPONENTS] + [
            np.power(xs.numpy(), ys.numpy()), np.power(base, np.array(0.5, dtype))]
    # eager is numpy, or (-0.5, -2: simplify's spellings, as compiled code) within an ulp
    for e, g, w, r in zip(EXPONENTS + ["array", "0-d 0.5"], got, want, ref, strict=True):
        np.testing.assert_allclose(w, r, rtol=1.2e-7 if dtype == "float32" else 2.3e-16,
                                   equal_nan=True, err_msg=f"eager ** {e}")
        # exact, signed zeros included: (-0.0) ** 0.5 is -0.0, (-inf) ** 0.5 nan, 0 ** -1 inf
        number = ~np.isnan(r)  # a nan's sign bit is whatever the hardware made
        np.testing.assert_array_equal(np.signbit(g[number]), np.signbit(r[number]),
                                      err_msg=f"** {e}")
        np.testing.assert_allclose(g, r, rtol=4e-7 if dtype == "float32" else 1e-15,
                                   equal_nan=True, err_msg=f"** {e}")


DIVIDENDS = [1.0, -5.0, inf, -inf, -4.0, 4.0, 0.0, -0.0, 7.5, -7.5, 3.0, nan, 1e30]
DIVISORS = [0.1, inf, 2.0, -inf, 2.0, -2.0, -3.0, 3.0, -0.0, 0.0, 0.3, 1.0, 1e-30]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_floordiv_and_remainder_match_numpy(dtype):
    """Float // and % are numpy's npy_divmod: 1.0 // 0.1 is 9.0 (floor(1.0 / 0.1) would be 10),
    -5.0 // inf is -1.0, inf // 2.0 nan, and a zero remainder takes the divisor's sign."""
    xs = np.array(np.repeat(DIVIDENDS, len(DIVISORS)), dtype)
    ys = np.array(np.tile(DIVISORS, len(DIVIDENDS)), dtype)
    comp, got, want = _run(lambda x, y: (x // y, x % y), tj.tensor(xs), tj.tensor(ys))
    with np.errstate(all="ignore"):
        ref = [np.floor_divide(xs, ys), np.remainder(xs, ys)]
    _no_numpy_kernels(comp, tj.tensor(xs), tj.tensor(ys))
    for name, g, w, r in zip(["//", "%"], got, want, ref, strict=True):
        np.testing.assert_array_equal(w, r)  # eager is numpy
        number = ~np.isnan(r)
        np.testing.assert_array_equal(g, r, err_msg=name)
        np.testing.assert_array_equal(np.signbit(g[number]), np.signbit(r[number]), err_msg=name)


# ---------------------------------------------------------------- 4. float32 sum accuracy


def test_float32_sums_are_accurate():
    rng = np.random.default_rng(0)
    a = rng.random(1 << 21, dtype=np.float32)
    x, cols = tj.from_numpy(a), tj.from_numpy(a.reshape(-1, 2))
    fn = lambda x, cols: (x.mean(), x[::2].sum(), cols.sum(0),  # noqa: E731
                          x.reshape(64, -1).sum(-1), x.reshape(-1, 16).sum(-1))
    comp, got, want = _run(fn, x, cols)
    a64 = a.astype(np.float64)
    exact = [a64.mean(), a64[::2].sum(), a64.reshape(-1, 2).sum(0),
             a64.reshape(64, -1).sum(-1), a64.reshape(-1, 16).sum(-1)]
    for k, (g, e) in enumerate(zip(got, exact)):
        assert g.dtype == np.float32
        rel = np.max(np.abs(g - e) / np.abs(e))
        assert rel < 1e-6, (k, rel)  # one float32 running total: ~1e-5 here, 1e-4 at 1M
    # eager is numpy: pairwise along a contiguous row; its column sums (output 2) are one
    # running total per column, 1.5e-5 off here
    _same(got[:2] + got[3:], want[:2] + want[3:], rtol=1e-6)


# ---------------------------------------------------------------- 5. torch's answers at nan/inf


def test_sign_log_softmax_softmax_at_nan_and_inf():
    x = tj.tensor([[1.0, inf, 2.0], [-inf, -inf, -inf], [-inf, 0.0, 1.0], [inf, inf, 1.0],
                   [nan, 0.0, 1.0]])
    v = tj.tensor([nan, -0.0, 0.0, -3.0, 2.0, inf, -inf])
    t = tj.tensor([1, 0, 2, 2, 0])
    fn = lambda x, v, t: (v.sign(), F.log_softmax(x, -1), x.softmax(-1),  # noqa: E731
                          F.cross_entropy(x[2:3], t[2:3]), F.cross_entropy(x[:1], t[:1]))
    comp, got, want = _run(fn, x, v, t)
    _same(got, want)
    sign, logp, p, ce_finite, ce_inf = got
    # torch: sign is (x > 0) - (x < 0), so sign(nan) = 0 and sign(-0.0) = +0.0
    np.testing.assert_array_equal(sign, [0, 0, 0, -1, 1, 1, -1])
    assert not np.signbit(sign[:3]).any()
    # torch: a row holding +inf (or all -inf) is nan throughout; -inf entries of a finite row
    nan_row = [nan] * 3
    np.testing.assert_array_equal(logp[[0, 1, 3, 4]], [nan_row] * 4)
    np.testing.assert_allclose(logp[2], [-inf, -1.3132616, -0.3132617], rtol=1e-6)
    np.testing.assert_array_equal(p[[0, 1, 3, 4]], [nan_row] * 4)
    np.testing.assert_allclose(p[2], [0.0, 0.26894143, 0.7310586], rtol=1e-6)
    assert math.isnan(ce_inf) and ce_finite == pytest.approx(0.3132617, rel=1e-6)


def test_log_softmax_method_and_function_agree():
    x = tj.tensor([[1.0, inf, 2.0], [-inf, 0.0, 1.0]])
    np.testing.assert_array_equal(x.log_softmax(-1).numpy(), F.log_softmax(x, -1).numpy())
    np.testing.assert_array_equal(tj.tensor([1, 2]).log_softmax(0).numpy(),
                                  F.log_softmax(tj.tensor([1.0, 2.0]), 0).numpy())
