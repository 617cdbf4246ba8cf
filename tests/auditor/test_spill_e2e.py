"""Nothing lost at exit: what the agent lacks at close is spilled, then delivered once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from boundary_audit.auditor import OpenResult, SocketAuditor
from boundary_audit.wire import DropReason
from boundary_audit.wire.spill import list_spills
from tests.auditor.helpers import ev, last_seal, spilled, spilled_sequence_numbers
from tests.receiver import Receiver
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)


def test_an_agent_frozen_at_exit_loses_nothing(receiver: Receiver, private_spill_dir: Path) -> None:
    """The issue's case: the agent stops reading, the run makes 300 requests
    with a queue of 16 and exits. Every event is then stored, spilled or
    counted as dropped, and the seal says which."""
    a = SocketAuditor(receiver.path, queue_size=16, batch_size=10, batch_interval=0.01)
    assert a.connect_now(timeout=10) is OpenResult.ACKNOWLEDGED
    receiver.pause()  # SIGSTOP, as far as the sender can tell
    for i in range(300):
        a.audit(ev(i))
    a.close(timeout=0.5)
    stats = a.stats
    dropped = stats.dropped[DropReason.CHANNEL_FULL]
    assert stats.spilled > 0
    assert stats.undelivered == 0
    [messages] = spilled(private_spill_dir)
    in_spill = spilled_sequence_numbers(messages)
    assert len(in_spill) == stats.spilled
    seal = last_seal(messages)
    assert seal.events_made == 300
    assert (seal.spilled, seal.undelivered) == (stats.spilled, 0)
    assert seal.dropped.get(DropReason.CHANNEL_FULL, 0) == dropped
    assert len(set(in_spill)) + dropped == 300  # spilled or dropped: all accounted
    path = list_spills(private_spill_dir)[0]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(private_spill_dir).st_mode) == 0o700

    # The agent thaws; the next sender delivers the spill, and the file goes.
    receiver.resume()
    b = SocketAuditor(receiver.path)
    assert b.connect_now(timeout=10) is OpenResult.ACKNOWLEDGED
    eventually(lambda: b.stats.spill_files_delivered == 1, "the spill delivered")
    assert list_spills(private_spill_dir) == []
    b.close()
    mine = receiver.sequence_numbers(a.session_id)
    # The frames the frozen agent had in its socket arrive too: duplicates of
    # spilled ones, which the collector stores once by (session, number).
    assert set(mine) | set(in_spill) == set(mine)
    assert len(set(mine)) + dropped == 300
    assert b.stats.spill_events_delivered == stats.spilled
    seals = [m.status.seal for m in receiver.seals() if m.status.session_id == a.session_id]
    # The seal the frozen agent had in its socket and the spill's arrive on two
    # connections, in either order; the later sealed_at supersedes (as the
    # collector reads it), and that is the spill's.
    latest = max(seals, key=lambda s: (s.sealed_at.seconds, s.sealed_at.nanos))
    assert latest == seal


def test_with_no_agent_at_all_the_next_sender_to_connect_delivers(
    sock_dir: Path, coder_receiver: Receiver, private_spill_dir: Path
) -> None:
    """Against an agent that never acknowledges, the file goes once it was read."""
    a = SocketAuditor(sock_dir / "absent.sock")
    for i in range(25):
        a.audit(ev(i))
    a.close()
    assert (a.stats.spilled, a.stats.undelivered) == (25, 0)
    b = SocketAuditor(coder_receiver.path, batch_size=1, batch_interval=0.01)
    b.audit(ev(0))
    eventually(lambda: b.stats.spill_files_delivered == 1, "the spill read and removed")
    assert list_spills(private_spill_dir) == []
    b.close()
    assert coder_receiver.sequence_numbers(a.session_id) == list(range(25))
    [seal] = [m for m in coder_receiver.seals() if m.status.session_id == a.session_id]
    assert (seal.status.seal.spilled, seal.status.seal.events_sent) == (25, 0)


def test_beyond_the_spill_bound_events_are_counted_as_spill_full(
    sock_dir: Path, private_spill_dir: Path
) -> None:
    a = SocketAuditor(
        sock_dir / "absent.sock", batch_size=5, batch_interval=3600, spill_max_bytes=1000
    )
    for i in range(100):
        a.audit(ev(i, url=f"https://github.com/{i}/" + "p" * 100))
    a.close()
    stats = a.stats
    full = stats.dropped[DropReason.SPILL_FULL]
    assert full > 0
    assert stats.spilled + full == 100
    [messages] = spilled(private_spill_dir)
    seal = last_seal(messages)
    assert (seal.spilled, seal.dropped[DropReason.SPILL_FULL]) == (stats.spilled, full)
    # The oldest were kept, and the file holds no more than the bound of events.
    assert spilled_sequence_numbers(messages) == list(range(stats.spilled))
    assert sum(len(m.SerializeToString()) for m in messages[:-1]) <= 1000


def test_a_spill_dir_that_is_not_ours_is_never_written(
    sock_dir: Path, tmp_path: Path, private_spill_dir: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = tmp_path / "planted"
    planted.symlink_to(elsewhere)  # someone points our spill dir somewhere else
    a = SocketAuditor(sock_dir / "absent.sock", spill_dir=planted)
    for i in range(3):
        a.audit(ev(i))
    a.close()
    assert (a.stats.spilled, a.stats.undelivered, a.stats.spill_errors) == (0, 3, 1)
    assert list(elsewhere.iterdir()) == []


def test_a_frozen_agent_whose_socket_is_full_never_holds_close_past_its_deadline(
    coder_receiver: Receiver, private_spill_dir: Path
) -> None:
    """Enough events to fill the kernel's buffer towards an agent that stopped
    reading: the sender stops writing instead of blocking, so close() spills
    on time rather than giving up with the thread stuck in a write."""
    a = SocketAuditor(coder_receiver.path, queue_size=20_000, batch_size=100)
    assert a.connect_now(timeout=10) is OpenResult.READ
    coder_receiver.pause()
    for i in range(5000):
        a.audit(ev(i, url=f"https://github.com/{i}/" + "p" * 200))
    eventually(lambda: a.stats.sent > 0 and a.stats.pending > 0, "writing stopped for room")
    a.close(timeout=0.5)
    stats = a.stats
    assert (stats.undelivered, stats.dropped_total) == (0, 0)
    assert stats.delivered + stats.spilled >= 5000  # read before the freeze, or spilled
    [messages] = spilled(private_spill_dir)
    assert last_seal(messages).spilled == stats.spilled
