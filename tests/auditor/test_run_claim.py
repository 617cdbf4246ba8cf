"""``boundary-audit run`` claims its session before the confined command starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.receiver import Receiver
from tests.support.processes import cli_argv

pytestmark = pytest.mark.timeout(90)
#: Bounds one ``boundary-audit run`` of a trivial command; a hang fails the test.
RUN_TIMEOUT = 80
#: The command prints when it started, on the clock every process shares.
STAMP = "import time; print('started', time.monotonic())"


def _run(socket_path: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config")}
    return subprocess.run(
        cli_argv("run", "--audit-socket", str(socket_path), "--", sys.executable, "-c", STAMP),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT,
    )


def _started(result: subprocess.CompletedProcess[str]) -> float:
    [line] = [x for x in result.stdout.splitlines() if x.startswith("started ")]
    return float(line.split()[1])


def test_the_session_is_open_at_the_agent_before_the_command_starts(
    receiver: Receiver, tmp_path: Path
) -> None:
    result = _run(receiver.path, tmp_path)
    assert result.returncode == 0, result.stderr
    [opened] = receiver.opens()
    opened_at = receiver.committed_at[receiver.messages.index(opened)]
    assert opened_at < _started(result)  # acknowledged before the child existed
    assert receiver.messages[0] is opened
    assert receiver.seals()[-1].status.session_id == opened.status.session_id


def test_without_an_agent_the_run_warns_and_proceeds(sock_dir: Path, tmp_path: Path) -> None:
    result = _run(sock_dir / "nobody.sock", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no trusted agent reachable" in result.stderr
    _started(result)
