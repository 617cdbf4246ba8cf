"""The hash chain end to end: a receiver recomputes it from what arrived and the seal.

Real Unix sockets, the real SocketAuditor and its thread; the check is
``wire.chain.check`` over the events as a collector would store them (once
per sequence number), against the seal's ``chain_head``/``chain_count``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boundary_audit.auditor import AuditEvent, OpenResult, SocketAuditor
from boundary_audit.wire import DropReason, chain
from tests.auditor.helpers import check_chain, ev, last_seal, spilled
from tests.receiver import Receiver
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)


def test_a_receiver_recomputes_the_chain_and_it_matches_the_seal(receiver: Receiver) -> None:
    a = SocketAuditor(receiver.path, batch_size=7, batch_interval=0.01)
    for i in range(200):
        a.audit(ev(i, allowed=i % 4 != 0))
    a.audit(ev(200, url="https://github.com/" + "x" * 60_000))  # cut to fit, chained as cut
    a.close(timeout=10)
    result = check_chain(receiver.messages, a.session_id)
    assert result.ok, result
    assert result.checked == 201
    seal = last_seal(receiver.messages)
    assert seal.chain_count == 201
    assert len(seal.chain_head) == chain.DIGEST_SIZE


def test_drops_at_the_queue_are_gaps_the_chain_does_not_cover(receiver: Receiver) -> None:
    a = SocketAuditor(receiver.path, queue_size=5, batch_size=1000, batch_interval=3600)
    assert a.connect_now(timeout=10) is OpenResult.ACKNOWLEDGED
    for i in range(300):
        a.audit(ev(i))
    a.audit(AuditEvent("GET", 12345, "a", True))  # type: ignore[arg-type]  # invalid: a gap too
    a.audit(ev(301))
    a.close(timeout=10)
    stats = a.stats
    assert stats.dropped[DropReason.CHANNEL_FULL] > 0
    assert stats.sent + sum(stats.dropped.values()) == 302
    seal = last_seal(receiver.messages)
    assert seal.chain_count == stats.sent
    assert check_chain(receiver.messages, a.session_id).ok


def test_an_altered_or_removed_event_breaks_the_recomputed_chain(receiver: Receiver) -> None:
    """The receiver's check has teeth: what arrived, edited, no longer matches."""
    a = SocketAuditor(receiver.path, batch_size=10, batch_interval=0.01)
    for i in range(30):
        a.audit(ev(i))
    a.close(timeout=10)
    messages = list(receiver.messages)
    assert check_chain(messages, a.session_id).ok
    batch = next(m for m in messages if m.WhichOneof("msg") == "logs")
    batch.logs.logs[3].http_request.url += "?evil"
    result = check_chain(messages, a.session_id)
    assert (result.ok, result.first_bad_sequence) == (False, 3)
    del batch.logs.logs[3]
    assert check_chain(messages, a.session_id).first_bad_sequence == 4


def test_frames_re_sent_after_a_reconnect_carry_the_same_digests(sock_dir: Path) -> None:
    """An acknowledging agent dies with frames read but not committed; the
    sender re-sends them on the next connection, byte for byte."""
    path = sock_dir / "ours.sock"
    first = Receiver(path, acks=True).start()
    a = SocketAuditor(path, batch_size=10, batch_interval=0.01)
    for i in range(50):
        a.audit(ev(i))
    eventually(lambda: a.stats.delivered == 50, "the first 50 acknowledged")
    first.hold()
    for i in range(50, 120):
        a.audit(ev(i))
    eventually(lambda: first.frames_read() == a.stats.frames_sent, "all read, none committed")
    # What the dying agent read but never committed: compare with the re-sent copies.
    with first._lock:
        read_uncommitted = [m for c in first._conns for _, m in c.held]
    first.stop()
    second = Receiver(path, acks=True).start()
    try:
        eventually(lambda: a.stats.delivered == 120, "the 70 re-sent and acknowledged")
        a.close(timeout=10)
        assert a.stats.replayed_events == 70
        everything = [*first.messages, *read_uncommitted, *second.messages]
        # chained_events asserts that each re-sent event brought the same digest.
        result = check_chain(everything, a.session_id, last_seal(second.messages))
        assert result.ok, result
        assert result.checked == 120
    finally:
        second.stop()


def test_an_agent_that_never_acknowledges_gets_the_chain_too(coder_receiver: Receiver) -> None:
    a = SocketAuditor(coder_receiver.path, batch_size=10, batch_interval=0.01)
    for i in range(40):
        a.audit(ev(i))
    a.close(timeout=10)
    assert check_chain(coder_receiver.messages, a.session_id).ok


def test_the_spill_seal_commits_to_what_was_delivered_and_spilled(
    receiver: Receiver, private_spill_dir: Path
) -> None:
    a = SocketAuditor(receiver.path, queue_size=16, batch_size=10, batch_interval=0.01)
    for i in range(10):
        a.audit(ev(i))
    eventually(lambda: a.stats.delivered == 10, "10 delivered")
    receiver.pause()
    for i in range(10, 300):
        a.audit(ev(i))
    a.close(timeout=0.5)
    assert a.stats.spilled > 0
    [in_spill] = spilled(private_spill_dir)
    seal = last_seal(in_spill)
    delivered = [m for m in receiver.messages if m.WhichOneof("msg") == "logs"]
    result = check_chain([*delivered, *in_spill], a.session_id, seal)
    assert result.ok, result
    assert seal.chain_count == 10 + a.stats.spilled


def test_events_given_up_for_the_spill_bound_are_not_in_the_seals_chain(
    sock_dir: Path, private_spill_dir: Path
) -> None:
    a = SocketAuditor(
        sock_dir / "absent.sock", batch_size=5, batch_interval=3600, spill_max_bytes=1000
    )
    for i in range(100):
        a.audit(ev(i, url=f"https://github.com/{i}/" + "p" * 100))
    a.close()
    assert a.stats.dropped[DropReason.SPILL_FULL] > 0
    [in_spill] = spilled(private_spill_dir)
    seal = last_seal(in_spill)
    assert seal.chain_count == a.stats.spilled
    assert check_chain(in_spill, a.session_id, seal).ok


@pytest.mark.parametrize("queue_size", [1, 3, 64])
def test_a_flood_with_drops_still_checks(receiver: Receiver, queue_size: int) -> None:
    a = SocketAuditor(receiver.path, queue_size=queue_size, batch_size=3, batch_interval=0.001)
    for i in range(3000):
        a.audit(ev(i))
    a.close(timeout=10)
    result = check_chain(receiver.messages, a.session_id)
    assert result.ok, result
    assert result.checked == a.stats.sent


def test_an_invalid_event_in_a_frame_that_waited_for_room_is_counted_once(
    receiver: Receiver,
) -> None:
    """A frame not written for lack of room is encoded again later: the invalid
    event inside it is still one drop, not one per attempt."""
    a = SocketAuditor(receiver.path, batch_size=4, batch_interval=3600, replay_window_bytes=1)
    assert a.connect_now(timeout=10) is OpenResult.ACKNOWLEDGED
    receiver.hold()  # reads, never acknowledges: the first frame fills the window
    big = "https://github.com/" + "p" * 20_000
    a.audit(ev(0, url=big))
    a.audit(ev(1, url=big))  # a frame of its own, which must wait for room
    a.audit(AuditEvent("GET", 12345, "a", True))  # type: ignore[arg-type]
    a.audit(ev(3))  # the batch is full: due
    eventually(lambda: a.stats.frames_sent >= 2, "the first frame written")
    receiver.release()
    a.close(timeout=10)
    assert a.stats.dropped[DropReason.INVALID_EVENT] == 1
    assert last_seal(receiver.messages).dropped[DropReason.INVALID_EVENT] == 1
    assert check_chain(receiver.messages, a.session_id).ok


ops = st.lists(
    st.one_of(
        st.just("event"),
        st.just("invalid"),
        st.integers(0, 60).map(lambda n: f"own:{n}"),  # a number of its own, maybe repeated
    ),
    min_size=1,
    max_size=40,
)


@given(ops=ops, batch=st.sampled_from([1, 3, 1000]))
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_any_drop_pattern_on_a_real_socket_leaves_a_chain_the_receiver_checks(
    receiver: Receiver, ops: list[str], batch: int
) -> None:
    """Invalid events, and numbers brought out of order or twice, are gaps;
    whatever went out, the receiver's recomputed chain matches the seal."""
    a = SocketAuditor(receiver.path, batch_size=batch, batch_interval=0.005)
    for i, op in enumerate(ops):
        if op == "event":
            a.audit(ev(i))
        elif op == "invalid":
            a.audit(AuditEvent("GET", 12345, "a", True))  # type: ignore[arg-type]
        else:
            own = int(op.split(":")[1])
            a.audit(AuditEvent("GET", f"https://x/{i}", "x", True, "r", sequence_number=own))
    a.close(timeout=10)
    stats = a.stats
    result = check_chain(receiver.messages, a.session_id)
    assert result.ok, (result, ops)
    assert result.checked == stats.sent
    assert stats.sent + stats.dropped[DropReason.INVALID_EVENT] == len(ops)
