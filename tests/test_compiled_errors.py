"""Errors raised by compiled code name the IR node, the op, the shapes and the user's own line
(not a line of the generated module), as the reference interpreter's do; see
runtime/executor.py for how (the failing call is re-run through the interpreter)."""

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit.runtime.interpret import GraphRuntimeError

THIS_FILE = __file__


def _line_of(fn, text: str) -> int:
    """The line number of the first line of ``fn``'s source containing ``text``."""
    import inspect
    lines, start = inspect.getsourcelines(fn)
    return start + next(k for k, line in enumerate(lines) if text in line)


def _assert_names_line(exc, fn, text: str):
    msg = str(exc)
    assert f"{THIS_FILE}:{_line_of(fn, text)}" in msg, msg
    assert text in msg, msg  # the source line itself is shown
    assert "tj_" not in msg, "a generated module's line leaked into the message: " + msg


def gather_twice(x, idx):
    y = x * 2
    return y.gather(1, idx)  # the failing line


def test_gather_out_of_bounds_names_value_node_and_line():
    f = tj.trace(gather_twice)
    x = tj.ones(2, 3)
    f(x, tj.tensor([[0], [2]]))
    assert f.specs()[0].runner is not None  # really compiled
    with pytest.raises(IndexError, match=r"(?s)node %\d+ \(gather\).*index 5 is out of bounds "
                       r"for dimension 1 with size 3 \(operands \(2, 3\):float32, "
                       r"\(2, 1\):int64\)") as e:
        f(x, tj.tensor([[0], [5]]))
    assert isinstance(e.value, GraphRuntimeError)
    _assert_names_line(e.value, gather_twice, "y.gather(1, idx)")
    # the same function, fine again afterwards
    np.testing.assert_array_equal(f(x, tj.tensor([[1], [0]])).numpy(), [[2.0], [2.0]])


def test_compiled_kernel_carries_the_index_and_size():
    f = tj.trace(gather_twice)
    x = tj.ones(2, 3)
    f(x, tj.tensor([[0], [2]]))
    runner = f.specs()[0].runner
    with pytest.raises(IndexError) as e:
        runner(x.numpy(), np.array([[0], [-4]]))
    assert e.value.args[1:] == (-4, 3)
    assert "gather: index out of bounds for dimension 1" in e.value.args[0]


def cross_entropy_loss(logits, target):
    return F.cross_entropy(logits, target)  # the failing line


def test_cross_entropy_target_out_of_range_names_the_calling_line():
    f = tj.trace(cross_entropy_loss)
    x = tj.ones(2, 3)
    f(x, tj.tensor([0, 2]))
    with pytest.raises(IndexError, match=r"(?s)node %\d+ \(gather\).*index 3 is out of bounds "
                       r"for dimension 1 with size 3") as e:
        f(x, tj.tensor([0, 3]))
    _assert_names_line(e.value, cross_entropy_loss, "F.cross_entropy(logits, target)")


def pick_rows(x, idx):
    return x[idx] + 1  # the failing line


def test_tensor_index_getitem_names_the_user_line_not_the_generated_module():
    f = tj.trace(pick_rows)
    x = tj.ones(3, 2)
    f(x, tj.tensor([0, 2]))
    with pytest.raises(IndexError, match=r"(?s)getitem: index 7 is out of bounds for axis 0 "
                       r"with size 3 \(operands \(3, 2\):float32, \(2,\):int64\)") as e:
        f(x, tj.tensor([0, 7]))
    _assert_names_line(e.value, pick_rows, "x[idx] + 1")


def bump_then_gather(x, idx):
    x.add_(1.0)
    idx.add_(1)  # the index the failing gather reads is updated in place first
    return x.gather(1, idx)  # the failing line


def test_failed_call_leaves_inputs_as_they_were_and_the_rerun_sees_them_so():
    f = tj.trace(bump_then_gather)
    x, idx = tj.zeros(2, 3), tj.tensor([[0], [1]])
    f(x, idx)
    assert x.tolist() == [[1.0] * 3] * 2 and idx.tolist() == [[1], [2]]
    idx = tj.tensor([[0], [2]])
    # NOTE: compiled code never writes its inputs (updates are copied back after a call that
    # succeeded), so the interpreter re-run reads idx as the call got it: 2 + 1 is 3, not 4
    with pytest.raises(IndexError, match="index 3 is out of bounds for dimension 1 with size 3"):
        f(x, idx)
    assert x.tolist() == [[1.0] * 3] * 2 and idx.tolist() == [[0], [2]]


def noisy_gather(x, idx):
    r = tj.rand(2, 1)
    return x.gather(1, idx + (r * 0).long())


def test_the_diagnostic_rerun_draws_no_random_numbers():
    from tracejit import creation

    f = tj.trace(noisy_gather, backend="interpret")
    x, bad = tj.ones(2, 3), tj.tensor([[0], [9]])
    f(x, tj.tensor([[0], [1]]))

    def compiled(*arrays):  # stands for generated code: draws, then fails
        creation._rng().random()
        raise IndexError("gather: index out of bounds")

    f.specs()[0].runner = compiled
    tj.manual_seed(5)
    with pytest.raises(IndexError, match="index 9 is out of bounds"):
        f(x, bad)
    after_failure = tj.rand(3).tolist()
    tj.manual_seed(5)
    creation._rng().random()
    assert after_failure == tj.rand(3).tolist()


def test_compiled_failure_the_interpreter_does_not_reproduce_falls_back_with_a_warning():
    f = tj.trace(lambda x: x * 2 + 1, backend="interpret")
    x = tj.ones(3)
    f(x)
    spec = f.specs()[0]

    def broken(*arrays):
        raise ValueError("simulated bug in generated code")

    spec.runner = broken
    with pytest.warns(RuntimeWarning, match="simulated bug.*reference interpreter runs the graph "
                      "without error"):
        out = f(x)
    assert out.tolist() == [3.0, 3.0, 3.0]


def test_interpreted_graph_errors_name_the_node_and_line():
    f = tj.trace(pick_rows, backend="interpret")
    x = tj.ones(3, 2)
    f(x, tj.tensor([0, 2]))
    with pytest.raises(IndexError, match=r"(?s)node %\d+ \(getitem\).*index 5 is out of bounds"
                       ) as e:
        f(x, tj.tensor([5, 0]))
    _assert_names_line(e.value, pick_rows, "x[idx] + 1")


def test_graph_errors_pickle_as_their_type():
    import pickle

    from tracejit.errors import graph_error

    e = graph_error("node %3 (gather) failed: ...", IndexError("index 7"))
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is type(e) and isinstance(back, IndexError)
    assert str(back) == str(e)
    assert type(graph_error("x", KeyboardInterrupt())) is GraphRuntimeError


def weighted_pick(w, idx):
    return (w * 2).gather(1, idx).sum()  # the failing line


@pytest.mark.slow  # compiles a forward and a backward graph (~8 s)
def test_compiled_forward_of_a_differentiable_call_names_the_line():
    f = tj.trace(weighted_pick)
    w = tj.ones(2, 3, requires_grad=True)
    for _ in range(3):  # traced with w.grad None, then not None, then compiled
        f(w, tj.tensor([[0], [1]])).backward()
    assert any(s.compiled_grad is not None for s in f.specs())
    with pytest.raises(IndexError, match=r"(?s)node %\d+ \(gather\).*index 4 is out of bounds "
                       r"for dimension 1 with size 3") as e:
        f(w, tj.tensor([[0], [4]]))
    _assert_names_line(e.value, weighted_pick, "(w * 2).gather(1, idx).sum()")


def test_a_failing_call_runs_the_compiled_code_once():
    f = tj.trace(gather_twice)
    x = tj.ones(2, 3)
    f(x, tj.tensor([[0], [2]]))
    spec = f.specs()[0]
    runs = []
    compiled = spec.runner

    def counting(*arrays):
        runs.append(1)
        return compiled(*arrays)

    spec.runner = counting
    with pytest.raises(IndexError, match="index 5 is out of bounds"):
        f(x, tj.tensor([[0], [5]]))
    assert len(runs) == 1  # the error comes from the first run, not from running it again
