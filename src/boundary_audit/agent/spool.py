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

:class:`Spool` is synchronous and not thread-safe; :class:`AsyncSpool` runs
it on one worker thread of its own, so the event loop never waits on the
disk, and reports the new :class:`SpoolStats` after every call.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..logs import get_logger
from .config import DROP_REPORT_HEADROOM_BYTES, SpoolSync

_log = get_logger("agent")
T = TypeVar("T")

#: Schema version in ``PRAGMA user_version``; bump on incompatible change.
#: Version 2 added ``batches.kind`` (session records); a version-1 file is
#: upgraded in place when opened.
SCHEMA_VERSION = 2
#: ``batches.kind``: a serialized ReportBoundaryLogsRequest (events).
KIND_LOGS = 0
#: ``batches.kind``: a serialized boundary_audit.ingest.v1.SessionRecord
#: (a session's open or seal, relayed in arrival order with its events).
KIND_SESSION = 1
#: How long a statement waits for a lock held by another process (someone
#: inspecting the spool with the sqlite3 shell) before failing.
BUSY_TIMEOUT_MS = 5000
#: Pages one :meth:`Spool.reclaim` gives back: 1 MiB of 4 KiB pages, about
#: what one forwarded request frees, and little enough WAL to fit the reserve.
RECLAIM_PAGES = 256
#: Most rows one :meth:`Spool.peek` reads, bounding memory per request even
#: when rows are tiny.
PEEK_MAX_ROWS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id          INTEGER PRIMARY KEY,   -- arrival order; forwarded in this order
    session_id  TEXT    NOT NULL,
    events      INTEGER NOT NULL,
    payload     BLOB    NOT NULL,      -- serialized ReportBoundaryLogsRequest or SessionRecord
    received_at REAL    NOT NULL,
    kind        INTEGER NOT NULL DEFAULT 0  -- KIND_LOGS or KIND_SESSION
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
    kind: int = KIND_LOGS


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    id: int
    session_id: str
    events: int
    payload: bytes
    kind: int = KIND_LOGS


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
            # Takes effect only on a new file, and only before WAL mode is
            # set: freed pages can then be given back to the file system
            # (reclaim), which recovering from a full disk needs.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise SpoolError(f"{path}: cannot enable WAL mode (got {mode!r})")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, SCHEMA_VERSION):
                raise SpoolError(
                    f"{path}: spool schema version {version}, this agent understands "
                    f"{SCHEMA_VERSION}; move the file aside or use a matching agent"
                )
            self._db.executescript(_SCHEMA)
            if version == 1:
                self._db.execute("ALTER TABLE batches ADD COLUMN kind INTEGER NOT NULL DEFAULT 0")
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
        rows: list[tuple[str, int, bytes, float, int]] = []
        refused: list[NewBatch] = []
        added_bytes = added_events = 0
        for batch in batches:
            size = len(batch.payload)
            # Session records (small, and what says whether anything was
            # lost) may use the drop reports' headroom beyond the bound.
            extra = DROP_REPORT_HEADROOM_BYTES if batch.kind == KIND_SESSION else 0
            if size > room + extra:
                refused.append(batch)
                continue
            room -= size
            added_bytes += size
            added_events += batch.events
            rows.append((batch.session_id, batch.events, batch.payload, now, batch.kind))
        if rows:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO batches (session_id, events, payload, received_at, kind) "
                    "VALUES (?, ?, ?, ?, ?)",
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
        for bid, session_id, n, payload, kind in self._db.execute(
            "SELECT id, session_id, events, payload, kind FROM batches ORDER BY id LIMIT ?",
            (PEEK_MAX_ROWS,),
        ):
            if batches and (len(payload) > budget or events + n > max_events):
                break
            budget -= len(payload)
            events += n
            batches.append(SpooledBatch(bid, session_id, n, payload, kind))
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

    def reclaim(self) -> int:
        """Give freed pages and the WAL back to the file system (after a full disk).

        Returns the free pages still in the file (call again to give back more).
        """
        # A few pages at a time: vacuuming writes the moved pages to the WAL
        # first, so freeing everything at once could need the space it frees.
        # (executescript steps the pragma to its end; execute frees one page.)
        self._db.executescript(f"PRAGMA incremental_vacuum({RECLAIM_PAGES});")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return int(self._db.execute("PRAGMA freelist_count").fetchone()[0])

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
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error).

    The error that ended the transaction is the one raised: SQLite rolls a
    transaction back by itself after some errors (a full disk), and a
    ROLLBACK then would fail with "no transaction is active", hiding the
    real cause.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                _log.warning("spool rollback failed", error=repr(exc))


#: Told the spool's new figures after every :class:`AsyncSpool` call (gauges).
StatsListener = Callable[[SpoolStats], None]


class AsyncSpool:
    """A :class:`Spool` driven from asyncio: every call runs on the spool's own thread.

    One worker thread, so calls run one at a time and in the order made, as
    the synchronous spool requires. Open with :meth:`open`, end with
    :meth:`close`.
    """

    def __init__(
        self, spool: Spool, executor: ThreadPoolExecutor, on_change: StatsListener
    ) -> None:
        self._spool = spool
        self._executor = executor
        self._on_change = on_change
        on_change(spool.stats())

    @classmethod
    async def open(
        cls, path: Path, max_bytes: int, sync: SpoolSync, on_change: StatsListener
    ) -> AsyncSpool:
        """Open (or create) the spool file on a new spool thread; raises :class:`SpoolError`."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-spool")
        try:
            spool = await asyncio.get_running_loop().run_in_executor(
                executor, Spool, path, max_bytes, sync
            )
        except BaseException:
            executor.shutdown(wait=True)
            raise
        return cls(spool, executor, on_change)

    @property
    def path(self) -> Path:
        return self._spool.path

    def stats(self) -> SpoolStats:
        """Counters as of the last finished call (read without waiting for the thread)."""
        return self._spool.stats()

    async def append(self, batches: Sequence[NewBatch]) -> list[NewBatch]:
        """:meth:`Spool.append`: store what fits; return the batches refused for room."""
        return await self._run(self._spool.append, batches)

    async def add_drop_reports(self, reports: Sequence[tuple[str, bytes]]) -> int:
        """:meth:`Spool.add_drop_reports`: how many of the reports were stored."""
        return await self._run(self._spool.add_drop_reports, reports)

    async def peek(
        self, max_bytes: int, max_events: int
    ) -> tuple[list[SpooledBatch], list[SpooledDropReport]]:
        """:meth:`Spool.peek`: the oldest items that fit one request."""
        return await self._run(self._spool.peek, max_bytes, max_events)

    async def delete(
        self, batches: Sequence[SpooledBatch], reports: Sequence[SpooledDropReport]
    ) -> None:
        """:meth:`Spool.delete`: forget what the collector acknowledged."""
        await self._run(self._spool.delete, batches, reports)

    async def discard(
        self,
        batches: Sequence[SpooledBatch],
        reports: Sequence[SpooledDropReport],
        keep: Callable[[], None],
    ) -> None:
        """Run ``keep()`` (which saves the items elsewhere), then delete them.

        Both in one call on the spool thread, in that order: a crash in
        between at worst saves an item twice, never loses one.
        """

        def keep_then_delete() -> None:
            keep()
            self._spool.delete(batches, reports)

        await self._run(keep_then_delete)

    async def reclaim(self) -> int:
        """:meth:`Spool.reclaim`: freed pages and the WAL back; free pages left."""
        return await self._run(self._spool.reclaim)

    async def close(self) -> None:
        """Checkpoint and close the file, then end the spool thread."""
        try:
            await self._run(self._spool.close)
        finally:
            self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        finally:
            self._on_change(self._spool.stats())
