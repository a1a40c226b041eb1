"""The package's import structure: no cycle between its modules, no module importing
the package's ``__init__`` (the version is ``_version``'s, a leaf), and no module
reaching into another's private (``_name``) members. Every import counts: one inside a
function (a lazy import is still a dependency, and two modules that need each other are
one module in two files) and one under ``if TYPE_CHECKING:`` (a type is a dependency
too: the modules that read a result import ``resultdata``, not ``result``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "labelclean"
TESTS = Path(__file__).resolve().parent


def _name(path: Path) -> str:
    """A package file's module name relative to the package: ``cleaner``,
    ``report`` (``report/__init__.py``), ``report.figures``; the package's own
    ``__init__.py`` is ``__init__``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {_name(p): ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
            for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return name == "__init__" or (PACKAGE / name.replace(".", "/") / "__init__.py").is_file()


def _base(name: str, level: int) -> str:
    """The package a relative import of ``level`` dots in module ``name`` starts from
    (``""``: labelclean itself)."""
    parts = [] if name == "__init__" else name.split(".")
    if not _is_package(name):
        parts = parts[:-1]  # a plain module: its package
    return ".".join(parts[: len(parts) - (level - 1)] if level > 1 else parts)


def _join(base: str, module: str | None) -> str:
    return ".".join(p for p in (base, module or "") if p) or "__init__"


def _imports(name: str, tree: ast.Module) -> list[tuple[str, str | None, int]]:
    """``(module imported, member or None, line)`` for each import of a package
    module, wherever it stands (top level, in a function, under ``TYPE_CHECKING``);
    ``from pkg import sub`` with ``sub`` a module counts as ``(pkg.sub, None)``, an
    import of the package itself (``import labelclean``, ``from . import name``) as
    ``("__init__", name)``."""
    modules = {_name(p) for p in PACKAGE.rglob("*.py")}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = _join(_base(name, node.level), node.module)
            elif node.module and node.module.split(".")[0] == "labelclean":
                target = _join("", ".".join(node.module.split(".")[1:]))
            else:
                continue
            for a in node.names:
                sub = _join("" if target == "__init__" else target, a.name)
                found.append((sub, None, node.lineno) if sub in modules
                             else (target, a.name, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "labelclean":
                    found.append((".".join(parts[1:]) or "__init__", None, node.lineno))
    return found


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    private = [f"labelclean/{name}.py:{line} imports {target}.{member}"
               for name, tree in modules.items()
               for target, member, line in _imports(name, tree)
               if member is not None and member.startswith("_")
               and not member.startswith("__") and target in modules and target != name]
    assert private == []


def _graph() -> dict[str, set[str]]:
    """Each module's imports of other package modules, every import counted; the
    package's ``__init__`` and ``__main__`` are modules like the others."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for target, _, _ in _imports(name, tree):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def test_no_module_imports_the_package_init():
    # __init__ re-exports the public names; a module that imports it back (say for
    # __version__, which _version.py holds) depends on every module __init__ imports
    found = [f"labelclean/{name}.py:{line} imports labelclean{'.' + member if member else ''}"
             for name, tree in _modules().items() if name != "__init__"
             for target, member, line in _imports(name, tree) if target == "__init__"]
    assert found == []


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


def test_the_import_check_sees_type_checking_imports_and_the_package():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from .cleaner import Cleaner\n")
    assert _imports("result", tree) == [("cleaner", "Cleaner", 3)]
    tree = ast.parse("import labelclean\nfrom labelclean import Cleaner\n"
                     "from . import __version__, rundir\nfrom ._version import __version__\n")
    assert _imports("export", tree) == [
        ("__init__", None, 1), ("__init__", "Cleaner", 2), ("__init__", "__version__", 3),
        ("rundir", None, 3), ("_version", "__version__", 4)]
    assert "cleaner" in _graph()["__init__"] and "cli" in _graph()["__main__"]


def test_the_import_check_reads_the_subpackages():
    modules = _modules()
    assert {"report", "report.figures", "report.registry"} <= set(modules)
    tree = ast.parse("from ..decision import _x\nfrom .run import RunFiles\n"
                     "from . import figures\nfrom .. import rundir\n")
    assert _imports("report.data", tree) == [
        ("decision", "_x", 1), ("report.run", "RunFiles", 2), ("report.figures", None, 3),
        ("rundir", None, 4)]
    assert _imports("report", ast.parse("from .page import render_html\n")) == [
        ("report.page", "render_html", 1)]
    assert "report.run" in _graph()["report.figures"]


def _private_imports_in(path: Path) -> list[str]:
    """``file:line name`` for each import of a ``_private`` labelclean name (or
    module) in a test file."""
    def private(part: str) -> bool:
        return part.startswith("_") and not part.startswith("__")

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            parts = node.module.split(".")
            if parts[0] != "labelclean":
                continue
            names = [a.name for a in node.names]
            if any(map(private, parts)) or any(map(private, names)):
                found.append(f"{path.name}:{node.lineno} from {node.module} import "
                             f"{', '.join(names)}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "labelclean" and any(map(private, parts)):
                    found.append(f"{path.name}:{node.lineno} import {a.name}")
    return found


def test_tests_import_only_public_names():
    # tests use the package's public seams: a private helper worth testing on
    # its own is worth making public
    found = [hit for path in sorted(TESTS.rglob("*.py")) for hit in _private_imports_in(path)]
    assert found == []


def test_the_tests_check_sees_private_imports(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text("from labelclean.mixture import _crossing, fit_loss_mixture\n"
                     "import labelclean._io\nfrom labelclean import __version__\n"
                     "def f():\n    from labelclean.report import _windowed\n")
    assert _private_imports_in(probe) == [
        "test_probe.py:1 from labelclean.mixture import _crossing, fit_loss_mixture",
        "test_probe.py:2 import labelclean._io",
        "test_probe.py:5 from labelclean.report import _windowed",
    ]
