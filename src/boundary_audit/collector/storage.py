"""The storage interface and the SQL shared by both backends.

Both backends run the same statements (written with ``?`` placeholders; the
PostgreSQL backend rewrites them), so behaviour differs only where the engines
do: connection handling, locking and migrations. All methods are blocking;
the HTTP app calls them from a thread pool.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import platformdirs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from boundary_audit import evidence
from boundary_audit.evidence import SignedCheckpoint, drop_leaf, seal_leaf
from boundary_audit.evidence.running import ChainRun, EventRow, batch_and_run_rows
from boundary_audit.logs import get_logger
from boundary_audit.wire.chain import DIGEST_SIZE

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
from .overview import Overview
from .reads import Reads
from .records import store_record, stored_seal
from .schema import MIGRATIONS
from .storelog import NO_SESSION, KnownFrontier, append_leaves, take_checkpoint

_T = TypeVar("_T")
_log = get_logger("collector", task="ingest")

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


#: Under the user data dir: where ``quickstart`` keeps its services' files.
QUICKSTART_DIR = "quickstart"


def data_dir() -> Path:
    """The user's data dir for boundary-audit (``~/.local/share/boundary-audit``)."""
    return Path(platformdirs.user_data_dir("boundary-audit", appauthor=False))


def default_db_url() -> str:
    """``sqlite:///`` + a file under the user's data dir (SQLAlchemy-style URL)."""
    return f"sqlite:///{data_dir() / DEFAULT_DB_FILE}"


def quickstart_db_path(base: Path | None = None) -> Path:
    """The database ``quickstart`` writes (under ``base``, else the user data dir)."""
    return (base or data_dir()) / QUICKSTART_DIR / DEFAULT_DB_FILE


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


class Storage(Reads, Overview, ABC):
    """Durable, idempotent storage of events, sessions, drop reports and tokens."""

    #: Reads a session row and, where the engine needs it, locks it until commit.
    select_session_sql = (
        "SELECT agent, workspace, allowed_count, denied_count, max_seq, confined_process_name,"
        " pruned_count, seal_chain_head IS NOT NULL, chain_run_count, chain_run_last,"
        " chain_run_head, chain_run_bad FROM sessions WHERE session_id = ?"
    )
    #: Reads the store log's frontier and, where the engine needs it, locks it until commit.
    select_log_sql = "SELECT frontier FROM log_state WHERE id = 1"
    #: The engine's one-statement swap-and-insert of log leaves (storelog.append_leaves).
    fused_append_sql: str | None = None
    #: Substring test that is case-sensitive in both engines.
    substring_fn = "instr"
    #: Name used in metrics and logs.
    backend = ""
    #: Keep the evidence (store log leaves, chain verdicts) at ingest. Only
    #: benchmarks turn it off, to measure what it costs; a store written
    #: without it fails ``verify``.
    record_evidence = True
    #: Chain digests that were not 32 bytes, stored without them (metrics read it).
    digests_dropped = 0

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

    # -- store log ---------------------------------------------------------------------
    def checkpoint(
        self, key: Ed25519PrivateKey, now_ns: int | None = None, *, force: bool = False
    ) -> SignedCheckpoint | None:
        """Sign and store a checkpoint of the store log if it grew (or ``force``)."""
        now = time.time_ns() if now_ns is None else now_ns
        with self.transaction() as tx:
            return take_checkpoint(tx, self.select_log_sql, key, now, force=force)

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
        leaves: list[bytes] = []
        for session_id in session_ids:
            stored_before = out.stored
            chained = self._store_session(
                tx,
                session_id=session_id,
                batch=by_id.get(session_id),
                name=by_id[session_id].confined_process_name
                if session_id in by_id
                else names.get(session_id, ""),
                identity=identity,
                received_ns=received_ns,
                out=out,
                leaves=leaves,
            )
            if chained and out.stored != stored_before:
                touched.add(session_id)  # new events of a sealed chain: recheck it
        for drop in batch.drops:
            self._store_drop(tx, drop, identity, received_ns, out, leaves)
        for record in batch.records:
            new = store_record(tx, record, received_ns)
            out.records += new
            if new and record.seal is not None:
                touched.add(record.session_id)
                leaves.append(seal_leaf(record.session_id, stored_seal(record, received_ns)))
        if not self.record_evidence:
            return out
        # Sessions whose stored events or seal changed: their chain verdict too.
        for session_id in sorted(touched):
            update_chain_status(tx, session_id)
        # Last, so every transaction takes the log's lock after its session rows.
        append_leaves(
            tx, self.select_log_sql, leaves, self.known_frontier, fused_sql=self.fused_append_sql
        )
        return out

    @functools.cached_property
    def known_frontier(self) -> KnownFrontier:
        """The log state this process last wrote: appends skip reading it while it holds."""
        return KnownFrontier()

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
        leaves: list[bytes],
    ) -> bool:
        """Create or lock the session row, store its new events, update its counters.

        ``batch`` is ``None`` for a session known only from a drop report or a
        record. True when the session already has a chained seal.
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
        agent, workspace, allowed_count, denied_count, max_seq, stored_name, pruned = row[:7]
        chained = row[7]
        run = ChainRun(row[8], row[9], bytes(row[10]) if row[10] else b"", row[11])
        if (agent, workspace) != (identity.agent, identity.workspace):
            raise SessionOwnershipError(
                f"session_id {session_id} belongs to another agent or workspace"
            )
        new: list[EventIn] = []
        if batch is not None and batch.events:
            new = self._new_events(tx, session_id, batch.events)
            # The session's name once this request is stored (it is set once).
            final_name = stored_name or name
            logged = self._insert_events(tx, session_id, new, received_ns, name, final_name)
            if logged:
                leaf, run = batch_and_run_rows(session_id, logged, run)
                leaves.append(leaf)
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
            " THEN ? ELSE confined_process_name END,"
            " chain_run_count = ?, chain_run_last = ?, chain_run_head = ?, chain_run_bad = ?"
            " WHERE session_id = ?",
            (
                allowed_new,
                len(new) - allowed_new,
                new_max,
                received_ns,
                received_ns,
                name,
                run.count,
                run.last,
                run.head or None,
                run.bad,
                session_id,
            ),
        )
        return bool(chained)

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
    ) -> list[EventRow]:
        """Insert ``events``; each keeps its report's process name unless it is the session's.

        NULL ``process_name`` means "the session's": only written once the
        session's name is set for good (it never changes once non-empty).
        """
        if not events:
            return []
        rows = []
        logged: list[EventRow] = []
        for e in events:
            own = batch_name if e.process_name is None else e.process_name
            kept = None if own == session_name and session_name else own
            digest = e.chain_digest
            if digest and len(digest) != DIGEST_SIZE:
                # Not a SHA-256 digest (a broken sender): the event is kept
                # without it (its sealed chain then fails), logged and counted.
                _log.warning(
                    "chain_digest_dropped",
                    session_id=session_id,
                    sequence_number=e.sequence_number,
                    digest_bytes=len(digest),
                )
                digest = None
                self.digests_dropped += 1
            if self.record_evidence:
                logged.append(
                    (
                        e.sequence_number,
                        e.time_ns,
                        e.allowed,
                        e.method,
                        e.url,
                        e.matched_rule,
                        own,
                        digest or b"",
                    )
                )
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
                    digest,
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
        return logged

    def _store_drop(  # noqa: PLR0917 - a private helper of _ingest
        self,
        tx: Tx,
        drop: DropIn,
        identity: Identity,
        received_ns: int,
        out: IngestOutcome,
        leaves: list[bytes],
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
        stored = evidence.StoredDrop(
            drop.report_id, drop.source, drop.time_ns or received_ns, dict(drop.dropped)
        )
        leaves.append(drop_leaf(drop.session_id or NO_SESSION, stored))
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
