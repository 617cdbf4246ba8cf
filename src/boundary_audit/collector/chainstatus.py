"""Each sealed session's hash chain, recomputed over what is stored, at ingest.

The verdict (``verified``, ``tampered`` with the first bad sequence number,
``unverified``) is computed in the ingest transaction whenever a session
with a chained seal gets new events or a new seal, and stored on its row;
reads only show it. The check is :func:`boundary_audit.evidence.compare.scan`
(``wire.chain.check``'s verdict) over the session's stored events.

Cost: sessions without a chained seal (Coder's boundary, unchained
senders, sessions not sealed yet) are never read back: one primary-key
read per session and request. A sealed session is read back whole once
when its seal arrives (and again for each late batch after it: spill files).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from boundary_audit.evidence import StoredEvent
from boundary_audit.evidence.compare import scan
from boundary_audit.evidence.running import ChainRun, run_verdict


class ChainState(enum.StrEnum):
    VERIFIED = "verified"
    TAMPERED = "tampered"
    UNVERIFIED = "unverified"


class _Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True, slots=True)
class ChainStatus:
    state: ChainState
    #: tampered: the first sequence number whose digest or place is wrong
    #: (None: every event matched but the count or head does not).
    first_bad_sequence: int | None = None
    #: Why unverified (or where tampered), for people.
    reason: str = ""

    def summary(self) -> str:
        if self.state is ChainState.VERIFIED:
            return "verified: the stored events match the sender's chain and seal"
        if self.state is ChainState.TAMPERED:
            where = (
                f"first bad sequence number {self.first_bad_sequence}"
                if self.first_bad_sequence is not None
                else "the chain does not end in the seal's head"
            )
            return f"tampered: {where}"
        return f"unverified: {self.reason}" if self.reason else "unverified"

    def to_json(self) -> dict[str, object]:
        return {
            "state": str(self.state),
            "first_bad_sequence": self.first_bad_sequence,
            "summary": self.summary(),
        }


#: Reasons shown for unverified sessions.
NOT_SEALED = "not sealed yet"
NO_CHAIN = "the sender does not chain"
PRUNED = "retention deleted some of its events"
#: Stored chain_status of a chain whose stored events all match but whose
#: tail has not arrived (shown unverified, never verified).
SHORT = "short"


def status_of(stored: str | None, bad_seq: int | None, *, sealed: bool, pruned: int) -> ChainStatus:
    """The status a read shows, from the stored columns."""
    if stored == ChainState.VERIFIED:
        return ChainStatus(ChainState.VERIFIED)
    if stored == ChainState.TAMPERED:
        return ChainStatus(ChainState.TAMPERED, bad_seq)
    if stored == SHORT:
        return ChainStatus(
            ChainState.UNVERIFIED,
            reason=f"every stored event matches the chain, which goes on from {bad_seq}"
            " (not stored yet: undelivered, or a spill file still to come)",
        )
    if not sealed:
        return ChainStatus(ChainState.UNVERIFIED, reason=NOT_SEALED)
    return ChainStatus(ChainState.UNVERIFIED, reason=PRUNED if pruned else NO_CHAIN)


#: The columns :func:`stored_events` reads, in StoredEvent's order.
_EVENT_ROWS = (
    "SELECT e.sequence_number, e.time_ns, e.allowed, e.method, e.url, e.matched_rule,"
    " COALESCE(e.process_name, s.confined_process_name), e.chain_digest"
    " FROM events e JOIN sessions s ON s.session_id = e.session_id"
    " WHERE e.session_id = ? ORDER BY e.sequence_number"
)


def stored_events(rows: list[tuple[Any, ...]]) -> list[StoredEvent]:
    """StoredEvents from rows of :data:`_EVENT_ROWS` (or the same columns)."""
    return [
        StoredEvent(seq, t, bool(a), m, u, r, n, bytes(d) if d else b"")
        for seq, t, a, m, u, r, n, d in rows
    ]


def event_rows_sql() -> str:
    return _EVENT_ROWS


def update_chain_status(tx: _Tx, session_id: str) -> ChainState | None:
    """Recompute and store the session's chain verdict; None when it has no chained seal."""
    row = tx.one(
        "SELECT seal_chain_head, seal_chain_count, pruned_count, chain_run_count,"
        " chain_run_last, chain_run_head, chain_run_bad FROM sessions WHERE session_id = ?",
        (session_id,),
    )
    if row is None or not row[0] or row[2]:
        # No chained seal (nothing to check), or retention took part of the
        # chain (it can no longer be recomputed): unverified.
        if row is not None and row[0] and row[2]:
            tx.execute(
                "UPDATE sessions SET chain_status = NULL, chain_bad_seq = NULL"
                " WHERE session_id = ?",
                (session_id,),
            )
        return None
    head, count = bytes(row[0]), int(row[1] or 0)
    run = ChainRun(row[3], row[4], bytes(row[5]) if row[5] else b"", row[6])
    verdict = run_verdict(run, head, count)
    if verdict is None:  # the run cannot tell: read the session back
        events = stored_events(tx.all(_EVENT_ROWS, (session_id,)))
        verdict = scan(session_id, events, head, count).chain
        assert verdict is not None  # a head was given
        stored_count = len(events)
    else:
        # Every stored event is in the run unless a digest stopped it.
        stored_count = run.count if run.bad is None else -1
    state = ChainState.VERIFIED if verdict.ok else ChainState.TAMPERED
    stored = str(state)
    if not verdict.ok and verdict.checked == stored_count and verdict.checked < count:
        # Every stored event matches; the chain's tail is still to come.
        state, stored = ChainState.UNVERIFIED, SHORT
    tx.execute(
        "UPDATE sessions SET chain_status = ?, chain_bad_seq = ? WHERE session_id = ?",
        (stored, None if verdict.ok else verdict.first_bad_sequence, session_id),
    )
    return state


__all__ = ["ChainState", "ChainStatus", "status_of", "stored_events", "update_chain_status"]
