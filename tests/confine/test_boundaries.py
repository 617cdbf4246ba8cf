"""Confinement and the proxy never import each other; only ``cli.run`` joins them."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Lists the boundary_audit modules that importing the argument pulls in.
IMPORTED = (
    "import importlib, sys; importlib.import_module(sys.argv[1]); "
    "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('boundary_audit'))))"
)


def _imported_by(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(result.stdout.split())


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("boundary_audit.confine", "boundary_audit.proxy"),
        ("boundary_audit.proxy", "boundary_audit.confine"),
    ],
)
def test_packages_do_not_import_each_other(module: str, forbidden: str) -> None:
    imported = _imported_by(module)
    assert module in imported
    assert not {m for m in imported if m == forbidden or m.startswith(forbidden + ".")}


def test_the_run_command_joins_them() -> None:
    imported = _imported_by("boundary_audit.cli.run")
    assert {"boundary_audit.proxy", "boundary_audit.confine"} <= imported
