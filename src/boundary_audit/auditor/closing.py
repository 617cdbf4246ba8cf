"""The end of a session, decided without I/O: the seal and what goes to the spill file.

A seal says what became of every sequence number the session consumed:
``events_made`` (last + 1), ``events_sent`` (written to an agent), sender
drops by reason (totals, so a drop after the last successful flush is still
accounted), ``undelivered`` (not known delivered, not spilled: lost unless a
frozen agent still reads them) and ``spilled`` (in the spill file, delivered
later). A seal is written on the socket once everything is drained; when the
close timeout passes before the agent has it (and everything before it), a
second seal, with the spill's numbers, ends the spill file. Both agree on
``events_made``; the later ``sealed_at`` supersedes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..wire import SessionSeal
from .sequence import MAX_SEQUENCE_NUMBER

_NANOS_PER_SECOND = 1_000_000_000
#: Most sequence numbers a session can consume (0..int32 max).
MAX_EVENTS_MADE = MAX_SEQUENCE_NUMBER + 1


def events_made(next_number: int, *highest_seen: int) -> int:
    """Sequence numbers the session consumed: one past the highest in use, within int32.

    ``next_number`` is what the counter would hand out next; ``highest_seen``
    are the largest numbers events brought of their own (-1 for none),
    queued or dropped. Numbers outside the wire's range were never valid
    (counted as invalid events) and do not stretch the session.
    """
    made = max([next_number, *(h + 1 for h in highest_seen)])
    return max(0, min(made, MAX_EVENTS_MADE))


def compose_seal(
    *,
    events_made: int,
    events_sent: int,
    dropped: Mapping[str, int],
    undelivered: int,
    spilled: int,
    sealed_at_ns: int,
    chain_head: bytes = b"",
    chain_count: int = 0,
) -> SessionSeal:
    """The seal message; reasons with no drops are left out of the map.

    ``chain_head``/``chain_count``: the session's hash chain the seal commits
    to (:mod:`.chaining`); an empty head says the sender does not chain.
    """
    seal = SessionSeal(
        events_made=events_made,
        events_sent=events_sent,
        undelivered=undelivered,
        spilled=spilled,
        chain_head=chain_head,
        chain_count=chain_count,
    )
    for reason, count in dropped.items():
        if count:
            seal.dropped[str(reason)] = count
    seconds, nanos = divmod(sealed_at_ns, _NANOS_PER_SECOND)
    seal.sealed_at.seconds = seconds
    seal.sealed_at.nanos = nanos
    return seal


@dataclass(frozen=True, slots=True)
class SpillPlan:
    """Which undelivered frames fit the spill bound, and what the rest cost."""

    frames: tuple[bytes, ...]
    #: Events in ``frames``.
    spilled_events: int
    #: Events left out because the bound was reached: drops (``spill_full``).
    spill_full_events: int

    @property
    def size(self) -> int:
        return sum(len(f) for f in self.frames)


def plan_spill(candidates: Sequence[tuple[bytes, int]], room: int) -> SpillPlan:
    """Keep the oldest ``(frame, events)`` candidates that fit in ``room`` bytes.

    In order, stopping at the first that does not fit: what is kept is a
    prefix, so the spill never has a hole an older event fell into while a
    newer one was kept. The seal is not a candidate: it is always written
    (a few hundred bytes), so what was dropped is always accounted.
    """
    kept: list[bytes] = []
    used = spilled = 0
    full = False
    lost = 0
    for frame, events in candidates:
        if not full and used + len(frame) <= room:
            kept.append(frame)
            used += len(frame)
            spilled += events
        else:
            full = True
            lost += events
    return SpillPlan(tuple(kept), spilled, lost)
