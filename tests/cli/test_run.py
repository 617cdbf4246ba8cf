"""``boundary-audit run`` as a user runs it: a real process, proxy, socket, upstream."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy.helpers import Upstream, serve_upstream
from tests.receiver import Receiver
from tests.support.processes import cli_argv

pytestmark = pytest.mark.timeout(90)
#: Bounds one ``boundary-audit run`` (a few requests); a hang fails the test.
RUN_TIMEOUT = 80


@pytest.fixture(scope="module")
def http_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with serve_upstream("http", None, tmp_path_factory.mktemp("http")) as upstream:
        yield upstream


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config")}
    env.pop("BOUNDARY_ALLOW", None)
    return subprocess.run(
        cli_argv("run", *args),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT,
    )


def test_run_audits_allowed_and_denied_requests_to_the_agent_socket(
    receiver: Receiver, http_upstream: Upstream, tmp_path: Path
) -> None:
    allowed_url = http_upstream.url("/allowed")
    denied_url = http_upstream.url("/denied", host="localhost")
    script = (
        "import urllib.request, urllib.error, sys\n"
        f"ok = urllib.request.urlopen({allowed_url!r}).read()\n"
        "try:\n"
        f"    urllib.request.urlopen({denied_url!r})\n"
        "except urllib.error.HTTPError as e:\n"
        "    print('denied', e.code, e.read().decode())\n"
        "print('upstream said', ok.decode())\n"
        "sys.exit(7)\n"
    )
    result = _run(
        [
            "--allow",
            "domain=127.0.0.1 path=/allowed",
            "--audit-socket",
            str(receiver.path),
            "--process-name",
            "agent-under-test",
            "--",
            sys.executable,
            "-c",
            script,
        ],
        tmp_path,
    )
    assert result.returncode == 7, result.stderr  # the command's own exit code
    assert "upstream said" in result.stdout
    assert '"raw_path":"/allowed"' in result.stdout
    assert [hit["raw_path"] for hit in http_upstream.hits] == ["/allowed"]  # denied never left
    assert "denied 403" in result.stdout
    assert denied_url in result.stdout
    assert "--allow" in result.stdout  # the 403 body suggests a rule
    assert receiver.wait_for(lambda: len(receiver.sequence_numbers()) == 2)
    batches = receiver.log_batches()
    logs = [log for b in batches for log in b.logs.logs]
    assert [log.sequence_number for log in logs] == [0, 1]
    assert {b.logs.confined_process_name for b in batches} == {"agent-under-test"}
    assert len({b.logs.session_id for b in batches}) == 1
    allowed, denied = logs
    assert allowed.allowed
    assert allowed.http_request.url == allowed_url
    assert allowed.http_request.matched_rule == "domain=127.0.0.1 path=/allowed"
    assert not denied.allowed
    assert denied.http_request.matched_rule == ""
    # The same events, as structured lines on stderr.
    assert '"decision": "deny"' in result.stderr
    assert denied_url in result.stderr


def test_run_rejects_a_bad_rule_before_starting_anything(tmp_path: Path) -> None:
    result = _run(["--allow", "domian=github.com", "--no-audit-socket", "--", "true"], tmp_path)
    assert result.returncode == 2
    assert "domian" in result.stderr


def test_run_reports_a_missing_command(tmp_path: Path) -> None:
    result = _run(["--no-audit-socket", "--", "no-such-command-xyz"], tmp_path)
    assert result.returncode == 127
    assert "no-such-command-xyz" in result.stderr
