"""What a sender's frame asks of the agent, decided without any I/O (like h11).

The receiver reads bytes, cuts frames with :class:`~boundary_audit.wire.FrameDecoder`
and applies what :func:`interpret_frame` decides: a batch to spool, drop counts
to record, or a frame to count as bad. :class:`StallTimer` decides how long a
half-sent frame may stay unfinished. Both are pure, so they are tested
without sockets.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from dataclasses import dataclass

from ..wire import (
    Ack,
    BoundaryMessage,
    BoundaryStatus,
    DropReason,
    ReportBoundaryLogsRequest,
    SessionOpen,
    SessionRecord,
    SessionSeal,
    Tag,
    UndecodablePayloadError,
    as_envelope,
    decode_payload,
    encode_message,
)
from .drops import MAX_REPORT_COUNT
from .spool import KIND_SESSION, NewBatch

#: Largest drop count one status frame may report per reason (and largest
#: counter of a seal): the drop ledger's cap, 2^40. Far above what one
#: process can drop (years at a million a second), far below int64.
MAX_STATUS_DROP_COUNT = MAX_REPORT_COUNT
#: Namespace of the deterministic record ids of session records: the same
#: frame re-sent (a replay, a spill file delivered twice) gets the same id.
SESSION_RECORD_NAMESPACE = uuid.UUID("6f1c5a52-0d0b-4f6e-9a57-3c2b8e0e7a11")


@dataclass(frozen=True, slots=True)
class LogsFrame:
    """A batch of events. ``batch`` is None when it holds none (nothing to keep)."""

    session_id: str
    batch: NewBatch | None
    process_name: str = ""


@dataclass(frozen=True, slots=True)
class StatusFrame:
    """A sender's status: drop counts (clamped to 0..cap), and our extensions if any.

    ``session_id`` is "" for a Coder sender's plain status; ``clamped`` says
    a count was out of range (negative or past :data:`MAX_STATUS_DROP_COUNT`).
    ``payload`` is the frame's payload (the record id of an open or seal is
    derived from it).
    """

    dropped: dict[DropReason, int]
    session_id: str = ""
    open: SessionOpen | None = None
    seal: SessionSeal | None = None
    clamped: bool = False
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that is skipped and counted; ``why`` goes into the log."""

    why: str
    session_id: str = ""


FrameMeaning = LogsFrame | StatusFrame | BadFrame


def status_drops(status: BoundaryStatus) -> dict[DropReason, int]:
    """The drop counts a sender reports, under the agent's names for them."""
    return {
        DropReason.BOUNDARY_CHANNEL_FULL: status.dropped_channel_full,
        DropReason.BOUNDARY_BATCH_FULL: status.dropped_batch_full,
    }


def clamp_count(n: int) -> int:
    """A reported drop count inside 0..:data:`MAX_STATUS_DROP_COUNT`."""
    return min(max(n, 0), MAX_STATUS_DROP_COUNT)


#: Session ids whose verdict is remembered: a busy agent sees a handful of
#: sessions, each in thousands of frames, so parsing each id once is enough.
SESSION_ID_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=SESSION_ID_CACHE_SIZE)
def valid_session_id(value: str) -> bool:
    """True for a UUID (what the collector stores sessions by)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def session_record(
    status: StatusFrame, observed_ns: int, process_name: str = ""
) -> NewBatch | None:
    """The spool item relaying an open or seal to the collector (None for neither).

    The record id is derived from the frame's payload, so a re-sent frame
    (replay, a spill file delivered twice) is stored once by the collector.
    """
    if status.open is None and status.seal is None:
        return None
    digest = hashlib.sha256(status.payload).hexdigest()
    record = SessionRecord(
        record_id=str(uuid.uuid5(SESSION_RECORD_NAMESPACE, digest)),
        session_id=status.session_id,
        confined_process_name=process_name,
    )
    if status.open is not None:
        record.open.CopyFrom(status.open)
    if status.seal is not None:
        record.seal.CopyFrom(status.seal)
    record.observed_at.FromNanoseconds(observed_ns)
    return NewBatch(status.session_id, 0, record.SerializeToString(), KIND_SESSION)


def ack_frame(frames: int) -> bytes:
    """``status{ack{frames}}``: frames 1..N of this connection are ours."""
    return encode_message(BoundaryMessage(status=BoundaryStatus(ack=Ack(frames=frames))))


def interpret_frame(tag: int, payload: bytes) -> FrameMeaning:
    """Decode one whole frame's payload and say what the agent must do with it.

    A tag-1 payload already is the ingest-shaped request and is kept as it
    came; a tag-2 one is re-encoded without its envelope, so the spool holds
    one shape.
    """
    try:
        envelope = as_envelope(decode_payload(tag, payload))
    except UndecodablePayloadError as exc:
        return BadFrame(str(exc))
    kind = envelope.WhichOneof("msg")
    if kind == "logs":
        return _logs(tag, envelope.logs, payload)
    if kind == "status":
        return _status(envelope.status, payload)
    return BadFrame("envelope carries neither logs nor status")


def _logs(tag: int, logs: ReportBoundaryLogsRequest, payload: bytes) -> FrameMeaning:
    events = len(logs.logs)
    name = logs.confined_process_name
    if not events:
        return LogsFrame(logs.session_id, None, name)  # a sender may flush an empty batch
    # What the collector would refuse for the whole request is refused
    # here, for this frame alone: it never reaches (or holds up) a request.
    if not valid_session_id(logs.session_id):
        return BadFrame(f"session id {logs.session_id[:64]!r} is not a UUID", logs.session_id)
    for log in logs.logs:
        if log.sequence_number < 0:
            return BadFrame(f"negative sequence number {log.sequence_number}", logs.session_id)
    body = payload if tag == Tag.V1_LOGS else logs.SerializeToString()
    return LogsFrame(logs.session_id, NewBatch(logs.session_id, events, body), name)


def _status(status: BoundaryStatus, payload: bytes) -> FrameMeaning:
    reported = status_drops(status)
    dropped = {reason: clamp_count(n) for reason, n in reported.items()}
    clamped = dropped != reported
    session_id = status.session_id
    has_open, has_seal = status.HasField("open"), status.HasField("seal")
    if status.HasField("ack"):
        return BadFrame("a sender wrote an ack (only the agent writes those)")
    if (session_id or has_open or has_seal) and not valid_session_id(session_id):
        return BadFrame(f"status for session id {session_id[:64]!r}, not a UUID", session_id)
    seal = None
    if has_seal:
        seal = SessionSeal()
        seal.CopyFrom(status.seal)
        for name in ("events_made", "events_sent", "undelivered", "spilled", "chain_count"):
            value = getattr(seal, name)
            if value != clamp_count(value):
                setattr(seal, name, clamp_count(value))
                clamped = True
        for reason, n in list(seal.dropped.items()):
            if n != clamp_count(n):
                seal.dropped[reason] = clamp_count(n)
                clamped = True
    opened = None
    if has_open:
        opened = SessionOpen()
        opened.CopyFrom(status.open)
        if opened.first_sequence_number < 0:
            opened.first_sequence_number = 0
            clamped = True
    return StatusFrame(dropped, session_id, opened, seal, clamped, payload)


class StallTimer:
    """The deadline by which a half-sent frame must be complete.

    Only a frame left half-sent is timed: a sender with nothing to report may
    stay connected and silent for as long as it likes. The clock starts when
    a frame is left incomplete and is not reset by further bytes, only by a
    completed frame, so trickling a byte at a time cannot hold a half-sent
    frame (and its buffer) open forever.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._deadline: float | None = None

    def deadline(self, mid_frame: bool, now: float) -> float | None:
        """When the next read must end (None: no limit), given the decoder's state."""
        if not mid_frame:
            self._deadline = None
        elif self._deadline is None:
            self._deadline = now + self.timeout
        return self._deadline

    def frame_completed(self) -> None:
        """Progress: the next partial frame gets a clock of its own."""
        self._deadline = None


__all__ = [
    "MAX_STATUS_DROP_COUNT",
    "BadFrame",
    "FrameMeaning",
    "LogsFrame",
    "StallTimer",
    "StatusFrame",
    "ack_frame",
    "clamp_count",
    "interpret_frame",
    "session_record",
    "status_drops",
    "valid_session_id",
]
