"""Sealed sessions and precise replay, end to end on real Unix sockets.

Against an agent that acknowledges (ours) and one that never does (Coder's),
the sender re-sends exactly what the agent may not have: nothing twice to the
one that cannot deduplicate, nothing lost with the one that dies before its
commit.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from boundary_audit.auditor import OpenResult, SocketAuditor
from boundary_audit.wire import DropReason
from tests.auditor.helpers import ev, last_seal
from tests.receiver import Receiver
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)

#: A timeout connect_now() must not wait out when there is nobody to wait for.
LONG_WAIT_S = 30.0


def test_every_connection_opens_the_session_and_close_seals_it(receiver: Receiver) -> None:
    a = SocketAuditor(receiver.path, batch_size=5, batch_interval=0.01)
    for i in range(5):
        a.audit(ev(i))
    eventually(lambda: a.stats.delivered == 5, "5 events acknowledged")
    receiver.stop()
    receiver.start()
    for i in range(5, 10):
        a.audit(ev(i))
    eventually(lambda: a.stats.delivered == 10, "5 more on a second connection")
    a.close()
    opens = receiver.opens()
    assert len(opens) == 2
    assert [o.status.open.first_sequence_number for o in opens] == [0, 5]
    assert all(o.status.open.want_acks and o.status.session_id == a.session_id for o in opens)
    assert opens[0].status.open.sender.startswith("boundary-audit/")
    [sealed] = receiver.seals()
    assert receiver.messages[-1] is sealed  # the session's last frame
    assert sealed.status.session_id == a.session_id
    seal = sealed.status.seal
    assert (seal.events_made, seal.events_sent, seal.undelivered, seal.spilled) == (10, 10, 0, 0)
    assert dict(seal.dropped) == {}
    assert seal.sealed_at.seconds > 1_600_000_000
    stats = a.stats
    assert (stats.sealed, stats.agent_acknowledges, stats.undelivered) == (True, True, 0)
    assert stats.acks_received >= 2


def test_drops_after_the_last_flush_are_in_the_seal_and_in_one_last_delta(
    receiver: Receiver,
) -> None:
    """The tail is never invisible: drops that no later flush reported are
    counted in the seal (totals) and in a delta status just before it."""
    a = SocketAuditor(receiver.path, queue_size=3, batch_size=1000, batch_interval=3600)
    assert a.connect_now(timeout=10) is OpenResult.ACKNOWLEDGED
    receiver.pause()  # nothing is flushed meanwhile anyway: the batch waits an hour
    for i in range(2000):
        a.audit(ev(i))
    dropped = a.stats.dropped[DropReason.CHANNEL_FULL]
    assert dropped > 0
    receiver.resume()
    a.close(timeout=10)
    seal = last_seal(receiver.messages)
    assert seal.dropped[DropReason.CHANNEL_FULL] == dropped
    assert seal.events_made == 2000
    assert len(set(receiver.sequence_numbers())) + dropped == 2000
    reported = sum(s.status.dropped_channel_full for s in receiver.statuses())
    assert reported == dropped  # Coder's agent, which reads only deltas, is told too


def test_exactly_once_through_an_acknowledging_agent_that_dies_abruptly(sock_dir: Path) -> None:
    """It dies with frames read but not committed (so never acknowledged) and
    frames it never read: the sender re-sends exactly those, once each."""
    path = sock_dir / "ours.sock"
    first = Receiver(path, acks=True).start()
    a = SocketAuditor(path, batch_size=10, batch_interval=0.01)
    for i in range(100):
        a.audit(ev(i))
    eventually(lambda: a.stats.delivered == 100, "the first 100 acknowledged")
    first.hold()  # reads on, commits nothing
    for i in range(100, 200):
        a.audit(ev(i))
    eventually(lambda: first.frames_read() == a.stats.frames_sent, "all read, none committed")
    first.pause()  # and now reads nothing either
    for i in range(200, 300):
        a.audit(ev(i))
    eventually(lambda: a.stats.sent == 300, "the rest written into the kernel buffer")
    assert a.stats.delivered == 100
    first.stop()  # death: the read-uncommitted and the unread are both gone
    second = Receiver(path, acks=True).start()
    try:
        eventually(lambda: a.stats.delivered == 300, "the 200 re-sent and acknowledged")
        a.close()
        stored = first.sequence_numbers() + second.sequence_numbers()
        assert sorted(stored) == list(range(300))  # every event once: no loss, no duplicate
        assert a.stats.replayed_events == 200
        assert last_seal(second.messages).events_made == 300
    finally:
        second.stop()


def test_zero_duplicates_to_a_receiver_that_never_acknowledges_across_its_restart(
    coder_receiver: Receiver,
) -> None:
    """What coderd needs (it stores every row it gets): after a restart of an
    agent that never acknowledges, only what it had not read is re-sent."""
    r = coder_receiver
    a = SocketAuditor(r.path, batch_size=10, batch_interval=0.01)
    for i in range(100):
        a.audit(ev(i))
    # Read, measured by SIOCOUTQ, once the agent is known never to acknowledge.
    eventually(lambda: a.stats.delivered == 100, "the first 100 read")
    assert a.stats.agent_acknowledges is False
    r.pause()
    for i in range(100, 200):
        a.audit(ev(i))
    eventually(lambda: a.stats.sent == 200, "100 more written, unread")
    r.stop()  # restarts with 100 events unread in its socket: the kernel drops them
    r.start()
    eventually(lambda: a.stats.delivered == 200, "the unread 100 re-sent and read")
    a.close()
    numbers = r.sequence_numbers()
    duplicates = [n for n, count in Counter(numbers).items() if count > 1]
    assert duplicates == []
    assert sorted(numbers) == list(range(200))
    assert a.stats.replayed_events == 100
    assert len(r.seals()) == 1  # the seal too, once


def test_connect_now_says_what_kind_of_agent_took_the_session(
    receiver: Receiver, coder_receiver: Receiver, sock_dir: Path
) -> None:
    ours = SocketAuditor(receiver.path)
    assert ours.connect_now(timeout=10) is OpenResult.ACKNOWLEDGED
    assert receiver.opens()[0].status.session_id == ours.session_id
    assert ours.stats.agent_acknowledges is True
    ours.close()
    coders = SocketAuditor(coder_receiver.path)
    result = coders.connect_now(timeout=10)
    assert result is OpenResult.READ
    assert coders.stats.agent_acknowledges is False
    coders.close()
    late = SocketAuditor(sock_dir / "late.sock")
    started = time.monotonic()
    assert late.connect_now(timeout=LONG_WAIT_S) is OpenResult.UNREACHABLE
    assert time.monotonic() - started < LONG_WAIT_S / 2  # at once, not at the timeout
    agent = Receiver(sock_dir / "late.sock", acks=True).start()
    try:  # the claim is made as soon as the agent appears, without an event
        eventually(lambda: len(agent.opens()) == 1, "the session opened late")
        late.close()
    finally:
        agent.stop()
    off = SocketAuditor(sock_dir / "x.sock", disabled=True)
    assert off.connect_now(timeout=1) is OpenResult.DISABLED
