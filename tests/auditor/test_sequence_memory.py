"""Sequence numbers, and the MemoryAuditor that numbers events as the wire would."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.auditor import (
    MAX_SEQUENCE_NUMBER,
    AuditEvent,
    Auditor,
    MemoryAuditor,
    SequenceCounter,
    SocketAuditor,
)

SESSION = "0b8f0f4e-3c4d-4f5e-8a6b-7c8d9e0f1a2b"


def ev(i: int = 0, *, seq: int | None = None, time_ns: int | None = None) -> AuditEvent:
    return AuditEvent(
        "GET", f"https://a.example/{i}", "a.example", True, "r", time_ns, sequence_number=seq
    )


def test_numbers_count_from_zero_and_honour_an_events_own() -> None:
    counter = SequenceCounter(SESSION)
    assert counter.session_id == SESSION
    assert [counter.assign(ev()) for _ in range(3)] == [0, 1, 2]
    assert counter.assign(ev(seq=77)) == 77  # its own, and the count does not move
    assert counter.take() == 3


def test_a_session_that_runs_out_of_int32_numbers_continues_in_a_new_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter = SequenceCounter(SESSION, start=MAX_SEQUENCE_NUMBER - 1)
    with caplog.at_level(logging.WARNING, logger="boundary_audit"):
        assert [counter.take(), counter.take()] == [MAX_SEQUENCE_NUMBER - 1, MAX_SEQUENCE_NUMBER]
        assert counter.session_id == SESSION
        assert counter.take() == 0
    assert counter.session_id != SESSION
    assert uuid.UUID(counter.session_id)
    assert counter.rotations == 1
    assert counter.take() == 1
    assert sum("exhausted the wire's int32" in str(r.msg) for r in caplog.records) == 1


@given(start=st.integers(0, 5), limit=st.integers(5, 8), draws=st.integers(0, 30))
def test_next_number_peeks_at_what_take_returns_without_drawing_it(
    start: int, limit: int, draws: int
) -> None:
    counter = SequenceCounter(SESSION, start=start, limit=limit)
    for _ in range(draws):
        peeked = counter.next_number()
        session = counter.session_id
        assert counter.next_number() == peeked  # a peek draws nothing
        taken = counter.take()
        if peeked <= limit:
            assert (taken, counter.session_id) == (peeked, session)
        else:  # the session is used up: its events_made is limit + 1, the next starts at 0
            assert (peeked, taken) == (limit + 1, 0)
    with pytest.raises(TypeError):
        SequenceCounter(limit=None).next_number()


def test_without_a_limit_numbers_never_rotate() -> None:
    counter = SequenceCounter(SESSION, start=MAX_SEQUENCE_NUMBER, limit=None)
    assert [counter.take(), counter.take()] == [MAX_SEQUENCE_NUMBER, MAX_SEQUENCE_NUMBER + 1]
    assert (counter.session_id, counter.rotations) == (SESSION, 0)


def test_session_ids_are_uuids() -> None:
    assert SequenceCounter(uuid.UUID(SESSION)).session_id == SESSION
    assert SequenceCounter(SESSION.upper()).session_id == SESSION
    assert uuid.UUID(SequenceCounter().session_id)
    with pytest.raises(ValueError, match="session_id must be a UUID, got 'nope'"):
        SequenceCounter("nope")


@given(
    limit=st.integers(0, 6),
    own=st.lists(st.none() | st.integers(0, 100), max_size=40),
)
def test_every_session_numbers_its_events_0_1_2_up_to_the_limit(
    limit: int, own: list[int | None]
) -> None:
    counter = SequenceCounter(SESSION, limit=limit)
    drawn: dict[str, list[int]] = {}
    for number in own:
        seq = counter.assign(ev(seq=number))
        if number is not None:
            assert seq == number
        else:
            drawn.setdefault(counter.session_id, []).append(seq)
    assert len(drawn) == counter.rotations + (1 if drawn else 0)
    for numbers in drawn.values():
        assert numbers == list(range(len(numbers)))
        assert len(numbers) <= limit + 1


def test_numbers_drawn_from_many_threads_are_each_given_once() -> None:
    counter = SequenceCounter(limit=None)
    per_thread, n_threads = 2000, 4
    results: list[list[int]] = [[] for _ in range(n_threads)]

    def draw(k: int) -> None:
        results[k].extend(counter.take() for _ in range(per_thread))

    threads = [threading.Thread(target=draw, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(n for r in results for n in r) == list(range(per_thread * n_threads))


def test_memory_auditor_records_stamped_copies_numbered_like_the_socket_auditor() -> None:
    memory = MemoryAuditor(SESSION)
    socket = SocketAuditor("/nonexistent.sock", session_id=SESSION, disabled=True)
    events = [ev(0), ev(1, seq=40), ev(2, time_ns=5), ev(3)]
    assert [memory.audit(e) for e in events] == [socket.audit(e) for e in events] == [0, 40, 1, 2]
    assert memory.sequence_numbers() == [0, 40, 1, 2]
    assert memory.session_id == socket.session_id == SESSION
    assert events[0].sequence_number is None  # the caller's event is left alone
    assert events[0].time_ns is None
    recorded = memory.events
    assert [e.url for e in recorded] == [e.url for e in events]
    assert recorded[2].time_ns == 5  # an event's own time is kept
    assert all(e.time_ns is not None and e.time_ns > 1_600_000_000 * 10**9 for e in recorded[::3])
    assert isinstance(memory, Auditor)
    with memory:
        pass
    assert memory.closed
