"""Landlock network confinement and the exec helper, exercised on the real
kernel in child processes.

The test process itself is never restricted: every restriction happens in a
child started through the exec helper, exactly as ``boundary-audit run`` does.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from boundary_audit.confine import (
    EXIT_CANNOT_EXECUTE,
    EXIT_NOT_FOUND,
    ConfinementUnavailable,
    helper_argv,
    landlock_abi_version,
    require_network_confinement,
    restrict_network,
)
from boundary_audit.confine.helper import EXEC_MARKER, HELPER_SCRIPT
from boundary_audit.confine.landlock import LANDLOCK_NET_MIN_ABI

from .helpers import (
    CONNECT_PROBE,
    CURL_COULDNT_CONNECT,
    DENIED_ERRNOS,
    STATUS,
    confined,
    ipv6_listener,
    probe_results,
    requires_landlock,
)


def test_abi_probe_is_consistent() -> None:
    abi = landlock_abi_version()
    assert abi == STATUS.abi
    if abi is None:
        assert STATUS.reason is not None
    elif abi < LANDLOCK_NET_MIN_ABI:
        assert STATUS.reason is not None
        assert f"ABI {abi}" in STATUS.reason
    else:
        assert STATUS.reason is None
        assert STATUS.network_available


def test_require_network_confinement_agrees_with_status() -> None:
    if STATUS.network_available:
        assert require_network_confinement() == STATUS.abi
    else:
        with pytest.raises(ConfinementUnavailable) as info:
            require_network_confinement()
        assert info.value.reason == STATUS.reason
        assert "unavailable" in str(info.value)


def test_unavailable_error_says_why() -> None:
    exc = ConfinementUnavailable("kernel Landlock ABI 3 has no network rules", abi=3)
    assert "Landlock network confinement is unavailable" in str(exc)
    assert "ABI 3" in str(exc)
    assert exc.abi == 3


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_bad_ports_are_refused_before_anything_is_restricted(port: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        restrict_network([port])
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        helper_argv(sys.executable, [port], -1, ["true"])


@requires_landlock
@pytest.mark.timeout(60)
def test_python_child_connects_only_to_the_allowed_port(http_server: int, listener: int) -> None:
    allowed, other = f"127.0.0.1:{http_server}", f"127.0.0.1:{listener}"
    v6 = ipv6_listener()
    targets = [allowed, other]
    if v6 is not None:
        targets.append(f"::1:{v6.getsockname()[1]}")
    try:
        result = confined([sys.executable, "-c", CONNECT_PROBE, *targets], http_server)
    finally:
        if v6 is not None:
            v6.close()
    assert result.returncode == 0, result.stderr
    outcomes = probe_results(result.stdout)
    assert outcomes[allowed] == "ok"
    denied = {int(outcomes[t].split()[1]) for t in targets[1:]}
    assert all(outcomes[t].startswith("errno") for t in targets[1:]), outcomes
    assert denied <= DENIED_ERRNOS, outcomes
    # The parent was never restricted.
    socket.create_connection(("127.0.0.1", listener), timeout=5).close()


@requires_landlock
@pytest.mark.timeout(60)
def test_unconfined_child_reaches_both_ports(http_server: int, listener: int) -> None:
    """Control for the test above: the listener itself is reachable."""
    targets = [f"127.0.0.1:{http_server}", f"127.0.0.1:{listener}"]
    result = subprocess.run(
        [sys.executable, "-c", CONNECT_PROBE, *targets],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert set(probe_results(result.stdout).values()) == {"ok"}


@requires_landlock
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.timeout(60)
def test_curl_child_is_confined_and_so_are_its_children(http_server: int, listener: int) -> None:
    curl = ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "20"]
    ok = confined([*curl, f"http://127.0.0.1:{http_server}/"], http_server)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "hello from the allowed port\n"

    blocked = confined([*curl, f"http://127.0.0.1:{listener}/"], http_server)
    assert blocked.returncode == CURL_COULDNT_CONNECT, blocked.stderr
    assert "127.0.0.1" in blocked.stderr

    # A shell started confined passes the restriction on to what it runs.
    script = f"{' '.join(curl[:-2])} http://127.0.0.1:{listener}/; echo rc=$?"
    nested = confined(["sh", "-c", script], http_server)
    assert nested.stdout.strip().endswith(f"rc={CURL_COULDNT_CONNECT}"), nested


@requires_landlock
@pytest.mark.timeout(60)
def test_bind_and_listen_stay_allowed(listener: int) -> None:
    code = (
        "import socket\n"
        "s = socket.create_server(('127.0.0.1', 0))\n"
        "print('listening', s.getsockname()[1])\n"
    )
    result = confined([sys.executable, "-c", code], listener)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("listening ")


@requires_landlock
@pytest.mark.timeout(60)
def test_helper_reports_a_missing_command_and_never_runs_unconfined(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    try:
        argv = helper_argv(sys.executable, [8080], write_fd, [str(tmp_path / "no-such-tool")])
        proc = subprocess.run(argv, pass_fds=(write_fd,), timeout=60, check=False)
        os.close(write_fd)
        write_fd = -1
        status = os.read(read_fd, 4096).decode()
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    assert proc.returncode == EXIT_NOT_FOUND
    marker = EXEC_MARKER.decode()
    assert status.startswith(f"{marker}exec: {errno.ENOENT}: ")
    assert "no-such-tool" in status


@requires_landlock
@pytest.mark.timeout(60)
def test_helper_reports_a_non_executable_file(tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho should not run\n")
    result = confined([str(script)], 8080)
    assert result.returncode == EXIT_CANNOT_EXECUTE
    assert "Permission denied" in result.stderr
    assert "should not run" not in result.stdout


@pytest.mark.timeout(60)
def test_helper_rejects_malformed_arguments() -> None:
    path = str(HELPER_SCRIPT)
    for args in (["--connect-port", "80"], ["--connect-port", "x", "--", "true"], ["--"]):
        result = subprocess.run(
            [sys.executable, "-I", "-S", path, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == EXIT_CANNOT_EXECUTE
        assert "bad arguments" in result.stderr


@requires_landlock
@pytest.mark.timeout(60)
def test_command_does_not_inherit_pythons_ignored_signals() -> None:
    """Python ignores SIGPIPE; a program exec'd from the helper must not."""
    result = confined(["cat", "/proc/self/status"], 8080)
    assert result.returncode == 0, result.stderr
    sig_ign = next(line for line in result.stdout.splitlines() if line.startswith("SigIgn:"))
    mask = int(sig_ign.split()[1], 16)
    assert not mask & (1 << (13 - 1)), f"SIGPIPE ignored in the child: {sig_ign}"


def test_scopes_are_asked_for_from_abi_6_and_their_absence_is_explained() -> None:
    from boundary_audit.confine.landlock import (
        LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET,
        LANDLOCK_SCOPE_SIGNAL,
        missing_scopes,
        scopes_for,
    )

    assert scopes_for(5) == 0
    assert (
        scopes_for(6)
        == scopes_for(7)
        == LANDLOCK_SCOPE_SIGNAL | LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
    )
    assert missing_scopes(6) is None
    why = missing_scopes(5)
    assert why is not None
    assert "ABI 5" in why
    assert "signal" in why
