"""What a frame means to the agent, and how long a half-sent one may stall: no sockets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.agent.frames import (
    BadFrame,
    LogsFrame,
    StallTimer,
    StatusFrame,
    interpret_frame,
)
from boundary_audit.wire import (
    BoundaryMessage,
    BoundaryStatus,
    DropReason,
    ReportBoundaryLogsRequest,
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
    meaning = interpret_frame(Tag.V2_ENVELOPE, BoundaryMessage(status=status).SerializeToString())
    assert meaning == StatusFrame(
        {DropReason.BOUNDARY_CHANNEL_FULL: channel, DropReason.BOUNDARY_BATCH_FULL: batch}
    )


def test_negative_status_counts_are_a_bad_frame() -> None:
    status = BoundaryStatus(dropped_channel_full=-4)
    meaning = interpret_frame(Tag.V2_ENVELOPE, BoundaryMessage(status=status).SerializeToString())
    assert isinstance(meaning, BadFrame)
    assert "negative drop counts" in meaning.why
    assert "'boundary_channel_full': -4" in meaning.why


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
