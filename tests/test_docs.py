"""The user docs stay in step with the op table."""

import pathlib

from tracejit import ops

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def test_every_primitive_is_documented():
    text = (DOCS / "ops.md").read_text()
    missing = [name for name in ops.OPS if f"`{name}`" not in text]
    assert not missing, f"docs/ops.md does not mention primitives {missing}"
