"""The storage interface and the SQL shared by both backends.

Both backends run the same statements (written with ``?`` placeholders; the
PostgreSQL backend rewrites them), so behaviour differs only where the engines
do: connection handling, locking and migrations. All methods are blocking;
the HTTP app calls them from a thread pool.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import platformdirs

from .chainstatus import update_chain_status
from .model import (
    DropIn,
    EventIn,
    Identity,
    IngestBatch,
    IngestOutcome,
    Scope,
    SessionBatch,
    SessionOwnershipError,
    StorageUnavailableError,
    StoredEvent,
    TokenInfo,
)
from .reads import Reads
from .records import store_record
from .schema import MIGRATIONS

_T = TypeVar("_T")

#: Token format: prefix (recognisable in leaked-secret scanners) + 32 random
#: bytes, urlsafe base64 (43 chars): 256 bits, beyond any guessing.
BEARER_PREFIX = "ba_"
TOKEN_RANDOM_BYTES = 32
#: Hex chars of the token hash shown as the token's id (list/revoke); 48 bits
#: makes collisions between a deployment's tokens practically impossible.
TOKEN_ID_CHARS = 12
#: Sequence numbers further apart than this are probed for duplicates with
#: separate range reads, so a batch mixing old stragglers and new events never
#: scans a long session's whole index; closer ones share one read.
CLUSTER_GAP = 64

#: Tries to create-or-lock a session row (see _store_session).
SESSION_ROW_ATTEMPTS = 2

DEFAULT_DB_FILE = "collector.db"


def default_db_url() -> str:
    """``sqlite:///`` + a file under the user's data dir (SQLAlchemy-style URL)."""
    base = Path(platformdirs.user_data_dir("boundary-audit", appauthor=False))
    return f"sqlite:///{base / DEFAULT_DB_FILE}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return BEARER_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)


class Tx(Protocol):
    """The few operations ingest needs inside one transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...
    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class Storage(Reads, ABC):
    """Durable, idempotent storage of events, sessions, drop reports and tokens."""

    #: Reads a session row and, where the engine needs it, locks it until commit.
    select_session_sql = (
        "SELECT agent, workspace, allowed_count, denied_count, max_seq, confined_process_name,"
        " pruned_count FROM sessions WHERE session_id = ?"
    )
    #: Substring test that is case-sensitive in both engines.
    substring_fn = "instr"
    #: Name used in metrics and logs.
    backend = ""

    #: Engine spellings of the ``{id}``, ``{int}`` and ``{bool}`` column types in MIGRATIONS.
    column_types: ClassVar[dict[str, str]] = {}

    # -- backend hooks -------------------------------------------------------------
    @abstractmethod
    def _lock_migrations(self, tx: Tx) -> None:
        """Serialise migrations across processes, inside the migration transaction."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction: commit on success, roll back on any exception."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read-only statement outside any write transaction."""

    def write_grouped(self, work: Callable[[Tx], _T]) -> _T:
        """Run ``work`` in a write transaction, all or nothing, durable on return.

        Backends whose writers serialise (SQLite) override this to let
        concurrent callers share one commit; the default is one transaction each.
        """
        with self.transaction() as tx:
            return work(tx)

    @abstractmethod
    def close(self) -> None: ...

    def health(self) -> None:
        """Raise :class:`StorageUnavailableError` (with the reason) unless the store can serve."""
        self.query("SELECT 1")

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def migrate(self) -> list[int]:
        """Apply missing schema migrations in one transaction; return the versions applied."""
        applied_now: list[int] = []
        with self.transaction() as tx:
            self._lock_migrations(tx)
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, applied_ns BIGINT NOT NULL)"
            )
            applied = {r[0] for r in tx.all("SELECT version FROM schema_migrations")}
            for version, statements in MIGRATIONS:
                if version in applied:
                    continue
                for statement in statements:
                    tx.execute(statement.format(**self.column_types))
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_ns) VALUES (?, ?)",
                    (version, time.time_ns()),
                )
                applied_now.append(version)
        return applied_now

    # -- tokens ----------------------------------------------------------------------
    def create_token(self, agent: str, workspace: str = "", scope: Scope = "agent") -> str:
        """Store the hash of a fresh token and return the token (shown once)."""
        if not agent:
            raise ValueError("a token needs an agent name")
        token = new_token()
        digest = hash_token(token)
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO tokens (token_id, token_hash, agent, workspace, scope, created_ns)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (digest[:TOKEN_ID_CHARS], digest, agent, workspace, scope, time.time_ns()),
            )
        return token

    def authenticate(self, token: str) -> Identity | None:
        """The identity of a live token, or ``None`` (unknown, malformed or revoked)."""
        if not token.startswith(BEARER_PREFIX):
            return None
        rows = self.query(
            "SELECT token_id, agent, workspace, scope FROM tokens"
            " WHERE token_hash = ? AND revoked_ns IS NULL",
            (hash_token(token),),
        )
        if not rows:
            return None
        token_id, agent, workspace, scope = rows[0]
        return Identity(token_id, agent, workspace, scope)

    def list_tokens(self) -> list[TokenInfo]:
        rows = self.query(
            "SELECT token_id, agent, workspace, scope, created_ns, revoked_ns FROM tokens"
            " ORDER BY created_ns, token_id"
        )
        return [TokenInfo(*row) for row in rows]

    def revoke_token(self, token_id: str) -> bool:
        """Revoke by id; ``False`` when no live token has that id."""
        with self.transaction() as tx:
            changed = tx.execute(
                "UPDATE tokens SET revoked_ns = ? WHERE token_id = ? AND revoked_ns IS NULL",
                (time.time_ns(), token_id),
            )
        return changed > 0

    # -- ingest ----------------------------------------------------------------------
    def ingest(
        self, batch: IngestBatch, identity: Identity, received_ns: int | None = None
    ) -> IngestOutcome:
        """Store a validated request in one transaction; duplicates are counted, not stored."""
        received = time.time_ns() if received_ns is None else received_ns
        if not batch.sessions and not batch.drops and not batch.records:
            return IngestOutcome()  # nothing to store: no transaction, no commit
        return self.write_grouped(lambda tx: self._ingest(tx, batch, identity, received))

    def _ingest(
        self, tx: Tx, batch: IngestBatch, identity: Identity, received_ns: int
    ) -> IngestOutcome:
        out = IngestOutcome()
        by_id = {s.session_id: s for s in batch.sessions}
        # Sorted, so concurrent replicas lock session rows in one order (no deadlock).
        session_ids = sorted(
            set(by_id)
            | {d.session_id for d in batch.drops if d.session_id}
            | {r.session_id for r in batch.records}
        )
        names = {r.session_id: r.confined_process_name for r in batch.records}
        touched: set[str] = set()
        for session_id in session_ids:
            stored_before = out.stored
            self._store_session(
                tx,
                session_id=session_id,
                batch=by_id.get(session_id),
                name=by_id[session_id].confined_process_name
                if session_id in by_id
                else names.get(session_id, ""),
                identity=identity,
                received_ns=received_ns,
                out=out,
            )
            if out.stored != stored_before:
                touched.add(session_id)
        for drop in batch.drops:
            self._store_drop(tx, drop, identity, received_ns, out)
        for record in batch.records:
            new = store_record(tx, record, received_ns)
            out.records += new
            if new and record.seal is not None:
                touched.add(record.session_id)
        # Sessions whose stored events or seal changed: their chain verdict too.
        for session_id in sorted(touched):
            update_chain_status(tx, session_id)
        return out

    def _store_session(
        self,
        tx: Tx,
        *,
        session_id: str,
        batch: SessionBatch | None,
        name: str,
        identity: Identity,
        received_ns: int,
        out: IngestOutcome,
    ) -> None:
        """Create or lock the session row, store its new events, update its counters.

        ``batch`` is ``None`` for a session known only from a drop report or a record.
        """
        row = None
        # Twice at most: on PostgreSQL, retention may delete the row between
        # our INSERT (a no-op, the row existed) and our locking SELECT.
        for _ in range(SESSION_ROW_ATTEMPTS):
            out.new_sessions += tx.execute(
                "INSERT INTO sessions (session_id, agent, workspace, confined_process_name,"
                " first_seen_ns, last_seen_ns) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id) DO NOTHING",
                (session_id, identity.agent, identity.workspace, name, received_ns, received_ns),
            )
            row = tx.one(self.select_session_sql, (session_id,))
            if row is not None:
                break
        if row is None:
            raise StorageUnavailableError(f"session {session_id} row keeps vanishing; retry")
        agent, workspace, allowed_count, denied_count, max_seq, stored_name, pruned = row
        if (agent, workspace) != (identity.agent, identity.workspace):
            raise SessionOwnershipError(
                f"session_id {session_id} belongs to another agent or workspace"
            )
        new: list[EventIn] = []
        if batch is not None and batch.events:
            new = self._new_events(tx, session_id, batch.events)
            # The session's name once this request is stored (it is set once).
            final_name = stored_name or name
            self._insert_events(tx, session_id, new, received_ns, name, final_name)
            out.stored += len(new)
            out.duplicates += len(batch.events) - len(new)
            out.stored_events.extend(StoredEvent(session_id, e) for e in new)
        allowed_new = sum(1 for e in new if e.allowed)
        before = _missing(max_seq, allowed_count + denied_count + pruned)
        new_max = max(max_seq, new[-1].sequence_number) if new else max_seq
        after = _missing(new_max, allowed_count + denied_count + pruned + len(new))
        out.gap_delta += after - before
        tx.execute(
            "UPDATE sessions SET allowed_count = allowed_count + ?,"
            " denied_count = denied_count + ?, max_seq = ?,"
            " last_seen_ns = CASE WHEN last_seen_ns > ? THEN last_seen_ns ELSE ? END,"
            " confined_process_name = CASE WHEN confined_process_name = ''"
            " THEN ? ELSE confined_process_name END"
            " WHERE session_id = ?",
            (
                allowed_new,
                len(new) - allowed_new,
                new_max,
                received_ns,
                received_ns,
                name,
                session_id,
            ),
        )

    def _new_events(self, tx: Tx, session_id: str, events: list[EventIn]) -> list[EventIn]:
        """Events of a sorted batch not yet stored (and first of any in-request repeats).

        Reading the existing numbers is race-free: the session row is locked
        (PostgreSQL ``FOR UPDATE``; SQLite's single writer) for the transaction.
        """
        seen: set[int] = set()
        for low, high in _clusters(sorted({e.sequence_number for e in events})):
            rows = tx.all(
                "SELECT sequence_number FROM events WHERE session_id = ?"
                " AND sequence_number BETWEEN ? AND ?",
                (session_id, low, high),
            )
            seen.update(r[0] for r in rows)
        new: list[EventIn] = []
        for event in events:
            if event.sequence_number not in seen:
                seen.add(event.sequence_number)
                new.append(event)
        return new

    def _insert_events(  # noqa: PLR0917 - a private helper of _store_session
        self,
        tx: Tx,
        session_id: str,
        events: list[EventIn],
        received_ns: int,
        batch_name: str,
        session_name: str,
    ) -> None:
        """Insert ``events``; each keeps its report's process name unless it is the session's.

        NULL ``process_name`` means "the session's": only written once the
        session's name is set for good (it never changes once non-empty).
        """
        if not events:
            return
        rows = []
        for e in events:
            own = batch_name if e.process_name is None else e.process_name
            kept = None if own == session_name and session_name else own
            rows.append(
                (
                    session_id,
                    e.sequence_number,
                    e.time_ns,
                    received_ns,
                    e.allowed,
                    e.method,
                    e.url,
                    e.host,
                    e.matched_rule,
                    e.chain_digest,
                    kept,
                    e.flags,
                )
            )
        # ON CONFLICT stays as a safety net: the pre-check already removed duplicates.
        tx.executemany(
            "INSERT INTO events (session_id, sequence_number, time_ns, received_ns, allowed,"
            " method, url, host, matched_rule, chain_digest, process_name, flags)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (session_id, sequence_number) DO NOTHING",
            rows,
        )

    def _store_drop(
        self, tx: Tx, drop: DropIn, identity: Identity, received_ns: int, out: IngestOutcome
    ) -> None:
        inserted = tx.execute(
            "INSERT INTO drop_reports (report_id, session_id, source, agent, workspace,"
            " time_ns, received_ns) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (report_id) DO NOTHING",
            (
                drop.report_id,
                drop.session_id,
                drop.source,
                identity.agent,
                identity.workspace,
                drop.time_ns or received_ns,
                received_ns,
            ),
        )
        if not inserted:
            return
        out.drop_reports += 1
        if drop.dropped:
            tx.executemany(
                "INSERT INTO drop_counts (report_id, reason, count) VALUES (?, ?, ?)",
                [(drop.report_id, reason, n) for reason, n in sorted(drop.dropped.items())],
            )
        for reason, n in drop.dropped.items():
            out.dropped_by_reason[reason] = out.dropped_by_reason.get(reason, 0) + n
        if drop.session_id:
            tx.execute(
                "UPDATE sessions SET dropped_count = dropped_count + ? WHERE session_id = ?",
                (sum(drop.dropped.values()), drop.session_id),
            )


def _clusters(seqs: list[int]) -> Iterator[tuple[int, int]]:
    """(low, high) ranges covering sorted ``seqs``, split where they are far apart."""
    low = prev = seqs[0]
    for seq in seqs[1:]:
        if seq - prev > CLUSTER_GAP:
            yield low, prev
            low = seq
        prev = seq
    yield low, prev


def _missing(max_seq: int, count: int) -> int:
    return 0 if max_seq < 0 else max(0, max_seq + 1 - count)
