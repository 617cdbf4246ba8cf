from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(60)
def test_demo_sends_through_a_real_socket_and_prints_every_event() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "boundary_audit", "demo", "--rounds", "3"],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=False,
        timeout=50,
    )
    assert result.returncode == 0, result.stderr
    assert "events sent: 18  received: 18  dropped: 0" in result.stdout
    assert "pastebin.example" in result.stdout


def test_cli_rejects_unknown_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "boundary_audit", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
