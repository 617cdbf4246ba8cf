"""Issue 10 item 4 (file modes): the trail's files are private whatever the umask.

quickstart runs under ``umask 000`` with its default (per-user) paths; every
directory it leaves behind must be 0700 and every file 0600: the CA's, and
the database's (its directory, the SQLite file, its WAL and shared memory).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import cli_argv

pytestmark = pytest.mark.timeout(300)

#: A whole quickstart run takes seconds; this bounds a hang.
QUICKSTART_TIMEOUT_S = 170.0
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _quickstart_with_umask_000(home: Path) -> None:
    runtime = home / "run"
    runtime.mkdir(parents=True, mode=PRIVATE_DIR)
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_RUNTIME_DIR": str(runtime),
    }
    old = os.umask(0)
    try:
        result = subprocess.run(
            cli_argv("quickstart"),
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=QUICKSTART_TIMEOUT_S,
        )
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stdout + result.stderr


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}


def test_the_ca_is_private_under_umask_000(tmp_path: Path) -> None:
    _quickstart_with_umask_000(tmp_path)
    ca = tmp_path / "config" / "boundary-audit" / "ca"
    assert stat.S_IMODE(ca.stat().st_mode) == PRIVATE_DIR
    assert stat.S_IMODE((ca / "ca-key.pem").stat().st_mode) == PRIVATE_FILE


def test_the_quickstart_database_is_private_under_umask_000(tmp_path: Path) -> None:
    _quickstart_with_umask_000(tmp_path)
    data = tmp_path / "data" / "boundary-audit"
    bad = {
        path: oct(mode)
        for path, mode in _modes(data).items()
        if mode != (PRIVATE_DIR if (data / path).is_dir() else PRIVATE_FILE)
    }
    assert bad == {}
