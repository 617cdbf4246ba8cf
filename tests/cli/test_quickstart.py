"""``boundary-audit quickstart`` run for real: collector, agent, a confined command."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import stop_process
from tests.support.processes import cli_argv, run_cli

pytestmark = pytest.mark.timeout(180)

#: A whole quickstart run (start, confined command, delivery, stop) takes a
#: few seconds; this bounds a hang below the test's own timeout.
QUICKSTART_TIMEOUT_S = 170.0
#: How long --serve may take to stop its services after SIGTERM, and they to exit.
SERVE_STOP_TIMEOUT_S = 60.0
SERVICES_EXIT_TIMEOUT_S = 30.0
#: The web UI's first page load (templates compile on first use).
WEB_UI_TIMEOUT_S = 30.0


def _env(tmp_path: Path) -> dict[str, str]:
    """Config (the proxy's CA) and runtime dirs of the test's own."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return {
        **os.environ,
        "COLUMNS": "250",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_RUNTIME_DIR": str(runtime),
    }


def _quickstart(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = _env(tmp_path)
    return subprocess.run(
        cli_argv("quickstart", "--data-dir", str(tmp_path), *extra),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=QUICKSTART_TIMEOUT_S,
    )


def test_quickstart_runs_the_whole_pipeline(tmp_path: Path) -> None:
    result = _quickstart(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "session stored: 3 allowed, 4 denied, 0 dropped, 0 gaps" in out
    assert "/repos/coder/coder -> 200" in out
    assert "/api/../admin/secrets -> 403" in out
    assert "web UI:" in out
    db = tmp_path / "quickstart" / "collector.db"
    assert f"database:   {db}" in out
    # What the table showed is what the collector stored: 7 events, one session.
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT sequence_number, allowed, url FROM events").fetchall()
    assert sorted(r[0] for r in rows) == list(range(7))
    assert sum(1 for r in rows if r[1]) == 3
    for _, _, url in rows:
        assert url in out
    # The printed query works exactly as printed (no "command not found").
    (query,) = [
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("query:")
    ]
    printed = subprocess.run(
        ["/bin/sh", "-c", query], capture_output=True, text=True, check=False, timeout=60
    )
    assert printed.returncode == 0, printed.stderr
    assert "/repos/coder/coder" in printed.stdout


def test_quickstart_reports_a_command_that_cannot_run(tmp_path: Path) -> None:
    result = _quickstart(tmp_path, "--", "nosuchcmd-boundary-audit")
    assert result.returncode != 0
    assert "✓ command exited" not in result.stdout
    assert "command not found: nosuchcmd-boundary-audit" in result.stdout


def test_quickstart_with_a_command_that_makes_no_requests(tmp_path: Path) -> None:
    result = _quickstart(tmp_path, "--", sys.executable, "-c", "print('hi')")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hi" in result.stdout
    assert "made no HTTP requests" in result.stdout


def test_cli_rejects_unknown_subcommand() -> None:
    result = run_cli("no-such-command", check=False)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_quickstart_serve_stops_its_services_on_sigterm(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = subprocess.Popen(
        cli_argv("quickstart", "--serve", "--data-dir", str(tmp_path)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "serving; press Ctrl-C" in line:
                break
        assert any("serving" in line for line in seen), "".join(seen)
        services = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in services)
        assert " collector " in names
        assert " agent " in names
        # The web UI answers while serving.
        url = next(line.split()[-1] for line in seen if line.startswith("web UI:"))
        assert httpx.get(url, timeout=WEB_UI_TIMEOUT_S).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=SERVE_STOP_TIMEOUT_S) == 0
        _, alive = psutil.wait_procs(services, timeout=SERVICES_EXIT_TIMEOUT_S)
        assert alive == []
    finally:
        stop_process(proc)
