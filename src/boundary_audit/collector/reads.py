"""The read side of :class:`~.storage.Storage`: sessions, events, timelines, and retention.

A mixin over the backend's ``query`` and ``transaction`` (shared SQL with ``?``
placeholders, as everywhere in storage).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from .filters import sql_clauses
from .model import (
    MAX_PAGE_SIZE,
    EventQuery,
    EventRecord,
    Page,
    SessionSummary,
    TimelineBucket,
    decode_cursor,
    encode_cursor,
)
from .records import SESSION_COLUMNS, Query, summaries

#: Rows deleted per retention transaction, so pruning never holds the write
#: lock long enough to stall ingestion (SQLite has a single writer).
PRUNE_CHUNK_ROWS = 5_000
#: One bar per minute in the session timeline.
TIMELINE_BUCKET_NS = 60 * 1_000_000_000
#: Events stamped further ahead of their arrival than this are left out of the
#: chart (a sender clock in 2199 would squash every real minute into one bar);
#: an hour allows for any honest clock drift. They stay stored and listed.
CHART_FUTURE_SKEW_NS = 3600 * 1_000_000_000
#: Bars shown at most (the latest two hours of activity keep the chart readable).
MAX_TIMELINE_BUCKETS = 120


class _WriteTx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class Reads:
    """Queries and retention; the backend supplies ``query`` and ``transaction``."""

    substring_fn = "instr"

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def list_sessions(self, limit: int = 100, cursor: str | None = None) -> Page[SessionSummary]:
        """Newest first (by first sight), keyset-paginated on (first_seen, session_id)."""
        return session_page(self.query, [], [], limit, cursor)

    def get_session(self, session_id: str) -> SessionSummary | None:
        rows = self.query(SESSION_COLUMNS + " WHERE session_id = ?", (session_id,))
        return summaries(self.query, rows)[0] if rows else None

    def session_drops(self, session_id: str) -> dict[str, int]:
        """Dropped events by reason for one session (``""``: the unattributed ones)."""
        rows = self.query(
            "SELECT c.reason, SUM(c.count) FROM drop_counts c"
            " JOIN drop_reports r ON r.report_id = c.report_id"
            " WHERE r.session_id = ? GROUP BY c.reason ORDER BY c.reason",
            (session_id,),
        )
        return {reason: int(total) for reason, total in rows}

    def query_events(self, q: EventQuery) -> Page[EventRecord]:
        """Filtered events; within a session by sequence number, otherwise by arrival
        (oldest first, or newest first with ``q.newest_first``)."""
        kind, order = ("session", "sequence_number") if q.session_id else ("all", "id")
        if q.newest_first:
            kind += "-desc"
        clauses, params = sql_clauses(q, self.substring_fn)
        if q.cursor:
            (after,) = decode_cursor(q.cursor, kind, 1)
            clauses.append(f"{order} {'<' if q.newest_first else '>'} ?")
            params.append(after)
        limit = _clamp(q.limit)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        direction = " DESC" if q.newest_first else ""
        rows = self.query(
            _EVENT_COLUMNS + where + f" ORDER BY {order}{direction} LIMIT ?",
            (*params, limit + 1),
        )
        items = [_event(row) for row in rows[:limit]]
        resume = q.cursor
        if items:
            last = items[-1]
            resume = encode_cursor(kind, [last.sequence_number if q.session_id else last.id])
        return Page(items, resume if len(rows) > limit else None, resume)

    def tail_cursor(self, q: EventQuery) -> str | None:
        """A cursor positioned after the newest matching event (for ``--follow``)."""
        if q.session_id:
            kind = "session"
            rows = self.query(
                "SELECT MAX(sequence_number) FROM events WHERE session_id = ?", (q.session_id,)
            )
        else:
            kind = "all"
            rows = self.query("SELECT MAX(id) FROM events")
        top = rows[0][0] if rows else None
        return None if top is None else encode_cursor(kind, [int(top)])

    def timeline(self, session_id: str) -> list[TimelineBucket]:
        """Allowed/denied per minute over the session's latest active minutes."""
        rows = self.query(
            "SELECT time_ns / ? AS minute,"
            " SUM(CASE WHEN allowed THEN 1 ELSE 0 END), SUM(CASE WHEN allowed THEN 0 ELSE 1 END)"
            " FROM events WHERE session_id = ? AND time_ns <= received_ns + ?"
            " GROUP BY minute ORDER BY minute DESC LIMIT ?",
            (TIMELINE_BUCKET_NS, session_id, CHART_FUTURE_SKEW_NS, MAX_TIMELINE_BUCKETS),
        )
        return [
            TimelineBucket(int(m) * TIMELINE_BUCKET_NS, int(a), int(d))
            for m, a, d in reversed(rows)
        ]

    def unattributed_drops(self) -> dict[str, int]:
        return self.session_drops("")

    def prune(self, cutoff_ns: int) -> int:
        """Delete events the collector received before ``cutoff_ns``, in short transactions.

        By arrival, not by the sender's clock: an event stamped 2001 is kept as
        long as any other. Each session's counters move the pruned events from
        allowed/denied to ``pruned_count``, so completeness still counts them
        as arrived. Drop reports, records and sessions idle since the cutoff go
        too (a session never before its last event). Returns the events deleted.
        """
        deleted = 0
        # Ids grow with arrival, so what arrived before the cutoff is the ids
        # below the first one that did not: found by a short scan from the
        # oldest row (pruned rows are gone), deleted by primary-key ranges.
        # This spares ingest an index on received_ns.
        kept = self.query(
            "SELECT id FROM events WHERE received_ns >= ? ORDER BY id LIMIT 1", (cutoff_ns,)
        )
        if kept:
            first_kept = kept[0][0]
        else:
            first_kept = (self.query("SELECT MAX(id) FROM events")[0][0] or 0) + 1
        while True:
            with self.transaction() as tx:
                gone = tx.all(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < ?"
                    " AND received_ns < ? ORDER BY id LIMIT ?) RETURNING session_id, allowed",
                    (first_kept, cutoff_ns, PRUNE_CHUNK_ROWS),
                )
                per_session: dict[str, list[int]] = {}
                for session_id, allowed in gone:
                    counts = per_session.setdefault(session_id, [0, 0])
                    counts[0 if allowed else 1] += 1
                if per_session:
                    tx.executemany(
                        "UPDATE sessions SET allowed_count = allowed_count - ?,"
                        " denied_count = denied_count - ?, pruned_count = pruned_count + ?"
                        " WHERE session_id = ?",
                        [(a, d, a + d, sid) for sid, (a, d) in sorted(per_session.items())],
                    )
            deleted += len(gone)
            if len(gone) < PRUNE_CHUNK_ROWS:
                break
        with self.transaction() as tx:
            tx.execute(
                "DELETE FROM drop_counts WHERE report_id IN"
                " (SELECT report_id FROM drop_reports WHERE received_ns < ?)",
                (cutoff_ns,),
            )
            tx.execute("DELETE FROM drop_reports WHERE received_ns < ?", (cutoff_ns,))
            # Only sessions with no event left: a row never disappears under its events.
            tx.execute(
                "DELETE FROM sessions WHERE last_seen_ns < ? AND NOT EXISTS"
                " (SELECT 1 FROM events e WHERE e.session_id = sessions.session_id)",
                (cutoff_ns,),
            )
            tx.execute(
                "DELETE FROM session_records WHERE received_ns < ? AND NOT EXISTS"
                " (SELECT 1 FROM sessions s WHERE s.session_id = session_records.session_id)",
                (cutoff_ns,),
            )
        return deleted


def session_page(
    query: Query, clauses: list[str], params: list[Any], limit: int, cursor: str | None
) -> Page[SessionSummary]:
    """Sessions matching ``clauses`` (ANDed), newest first, from ``cursor`` on."""
    limit = _clamp(limit)
    if cursor:
        first_seen, session_id = decode_cursor(cursor, "sessions", 2)
        clauses = [*clauses, "(first_seen_ns < ? OR (first_seen_ns = ? AND session_id < ?))"]
        params = [*params, first_seen, first_seen, session_id]
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = query(
        SESSION_COLUMNS + where + " ORDER BY first_seen_ns DESC, session_id DESC LIMIT ?",
        (*params, limit + 1),
    )
    items = summaries(query, rows[:limit])
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor("sessions", [last.first_seen_ns, last.session_id])
    return Page(items, next_cursor)


_EVENT_COLUMNS = (
    "SELECT id, session_id, sequence_number, time_ns, received_ns, allowed, method, url, host,"
    " matched_rule, flags FROM events"
)


def _event(row: tuple[Any, ...]) -> EventRecord:
    rid, sid, seq, t, r, allowed, method, url, host, rule, flags = row
    return EventRecord(rid, sid, seq, t, r, bool(allowed), method, url, host, rule, flags)


def _clamp(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE_SIZE))
