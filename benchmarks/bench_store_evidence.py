"""The collector's evidence on a real database: ingest with it off and on, and ``verify --db``.

Imported by ``bench_evidence.py --store`` (one entry point for the evidence
benchmarks); kept apart so each file has one job.

1. Ingest through the storage layer (the same batches both times, on a
   fresh database each): chained events of ``SESSIONS`` sessions in
   batches of 100, then a seal per session, with ``record_evidence`` off
   (what the collector did before the store log) and on (store-log leaves
   and frontier in each transaction, each sealed session's chain
   recomputed). SQLite, and PostgreSQL when a throwaway server can start.
2. ``verify_db`` (what ``boundary-audit verify --db`` runs) on a SQLite
   store of N events built through the same ingest, with a checkpoint.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from boundary_audit.collector import Storage, open_storage
from boundary_audit.collector.model import EventIn, IngestBatch, RecordIn, SealIn, SessionBatch
from boundary_audit.collector.testing import PostgresUnavailableError, throwaway_postgres
from boundary_audit.collector.trail import verify_db
from boundary_audit.wire import chain

#: Sessions the ingest load is spread over (as bench_collector's ingest).
SESSIONS = 16
#: Events per ingest request, as the ingest goal states it.
EVENTS_PER_REQUEST = 100
#: Sessions per bulk ingest when building the verify store (10 x 1,000 events).
BULK_SESSIONS = 10
#: Events per session of the verify store (a long agent session).
STORE_SESSION_EVENTS = 1_000
#: Allowed slowdown of ingest with the evidence on (the issue's target).
GOAL_SLOWDOWN = 0.15
T0 = 1_780_000_000_000_000_000
URL = "https://github.com/boundary-audit/boundary-audit/pull/1234/files?diff=split&w=1"


def _session(sid: str, n: int) -> tuple[list[EventIn], bytes]:
    """n chained events of ``sid`` and the chain's head."""
    head = chain.genesis(sid)
    out = []
    for i in range(n):
        allowed = i % 5 != 0
        rule = "domain=github.com" if allowed else ""
        url = f"{URL}&i={i}"
        head = chain.next_digest(
            head, chain.ChainedEvent(i, T0 + i, allowed, "GET", url, rule, "bench")
        )
        out.append(EventIn(i, T0 + i, allowed, "GET", url, "github.com", rule, head))
    return out, head


def _seal(sid: str, n: int, head: bytes) -> RecordIn:
    return RecordIn(
        str(uuid.uuid4()), sid, None, SealIn(n, n, {}, 0, 0, T0 + n, head, n), T0, "bench"
    )


def ingest_batches(total: int) -> list[IngestBatch]:
    per = total // SESSIONS
    sessions = {str(uuid.UUID(int=i + 1)): _session(str(uuid.UUID(int=i + 1)), per)
                for i in range(SESSIONS)}  # fmt: skip
    batches = []
    for start in range(0, per, EVENTS_PER_REQUEST):
        for sid, (events, _) in sessions.items():
            chunk = events[start : start + EVENTS_PER_REQUEST]
            batches.append(IngestBatch("b", [SessionBatch(sid, "bench", chunk)], []))
    for sid, (events, head) in sessions.items():
        batches.append(IngestBatch("s", [], [], [_seal(sid, len(events), head)]))
    return batches


def _rate(storage: Storage, batches: list[IngestBatch], total: int, evidence: bool) -> float:
    storage.record_evidence = evidence
    ident = storage.authenticate(storage.create_token("bench"))
    assert ident is not None
    t0 = time.perf_counter()
    for batch in batches:
        storage.ingest(batch, ident)
    return total / (time.perf_counter() - t0)


@contextmanager
def _databases() -> Iterator[list[tuple[str, Callable[[], str]]]]:
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
        counter = iter(range(1_000_000))
        dbs: list[tuple[str, Callable[[], str]]] = [
            ("sqlite", lambda: f"sqlite:///{Path(tmp) / f'db{next(counter)}.db'}")
        ]
        try:
            with throwaway_postgres() as pg:
                dbs.append(("postgresql", pg.new_database))
                yield dbs
                return
        except PostgresUnavailableError:
            pass
        yield dbs


def ingest_rows(total: int, runs: int) -> list[tuple[str, float, float]]:
    """(backend, events/s off, events/s on): the best of ``runs`` each, alternating."""
    batches = ingest_batches(total)
    rows = []
    with _databases() as dbs:
        for backend, new_db in dbs:
            best = {False: 0.0, True: 0.0}
            for _ in range(runs):
                for evidence in (False, True):
                    with open_storage(new_db()) as storage:
                        best[evidence] = max(
                            best[evidence], _rate(storage, batches, total, evidence)
                        )
            rows.append((backend, best[False], best[True]))
    return rows


def verify_row(total: int) -> tuple[int, float, float]:
    """(events, seconds to build, events/s of verify_db) on a SQLite store of ``total``."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp,
        open_storage(f"sqlite:///{Path(tmp) / 'store.db'}") as storage,
    ):
        ident = storage.authenticate(storage.create_token("bench"))
        assert ident is not None
        key = Ed25519PrivateKey.generate()
        t0 = time.perf_counter()
        for s in range(0, max(1, total // STORE_SESSION_EVENTS), BULK_SESSIONS):
            sessions, records = [], []
            for i in range(s, s + BULK_SESSIONS):
                sid = str(uuid.UUID(int=i + 1))
                events, head = _session(sid, STORE_SESSION_EVENTS)
                sessions.append(SessionBatch(sid, "bench", events))
                records.append(_seal(sid, len(events), head))
            storage.ingest(IngestBatch("bulk", sessions, [], records), ident)
        storage.checkpoint(key)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = verify_db(storage, key.public_key())
        took = time.perf_counter() - t0
        assert report.ok, report.failures()[:5]
        return report.events_checked, built, report.events_checked / took


__all__ = ["GOAL_SLOWDOWN", "ingest_rows", "verify_row"]
