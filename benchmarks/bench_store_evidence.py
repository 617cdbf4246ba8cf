"""The evidence benchmarks' stores: chained ingest batches, and a store for ``verify --db``.

1. :func:`ingest_batches`: chained events of ``SESSIONS`` sessions in
   batches of 100, then a seal per session (what ``evidence_cost.py`` feeds
   the storage layer with the evidence off and on).
2. :func:`verify_row`: ``boundary-audit verify --db`` as its own process on
   a SQLite store of N events built through the same ingest, with a
   checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.ingest_load import bench_identity
from boundary_audit.collector import open_storage
from boundary_audit.collector.model import EventIn, IngestBatch, RecordIn, SealIn, SessionBatch
from boundary_audit.evidence import public_key_pem
from boundary_audit.wire import chain

#: Sessions the ingest load is spread over (as bench_collector's ingest).
SESSIONS = 16
#: Events per ingest request, as the ingest goal states it.
EVENTS_PER_REQUEST = 100
#: Sessions per bulk ingest when building the verify store (10 x 1,000 events).
BULK_SESSIONS = 10
#: Events per session of the verify store (a long agent session).
STORE_SESSION_EVENTS = 1_000
T0 = 1_780_000_000_000_000_000
#: Runs of ``verify --db`` on the one store: the median is reported, so one
#: run slowed by another tenant on the host does not decide.
VERIFY_RUNS = 3
VERIFY_COMMAND = [sys.executable, "-m", "boundary_audit", "verify"]
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


def verify_row(total: int, runs: int = VERIFY_RUNS) -> tuple[int, float, list[float]]:
    """(events, seconds to build, events/s of each ``boundary-audit verify --db`` run) on ``total``.

    The store is built here (SQLite, through the storage layer, with a
    checkpoint); verify runs as an operator runs it, in a process of its own
    (its wall time, start-up included), once the builder has closed the store.
    """
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'store.db'}"
        key = Ed25519PrivateKey.generate()
        public = Path(tmp) / "collector.pub"
        public.write_bytes(public_key_pem(key))
        t0 = time.perf_counter()
        with open_storage(db_url) as storage:
            ident = bench_identity(storage)
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
        command = [*VERIFY_COMMAND, "--db", db_url, "--public-key", str(public), "--json"]
        rates, checked = [], 0
        for _ in range(runs):
            t0 = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            took = time.perf_counter() - t0
            if result.returncode != 0:
                raise RuntimeError(f"verify exited {result.returncode}: {result.stdout[:2000]}")
            checked = int(json.loads(result.stdout)["events_checked"])
            rates.append(checked / took)
        return checked, built, rates


__all__ = ["ingest_batches", "verify_row"]
