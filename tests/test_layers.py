"""The import graph points one way: front end -> passes -> codegen -> runtime -> core (the IR,
the op table, Tensor and autograd). Codegen and the runtime never reach up into tracing, nn or
the passes, so a new backend or an exported graph needs none of them.

Every import is counted, the ones inside functions too (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"tracejit": ROOT / "tracejit", "tracejit.codegen": ROOT / "codegen",
            "tracejit.runtime": ROOT / "runtime"}

# lowest first; a module may import its own layer and the ones below it
LAYERS = ["core", "runtime", "codegen", "passes", "front"]
CORE = {"tracejit.dtypes", "tracejit.errors", "tracejit.ir", "tracejit.ops", "tracejit.dispatch",
        "tracejit.autograd", "tracejit.tensor", "tracejit.creation", "tracejit.printing",
        "tracejit.functions", "tracejit.serialize", "tracejit.version", "tracejit.return_types",
        "tracejit.cuda",  # tracejit.cuda: device availability, imports nothing of ours
        "tracejit._aliases", "tracejit._torch_names",  # stdlib only (the names table looks
        # up nn by name when it answers, never importing it)
        # compositions of rows and autograd extensions, on Tensor and the tape only:
        "tracejit.extra_ops", "tracejit.linalg", "tracejit.custom_function",
        "tracejit.autograd_functional"}


def layer(module: str) -> str:
    if module in CORE:
        return "core"
    for prefix, name in (("tracejit.runtime", "runtime"), ("tracejit.codegen", "codegen"),
                         ("tracejit.passes", "passes")):
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "front"  # tracing, nn, optim, transforms, the package itself, __main__, ...


def modules() -> dict:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if package == "tracejit" and parts[:1] in (["codegen"], ["runtime"]):
                continue
            found[".".join([package, *parts])] = path
    return found


def imports(module: str, path: pathlib.Path) -> list:
    """(imported tracejit module, line) for every import statement in the file."""
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[:len(base) - node.level + 1]
                prefix = ".".join(stem + ([node.module] if node.module else []))
            else:
                prefix = node.module
            # ``from . import ops`` imports a module; ``from .ops import X`` imports from one
            names = [f"{prefix}.{a.name}" for a in node.names] if node.module is None or \
                prefix == "tracejit" else [prefix]
        else:
            continue
        for name in names:
            if name.startswith("tracejit"):
                out.append((name, node.lineno))
    return out


def resolve(name: str, known: dict) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def test_every_arrow_points_down():
    known = modules()
    assert "tracejit.ops" in known and "tracejit.codegen.cpu" in known
    wrong = []
    for module, path in sorted(known.items()):
        mine = LAYERS.index(layer(module))
        for name, line in imports(module, path):
            target = resolve(name, known)
            if target is not None and LAYERS.index(layer(target)) > mine:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {layer(module)} module "
                             f"{module} imports {layer(target)} module {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


@pytest.mark.parametrize("module", ["tracejit.codegen", "tracejit.runtime"])
def test_backends_never_reach_the_front_end(module):
    known = modules()
    for name, path in known.items():
        if name.startswith(module):
            for target, line in imports(name, path):
                assert not target.startswith(("tracejit.tracing", "tracejit.nn",
                                              "tracejit.optim", "tracejit.passes")), \
                    f"{path.relative_to(ROOT)}:{line} imports {target}"


def test_the_walk_sees_lazy_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from .tracing import trace\n")
    assert imports("tracejit.ops", src) == [("tracejit.tracing", 2)]
