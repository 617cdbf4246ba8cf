"""A local OTLP/HTTP logs receiver: a real HTTP server that decodes with opentelemetry-proto.

It answers each POST with the next scripted status (then 200) and keeps every
accepted record, so tests can check nothing is missing or doubled.
"""

from __future__ import annotations

import collections
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord


def value_of(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def attributes(record: LogRecord) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in record.attributes}


class Receiver:
    """``with Receiver() as r: ... r.url ...``; ``r.script(503, 429)`` answers the next POSTs."""

    def __init__(self) -> None:
        self.keys: collections.Counter[tuple[str, int]] = collections.Counter()
        self.drop_records: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self.statuses: collections.deque[tuple[int, dict[str, str], bytes]] = collections.deque()
        self.lock = threading.Lock()
        #: After this many accepted requests, the next one is kept but not
        #: answered until ``release`` is set (``held`` says it is waiting).
        self.hold_after: int | None = None
        self.accepted = 0
        self.held = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.handle(self, body)

            def log_message(self, *args: object) -> None:
                pass  # the test's output stays readable

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/logs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _keep(self, records: Any) -> None:
        """Count each event's identity and keep each drop report (caller holds the lock)."""
        for r in records:
            if r.event_name == "boundary.request":
                a = {kv.key: kv.value for kv in r.attributes}
                key = (
                    a["boundary.session.id"].string_value,
                    a["boundary.sequence_number"].int_value,
                )
                self.keys[key] += 1
            else:
                self.drop_records.append(attributes(r))

    def script(self, *answers: int | tuple[int, dict[str, str], bytes]) -> None:
        with self.lock:
            for a in answers:
                self.statuses.append(a if isinstance(a, tuple) else (a, {}, b""))

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        with self.lock:
            self.requests += 1
            self.headers.append({k.lower(): v for k, v in h.headers.items()})
            status, headers, reply = self.statuses.popleft() if self.statuses else (200, {}, b"")
            hold = False
            if 200 <= status < 300:
                assert h.headers["Content-Type"] == "application/x-protobuf"
                request = ExportLogsServiceRequest()
                request.ParseFromString(body)
                for rl in request.resource_logs:
                    self.resources.append(
                        {kv.key: value_of(kv.value) for kv in rl.resource.attributes}
                    )
                    for sl in rl.scope_logs:
                        self._keep(sl.log_records)
                reply = reply or ExportLogsServiceResponse().SerializeToString()
                self.accepted += 1
                hold = self.hold_after is not None and self.accepted > self.hold_after
        if 200 <= status < 300 and hold:
            self.held.set()
            self.release.wait()
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Type", "application/x-protobuf")
            h.send_header("Content-Length", str(len(reply)))
            h.end_headers()
            h.wfile.write(reply)
        except OSError:
            pass  # the exporter was killed while this request was held

    def event_keys(self) -> collections.Counter[tuple[str, int]]:
        """(session id, sequence number) of each accepted event record, with its count."""
        with self.lock:
            return collections.Counter(self.keys)

    def distinct(self) -> int:
        """How many different events were accepted (cheap: for polling)."""
        with self.lock:
            return len(self.keys)

    def drops(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.drop_records)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
