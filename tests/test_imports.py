"""The package's import structure: no cycle between its modules, and no module
reaching into another's private (``_name``) members. Imports inside functions count:
a lazy import is still a dependency, and two modules that need each other are
one module in two files."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "labelclean"


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
            for p in sorted(PACKAGE.glob("*.py"))}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(name: str, tree: ast.Module) -> list[tuple[str, str | None, int]]:
    """``(module imported, member or None, line)`` for each import of a package module."""
    skip = _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:  # from .x import a, b
                    found += [(node.module.split(".")[0], a.name, node.lineno)
                              for a in node.names]
                else:  # from . import x
                    found += [(a.name, None, node.lineno) for a in node.names]
            elif node.module and node.module.split(".")[0] == "labelclean":
                parts = node.module.split(".")
                if len(parts) > 1:
                    found += [(parts[1], a.name, node.lineno) for a in node.names]
                else:
                    found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "labelclean" and len(parts) > 1:
                    found.append((parts[1], None, node.lineno))
    return found


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    private = [f"labelclean/{name}.py:{line} imports {target}.{member}"
               for name, tree in modules.items()
               for target, member, line in _imports(name, tree)
               if member is not None and member.startswith("_") and target in modules
               and target != name and member != "__version__"]
    assert private == []


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for target, member, _ in _imports(name, tree):
            # `from . import x` names a module x; `from .x import y` the module x
            if target in modules and target != name:
                graph[name].add(target)
            elif target == "__init__" or (member and member in modules and target not in modules):
                graph[name].add(member)
    # __init__ re-exports: importing the package runs it, but modules that import
    # `from . import __version__` depend on it only for the version string
    graph.pop("__init__", None)
    graph.pop("__main__", None)
    for deps in graph.values():
        deps.discard("__init__")
        deps.discard("__main__")
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_private_import_check_sees_lazy_imports():
    tree = ast.parse("def f():\n    from .sources import _read_csv\n")
    assert _imports("x", tree) == [("sources", "_read_csv", 2)]
