"""PostgreSQL backend, for several collector replicas sharing one database."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from .model import InvalidRequestError, StorageUnavailableError
from .storage import Storage, Tx

#: Connections per collector process: the thread pool runs at most this many
#: DB calls at once; a few more than the in-flight ingest limit would not help
#: (one session's rows serialise anyway) and would cost server memory.
POOL_MAX_SIZE = 8
#: How long a request waits for a free connection (or a reconnect) before 503.
POOL_TIMEOUT_SECONDS = 5.0
#: A statement running longer than this is cancelled and the request gets a
#: 503 (retry later) instead of hanging: an ingest transaction takes
#: milliseconds, a 1M-event filter well under a second.
STATEMENT_TIMEOUT_MS = 15_000
#: Seconds to wait for a TCP connection to the server before giving up.
CONNECT_TIMEOUT_SECONDS = 5
#: Key of the advisory lock that serialises migrations across replicas
#: (arbitrary, fixed: ASCII "BAUDMIGR").
MIGRATION_LOCK_KEY = 0x424155444D494752
POSTGRES_TYPES = {
    "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "int": "BIGINT",
    "bool": "BOOLEAN",
    "blob": "BYTEA",
}


@functools.lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """Shared SQL uses ``?``; psycopg wants ``%s`` (no literal ``%`` appears in it)."""
    return sql.replace("?", "%s")


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(_pg(sql), params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        with self._conn.cursor() as cur:
            cur.executemany(_pg(sql), rows)
            return cur.rowcount

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self._conn.execute(_pg(sql), params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(_pg(sql), params).fetchall()


class PostgresStorage(Storage):
    """Storage in PostgreSQL through a connection pool; safe across processes."""

    backend = "postgresql"
    select_session_sql = (
        "SELECT agent, workspace, allowed_count, denied_count, max_seq, confined_process_name,"
        " pruned_count, seal_chain_head IS NOT NULL, chain_run_count, chain_run_last,"
        " chain_run_head, chain_run_bad FROM sessions WHERE session_id = ? FOR UPDATE"
    )
    #: The store log's one row, locked until commit: replicas append one after another.
    select_log_sql = "SELECT frontier FROM log_state WHERE id = 1 FOR UPDATE"
    #: Swap the log's state and insert its one new leaf in one round trip
    #: (the leaf only if the swap matched: the row count says which).
    fused_append_sql = (
        "WITH swap AS (UPDATE log_state SET size = ?, frontier = ?"
        " WHERE id = 1 AND frontier = ? RETURNING 1)"
        " INSERT INTO log_leaves (leaf_index, leaf)"
        " SELECT ?::bigint, ?::bytea WHERE EXISTS (SELECT 1 FROM swap)"
    )
    substring_fn = "strpos"
    column_types = POSTGRES_TYPES

    def __init__(self, url: str, *, pool_timeout: float = POOL_TIMEOUT_SECONDS) -> None:
        self.url = url
        _probe(url)
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            timeout=pool_timeout,
            open=False,
            name="boundary-audit-collector",
            kwargs={
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": "boundary-audit-collector",
            },
        )
        try:
            self._pool.open(wait=True, timeout=pool_timeout)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise StorageUnavailableError(f"cannot connect to PostgreSQL: {exc}") from exc

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise StorageUnavailableError(f"no PostgreSQL connection available: {exc}") from exc
        except psycopg.OperationalError as exc:
            raise StorageUnavailableError(f"PostgreSQL is unavailable: {exc}") from exc

    def _lock_migrations(self, tx: Tx) -> None:
        # Two replicas starting together: the second waits here, then sees
        # the versions the first applied.
        tx.one("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))

    @contextmanager
    def transaction(self) -> Iterator[_PgTx]:
        try:
            with self._connection() as conn, conn.transaction():
                yield _PgTx(conn)
        except psycopg.errors.DataError as exc:
            # A value the server will not take as given (ingest escapes what it
            # knows of): the client's data, so a 400 it must not retry, not a 500.
            raise InvalidRequestError(f"the database refused a value: {exc}") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(_pg(sql), params).fetchall()

    def close(self) -> None:
        self._pool.close()


def _probe(url: str) -> None:
    """One direct connection before the pool, so a bad URL fails at once with its
    cause (bad syntax, unknown host, connection refused, authentication) instead
    of the pool's "initialization incomplete" after its timeout."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"bad PostgreSQL URL: {_first_line(exc)}") from exc
    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
    except psycopg.Error as exc:
        raise StorageUnavailableError(f"cannot connect to PostgreSQL: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
