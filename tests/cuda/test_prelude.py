"""The CUDA prelude covers every function the op table's templates call, at every dtype."""

from __future__ import annotations

import numpy as np

from tracejit import ops
from tracejit.codegen import cuda_prelude as cp


def test_no_template_call_lacks_a_helper():
    assert cp.missing_helpers() == []


def test_every_template_call_is_required():
    assert set(ops.template_calls()) | set(cp.RENDERER_CALLS) == set(cp.required_helpers())


def test_float_only_calls_have_float_helpers_only():
    required = cp.required_helpers()
    for call in ("exp", "log", "sigmoid", "erf", "tanh", "rsqrt"):
        assert required[call] == {"float32", "float64"}, call


def test_names_follow_the_suffix_scheme_and_are_importable():
    for (call, dtype), helper in cp.HELPERS.items():
        name = cp.helper_name(call, dtype)
        assert cp.PRELUDE_NAMES[name] == (call, dtype)
        assert getattr(cp, name) is helper and name in cp.__all__
    assert cp.helper_name("floordiv", np.int64) == "floordiv_i64"
    assert cp.helper_name("isnan", np.bool_) == "isnan_b"

