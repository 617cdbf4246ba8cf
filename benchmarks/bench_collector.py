"""Collector benchmark: ingest throughput and query latency, SQLite and PostgreSQL side by side.

Run from the repository root::

    .venv/bin/python benchmarks/bench_collector.py [--quick] [--evidence-only]

1. Events/s stored from protobuf requests of 100 events, posted over HTTP by
   concurrent clients to a collector process (the real ``boundary-audit
   collector`` command, audit log lines on, written to a file), for each
   backend. The storage layer alone (same batches, no HTTP) is measured next
   to it, to show where the time goes.
2. OTLP export (SIEM): events/s the exporter ships from a store of 100k
   events to a loopback OTLP/HTTP receiver, each backend, with the mapping
   to protobuf alone beside it.
3. Evidence cost (issue 12's target: at most 15% slower): the same
   chained requests to a collector with ``--no-evidence`` and without it,
   alternated; CPU µs per stored event of the collector process, over HTTP
   and through the storage layer alone (``evidence_cost.py``); then
   ``verify --db`` events/s on a SQLite store of 1M chained events.
4. Query latency p50/p99 on a store of 1M events (built through the storage
   layer in large batches, not over HTTP): one session's events, one host's
   events, denied only; each through the storage layer and through the HTTP
   API.

Goals (from the issue): >= 50k events/s into SQLite; session query p50 < 50 ms
on 1M events. PostgreSQL runs with its durable defaults (fsync on).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from boundary_audit.collector import EventQuery, Identity, Storage, open_storage
from boundary_audit.collector.model import IngestBatch, SessionBatch
from boundary_audit.collector.otlp import (
    DEFAULT_BATCH_SIZE,
    Exporter,
    OtlpMetrics,
    OtlpOptions,
    Source,
    export_request,
)
from boundary_audit.collector.otlp.mapping import resource
from boundary_audit.collector.testing import throwaway_postgres

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: benchmarks.*
from benchmarks import evidence_cost
from benchmarks.evidence_cost import sqlite_databases
from benchmarks.ingest_load import (
    CLIENTS,
    EVENTS_PER_REQUEST,
    INGEST_SESSIONS,
    collector_process,
    make_events,
    post_all,
    request_bodies,
    session_hosts,
)

#: Events per storage call when building the query store: large batches make
#: 1M events quick to load.
BULK_BATCH_EVENTS = 10_000
#: Shape of the query store: sessions x events each (hosts and denied share
#: as the ingest load's, ingest_load.py).
STORE_SESSIONS = 1_000
#: Timed runs per query kind (p99 needs at least ~100).
QUERY_RUNS = 200
#: Page size of every timed query (the API's default).
PAGE = 100
#: Table width in columns: the query table has six columns of figures.
CONSOLE_WIDTH = 120


def _storage_only(storage: Storage, ident: Identity, total_events: int) -> float:
    rng = random.Random(7)
    now = time.time_ns()
    sessions = [str(uuid.uuid4()) for _ in range(INGEST_SESSIONS)]
    hosts = {sid: session_hosts(rng) for sid in sessions}
    batches = []
    for n in range(total_events // EVENTS_PER_REQUEST):
        sid = sessions[n % INGEST_SESSIONS]
        seq0 = (n // INGEST_SESSIONS) * EVENTS_PER_REQUEST
        events = make_events(seq0, EVENTS_PER_REQUEST, rng, now, hosts[sid])
        batches.append(IngestBatch("b", [SessionBatch(sid, "bench", events)], []))
    start = time.perf_counter()
    for batch in batches:
        storage.ingest(batch, ident)
    return time.perf_counter() - start


@dataclass
class IngestRow:
    backend: str
    http_events_per_s: float
    storage_events_per_s: float


def bench_ingest(backend: str, db_url: str, total_events: int, *extra: str) -> IngestRow:
    with open_storage(db_url) as storage:
        token = storage.create_token("bench")
        ident = storage.authenticate(token)
        assert ident is not None
        storage_s = _storage_only(storage, ident, total_events)
    bodies = request_bodies(total_events, random.Random(1))
    with collector_process(db_url, *extra) as collector:
        http_s = post_all(collector.url, token, bodies)
    return IngestRow(backend, total_events / http_s, total_events / storage_s)


def build_store(storage: Storage, total_events: int) -> tuple[list[str], list[str]]:
    token = storage.create_token("bench-store")
    ident = storage.authenticate(token)
    assert ident is not None
    rng = random.Random(3)
    per_session = total_events // STORE_SESSIONS
    sessions = [str(uuid.uuid4()) for _ in range(STORE_SESSIONS)]
    now = time.time_ns()
    pending: list[SessionBatch] = []
    count = 0
    for sid in sessions:
        pending.append(SessionBatch(sid, "bench", make_events(0, per_session, rng, now)))
        count += per_session
        if count >= BULK_BATCH_EVENTS:
            storage.ingest(IngestBatch("bulk", pending, []), ident)
            pending, count = [], 0
    if pending:
        storage.ingest(IngestBatch("bulk", pending, []), ident)
    used = sorted(
        {h for batch in (storage.query("SELECT DISTINCT host FROM events"),) for (h,) in batch}
    )
    return sessions, used


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def _time(fn: Callable[[int], object], runs: int) -> tuple[float, float]:
    samples = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def bench_queries(
    backend: str, db_url: str, total_events: int, console: Console
) -> list[tuple[str, str, float, float, float, float]]:
    from boundary_audit.collector import AppSettings, CollectorServer
    from boundary_audit.collector.client import event_request

    rows = []
    with open_storage(db_url) as storage:
        start = time.perf_counter()
        sessions, hosts = build_store(storage, total_events)
        load_s = time.perf_counter() - start
        console.print(
            f"[dim]{backend}: loaded {total_events:,} events in {load_s:.1f} s "
            f"({total_events / load_s:,.0f}/s through the storage layer)[/dim]"
        )
        rng = random.Random(11)
        picks_s = [rng.choice(sessions) for _ in range(QUERY_RUNS)]
        picks_h = [rng.choice(hosts) for _ in range(QUERY_RUNS)]
        # Sequence numbers in every session run 0..per_session-1 (--quick has fewer than runs).
        per_session = total_events // STORE_SESSIONS
        # The HTTP side asks what HttpSource would ask for the same query.
        kinds: list[tuple[str, Callable[[int], EventQuery]]] = [
            ("by session", lambda i: EventQuery(session_id=picks_s[i], limit=PAGE)),
            ("by host", lambda i: EventQuery(host=picks_h[i], limit=PAGE)),
            (
                "denied only",
                lambda i: EventQuery(allowed=False, session_id=picks_s[i], limit=PAGE),
            ),
            (
                "URL substring, all sessions",
                lambda i: EventQuery(url_contains=f"/path/{i % per_session}?", limit=PAGE),
            ),
            ("denied, all sessions", lambda i: EventQuery(allowed=False, limit=PAGE)),
        ]
        settings = AppSettings(require_read_auth=False, emit_event_logs=False)
        with (
            CollectorServer(storage, settings) as server,
            httpx.Client(base_url=server.url, timeout=60) as client,
        ):
            for name, make_query in kinds:

                def direct(i: int, make: Callable[[int], EventQuery] = make_query) -> object:
                    page = storage.query_events(make(i))
                    assert page.items, "query returned nothing: the store is not what we built"
                    return page

                def over_http(i: int, make: Callable[[int], EventQuery] = make_query) -> object:
                    path, params = event_request(make(i))
                    response = client.get(path, params=params)
                    assert response.status_code == 200, response.text
                    return response

                d50, d99 = _time(direct, QUERY_RUNS)
                h50, h99 = _time(over_http, QUERY_RUNS)
                rows.append((backend, name, d50, d99, h50, h99))
    return rows


#: Records per OTLP request in the export benchmark (the exporter's default).
OTLP_BATCH = DEFAULT_BATCH_SIZE


@dataclass(frozen=True, slots=True)
class OtlpRow:
    backend: str
    export_events_per_s: float
    mapping_events_per_s: float


@contextmanager
def _otlp_sink() -> Iterator[str]:
    """A loopback OTLP/HTTP receiver that reads each body and answers 200 (no decoding)."""

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/logs"
    finally:
        server.shutdown()
        server.server_close()


def bench_otlp(backend: str, db_url: str, total_events: int) -> OtlpRow:
    """Events/s the OTLP exporter ships from a full store to a local receiver.

    The exporter's own cycle (read past the cursor, map, POST, commit the
    cursor) run back to back; next to it the mapping alone (rows to protobuf
    bytes), to show where the time goes.
    """
    with open_storage(db_url) as storage:
        build_store(storage, total_events)
        source = Source(storage)
        with source.claim() as claim:
            rows = source.events(claim, source.horizon(), OTLP_BATCH)
        res = resource()
        start = time.perf_counter()
        for _ in range(total_events // len(rows)):
            export_request(rows, [], res).SerializeToString()
        mapping_s = time.perf_counter() - start
        mapped = len(rows) * (total_events // len(rows))
        with _otlp_sink() as url:
            exporter = Exporter(
                storage,
                OtlpOptions(endpoint=url, batch_size=OTLP_BATCH),
                OtlpMetrics(CollectorRegistry()),
            )
            sent = 0
            start = time.perf_counter()
            while (cycle := exporter.run_once()).sent or cycle.delay is not None:
                sent += cycle.sent
            export_s = time.perf_counter() - start
    assert sent == total_events, f"exported {sent} of {total_events}"
    return OtlpRow(backend, sent / export_s, mapped / mapping_s)


def _table(title: str, text_columns: list[str], number_columns: list[str]) -> Table:
    """A results table: text columns first, then figures aligned right."""
    table = Table(title=title)
    for column in text_columns:
        table.add_column(column)
    for column in number_columns:
        table.add_column(column, justify="right")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--ingest-only", action="store_true", help="only the ingest table (no 1M-event store)"
    )
    parser.add_argument("--otlp-only", action="store_true", help="only the OTLP export table")
    parser.add_argument(
        "--evidence-only",
        action="store_true",
        help="only the evidence cost table (ingest with the store log and chain check off / on)",
    )
    args = parser.parse_args()
    evidence_events = 20_000 if args.quick else evidence_cost.EVENTS
    evidence_rounds = 1 if args.quick else evidence_cost.ROUNDS
    otlp_events = 20_000 if args.quick else 100_000
    ingest_events = 20_000 if args.quick else 200_000
    store_events = 100_000 if args.quick else 1_000_000
    # Wide enough for the tables when printing to a file or pipe.
    console = Console(width=CONSOLE_WIDTH)
    console.print(
        f"[bold]boundary-audit collector benchmark[/bold] — {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp,
        throwaway_postgres(durable=True) as pg,
    ):
        evidence_cost.report(
            console,
            [("sqlite", sqlite_databases(Path(tmp))), ("postgresql", pg.new_database)],
            events=evidence_events,
            rounds=evidence_rounds,
            store_events=store_events,
            instruction_events=evidence_cost.QUICK_INSTRUCTION_EVENTS
            if args.quick
            else evidence_cost.INSTRUCTION_EVENTS,
        )
        if args.evidence_only:
            return 0
        otlp = [
            bench_otlp("sqlite", f"sqlite:///{tmp}/otlp.db", otlp_events),
            bench_otlp("postgresql", pg.new_database(), otlp_events),
        ]
        table = _table(
            f"OTLP export: {otlp_events:,} stored events to a loopback receiver, "
            f"requests of {OTLP_BATCH}",
            ["backend"],
            ["export events/s", "mapping only, events/s"],
        )
        for o in otlp:
            table.add_row(
                o.backend, f"{o.export_events_per_s:,.0f}", f"{o.mapping_events_per_s:,.0f}"
            )
        console.print(table)
        if args.otlp_only:
            return 0
        ingest = [
            bench_ingest("sqlite", f"sqlite:///{tmp}/ingest.db", ingest_events),
            bench_ingest("postgresql", pg.new_database(), ingest_events),
            bench_ingest(
                "sqlite, --no-event-log",
                f"sqlite:///{tmp}/ingest-quiet.db",
                ingest_events,
                "--no-event-log",
            ),
        ]
        table = _table(
            f"Ingest: {ingest_events:,} events in requests of {EVENTS_PER_REQUEST}, "
            f"{CLIENTS} concurrent clients",
            ["backend"],
            ["HTTP events/s", "storage layer only, events/s"],
        )
        for row in ingest:
            table.add_row(
                row.backend, f"{row.http_events_per_s:,.0f}", f"{row.storage_events_per_s:,.0f}"
            )
        console.print(table)
        if args.ingest_only:
            return 0
        query_rows = bench_queries("sqlite", f"sqlite:///{tmp}/store.db", store_events, console)
        query_rows += bench_queries("postgresql", pg.new_database(), store_events, console)
        table = _table(
            f"Query latency on {store_events:,} events "
            f"(first page of {PAGE}, {QUERY_RUNS} runs each)",
            ["backend", "query"],
            ["storage p50 ms", "storage p99 ms", "HTTP p50 ms", "HTTP p99 ms"],
        )
        for backend, name, d50, d99, h50, h99 in query_rows:
            table.add_row(backend, name, f"{d50:.2f}", f"{d99:.2f}", f"{h50:.2f}", f"{h99:.2f}")
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
