"""Differential fuzzing (issue 9): random programs built from the op table run eagerly, through
the reference interpreter (the traced function's own call, and ``interpret`` on the raw and the
optimised graph) and compiled (first and second call of a ``tracejit.trace``d function); values,
dtypes, shapes and in-place updates of inputs must agree (tolerances: tests/fuzz/executors.py).

The default run is small and deterministic (``derandomize=True``: the same examples every time).
More examples, random ones (every fuzz test, N examples each)::

    TRACEJIT_FUZZ_EXAMPLES=3000 pytest tests/fuzz

or the ``slow`` sweep (2000 random programs of up to 10 steps, about 20 minutes here)::

    pytest tests/fuzz -m slow

A failure prints the shrunk program as Python (``P(inputs=[...], steps=[...], outputs=[...])``):
paste it into tests/fuzz/test_regressions.py as a plain test.
"""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, note, settings

from tracejit import ops

from .conftest import fuzz_settings
from .executors import check_all
from .strategies import INPLACE, KNOWN_KINDS, NOT_BUILT, WEIGHTS, family_names, programs, step_op


@fuzz_settings(40)
@given(programs())
def test_executors_agree(p):
    note(repr(p))
    check_all(p)


@fuzz_settings(20)
@given(programs(max_steps=10))
def test_executors_agree_longer_programs(p):
    note(repr(p))
    check_all(p)


@pytest.mark.slow
@settings(settings.get_profile("fuzz-slow"), max_examples=2000)
@given(programs(max_steps=10))
def test_executors_agree_slow_sweep(p):
    note(repr(p))
    check_all(p)


# ----------------------------------------------------------------------------------------------
# the strategies reach what matters (no executor runs here: drawing is cheap)


def _facts(p) -> set:
    infos = p.meta["infos"]
    facts = set()
    n_in = len(p.inputs)
    for i in p.inputs:
        facts.add(f"layout {i.layout}")
        facts.add(f"dtype {i.dtype}")
        if i.shape == ():
            facts.add("0-d input")
        if 0 in i.shape:
            facts.add("size-0 input")
        if 1 in i.shape:
            facts.add("size-1 dim")
    for s in p.steps:
        facts.add(f"op {s.op}")
        if s.op in INPLACE:
            target = s.args[0]
            facts.add("in-place on an input" if target < n_in else "in-place on a clone")
        refs = [a for a in s.args if hasattr(a, "bit_length") and type(a).__name__ == "V"]
        shapes = {infos[r].shape for r in refs}
        if ops.OPS.get(s.op) is not None and ops.OPS[s.op].kind == ops.ELEMENTWISE:
            if len(shapes) > 1:
                facts.add("broadcast")
            if any(not type(a).__name__ == "V" for a in s.args):
                facts.add("python scalar operand")
    for r in p.outputs:
        if r < n_in:
            facts.add("output is an input")
        elif infos[r].view == "view" and infos[r].root is not None and infos[r].root < n_in:
            facts.add("output is a view of an input")
        elif r >= n_in and p.steps[r - n_in].op == "tensor":
            facts.add("output is a constant")
    if len(p.outputs) > 1:
        facts.add("several outputs")
        used = {a for s in p.steps for a in s.args if type(a).__name__ == "V"}
        if any(r in used for r in p.outputs):
            facts.add("an output feeds another value")
    if any(i.special for i in infos):
        facts.add("nan or inf")
    return facts


REQUIRED = {"0-d input", "size-0 input", "size-1 dim", "broadcast", "python scalar operand",
            "in-place on an input", "in-place on a clone", "output is an input",
            "output is a view of an input", "output is a constant", "several outputs",
            "an output feeds another value", "nan or inf", "layout T", "layout s", "layout o",
            "layout r", "dtype float32", "dtype float64", "dtype int32", "dtype int64",
            "dtype bool"}


def test_strategies_reach_the_interesting_cases():
    """Over 300 drawn programs, every interesting case shows up."""
    seen = collections.Counter()

    @fuzz_settings(300)
    @given(programs())
    def draw(p):
        seen.update(_facts(p))

    draw()
    missing = REQUIRED - set(seen)
    assert not missing, f"never drawn: {sorted(missing)} (seen: {dict(seen)})"


FAMILIES = [(kind, name) for kind in WEIGHTS for name in family_names(kind)]


def test_every_row_has_a_builder():
    unknown = {n for n, op in ops.OPS.items() if op.kind not in KNOWN_KINDS}
    assert not unknown, f"op rows of kinds no strategy builds: {unknown}; add a builder"
    rows = {n for n in ops.OPS if n not in NOT_BUILT}
    assert rows <= {name for _, name in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES, ids=[n for _, n in FAMILIES])
def test_every_row_is_drawn(family):
    """The strategies can build each op row (and in-place method) from random inputs."""
    built = []

    @fuzz_settings(6)
    @given(programs(first=family))
    def draw(p):
        built.append(any(s.op == step_op(family[1]) for s in p.steps))

    draw()
    assert any(built), f"{family[1]} was never built in 6 programs"
