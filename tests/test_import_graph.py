"""The library's import graph: no circles and no import upward, counting imports inside functions too.

Layers, bottom up: `paser.common` (shared I/O, console) · `paser.data` and `paser.selection` · `paser.recovery`
· `paser.pipelines` · `paser` (the public API in paser/__init__.py). A module may import its own layer or a
lower one; imports under `if TYPE_CHECKING:` are annotations only and are not counted.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "paser.common": ROOT / "common",
    "paser.data": ROOT / "data",
    "paser.selection": ROOT / "selection",
    "paser.recovery": ROOT / "recovery",
    "paser.pipelines": ROOT / "pipelines",
}
LAYERS = {"paser.common": 0, "paser.data": 1, "paser.selection": 1, "paser.recovery": 2, "paser.pipelines": 3}


def _modules() -> dict[str, Path]:
    modules = {"paser": ROOT / "paser" / "__init__.py"}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [part for part in path.relative_to(folder).with_suffix("").parts if part != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST) -> list[str]:
    """Every `paser...` module named by an import anywhere in `tree`, outside `if TYPE_CHECKING:` blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "paser":
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names if alias.name.split(".")[0] == "paser")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def _layer(module: str) -> int:
    if module == "paser":
        return 4
    return LAYERS[".".join(module.split(".")[:2])]


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return circles


def test_the_library_has_no_import_circle():
    assert _circles(import_graph()) == []


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert upward == []


def test_the_circle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def test_the_analysis_imports_no_part_of_the_run_engine():
    # An analysis reads a finished run through its layout (paser.pipelines.layout), never through the engine.
    engine = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if module.startswith("paser.pipelines.analysis")
        for target in targets
        if target.startswith("paser.pipelines")
        and not target.startswith(("paser.pipelines.analysis", "paser.pipelines.layout"))
    )
    assert engine == []
