"""Was anything of a session lost? A pure verdict from what the collector holds.

Inputs are the session's counters (events stored, pruned, highest sequence
number), the drops reported for it (drop reports, by source and reason) and,
when the sender sealed it, the seal. The verdict is one of:

``complete``
    Sealed, and every number ``0..events_made-1`` is stored (or pruned by
    retention after it was stored) or covered by a reported drop. Drops are
    still losses and are shown beside the state (``lost``).
``incomplete``
    Sealed, and some numbers are neither stored nor covered by a drop:
    ``unaccounted`` says how many, ``why`` what the seal knows of them
    (``undelivered``, ``spilled`` and not yet arrived) and ``gaps`` for the
    rest; ``beyond_seal`` counts stored numbers the seal says were never made.
``open``
    The sender opened the session and has not sealed it (yet): losses so far
    show as gaps; ``idle_seconds`` since the last thing heard of it.
``unsealed``
    Neither an open nor a seal was ever received (Coder's own boundary sends
    neither): the collector cannot know how many events were made, so this is
    never shown as complete.

Sender-side drops come twice for a sealed session: as deltas in drop reports
(source ``boundary``) and as totals in the seal. The seal's totals win then;
drops of the agent and of the collector itself are added in either case.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from boundary_audit.wire import DropReason, DropSource


class State(enum.StrEnum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    OPEN = "open"
    UNSEALED = "unsealed"


#: Why numbers are unaccounted for, as far as the collector can tell.
UNDELIVERED = str(DropReason.UNDELIVERED)
SPILLED = "spilled"
GAPS = "gaps"
BEYOND_SEAL = "beyond_seal"


@dataclass(frozen=True, slots=True)
class Seal:
    """The session's seal as stored (the latest ``sealed_at`` of those received)."""

    events_made: int
    events_sent: int
    dropped: Mapping[str, int]
    undelivered: int
    spilled: int
    sealed_at_ns: int


@dataclass(frozen=True, slots=True)
class Facts:
    """What the collector holds about one session."""

    #: Distinct events stored below ``events_made`` (all stored ones when unsealed).
    stored: int
    #: Stored events later deleted by retention: they did arrive.
    pruned: int
    #: Highest sequence number stored, -1 for none.
    max_sequence: int
    #: Drop reports' totals: source -> reason -> events.
    reported: Mapping[str, Mapping[str, int]]
    opened: bool
    seal: Seal | None
    #: Stored events whose number is >= the seal's ``events_made``.
    beyond_seal: int = 0
    #: Nanoseconds since the collector last heard of the session (for ``open``).
    idle_ns: int = 0


@dataclass(frozen=True, slots=True)
class Completeness:
    state: State
    #: Numbers the session consumed (the seal's), else highest stored + 1.
    events_made: int
    stored: int
    #: Events known lost, by reason (reported drops).
    lost: Mapping[str, int]
    #: Numbers neither stored nor covered by a reported drop.
    unaccounted: int
    #: What is known of the unaccounted ones: reason -> events.
    why: Mapping[str, int] = field(default_factory=dict)
    idle_seconds: float | None = None

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())

    def summary(self) -> str:
        """One line for people; never says "nothing lost" while anything is."""
        lost = self.lost_total
        lost_text = f", {lost} lost ({_reasons(self.lost)})" if lost else ", none lost"
        if self.state is State.COMPLETE:
            return f"complete: {self.stored} of {self.events_made} stored{lost_text}"
        if self.state is State.INCOMPLETE:
            return (
                f"incomplete: {self.unaccounted} of {self.events_made} unaccounted for"
                f" ({_reasons(self.why)}), {self.stored} stored"
                + (f", {lost} lost ({_reasons(self.lost)})" if lost else "")
            )
        idle = (
            f", last heard {self.idle_seconds:.0f} s ago" if self.idle_seconds is not None else ""
        )
        head = (
            "open (not sealed yet)"
            if self.state is State.OPEN
            else "unsealed (the sender sends no seal)"
        )
        missing = f", {self.unaccounted} missing so far" if self.unaccounted else ""
        return f"{head}: {self.stored} stored{missing}{lost_text if lost else ''}{idle}"

    def to_json(self) -> dict[str, object]:
        return {
            "state": str(self.state),
            "events_made": self.events_made,
            "stored": self.stored,
            "lost": self.lost_total,
            "lost_by_reason": dict(self.lost),
            "unaccounted": self.unaccounted,
            "unaccounted_by_reason": dict(self.why),
            "idle_seconds": self.idle_seconds,
            "summary": self.summary(),
        }


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()) if n)


def _add(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for reason, n in counts.items():
        if n > 0:
            into[reason] = into.get(reason, 0) + n


NS_PER_SECOND = 1_000_000_000


def assess(facts: Facts) -> Completeness:
    """The verdict on one session (see the module docstring)."""
    lost: dict[str, int] = {}
    for source, counts in facts.reported.items():
        if source == DropSource.BOUNDARY and facts.seal is not None:
            continue  # the seal's totals replace the sender's deltas
        _add(lost, counts)
    arrived = facts.stored + facts.pruned
    if facts.seal is None:
        made = facts.max_sequence + 1
        unaccounted = max(0, made - arrived - sum(lost.values()))
        state = State.OPEN if facts.opened else State.UNSEALED
        gaps = {GAPS: unaccounted} if unaccounted else {}
        idle = facts.idle_ns / NS_PER_SECOND
        return Completeness(state, made, facts.stored, lost, unaccounted, gaps, idle)
    seal = facts.seal
    _add(lost, seal.dropped)
    made = seal.events_made
    unaccounted = max(0, made - arrived - sum(lost.values()))
    why: dict[str, int] = {}
    rest = unaccounted
    for reason, known in ((UNDELIVERED, seal.undelivered), (SPILLED, seal.spilled)):
        n = min(rest, max(0, known))
        if n:
            why[reason] = n
            rest -= n
    if rest:
        why[GAPS] = rest
    if facts.beyond_seal:
        why[BEYOND_SEAL] = facts.beyond_seal
    state = State.COMPLETE if unaccounted == 0 and not facts.beyond_seal else State.INCOMPLETE
    return Completeness(state, made, facts.stored, lost, unaccounted, why)
