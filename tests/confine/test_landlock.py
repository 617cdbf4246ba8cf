"""Landlock network confinement, exercised on the real kernel in child processes.

The test process itself is never restricted: every restriction happens in a
child started through the exec helper, exactly as ``boundary-audit run`` does.
"""

from __future__ import annotations

import errno
import http.server
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from boundary_audit.proxy import confine
from boundary_audit.proxy.confine import (
    EXIT_CANNOT_EXECUTE,
    EXIT_NOT_FOUND,
    ConfinementUnavailable,
    helper_argv,
    landlock_abi_version,
    landlock_status,
    restrict_network,
)

STATUS = landlock_status()
requires_landlock = pytest.mark.skipif(
    not STATUS.network_available,
    reason=f"kernel cannot confine the network with Landlock: {STATUS.reason}",
)
#: A child's connect() that Landlock refuses fails with one of these.
DENIED_ERRNOS = {errno.EACCES, errno.EPERM}
#: curl's exit code for "failed to connect to host".
CURL_COULDNT_CONNECT = 7

CONNECT_PROBE = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.connect((host, int(port)))
        print(target, "ok")
    except OSError as exc:
        print(target, "errno", exc.errno)
    finally:
        s.close()
"""


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the allowed port\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    """A real HTTP server on a random loopback port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def listener() -> Iterator[int]:
    """A listening socket nobody accepts from: connect succeeds via the backlog."""
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _ipv6_listener() -> socket.socket | None:
    if not socket.has_ipv6:
        return None
    try:
        return socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        return None


def _confined(command: list[str], *ports: int) -> subprocess.CompletedProcess[str]:
    """Run ``command`` through the exec helper; status goes to fd -1 (stderr)."""
    argv = helper_argv(sys.executable, ports, -1, command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _probe_results(output: str) -> dict[str, str]:
    results = {}
    for line in output.splitlines():
        target, _, outcome = line.partition(" ")
        results[target] = outcome
    return results


def test_abi_probe_is_consistent() -> None:
    abi = landlock_abi_version()
    assert abi == STATUS.abi
    if abi is None:
        assert STATUS.reason is not None
    elif abi < confine.LANDLOCK_NET_MIN_ABI:
        assert STATUS.reason is not None
        assert f"ABI {abi}" in STATUS.reason
    else:
        assert STATUS.reason is None
        assert STATUS.network_available


def test_require_network_confinement_agrees_with_status() -> None:
    if STATUS.network_available:
        assert confine.require_network_confinement() == STATUS.abi
    else:
        with pytest.raises(ConfinementUnavailable) as info:
            confine.require_network_confinement()
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
    v6 = _ipv6_listener()
    targets = [allowed, other]
    if v6 is not None:
        targets.append(f"::1:{v6.getsockname()[1]}")
    try:
        result = _confined([sys.executable, "-c", CONNECT_PROBE, *targets], http_server)
    finally:
        if v6 is not None:
            v6.close()
    assert result.returncode == 0, result.stderr
    outcomes = _probe_results(result.stdout)
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
    assert set(_probe_results(result.stdout).values()) == {"ok"}


@requires_landlock
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.timeout(60)
def test_curl_child_is_confined_and_so_are_its_children(http_server: int, listener: int) -> None:
    curl = ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "20"]
    ok = _confined([*curl, f"http://127.0.0.1:{http_server}/"], http_server)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "hello from the allowed port\n"

    blocked = _confined([*curl, f"http://127.0.0.1:{listener}/"], http_server)
    assert blocked.returncode == CURL_COULDNT_CONNECT, blocked.stderr
    assert "127.0.0.1" in blocked.stderr

    # A shell started confined passes the restriction on to what it runs.
    script = f"{' '.join(curl[:-2])} http://127.0.0.1:{listener}/; echo rc=$?"
    nested = _confined(["sh", "-c", script], http_server)
    assert nested.stdout.strip().endswith(f"rc={CURL_COULDNT_CONNECT}"), nested


@requires_landlock
@pytest.mark.timeout(60)
def test_bind_and_listen_stay_allowed(listener: int) -> None:
    code = (
        "import socket\n"
        "s = socket.create_server(('127.0.0.1', 0))\n"
        "print('listening', s.getsockname()[1])\n"
    )
    result = _confined([sys.executable, "-c", code], listener)
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
    marker = confine.EXEC_MARKER.decode()
    assert status.startswith(f"{marker}exec: {errno.ENOENT}: ")
    assert "no-such-tool" in status


@requires_landlock
@pytest.mark.timeout(60)
def test_helper_reports_a_non_executable_file(tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho should not run\n")
    result = _confined([str(script)], 8080)
    assert result.returncode == EXIT_CANNOT_EXECUTE
    assert "Permission denied" in result.stderr
    assert "should not run" not in result.stdout


@pytest.mark.timeout(60)
def test_helper_rejects_malformed_arguments() -> None:
    path = confine.__file__
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
    result = _confined(["cat", "/proc/self/status"], 8080)
    assert result.returncode == 0, result.stderr
    sig_ign = next(line for line in result.stdout.splitlines() if line.startswith("SigIgn:"))
    mask = int(sig_ign.split()[1], 16)
    assert not mask & (1 << (13 - 1)), f"SIGPIPE ignored in the child: {sig_ign}"


BYPASS_PROBE = """
import ctypes, socket, sys
port = int(sys.argv[1])
target = ("127.0.0.1", port)
libc = ctypes.CDLL(None, use_errno=True)

def attempt(name, call):
    try:
        call()
        print(name, "ok")
    except OSError as exc:
        print(name, "errno", exc.errno)

def fresh(proto=0):
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)

attempt("tfo_sendto", lambda: fresh().sendto(b"x", socket.MSG_FASTOPEN, target))
attempt("tfo_sendmsg", lambda: fresh().sendmsg([b"x"], [], socket.MSG_FASTOPEN, target))

def sendmmsg():
    # vlen 0: only the flags are looked at, nothing is sent.
    sock = fresh()
    if libc.sendmmsg(sock.fileno(), None, 0, socket.MSG_FASTOPEN) < 0:
        raise OSError(ctypes.get_errno(), "sendmmsg")
attempt("tfo_sendmmsg", sendmmsg)

def mptcp():
    sock = fresh(262)
    sock.settimeout(5)
    sock.connect(target)
attempt("mptcp", mptcp)

def io_uring():
    if libc.syscall(425, 8, None) < 0:
        raise OSError(ctypes.get_errno(), "io_uring_setup")
attempt("io_uring", io_uring)

# Need CAP_NET_RAW: refused by the kernel itself for an unprivileged user.
attempt("raw_ip", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP))
RAW6 = socket.SOCK_RAW | socket.SOCK_CLOEXEC  # flags must not hide the type
attempt("raw_ip6", lambda: socket.socket(socket.AF_INET6, RAW6, socket.IPPROTO_TCP))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
# What ordinary programs need keeps working.
attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
attempt("unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
attempt("getaddrinfo", lambda: socket.getaddrinfo("localhost", 80))
"""


def _sysctl(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@requires_landlock
@pytest.mark.timeout(60)
def test_paths_around_landlocks_connect_hook_are_closed() -> None:
    """TCP Fast Open and MPTCP open TCP connections without the connect hook
    Landlock relies on; the seccomp filter must refuse them (and io_uring,
    which seccomp cannot see into)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        result = _confined([sys.executable, "-c", BYPASS_PROBE, str(port)], port + 1)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing got through
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    outcomes = _probe_results(result.stdout)
    assert outcomes["tfo_sendto"] == f"errno {errno.EACCES}"
    assert outcomes["tfo_sendmsg"] == f"errno {errno.EACCES}"
    assert outcomes["tfo_sendmmsg"] == f"errno {errno.EACCES}"
    assert outcomes["mptcp"] == f"errno {errno.EPROTONOSUPPORT}"
    assert outcomes["io_uring"] == f"errno {errno.ENOSYS}"
    denied_raw = {f"errno {errno.EACCES}", f"errno {errno.EPERM}"}  # filter / no CAP_NET_RAW
    for name in ("raw_ip", "raw_ip6", "packet"):
        assert outcomes[name] in denied_raw, (name, outcomes)
    for name in ("udp", "unix", "netlink", "getaddrinfo"):
        assert outcomes[name] == "ok", (name, outcomes)


@pytest.mark.timeout(60)
def test_bypass_probe_detects_a_bypass_when_unconfined() -> None:
    """Control: without the filter the probe's TFO and MPTCP attempts get
    through where the kernel enables them, so the test above is meaningful."""
    server = socket.create_server(("127.0.0.1", 0), backlog=16)
    port = server.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-c", BYPASS_PROBE, str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.close()
    outcomes = _probe_results(result.stdout)
    tfo = _sysctl("/proc/sys/net/ipv4/tcp_fastopen")
    if tfo is not None and tfo & 1:  # client side of TFO enabled
        assert outcomes["tfo_sendto"] == "ok"
        assert outcomes["tfo_sendmsg"] == "ok"
    assert outcomes["tfo_sendmmsg"] == "ok"
    if _sysctl("/proc/sys/net/mptcp/enabled") == 1:
        assert outcomes["mptcp"] == "ok"
    if os.geteuid() == 0:  # CAP_NET_RAW: raw sockets open without the filter
        assert outcomes["raw_ip"] == "ok"
        assert outcomes["packet"] == "ok"


def test_seccomp_programs_assemble_for_every_known_machine() -> None:
    for machine, arch in confine.SECCOMP_ARCHES.items():
        program = confine._bypass_program(arch)
        returns = [insn for insn in program if insn[0] == confine._BPF_RET_K]
        assert program[-1][0] == confine._BPF_RET_K, machine
        assert {k for *_, k in returns} == {
            confine.SECCOMP_RET_ALLOW,
            confine.SECCOMP_RET_ERRNO | errno.EACCES,
            confine.SECCOMP_RET_ERRNO | errno.ENOSYS,
            confine.SECCOMP_RET_ERRNO | errno.EPROTONOSUPPORT,
        }, machine
        for index, (code, jt, jf, _) in enumerate(program):
            if code in {confine._BPF_JEQ_K, confine._BPF_JGE_K, confine._BPF_JSET_K}:
                assert index + 1 + max(jt, jf) < len(program), machine


# --------------------------------------------------------------------------- without root

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
            f"import subprocess; open({confine.__file__!r}).close(); "
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
    outcomes = _probe_results("\n".join(lines[1:]))
    assert outcomes[allowed] == "ok"
    assert outcomes[other] == f"errno {errno.EACCES}"


@requires_landlock
@requires_unprivileged_python
@pytest.mark.timeout(60)
def test_network_namespace_needs_no_root(listener: int) -> None:
    """The isolated mode as an ordinary user: the command reaches the
    listener the helper hands back, and nothing of the host."""
    assert UNPRIVILEGED_PYTHON is not None
    port = 40000 + listener % 20000  # any port: the namespace is empty
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
        assert message == confine.LISTENER_MESSAGE
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
    assert _probe_results("\n".join(lines[2:]))[host_service].startswith("errno")
