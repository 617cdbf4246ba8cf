"""The audit log: one JSON line per stored event, for log aggregators.

Each line has the shape structlog's JSON renderer gives our other log lines
(``component``, the fields, ``event``, ``level``, ``timestamp``; the same key
order and escaping, which a test checks against the renderer itself), but it
is assembled here from pre-escaped parts and a request's lines are written in
one call. Through :func:`boundary_audit.logs.get_logger` a line cost ~35 us
(stdlib bridge, a flush per line) and even structlog's renderer on its own
was a third of the collector's CPU at 25k events/s; JSON string escaping
(``ensure_ascii``, as ``json.dumps`` does) still keeps any URL, quote or
newline inside its string, so no line can be forged.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TextIO

from .model import Identity, StoredEvent, format_ns

COMPONENT = "collector.audit"
EVENT = "boundary_event"
_quote = json.encoder.encode_basestring_ascii  # what json.dumps uses for str (C speed-up)


def audit_record(stored: StoredEvent, ident: Identity, timestamp: str) -> dict[str, str]:
    """The fields of one line, in order (the reference the fast path must match)."""
    e = stored.event
    return {
        "component": COMPONENT,
        "decision": "allowed" if e.allowed else "denied",
        "method": e.method,
        "url": e.url,
        "rule": e.matched_rule,
        "session": stored.session_id,
        "agent": ident.agent,
        "workspace": ident.workspace,
        "event_time": format_ns(e.time_ns),
        "event": EVENT,
        "level": "info",
        "timestamp": timestamp,
    }


def render_lines(events: list[StoredEvent], ident: Identity, timestamp: str) -> list[str]:
    """The JSON lines of one request's stored events, without trailing newlines."""
    head = f'{{"component": {_quote(COMPONENT)}, "decision": '
    who = f', "agent": {_quote(ident.agent)}, "workspace": {_quote(ident.workspace)}'
    tail = f', "event": {_quote(EVENT)}, "level": "info", "timestamp": {_quote(timestamp)}}}'
    sessions: dict[str, str] = {}
    lines = []
    for stored in events:
        e = stored.event
        session = sessions.get(stored.session_id)
        if session is None:
            session = sessions[stored.session_id] = _quote(stored.session_id)
        lines.append(
            head
            + ('"allowed"' if e.allowed else '"denied"')
            + ', "method": '
            + _quote(e.method)
            + ', "url": '
            + _quote(e.url)
            + ', "rule": '
            + _quote(e.matched_rule)
            + ', "session": '
            + session
            + who
            + ', "event_time": "'
            + format_ns(e.time_ns)
            + '"'
            + tail
        )
    return lines


class AuditLog:
    """Writes each request's audit lines to ``stream`` (default: the process's stderr)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def write(self, events: list[StoredEvent], ident: Identity) -> None:
        if not events:
            return
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        stream = self._stream or sys.stderr
        stream.write("\n".join(render_lines(events, ident, now)) + "\n")
        stream.flush()
