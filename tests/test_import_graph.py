"""The core's modules import each other in one direction only: no import circle in gentool/.

Every import counts, at module level and inside functions (an import inside a function still ties
the two modules together); only those under ``if TYPE_CHECKING:`` do not, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "gentool"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """What ``tree`` imports, skipping ``if TYPE_CHECKING:`` bodies: ``module`` for ``import module``,
    ``module|name`` for ``from module import name``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import sub` imports pkg.sub when it is a module, else a name of pkg
            found.update(f"{prefix}|{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def core_import_graph() -> dict[str, set[str]]:
    """Module -> the core modules it imports, for gentool/*.py and gentool/*/*.py."""
    files = sorted(CORE.glob("*.py")) + sorted(CORE.glob("*/*.py"))
    modules = {_module_name(f): f for f in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for found in _imports(tree, name, path.name == "__init__.py"):
            prefix, _, attr = found.partition("|")
            targets.add(f"{prefix}.{attr}" if f"{prefix}.{attr}" in modules else prefix)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return circles


def _a_loop(graph: dict[str, set[str]], circle: list[str]) -> list[str]:
    """One closed path through ``circle``, for the message: a -> b -> ... -> a."""
    members = set(circle)
    start = circle[0]
    path, seen = [start], {start}
    while True:
        here = path[-1]
        nexts = sorted(graph[here] & members)
        if start in nexts and len(path) > 1:
            return path + [start]
        fresh = [n for n in nexts if n not in seen]
        step = fresh[0] if fresh else nexts[0]
        if step in seen:
            return path[path.index(step):] + [step]
        path.append(step)
        seen.add(step)


def test_the_graph_reader_sees_imports_in_functions_and_skips_type_checking():
    src = ("from typing import TYPE_CHECKING\n"
           "from gentool.errors import GentoolError\n"
           "if TYPE_CHECKING:\n    from gentool.api import TrainJob\n"
           "def f():\n    from gentool.plugins import get_registry\n"
           "    from . import config\n")
    found = _imports(ast.parse(src), "gentool.x", False)
    assert {"typing|TYPE_CHECKING", "gentool.errors|GentoolError", "gentool.plugins|get_registry", "gentool|config"} == found
    assert find_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_in_the_core():
    graph = core_import_graph()
    assert len(graph) > 20 and graph["gentool.cli"], "the import graph was not read"
    circles = find_circles(graph)
    message = "; ".join(f"{len(c)} modules: {' -> '.join(_a_loop(graph, c))} (all: {', '.join(c)})"
                        for c in circles)
    assert not circles, f"import circle in gentool/: {message}"
