"""SocketAuditor's counters, and the snapshot of them that ``stats`` returns.

Each counter has one writer (a caller of audit(), or the sender thread), so
plain ints suffice: no lock, nothing for audit() to pay beyond an increment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from ..wire import DropReason

#: The reasons this sender drops for (the keys of ``AuditorStats.dropped``).
SENDER_DROP_REASONS = (
    DropReason.CHANNEL_FULL,
    DropReason.CLOSED,
    DropReason.INVALID_EVENT,
    DropReason.SPILL_FULL,
)


@dataclass(frozen=True, slots=True)
class AuditorStats:
    """A consistent-enough snapshot of the sender's counters."""

    queued: int
    sent: int
    delivered: int
    dropped: Mapping[str, int]
    truncated: int
    frames_sent: int
    bytes_sent: int
    connects: int
    connect_failures: int
    refused_listeners: int
    write_errors: int
    status_reports_sent: int
    acks_received: int
    replayed_events: int
    pending: int
    in_flight: int
    undelivered: int
    spilled: int
    spill_files_delivered: int
    spill_events_delivered: int
    spill_errors: int
    sealed: bool
    agent_acknowledges: bool | None
    agent_socket: str
    discarded_disabled: int
    session_rotations: int
    connected: bool
    disabled: bool
    #: Waits for a handover (:meth:`SocketAuditor.handed_over`) that ran out,
    #: and waits released at once while the handover was stalled.
    handover_timeouts: int = 0
    handover_skipped: int = 0

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
    #: Highest sequence number among dropped events (-1: none): a seal's
    #: events_made must cover numbers whose events never reached the sender.
    highest_dropped: int = -1
    # Written by the sender thread only (undelivered also by close(), once
    # the thread has stopped or given up).
    sent: int = 0  # events in frames written (replays not counted again)
    delivered: int = 0  # of those, acknowledged by the agent, or read per SIOCOUTQ
    truncated: int = 0  # events whose URL was cut to fit a frame
    frames_sent: int = 0
    bytes_sent: int = 0  # of those frames
    connects: int = 0  # successful connections
    connect_failures: int = 0  # nothing (or a stale socket) at any candidate path
    refused_listeners: int = 0  # a socket or listener not trusted: nothing sent to it
    write_errors: int = 0  # failed writes; the connection was dropped, the frames kept
    status_reports_sent: int = 0  # BoundaryStatus drop reports written
    acks_received: int = 0  # Ack frames read from the agent
    replayed_events: int = 0  # events re-sent after a reconnect (not known delivered)
    pending: int = 0  # events in the sender's batch (stats adds the queue's length)
    in_flight: int = 0  # events written and not yet known delivered
    undelivered: int = 0  # at close: not known delivered and not spilled
    spilled: int = 0  # at close: written to the spill file
    spill_files_delivered: int = 0  # other sessions' spill files delivered and removed
    spill_events_delivered: int = 0  # events in them
    spill_errors: int = 0  # spill files that could not be written, read or decoded (logged)
    sealed: bool = False  # the seal reached the agent (acknowledged or read)
    agent_acknowledges: bool | None = None  # None until known
    agent_socket: str = ""  # path of the current (or last) connection
    #: What became of this connection's open frame, for connect_now():
    #: "" (not yet known), "acknowledged", "read" (by an agent that never
    #: acknowledges), or "unreachable" (the last connect found no trusted agent).
    open_result: str = ""


#: Counters that AuditorStats reports as they are (the others are derived).
_NOT_PLAIN = frozenset({"dropped", "pending", "highest_dropped", "open_result"})
PLAIN_COUNTERS = tuple(f.name for f in fields(Counters) if f.name not in _NOT_PLAIN)


def snapshot(
    counters: Counters,
    *,
    queued_now: int,
    session_rotations: int,
    connected: bool,
    disabled: bool,
    handover_timeouts: int = 0,
    handover_skipped: int = 0,
) -> AuditorStats:
    """AuditorStats from ``counters`` plus what lives elsewhere."""
    return AuditorStats(
        **{name: getattr(counters, name) for name in PLAIN_COUNTERS},
        dropped=dict(counters.dropped),
        pending=queued_now + counters.pending,
        session_rotations=session_rotations,
        connected=connected,
        disabled=disabled,
        handover_timeouts=handover_timeouts,
        handover_skipped=handover_skipped,
    )
