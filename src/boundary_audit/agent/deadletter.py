"""Where data the collector refuses for good goes: a JSON-lines file, counted and logged.

A batch the collector rejects with 400/413 on its own would be refused again
on every re-send, so it leaves the spool; but it is evidence, so it is kept
in the dead-letter file (payload as base64 protobuf, with the collector's
reason) and every event in it is counted as dropped (reason ``rejected``).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..logs import get_logger
from ..wire import DropReason
from .metrics import AgentMetrics
from .spool import AsyncSpool, SpooledBatch, SpooledDropReport

#: Rotate the dead-letter file beyond this size (one previous file is kept as
#: ``.1``): rejected data is kept for inspection without filling the disk.
DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024
#: Mode of the dead-letter file: it holds audit data, for the agent's user only.
DEAD_LETTER_FILE_MODE = 0o600


def dead_letter_lines(
    batches: Sequence[SpooledBatch],
    reports: Sequence[SpooledDropReport],
    status: int,
    detail: str,
    now: float,
) -> list[str]:
    """One JSON object per item: what it was, why it was refused, its payload."""
    lines = [
        json.dumps(
            {
                "time": now,
                "kind": "batch",
                "session_id": b.session_id,
                "events": b.events,
                "status": status,
                "detail": detail,
                "payload_b64": base64.b64encode(b.payload).decode(),
            }
        )
        for b in batches
    ]
    lines += [
        json.dumps(
            {
                "time": now,
                "kind": "drop_report",
                "report_id": r.report_id,
                "status": status,
                "detail": detail,
                "payload_b64": base64.b64encode(r.payload).decode(),
            }
        )
        for r in reports
    ]
    return lines


class DeadLetterFile:
    """Appends refused items to the file, fsynced, rotating it past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = DEAD_LETTER_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._log = get_logger("agent")

    def append(
        self,
        batches: Sequence[SpooledBatch],
        reports: Sequence[SpooledDropReport],
        status: int,
        detail: str,
    ) -> None:
        """Write and fsync the items' lines (blocking: run it on the spool thread)."""
        path = self.path
        if path.exists() and path.stat().st_size > self.max_bytes:
            previous = path.with_name(path.name + ".1")
            self._log.warning(
                "dead-letter file full; rotating it, the previous rotation is discarded",
                path=str(path),
                discarded=str(previous) if previous.exists() else None,
                limit_bytes=self.max_bytes,
            )
            path.replace(previous)
        lines = dead_letter_lines(batches, reports, status, detail, time.time())
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, DEAD_LETTER_FILE_MODE)
        try:
            os.write(fd, ("\n".join(lines) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


class DeadLetters:
    """Moves refused items from the spool to the dead-letter file; counts and logs them."""

    def __init__(self, file: DeadLetterFile, spool: AsyncSpool, metrics: AgentMetrics) -> None:
        self.file = file
        self._spool = spool
        self._metrics = metrics
        self._log = get_logger("agent")

    async def reject(
        self,
        batches: Sequence[SpooledBatch],
        reports: Sequence[SpooledDropReport],
        batch_id: str,
        status: int,
        detail: str,
    ) -> None:
        """Save the items to the file, then drop them from the spool (OSError: neither)."""
        await self._spool.discard(
            batches, reports, lambda: self.file.append(batches, reports, status, detail)
        )
        events = sum(b.events for b in batches)
        self._metrics.dropped_events.labels(DropReason.REJECTED).inc(events)
        self._metrics.dropped_frames.labels(DropReason.REJECTED).inc(len(batches) + len(reports))
        self._log.error(
            "collector rejected data permanently; moved to the dead-letter file",
            batch_id=batch_id,
            status=status,
            detail=detail,
            events=events,
            sessions=sorted({b.session_id for b in batches}),
            drop_reports=len(reports),
            dead_letter=str(self.file.path),
        )


__all__ = [
    "DEAD_LETTER_MAX_BYTES",
    "DeadLetterFile",
    "DeadLetters",
    "dead_letter_lines",
]
