"""Where refused data goes: a JSON-lines file, counted and logged.

A batch the collector rejects with 400/413 on its own would be refused again
on every re-send, so it leaves the spool; but it is evidence, so it is kept
in the dead-letter file (payload as base64 protobuf, with the collector's
reason) and every event in it is counted as dropped (reason ``rejected``).
Frames the agent itself refuses (invalid session ids, negative sequence
numbers, undecodable payloads) are kept there too, at most
:data:`REFUSED_FRAMES_PER_PEER` per sender per :data:`REFUSED_FRAMES_WINDOW`
(:class:`EvidenceLimiter`): a flood of bad frames costs a few lines, never
thousands.

The file keeps the **oldest** evidence: once it reaches its bound nothing is
rotated away; further items are only counted and logged.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Hashable, Sequence
from pathlib import Path

from ..logs import get_logger
from ..wire import DropReason
from .metrics import AgentMetrics
from .spool import KIND_SESSION, AsyncSpool, SpooledBatch, SpooledDropReport

#: Bound of the dead-letter file: rejected data is kept for inspection
#: without filling the disk. Beyond it new items are counted, not written, so
#: the first evidence of an attack or a bug is never rotated away.
DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024
#: Refused frames of one sender (pid, uid) written per window; the rest of
#: the window's are counted only. A few examples are all an operator needs.
REFUSED_FRAMES_PER_PEER = 16
#: The window of :data:`REFUSED_FRAMES_PER_PEER`, seconds.
REFUSED_FRAMES_WINDOW = 60.0
#: Peers remembered by the limiter before the oldest windows are forgotten.
MAX_LIMITED_PEERS = 1024
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
                "kind": "session_record" if b.kind == KIND_SESSION else "batch",
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


def refused_frame_line(
    payload: bytes, why: str, session_id: str, *, pid: int | None, uid: int | None, now: float
) -> str:
    """The dead-letter line of a frame the agent refused itself."""
    return json.dumps(
        {
            "time": now,
            "kind": "refused_frame",
            "session_id": session_id,
            "detail": why,
            "peer_pid": pid,
            "peer_uid": uid,
            "payload_b64": base64.b64encode(payload).decode(),
        }
    )


class EvidenceLimiter:
    """At most ``per_window`` items per key per ``window`` seconds (pure; the clock is passed)."""

    def __init__(
        self,
        per_window: int = REFUSED_FRAMES_PER_PEER,
        window: float = REFUSED_FRAMES_WINDOW,
        max_keys: int = MAX_LIMITED_PEERS,
    ) -> None:
        self.per_window = per_window
        self.window = window
        self.max_keys = max_keys
        self._windows: dict[Hashable, tuple[float, int]] = {}
        self.suppressed = 0

    def allow(self, key: Hashable, now: float) -> bool:
        start, used = self._windows.get(key, (now, 0))
        if now - start >= self.window:
            start, used = now, 0
        if used >= self.per_window:
            self.suppressed += 1
            return False
        if key not in self._windows and len(self._windows) >= self.max_keys:
            oldest = min(self._windows, key=lambda k: self._windows[k][0])
            del self._windows[oldest]
        self._windows[key] = (start, used + 1)
        return True


class DeadLetterFile:
    """Appends refused items to the file, fsynced; past ``max_bytes`` only counts them."""

    def __init__(self, path: Path, max_bytes: int = DEAD_LETTER_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._log = get_logger("agent")
        self._lock = threading.Lock()
        #: Lines not written because the file was at its bound.
        self.not_written = 0

    def append(
        self,
        batches: Sequence[SpooledBatch],
        reports: Sequence[SpooledDropReport],
        status: int,
        detail: str,
    ) -> None:
        """Write and fsync the items' lines (blocking: run it on the spool thread)."""
        self.write_lines(dead_letter_lines(batches, reports, status, detail, time.time()))

    def write_lines(self, lines: list[str]) -> bool:
        """Append ``lines`` (blocking); False when the file is full and they were only counted."""
        data = ("\n".join(lines) + "\n").encode()
        with self._lock:
            fd = os.open(
                self.path,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                DEAD_LETTER_FILE_MODE,
            )
            try:
                if os.fstat(fd).st_size + len(data) > self.max_bytes:
                    if not self.not_written:
                        self._log.error(
                            "dead-letter file full; keeping the oldest evidence, "
                            "new refused items are only counted",
                            path=str(self.path),
                            limit_bytes=self.max_bytes,
                        )
                    self.not_written += len(lines)
                    return False
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        return True


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
    "REFUSED_FRAMES_PER_PEER",
    "DeadLetterFile",
    "DeadLetters",
    "EvidenceLimiter",
    "dead_letter_lines",
    "refused_frame_line",
]
