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


# ------------------------------------------------------------------------------------------
# a sweep of common mistakes: each raises naming the op, the shapes and this file's line,
# eagerly and inside @trace (where the error comes while tracing)

lin = tj.nn.Linear(5, 2)


def _bad_setitem(x):
    x = x.clone()
    x[tj.tensor([7])] = 1.0
    return x


MISTAKES = [  # (name, function of x = ones(2, 3), exception type, pattern)
    ("matmul", lambda x: x @ tj.ones(4, 5), tj.ShapeError, r"\(2, 3\) @ \(4, 5\)"),
    ("broadcast", lambda x: x + tj.ones(4), tj.ShapeError, r"\(2, 3\) and \(4,\)"),
    ("int-only op on bool", lambda x: x.bool() // x.bool(), tj.DTypeError,
     r"floordiv: not implemented for bool.*\(2, 3\):bool"),
    ("logical op on floats", lambda x: x & x, NotImplementedError, r"& on float32.*\(2, 3\)"),
    ("where condition", lambda x: tj.where(x, x, 0.0), tj.DTypeError,
     r"where: condition must be a bool tensor, got float32 \(operands \(2, 3\):float32"),
    ("index", lambda x: x[5], IndexError, r"getitem: index 5 .*size 2.*\(2, 3\)"),
    ("tensor index", lambda x: x[tj.tensor([0, 4])], IndexError,
     r"getitem: index 4 .*size 2 \(operands \(2, 3\):float32, \(2,\):int64\)"),
    ("setitem index", _bad_setitem, IndexError, r"index_put: index 7 .*size 2.*\(2, 3\)"),
    ("gather", lambda x: x.gather(1, tj.tensor([[0], [3]])), IndexError,
     r"gather: index 3 is out of bounds for dimension 1 with size 3"),
    ("cat", lambda x: tj.cat([x, tj.ones(2, 4)]), tj.ShapeError, r"cat: shapes \(2, 3\), \(2, 4\)"),
    ("stack", lambda x: tj.stack([x, tj.ones(3)]), tj.ShapeError, r"stack: .*\(2, 3\), \(3,\)"),
    ("reshape", lambda x: x.reshape(4, 2), tj.ShapeError, r"\(4, 2\) is invalid .*\(2, 3\)"),
    ("sum dim", lambda x: x.sum(5), IndexError,
     r"sum: dimension 5 out of range for a tensor of shape \(2, 3\) \(expected .*\[-2, 1\]\)"),
    ("softmax dim", lambda x: x.softmax(3), IndexError,
     r"softmax: amax: dimension 3 out of range for a tensor of shape \(2, 3\)"),
    ("transpose dim", lambda x: x.transpose(0, 4), IndexError,
     r"transpose: dimension 4 out of range for a tensor of shape \(2, 3\)"),
    ("squeeze dim", lambda x: x.squeeze(2), IndexError, r"squeeze: dimension 2 .*\(2, 3\)"),
    ("duplicate dims", lambda x: x.sum((1, -1)), tj.ShapeError, r"sum: dim 1 appears multiple"),
    ("expand", lambda x: x.expand(3, 4), tj.ShapeError, r"expand: .*\(2, 3\)"),
    ("linear in_features", lambda x: lin(x), tj.ShapeError, r"\(2, 3\) @ \(5, 2\)"),
    ("mse shapes", lambda x: F.mse_loss(x, tj.ones(3, 2)), tj.ShapeError,
     r"mse_loss: sub: shapes \(2, 3\) and \(3, 2\)"),
    ("cross_entropy float target", lambda x: F.cross_entropy(x, tj.tensor([0.0, 1.0])),
     tj.ShapeError, r"cross_entropy: target must hold integer class indices"),
    ("cross_entropy target range", lambda x: F.cross_entropy(x, tj.tensor([0, 3])), IndexError,
     r"(nll_loss: target 3 is out of bounds for 3 classes|cross_entropy: gather: index 3)"),
    ("mean of ints", lambda x: x.long().mean(), tj.DTypeError, r"mean\(\).*int64"),
    ("t() of 3-d", lambda x: x.reshape(1, 2, 3).t(), tj.ShapeError, r"got 3 \(shape \(1, 2, 3\)"),
    ("flatten dims", lambda x: x.flatten(1, 0), ValueError, r"start_dim .*\(1 > 0, shape"),
    ("negative pad", lambda x: F.pad(x, (-1, 0)), NotImplementedError, r"pad: negative"),
    ("clamp bounds", lambda x: x.clamp(), ValueError, r"clamp: at least one of min and max"),
    ("max_pool2d window", lambda x: F.max_pool2d(x.reshape(1, 1, 2, 3), 4), tj.ShapeError,
     r"max_pool2d: input of spatial size \(2, 3\) is too small for kernel \(4, 4\)"),
    ("reshape to a string", lambda x: x.reshape("a", 3), TypeError,
     r"reshape: sizes must be integers, got 'a' \(str\) in \('a', 3\)"),
    ("zeros of a string", lambda x: x + tj.zeros("2"), TypeError, r"zeros: sizes must be integers"),
    ("unknown device", lambda x: x.to("tpu"), TypeError,
     r"to: 'tpu' is neither a device \('cpu', 'cuda', 'cuda:0'\) nor a dtype"),
    ("full of a string", lambda x: x + tj.full((2, 3), "a"), TypeError,
     r"full: fill_value must be a number, got str"),
    ("arange step", lambda x: x + tj.arange(0, 3, 0), ValueError, r"arange: step must be nonzero"),
]


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "traced"])
@pytest.mark.parametrize("name, fn, exc, pattern", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_common_mistakes_name_op_shapes_and_line(name, fn, exc, pattern, traced):
    run = tj.trace(fn) if traced else fn
    with pytest.raises(exc, match=pattern) as e:
        run(tj.ones(2, 3))
    line = fn.__code__.co_firstlineno if fn.__name__ == "<lambda>" else \
        fn.__code__.co_firstlineno + 2
    assert f"{THIS_FILE}:{line}" in str(e.value), str(e.value)


def test_autograd_errors_name_shapes_and_line():
    x = tj.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"scalar outputs \(got an output of shape \(3,\)") as e:
        (x * 2).backward()
    assert "(x * 2).backward()" in str(e.value)
    _assert_user_line(e)
    with pytest.raises(RuntimeError, match=r"gradient of shape \(4,\) does not match the "
                       r"output's shape \(3,\)") as e:
        (x * 2).backward(tj.ones(4))
    _assert_user_line(e)
    with pytest.raises(RuntimeError, match=r"does not require grad .*shape \(\)") as e:
        tj.ones(3).sum().backward()
    _assert_user_line(e)
    y = x.exp().sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"backward through the graph a second time") as e:
        y.backward()
    _assert_user_line(e)


def test_modified_saved_tensor_names_the_op_and_shape():
    x = tj.ones(3, requires_grad=True)
    h = x * 1
    loss = (h * h).sum()
    h.add_(1.0)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: its input 0 of "
                       r"shape \(3,\), saved by mul \(MulBackward0\), is at version 1, expected "
                       r"version 0") as e:
        loss.backward()
    assert "loss.backward()" in str(e.value)
    _assert_user_line(e)


def test_leaf_and_dtype_errors_name_the_line():
    with pytest.raises(RuntimeError, match=r"floating point dtype.*int64, shape \(2,\)") as e:
        tj.tensor([1, 2], requires_grad=True)
    _assert_user_line(e)
    with pytest.raises(RuntimeError, match=r"numpy\(\) on Tensor that requires grad \(shape "
                       r"\(3,\)\)") as e:
        tj.ones(3, requires_grad=True).numpy()
    _assert_user_line(e)
    w = tj.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"non-leaf Tensor \(a tensor of shape \(3,\) computed "
                       r"by MulBackward0\)") as e:
        tj.optim.SGD([w * 2], lr=0.1)
    _assert_user_line(e)
