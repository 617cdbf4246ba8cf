"""Pure packing of queued audit records into tag-2 frames that fit the cap.

Runs on the sender thread, never on the caller's. Kept free of I/O and
threads so that the size arithmetic can be tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from google.protobuf.message import DecodeError

from ..wire import (
    MAX_EVENTS_PER_FRAME,
    MAX_PAYLOAD_SIZE,
    BoundaryLog,
    BoundaryMessage,
    SessionSeal,
    Tag,
    encode_frame,
    encode_message,
)
from ..wire.chain import DIGEST_SIZE
from .chaining import Chainer, ChainMark, ChainSpan, OutOfOrderError, mark_for

#: Appended to a URL cut short to make its event fit one frame. It says
#: how many bytes were removed, so the stored URL is visibly incomplete.
TRUNCATION_MARKER = "...[truncated {} bytes]"
#: Wire type of length-delimited fields (strings and sub-messages).
_LENGTH_DELIMITED = 2
#: The fields this size arithmetic adds up (a log inside the request, the
#: request inside the envelope) have numbers below 16, so each key is one
#: byte. (A log's own fields, chain_digest at 16 included, are measured by
#: protobuf's ByteSize().)
_KEY_SIZE = 1
#: Bytes chain_digest adds to a log: a two-byte key (field 16), a one-byte
#: length and the digest. Added to the size while it is decided, before the
#: digest itself is known (it is set once the log's values are final).
_DIGEST_FIELD_SIZE = 2 + 1 + DIGEST_SIZE
_NANOS_PER_SECOND = 1_000_000_000


class Record(NamedTuple):
    """One accepted event as the caller's thread left it: plain Python values."""

    session_id: str
    sequence_number: int
    time_ns: int
    method: str
    url: str
    allowed: bool
    rule: str | None


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    frame: bytes
    events: int
    truncated: int
    first_sequence: int
    last_sequence: int
    #: Records consumed but left out because they cannot be encoded.
    skipped: int = 0
    #: Highest sequence number in the frame (events may bring their own, in any order).
    max_sequence: int = -1
    #: The chain before and after the frame's events (None: not chained).
    chain: ChainSpan | None = None

    @property
    def consumed(self) -> int:
        return self.events + self.skipped


def varint_size(value: int) -> int:
    """Bytes a non-negative protobuf varint takes."""
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def field_size(payload_size: int) -> int:
    """Bytes of one length-delimited field whose content is ``payload_size`` long."""
    return _KEY_SIZE + varint_size(payload_size) + payload_size


def _fill(log: BoundaryLog, rec: Record, url: str, method: str, rule: str | None) -> None:
    if rec.sequence_number < 0:
        # int32 would carry it, but sequence numbers count up from 0 and the
        # collector rejects a batch holding a negative one.
        raise ValueError(f"negative sequence number {rec.sequence_number}")
    log.allowed = rec.allowed
    log.sequence_number = rec.sequence_number
    seconds, nanos = divmod(rec.time_ns, _NANOS_PER_SECOND)
    log.time.seconds = seconds
    log.time.nanos = nanos
    req = log.http_request
    req.method = method
    req.url = url
    # Coder's schema: matched_rule is set only when the request was allowed.
    if rec.allowed and rule:
        req.matched_rule = rule


def _cut(text: str, excess: int) -> tuple[str, int]:
    """``text`` shortened by at least ``excess`` UTF-8 bytes plus a marker."""
    raw = text.encode("utf-8")
    # Reserve room for the marker with the widest count it could print.
    marker_room = len(TRUNCATION_MARKER.format(len(raw)).encode())
    keep = max(0, len(raw) - excess - marker_room)
    kept = raw[:keep].decode("utf-8", errors="ignore")
    removed = len(raw) - len(kept.encode("utf-8"))
    return kept + TRUNCATION_MARKER.format(removed), removed


class _Envelope:
    """A BoundaryMessage under construction, with its size tracked."""

    def __init__(self, session_id: str, process_name: str, chain: ChainMark | None) -> None:
        #: The chain before this frame, and the one its events extend.
        self.chain_before = chain
        self.chainer = None if chain is None else Chainer(chain, process_name)
        self.session_id = session_id
        self.process_name = process_name
        #: What chain_digest will add to each log (0: not chained).
        self.digest_size = 0 if chain is None else _DIGEST_FIELD_SIZE
        self.message = BoundaryMessage()
        req = self.message.logs
        req.session_id = session_id
        req.confined_process_name = process_name
        self.logs = req.logs
        self.fixed = req.ByteSize()
        self.logs_size = 0
        self.truncated = 0
        self.skipped = 0
        self.first = -1
        self.last = -1
        self.max = -1

    @property
    def chain(self) -> ChainMark | None:
        """The chain as it stands after the frame's last event so far."""
        return None if self.chainer is None else self.chainer.mark()

    def added(self, log: BoundaryLog, rec: Record, size: int, *, cut: bool) -> None:
        """``log`` (``size`` bytes in the request) is in: chain it and count it."""
        if self.chainer is not None:
            # Chained as sent: after a cut, from the values the log holds.
            if cut:
                req = log.http_request
                method, url, rule = req.method, req.url, req.matched_rule
            else:
                method, url = rec.method, rec.url
                rule = rec.rule if rec.allowed and rec.rule else ""
            log.chain_digest = self.chainer.add(
                rec.sequence_number, rec.time_ns, bool(rec.allowed), method, url, rule
            )
        self.logs_size += size
        if self.first < 0:
            self.first = rec.sequence_number
        self.last = rec.sequence_number
        self.max = max(self.max, rec.sequence_number)

    def payload_size(self, extra: int = 0) -> int:
        return field_size(self.fixed + self.logs_size + extra)

    def finished(self) -> EncodedFrame | None:
        """The frame, one of only skipped records (no bytes), or None when empty."""
        if self.logs:
            return self.finish()
        if self.skipped:
            return EncodedFrame(b"", 0, 0, -1, -1, skipped=self.skipped)
        return None

    def finish(self) -> EncodedFrame:
        payload = self.message.SerializeToString()
        return EncodedFrame(
            frame=encode_frame(Tag.V2_ENVELOPE, payload),
            events=len(self.logs),
            truncated=self.truncated,
            first_sequence=self.first,
            last_sequence=self.last,
            skipped=self.skipped,
            max_sequence=self.max,
            chain=(
                ChainSpan(self.chain_before, self.chainer.mark())
                if self.chain_before is not None and self.chainer is not None and self.logs
                else None
            ),
        )


InvalidRecordHandler = Callable[[Record, Exception], None]


def encode_records(
    records: Iterable[Record],
    process_name: str,
    limit: int = MAX_PAYLOAD_SIZE,
    on_invalid: InvalidRecordHandler | None = None,
    max_events: int = MAX_EVENTS_PER_FRAME,
    *,
    chain: ChainMark | None = None,
) -> Iterator[EncodedFrame]:
    """Pack ``records`` in order into as few frames as fit ``limit`` bytes each.

    A new frame starts when the session changes, and after ``max_events``
    events whatever their size (coderd refuses a request of more than 1,000
    logs, and Coder's agent forwards one request per frame). An event too large for a
    frame on its own has its URL (then rule, then method) cut with a marker;
    it is never dropped and never sent oversize. A record the schema cannot
    hold (a sequence number outside int32, a non-text field) is left out,
    counted in ``skipped`` and passed to ``on_invalid``; it never stops the
    others. A frame of only skipped records has empty ``frame`` bytes.

    With ``chain`` (the committed mark, :mod:`.chaining`), every event gets
    its ``chain_digest``, continuing from that mark (from the genesis for a
    session the mark is not of), and each frame says where its chain starts
    and ends; an event whose number is not above the last chained one is
    skipped like an invalid one (:class:`~.chaining.OutOfOrderError`).
    """
    env: _Envelope | None = None
    running = chain
    for rec in records:
        if env is not None and (rec.session_id != env.session_id or len(env.logs) >= max_events):
            done = env.finished()
            if done is not None:
                yield done
            running, env = env.chain, None
        if env is None:
            start = None if chain is None else mark_for(running, rec.session_id)
            env = _Envelope(rec.session_id, process_name, start)
        log = env.logs.add()
        try:
            _fill(log, rec, rec.url, rec.method, rec.rule)
            if env.chainer is not None:
                _check_chainable(rec, env.chainer.last)
        except (TypeError, ValueError) as exc:
            del env.logs[-1]
            env.skipped += 1
            if on_invalid is not None:
                on_invalid(rec, exc)
            continue
        size = field_size(log.ByteSize() + env.digest_size)
        if env.payload_size(size) > limit and len(env.logs) > 1:
            del env.logs[-1]
            yield env.finish()
            env = _Envelope(rec.session_id, process_name, env.chain)
            log = env.logs.add()
            _fill(log, rec, rec.url, rec.method, rec.rule)
            size = field_size(log.ByteSize() + env.digest_size)
        cut = env.payload_size(size) > limit
        if cut:
            size = _shrink(env, log, rec, limit)
            env.truncated += 1
        env.added(log, rec, size, cut=cut)
    if env is not None:
        done = env.finished()
        if done is not None:
            yield done


#: The chain encodes an event's time as a signed 64-bit integer (ns).
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _check_chainable(rec: Record, last: int) -> None:
    """ValueError unless ``rec`` can be chained after number ``last``."""
    if rec.sequence_number <= last:
        raise OutOfOrderError(rec.sequence_number, last)
    if not _I64_MIN <= rec.time_ns <= _I64_MAX:
        raise ValueError(f"time {rec.time_ns} ns does not fit the chain's 64 bits")


def _shrink(env: _Envelope, log: BoundaryLog, rec: Record, limit: int) -> int:
    """Cut the fields of the only event in ``env`` until it fits; return its size."""
    url, method, rule = rec.url, rec.method, rec.rule
    for field in ("url", "rule", "method"):
        size = field_size(log.ByteSize() + env.digest_size)
        excess = env.payload_size(size) - limit
        if excess <= 0:
            return size
        if field == "url":
            url, _ = _cut(url, excess)
        elif field == "rule" and rule:
            rule, _ = _cut(rule, excess)
        elif field == "method":
            method, _ = _cut(method, excess)
        log.Clear()
        _fill(log, rec, url, method, rule)
    size = field_size(log.ByteSize() + env.digest_size)
    if env.payload_size(size) > limit:  # pragma: no cover - fixed fields alone never exceed 32 KiB
        raise ValueError(f"event {rec.sequence_number} cannot be made to fit {limit} bytes")
    return size


def encode_status(dropped_channel_full: int, session_id: str = "") -> bytes:
    """A BoundaryStatus frame reporting ``dropped_channel_full`` new drops (a delta)."""
    msg = BoundaryMessage()
    msg.status.dropped_channel_full = dropped_channel_full
    # Events are never dropped for a full batch here: the batch stops taking
    # from the queue instead, so those drops count as channel_full.
    msg.status.dropped_batch_full = 0
    if session_id:
        msg.status.session_id = session_id
    return encode_message(msg)


def decode_ack(payload: bytes) -> int:
    """``Ack.frames`` of a frame the agent wrote; ValueError for anything else.

    The agent writes nothing but acks, and only once asked (``want_acks``).
    """
    try:
        msg = BoundaryMessage.FromString(payload)
    except DecodeError as exc:
        raise ValueError(f"undecodable frame from the agent: {exc}") from exc
    if msg.WhichOneof("msg") != "status" or not msg.status.HasField("ack"):
        raise ValueError(f"agent wrote a frame that is not an ack: {msg.WhichOneof('msg')}")
    return int(msg.status.ack.frames)


def encode_open(session_id: str, sender: str, first_sequence_number: int) -> bytes:
    """The first frame of every connection: names the session and asks for acks.

    Fields 1 and 2 stay 0: drop deltas always travel in their own status
    frame, so Coder's agent (which reads only those) counts each once.
    """
    msg = BoundaryMessage()
    status = msg.status
    status.session_id = session_id
    status.open.want_acks = True
    status.open.sender = sender
    status.open.first_sequence_number = first_sequence_number
    return encode_message(msg)


def encode_seal(session_id: str, seal: SessionSeal) -> bytes:
    """The last frame of a session: ``status{session_id, seal}``."""
    msg = BoundaryMessage()
    msg.status.session_id = session_id
    msg.status.seal.CopyFrom(seal)
    return encode_message(msg)
