"""The package's layers, checked from its source: no import circles, and no module
imports from a layer above its own (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "retrainer"
# Low to high: each layer imports only from itself and the layers before it.
LAYERS = (
    "base",
    "training",
    "ledger",
    "registry",
    "mirror",
    "notify",
    "plan",
    "engine",
    "job",
    "views",
    "cli",
)
# The package's own top modules, both doors at the top: __main__ is the CLI's, __init__ the
# Python API's (it re-exports `load_model` lazily, so it may reach any layer, and no module
# of the package may import it: they read the version from retrainer.base.version).
TOP_MODULES = {"retrainer": LAYERS[-1], "retrainer.__main__": "cli"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """Every module of the package that module imports, wherever the import stands."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            # "import a.b.c" also runs a and a.b: the nearest known module is the edge.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imported(name, path, known) for name, path in modules.items()}


def layer_of(module: str) -> str:
    if module in TOP_MODULES:
        return TOP_MODULES[module]
    layer = module.split(".")[1]
    assert layer in LAYERS, f"{module} is in no layer; add its folder to LAYERS"
    return layer


def test_every_module_belongs_to_a_layer() -> None:
    for module in _graph():
        layer_of(module)


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module))
    ]
    assert upward == []


def test_the_import_graph_has_no_circles() -> None:
    graph = _graph()
    circles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert circles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: each returned group imports itself through its members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_has_its_folder(layer: str) -> None:
    assert (PACKAGE / layer / "__init__.py").is_file()
