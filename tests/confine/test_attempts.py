"""How sandboxed connect()/sendto() calls are recorded (pure)."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.confine.attempts import (
    Attempt,
    Policy,
    classify,
    needs_socket_type,
    raw_attempt,
)
from boundary_audit.confine.seccomp import SECCOMP_ARCHES, observe_program

#: Classic BPF instruction class bits, and the class of jumps.
BPF_CLASS_MASK = 0x07
BPF_JMP = 0x05
POLICY = Policy(proxy_port=8080, isolated=False, hidden=("/run/agent", "/tmp/boundary-audit.sock"))


def _in4(host: str, port: int) -> bytes:
    return (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", port)
        + socket.inet_aton(host)
        + bytes(8)
    )


def _in6(host: str, port: int) -> bytes:
    packed = socket.inet_pton(socket.AF_INET6, host)
    return (
        struct.pack("=H", socket.AF_INET6) + struct.pack("!H", port) + bytes(4) + packed + bytes(4)
    )


def _un(path: bytes) -> bytes:
    return struct.pack("=H", socket.AF_UNIX) + path


def test_the_proxy_is_not_recorded_but_other_tcp_is_denied() -> None:
    assert classify(_in4("127.0.0.1", 8080), socket.SOCK_STREAM, POLICY) is None
    assert classify(_in4("10.1.2.3", 443), socket.SOCK_STREAM, POLICY) == Attempt(
        "CONNECT", "tcp://10.1.2.3:443", "10.1.2.3", allowed=False
    )
    assert classify(_in6("::1", 22), socket.SOCK_STREAM, POLICY) == Attempt(
        "CONNECT", "tcp://[::1]:22", "::1", allowed=False
    )


def test_the_proxy_through_a_dual_stack_socket_is_not_recorded() -> None:
    # gRPC's sockets are dual-stack: the proxy is ::ffff:127.0.0.1 to them.
    assert classify(_in6("::ffff:127.0.0.1", 8080), socket.SOCK_STREAM, POLICY) is None
    assert not needs_socket_type(_in6("::ffff:127.0.0.1", 8080), POLICY)
    assert classify(_in6("::ffff:10.0.0.5", 8080), socket.SOCK_STREAM, POLICY) == Attempt(
        "CONNECT", "tcp://[::ffff:a00:5]:8080", "::ffff:a00:5", allowed=True
    )


def test_another_host_on_the_proxy_port_passes_landlock_and_is_recorded_as_allowed() -> None:
    got = classify(_in4("192.0.2.7", 8080), socket.SOCK_STREAM, POLICY)
    assert got == Attempt("CONNECT", "tcp://192.0.2.7:8080", "192.0.2.7", allowed=True)
    isolated = Policy(proxy_port=8080, isolated=True)
    assert classify(_in4("192.0.2.7", 8080), socket.SOCK_STREAM, isolated) is not None
    assert classify(_in4("192.0.2.7", 8080), socket.SOCK_STREAM, isolated).allowed is False  # type: ignore[union-attr]


def test_udp_and_dns_are_allowed_unless_isolated() -> None:
    assert classify(_in4("9.9.9.9", 53), socket.SOCK_DGRAM, POLICY) == Attempt(
        "DNS", "dns://9.9.9.9:53", "9.9.9.9", allowed=True
    )
    isolated = Policy(proxy_port=8080, isolated=True)
    assert classify(_in4("9.9.9.9", 443), socket.SOCK_DGRAM, isolated) == Attempt(
        "UDP", "udp://9.9.9.9:443", "9.9.9.9", allowed=False
    )
    assert classify(_in4("9.9.9.9", 53), socket.SOCK_STREAM, POLICY) == Attempt(
        "DNS", "dns+tcp://9.9.9.9:53", "9.9.9.9", allowed=False
    )


def test_unix_sockets_are_recorded_only_when_hidden_or_abstract() -> None:
    assert classify(_un(b"/run/agent/agent.sock\0"), socket.SOCK_STREAM, POLICY) == Attempt(
        "CONNECT", "unix:///run/agent/agent.sock", "", allowed=False
    )
    assert classify(_un(b"/tmp/boundary-audit.sock"), socket.SOCK_STREAM, POLICY) is not None
    assert classify(_un(b"/run/agent-other.sock"), socket.SOCK_STREAM, POLICY) is None
    assert classify(_un(b"\0name"), socket.SOCK_STREAM, POLICY) == Attempt(
        "CONNECT", "unix://@name", "", allowed=False
    )
    unscoped = Policy(proxy_port=8080, isolated=False, abstract_scoped=False)
    assert classify(_un(b"\0name"), socket.SOCK_STREAM, unscoped) is None


@given(st.binary(max_size=160), st.sampled_from([None, 1, 2, 3, 5]), st.booleans())
def test_classify_never_raises(addr: bytes, sock_type: int | None, isolated: bool) -> None:
    classify(addr, sock_type, Policy(proxy_port=1, isolated=isolated, hidden=("/a",)))


def test_the_observer_program_only_jumps_forward_within_itself() -> None:
    for arch in SECCOMP_ARCHES.values():
        program = observe_program(arch)
        for i, (code, jt, jf, _k) in enumerate(program):
            if code & BPF_CLASS_MASK != BPF_JMP:
                continue
            assert i + 1 + jt < len(program)
            assert i + 1 + jf < len(program)


def test_the_socket_type_is_only_asked_for_where_it_matters() -> None:
    assert not needs_socket_type(_in4("127.0.0.1", 8080), POLICY)
    assert needs_socket_type(_in4("127.0.0.1", 53), POLICY)
    assert needs_socket_type(_in6("::1", 9), POLICY)
    assert not needs_socket_type(_un(b"/x"), POLICY)
    assert not needs_socket_type(b"", POLICY)


def test_raw_sockets_are_recorded_as_refused_with_what_was_asked() -> None:
    assert raw_attempt(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 58) == Attempt(
        "RAW", "raw://inet6?type=3&protocol=58", "", allowed=False
    )
