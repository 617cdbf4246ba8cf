"""The socket path's life without an agent around it: lock, claim, unlink, unlock."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from boundary_audit.agent.socketfile import SocketFile, SocketInUseError


def test_one_owner_at_a_time_and_the_next_after_close(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    first = SocketFile(path, 0o660, None)
    sock = first.claim()
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o660
        with pytest.raises(SocketInUseError, match="another agent holds"):
            SocketFile(path, 0o660, None).claim()
    finally:
        sock.close()
        first.close()
    assert not path.exists()
    second = SocketFile(path, 0o600, None)
    second.claim().close()
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    second.close()


def test_unlink_leaves_a_file_that_is_no_longer_ours(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    owner = SocketFile(path, 0o660, None)
    owner.claim().close()
    path.unlink()
    path.write_text("someone else's")  # a new file (a new inode) on the path
    owner.unlink()
    owner.close()  # idempotent, and still leaves it
    assert path.read_text() == "someone else's"


def test_a_failed_claim_gives_the_lock_back(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    path.write_text("not a socket")
    with pytest.raises(SocketInUseError, match="not a socket"):
        SocketFile(path, 0o660, None).claim()
    os.unlink(path)
    taker = SocketFile(path, 0o660, None)
    taker.claim().close()  # the lock was released by the failed claim
    taker.close()
