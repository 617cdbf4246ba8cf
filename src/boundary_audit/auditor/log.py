"""LogAuditor: one structured line per event, for people and log shippers."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Literal, TextIO

from .event import AuditEvent, CloseOnExit
from .sequence import SequenceCounter

LogAuditFormat = Literal["json", "logfmt"]
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
#: Allowed requests are routine; denied ones are what an operator looks for.
ALLOWED_LEVEL = "info"
DENIED_LEVEL = "warning"


def _quote(value: str) -> str:
    # JSON string escaping turns every control character (CR, LF, ESC, ...)
    # into a visible escape, so a hostile URL cannot start a forged line.
    return json.dumps(value)


class LogAuditor(CloseOnExit):
    """Writes each event as one JSON object (or ``key=value`` line) to a stream.

    Allowed events are logged at info, denied ones at warning; ``level``
    sets the minimum that is written. Thread-safe.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        fmt: LogAuditFormat = "json",
        level: str = "info",
        session_id: str | None = None,
    ) -> None:
        if level not in _LEVELS:
            raise ValueError(f"level must be one of {', '.join(_LEVELS)}, got {level!r}")
        if fmt not in ("json", "logfmt"):
            raise ValueError(f"fmt must be 'json' or 'logfmt', got {fmt!r}")
        self._stream = stream if stream is not None else sys.stderr
        self._fmt = fmt
        self._min = _LEVELS[level]
        self._session_id = session_id
        self._lock = threading.Lock()
        # Numbers here are not tied to a session of their own: never rotated.
        self._sequence = SequenceCounter(limit=None)
        self.written = 0
        self.write_errors = 0

    def audit(self, event: AuditEvent) -> int:
        seq = self._sequence.assign(event)
        with self._lock:
            level = ALLOWED_LEVEL if event.allowed else DENIED_LEVEL
            if _LEVELS[level] < self._min:
                return seq
            t = event.time_ns if event.time_ns is not None else time.time_ns()
            record: dict[str, object] = {
                "time": datetime.fromtimestamp(t / 1e9, UTC).isoformat(timespec="microseconds"),
                "level": level,
                "event": "http_request",
                "decision": "allow" if event.allowed else "deny",
                "method": event.method,
                "url": event.url,
                "host": event.host,
                "rule": event.rule if event.allowed else None,
                "sequence_number": seq,
            }
            if self._session_id is not None:
                record["session_id"] = self._session_id
            line = self._render(record)
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
                self.written += 1
            except (OSError, ValueError):
                # A closed or broken stderr must not break the proxy; the
                # count is visible to whoever inspects the auditor.
                self.write_errors += 1
            return seq

    def _render(self, record: dict[str, object]) -> str:
        if self._fmt == "json":
            return json.dumps(record, ensure_ascii=True)
        parts = []
        for key, value in record.items():
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            safe = text.isascii() and text.isprintable() and " " not in text and '"' not in text
            parts.append(f"{key}={text if safe and text else _quote(str(text))}")
        return " ".join(parts)

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.write_errors += 1
