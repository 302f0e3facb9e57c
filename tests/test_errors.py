"""Errors name the op, the shapes and the user's own source line."""

import pytest

import tracejit as tj
import tracejit.nn.functional as F

THIS_FILE = __file__


def _assert_user_line(exc_info):
    assert THIS_FILE in str(exc_info.value), "error should point at the user's line"


def test_broadcast_mismatch():
    with pytest.raises(tj.ShapeError, match=r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"
                       ) as e:
        tj.ones(2, 3) + tj.ones(4)  # the line the error must show
    _assert_user_line(e)
    assert "tj.ones(2, 3) + tj.ones(4)" in str(e.value)


def test_matmul_inner_dims():
    with pytest.raises(tj.ShapeError, match=r"matmul: inner dimensions do not match: \(2, 3\) @ "
                       r"\(4, 5\) \(3 != 4\)") as e:
        tj.ones(2, 3) @ tj.ones(4, 5)
    _assert_user_line(e)
    with pytest.raises(tj.ShapeError, match=r"\(2, 3, 4\) @ \(5, 2\)"):
        tj.ones(2, 3, 4) @ tj.ones(5, 2)
    with pytest.raises(ValueError, match="matmul"):  # ShapeError is also a ValueError
        tj.ones(3) @ tj.ones(4)


def test_wrong_index_dtype():
    x = tj.ones(3, 4)
    with pytest.raises(TypeError, match="gather: index must be an integer tensor.*float32") as e:
        x.gather(1, tj.zeros(3, 1))
    _assert_user_line(e)
    with pytest.raises(TypeError, match="indices must be long, int or bool tensors, got float32"):
        x[tj.tensor([0.0])]
    with pytest.raises(TypeError, match="embedding: indices must be an integer tensor"):
        F.embedding(tj.tensor([0.5]), x)
    with pytest.raises(tj.ShapeError,
                       match="cross_entropy: target must hold integer class indices"):
        F.cross_entropy(tj.ones(2, 3), tj.tensor([0.0, 1.0]))


def test_backward_on_non_scalar():
    x = tj.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"grad can be implicitly created only for scalar "
                       r"outputs \(got an output of shape \(3,\)"):
        (x * 2).backward()


def test_inplace_on_leaf_requiring_grad():
    w = tj.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"leaf Variable that requires grad is being used in an "
                       r"in-place operation \(add_ on a tensor of shape \(3,\)\)") as e:
        w.add_(1.0)
    _assert_user_line(e)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w += 1
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w[0] = 2.0
    with tj.no_grad():
        w -= 0.5
    assert w.tolist() == [0.5, 0.5, 0.5]


def test_index_out_of_bounds_names_op_and_shape():
    x = tj.ones(2, 3)
    with pytest.raises(IndexError, match=r"getitem.*\(2, 3\)"):
        x[tj.tensor([5])]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0]


def test_reduction_dim_out_of_range():
    with pytest.raises(IndexError, match=r"sum: dimension 2 out of range.*\[-2, 1\]"):
        tj.ones(2, 3).sum(2)


def test_reshape_invalid():
    with pytest.raises(tj.ShapeError, match=r"shape \(4, 2\) is invalid for input of shape "
                       r"\(2, 3\) \(6 elements\)"):
        tj.ones(2, 3).reshape(4, 2)


def test_errors_inside_library_compositions_point_at_user():
    with pytest.raises(tj.ShapeError) as e:
        F.linear(tj.ones(2, 3), tj.ones(4, 5))  # user line: the F.linear call
    _assert_user_line(e)
    assert "F.linear(tj.ones(2, 3), tj.ones(4, 5))" in str(e.value)
