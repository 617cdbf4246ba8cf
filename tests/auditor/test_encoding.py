from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit.auditor.encoding import (
    Record,
    decode_ack,
    encode_open,
    encode_records,
    encode_seal,
    encode_status,
    field_size,
    varint_size,
)
from boundary_audit.wire import (
    MAX_EVENTS_PER_FRAME,
    MAX_PAYLOAD_SIZE,
    FrameDecoder,
    SessionSeal,
    as_envelope,
    decode_payload,
)
from tests.receiver import ack_frame

SESSION = "0b8f0f4e-3c4d-4f5e-8a6b-7c8d9e0f1a2b"


def _decode(frames: list[bytes]) -> list[tuple[str, str, int, bool, str]]:
    decoder = FrameDecoder()
    out = []
    for f in frames:
        for frame in decoder.feed(f):
            assert frame.tag == 2
            assert len(frame.payload) <= MAX_PAYLOAD_SIZE
            msg = as_envelope(decode_payload(frame.tag, frame.payload))
            assert msg.WhichOneof("msg") == "logs"
            req = msg.logs
            for log in req.logs:
                out.append(
                    (
                        req.session_id,
                        log.http_request.url,
                        log.sequence_number,
                        log.allowed,
                        log.http_request.matched_rule,
                    )
                )
    return out


def test_varint_sizes() -> None:
    assert [varint_size(v) for v in (0, 127, 128, 16383, 16384, 2**21)] == [1, 1, 2, 2, 3, 4]
    assert field_size(200) == 1 + 2 + 200


records_strategy = st.lists(
    st.builds(
        Record,
        session_id=st.sampled_from([SESSION, "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"]),
        sequence_number=st.integers(0, 2**31 - 1),
        time_ns=st.integers(0, 2**62),
        method=st.sampled_from(["GET", "POST", "PATCH"]),
        # Text UTF-8 can carry (no lone surrogates): the proxy decodes targets
        # as latin-1, and an unencodable URL is a skipped record (tested below).
        url=st.text(max_size=300)
        | st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(11000, 40000)),
        allowed=st.booleans(),
        rule=st.none() | st.text(max_size=200),
    ),
    max_size=40,
)


@given(records=records_strategy, limit=st.sampled_from([MAX_PAYLOAD_SIZE, 4096, 700]))
@settings(max_examples=120, deadline=None)
def test_frames_fit_and_preserve_every_event(records: list[Record], limit: int) -> None:
    encoded = list(encode_records(records, "claude-code", limit))
    for enc in encoded:
        assert len(enc.frame) - 4 <= limit
    decoded = _decode([e.frame for e in encoded])
    assert len(decoded) == len(records) == sum(e.events for e in encoded)
    truncated = 0
    for rec, (session, url, seq, allowed, rule) in zip(records, decoded, strict=True):
        assert session == rec.session_id
        assert seq == rec.sequence_number
        assert allowed == rec.allowed
        # matched_rule only ever travels with allowed events.
        assert rule == (rec.rule or "" if rec.allowed else "")
        if url != rec.url:
            truncated += 1
            assert "[truncated " in url
            assert rec.url.startswith(url.split("...[truncated ")[0])
    assert truncated == sum(e.truncated for e in encoded)


def test_backlog_packs_full_frames() -> None:
    records = [
        Record(
            SESSION, i, 1_700_000_000_000_000_000, "GET", f"https://h.example/{i:05d}", True, "r"
        )
        for i in range(5000)
    ]
    encoded = list(encode_records(records, "p"))
    # Every frame but the last is filled close to the cap.
    assert all(len(e.frame) > MAX_PAYLOAD_SIZE - 200 for e in encoded[:-1])
    assert sum(e.events for e in encoded) == 5000
    assert [e.first_sequence for e in encoded] == sorted(e.first_sequence for e in encoded)


def test_session_change_starts_a_new_frame() -> None:
    other = "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"
    records = [
        Record(SESSION, 0, 0, "GET", "u", True, None),
        Record(other, 0, 0, "GET", "u", True, None),
    ]
    encoded = list(encode_records(records, "p"))
    assert [e.events for e in encoded] == [1, 1]


def test_unencodable_records_are_skipped_and_reported() -> None:
    bad: list[tuple[int, str]] = []
    records = [
        Record(SESSION, 0, 0, "GET", "u", True, None),
        Record(SESSION, 2**31, 0, "GET", "u", True, None),
        Record(SESSION, 2, 0, "GET", "u", True, None),
    ]
    encoded = list(encode_records(records, "p", on_invalid=lambda r, e: bad.append((r[1], str(e)))))
    assert sum(e.consumed for e in encoded) == 3
    assert [s for s, _ in bad] == [2**31]
    assert [seq for _, _, seq, _, _ in _decode([e.frame for e in encoded])] == [0, 2]
    only_bad = list(encode_records([records[1]], "p"))
    assert [(e.frame, e.consumed) for e in only_bad] == [(b"", 1)]


def test_a_url_utf8_cannot_carry_is_a_skipped_record() -> None:
    bad: list[int] = []
    records = [
        Record(SESSION, 0, 0, "GET", "https://a/\ud800", True, None),  # a lone surrogate
        Record(SESSION, 1, 0, "GET", "u", True, None),
    ]
    encoded = list(encode_records(records, "p", on_invalid=lambda r, e: bad.append(r[1])))
    assert bad == [0]
    assert [seq for _, _, seq, _, _ in _decode([e.frame for e in encoded])] == [1]


def _status(frame_bytes: bytes):  # type: ignore[no-untyped-def]
    (frame,) = FrameDecoder().feed(frame_bytes)
    msg = as_envelope(decode_payload(frame.tag, frame.payload))
    assert (frame.tag, msg.WhichOneof("msg")) == (2, "status")
    return msg.status


def test_status_frame_reports_queue_drops_and_no_batch_drops() -> None:
    status = _status(encode_status(42, SESSION))
    assert (status.dropped_channel_full, status.dropped_batch_full) == (42, 0)
    assert status.session_id == SESSION


def test_open_and_seal_frames_carry_no_drop_deltas_for_coders_agent() -> None:
    opened = _status(encode_open(SESSION, "boundary-audit/9.9", 17))
    assert (opened.dropped_channel_full, opened.dropped_batch_full) == (0, 0)
    assert opened.session_id == SESSION
    assert (opened.open.want_acks, opened.open.sender) == (True, "boundary-audit/9.9")
    assert opened.open.first_sequence_number == 17
    seal = SessionSeal(events_made=5, events_sent=4, spilled=1)
    seal.dropped["channel_full"] = 3
    sealed = _status(encode_seal(SESSION, seal))
    assert (sealed.dropped_channel_full, sealed.session_id) == (0, SESSION)
    assert sealed.seal == seal


def test_acks_decode_and_anything_else_from_the_agent_is_refused() -> None:
    (frame,) = FrameDecoder().feed(ack_frame(12))
    assert decode_ack(frame.payload) == 12
    (status,) = FrameDecoder().feed(encode_status(1))
    with pytest.raises(ValueError, match="not an ack"):
        decode_ack(status.payload)
    with pytest.raises(ValueError, match="undecodable"):
        decode_ack(b"\xff\xff\xff")


def test_a_frame_never_carries_more_than_coderds_limit_of_events() -> None:
    """Tiny events would pack ~1,200 to a 32 KiB frame; coderd refuses > 1,000."""
    records = [Record(SESSION, i, 0, "G", "u", False, None) for i in range(2500)]
    frames = list(encode_records(records, ""))
    assert [f.events for f in frames] == [MAX_EVENTS_PER_FRAME, MAX_EVENTS_PER_FRAME, 500]
    assert len(_decode([f.frame for f in frames])) == 2500
    assert frames[0].max_sequence == MAX_EVENTS_PER_FRAME - 1
