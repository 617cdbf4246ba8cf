"""Signals and stdio of a command run through ``run_confined``, driven from
outside by a real process and a real pseudo-terminal, as a user or supervisor would."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import stop_process

from .helpers import STEP_TIMEOUT

#: How long one select() waits for pty output before checking the deadline.
PTY_POLL_INTERVAL = 0.1

#: A small program embedding run_confined as ``boundary-audit run`` will: the
#: test talks to it from outside (stdin, signals), like a user or supervisor.
DRIVER = textwrap.dedent(
    """
    import asyncio, sys
    from boundary_audit.logs import configure_logging
    from boundary_audit.confine import run_confined
    configure_logging("debug")
    ca, command = sys.argv[1], sys.argv[2:]
    sys.exit(asyncio.run(run_confined(command, proxy_url="http://127.0.0.1:9", ca_cert_path=ca)))
    """
)

SIGNAL_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    if sys.argv[1:] == ["setsid"]:
        os.setsid()  # leaves our process group and the terminal
    NAMES = ["SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"]
    def note(number, frame):
        print("got", signal.Signals(number).name, flush=True)
    def term(number, frame):
        print("got SIGTERM, exiting 42", flush=True)
        sys.exit(42)
    for name in NAMES:
        signal.signal(getattr(signal, name), note)
    signal.signal(signal.SIGTERM, term)
    print("ready", flush=True)
    while True:
        signal.pause()
    """
)


@contextlib.contextmanager
def _driver(ca_file: Path, command: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(ca_file), *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        stop_process(proc, STEP_TIMEOUT)
        proc.communicate(timeout=STEP_TIMEOUT)


@pytest.mark.timeout(90)
def test_signals_are_forwarded_and_exit_code_returned(ca_file: Path) -> None:
    with _driver(ca_file, [sys.executable, "-c", SIGNAL_CHILD]) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            proc.send_signal(sig)
            assert proc.stdout.readline() == f"got {sig.name}\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "got SIGTERM, exiting 42\n"
        assert proc.wait(timeout=STEP_TIMEOUT) == 42
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert err.count('"signal forwarded"') == 6


@pytest.mark.timeout(60)
def test_stdin_and_stdout_pass_through(ca_file: Path) -> None:
    child = (
        "import sys; data = sys.stdin.read(); sys.stdout.write(data.upper()); sys.exit(len(data))"
    )
    with _driver(ca_file, [sys.executable, "-c", child]) as proc:
        out, _ = proc.communicate("hello through the boundary\n", timeout=STEP_TIMEOUT)
        assert out == "HELLO THROUGH THE BOUNDARY\n"
        assert proc.returncode == len("hello through the boundary\n")


@pytest.mark.timeout(60)
def test_child_killed_by_sigkill_exits_137(ca_file: Path) -> None:
    child = "import os, signal; print('dying', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    with _driver(ca_file, [sys.executable, "-c", child]) as proc:
        out, err = proc.communicate(timeout=STEP_TIMEOUT)
        assert out == "dying\n"
        assert proc.returncode == 137
        assert '"signal": "SIGKILL"' in err


#: Starts DRIVER as the leader of a new session whose controlling terminal is
#: its stdin (a pty), like a shell running ``boundary-audit run`` in a terminal.
SESSION_LEADER = textwrap.dedent(
    """
    import fcntl, os, sys, termios
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    os.execv(sys.executable, [sys.executable, "-c", *sys.argv[1:]])
    """
)


def _read_until(master: int, wanted: bytes, buffer: bytearray) -> bytes:
    """Read the pty until ``wanted`` shows up (or EOF); return all output."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while wanted not in buffer and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], PTY_POLL_INTERVAL)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every slave end closed
            break
        if not chunk:
            break
        buffer.extend(chunk)
    return bytes(buffer)


@pytest.mark.parametrize("child_session", ["same", "setsid"])
@pytest.mark.timeout(90)
def test_ctrl_c_at_a_terminal_reaches_the_child_once(ca_file: Path, child_session: str) -> None:
    """The tty already delivers SIGINT to a child in the foreground group:
    forwarding it as well would make one Ctrl-C count twice. A child that left
    for its own session is not reached by the tty and must get it forwarded."""
    command = [sys.executable, "-c", SIGNAL_CHILD, child_session]
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", SESSION_LEADER, DRIVER, str(ca_file), *command],
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(slave)
        slave = -1
        output = bytearray()
        assert b"ready" in _read_until(master, b"ready", output)
        os.write(master, b"\x03")  # Ctrl-C
        _read_until(master, b"got SIGINT", output)
        # Barrier: had the driver forwarded the SIGINT, it would have been sent
        # (and, as the lower signal number, handled) before this SIGUSR1.
        proc.send_signal(signal.SIGUSR1)
        _read_until(master, b"got SIGUSR1", output)
        proc.send_signal(signal.SIGTERM)
        final = _read_until(master, b"exiting 42", output)
        assert proc.wait(timeout=STEP_TIMEOUT) == 42
        assert proc.stderr is not None
        with proc.stderr:
            err = proc.stderr.read()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert final.count(b"got SIGINT") == 1, final
    if child_session == "same":
        assert '"reason": "terminal_delivered"' in err
        assert err.count('"signal forwarded"') == 2  # only SIGUSR1 and SIGTERM
    else:
        assert "terminal_delivered" not in err
        assert err.count('"signal forwarded"') == 3
