"""Fuzz-suite settings: the hypothesis profiles and the tracing environment (see
test_differential.py's docstring for how to run more examples)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import tracejit as tj

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
# the default run: few examples, the same ones every time (CI is deterministic)
settings.register_profile("fuzz-default", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=_SUPPRESS, print_blob=True)
# TRACEJIT_FUZZ_EXAMPLES=N: N random (not derandomized) examples per test
settings.register_profile("fuzz-slow", max_examples=int(os.environ.get(
    "TRACEJIT_FUZZ_EXAMPLES", "2000")), deadline=None, derandomize=False,
    suppress_health_check=_SUPPRESS, print_blob=True)


def fuzz_settings(default: int | None = None):
    """Settings of one fuzz test: ``default`` examples in the default run (the profile's 40
    when None), ``TRACEJIT_FUZZ_EXAMPLES`` of them when that variable is set."""
    if os.environ.get("TRACEJIT_FUZZ_EXAMPLES"):
        return settings(settings.get_profile("fuzz-slow"))
    base = settings.get_profile("fuzz-default")
    return settings(base, max_examples=default or base.max_examples)


@pytest.fixture(autouse=True)
def _trace_env(monkeypatch):
    monkeypatch.setenv("TRACEJIT_VERIFY", "1")
    monkeypatch.delenv("TRACEJIT_BACKEND", raising=False)
    monkeypatch.delenv("TRACEJIT_DISABLE", raising=False)
    monkeypatch.delenv("TRACEJIT_DEBUG", raising=False)
    tj.set_mode("trace")
    yield
    tj.set_mode("trace")
