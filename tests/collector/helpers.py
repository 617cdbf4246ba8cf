"""Helpers of the collector tests: ingest requests, posting them, collector processes."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from boundary_audit.collector.model import INGEST_PATH
from boundary_audit.wire import IngestRequest, chain
from tests.support import eventually, stop_process
from tests.support.processes import cli_argv

PB = {"Content-Type": "application/x-protobuf"}
#: Seconds one ingest request may take on a loaded machine (it takes milliseconds).
POST_TIMEOUT_S = 30.0
#: Between checks that are HTTP requests to the server under test: each costs
#: it CPU, and on two cores polling faster slows what the test waits for.
HTTP_POLL_INTERVAL_S = 0.2
#: Seconds a collector subprocess may take to announce its port.
PROCESS_START_TIMEOUT_S = 30.0


def make_request(
    session_id: str | None = None,
    seqs: range | list[int] = range(3),
    *,
    url: str = "https://example.com/path",
    allowed: bool | None = None,
    process: str = "claude-code",
    time_ns: int | None = None,
) -> IngestRequest:
    """An IngestRequest with one session's events; even numbers allowed unless ``allowed``."""
    request = IngestRequest(batch_id=str(uuid.uuid4()))
    report = request.logs.add(
        session_id=session_id or str(uuid.uuid4()), confined_process_name=process
    )
    now = time.time_ns() if time_ns is None else time_ns
    for seq in seqs:
        log = report.logs.add(
            allowed=(seq % 2 == 0) if allowed is None else allowed, sequence_number=seq
        )
        log.time.FromNanoseconds(now + seq)
        log.http_request.method = "GET"
        log.http_request.url = url.replace("{seq}", str(seq))
        if log.allowed:
            log.http_request.matched_rule = "domain=example.com"
    return request


#: A fixed wall-clock time (2026) for records whose times the test compares.
T0 = 1_780_000_000 * 1_000_000_000


def add_record(
    request: IngestRequest,
    session_id: str,
    *,
    record_id: str | None = None,
    opened: bool = False,
    seal: dict[str, object] | None = None,
    sealed_at_ns: int = T0,
) -> None:
    record = request.sessions.add(
        record_id=record_id or str(uuid.uuid4()),
        session_id=session_id,
        confined_process_name="claude-code",
    )
    record.observed_at.FromNanoseconds(T0)
    if opened:
        record.open.sender = "boundary-audit/test"
        record.open.want_acks = True
        record.open.first_sequence_number = 0
    if seal is not None:
        dropped = seal.pop("dropped", {})
        for key, value in seal.items():
            setattr(record.seal, key, value)
        for reason, n in dict(dropped).items():  # type: ignore[call-overload]
            record.seal.dropped[reason] = n
        record.seal.sealed_at.FromNanoseconds(sealed_at_ns)


def chain_logs(request: IngestRequest, session_id: str, head: bytes | None = None) -> bytes:
    """Chain every event of ``session_id`` in ``request`` as a sender would; the new head."""
    digest = chain.genesis(session_id) if head is None else head
    for report in request.logs:
        if report.session_id != session_id:
            continue
        for log in report.logs:
            event = chain.ChainedEvent(
                log.sequence_number,
                log.time.ToNanoseconds(),
                log.allowed,
                log.http_request.method,
                log.http_request.url,
                log.http_request.matched_rule,
                report.confined_process_name,
            )
            digest = chain.next_digest(digest, event)
            log.chain_digest = digest
    return digest


def chained_request(session_id: str, events: int, *, sealed: bool) -> IngestRequest:
    """Events 0..events-1 of one session chained as a sender would, and its seal if ``sealed``."""
    request = make_request(session_id, range(events))
    head = chain_logs(request, session_id)
    if sealed:
        seal = {"events_made": events, "events_sent": events}
        add_record(request, session_id, seal={**seal, "chain_head": head, "chain_count": events})
    return request


def post_ingest(base_url: str, token: str | None, body: bytes | IngestRequest) -> httpx.Response:
    """POST one ingest body (a request, or raw bytes) with ``token`` (or none)."""
    data = body.SerializeToString() if isinstance(body, IngestRequest) else body
    headers = dict(PB)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(base_url + INGEST_PATH, content=data, headers=headers, timeout=POST_TIMEOUT_S)


def ingest_head(token: str, content_length: int) -> bytes:
    """The request line and headers of an ingest POST, for tests that send its body by hand."""
    return (
        f"POST {INGEST_PATH} HTTP/1.1\r\nHost: collector\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: {PB['Content-Type']}\r\nContent-Length: {content_length}\r\n\r\n"
    ).encode()


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class CollectorProcess:
    """A ``boundary-audit collector`` process and the log file it writes."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def stop(self) -> int:
        return stop_process(self.proc, PROCESS_START_TIMEOUT_S)


_LISTENING = re.compile(r'"url": "(http://[^"]+)"[^\n]*collector_listening')


def start_collector(db_url: str, log_path: Path, *extra: str) -> CollectorProcess:
    """Start a collector on a free port (unless ``extra`` says otherwise); wait until it listens."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cli_argv("collector", "--db", db_url, "--listen", "127.0.0.1:0", *extra),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def listening() -> str | None:
        match = _LISTENING.search(log_path.read_text())
        if match is None and proc.poll() is not None:
            raise RuntimeError(f"collector exited {proc.returncode}: {log_path.read_text()}")
        return match.group(1) if match else None

    try:
        url = eventually(listening, "the collector to listen", within=PROCESS_START_TIMEOUT_S)
        assert url is not None  # eventually returns only a truthy value
    except BaseException:
        stop_process(proc)
        raise
    return CollectorProcess(proc, url, log_path)
