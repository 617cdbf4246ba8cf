"""Reading a store for ``verify`` and ``export``: plain values for :mod:`boundary_audit.evidence`.

Everything is read from the database as it is now (never trusting the
counters: they are checked too); the public key comes from the caller.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from boundary_audit.evidence import (
    EventRow,
    FindingKind,
    LeafError,
    MerkleTree,
    StoredDrop,
    StoredSeal,
    VerifyReport,
    leaf_hash,
    make_bundle,
    parse_checkpoint,
    parse_leaf,
    verify_store,
)
from boundary_audit.evidence.compare import latest_seal

from .chainstatus import stored_events
from .connect import SQLITE_PREFIX
from .storage import Storage
from .storelog import NO_SESSION

DEFAULT_KEY_FILE = "collector-signing.key"

#: A stored event's columns, in StoredEvent's order (LEFT JOIN: an event
#: inserted without a session row is still read, and named).
_EVENTS = (
    "SELECT e.sequence_number, e.time_ns, e.allowed, e.method, e.url, e.matched_rule,"
    " COALESCE(e.process_name, s.confined_process_name, ''), e.chain_digest"
    " FROM events e LEFT JOIN sessions s ON s.session_id = e.session_id"
    " WHERE e.session_id = ? ORDER BY e.sequence_number"
)
#: The same columns for ``verify``: the session's name read once (a scalar
#: subquery, no join per row; none when the event has no session row).
#: Parameters: the session id twice.
_VERIFY_EVENTS = (
    "SELECT sequence_number, time_ns, allowed, method, url, matched_rule,"
    " COALESCE(process_name,"
    " (SELECT confined_process_name FROM sessions WHERE session_id = ?), ''), chain_digest"
    " FROM events WHERE session_id = ? ORDER BY sequence_number"
)
_ALLOWED = operator.itemgetter(2)


def default_key_path(db_url: str | None = None) -> Path:
    """The collector's signing key: beside a SQLite database, else under the user's data dir."""
    if db_url and db_url.startswith(SQLITE_PREFIX) and len(db_url) > len(SQLITE_PREFIX):
        return Path(db_url[len(SQLITE_PREFIX) :]).parent / DEFAULT_KEY_FILE
    base = Path(platformdirs.user_data_dir("boundary-audit", appauthor=False))
    return base / DEFAULT_KEY_FILE


class _EventsBySession(Mapping[str, list[EventRow]]):
    """Every stored event, read one session at a time (a 1M-event store never sits in memory).

    Rows as the database returns them (:data:`EventRow`): no object per event.
    """

    def __init__(self, storage: Storage, sessions: list[str]) -> None:
        self._storage = storage
        self._sessions = sessions
        self._set = set(sessions)
        #: Per session read: (allowed, denied, highest number), for the counter check.
        self.tallies: dict[str, tuple[int, int, int | None]] = {}

    def __getitem__(self, session_id: str) -> list[EventRow]:
        if session_id not in self._set:
            raise KeyError(session_id)
        rows: list[EventRow] = self._storage.query(_VERIFY_EVENTS, (session_id, session_id))
        allowed = sum(map(bool, map(_ALLOWED, rows)))
        top = int(rows[-1][0]) if rows else None
        self.tallies[session_id] = (allowed, len(rows) - allowed, top)
        return rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: object) -> bool:
        return key in self._set


def _seal(row: tuple[Any, ...]) -> StoredSeal:
    made, sent, undelivered, spilled, sealed_at, head, count, dropped = row
    return StoredSeal(
        made, sent, undelivered, spilled, sealed_at, bytes(head) if head else b"", count,
        json.loads(dropped or "{}"),
    )  # fmt: skip


def read_seals(storage: Storage, session: str | None = None) -> dict[str, list[StoredSeal]]:
    where, params = (" WHERE session_id = ?", (session,)) if session else ("", ())
    out: dict[str, list[StoredSeal]] = {}
    for row in storage.query(
        "SELECT session_id, events_made, events_sent, undelivered, spilled, sealed_at_ns,"  # noqa: S608
        " chain_head, chain_count, dropped FROM session_seals" + where + " ORDER BY record_id",
        params,
    ):
        out.setdefault(row[0], []).append(_seal(row[1:]))
    return out


def read_drops(storage: Storage, session: str | None = None) -> dict[str, list[StoredDrop]]:
    key = "" if session == NO_SESSION else session
    where, params = (" WHERE r.session_id = ?", (key,)) if session else ("", ())
    counts: dict[str, dict[str, int]] = {}
    reports: dict[str, tuple[str, str, int]] = {}
    for rid, sid, source, time_ns, reason, n in storage.query(
        "SELECT r.report_id, r.session_id, r.source, r.time_ns, c.reason, c.count"  # noqa: S608
        " FROM drop_reports r LEFT JOIN drop_counts c ON c.report_id = r.report_id" + where,
        params,
    ):
        reports[rid] = (sid or NO_SESSION, source, time_ns)
        if reason is not None:
            counts.setdefault(rid, {})[reason] = int(n)
    out: dict[str, list[StoredDrop]] = {}
    for rid, (sid, source, time_ns) in sorted(reports.items()):
        out.setdefault(sid, []).append(StoredDrop(rid, source, time_ns, counts.get(rid, {})))
    return out


def read_leaves(storage: Storage) -> list[bytes]:
    """The log, in index order; a missing index (a deleted leaf) shows as an empty leaf."""
    rows = storage.query("SELECT leaf_index, leaf FROM log_leaves ORDER BY leaf_index")
    if rows and rows[-1][0] == len(rows) - 1:
        return [bytes(r[1]) for r in rows]
    out = [b""] * (rows[-1][0] + 1 if rows else 0)
    for index, leaf in rows:
        out[index] = bytes(leaf)
    return out


def read_checkpoints(storage: Storage) -> list[str]:
    """Every stored checkpoint, oldest first."""
    return [r[0] for r in storage.query("SELECT text FROM checkpoints ORDER BY id")]


@dataclass(frozen=True, slots=True)
class StoreCounts:
    events: int
    sessions: int


def count_store(storage: Storage) -> StoreCounts:
    ((events,),) = storage.query("SELECT COUNT(*) FROM events")
    ((sessions,),) = storage.query("SELECT COUNT(*) FROM sessions")
    return StoreCounts(int(events), int(sessions))


def verify_db(
    storage: Storage,
    public_key: Ed25519PublicKey,
    *,
    session: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """The whole store (or one session, the log always whole) against its log and checkpoints."""
    where, params = (" WHERE session_id = ?", (session,)) if session else ("", ())
    sql = "SELECT DISTINCT session_id FROM events" + where  # noqa: S608 - a fixed clause
    ids = [r[0] for r in storage.query(sql, params)]
    events = _EventsBySession(storage, sorted(ids))
    seals = read_seals(storage, session)
    checkpoints = read_checkpoints(storage)
    report = verify_store(
        events,
        seals,
        read_leaves(storage),
        checkpoints[-1] if checkpoints else None,
        public_key,
        drops=read_drops(storage, session),
        sessions=[session] if session else None,
        progress=progress,
        earlier=checkpoints[:-1],
    )
    _check_counters(storage, report, seals, events.tallies, session)
    return report


def _check_counters(
    storage: Storage,
    report: VerifyReport,
    seals: Mapping[str, list[StoredSeal]],
    tallies: Mapping[str, tuple[int, int, int | None]],
    session: str | None,
) -> None:
    """Each session row's counters against its stored events and its seals."""
    where, params = (" WHERE s.session_id = ?", (session,)) if session else ("", ())
    rows = storage.query(
        "SELECT s.session_id, s.allowed_count, s.denied_count, s.max_seq, s.pruned_count,"  # noqa: S608
        " s.seal_events_made, s.seal_events_sent, s.seal_undelivered, s.seal_spilled,"
        " s.sealed_at_ns, s.seal_chain_head, s.seal_chain_count, s.seal_dropped"
        " FROM sessions s" + where,
        params,
    )
    for row in rows:
        sid, allowed, denied, max_seq, pruned = row[:5]
        seal_cols = row[5:13]
        have_allowed, have_denied, have_max = tallies.get(sid, (0, 0, None))
        if not pruned and (allowed, denied) != (have_allowed, have_denied):
            report.add(
                FindingKind.COUNTERS_ALTERED,
                sid,
                None,
                f"counters say {allowed} allowed, {denied} denied; "
                f"{have_allowed} and {have_denied} are stored",
            )
        if have_max is not None and max_seq < have_max:
            report.add(
                FindingKind.COUNTERS_ALTERED, sid, None,
                f"highest number {max_seq} on the session, {have_max} stored",
            )  # fmt: skip
        latest = latest_seal(seals.get(sid, []))
        shown = _seal(seal_cols) if seal_cols[0] is not None else None
        if shown != latest and not (
            latest is not None
            and shown is not None
            and shown in [s for s in seals[sid] if s.sealed_at_ns == latest.sealed_at_ns]
        ):
            report.add(
                FindingKind.COUNTERS_ALTERED,
                sid,
                None,
                "the seal shown on the session differs from its latest stored seal",
            )


def export_bundle(storage: Storage, session: str, checkpoint: str) -> bytes:
    """One session's bundle (events, seals, drops, its leaves with proofs) under ``checkpoint``."""
    leaves = read_leaves(storage)
    mine = []
    for index, data in enumerate(leaves):
        try:
            if parse_leaf(data).session_id == session:
                mine.append((index, data))
        except LeafError:
            continue  # not the session's (verify --db names malformed leaves)
    tree = MerkleTree(leaf_hash(d) for d in leaves)
    bundle = make_bundle(
        session,
        events=stored_events(storage.query(_EVENTS, (session,))),
        seals=read_seals(storage, session).get(session, []),
        drops=read_drops(storage, session).get(session, []),
        tree=tree,
        leaves=mine,
        checkpoint=parse_checkpoint(checkpoint),
    )
    return bundle


__all__ = [
    "count_store",
    "default_key_path",
    "export_bundle",
    "read_checkpoints",
    "read_leaves",
    "verify_db",
]
