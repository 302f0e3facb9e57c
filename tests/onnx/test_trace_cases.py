"""Every traced-op case of tests/test_trace_ops.py that exports: exported, checked
(``full_check=True``), run in onnxruntime and equal to tracejit within float32 tolerance.
The default run takes a deterministic sample (the first case of every family, then every
``STRIDE``-th); ``pytest -m slow`` runs them all (4000+ cases, about 25 s here).

A case is not exportable when eager raises for it, when it draws random numbers (refused: the
message says so) or when it computes nothing but an in-place update of its argument."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import tracejit as tj  # noqa: E402
from tracejit.codegen.onnx import OnnxExportError  # noqa: E402

from .. import test_trace_ops as T  # noqa: E402
from .harness import assert_close, leaves, run, session  # noqa: E402

STRIDE = 7


@pytest.fixture(autouse=True)
def _trace_env(monkeypatch):
    monkeypatch.setenv("TRACEJIT_BACKEND", "interpret")
    monkeypatch.delenv("TRACEJIT_DISABLE", raising=False)
    tj.set_mode("trace")


def _family(case_id: str) -> str:
    return re.split(r"-\d|-0d|-(?:contig|strided)", case_id)[0]


def _sample() -> list:
    seen: dict = {}
    out = []
    for c in T.CASES:
        k = seen.get(_family(c.id), 0)
        seen[_family(c.id)] = k + 1
        if k % STRIDE == 0:
            out.append(c)
    return out


SAMPLE = _sample()


def check_case(case) -> str:
    """Export and compare one case; what happened ("ok", or why it does not export)."""
    args = T._make(case)
    T._seed(case)
    try:
        want = case.fn(*args)
    except Exception:
        return "eager raises"
    try:
        model = tj.onnx.export(case.fn, *T._make(case))
    except OnnxExportError as e:
        # refusals name the op and, where the op came from user code, the line
        assert re.search(r"op '\w+'", str(e)), str(e)
        assert case.seed is not None or "float64" in str(e) or \
            "has no ONNX operator" in str(e), f"{case.id}: {e}"
        return "refused"
    except tj.TraceError as e:
        assert "returns no tensors" in str(e), str(e)
        return "no results"
    outs = run(session(model), [a._data for a in T._make(case) if isinstance(a, tj.Tensor)])
    wants = [w for w in leaves(want) if w is not None]
    assert len(outs) == len(wants)
    for i, (g, w) in enumerate(zip(outs, wants)):
        assert_close(g, w, f"{case.id}: output {i}")
    return "ok"


@pytest.mark.parametrize("case", SAMPLE, ids=[c.id for c in SAMPLE])
def test_sampled_case_exports_and_matches(case):
    check_case(case)


def test_the_sample_covers_every_exportable_op_family():
    families = {_family(c.id) for c in T.CASES}
    assert families == {_family(c.id) for c in SAMPLE}
    assert len(SAMPLE) < len(T.CASES) // 2


@pytest.mark.slow
def test_every_case_exports_and_matches():
    counts: dict = {}
    for case in T.CASES:
        tj.manual_seed(0)
        what = check_case(case)
        counts[what] = counts.get(what, 0) + 1
    assert counts["ok"] > 0.9 * len(T.CASES), counts
