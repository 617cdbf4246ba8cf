"""Confinement as an ordinary user: Landlock, seccomp and the network
namespace need no root (run only where the tests can switch to another user)."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import socket
import subprocess
import sys

import pytest

from boundary_audit.confine import helper_argv
from boundary_audit.confine.helper import HELPER_SCRIPT, LISTENER_MESSAGE
from boundary_audit.confine.landlock import MAX_PORT

from .helpers import CONNECT_PROBE, probe_results, requires_landlock

UNPRIVILEGED_USER = "nobody"
UID_LINE = "import os; print('uid', os.getuid())\n"
UNPRIVILEGED_GROUP = "nogroup"
SETPRIV = shutil.which("setpriv")


def _as_unprivileged(argv: list[str]) -> list[str]:
    assert SETPRIV is not None
    return [
        SETPRIV,
        f"--reuid={UNPRIVILEGED_USER}",
        f"--regid={UNPRIVILEGED_GROUP}",
        "--clear-groups",
        *argv,
    ]


def _unprivileged_python() -> tuple[str | None, str]:
    """A Python the unprivileged user can run (the helper needs only the
    standard library), or why there is none."""
    if os.geteuid() != 0:
        return None, "needs root to switch to another user"
    if SETPRIV is None:
        return None, "setpriv is not installed"
    candidates = [sys.executable, "/usr/bin/python3", shutil.which("python3") or ""]
    for python in dict.fromkeys(c for c in candidates if c):
        # Exec'd again from inside, as the helper does: setpriv itself may
        # resolve a path the user could not.
        check = (
            f"import subprocess; open({str(HELPER_SCRIPT)!r}).close(); "
            f"subprocess.run([{python!r}, '-c', 'pass'], check=True)"
        )
        probe = subprocess.run(
            _as_unprivileged([python, "-I", "-S", "-c", check]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0:
            return python, ""
    return None, f"no Python that user {UNPRIVILEGED_USER} may run and that can read the helper"


UNPRIVILEGED_PYTHON, NO_UNPRIVILEGED_PYTHON = _unprivileged_python()
requires_unprivileged_python = pytest.mark.skipif(
    UNPRIVILEGED_PYTHON is None, reason=NO_UNPRIVILEGED_PYTHON
)


@requires_landlock
@requires_unprivileged_python
@pytest.mark.timeout(60)
def test_landlock_and_seccomp_need_no_root(http_server: int, listener: int) -> None:
    assert UNPRIVILEGED_PYTHON is not None
    allowed, other = f"127.0.0.1:{http_server}", f"127.0.0.1:{listener}"
    argv = helper_argv(
        UNPRIVILEGED_PYTHON,
        [http_server],
        -1,
        [UNPRIVILEGED_PYTHON, "-c", UID_LINE + CONNECT_PROBE, allowed, other],
    )
    result = subprocess.run(
        _as_unprivileged(argv), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"uid {pwd.getpwnam(UNPRIVILEGED_USER).pw_uid}"
    outcomes = probe_results("\n".join(lines[1:]))
    assert outcomes[allowed] == "ok"
    assert outcomes[other] == f"errno {errno.EACCES}"


@requires_landlock
@requires_unprivileged_python
@pytest.mark.timeout(60)
def test_network_namespace_needs_no_root(listener: int) -> None:
    """The isolated mode as an ordinary user: the command reaches the
    listener the helper hands back, and nothing of the host."""
    assert UNPRIVILEGED_PYTHON is not None
    # Any port but the host service's: the namespace is empty, and the probe
    # of the host service must not reach the in-namespace listener instead.
    port = listener + 1 if listener < MAX_PORT else listener - 1
    child_code = (
        "import os, socket, sys\n"
        "print('uid', os.getuid(), flush=True)\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
        "print('relayed', s.recv(64).decode(), flush=True)\n"
        + CONNECT_PROBE.replace("sys.argv[1:]", "sys.argv[2:]")
    )
    host_service = f"127.0.0.1:{listener}"
    ours, theirs = socket.socketpair()
    with ours:
        argv = helper_argv(
            UNPRIVILEGED_PYTHON,
            [port],
            theirs.fileno(),
            [UNPRIVILEGED_PYTHON, "-c", child_code, str(port), host_service],
            isolate_port=port,
        )
        proc = subprocess.Popen(
            _as_unprivileged(argv),
            pass_fds=(theirs.fileno(),),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        theirs.close()
        ours.settimeout(30)
        message, fds, _, _ = socket.recv_fds(ours, 4096, 1)
        if not fds:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            if "namespace" in message.decode(errors="replace"):
                pytest.skip(f"no unprivileged user namespaces here: {message!r}")
            pytest.fail(f"no listener from the helper: {message!r} {err}")
        assert message == LISTENER_MESSAGE
        with socket.socket(fileno=fds[0]) as ns_listener:
            ns_listener.settimeout(30)
            conn, _ = ns_listener.accept()
            with conn:
                conn.sendall(b"hello from outside")
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == f"uid {pwd.getpwnam(UNPRIVILEGED_USER).pw_uid}"
    assert lines[1] == "relayed hello from outside"
    assert probe_results("\n".join(lines[2:]))[host_service].startswith("errno")
