"""One ingest endpoint as the contract tests see it, whichever implements it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from boundary_audit.agent.config import INGEST_CONTENT_TYPE, INGEST_PATH
from boundary_audit.wire import IngestRequest, SessionRecord

#: Timeout of one request: both servers run on loopback in this process.
REQUEST_TIMEOUT_S = 30.0

#: (status, JSON body) of one answer.
Answer = tuple[int, dict[str, Any]]


@dataclass
class Target:
    """An ingest endpoint and a way to read what it stored."""

    name: str
    url: str
    token: str
    #: Sequence numbers stored for a session.
    stored: Callable[[str], set[int]]
    #: Drop report ids stored.
    drop_report_ids: Callable[[], set[str]]
    #: Session record ids stored (opens and seals).
    session_record_ids: Callable[[], set[str]] = set

    def post(
        self,
        body: bytes,
        *,
        token: str | None = "",
        content_type: str = INGEST_CONTENT_TYPE,
    ) -> Answer:
        """POST ``body``; ``token`` "" means the right one, None no Authorization at all."""
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token}"
        response = httpx.post(
            self.url + INGEST_PATH, content=body, headers=headers, timeout=REQUEST_TIMEOUT_S
        )
        return response.status_code, response.json()


def request(
    *sessions: tuple[str, list[int]],
    drops: list[dict[str, Any]] | None = None,
    records: list[SessionRecord] | None = None,
) -> bytes:
    """An IngestRequest body: ``(session_id, sequence numbers)`` pairs, drop reports, records."""
    req = IngestRequest(batch_id=str(uuid.uuid4()))
    req.sessions.extend(records or [])
    now = time.time_ns()
    for session_id, seqs in sessions:
        logs = req.logs.add(session_id=session_id, confined_process_name="contract")
        for seq in seqs:
            log = logs.logs.add(allowed=seq % 2 == 0, sequence_number=seq)
            log.time.FromNanoseconds(now)
            log.http_request.method = "GET"
            log.http_request.url = f"https://example.test/{seq}"
    for fields in drops or []:
        dropped = fields.pop("dropped", {})
        report = req.drops.add(**fields)
        report.dropped.update(dropped)
        report.time.FromNanoseconds(now)
    return req.SerializeToString()


def new_id() -> str:
    return str(uuid.uuid4())


__all__ = ["Answer", "Target", "new_id", "request"]
