"""The sender's socket I/O on real Unix sockets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from boundary_audit.auditor.transport import Connection, no_listener

#: A stall bound short enough for a test, long next to a local write.
SHORT_STALL_S = 0.2
#: More than both Unix socket buffers hold, so a reader that never reads stalls the writer.
MORE_THAN_THE_BUFFERS = 16 * 1024 * 1024


def listening(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    return listener


def test_no_listener_at_a_missing_or_stale_path(sock_dir: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        Connection.open(sock_dir / "absent.sock")
    assert no_listener(missing.value)
    stale = sock_dir / "stale.sock"
    listening(stale).close()  # the file stays, nobody listens
    with pytest.raises(ConnectionRefusedError) as refused:
        Connection.open(stale)
    assert no_listener(refused.value)
    assert not no_listener(TimeoutError())


def test_writes_arrive_and_a_hang_up_is_noticed(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    with listening(path) as listener:
        conn = Connection.open(path)
        peer, _ = listener.accept()
        conn.send(b"frame")
        assert peer.recv(16) == b"frame"
        assert not conn.peer_closed()
        peer.close()
        assert conn.peer_closed()
        with pytest.raises(BrokenPipeError):
            conn.send(b"x" * 65536)
        conn.close()
        conn.close()  # twice is harmless


def test_a_reader_that_stalls_times_the_write_out(sock_dir: Path) -> None:
    path = sock_dir / "stalled.sock"
    with listening(path) as listener:
        conn = Connection.open(path, stall_timeout=SHORT_STALL_S)
        peer, _ = listener.accept()
        with peer, pytest.raises(TimeoutError):
            conn.send(b"\0" * MORE_THAN_THE_BUFFERS)
        conn.close()
