"""``boundary-audit run`` on a real terminal (a pty): quiet by default.

A terminal UI drawn by the confined program (claude, codex) shares the
terminal with run's stderr; at the default level nothing but the program's
own output may appear there, while every request is still audited.
"""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import termios
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.cli.helpers import RUN_TIMEOUT, clean_env, client_command, expected_output
from tests.proxy.helpers import Upstream
from tests.receiver import Receiver
from tests.support.processes import cli_argv

pytestmark = pytest.mark.timeout(90)

#: Bytes read from the pty per call.
READ_CHUNK = 4096


def _make_controlling_terminal() -> None:  # runs in the child, before exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_on_terminal(args: Sequence[str], tmp: Path) -> tuple[int, str]:
    """Run ``boundary-audit ARGS`` with a pty as its controlling terminal and
    stdin/stdout/stderr; return its exit code and everything the terminal got
    (line endings as the program wrote them)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            cli_argv(*args),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=clean_env(tmp),
            preexec_fn=_make_controlling_terminal,  # noqa: PLW1509 - setsid + TIOCSCTTY only
        )
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(master, READ_CHUNK)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, out.decode("utf-8", "replace").replace("\r\n", "\n")


def _urls(upstream: Upstream) -> list[tuple[str, int]]:
    return [
        (upstream.url("/allowed"), 200),
        (upstream.url("/denied"), 403),
        (upstream.url("/allowed/a"), 200),
        (upstream.url("/denied/b", host="localhost"), 403),
        (upstream.url("/allowed/c"), 200),
    ]


def test_a_default_run_writes_only_the_commands_output(
    receiver: Receiver, http_upstream: Upstream, tmp_path: Path
) -> None:
    results = _urls(http_upstream)
    code, screen = run_on_terminal(
        [
            "run",
            "--allow",
            "domain=127.0.0.1 path=/allowed/*,/allowed",
            "--audit-socket",
            str(receiver.path),
            "--",
            *client_command([url for url, _ in results]),
        ],
        tmp_path,
    )
    assert code == 0, screen
    assert screen == expected_output(results)
    receiver.wait_for(lambda: len(receiver.sequence_numbers()) == len(results))
    logs = [log for b in receiver.log_batches() for log in b.logs.logs]
    assert [(log.http_request.url, log.allowed) for log in logs] == [
        (url, status == 200) for url, status in results
    ]


def test_log_level_info_shows_each_request_human_readable(
    receiver: Receiver, http_upstream: Upstream, tmp_path: Path
) -> None:
    results = _urls(http_upstream)[:2]
    code, screen = run_on_terminal(
        [
            "run",
            "--log-level",
            "info",
            "--allow",
            "domain=127.0.0.1 path=/allowed",
            "--audit-socket",
            str(receiver.path),
            "--",
            *client_command([url for url, _ in results]),
        ],
        tmp_path,
    )
    assert code == 0, screen
    lines = screen.splitlines()
    allowed, denied = results[0][0], results[1][0]
    assert any("decision=allow" in line and allowed in line for line in lines), screen
    assert any("decision=deny" in line and denied in line for line in lines), screen
    assert not any(line.startswith("{") for line in lines), "console format, not JSON"
    assert "[info     ] proxy listening; starting command" in screen  # structlog console
