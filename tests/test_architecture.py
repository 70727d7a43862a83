"""The shape of the house: dependencies run one way, dashboard -> training -> classifier -> engine.

These tests read the source (no import is executed), so a violation is found wherever it hides,
including inside a function.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "classifier", "training", "dashboard", "mnistsite")

# What each package must never import (its own dependencies only point down).
FORBIDDEN = {
    "engine": ("django", "rest_framework", "channels", "celery", "drf_spectacular", "mnistsite", "classifier",
               "training", "dashboard"),
    "classifier": ("training", "dashboard"),
    "training": ("dashboard",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function?) for every import in ``path``; relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                # `from pkg import name` depends on the module pkg.name when there is one, else on pkg
                submodules = [f"{target}.{alias.name}" for alias in child.names if _is_module(f"{target}.{alias.name}")]
                if len(submodules) < len(child.names):
                    found.append((target, child.lineno, in_function))
                found.extend((name, child.lineno, in_function) for name in submodules)
            visit(child, nested)

    visit(tree, False)
    return found


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for path in source_files()}


def test_the_reader_resolves_relative_and_local_imports(tmp_path, monkeypatch):
    modules = project_modules()
    assert {"engine.trainer", "classifier.lifecycle", "training.execution", "dashboard.consumers"} <= set(modules)
    targets = {target for target, _, _ in imports_of(modules["classifier.lifecycle"])}
    assert {"classifier.models", "classifier.checkpoints", "engine.checkpoint"} <= targets
    # in a subpackage, `..lifecycle` is the app's module and `.reports` the sibling
    nested = {target for target, _, _ in imports_of(modules["classifier.shadow.lifecycle"])}
    assert {"classifier.lifecycle", "classifier.shadow.reports"} <= nested and "classifier.shadow" not in nested
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "pkg").mkdir()
    sample = tmp_path / "pkg" / "mod.py"
    (tmp_path / "pkg" / "sibling.py").write_text("")
    sample.write_text("from . import sibling, VALUE\n\ndef f():\n    import training.models\n")
    assert imports_of(sample) == [("pkg", 1, False), ("pkg.sibling", 1, False), ("training.models", 4, True)]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_upward(package):
    violations = []
    for name, path in project_modules().items():
        if name.split(".")[0] != package:
            continue
        for target, line, _ in imports_of(path):
            if target.split(".")[0] in FORBIDDEN[package]:
                violations.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert violations == []


def test_no_function_local_imports_in_project_code():
    local = [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for path in source_files()
        for target, line, in_function in imports_of(path)
        if in_function
    ]
    assert local == []


def test_no_import_cycles_between_project_modules():
    modules = project_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        if ".migrations." in name:
            continue
        for target, _, _ in imports_of(path):
            # `import a.b.c` depends on a.b.c (and its packages, whose __init__ files are tiny here)
            if target in modules and target != name:
                graph[name].add(target)
    cycles = _strongly_connected(graph)
    assert [sorted(c) for c in cycles if len(c) > 1] == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0
    for root in list(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def test_the_cycle_finder_finds_a_cycle():
    assert {"a", "b", "c"} in _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
