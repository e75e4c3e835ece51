"""credit_common's modules import each other without a circle (counting imports inside functions, not
those only for type checkers), so that each can be read, imported and tested from the bottom up:
what a service declares (service.py) lies below the process's life (runtime.py), which lies above
its server processes (processes.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import credit_common

ROOT = Path(credit_common.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    hidden: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                hidden.update(ast.walk(child))
    return hidden


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The credit_common modules that `path` imports (a name imported from a package counts as its
    module when it is one)."""
    tree = ast.parse(path.read_text())
    hidden = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if node in hidden:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_credit_common_has_no_import_circle():
    assert _circles(_graph()) == []


def test_the_walk_sees_the_imports_that_make_a_circle():
    graph = _graph()
    assert "credit_common.service" in graph["credit_common.processes"]
    assert "credit_common.processes" in graph["credit_common.runtime"]
    # A circle as processes.py and runtime.py had one (each importing the other) is found.
    assert _circles({**graph, "credit_common.service": graph["credit_common.service"] | {"credit_common.runtime"}})
