"""What the exporter reads and where it keeps its place: the stored rows and the cursor.

Order of commit. Events are read by ``events.id``. On SQLite there is one
writer, so ids commit in order and ``MAX(id)`` is a safe horizon. On
PostgreSQL ids come from a sequence *before* commit, so a transaction can
commit id 10 after another committed id 20; the horizon is therefore read
under ``LOCK TABLE events IN SHARE MODE`` (it waits for every transaction
that has inserted events to finish, since an INSERT holds ROW EXCLUSIVE
from before it draws its ids), in a transaction of its own that is over in
microseconds. Every id at or below that horizon is committed or never will
be, so nothing below the cursor can appear later.

SQLite reuses ids once every event is deleted (retention on an idle store:
``events.id`` has no AUTOINCREMENT), so a horizon below the cursor means
the ids started again: :meth:`Source.rewind` moves the cursor back to 0.

Drop reports have no commit-ordered id; each one shipped is marked in
``otlp_sent_drops`` (they are few: one per loss report).

Replicas. On PostgreSQL a :meth:`Source.claim` holds the cursor row
``FOR UPDATE`` from the read to the cursor's update: a second replica waits
for it and then reads the advanced cursor, so replicas take turns and never
ship a batch twice. On SQLite one collector owns the file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..model import EventRecord
from ..storage import Storage, Tx
from .mapping import DropRow, EventRow

#: The cursor row's name: one exporter per database (a second endpoint would be a second name).
DEFAULT_CURSOR = "default"

_EVENTS_SQL = (
    "SELECT e.id, e.session_id, e.sequence_number, e.time_ns, e.received_ns, e.allowed,"
    " e.method, e.url, e.host, e.matched_rule,"
    " COALESCE(e.process_name, s.confined_process_name, ''),"
    " COALESCE(s.agent, ''), COALESCE(s.workspace, ''), e.flags"
    " FROM events e LEFT JOIN sessions s ON s.session_id = e.session_id"
    " WHERE e.id > ? AND e.id <= ? ORDER BY e.id LIMIT ?"
)
_DROPS_SQL = (
    "SELECT d.report_id, d.session_id, d.source, d.agent, d.workspace, d.time_ns,"
    " d.received_ns FROM drop_reports d"
    " WHERE NOT EXISTS (SELECT 1 FROM otlp_sent_drops x WHERE x.report_id = d.report_id)"
    " ORDER BY d.received_ns, d.report_id LIMIT ?"
)


@dataclass(slots=True)
class Claim:
    """The cursor as read at the start of one export cycle, and how to advance it."""

    cursor: int
    _tx: Tx | None
    _storage: Storage
    _name: str
    advanced: bool = field(default=False)

    def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self._tx is not None:
            return self._tx.all(sql, params)
        return self._storage.query(sql, params)

    def advance(self, event_id: int, drop_ids: Sequence[str]) -> None:
        """Move the cursor to ``event_id`` and mark ``drop_ids`` shipped (durable on return)."""
        if self._tx is not None:
            _advance(self._tx, self._name, event_id, drop_ids)
        else:
            with self._storage.transaction() as tx:
                _advance(tx, self._name, event_id, drop_ids)
        self.cursor = event_id
        self.advanced = True


def _advance(tx: Tx, name: str, event_id: int, drop_ids: Sequence[str]) -> None:
    now = time.time_ns()
    tx.execute(
        "UPDATE otlp_cursor SET event_id = ?, updated_ns = ? WHERE name = ?",
        (event_id, now, name),
    )
    if drop_ids:
        tx.executemany(
            "INSERT INTO otlp_sent_drops (report_id, sent_ns) VALUES (?, ?)"
            " ON CONFLICT (report_id) DO NOTHING",
            [(r, now) for r in drop_ids],
        )


class Source:
    """The exporter's view of one store."""

    def __init__(self, storage: Storage, name: str = DEFAULT_CURSOR) -> None:
        self.storage = storage
        self.name = name
        self.locking = storage.backend == "postgresql"

    def prepare(self) -> None:
        """Create the cursor row if new (from the start: all history is shipped); tidy marks."""
        with self.storage.transaction() as tx:
            tx.execute(
                "INSERT INTO otlp_cursor (name, event_id, updated_ns) VALUES (?, 0, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (self.name, time.time_ns()),
            )
            # Marks of drop reports that retention deleted.
            tx.execute(
                "DELETE FROM otlp_sent_drops WHERE NOT EXISTS"
                " (SELECT 1 FROM drop_reports d WHERE d.report_id = otlp_sent_drops.report_id)"
            )

    def horizon(self) -> int:
        """The highest event id below which every event is committed (see module doc)."""
        if not self.locking:
            return int(self.storage.query("SELECT MAX(id) FROM events")[0][0] or 0)
        with self.storage.transaction() as tx:
            tx.execute("LOCK TABLE events IN SHARE MODE")
            row = tx.one("SELECT MAX(id) FROM events")
        return int(row[0] or 0) if row else 0

    def rewind(self, claim: Claim, horizon: int) -> bool:
        """Back to 0 when the ids started again below the cursor (SQLite only); True if so."""
        if self.locking or horizon >= claim.cursor:
            return False
        claim.advance(0, [])
        return True

    def unexported_before(self, cursor: int, cutoff_ns: int) -> int:
        """Events past ``cursor`` that arrived before ``cutoff_ns`` (what retention would take)."""
        row = self.storage.query(
            "SELECT COUNT(*) FROM events WHERE id > ? AND received_ns < ?", (cursor, cutoff_ns)
        )[0]
        return int(row[0])

    def cursor(self) -> int:
        rows = self.storage.query("SELECT event_id FROM otlp_cursor WHERE name = ?", (self.name,))
        return int(rows[0][0]) if rows else 0

    @contextmanager
    def claim(self) -> Iterator[Claim]:
        """The cursor, held (PostgreSQL: row-locked) until the block ends."""
        if not self.locking:
            yield Claim(self.cursor(), None, self.storage, self.name)
            return
        with self.storage.transaction() as tx:
            row = tx.one("SELECT event_id FROM otlp_cursor WHERE name = ? FOR UPDATE", (self.name,))
            yield Claim(int(row[0]) if row else 0, tx, self.storage, self.name)

    def events(self, claim: Claim, upto: int, limit: int) -> list[EventRow]:
        rows = claim.rows(_EVENTS_SQL, (claim.cursor, upto, limit))
        return [
            EventRow(
                EventRecord(
                    int(r[0]),
                    r[1],
                    int(r[2]),
                    int(r[3]),
                    int(r[4]),
                    bool(r[5]),
                    r[6],
                    r[7],
                    r[8],
                    r[9],
                    int(r[13] or 0),
                ),
                process_name=r[10],
                agent=r[11],
                workspace=r[12],
            )
            for r in rows
        ]

    def drops(self, claim: Claim, limit: int) -> list[DropRow]:
        if limit <= 0:
            return []
        rows = claim.rows(_DROPS_SQL, (limit,))
        if not rows:
            return []
        # One small read per report: drop reports are rare (one per loss).
        counts = {
            r[0]: {
                reason: int(n)
                for reason, n in claim.rows(
                    "SELECT reason, count FROM drop_counts WHERE report_id = ?", (r[0],)
                )
            }
            for r in rows
        }
        return [
            DropRow(r[0], r[1] or "", r[2], r[3], r[4], int(r[5]), int(r[6]), counts.get(r[0], {}))
            for r in rows
        ]

    def lag(self, cursor: int) -> tuple[int, int | None]:
        """Events stored after ``cursor``, and the arrival time (ns) of the oldest of them."""
        row = self.storage.query(
            "SELECT COUNT(*), MIN(received_ns) FROM events WHERE id > ?", (cursor,)
        )[0]
        return int(row[0]), (int(row[1]) if row[1] is not None else None)


__all__ = ["DEFAULT_CURSOR", "Claim", "Source"]
