"""The durable spool: accepted batches wait here until the collector has them.

One SQLite file in WAL mode. Fsync policy: with ``synchronous=NORMAL`` a
committed transaction is in the WAL file before ``commit`` returns, so it
survives a crash or SIGKILL of the agent (the OS still holds the pages); a
power loss may lose the last commits. ``synchronous=FULL`` fsyncs the WAL on
every commit and survives power loss too. The agent commits in groups (one
transaction for everything all connections delivered since the last commit),
so even FULL costs one fsync per group, not per frame.

The bound counts stored payload bytes (what the agent holds for the
collector), not the file size: SQLite reuses freed pages, so the file levels
off a little above the bound instead of growing.

:class:`Spool` is synchronous and not thread-safe; the agent drives it from
one worker thread so the event loop never waits on the disk.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..logs import get_logger
from .config import DROP_REPORT_HEADROOM_BYTES, SpoolSync

_log = get_logger("agent")

#: Schema version in ``PRAGMA user_version``; bump on incompatible change.
SCHEMA_VERSION = 1
#: How long a statement waits for a lock held by another process (someone
#: inspecting the spool with the sqlite3 shell) before failing.
BUSY_TIMEOUT_MS = 5000
#: Most rows one :meth:`Spool.peek` reads, bounding memory per request even
#: when rows are tiny.
PEEK_MAX_ROWS = 10_000
#: Rotate the dead-letter file beyond this size (one previous file is kept as
#: ``.1``): rejected data is kept for inspection without filling the disk.
DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id          INTEGER PRIMARY KEY,   -- arrival order; forwarded in this order
    session_id  TEXT    NOT NULL,
    events      INTEGER NOT NULL,
    payload     BLOB    NOT NULL,      -- serialized coder.agent.v2.ReportBoundaryLogsRequest
    received_at REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS drop_reports (
    id          INTEGER PRIMARY KEY,
    report_id   TEXT    NOT NULL UNIQUE,
    payload     BLOB    NOT NULL       -- serialized boundary_audit.ingest.v1.DropReport
);
"""


class SpoolError(Exception):
    """The spool file cannot be opened or used."""


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A batch read from a socket, not yet stored."""

    session_id: str
    events: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    id: int
    session_id: str
    events: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpooledDropReport:
    id: int
    report_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    batches: int
    events: int
    bytes: int
    drop_reports: int


class Spool:
    """Bounded, ordered, crash-safe store of batches and drop reports."""

    def __init__(self, path: Path, max_bytes: int, sync: SpoolSync = "normal") -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            os.chmod(path, 0o600)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise SpoolError(f"{path}: cannot enable WAL mode (got {mode!r})")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise SpoolError(
                    f"{path}: spool schema version {version}, this agent understands "
                    f"{SCHEMA_VERSION}; move the file aside or use a matching agent"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            row = self._db.execute(
                "SELECT count(*), coalesce(sum(events), 0), coalesce(sum(length(payload)), 0) "
                "FROM batches"
            ).fetchone()
            drow = self._db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM drop_reports"
            ).fetchone()
        except sqlite3.Error as exc:
            raise SpoolError(f"{path}: {exc}") from exc
        self._batches, self._events, self._batch_bytes = int(row[0]), int(row[1]), int(row[2])
        self._reports, self._report_bytes = int(drow[0]), int(drow[1])

    # -- accounting -------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return self._batch_bytes + self._report_bytes

    def stats(self) -> SpoolStats:
        return SpoolStats(self._batches, self._events, self.size_bytes, self._reports)

    # -- writing ----------------------------------------------------------

    def append(self, batches: Sequence[NewBatch]) -> list[NewBatch]:
        """Store ``batches`` in one transaction; return those refused for room.

        A batch is refused when storing it would take the spool past its bound;
        later, smaller batches may still fit. Order among stored ones is kept.
        """
        now = time.time()
        room = self.max_bytes - self.size_bytes
        rows: list[tuple[str, int, bytes, float]] = []
        refused: list[NewBatch] = []
        added_bytes = added_events = 0
        for batch in batches:
            size = len(batch.payload)
            if size > room:
                refused.append(batch)
                continue
            room -= size
            added_bytes += size
            added_events += batch.events
            rows.append((batch.session_id, batch.events, batch.payload, now))
        if rows:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO batches (session_id, events, payload, received_at) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )
            self._batches += len(rows)
            self._events += added_events
            self._batch_bytes += added_bytes
        return refused

    def add_drop_reports(self, reports: Sequence[tuple[str, bytes]]) -> int:
        """Store ``(report_id, payload)`` pairs that fit; return how many did.

        Drop reports may use :data:`DROP_REPORT_HEADROOM_BYTES` beyond the
        bound, so loss can be recorded while batches are being refused.
        """
        room = self.max_bytes + DROP_REPORT_HEADROOM_BYTES - self.size_bytes
        rows: list[tuple[str, bytes]] = []
        for report_id, payload in reports:
            if len(payload) > room:
                break
            room -= len(payload)
            rows.append((report_id, payload))
        if rows:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR IGNORE INTO drop_reports (report_id, payload) VALUES (?, ?)", rows
                )
            self._reports += len(rows)
            self._report_bytes += sum(len(p) for _, p in rows)
        return len(rows)

    # -- reading and deleting ---------------------------------------------

    def peek(
        self, max_bytes: int, max_events: int
    ) -> tuple[list[SpooledBatch], list[SpooledDropReport]]:
        """The oldest batches (and pending drop reports) that fit one request.

        Always returns at least one batch when any is stored, so a batch
        larger than ``max_bytes`` cannot block the queue.
        """
        reports: list[SpooledDropReport] = []
        budget = max_bytes
        for rid, report_id, payload in self._db.execute(
            "SELECT id, report_id, payload FROM drop_reports ORDER BY id LIMIT ?",
            (PEEK_MAX_ROWS,),
        ):
            if len(payload) > budget and reports:
                break
            budget -= len(payload)
            reports.append(SpooledDropReport(rid, report_id, payload))
        batches: list[SpooledBatch] = []
        events = 0
        for bid, session_id, n, payload in self._db.execute(
            "SELECT id, session_id, events, payload FROM batches ORDER BY id LIMIT ?",
            (PEEK_MAX_ROWS,),
        ):
            if batches and (len(payload) > budget or events + n > max_events):
                break
            budget -= len(payload)
            events += n
            batches.append(SpooledBatch(bid, session_id, n, payload))
        return batches, reports

    def delete(
        self, batches: Iterable[SpooledBatch], reports: Iterable[SpooledDropReport] = ()
    ) -> None:
        """Forget what the collector acknowledged (or what was dead-lettered)."""
        batches = list(batches)
        reports = list(reports)
        with self._transaction():
            if batches:
                self._db.executemany("DELETE FROM batches WHERE id = ?", [(b.id,) for b in batches])
            if reports:
                self._db.executemany(
                    "DELETE FROM drop_reports WHERE id = ?", [(r.id,) for r in reports]
                )
        self._batches -= len(batches)
        self._events -= sum(b.events for b in batches)
        self._batch_bytes -= sum(len(b.payload) for b in batches)
        self._reports -= len(reports)
        self._report_bytes -= sum(len(r.payload) for r in reports)

    def dead_letter(
        self,
        path: Path,
        batches: Sequence[SpooledBatch],
        reports: Sequence[SpooledDropReport],
        status: int,
        detail: str,
    ) -> None:
        """Append rejected items to the JSON-lines dead-letter file, then delete them.

        Written and fsynced before the delete, so a crash in between at worst
        leaves a duplicate line, never a lost one. Each line holds the payload
        (base64 protobuf) and the collector's reason.
        """
        if path.exists() and path.stat().st_size > DEAD_LETTER_MAX_BYTES:
            previous = path.with_name(path.name + ".1")
            _log.warning(
                "dead-letter file full; rotating it, the previous rotation is discarded",
                path=str(path),
                discarded=str(previous) if previous.exists() else None,
                limit_bytes=DEAD_LETTER_MAX_BYTES,
            )
            path.replace(previous)
        now = time.time()
        lines = [
            json.dumps(
                {
                    "time": now,
                    "kind": "batch",
                    "session_id": b.session_id,
                    "events": b.events,
                    "status": status,
                    "detail": detail,
                    "payload_b64": base64.b64encode(b.payload).decode(),
                }
            )
            for b in batches
        ] + [
            json.dumps(
                {
                    "time": now,
                    "kind": "drop_report",
                    "report_id": r.report_id,
                    "status": status,
                    "detail": detail,
                    "payload_b64": base64.b64encode(r.payload).decode(),
                }
            )
            for r in reports
        ]
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, ("\n".join(lines) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.delete(batches, reports)

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            # Harmless (the WAL is replayed at the next open) but worth knowing.
            _log.warning("spool checkpoint failed at close", path=str(self.path), error=str(exc))
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
