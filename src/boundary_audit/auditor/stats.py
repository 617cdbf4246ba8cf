"""SocketAuditor's counters, and the snapshot of them that ``stats`` returns.

Each counter has one writer (a caller of audit(), or the sender thread), so
plain ints suffice: no lock, nothing for audit() to pay beyond an increment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from ..wire import DropReason

#: The reasons this sender drops for (the keys of ``AuditorStats.dropped``).
SENDER_DROP_REASONS = (DropReason.CHANNEL_FULL, DropReason.CLOSED, DropReason.INVALID_EVENT)


@dataclass(frozen=True, slots=True)
class AuditorStats:
    """A consistent-enough snapshot of the sender's counters."""

    queued: int
    sent: int
    dropped: Mapping[str, int]
    truncated: int
    frames_sent: int
    bytes_sent: int
    connects: int
    connect_failures: int
    write_errors: int
    status_reports_sent: int
    replayed_events: int
    pending: int
    undelivered: int
    discarded_disabled: int
    session_rotations: int
    connected: bool
    disabled: bool

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(slots=True)
class Counters:
    """Counters written by one thread each (documented per field)."""

    # Written by callers of audit(), under the queue lock; except
    # dropped[INVALID_EVENT], written by the sender thread (which finds them).
    queued: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SENDER_DROP_REASONS, 0))
    discarded_disabled: int = 0
    # Written by the sender thread only (undelivered also by close(), once
    # the thread has stopped or given up).
    sent: int = 0  # events in frames written (replays not counted again)
    truncated: int = 0  # events whose URL was cut to fit a frame
    frames_sent: int = 0
    bytes_sent: int = 0  # of those frames
    connects: int = 0  # successful connections
    connect_failures: int = 0
    write_errors: int = 0  # failed writes; the connection was dropped, the batch kept
    status_reports_sent: int = 0  # BoundaryStatus messages written
    replayed_events: int = 0  # events re-sent from the replay window after a reconnect
    pending: int = 0  # events in the sender's batch (stats adds the queue's length)
    undelivered: int = 0  # events given up on at close


#: Counters that AuditorStats reports as they are (the others are derived).
PLAIN_COUNTERS = tuple(f.name for f in fields(Counters) if f.name not in {"dropped", "pending"})


def snapshot(
    counters: Counters,
    *,
    queued_now: int,
    session_rotations: int,
    connected: bool,
    disabled: bool,
) -> AuditorStats:
    """AuditorStats from ``counters`` plus what lives elsewhere."""
    return AuditorStats(
        **{name: getattr(counters, name) for name in PLAIN_COUNTERS},
        dropped=dict(counters.dropped),
        pending=queued_now + counters.pending,
        session_rotations=session_rotations,
        connected=connected,
        disabled=disabled,
    )
