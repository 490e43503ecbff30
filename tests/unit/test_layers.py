"""The package's shape, read from its source: layers, no cycles, one place for settings.

Every import counts, those under ``TYPE_CHECKING`` and inside functions included: a
type-only cycle still ties two modules' changes together.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "mastering"

# What each part may import of the package (besides itself and the shared leaves).
LEAVES = {
    "errors",
    "formats",
    "options",
    "presets",
    "versions",
    "config",
    "track",
    "clients",
    "parent_death",
}
ALLOWED: dict[str, set[str]] = {
    "engine": set(),
    "audio": {"validation"},
    "validation": set(),
    "delivery": {"audio", "engine"},
    "pipeline": {"audio", "engine", "delivery", "validation", "jobs"},
    "jobs": set(),
    "storage": {"jobs"},
    "notify": {"jobs", "storage"},
    "service": {"jobs", "storage"},
    "worker": {"jobs", "storage", "notify", "pipeline", "engine"},
}


def _part(module: str) -> str:
    """``mastering.engine.master`` -> ``engine``; ``mastering`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> dict[str, set[str]]:
    """Package part -> the parts of the package it imports."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(p for p in relative.parts if p != "__init__")
        part = _part(module)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if not name.startswith("mastering."):
                    continue
                target = _part(name)
                known = (SRC / target).is_dir() or (SRC / f"{target}.py").exists()
                if known and target != part:
                    graph[part].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_no_part_of_the_package_imports_another_that_imports_it_back() -> None:
    assert _cycles(_imports()) == []


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_layer_imports_only_what_is_below_it(part: str) -> None:
    imported = _imports().get(part, set())
    assert imported - LEAVES - ALLOWED[part] == set()


def test_the_package_root_imports_only_its_versions() -> None:
    assert _imports().get("__init__", set()) <= {"versions"}


def _reads_environment(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv", "putenv")
        ):
            return True
    return False


def test_only_config_the_cli_and_the_local_stack_read_the_environment() -> None:
    readers = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if _reads_environment(ast.parse(path.read_text()))
    )
    allowed = [r for r in readers if r == "config.py" or r.startswith(("cli/", "devstack/"))]
    assert readers == allowed
    assert "config.py" in readers


def test_no_private_module_of_a_third_party_library_is_imported() -> None:
    private = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                outside = not name.startswith("mastering")
                if outside and any(part.startswith("_") for part in name.split(".")[1:]):
                    private.append(f"{path.relative_to(SRC)}: {name}")
    assert private == []
