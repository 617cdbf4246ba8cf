"""A test double of the collector's HTTP ingest endpoint (for the agent's tests).

A real HTTP server on loopback that answers as the collector does, checked
against the real one by ``tests/contract``: bearer-token check before the
body is read (401), content type and body cap (413 beyond
:data:`~boundary_audit.collector.MAX_INGEST_BODY_BYTES`), all-or-nothing
validation by the collector's own :func:`~boundary_audit.collector.parse_ingest_request`
(400 naming the field), dedupe on ``(session_id, sequence_number)`` and
``report_id``; session records (``IngestRequest.sessions``: opens and seals)
kept once per ``record_id``. On top of that, what a real collector cannot be told to do:
scripted failures (429/503 with ``Retry-After``, 500, ...), a smaller body cap,
a token changed at run time, and a record of every request so tests can check
what arrived, in which order and how often.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from boundary_audit.agent.config import INGEST_CONTENT_TYPE, INGEST_PATH
from boundary_audit.collector import (
    MAX_INGEST_BODY_BYTES,
    IngestBatch,
    InvalidRequestError,
    parse_ingest_request,
)
from boundary_audit.collector.model import DropIn, EventIn
from boundary_audit.wire import IngestRequest, SessionRecord

from .ports import LOOPBACK

#: Token the double accepts unless a test gives another: shaped like a real
#: one (``ba_`` and 43 URL-safe characters).
TEST_TOKEN = "ba_" + "t" * 43
#: How often the server thread checks for :meth:`CollectorDouble.stop`; the
#: standard library's 0.5 s made every test that stops the double (each
#: teardown, each simulated outage) wait half a second for nothing.
SHUTDOWN_POLL_S = 0.02


@dataclass
class Scripted:
    """An answer the double gives instead of handling the next request."""

    status: int
    retry_after: str | None = None


@dataclass
class RequestRecord:
    time: float
    status: int
    batch_id: str
    events: int
    drops: int


@dataclass
class CollectorState:
    token: str
    body_limit: int = MAX_INGEST_BODY_BYTES
    events: dict[tuple[str, int], EventIn] = field(default_factory=dict)
    #: Per session, sequence numbers in the order they were first stored.
    order: dict[str, list[int]] = field(default_factory=dict)
    drop_reports: dict[str, DropIn] = field(default_factory=dict)
    #: Session records (opens and seals) by record_id, first one kept.
    session_records: dict[str, SessionRecord] = field(default_factory=dict)
    #: Session records received again under a record_id already kept.
    duplicate_records: int = 0
    duplicates: int = 0
    requests: list[RequestRecord] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def store(
        self, batch: IngestBatch, records: list[SessionRecord] | None = None
    ) -> dict[str, int]:
        """Keep what is new, as the collector's storage does; its counts for the answer."""
        stored = dups = new_drops = new_records = 0
        with self.lock:
            for record in records or []:
                if record.record_id in self.session_records:
                    self.duplicate_records += 1
                else:
                    self.session_records[record.record_id] = record
                    new_records += 1
            for session in batch.sessions:
                for event in session.events:
                    key = (session.session_id, event.sequence_number)
                    if key in self.events:
                        dups += 1
                        continue
                    self.events[key] = event
                    self.order.setdefault(session.session_id, []).append(event.sequence_number)
                    stored += 1
            for drop in batch.drops:
                if drop.report_id not in self.drop_reports:
                    self.drop_reports[drop.report_id] = drop
                    new_drops += 1
            self.duplicates += dups
        return {
            "stored": stored,
            "duplicates": dups,
            "drop_reports": new_drops,
            "session_records": new_records,
        }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the double records requests itself; stderr noise helps nobody

    def _reply(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _refusal(self) -> tuple[int, dict[str, Any]] | None:
        """What the collector answers from the headers alone, before reading the body."""
        st = self.server.state
        if self.headers.get("Authorization") != f"Bearer {st.token}":
            return 401, {
                "error": "unauthorized",
                "detail": "missing, unknown or revoked agent token",
            }
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != INGEST_CONTENT_TYPE:
            detail = f"Content-Type must be {INGEST_CONTENT_TYPE}"
            return 400, {"error": "invalid_request", "detail": detail}
        declared = self.headers.get("Content-Length", "0")
        if not declared.isdigit():
            return 400, {"error": "invalid_request", "detail": "Content-Length is not a number"}
        if int(declared) > st.body_limit:
            detail = f"body exceeds {st.body_limit} bytes"
            return 413, {"error": "too_large", "detail": detail, "limit": st.body_limit}
        return None

    def do_POST(self) -> None:
        st = self.server.state
        if self.path != INGEST_PATH:
            self._reply(404, {"error": "not_found"})
            return
        refusal = self._refusal()
        if refusal is not None:
            status, answer = refusal
            self._record(status, "", 0, 0)
            self._reply(status, answer)
            self.close_connection = True  # the body was not read: the connection is spent
            return
        declared = self.headers.get("Content-Length", "0")
        body = self.rfile.read(int(declared))
        with st.lock:
            scripted = st.script.pop(0) if st.script else None
        if scripted is not None:
            headers = {"Retry-After": scripted.retry_after} if scripted.retry_after else {}
            self._record(scripted.status, "", 0, 0)
            self._reply(scripted.status, {"error": "scripted"}, headers)
            return
        try:
            batch = parse_ingest_request(body)
        except InvalidRequestError as exc:
            self._record(400, "", 0, 0)
            self._reply(400, {"error": "invalid_request", "detail": exc.detail})
            return
        counts = st.store(batch, list(IngestRequest.FromString(body).sessions))
        self._record(200, batch.batch_id, batch.event_count, len(batch.drops))
        self._reply(200, {"batch_id": batch.batch_id, **counts})

    def _record(self, status: int, batch_id: str, events: int, drops: int) -> None:
        st = self.server.state
        with st.lock:
            st.requests.append(RequestRecord(time.monotonic(), status, batch_id, events, drops))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, state: CollectorState) -> None:
        super().__init__((LOOPBACK, port), _Handler)
        self.state = state


class CollectorDouble:
    """Start/stop-able ingest endpoint; keeps its port and records across restarts."""

    def __init__(self, token: str = TEST_TOKEN) -> None:
        self.state = CollectorState(token=token)
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._server = _Server(self.port, self.state)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(SHUTDOWN_POLL_S,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> CollectorDouble:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what tests look at ------------------------------------------------

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        with self.state.lock:
            self.state.script.extend(Scripted(status, retry_after) for _ in range(times))

    def event_count(self) -> int:
        with self.state.lock:
            return len(self.state.events)

    def keys(self) -> set[tuple[str, int]]:
        with self.state.lock:
            return set(self.state.events)

    def keys_of(self, session: str) -> set[int]:
        """Sequence numbers stored for ``session``."""
        with self.state.lock:
            return {seq for s, seq in self.state.events if s == session}

    def order(self, session: str) -> list[int]:
        with self.state.lock:
            return list(self.state.order.get(session, []))

    def drops(self) -> list[DropIn]:
        with self.state.lock:
            return list(self.state.drop_reports.values())

    def drop_totals(self) -> dict[tuple[str, str, str], int]:
        """(source, session_id, reason) -> events, summed over reports."""
        out: dict[tuple[str, str, str], int] = {}
        for report in self.drops():
            for reason, n in report.dropped.items():
                key = (report.source, report.session_id, reason)
                out[key] = out.get(key, 0) + n
        return out

    def session_records(self, session: str | None = None) -> list[SessionRecord]:
        """Session records kept (of one session), in arrival order."""
        with self.state.lock:
            return [
                r
                for r in self.state.session_records.values()
                if session is None or r.session_id == session
            ]

    def seals(self, session: str) -> list[SessionRecord]:
        return [r for r in self.session_records(session) if r.HasField("seal")]

    def statuses(self) -> list[int]:
        with self.state.lock:
            return [r.status for r in self.state.requests]

    def requests(self) -> list[RequestRecord]:
        with self.state.lock:
            return list(self.state.requests)


__all__ = [
    "TEST_TOKEN",
    "CollectorDouble",
    "CollectorState",
    "RequestRecord",
    "Scripted",
]
