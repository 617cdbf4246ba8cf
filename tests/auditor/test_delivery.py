"""What the agent has: acks, SIOCOUTQ arithmetic and re-sends, by stepping numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit.auditor.delivery import (
    ACK_WAIT,
    AckError,
    Delivery,
    Kind,
    PeerMode,
    Sent,
    frames_read,
    unread_frames,
)

#: What the kernel charges for a small write on this machine's Unix sockets
#: (skb truesize): any value above the payload does for the arithmetic.
SMALL_CHARGE = 768
WINDOW = 1 << 20


def wholly_read(sizes: list[int], consumed: int) -> tuple[int, int]:
    """(frames wholly read, their bytes) when a reader consumed ``consumed`` bytes."""
    count = offset = 0
    for size in sizes:
        if offset + size > consumed:
            break
        offset += size
        count += 1
    return count, offset


def logs(first: int, events: int = 10, size: int = 100) -> Sent:
    return Sent(b"L" * size, Kind.LOGS, events, first)


def opened(d: Delivery, outq_after: int | None = SMALL_CHARGE) -> Sent:
    o = Sent(b"O" * 20, Kind.OPEN)
    d.wrote(o, outq_after)
    return o


# -- the arithmetic --------------------------------------------------------------


def test_frames_read_counts_the_frames_before_the_unread_tail() -> None:
    assert frames_read([768, 768, 768], 0) == 3  # nothing charged: all read
    assert frames_read([768, 768, 768], 768) == 2  # the last is unread
    assert frames_read([768, 768, 768], 769) == 1  # more than one frame: two unread
    assert frames_read([768, 768, 768], 10_000) == 0  # more than all: none known read
    assert frames_read([], 0) == 0
    assert unread_frames([], 5) == 0


@given(
    frames=st.lists(
        st.tuples(st.integers(1, 40_000), st.integers(0, 4_000), st.floats(0, 1)),
        min_size=1,
        max_size=40,
    ),
    position=st.floats(0, 1),
)
@settings(max_examples=400, deadline=None)
def test_the_unread_tail_is_never_underestimated(
    frames: list[tuple[int, int, float]], position: float
) -> None:
    """Whatever the kernel's overhead, and however our estimates fall short of
    it, every frame not wholly read is counted unread (a re-send, never a loss);
    with exact estimates and the reader at a frame boundary, exactly those."""
    sizes = [size for size, _, _ in frames]
    true = [size + overhead for size, overhead, _ in frames]
    # Our estimate of each: somewhere between the payload length and the truth.
    est = [size + int(overhead * frac) for size, overhead, frac in frames]
    # The reader consumed a prefix of the byte stream, maybe inside a frame.
    total = sum(sizes)
    consumed = int(total * position)
    read, offset = wholly_read(sizes, consumed)
    outq = sum(true[read:])  # a partly read frame stays charged whole
    assert frames_read(est, outq) <= read
    if offset == consumed:  # at a boundary, exact estimates are exact
        assert frames_read(true, outq) == read


# -- against an agent that acknowledges ----------------------------------------------


def test_acks_release_frames_in_order_and_a_loss_re_sends_exactly_the_rest() -> None:
    d = Delivery(WINDOW)
    opened(d)
    sent = [logs(i * 10) for i in range(4)]
    for s in sent:
        d.wrote(s, None)
    released = d.acknowledged(3)  # open + two frames
    assert d.mode is PeerMode.ACKNOWLEDGES
    assert [s.kind for s in released] == [Kind.OPEN, Kind.LOGS, Kind.LOGS]
    assert released[1:] == sent[:2]
    assert d.acknowledged(2) == []  # cumulative: an older ack changes nothing
    delivered, abandoned = d.lost()
    assert (delivered, abandoned) == ([], [])
    assert d.carried == sent[2:]
    # The next connection: frames count from 1 again, the belief stays.
    assert (d.written, d.mode) == (0, PeerMode.ACKNOWLEDGES)
    reopened = opened(d)
    for s in d.take_carried():
        d.wrote(s, None)
    assert d.acknowledged(3) == [reopened, *sent[2:]]
    assert d.settled


def test_an_ack_for_frames_never_written_is_a_broken_agent() -> None:
    d = Delivery(WINDOW)
    opened(d)
    with pytest.raises(AckError):
        d.acknowledged(2)


def test_the_window_bounds_bytes_held_until_acknowledged() -> None:
    d = Delivery(window_bytes=250)
    assert d.room(10_000)  # nothing held: any single frame may go
    opened(d, None)
    d.wrote(logs(0), None)
    d.wrote(logs(10), None)
    assert d.held_bytes == 220
    assert d.room(30)
    assert not d.room(31)
    d.acknowledged(2)
    assert d.room(150)


def test_spill_frames_are_not_carried_their_file_is_delivered_again() -> None:
    d = Delivery(WINDOW)
    d.mode = PeerMode.ACKNOWLEDGES
    opened(d)
    own, foreign = logs(0), Sent(b"S" * 50, Kind.LOGS, 5, 0, origin="file")
    d.wrote(own, None)
    d.wrote(foreign, None)
    delivered, abandoned = d.lost()
    assert (delivered, abandoned, d.carried) == ([], [foreign], [own])


# -- against an agent that never acknowledges ------------------------------------------


def test_reads_count_only_once_the_peer_is_seen_alive_after_the_sample() -> None:
    d = Delivery(WINDOW)
    opened(d, outq_after=SMALL_CHARGE)
    a, b = logs(0), logs(10)
    d.wrote(a, outq_after=2 * SMALL_CHARGE)
    d.wrote(b, outq_after=3 * SMALL_CHARGE)
    assert b.charge == SMALL_CHARGE  # the rise across its write
    d.sampled(SMALL_CHARGE)  # the peer read all but the last...
    # ...but died before we saw it alive: the sample is not trusted.
    delivered, _ = d.lost()
    assert delivered == []
    assert d.carried == [a, b]


def test_an_agent_that_never_acknowledges_is_recognised_after_ack_wait() -> None:
    d = Delivery(WINDOW)
    opened(d)
    a, b = logs(0), logs(10)
    d.wrote(a, outq_after=2 * SMALL_CHARGE)
    d.wrote(b, outq_after=3 * SMALL_CHARGE)
    d.sampled(SMALL_CHARGE)
    assert d.alive(now=10.0) == []  # read, but it may still acknowledge
    assert d.read == 2
    assert d.ack_deadline() == 10.0 + ACK_WAIT
    assert d.tick(10.0 + ACK_WAIT / 2) == []
    released = d.tick(10.0 + ACK_WAIT)
    assert d.mode is PeerMode.NEVER_ACKNOWLEDGES
    assert [s.kind for s in released] == [Kind.OPEN, Kind.LOGS]
    d.sampled(0)
    assert d.alive(11.0) == [b]
    assert d.settled


def test_a_lost_connection_re_sends_only_what_was_not_wholly_read() -> None:
    d = Delivery(WINDOW)
    d.mode = PeerMode.NEVER_ACKNOWLEDGES
    opened(d)
    frames = [logs(i * 10) for i in range(4)]
    outq = SMALL_CHARGE
    for f in frames:
        outq += SMALL_CHARGE
        d.wrote(f, outq_after=outq)
    d.sampled(2 * SMALL_CHARGE)  # the last two are unread
    released = d.alive(5.0)
    assert released[1:] == frames[:2]
    d.wrote(extra := logs(40), outq_after=3 * SMALL_CHARGE)  # written after the sample
    delivered, _ = d.lost()
    assert delivered == []
    assert d.carried == [*frames[2:], extra]


def test_frames_read_but_unconfirmed_count_as_delivered_on_a_loss() -> None:
    """Before the agent's kind is known, reads do not release frames (an ack
    may still come), but a lost connection treats them as delivered: re-sending
    them could duplicate them in a receiver without deduplication."""
    d = Delivery(WINDOW)
    o = opened(d)
    a, b = logs(0), logs(10)
    d.wrote(a, outq_after=2 * SMALL_CHARGE)
    d.wrote(b, outq_after=3 * SMALL_CHARGE)
    d.sampled(SMALL_CHARGE)
    d.alive(1.0)
    delivered, _ = d.lost()
    assert delivered == [o, a]
    assert d.carried == [b]


@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(1, 5000)),
            st.tuples(st.just("read"), st.floats(0, 1)),
            st.tuples(st.just("sample"), st.booleans()),
        ),
        max_size=60,
    )
)
@settings(max_examples=300, deadline=None)
def test_against_a_reader_that_never_acknowledges_nothing_is_lost_or_resent_twice(
    ops: list[tuple[str, object]],
) -> None:
    """A simulated kernel and peer: whatever the interleaving of writes, reads
    and samples, a lost connection carries every frame not wholly read (no
    loss); and when no read raced a write (each charge estimate exact),
    nothing wholly read by the last trusted sample (no duplicate)."""
    overhead = 700
    d = Delivery(WINDOW)
    d.mode = PeerMode.NEVER_ACKNOWLEDGES
    sizes: list[int] = []
    consumed = 0  # bytes the peer read
    sent: list[Sent] = []
    read_at_trusted = 0

    def charged() -> int:
        read, _ = wholly_read(sizes, consumed)
        return sum(size + overhead for size in sizes[read:])

    for op, arg in ops:
        if op == "write":
            assert isinstance(arg, int)
            s = Sent(b"x" * arg, Kind.LOGS, 1, len(sent))
            sizes.append(arg)
            sent.append(s)
            d.wrote(s, outq_after=charged())
        elif op == "read":
            assert isinstance(arg, float)
            consumed += int((sum(sizes) - consumed) * arg)
        else:
            d.sampled(charged())
            if arg:  # seen alive after it
                read_at_trusted, _ = wholly_read(sizes, consumed)
                d.alive(0.0)
    # The peer may read more before it dies: the inherent race.
    delivered, _ = d.lost()
    carried = d.carried
    unread = sent[wholly_read(sizes, consumed)[0] :]
    assert all(s in carried for s in unread), "a frame not wholly read was not carried"
    if all(s.charge == len(s.frame) + overhead for s in sent):
        assert not any(s in carried for s in sent[:read_at_trusted]), "a read frame re-sent"
    assert set(map(id, carried)).isdisjoint(map(id, delivered))


def test_while_the_agents_kind_is_unknown_a_full_window_lets_read_frames_go() -> None:
    d = Delivery(window_bytes=250)
    o = opened(d, outq_after=SMALL_CHARGE)
    a, b = logs(0), logs(10)
    d.wrote(a, outq_after=2 * SMALL_CHARGE)
    d.wrote(b, outq_after=3 * SMALL_CHARGE)
    assert not d.room(100)
    d.sampled(SMALL_CHARGE)
    d.alive(1.0)  # open and a read; the mode is still unknown
    assert d.make_room() == [o, a]
    assert d.room(100)
    d.acknowledged(3)  # an ack after all: from now on, only acks release
    d.wrote(logs(20), outq_after=None)
    assert d.make_room() == []
