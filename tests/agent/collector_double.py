"""A test double of the collector's HTTP ingest endpoint (not of the agent).

A real HTTP server on 127.0.0.1 that implements the contract in the ingest
API brief: bearer-token check before the body is read, body cap (413),
all-or-nothing validation (400 naming the problem), dedupe on
``(session_id, sequence_number)`` and ``report_id``, and scripted failures
(429/503 with ``Retry-After``, 500, ...). It records every request so tests
can check what arrived, in which order, and how often.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from boundary_audit.wire import DropReport, IngestRequest

INGEST_PATH = "/api/v1/boundary-logs"
#: The real collector's cap (MAX_INGEST_BODY_BYTES).
DEFAULT_BODY_LIMIT = 4 * 1024 * 1024
#: Token the double accepts unless a test changes it.
TEST_TOKEN = "ba_" + "t" * 43


@dataclass
class Scripted:
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
    body_limit: int = DEFAULT_BODY_LIMIT
    events: dict[tuple[str, int], Any] = field(default_factory=dict)
    #: Per session, sequence numbers in the order they were first stored.
    order: dict[str, list[int]] = field(default_factory=dict)
    drop_reports: dict[str, DropReport] = field(default_factory=dict)
    duplicates: int = 0
    requests: list[RequestRecord] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _validate(req: IngestRequest) -> str | None:
    for i, logs in enumerate(req.logs):
        try:
            uuid.UUID(logs.session_id)
        except ValueError:
            return f"logs[{i}].session_id is not a UUID"
        for j, log in enumerate(logs.logs):
            if log.sequence_number < 0:
                return f"logs[{i}].logs[{j}].sequence_number is negative"
    for i, drop in enumerate(req.drops):
        if not drop.report_id:
            return f"drops[{i}].report_id is empty"
        if drop.source not in ("boundary", "agent"):
            return f"drops[{i}].source is {drop.source!r}"
    return None


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

    def do_POST(self) -> None:
        st = self.server.state
        if self.path != INGEST_PATH:
            self._reply(404, {"error": "not_found"})
            return
        if self.headers.get("Authorization") != f"Bearer {st.token}":
            self._record(401, "", 0, 0)
            self._reply(401, {"error": "unauthorized", "detail": "bad token"})
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length", "0"))
        if length > st.body_limit:
            self._record(413, "", 0, 0)
            self._reply(413, {"error": "too_large", "limit": st.body_limit})
            self.close_connection = True
            return
        body = self.rfile.read(length)
        with st.lock:
            scripted = st.script.pop(0) if st.script else None
        if scripted is not None:
            headers = {"Retry-After": scripted.retry_after} if scripted.retry_after else {}
            self._record(scripted.status, "", 0, 0)
            self._reply(scripted.status, {"error": "scripted"}, headers)
            return
        req = IngestRequest()
        try:
            req.ParseFromString(body)
        except Exception:
            self._reply(400, {"error": "invalid_request", "detail": "body is not an IngestRequest"})
            return
        problem = _validate(req)
        n_events = sum(len(x.logs) for x in req.logs)
        if problem is not None:
            self._record(400, req.batch_id, n_events, len(req.drops))
            self._reply(400, {"error": "invalid_request", "detail": problem})
            return
        stored = dups = new_drops = 0
        with st.lock:
            for logs in req.logs:
                for log in logs.logs:
                    key = (logs.session_id, log.sequence_number)
                    if key in st.events:
                        dups += 1
                        continue
                    st.events[key] = log
                    st.order.setdefault(logs.session_id, []).append(log.sequence_number)
                    stored += 1
            for drop in req.drops:
                if drop.report_id not in st.drop_reports:
                    st.drop_reports[drop.report_id] = drop
                    new_drops += 1
            st.duplicates += dups
        self._record(200, req.batch_id, n_events, len(req.drops))
        self._reply(
            200,
            {
                "batch_id": req.batch_id,
                "stored": stored,
                "duplicates": dups,
                "drop_reports": new_drops,
            },
        )

    def _record(self, status: int, batch_id: str, events: int, drops: int) -> None:
        st = self.server.state
        with st.lock:
            st.requests.append(RequestRecord(time.monotonic(), status, batch_id, events, drops))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, state: CollectorState) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
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
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = _Server(self.port, self.state)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

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

    def order(self, session: str) -> list[int]:
        with self.state.lock:
            return list(self.state.order.get(session, []))

    def drops(self) -> list[DropReport]:
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

    def statuses(self) -> list[int]:
        with self.state.lock:
            return [r.status for r in self.state.requests]

    def requests(self) -> list[RequestRecord]:
        with self.state.lock:
            return list(self.state.requests)
