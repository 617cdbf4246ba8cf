"""Confinement and the proxy never import each other; only ``cli.run`` joins them.

Read from the source (as import linters do), so the check costs no interpreter
start and also covers imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import boundary_audit

SOURCE = Path(boundary_audit.__file__).parent


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative ones resolved)."""
    # The package a module's relative imports start from (for __init__ too).
    package = path.relative_to(SOURCE.parent).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _package_imports(package: str) -> set[str]:
    return {name for path in (SOURCE / package).rglob("*.py") for name in _imports(path)}


def _within(names: set[str], package: str) -> set[str]:
    return {n for n in names if n == package or n.startswith(package + ".")}


@pytest.mark.parametrize(("package", "other"), [("confine", "proxy"), ("proxy", "confine")])
def test_packages_do_not_import_each_other(package: str, other: str) -> None:
    imported = _package_imports(package)
    assert _within(imported, f"boundary_audit.{package}"), "the resolver sees its own imports"
    assert not _within(imported, f"boundary_audit.{other}")


def test_the_run_command_joins_them() -> None:
    imported = _imports(SOURCE / "cli" / "run.py")
    assert _within(imported, "boundary_audit.proxy")
    assert _within(imported, "boundary_audit.confine")
