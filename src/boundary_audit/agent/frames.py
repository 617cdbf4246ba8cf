"""What a sender's frame asks of the agent, decided without any I/O (like h11).

The receiver reads bytes, cuts frames with :class:`~boundary_audit.wire.FrameDecoder`
and applies what :func:`interpret_frame` decides: a batch to spool, drop counts
to record, or a frame to count as bad. :class:`StallTimer` decides how long a
half-sent frame may stay unfinished. Both are pure, so they are tested
without sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..wire import (
    BoundaryStatus,
    DropReason,
    Tag,
    UndecodablePayloadError,
    as_envelope,
    decode_payload,
)
from .spool import NewBatch


@dataclass(frozen=True, slots=True)
class LogsFrame:
    """A batch of events. ``batch`` is None when it holds none (nothing to keep)."""

    session_id: str
    batch: NewBatch | None


@dataclass(frozen=True, slots=True)
class StatusFrame:
    """Events the sender dropped before they reached the agent, by reason (all >= 0)."""

    dropped: dict[DropReason, int]


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that is skipped and counted; ``why`` goes into the log."""

    why: str


FrameMeaning = LogsFrame | StatusFrame | BadFrame


def status_drops(status: BoundaryStatus) -> dict[DropReason, int]:
    """The drop counts a sender reports, under the agent's names for them."""
    return {
        DropReason.BOUNDARY_CHANNEL_FULL: status.dropped_channel_full,
        DropReason.BOUNDARY_BATCH_FULL: status.dropped_batch_full,
    }


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
        logs = envelope.logs
        events = len(logs.logs)
        if not events:
            return LogsFrame(logs.session_id, None)  # a sender may flush an empty batch
        body = payload if tag == Tag.V1_LOGS else logs.SerializeToString()
        return LogsFrame(logs.session_id, NewBatch(logs.session_id, events, body))
    if kind == "status":
        dropped = status_drops(envelope.status)
        if any(n < 0 for n in dropped.values()):
            shown = {str(reason): n for reason, n in dropped.items()}
            return BadFrame(f"status with negative drop counts {shown}")
        return StatusFrame(dropped)
    return BadFrame("envelope carries neither logs nor status")


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
    "BadFrame",
    "FrameMeaning",
    "LogsFrame",
    "StallTimer",
    "StatusFrame",
    "interpret_frame",
    "status_drops",
]
