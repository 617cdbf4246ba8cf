"""Session records (opens and seals) in, session summaries with their completeness out.

The SQL of both sides lives here so :mod:`.storage` keeps to events, drops
and tokens. Writes run inside the ingest transaction, after the session row
was created and locked (and its owner checked) by ``Storage._store_session``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from boundary_audit.evidence import StoredSeal

from .chainstatus import status_of
from .completeness import Facts, Seal, assess
from .model import RecordIn, SessionSummary

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class _Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...


def store_record(tx: _Tx, record: RecordIn, received_ns: int) -> int:
    """Store one record once (by ``record_id``); 1 when it was new, else 0.

    Opens: the first sender seen stays, the lowest first number wins. Seals:
    the one with the latest ``sealed_at`` wins (a session may be sealed on
    the socket and again when its spill file is delivered; both agree on
    ``events_made``).
    """
    inserted = tx.execute(
        "INSERT INTO session_records (record_id, session_id, received_ns) VALUES (?, ?, ?)"
        " ON CONFLICT (record_id) DO NOTHING",
        (record.record_id, record.session_id, received_ns),
    )
    if not inserted:
        return 0
    seen = record.observed_ns or received_ns
    if record.open is not None:
        o = record.open
        tx.execute(
            "UPDATE sessions SET open_sender = COALESCE(open_sender, ?),"
            " open_want_acks = COALESCE(open_want_acks, ?),"
            " open_first_sequence = CASE WHEN open_first_sequence IS NULL"
            " OR open_first_sequence > ? THEN ? ELSE open_first_sequence END,"
            " opened_ns = COALESCE(opened_ns, ?) WHERE session_id = ?",
            (
                o.sender,
                o.want_acks,
                o.first_sequence_number,
                o.first_sequence_number,
                seen,
                record.session_id,
            ),
        )
    if record.seal is not None:
        s = record.seal
        sealed_at = s.sealed_at_ns or seen
        kept = stored_seal(record, received_ns)
        tx.execute(
            "INSERT INTO session_seals (record_id, session_id, events_made, events_sent,"
            " undelivered, spilled, sealed_at_ns, chain_head, chain_count, dropped)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.record_id,
                record.session_id,
                kept.events_made,
                kept.events_sent,
                kept.undelivered,
                kept.spilled,
                kept.sealed_at_ns,
                kept.chain_head or None,
                kept.chain_count,
                json.dumps(dict(sorted(kept.dropped.items()))),
            ),
        )
        tx.execute(
            "UPDATE sessions SET seal_events_made = ?, seal_events_sent = ?, seal_dropped = ?,"
            " seal_undelivered = ?, seal_spilled = ?, sealed_at_ns = ?, seal_chain_head = ?,"
            " seal_chain_count = ?"
            " WHERE session_id = ? AND (sealed_at_ns IS NULL OR sealed_at_ns <= ?)",
            (
                s.events_made,
                s.events_sent,
                json.dumps(dict(sorted(s.dropped.items()))),
                s.undelivered,
                s.spilled,
                sealed_at,
                s.chain_head or None,
                s.chain_count,
                record.session_id,
                sealed_at,
            ),
        )
    return 1


def stored_seal(record: RecordIn, received_ns: int) -> StoredSeal:
    """The seal of ``record`` as stored (what its store-log leaf commits to)."""
    s = record.seal
    assert s is not None
    return StoredSeal(
        events_made=s.events_made,
        events_sent=s.events_sent,
        undelivered=s.undelivered,
        spilled=s.spilled,
        sealed_at_ns=s.sealed_at_ns or record.observed_ns or received_ns,
        chain_head=s.chain_head or b"",
        chain_count=s.chain_count,
        dropped=dict(s.dropped),
    )


#: The columns of a session summary, in SessionSummary's order, then the
#: ones completeness needs (see :func:`summaries`).
SESSION_COLUMNS = (
    "SELECT session_id, agent, workspace, confined_process_name, first_seen_ns, last_seen_ns,"
    " allowed_count, denied_count, max_seq, dropped_count, pruned_count,"
    " open_sender, seal_events_made, seal_events_sent, seal_dropped, seal_undelivered,"
    " seal_spilled, sealed_at_ns, chain_status, chain_bad_seq FROM sessions"
)
#: Sessions per drop-count query (bounded so the IN list stays small).
IN_CHUNK = 200


def summaries(
    query: Query, rows: list[tuple[Any, ...]], now_ns: int | None = None
) -> list[SessionSummary]:
    """Summaries of ``rows`` (from :data:`SESSION_COLUMNS`), each with its completeness."""
    now = time.time_ns() if now_ns is None else now_ns
    reported = _reported(query, [r[0] for r in rows])
    out = []
    for row in rows:
        (sid, agent, ws, name, first, last, allowed, denied, max_seq, dropped, pruned) = row[:11]
        opener, made, sent, seal_dropped, undelivered, spilled, sealed_at = row[11:18]
        chain_state, chain_bad = row[18:20]
        seal = None
        beyond = 0
        stored = allowed + denied
        if made is not None:
            seal = Seal(
                made, sent, json.loads(seal_dropped or "{}"), undelivered, spilled, sealed_at
            )
            if max_seq >= made:
                ((beyond,),) = query(
                    "SELECT COUNT(*) FROM events WHERE session_id = ? AND sequence_number >= ?",
                    (sid, made),
                )
                stored -= int(beyond)
        facts = Facts(
            stored=stored,
            pruned=pruned,
            max_sequence=max_seq,
            reported=reported.get(sid, {}),
            opened=opener is not None,
            seal=seal,
            beyond_seal=int(beyond),
            idle_ns=max(0, now - last),
        )
        out.append(
            SessionSummary(
                sid, agent, ws, name, first, last, allowed, denied, max_seq, dropped, pruned,
                assess(facts),
                status_of(chain_state, chain_bad, sealed=made is not None, pruned=pruned),
            )
        )  # fmt: skip
    return out


def _reported(query: Query, session_ids: list[str]) -> dict[str, dict[str, dict[str, int]]]:
    """Drop-report totals per session, source and reason."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for i in range(0, len(session_ids), IN_CHUNK):
        chunk = session_ids[i : i + IN_CHUNK]
        marks = ", ".join("?" for _ in chunk)
        rows = query(
            "SELECT r.session_id, r.source, c.reason, SUM(c.count) FROM drop_counts c"  # noqa: S608
            " JOIN drop_reports r ON r.report_id = c.report_id"
            f" WHERE r.session_id IN ({marks}) GROUP BY r.session_id, r.source, c.reason",
            chunk,
        )
        for sid, source, reason, total in rows:
            out.setdefault(sid, {}).setdefault(source, {})[reason] = int(total)
    return out
