"""Failures the fuzzers found, shrunk, kept as plain tests. Each says what was wrong.

A bug found but not yet fixed is kept here as a strict xfail with its diagnosis (it fails once
the fix lands: then drop the mark, and the strategies' SKIP_ switch if it has one).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tracejit as tj

from .executors import check_all
from .program import In, P, S, V, inf, nan  # noqa: F401 - names printed programs use
from .test_grad_differential import check_gradients

# ----------------------------------------------------------------------------------------------
# numpy warnings torch does not give


@pytest.mark.parametrize("fn", [lambda x: x.sin(), lambda x: x.cos(),
                                lambda x: x.reshape(1, 2) @ tj.tensor([[0.0], [1.0]]),
                                lambda x: tj.tensor([inf, -inf]).sum(),
                                lambda x: tj.tensor([3e38, 3e38]).sum(),
                                lambda x: tj.tensor([3e38, 3e38]).prod(),
                                lambda x: tj.tensor([3e38, 3e38]).cumsum(0)],
                         ids=["sin", "cos", "matmul", "sum-nan", "sum-overflow", "prod",
                              "cumsum"])
def test_no_numpy_warning_on_inf(fn):
    # sin(inf), cos(inf), inf * 0 inside matmul, inf - inf and overflow inside sum, prod and
    # cumsum are nan/inf silently in torch; the rows were not marked noisy, so eager calls (and
    # the interpreter) printed numpy RuntimeWarnings
    x = tj.tensor([inf, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not np.isfinite(fn(x).numpy()).all()


def test_sin_of_inf_program():
    check_all(P(inputs=[In((2,), 'float32', 'c', [inf, 1.0])], steps=[S('sin', V(0))],
                outputs=[V(1)]))


# ----------------------------------------------------------------------------------------------
# found while the compiler's and tracer's fixes were in flight; fixed there


def test_no_warning_when_promotion_overflows():
    x, y = tj.tensor([1.0]), tj.tensor(np.float64(1e300))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (x + y).tolist() == [inf]


@pytest.mark.parametrize("shape", [(), (1,), (2, 3)])
def test_index_put_accumulate_empty_key(shape):
    # eager: x + 2; compiled: NotImplementedError: No definition for lowering
    # <built-in function getitem>(Array(int64, 0, 'C', ...), ...)
    n = int(np.prod(shape))
    values = np.arange(n).reshape(shape).tolist()
    check_all(P(inputs=[In(shape, 'int64', 'c', values)],
                steps=[S('.index_put', V(0), (), 2, accumulate=True)],
                outputs=[V(1)]))


def test_index_put_accumulate_empty_key_minimal():
    # the same through the plain API: the second call runs the compiled entry
    # (a Python scalar or a 1-d value fails; a 0-d tensor value happens to compile)
    f = tj.trace(lambda x: x.index_put((), 2.0, accumulate=True))
    for _ in range(2):
        assert f(tj.tensor([1.0])).tolist() == [3.0]


def test_copy_into_itself():
    check_all(P(inputs=[In((2,), 'float64', 'c', [1.0, 2.0])],
                steps=[S('.copy_', V(0), V(0)), S('mul', V(1), 2.0)],
                outputs=[V(2)]))


def test_grad_0d_outputs_feeding_reductions():
    check_gradients(P(inputs=[In((), 'float64', 'c', -0.5289333558197755)],
                      steps=[S('sum', V(0), dims=(), keepdim=True),
                             S('prod', V(1), dims=(), keepdim=True),
                             S('.clone', V(2)),
                             S('tensor', value=np.array(1.0, dtype='float64')),
                             S('.__setitem__', V(3), (), V(4))],
                      outputs=[V(5), V(2), V(1)]))


def test_0d_value_feeding_sum_and_another_op():
    # minimal: f(x) = (x + 1).sum() + (x + 1) for a 0-d x; fine for x of shape (1,)
    f = tj.trace(lambda x: (x + 1).sum() + (x + 1))
    x = tj.tensor(np.float32(4))
    assert f(x).item() == 10.0
    assert f(x).item() == 10.0


def test_0d_value_feeding_sum_program():
    # the fuzzer's shrunk program (sign -> prod over () -> logical_or): KeyError at the first
    # call, in the compiler
    p = P(inputs=[In((), 'int32', 'o', 4), In((), 'int32', 'c', 2)],
          steps=[S('sign', V(0)), S('prod', V(0), dims=(), keepdim=True),
                 S('prod', V(2), dims=(), keepdim=False), S('add', V(2), V(2)),
                 S('sub', V(1), V(3)), S('logical_or', V(4), V(5))],
          outputs=[V(7)], bare=True)
    check_all(p)


def test_inplace_result_wider_than_target():
    # the shrunk program: interpret (graph call): output 0: dtype float64 != eager float32
    check_all(P(inputs=[In((4,), 'float32', 's', [0.0, 0.0, -1.0, 0.0])],
                steps=[S('tensor', value=np.array([-3.0], dtype='float64')),
                       S('.mul_', V(0), V(1))],
                outputs=[V(2)]))


def test_inplace_result_wider_than_target_then_used():
    f = tj.trace(lambda x: x.mul_(tj.tensor([-3.0], dtype=tj.float64)) + 0)
    for _ in range(2):
        assert f(tj.tensor([1.0, 2.0])).dtype == tj.float32


@pytest.mark.parametrize("fn", [lambda x: x.log().exp(), lambda x: x.exp().log(),
                                lambda x: x.exp() * (-x).exp(), lambda x: x.log().exp().sum(),
                                lambda x: x.log().exp().sum(-1, keepdim=True)],
                         ids=["exp-log", "log-exp", "exp-times-exp", "sum-exp-log", "row-sum"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_fold_of_transcendental_pairs(fn, dtype):
    # with the kernels' reassoc flag LLVM folded float64 exp(log(x)) into x: -1 where eager
    # gives nan; log(exp(1000.)) into 1000 where eager gives inf
    x = tj.tensor(np.array([0.0, 2.0, -1.0, 1000.0], dtype=dtype))
    f = tj.trace(fn)
    eager = f(x).numpy()
    np.testing.assert_allclose(f(x).numpy(), eager, rtol=1e-6)  # nan and inf where eager's are
    assert f.cache_info().hits == 1


def test_exp_of_log_program():
    # the slow sweep's shrunk program
    check_all(P(inputs=[In((), 'float32', 'c', 0.0),
                        In((4,), 'float64', 'c', [0.0, 0.0, 0.0, -1.0])],
                steps=[S('log', V(1)), S('exp', V(2))],
                outputs=[V(3)]))


def test_numpy_fallback_with_an_infinite_scalar_operand():
    # a node run through numpy in a Python entry got its scalar operands spelled as source
    # text: repr(inf) is ``inf``, an unbound name, so the compiled call raised NameError (the
    # interpreter's result was used, with a warning). Fallbacks now keep the node's own scalars.
    check_all(P(inputs=[In((4,), 'float32', 'c', [0.0, 0.0, 0.0, -1.53708815574646])],
                steps=[S('cumsum', V(0), dim=0),
                       S('.index_put', V(1), (...,), inf, accumulate=False),
                       S('.index_put', V(1), (...,), nan, accumulate=False)],
                outputs=[V(2), V(3), V(1)]))


@pytest.mark.parametrize("dtype", ["float32", "int64"])
@pytest.mark.parametrize("a_shape", [(2,), (1,)], ids=["same", "broadcast"])
def test_copy_into_an_input_then_update_the_source_in_place(dtype, a_shape):
    # b.copy_(a); a.add_(1): b's new value is input a's own array, or a broadcast view of it
    # (the copy is functionalised away); written back after a's update, b got a + 1
    check_all(P(inputs=[In(a_shape, dtype, 'c', [0] * a_shape[0]), In((2,), dtype, 'c', [0, 0])],
                steps=[S('.copy_', V(1), V(0)), S('neg', V(2)), S('neg', V(3)),
                       S('.add_', V(0), 1)],
                outputs=[V(5)]))
