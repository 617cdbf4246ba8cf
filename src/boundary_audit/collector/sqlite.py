"""SQLite backend: one file in WAL mode, one writer connection, per-thread readers."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from boundary_audit.logs import get_logger

from .model import StorageUnavailableError
from .storage import Storage, Tx

_T = TypeVar("_T")

#: How long a statement waits for another process's write lock before the
#: request gets a 503 (the agent retries): long enough to ride out a prune chunk.
BUSY_TIMEOUT_MS = 5_000
#: FULL syncs the WAL at every commit: a 200 tells the agent to delete its
#: spooled copy, so an acknowledged batch must survive power loss too.
SYNCHRONOUS = "FULL"
#: Page cache per connection in KiB (negative = KiB in SQLite); 64 MiB keeps
#: the hot part of the indexes in memory on a 1M-event store.
CACHE_KIB = 65_536
#: Reader connections are one per worker thread (up to AnyIO's 40), so each
#: gets a small private cache; they share the OS page cache through mmap
#: instead, which bounds memory however many threads read at once.
READER_CACHE_KIB = 8_192
#: Bytes of the database file each connection maps: the shared page cache
#: readers rely on; 256 MiB covers the indexes of a multi-million-event store.
MMAP_BYTES = 256 * 1024 * 1024
#: The database and its WAL hold audit data: readable by the collector's user only.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
#: Files SQLite keeps beside the database in WAL mode.
SIDE_FILES = ("-wal", "-shm")
SQLITE_TYPES = {"id": "INTEGER PRIMARY KEY", "int": "INTEGER", "bool": "INTEGER", "blob": "BLOB"}


_log = get_logger("collector", backend="sqlite")


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _private_file(path: Path) -> None:
    """Create the database file 0600 (and its directory 0700 when we create it), whatever
    the umask; SQLite gives its WAL and shared-memory files the database file's mode."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    for created in missing:
        os.chmod(created, PRIVATE_DIR_MODE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def _unavailable(what: str, exc: sqlite3.Error) -> StorageUnavailableError:
    """A 503 naming SQLite's own cause (e.g. SQLITE_FULL: the disk is full)."""
    code = getattr(exc, "sqlite_errorname", type(exc).__name__)
    return StorageUnavailableError(f"SQLite {what} failed: {exc} ({code})")


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return self._conn.executemany(sql, rows).rowcount

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()


@dataclass(slots=True)
class _GroupItem:
    """One caller's work in a group commit, and what became of it."""

    work: Callable[[Tx], Any]
    result: Any = None
    error: BaseException | None = None
    done: bool = False


class SQLiteStorage(Storage):
    """Single-machine storage; safe to share between threads of one process."""

    backend = "sqlite"
    column_types = SQLITE_TYPES

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        _private_file(self.path)
        #: The file this storage opened: a file deleted or replaced under it
        #: must not be written (and acknowledged) any more.
        self._identity = _identity(self.path)
        self._write_lock = threading.Lock()
        # Write work queued for the next group commit (see write_grouped).
        self._group_lock = threading.Lock()
        self._group: list[_GroupItem] = []
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        for suffix in SIDE_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", PRIVATE_FILE_MODE)

    def check_file(self) -> None:
        """Raise :class:`StorageUnavailableError` when the database file is not the one opened."""
        try:
            now = _identity(self.path)
        except FileNotFoundError:
            raise StorageUnavailableError(
                f"SQLite database {self.path} was deleted while the collector ran; "
                "restart the collector (nothing more is written to the unlinked file)"
            ) from None
        if now != self._identity:
            raise StorageUnavailableError(
                f"SQLite database {self.path} was replaced by another file while the collector "
                "ran; restart the collector"
            )

    def health(self) -> None:
        self.check_file()
        super().health()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        except sqlite3.OperationalError as exc:
            raise StorageUnavailableError(
                f"cannot open SQLite database {self.path}: {exc}"
            ) from exc
        return conn

    def _lock_migrations(self, tx: Tx) -> None:
        """Nothing to add: BEGIN IMMEDIATE already holds the file's write lock."""

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTx]:
        with self._write_lock, self._locked_transaction() as tx:
            yield tx

    @contextmanager
    def _locked_transaction(self) -> Iterator[_SqliteTx]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); caller holds the write lock.

        BEGIN IMMEDIATE takes the write lock up front: no deadlock-prone
        read-to-write upgrade when another process writes too.
        """
        if self._closed:
            raise StorageUnavailableError("storage is closed")
        try:
            self._writer.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StorageUnavailableError(f"SQLite is busy: {exc}") from exc
        try:
            yield _SqliteTx(self._writer)
            # Checked last, inside the transaction: nothing is acknowledged
            # into a file that is no longer the database.
            self.check_file()
        except sqlite3.Error as exc:
            self._rollback()
            raise _unavailable("write", exc) from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self._writer.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _unavailable("commit", exc) from exc

    def _rollback(self) -> None:
        """Roll back if a transaction is still open (SQLite ends one itself on a full disk)."""
        if self._writer.in_transaction:
            try:
                self._writer.execute("ROLLBACK")
            except sqlite3.Error as exc:  # the original error is what the caller reports
                _log.warning("sqlite_rollback_failed", path=str(self.path), error=str(exc))

    def write_grouped(self, work: Callable[[Tx], _T]) -> _T:
        """Group commit: callers that queue while a commit runs share the next one.

        SQLite has one writer, so concurrent ingest requests wait for each
        other anyway; letting whoever holds the write lock run every queued
        request in one transaction (a savepoint each, so one failing request
        rolls back alone) pays the synchronous WAL commit once per group
        instead of once per request. Every caller returns only after the
        COMMIT that made its own work durable.
        """
        mine = _GroupItem(work)
        with self._group_lock:
            self._group.append(mine)
        with self._write_lock:
            if not mine.done:
                with self._group_lock:
                    batch, self._group = self._group, []
                self._commit_group(batch)
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[no-any-return]

    def _commit_group(self, batch: list[_GroupItem]) -> None:
        """Run ``batch`` in one transaction; caller holds the write lock."""
        try:
            with self._locked_transaction() as tx:
                for item in batch:
                    self._writer.execute("SAVEPOINT request")
                    try:
                        item.result = item.work(tx)
                    except sqlite3.Error as exc:
                        # An engine failure (a full disk, an I/O error) fails the
                        # whole group, named by its real cause.
                        raise _unavailable("write", exc) from exc
                    except Exception as exc:
                        self._writer.execute("ROLLBACK TO request")
                        item.error = exc
                    self._writer.execute("RELEASE request")
        except BaseException as exc:
            # Nothing of the group was committed: every member fails alike.
            failure: BaseException = exc
            if isinstance(exc, sqlite3.Error):  # a savepoint statement failed
                failure = _unavailable("commit", exc)
            for item in batch:
                item.error = failure
        finally:
            for item in batch:
                item.done = True

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._closed:
            raise StorageUnavailableError("storage is closed")
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StorageUnavailableError(f"SQLite is busy: {exc}") from exc
            raise

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
