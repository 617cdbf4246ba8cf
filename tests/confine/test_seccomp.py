"""The seccomp filter that closes the ways around Landlock's connect() hook:
its program, and its effect on the real kernel in confined children."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from boundary_audit.confine import seccomp

from .helpers import confined, probe_results, requires_landlock

#: How long the test server waits for a connection that must not come (a wait
#: that proves something did not happen: a TFO or MPTCP handshake that got
#: through could complete after the confined child exited).
NOTHING_ARRIVES_WITHIN = 0.5

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
    server.settimeout(NOTHING_ARRIVES_WITHIN)
    port = server.getsockname()[1]
    try:
        result = confined([sys.executable, "-c", BYPASS_PROBE, str(port)], port + 1)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing got through
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    outcomes = probe_results(result.stdout)
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
    outcomes = probe_results(result.stdout)
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
    for machine, arch in seccomp.SECCOMP_ARCHES.items():
        program = seccomp.bypass_program(arch)
        returns = [insn for insn in program if insn[0] == seccomp._BPF_RET_K]
        assert program[-1][0] == seccomp._BPF_RET_K, machine
        assert {k for *_, k in returns} == {
            seccomp.SECCOMP_RET_ALLOW,
            seccomp.SECCOMP_RET_ERRNO | errno.EACCES,
            seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS,
            seccomp.SECCOMP_RET_ERRNO | errno.EPROTONOSUPPORT,
        }, machine
        for index, (code, jt, jf, _) in enumerate(program):
            if code in {seccomp._BPF_JEQ_K, seccomp._BPF_JGE_K, seccomp._BPF_JSET_K}:
                assert index + 1 + max(jt, jf) < len(program), machine
