"""Package layout rules (ARCHITECTURE §12) that a refactor can silently break: checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import authz

ROOT = Path(authz.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py") if "api" not in p.relative_to(ROOT).parts[:1]}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every authz module ``path`` imports, at module level, under TYPE_CHECKING or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def _cycles_within(graph: dict[str, set[str]], prefixes: tuple[str, ...]) -> list[list[str]]:
    """Import cycles among the modules under ``prefixes`` (a package's ``__init__`` re-exporting its own
    children is the normal shape and is left out: the edge from a package to its submodule is ignored)."""
    nodes = {n for n in graph if n.startswith(prefixes)}
    edges = {n: {m for m in graph[n] if m in nodes and not m.startswith(n + ".")} for n in nodes}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(nodes):
        if node not in state:
            visit(node)
    return cycles


def test_storage_and_audit_have_no_import_cycles():
    assert _cycles_within(_graph(), ("authz.storage", "authz.audit", "authz.chain")) == []


def test_storage_does_not_import_audit_internals():
    """The stores extend the chain through the leaf module :mod:`authz.chain`, not through a private
    module of :mod:`authz.audit` (and :mod:`authz.audit` may import :mod:`authz.storage.protocols`, so
    storage importing audit at all would be a package cycle)."""
    graph = _graph()
    offenders = {
        (name, dep)
        for name, deps in graph.items()
        if name.startswith("authz.storage")
        for dep in deps
        if dep.startswith("authz.audit")
    }
    assert offenders == set()


def test_no_module_imports_a_private_module_of_another_package():
    graph = _graph()
    offenders = set()
    for name, deps in graph.items():
        if not name.startswith(("authz.storage", "authz.audit")):
            continue
        for dep in deps:
            package, _, leaf = dep.rpartition(".")
            if leaf.startswith("_") and not leaf.startswith("__") and not name.startswith(package):
                offenders.add((name, dep))
    assert offenders == set()


def test_both_store_backends_have_the_same_package_shape():
    for backend in ("sqlite", "postgres"):
        folder = ROOT / "storage" / backend
        assert (folder / "__init__.py").is_file(), backend
        for part in ("_store.py", "_admin.py", "_audit.py"):
            assert (folder / part).is_file(), (backend, part)
        assert sorted(p.name for p in (folder / "migrations").glob("*.sql")), backend
    sqlite_names = sorted(p.name for p in (ROOT / "storage" / "sqlite" / "migrations").glob("*.sql"))
    postgres_names = sorted(p.name for p in (ROOT / "storage" / "postgres" / "migrations").glob("*.sql"))
    assert sqlite_names == postgres_names
