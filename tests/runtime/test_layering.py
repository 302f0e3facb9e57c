"""Layering (DESIGN.md): front end -> passes -> codegen -> runtime. The runtime reads the IR, the
op table and the tensor/autograd core; it never imports the tracer or the passes (building graphs
by tracing, as the compiled backward does, is front-end work: tracing/backward.py)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _imports(path: pathlib.Path, package: str) -> set:
    """Every module ``path`` imports, at the top or inside functions, as an absolute name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "runtime").glob("*.py")), ids=lambda p: p.name)
def test_runtime_imports_neither_the_tracer_nor_the_passes(path):
    bad = sorted(n for n in _imports(path, "tracejit.runtime")
                 if n.startswith(("tracejit.tracing", "tracejit.passes")))
    assert not bad, f"runtime/{path.name} imports {bad}"
