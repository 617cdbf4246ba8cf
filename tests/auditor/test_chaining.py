"""The sender's hash chain, pure: what encode_records chains, and what a seal commits to."""

from __future__ import annotations

import collections
import itertools
import uuid
from collections.abc import Iterator

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit.auditor.chaining import (
    ChainMark,
    ChainSpan,
    OutOfOrderError,
    mark_for,
    seal_mark,
    start,
)
from boundary_audit.auditor.encoding import EncodedFrame, Record, encode_records, encode_seal
from boundary_audit.auditor.sender import Batch
from boundary_audit.wire import (
    MAX_FRAME_SIZE,
    MAX_PAYLOAD_SIZE,
    BoundaryMessage,
    FrameDecoder,
    SessionSeal,
    chain,
)
from tests.auditor.helpers import chained_events
from tests.auditor.test_encoding import records_strategy

SESSION = "5b4d0bd6-8f0e-4c39-9b0a-1c2d3e4f5a6b"
OTHER = "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"
PROCESS = "claude-code"
T0 = 1_700_000_000_123_456_789


def rec(seq: int, url: str = "", session: str = SESSION, allowed: bool = True) -> Record:
    return Record(
        session, seq, T0 + seq, "GET", url or f"https://h.example/{seq}", allowed, "domain=h"
    )


def messages(frames: list[EncodedFrame]) -> list[BoundaryMessage]:
    decoder = FrameDecoder()
    return [
        BoundaryMessage.FromString(f.payload) for enc in frames for f in decoder.feed(enc.frame)
    ]


def check(frames: list[EncodedFrame], mark: ChainMark) -> chain.ChainCheck:
    events = chained_events(messages(frames), mark.session_id)
    return chain.check(mark.session_id, events, mark.head, mark.count)


def test_every_event_carries_the_digest_the_documented_chain_gives() -> None:
    records = [rec(i, allowed=i % 2 == 0) for i in range(25)]
    frames = list(encode_records(records, PROCESS, chain=start(SESSION)))
    sent = chained_events(messages(frames), SESSION)
    # Denied events are chained with the empty rule they are sent with.
    assert [e.matched_rule for e, _ in sent[:2]] == ["domain=h", ""]
    expected = list(chain.digests(SESSION, [e for e, _ in sent]))
    assert [d for _, d in sent] == expected
    last = frames[-1].chain
    assert last is not None
    assert (last.after.head, last.after.count, last.after.last_sequence) == (expected[-1], 25, 24)
    assert check(frames, last.after).ok


def test_without_a_chain_nothing_is_added() -> None:
    (frame,) = encode_records([rec(0)], PROCESS)
    assert frame.chain is None
    (msg,) = messages([frame])
    assert msg.logs.logs[0].chain_digest == b""


def test_a_cut_url_is_chained_as_cut() -> None:
    huge = "https://h.example/" + "a" * 100_000
    (frame,) = encode_records([rec(0, url=huge)], PROCESS, chain=start(SESSION))
    assert frame.truncated == 1
    [(event, digest)] = chained_events(messages([frame]), SESSION)
    assert "[truncated " in event.url
    assert digest == chain.head(SESSION, [event])
    assert frame.chain is not None
    assert check([frame], frame.chain.after).ok


def test_frames_split_across_the_size_cap_continue_one_chain() -> None:
    records = [rec(i, url=f"https://h.example/{i}/" + "p" * 1000) for i in range(100)]
    frames = list(encode_records(records, PROCESS, chain=start(SESSION)))
    assert len(frames) > 1
    spans = [f.chain for f in frames]
    assert all(s is not None for s in spans)
    for a, b in itertools.pairwise(spans):
        assert a is not None
        assert b is not None
        assert a.after == b.before
    last = spans[-1]
    assert last is not None
    assert check(frames, last.after).ok


def test_a_number_not_above_the_last_chained_is_dropped_as_invalid() -> None:
    invalid: list[tuple[int, Exception]] = []
    committed = start(SESSION)
    first = list(encode_records([rec(0), rec(5)], PROCESS, chain=committed))
    assert first[-1].chain is not None
    committed = first[-1].chain.after
    later = list(
        encode_records(
            [rec(3), rec(5), rec(6)],
            PROCESS,
            on_invalid=lambda r, exc: invalid.append((r.sequence_number, exc)),
            chain=committed,
        )
    )
    assert [n for n, _ in invalid] == [3, 5]
    assert all(isinstance(exc, OutOfOrderError) for _, exc in invalid)
    (frame,) = later
    assert (frame.events, frame.skipped) == (1, 2)
    assert frame.chain is not None
    assert check(first + later, frame.chain.after).ok


def test_a_time_beyond_64_bits_is_invalid_not_a_crash() -> None:
    invalid: list[int] = []
    bad = Record(SESSION, 1, 2**63, "GET", "https://h/", True, None)
    frames = list(
        encode_records(
            [rec(0), bad, rec(2)],
            PROCESS,
            on_invalid=lambda r, _: invalid.append(r.sequence_number),
            chain=start(SESSION),
        )
    )
    assert invalid == [1]
    assert frames[-1].chain is not None
    assert check(frames, frames[-1].chain.after).ok


def test_each_session_has_its_own_chain_from_its_own_genesis() -> None:
    records = [rec(2**31 - 2), rec(2**31 - 1), rec(0, session=OTHER), rec(1, session=OTHER)]
    frames = list(encode_records(records, PROCESS, chain=start(SESSION)))
    assert [f.events for f in frames] == [2, 2]
    old, new = (f.chain for f in frames)
    assert old is not None
    assert new is not None
    assert new.before == start(OTHER)
    assert check(frames[:1], old.after).ok
    assert check(frames[1:], new.after).ok


def test_a_session_change_after_only_invalid_records_labels_frames_right() -> None:
    """(An envelope of skipped records only must not carry the next session's events.)"""
    bad = Record(SESSION, -1, T0, "GET", "u", True, None)
    frames = list(encode_records([bad, rec(0, session=OTHER)], PROCESS, chain=start(SESSION)))
    assert [(f.events, f.skipped) for f in frames] == [(0, 1), (1, 0)]
    (msg,) = messages(frames[1:])
    assert msg.logs.session_id == OTHER


def _send(
    records: list[Record], writes: Iterator[bool], committed: ChainMark
) -> tuple[list[EncodedFrame], ChainMark]:
    """The worker's loop, without a socket: a frame is written when ``writes`` says so.

    A frame that is not written is encoded again, from the committed mark,
    on the next attempt, as the sender thread does after no room or a
    failed write.
    """
    batch = list(records)
    written: list[EncodedFrame] = []
    while batch:
        consumed = 0
        for enc in encode_records(batch, PROCESS, chain=committed):
            if enc.frame:
                if not next(writes):
                    break
                written.append(enc)
                if enc.chain is not None:
                    committed = enc.chain.after
            consumed += enc.consumed
        del batch[:consumed]
    return written, committed


drop_patterns = st.lists(st.booleans(), min_size=1, max_size=300)


@given(
    kept=drop_patterns,
    failures=st.lists(st.booleans(), max_size=60),
    invalid_every=st.integers(0, 7),
    url_size=st.sampled_from([10, 3000, 40_000]),
)
@settings(max_examples=60, deadline=None)
def test_any_drop_pattern_and_any_failed_writes_leave_a_chain_that_checks(
    kept: list[bool], failures: list[bool], invalid_every: int, url_size: int
) -> None:
    """Numbers dropped before a frame are gaps; frames not written are re-encoded
    from the committed mark; the events that went out form one chain, each
    exactly once, and end in the mark the seal would carry."""
    records = []
    for n, survives in enumerate(kept):
        if not survives:
            continue  # dropped at the queue: the number is a gap
        if invalid_every and n % (invalid_every + 3) == 0:
            records.append(Record(SESSION, n, T0, "GET", 12345, True, None))  # type: ignore[arg-type]
        else:
            records.append(rec(n, url="https://h.example/" + "x" * (url_size + n)))
    writes = iter([*failures, *([True] * 10_000)])
    frames, committed = _send(records, writes, start(SESSION))
    result = check(frames, committed)
    assert result.ok, result
    valid = [r.sequence_number for r in records if isinstance(r.url, str)]
    sent = [e.sequence_number for e, _ in chained_events(messages(frames), SESSION)]
    assert sent == valid
    assert committed.count == len(valid)
    all_logs = [log for m in messages(frames) for log in m.logs.logs]
    assert len(all_logs) == len(valid)  # each once: a frame not written is not counted
    # The digest was accounted for before it was known: every frame still fits.
    assert all(len(f.frame) <= MAX_FRAME_SIZE for f in frames)


# -- what a seal commits to ------------------------------------------------------------


def _span(first: int, last: int, before: ChainMark) -> tuple[ChainSpan, ChainMark]:
    mark = before
    for n in range(first, last + 1):
        mark = mark.then(chain.ChainedEvent(n, n, True, "GET", f"u{n}", "", ""))
    return ChainSpan(before, mark), mark


def test_the_spill_seal_covers_what_was_delivered_and_kept_and_gives_up_the_rest() -> None:
    delivered = _span(0, 9, start(SESSION))[1]
    a, after_a = _span(10, 19, delivered)  # written, in doubt
    b, after_b = _span(20, 29, after_a)  # encoded at close
    spans: list[ChainSpan | None] = [a, None, b]
    assert seal_mark(spans, 3, delivered, SESSION) == after_b
    assert seal_mark(spans, 2, delivered, SESSION) == after_a  # b did not fit
    assert seal_mark(spans, 1, delivered, SESSION) == after_a
    assert seal_mark(spans, 0, delivered, SESSION) == delivered  # nothing fit
    assert seal_mark([], 0, after_b, SESSION) == after_b  # all delivered
    assert seal_mark([None], 1, None, SESSION) == start(SESSION)  # nothing ever chained


def test_a_mark_of_a_rotated_session_is_never_sealed_for_the_new_one() -> None:
    old, _ = _span(0, 3, start(OTHER))
    assert seal_mark([old], 1, old.after, SESSION) == start(SESSION)
    assert mark_for(old.after, SESSION) == start(SESSION)
    assert mark_for(old.after, OTHER) == old.after


def test_the_batch_is_kept_in_sequence_order() -> None:
    queue = collections.deque([rec(0), rec(2), rec(1)])
    batch = Batch(10, 5.0)
    batch.take(queue, 0.0)
    queue.extend([rec(4), rec(3)])
    batch.take(queue, 0.0)
    assert [r.sequence_number for r in batch.records] == [0, 1, 2, 3, 4]
    # Two sessions (a rotation) are left in queue order.
    mixed = collections.deque([rec(5), rec(0, session=OTHER)])
    other = Batch(10, 5.0)
    other.take(mixed, 0.0)
    assert [r.session_id for r in other.records] == [SESSION, OTHER]


# -- Coder's agent still understands every frame ---------------------------------------


def _coder_schema() -> tuple[type[Message], type[Message]]:
    """Coder's own messages (no field 16 in BoundaryLog, no extensions in the status),
    built in a pool of their own: what Coder's agent decodes our frames with."""
    ts = descriptor_pb2.FileDescriptorProto(name="ts.proto", package="google.protobuf")
    t = ts.message_type.add(name="Timestamp")
    t.field.add(name="seconds", number=1, type=3, label=1)
    t.field.add(name="nanos", number=2, type=5, label=1)
    f = descriptor_pb2.FileDescriptorProto(
        name="coder.proto", package="coder.agent.v2", dependency=["ts.proto"], syntax="proto3"
    )
    log = f.message_type.add(name="BoundaryLog")
    http = log.nested_type.add(name="HttpRequest")
    for i, name in enumerate(("method", "url", "matched_rule"), start=1):
        http.field.add(name=name, number=i, type=9, label=1)
    log.oneof_decl.add(name="resource")
    log.field.add(name="allowed", number=1, type=8, label=1)
    log.field.add(name="time", number=2, type=11, label=1, type_name=".google.protobuf.Timestamp")
    log.field.add(
        name="http_request",
        number=3,
        type=11,
        label=1,
        type_name=".coder.agent.v2.BoundaryLog.HttpRequest",
        oneof_index=0,
    )
    log.field.add(name="sequence_number", number=4, type=5, label=1)
    req = f.message_type.add(name="ReportBoundaryLogsRequest")
    req.field.add(name="logs", number=1, type=11, label=3, type_name=".coder.agent.v2.BoundaryLog")
    req.field.add(name="session_id", number=2, type=9, label=1)
    req.field.add(name="confined_process_name", number=3, type=9, label=1)
    env = descriptor_pb2.FileDescriptorProto(
        name="codec.proto",
        package="coder.boundarylogproxy.codec.v1",
        dependency=["coder.proto"],
        syntax="proto3",
    )
    status = env.message_type.add(name="BoundaryStatus")
    status.field.add(name="dropped_channel_full", number=1, type=3, label=1)
    status.field.add(name="dropped_batch_full", number=2, type=3, label=1)
    msg = env.message_type.add(name="BoundaryMessage")
    msg.oneof_decl.add(name="msg")
    msg.field.add(
        name="logs",
        number=1,
        type=11,
        label=1,
        type_name=".coder.agent.v2.ReportBoundaryLogsRequest",
        oneof_index=0,
    )
    msg.field.add(
        name="status",
        number=2,
        type=11,
        label=1,
        type_name=".coder.boundarylogproxy.codec.v1.BoundaryStatus",
        oneof_index=0,
    )
    pool = descriptor_pool.DescriptorPool()
    for file in (ts, f, env):
        pool.Add(file)
    envelope = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("coder.boundarylogproxy.codec.v1.BoundaryMessage")
    )
    stat = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("coder.boundarylogproxy.codec.v1.BoundaryStatus")
    )
    return envelope, stat


def test_coders_agent_decodes_chained_frames_and_seals_as_before() -> None:
    envelope, _ = _coder_schema()
    records = [rec(i, allowed=i % 3 != 0) for i in range(30)]
    frames = list(encode_records(records, PROCESS, chain=start(SESSION)))
    decoder = FrameDecoder()
    coder_logs = []
    for enc in frames:
        for frame in decoder.feed(enc.frame):
            assert frame.tag == 2
            coder = envelope.FromString(frame.payload)
            assert coder.WhichOneof("msg") == "logs"
            assert coder.logs.session_id == SESSION  # type: ignore[attr-defined]
            coder_logs.extend(coder.logs.logs)  # type: ignore[attr-defined]
    ours = [log for m in messages(frames) for log in m.logs.logs]
    assert len(coder_logs) == len(ours) == 30
    for theirs, mine in zip(coder_logs, ours, strict=True):
        assert theirs.sequence_number == mine.sequence_number
        assert theirs.allowed == mine.allowed
        assert theirs.http_request.url == mine.http_request.url
        assert theirs.http_request.matched_rule == mine.http_request.matched_rule
        assert (theirs.time.seconds, theirs.time.nanos) == (mine.time.seconds, mine.time.nanos)
        assert not hasattr(theirs, "chain_digest")  # unknown to Coder: skipped
    # A seal with the chain still reads as a status with no drops.
    seal = SessionSeal(events_made=30, chain_head=b"\x01" * 32, chain_count=30)
    (frame,) = FrameDecoder().feed(encode_seal(SESSION, seal))
    coder = envelope.FromString(frame.payload)
    assert coder.WhichOneof("msg") == "status"
    assert coder.status.dropped_channel_full == 0  # type: ignore[attr-defined]
    assert coder.status.dropped_batch_full == 0  # type: ignore[attr-defined]


def test_uuid_strings_of_either_case_chain_alike() -> None:
    assert start(SESSION).head == chain.genesis(uuid.UUID(SESSION.upper()))


@given(records=records_strategy, limit=st.sampled_from([MAX_PAYLOAD_SIZE, 4096, 700]))
@settings(max_examples=80, deadline=None)
def test_chained_frames_fit_any_limit(records: list[Record], limit: int) -> None:
    frames = list(encode_records(records, PROCESS, limit, chain=start(SESSION)))
    for enc in frames:
        assert len(enc.frame) - 4 <= limit
    for msg in messages(frames):
        assert all(len(log.chain_digest) == chain.DIGEST_SIZE for log in msg.logs.logs)
