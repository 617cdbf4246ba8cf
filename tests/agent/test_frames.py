"""What a frame means to the agent, and how long a half-sent one may stall: no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.agent.frames import (
    MAX_STATUS_DROP_COUNT,
    BadFrame,
    LogsFrame,
    StallTimer,
    StatusFrame,
    interpret_frame,
    session_record,
)
from boundary_audit.agent.spool import KIND_SESSION
from boundary_audit.wire import (
    Ack,
    BoundaryMessage,
    BoundaryStatus,
    DropReason,
    ReportBoundaryLogsRequest,
    SessionOpen,
    SessionRecord,
    SessionSeal,
    Tag,
)

from .helpers import logs_request, new_session


def test_a_tag2_batch_is_spooled_without_its_envelope() -> None:
    session = new_session()
    request = logs_request(session, 0, 3)
    meaning = interpret_frame(Tag.V2_ENVELOPE, BoundaryMessage(logs=request).SerializeToString())
    assert isinstance(meaning, LogsFrame)
    assert meaning.session_id == session
    assert meaning.batch is not None
    assert (meaning.batch.session_id, meaning.batch.events) == (session, 3)
    stored = ReportBoundaryLogsRequest()
    stored.ParseFromString(meaning.batch.payload)
    assert stored == request


def test_a_tag1_payload_is_kept_as_it_came() -> None:
    payload = logs_request(new_session(), 5, 2).SerializeToString()
    meaning = interpret_frame(Tag.V1_LOGS, payload)
    assert isinstance(meaning, LogsFrame)
    assert meaning.batch is not None
    assert meaning.batch.payload == payload
    assert meaning.batch.events == 2


def test_an_empty_batch_names_its_session_but_stores_nothing() -> None:
    session = new_session()
    empty = ReportBoundaryLogsRequest(session_id=session)
    meaning = interpret_frame(Tag.V2_ENVELOPE, BoundaryMessage(logs=empty).SerializeToString())
    assert meaning == LogsFrame(session, None)


@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_status_counts_become_drops_under_the_agents_names(channel: int, batch: int) -> None:
    status = BoundaryStatus(dropped_channel_full=channel, dropped_batch_full=batch)
    payload = BoundaryMessage(status=status).SerializeToString()
    meaning = interpret_frame(Tag.V2_ENVELOPE, payload)
    assert meaning == StatusFrame(
        {DropReason.BOUNDARY_CHANNEL_FULL: channel, DropReason.BOUNDARY_BATCH_FULL: batch},
        payload=payload,
    )


@given(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1))
def test_status_counts_are_clamped_into_range(channel: int, batch: int) -> None:
    status = BoundaryStatus(dropped_channel_full=channel, dropped_batch_full=batch)
    meaning = interpret_frame(Tag.V2_ENVELOPE, BoundaryMessage(status=status).SerializeToString())
    assert isinstance(meaning, StatusFrame)
    assert all(0 <= n <= MAX_STATUS_DROP_COUNT for n in meaning.dropped.values())
    in_range = all(0 <= n <= MAX_STATUS_DROP_COUNT for n in (channel, batch))
    assert meaning.clamped is not in_range


def test_a_seal_with_hostile_counts_is_clamped() -> None:
    session = new_session()
    seal = SessionSeal(events_made=-1, events_sent=2**62, undelivered=3)
    seal.dropped["channel_full"] = 2**63 - 1
    status = BoundaryStatus(session_id=session, seal=seal)
    meaning = interpret_frame(Tag.V2_ENVELOPE, BoundaryMessage(status=status).SerializeToString())
    assert isinstance(meaning, StatusFrame)
    assert meaning.clamped
    assert meaning.seal is not None
    assert (meaning.seal.events_made, meaning.seal.events_sent) == (0, MAX_STATUS_DROP_COUNT)
    assert meaning.seal.undelivered == 3
    assert meaning.seal.dropped["channel_full"] == MAX_STATUS_DROP_COUNT


def test_opens_and_seals_become_session_records_with_deterministic_ids() -> None:
    session = new_session()
    status = BoundaryStatus(
        session_id=session, open=SessionOpen(want_acks=True, sender="t", first_sequence_number=7)
    )
    payload = BoundaryMessage(status=status).SerializeToString()
    meaning = interpret_frame(Tag.V2_ENVELOPE, payload)
    assert isinstance(meaning, StatusFrame)
    first = session_record(meaning, 1_000, "codex")
    again = session_record(meaning, 2_000)
    assert first is not None
    assert again is not None
    assert first.kind == again.kind == KIND_SESSION
    one, two = SessionRecord.FromString(first.payload), SessionRecord.FromString(again.payload)
    assert one.record_id == two.record_id  # a re-send is the same record
    assert (one.session_id, one.confined_process_name) == (session, "codex")
    assert one.open.first_sequence_number == 7
    assert one.observed_at.ToNanoseconds() == 1_000
    assert not one.HasField("seal")
    sealed = BoundaryStatus(session_id=session, seal=SessionSeal(events_made=8))
    other = interpret_frame(Tag.V2_ENVELOPE, BoundaryMessage(status=sealed).SerializeToString())
    assert isinstance(other, StatusFrame)
    record = session_record(other, 3_000)
    assert record is not None
    assert SessionRecord.FromString(record.payload).record_id != one.record_id
    plain = interpret_frame(
        Tag.V2_ENVELOPE, BoundaryMessage(status=BoundaryStatus()).SerializeToString()
    )
    assert isinstance(plain, StatusFrame)
    assert session_record(plain, 0) is None


@pytest.mark.parametrize(
    "status",
    [
        BoundaryStatus(session_id="not-a-uuid", open=SessionOpen(want_acks=True)),
        BoundaryStatus(open=SessionOpen(want_acks=True)),  # an open names its session
        BoundaryStatus(ack=Ack(frames=3)),  # only the agent writes acks
    ],
)
def test_bad_extension_statuses_are_bad_frames(status: BoundaryStatus) -> None:
    meaning = interpret_frame(Tag.V2_ENVELOPE, BoundaryMessage(status=status).SerializeToString())
    assert isinstance(meaning, BadFrame)


def test_logs_the_collector_would_refuse_are_bad_frames() -> None:
    bad_session = interpret_frame(
        Tag.V2_ENVELOPE, BoundaryMessage(logs=logs_request("x", 0, 1)).SerializeToString()
    )
    assert isinstance(bad_session, BadFrame)
    assert bad_session.session_id == "x"
    negative = logs_request(new_session(), 0, 2)
    negative.logs[1].sequence_number = -3
    meaning = interpret_frame(Tag.V2_ENVELOPE, BoundaryMessage(logs=negative).SerializeToString())
    assert isinstance(meaning, BadFrame)
    assert "negative sequence number" in meaning.why


def test_undecodable_and_empty_envelopes_are_bad_frames() -> None:
    garbage = interpret_frame(Tag.V2_ENVELOPE, b"\xff\xff\xff\xff")
    assert isinstance(garbage, BadFrame)
    assert garbage.why
    empty = interpret_frame(Tag.V2_ENVELOPE, b"")
    assert empty == BadFrame("envelope carries neither logs nor status")


@given(st.binary(max_size=64))
def test_any_payload_gets_a_meaning_never_an_exception(payload: bytes) -> None:
    for tag in (Tag.V1_LOGS, Tag.V2_ENVELOPE):
        assert isinstance(interpret_frame(tag, payload), LogsFrame | StatusFrame | BadFrame)


def test_stall_timer_runs_only_inside_a_frame() -> None:
    timer = StallTimer(30.0)
    assert timer.deadline(mid_frame=False, now=100.0) is None  # idle: no limit
    assert timer.deadline(mid_frame=True, now=200.0) == 230.0


def test_trickled_bytes_do_not_move_the_deadline() -> None:
    timer = StallTimer(30.0)
    first = timer.deadline(mid_frame=True, now=0.0)
    # A byte every 10 s: still inside the same frame, the deadline stays.
    for now in (10.0, 20.0, 29.0):
        assert timer.deadline(mid_frame=True, now=now) == first == 30.0


def test_a_completed_frame_gives_the_next_its_own_clock() -> None:
    timer = StallTimer(30.0)
    assert timer.deadline(mid_frame=True, now=0.0) == 30.0
    timer.frame_completed()  # and the read left the next frame half-sent
    assert timer.deadline(mid_frame=True, now=25.0) == 55.0
    assert timer.deadline(mid_frame=False, now=26.0) is None
    assert timer.deadline(mid_frame=True, now=40.0) == 70.0
