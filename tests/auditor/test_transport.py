"""The sender's socket I/O on real Unix sockets: trust checks, SIOCOUTQ, acks."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from boundary_audit.auditor.transport import Connection, no_listener
from boundary_audit.auditor.trust import (
    UntrustedListenerError,
    allowed_listener_uids,
    check_socket_file,
    parse_uids,
    peer_credentials,
)
from tests.receiver import ack_frame

#: A stall bound short enough for a test, long next to a local write.
SHORT_STALL_S = 0.2
#: More than both Unix socket buffers hold, so a reader that never reads stalls the writer.
MORE_THAN_THE_BUFFERS = 16 * 1024 * 1024
#: A uid no account on a test machine has: a file owned by it is someone else's.
STRANGER_UID = 54_321
#: The sender's own uid and root: what it trusts unless told more.
OURS = allowed_listener_uids((), {})


def listening(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    return listener


def test_no_listener_at_a_missing_or_stale_path(sock_dir: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        Connection.open(sock_dir / "absent.sock", OURS)
    assert no_listener(missing.value)
    stale = sock_dir / "stale.sock"
    listening(stale).close()  # the file stays, nobody listens
    with pytest.raises(ConnectionRefusedError) as refused:
        Connection.open(stale, OURS)
    assert no_listener(refused.value)
    assert not no_listener(TimeoutError())


def test_writes_arrive_and_a_hang_up_is_noticed(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    with listening(path) as listener:
        conn = Connection.open(path, OURS)
        peer, _ = listener.accept()
        conn.send(b"frame")
        assert peer.recv(16) == b"frame"
        assert conn.receive() == ([], False)
        peer.close()
        assert conn.receive() == ([], True)
        with pytest.raises(BrokenPipeError):
            conn.send(b"x" * 65536)
        conn.close()
        conn.close()  # twice is harmless


def test_acks_are_read_whole_in_any_split_and_before_the_hang_up(sock_dir: Path) -> None:
    path = sock_dir / "acks.sock"
    with listening(path) as listener:
        conn = Connection.open(path, OURS)
        peer, _ = listener.accept()
        first, second = ack_frame(3), ack_frame(300)
        peer.sendall(first + second[:2])
        frames, eof = conn.receive()
        assert (len(frames), eof) == (1, False)
        peer.sendall(second[2:])
        peer.close()
        frames, eof = conn.receive()  # the last ack, then the hang-up
        assert (len(frames), eof) == (1, True)
        conn.close()


def test_siocoutq_counts_what_the_peer_has_not_read_in_kernel_units(sock_dir: Path) -> None:
    """What delivery's arithmetic relies on, measured: skb truesize, not payload
    bytes; a partly read write stays charged whole; a dead peer frees it all."""
    path = sock_dir / "outq.sock"
    with listening(path) as listener:
        conn = Connection.open(path, OURS)
        peer, _ = listener.accept()
        assert conn.outq() == 0
        conn.send(b"a" * 10)
        small = conn.outq()
        assert small is not None
        assert small >= 10  # at least the payload: the lower bound delivery uses
        conn.send(b"b" * 1000)
        both = conn.outq()
        assert both is not None
        assert both - small >= 1000
        assert conn.may_write(both)
        assert peer.recv(5) == b"aaaaa"  # half of the first write
        assert conn.outq() == both  # ...which stays charged whole
        assert peer.recv(5) == b"aaaaa"
        assert conn.outq() == both - small
        peer.close()  # dies with the second write unread
        assert conn.outq() == 0  # indistinguishable from "all read": never trusted after death
        conn.close()


def test_a_reader_that_stalls_times_the_write_out(sock_dir: Path) -> None:
    path = sock_dir / "stalled.sock"
    with listening(path) as listener:
        conn = Connection.open(path, OURS, stall_timeout=SHORT_STALL_S)
        peer, _ = listener.accept()
        with peer:
            with pytest.raises(TimeoutError):
                conn.send(b"\0" * MORE_THAN_THE_BUFFERS)
            assert not conn.may_write(conn.outq())  # the kernel is full: a write would block
        conn.close()


def test_a_symlink_or_a_file_of_another_owner_is_refused_before_connecting(
    sock_dir: Path,
) -> None:
    real = sock_dir / "real.sock"
    with listening(real) as listener:
        link = sock_dir / "link.sock"
        link.symlink_to(real)
        with pytest.raises(UntrustedListenerError, match="symlink"):
            Connection.open(link, OURS)
        plain = sock_dir / "plain.sock"
        plain.write_bytes(b"")
        with pytest.raises(UntrustedListenerError, match="not-a-socket"):
            Connection.open(plain, OURS)
        if os.geteuid() == 0:  # chown needs root
            os.chown(real, STRANGER_UID, -1)
            with pytest.raises(UntrustedListenerError, match=f"owner-uid-{STRANGER_UID}"):
                Connection.open(real, OURS)
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.accept()  # refused before connect: nothing ever reached the listener
        if os.geteuid() == 0:  # ...and accepted once that uid is configured
            Connection.open(real, OURS | {STRANGER_UID}).close()


def test_the_listener_is_identified_by_its_credentials(sock_dir: Path) -> None:
    path = sock_dir / "who.sock"
    with listening(path):
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(path))
        pid, uid, _ = peer_credentials(probe)
        probe.close()
    assert (pid, uid) == (os.getpid(), os.geteuid())


def test_listener_uids_come_from_the_argument_and_the_environment() -> None:
    assert allowed_listener_uids((), {}) == {os.geteuid(), 0}
    assert allowed_listener_uids([7], {"BOUNDARY_AUDIT_LISTENER_UIDS": "8, 9 root"}) == {
        os.geteuid(),
        0,
        7,
        8,
        9,
    }
    assert parse_uids("") == frozenset()
    with pytest.raises(ValueError, match="no such user"):
        parse_uids("no-such-user-here")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_a_service_users_socket_in_a_directory_root_gave_it_is_trusted(sock_dir: Path) -> None:
    """Like systemd's RuntimeDirectory= for a DynamicUser agent: a uid not known
    in advance, in a directory only it can write, inside one only root can."""
    service = sock_dir / "service"
    service.mkdir(mode=0o711)
    path = service / "agent.sock"
    with listening(path):
        os.chown(path, STRANGER_UID, -1)
        os.chown(service, STRANGER_UID, -1)
        assert check_socket_file(path, OURS) == OURS | {STRANGER_UID}
        # Others may create entries: anyone could have bound it.
        os.chmod(service, 0o733)  # noqa: S103
        with pytest.raises(UntrustedListenerError, match="owner-uid"):
            check_socket_file(path, OURS)
        os.chmod(service, 0o711)  # noqa: S103 - back to reach-only for others
        os.chmod(sock_dir, 0o1777)  # noqa: S103 - the parent is now a shared temp dir
        with pytest.raises(UntrustedListenerError, match="owner-uid"):
            check_socket_file(path, OURS)
