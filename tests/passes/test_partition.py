"""partition: a joint forward+backward graph splits into a forward graph that also returns the
residuals and a backward graph that reads them; free views and constants are made again in the
backward graph instead of being saved."""

import numpy as np

from tracejit.ir import GraphBuilder
from tracejit.passes import dce, verify
from tracejit.passes.partition import partition

from . import node, ops_of, random_args, run


def _joint():
    """y = exp(x); dy = c * reshape(exp(x)) (c: the cotangent, the last input)."""
    b = GraphBuilder()
    x = b.add_input("x", (2, 3), np.float32)
    c = b.add_input("grad_out0", (2, 3), np.float32)
    y = node(b, "exp", x)
    flat = node(b, "reshape", y, shape=(6,))
    back = node(b, "reshape", flat, shape=(2, 3))
    g = node(b, "mul", c, back)
    return b.build([y, g]), y


def test_forward_returns_residuals_and_backward_reads_them():
    joint, y = _joint()
    forward, backward = partition(joint, n_out=1, n_cot=1)
    verify(forward)
    verify(backward)
    # the forward part: what needs no cotangent (the views it no longer uses go in dce, which
    # runs after); exp's value is its result and the one residual
    assert forward.input_names == ("x",)
    assert ops_of(forward) == ["exp", "reshape", "reshape"] and ops_of(dce(forward)) == ["exp"]
    assert forward.outputs == (y, y)
    # the views of the residual are made again, not saved
    assert backward.input_names == ("x", f"saved{y.id}", "grad_out0")
    assert ops_of(backward) == ["reshape", "reshape", "mul"]
    # forward then backward computes what the joint graph does
    args = random_args(joint)
    want = run(joint, args)
    fwd = run(forward, args[:1])
    got = run(backward, [args[0], fwd[1], args[1]])
    np.testing.assert_array_equal(fwd[0], want[0])
    np.testing.assert_array_equal(got[0], want[1])
