"""Reads behind the web UI's overviews: per-host summaries, counts, session search.

A mixin over the backend's ``query`` (shared SQL with ``?`` placeholders, as
everywhere in storage). Per-session aggregates walk one session's rows through
the ``events_session_seq`` index; the sessions list filters on ``sessions``
columns (indexed by first and last sight) and a host search uses
``events_host``. Only a URL-substring search reads every event (no index can
serve ``instr``); it is bounded by ``SEARCH_SCAN_LIMIT`` distinct sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .filters import sql_clauses
from .model import EventQuery, Page, SessionSummary, decode_cursor
from .reads import session_page

#: Hosts listed per session at most: denied ones come first, so a long tail
#: of allowed hosts is what gets cut (the page says how many hosts there are).
MAX_HOSTS = 100
#: Sessions a URL or host search matches at most, so a search of a large
#: store returns after one bounded pass instead of listing everything.
SEARCH_SCAN_LIMIT = 1_000


@dataclass(frozen=True, slots=True)
class HostSummary:
    """One host's requests within a session (times are event times)."""

    host: str
    allowed: int
    denied: int
    first_ns: int
    last_ns: int


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """Filters of the sessions list; empty values mean "any"."""

    agent: str = ""
    process: str = ""
    has_denials: bool = False
    #: Drops reported, or sequence numbers missing (below the highest or the seal's count).
    has_loss: bool = False
    #: Sessions the collector heard of at or after this (arrival time).
    since_ns: int | None = None
    #: Sessions first heard of before this (arrival time).
    until_ns: int | None = None
    #: Sessions with an event to this exact host (case-insensitive).
    host: str = ""
    #: Sessions with an event whose URL contains this (case-sensitive).
    url_contains: str = ""

    def active(self) -> bool:
        return self != SessionFilter()


_COUNT_EVENTS = "SELECT COUNT(*) FROM events"
_COUNT_SESSIONS = "SELECT COUNT(*) FROM sessions"
#: Sessions with an event whose URL contains ``?``; ``{fn}`` is the engine's substring test.
_URL_SEARCH = (
    "session_id IN (SELECT DISTINCT session_id FROM events WHERE {fn}(url, ?) > 0 LIMIT ?)"
)
#: Events the session counters account for (stored, or pruned after arrival).
_ARRIVED = "(allowed_count + denied_count + pruned_count)"


class Overview:
    """The UI's aggregate reads; the backend supplies ``query`` and ``substring_fn``."""

    substring_fn = "instr"

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def event_time_range(self, session_id: str) -> tuple[int, int] | None:
        """Earliest and latest event time (the sender's clock) of a session's stored events."""
        rows = self.query(
            "SELECT MIN(time_ns), MAX(time_ns) FROM events WHERE session_id = ?", (session_id,)
        )
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0]), int(rows[0][1])

    def session_hosts(self, session_id: str, limit: int = MAX_HOSTS) -> list[HostSummary]:
        """Per host: allowed, denied, first and last event time; most denials first."""
        rows = self.query(
            "SELECT host, SUM(CASE WHEN allowed THEN 1 ELSE 0 END) AS a,"
            " SUM(CASE WHEN allowed THEN 0 ELSE 1 END) AS d, MIN(time_ns), MAX(time_ns)"
            " FROM events WHERE session_id = ? GROUP BY host"
            " ORDER BY d DESC, a DESC, host LIMIT ?",
            (session_id, limit),
        )
        return [HostSummary(h, int(a), int(d), int(f), int(la)) for h, a, d, f, la in rows]

    def count_hosts(self, session_id: str) -> int:
        rows = self.query(
            "SELECT COUNT(DISTINCT host) FROM events WHERE session_id = ?", (session_id,)
        )
        return int(rows[0][0]) if rows else 0

    def count_events(self, q: EventQuery) -> int:
        """Events matching ``q``'s filters (its cursor and limit ignored)."""
        where, params = self._event_where(q)
        return int(self.query(_COUNT_EVENTS + where, params)[0][0])

    def events_before(self, q: EventQuery) -> int:
        """Matching events before ``q``'s cursor: the page's offset in the listing."""
        if not q.cursor:
            return 0
        kind, order = ("session", "sequence_number") if q.session_id else ("all", "id")
        (after,) = decode_cursor(q.cursor, kind, 1)
        where, params = self._event_where(q)
        where += (" AND " if where else " WHERE ") + f"{order} <= ?"
        return int(self.query(_COUNT_EVENTS + where, (*params, after))[0][0])

    def _event_where(self, q: EventQuery) -> tuple[str, list[Any]]:
        clauses, params = sql_clauses(q, self.substring_fn)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _session_where(self, f: SessionFilter) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if f.agent:
            clauses.append("agent = ?")
            params.append(f.agent)
        if f.process:
            clauses.append("confined_process_name = ?")
            params.append(f.process)
        if f.has_denials:
            clauses.append("denied_count > 0")
        if f.has_loss:
            clauses.append(
                f"(dropped_count > 0 OR max_seq + 1 > {_ARRIVED}"
                f" OR (seal_events_made IS NOT NULL AND seal_events_made > {_ARRIVED}))"
            )
        if f.since_ns is not None:
            clauses.append("last_seen_ns >= ?")
            params.append(f.since_ns)
        if f.until_ns is not None:
            clauses.append("first_seen_ns < ?")
            params.append(f.until_ns)
        if f.host:
            clauses.append(
                "session_id IN (SELECT DISTINCT session_id FROM events WHERE host = ? LIMIT ?)"
            )
            params += [f.host.lower(), SEARCH_SCAN_LIMIT]
        if f.url_contains:
            clauses.append(_URL_SEARCH.format(fn=self.substring_fn))
            params += [f.url_contains, SEARCH_SCAN_LIMIT]
        return clauses, params

    def find_sessions(
        self, f: SessionFilter, limit: int = 100, cursor: str | None = None
    ) -> Page[SessionSummary]:
        """Sessions matching ``f``, newest first, keyset-paginated like ``list_sessions``."""
        clauses, params = self._session_where(f)
        return session_page(self.query, clauses, params, limit, cursor)

    def count_sessions(self, f: SessionFilter | None = None) -> int:
        """Sessions matching ``f`` (all of them without one)."""
        clauses, params = self._session_where(f or SessionFilter())
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return int(self.query(_COUNT_SESSIONS + where, params)[0][0])

    def sessions_before(self, f: SessionFilter, cursor: str | None) -> int:
        """Matching sessions listed before ``cursor`` (newer ones): the page's offset."""
        if not cursor:
            return 0
        first_seen, session_id = decode_cursor(cursor, "sessions", 2)
        clauses, params = self._session_where(f)
        clauses.append("(first_seen_ns > ? OR (first_seen_ns = ? AND session_id >= ?))")
        params += [first_seen, first_seen, session_id]
        rows = self.query(_COUNT_SESSIONS + " WHERE " + " AND ".join(clauses), params)
        return int(rows[0][0])

    def event_time_ranges(self, session_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Event time of each session's first and last event by sequence number.

        Two index probes per session (``events_session_seq``), so a list page
        stays fast however long its sessions are; the session page shows the
        exact earliest and latest (:meth:`event_time_range`).
        """
        out: dict[str, tuple[int, int]] = {}
        for sid in session_ids:
            rows = self.query(
                "SELECT (SELECT time_ns FROM events WHERE session_id = ?"
                " ORDER BY sequence_number LIMIT 1),"
                " (SELECT time_ns FROM events WHERE session_id = ?"
                " ORDER BY sequence_number DESC LIMIT 1)",
                (sid, sid),
            )
            if rows and rows[0][0] is not None:
                out[sid] = (int(rows[0][0]), int(rows[0][1]))
        return out
