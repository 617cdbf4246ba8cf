"""The agent's pure books: acks, session owners, per-peer counts, the evidence limiter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.agent.acks import AckBook
from boundary_audit.agent.deadletter import EvidenceLimiter
from boundary_audit.agent.drops import MAX_REPORT_COUNT, DropLedger
from boundary_audit.agent.sessions import PeerCounts, SessionOwners
from boundary_audit.wire import DropReason, DropSource


def test_acks_follow_commits_cumulatively() -> None:
    book = AckBook()
    book.handled(1, 1)
    book.handled(2, 1)
    book.handled(3, 2)
    assert book.due(0) is None
    assert book.due(1) == 2
    assert book.due(1) is None  # nothing new
    assert book.due(5) == 3


@given(st.lists(st.integers(0, 5), min_size=1, max_size=50), st.lists(st.integers(0, 300)))
def test_acks_never_decrease_nor_pass_a_frame_not_yet_committed(
    steps: list[int], commits: list[int]
) -> None:
    book = AckBook()
    ticket = 0
    tickets = {}
    for frame, step in enumerate(steps, start=1):
        ticket += step
        tickets[frame] = ticket
        book.handled(frame, ticket)
    last = 0
    for committed in sorted(commits):
        upto = book.due(committed)
        if upto is not None:
            assert upto > last
            assert tickets[upto] <= committed
            last = upto


def test_a_closing_connection_is_never_acknowledged() -> None:
    book = AckBook()
    book.handled(1, 0)
    book.closing = True
    assert book.due(10) is None


def test_a_session_is_bound_to_the_peer_that_opened_it_while_it_lives() -> None:
    owners = SessionOwners()
    real, child = (100, 0), (101, 0)
    assert owners.open("s", 1, real)
    assert owners.allows("s", 1, real)
    assert owners.allows("s", 2, real)  # the same sender reconnecting
    assert not owners.allows("s", 3, child)
    assert not owners.open("s", 3, child)
    assert owners.allows("other", 3, child)  # sessions nobody opened flow as before
    owners.closed(1, {"s"})
    assert owners.allows("s", 3, child)  # the opener is gone
    assert len(owners) == 0


def test_unknown_peers_are_told_apart_by_connection() -> None:
    owners = SessionOwners()
    assert owners.open("s", 1, (None, None))
    assert not owners.allows("s", 2, (None, None))


def test_peer_counts_refuse_per_pid_then_per_uid() -> None:
    counts = PeerCounts(max_per_pid=2, max_per_uid=3)
    assert counts.admit(1, 0) is None
    assert counts.admit(1, 0) is None
    assert counts.admit(1, 0) == "per_pid"
    assert counts.admit(2, 0) is None
    assert counts.admit(3, 0) == "per_uid"
    assert counts.admit(3, 1000) is None  # another user is not locked out
    counts.release(1, 0)
    assert counts.admit(3, 0) is None


def test_evidence_limiter_keeps_the_first_per_window() -> None:
    limiter = EvidenceLimiter(per_window=2, window=10.0)
    assert [limiter.allow("a", t) for t in (0, 1, 2, 3)] == [True, True, False, False]
    assert limiter.allow("b", 3)
    assert limiter.allow("a", 10.5)
    assert limiter.suppressed == 2


def test_drop_ledger_clamps_sums_below_int64() -> None:
    ledger = DropLedger()
    for _ in range(3):
        ledger.add(DropSource.BOUNDARY, "s", DropReason.BOUNDARY_CHANNEL_FULL, 2**63 - 1)
    assert ledger.clamped >= 1
    [(_, payload)] = ledger.take_reports()  # serialises: no int64 overflow
    assert payload
    assert ledger.totals() == {}
    assert MAX_REPORT_COUNT < 2**63
