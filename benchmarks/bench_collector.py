"""Collector benchmark: ingest throughput and query latency, SQLite and PostgreSQL side by side.

Run from the repository root::

    .venv/bin/python benchmarks/bench_collector.py [--quick]

1. Events/s stored from protobuf requests of 100 events, posted over HTTP by
   concurrent clients to a collector process (the real ``boundary-audit
   collector`` command, audit log lines on, written to a file), for each
   backend. The storage layer alone (same batches, no HTTP) is measured next
   to it, to show where the time goes.
2. OTLP export (SIEM): events/s the exporter ships from a store of 100k
   events to a loopback OTLP/HTTP receiver, each backend, with the mapping
   to protobuf alone beside it.
3. Query latency p50/p99 on a store of 1M events (built through the storage
   layer in large batches, not over HTTP): one session's events, one host's
   events, denied only; each through the storage layer and through the HTTP
   API.

Goals (from the issue): >= 50k events/s into SQLite; session query p50 < 50 ms
on 1M events. PostgreSQL runs with its durable defaults (fsync on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
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
from boundary_audit.collector.model import INGEST_PATH, EventIn, IngestBatch, SessionBatch
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
from boundary_audit.wire import IngestRequest

#: Events per ingest request, as the issue's goal states it.
EVENTS_PER_REQUEST = 100
#: Concurrent HTTP clients: a handful of agents posting at once; more only
#: queue behind SQLite's single writer.
CLIENTS = 4
#: Sessions the ingest load is spread over (agents each have a few).
INGEST_SESSIONS = 16
#: Events per storage call when building the query store: large batches make
#: 1M events quick to load.
BULK_BATCH_EVENTS = 10_000
#: Shape of the query store: sessions x events each, one request in five
#: denied. Each session reaches its own few hosts out of a large pool, most
#: requests going to the first of them (a coding agent talks mostly to its
#: forge and package registries).
STORE_SESSIONS = 1_000
HOST_POOL = 500
HOSTS_PER_SESSION = 8
DENIED_RATIO = 0.2
#: Timed runs per query kind (p99 needs at least ~100).
QUERY_RUNS = 200
#: Page size of every timed query (the API's default).
PAGE = 100
LISTEN_TIMEOUT_SECONDS = 30
#: Table width in columns: the query table has six columns of figures.
CONSOLE_WIDTH = 120
COLLECTOR_COMMAND = [sys.executable, "-m", "boundary_audit", "collector"]


def _session_hosts(rng: random.Random) -> list[str]:
    return [f"host{rng.randrange(HOST_POOL)}.example" for _ in range(HOSTS_PER_SESSION)]


def _events(
    seq0: int, n: int, rng: random.Random, now: int, hosts: list[str] | None = None
) -> list[EventIn]:
    hosts = hosts or _session_hosts(rng)
    out = []
    for seq in range(seq0, seq0 + n):
        # Geometric-ish skew: the first host takes about half the requests.
        host = hosts[min(int(rng.expovariate(0.7)), len(hosts) - 1)]
        allowed = rng.random() >= DENIED_RATIO
        out.append(
            EventIn(
                sequence_number=seq,
                time_ns=now + seq * 1_000_000,
                allowed=allowed,
                method="GET",
                url=f"https://{host}/path/{seq}?q=1",
                host=host,
                matched_rule=f"domain={host}" if allowed else "",
            )
        )
    return out


def _request_bodies(total_events: int, rng: random.Random) -> list[bytes]:
    sessions = [str(uuid.uuid4()) for _ in range(INGEST_SESSIONS)]
    hosts = {sid: _session_hosts(rng) for sid in sessions}
    next_seq = dict.fromkeys(sessions, 0)
    now = time.time_ns()
    bodies = []
    for i in range(total_events // EVENTS_PER_REQUEST):
        sid = sessions[i % INGEST_SESSIONS]
        request = IngestRequest(batch_id=str(uuid.uuid4()))
        report = request.logs.add(session_id=sid, confined_process_name="bench")
        for e in _events(next_seq[sid], EVENTS_PER_REQUEST, rng, now, hosts[sid]):
            log = report.logs.add(allowed=e.allowed, sequence_number=e.sequence_number)
            log.time.FromNanoseconds(e.time_ns)
            log.http_request.method = e.method
            log.http_request.url = e.url
            log.http_request.matched_rule = e.matched_rule
        next_seq[sid] += EVENTS_PER_REQUEST
        bodies.append(request.SerializeToString())
    return bodies


def listening_url(log: Path, proc: subprocess.Popen[bytes]) -> str:
    """The URL a collector process announces in its log ``log``, once it listens."""
    deadline = time.monotonic() + LISTEN_TIMEOUT_SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        # Only the first lines matter; audit lines follow once load starts.
        with log.open("rb") as f:
            head = f.read(65536).decode(errors="replace")
        match = re.search(r'"url": "(http://[^"]+)"[^\n]*collector_listening', head)
        if match:
            return match.group(1)
        time.sleep(0.05)
    raise RuntimeError(f"collector did not start: {log.read_text()[:2000]}")


@contextmanager
def _collector_process(db_url: str, *extra: str) -> Iterator[str]:
    log = Path(tempfile.mkstemp(prefix="bench-collector-", suffix=".log")[1])
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*COLLECTOR_COMMAND, "--db", db_url, "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        yield listening_url(log, proc)
    finally:
        proc.terminate()
        proc.wait()
        log.unlink(missing_ok=True)


async def _post_all(url: str, token: str, bodies: list[bytes]) -> float:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-protobuf"}
    queue = list(reversed(bodies))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            response = await client.post(url + INGEST_PATH, content=body)
            if response.status_code != 200:
                raise RuntimeError(f"ingest answered {response.status_code}: {response.text}")

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(CLIENTS)))
        return time.perf_counter() - start


def _storage_only(storage: Storage, ident: Identity, total_events: int) -> float:
    rng = random.Random(7)
    now = time.time_ns()
    sessions = [str(uuid.uuid4()) for _ in range(INGEST_SESSIONS)]
    hosts = {sid: _session_hosts(rng) for sid in sessions}
    batches = []
    for n in range(total_events // EVENTS_PER_REQUEST):
        sid = sessions[n % INGEST_SESSIONS]
        seq0 = (n // INGEST_SESSIONS) * EVENTS_PER_REQUEST
        events = _events(seq0, EVENTS_PER_REQUEST, rng, now, hosts[sid])
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
    bodies = _request_bodies(total_events, random.Random(1))
    with _collector_process(db_url, *extra) as url:
        http_s = asyncio.run(_post_all(url, token, bodies))
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
        pending.append(SessionBatch(sid, "bench", _events(0, per_session, rng, now)))
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
    args = parser.parse_args()
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
