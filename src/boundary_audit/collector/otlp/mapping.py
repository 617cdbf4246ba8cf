"""Stored rows to OpenTelemetry log records: pure mapping, no I/O.

Attribute names follow the OpenTelemetry semantic conventions where one
exists (HTTP and URL attributes); everything else is in the documented
``boundary.*`` namespace (docs/collector.md, "OTLP export").
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import (
    SEVERITY_NUMBER_INFO,
    SEVERITY_NUMBER_WARN,
    LogRecord,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from boundary_audit import __version__

from ..model import EventRecord

#: ``service.name`` of every batch: the SIEM groups our records under it.
SERVICE_NAME = "boundary-audit-collector"
#: The instrumentation scope naming the exporter in every batch.
SCOPE_NAME = "boundary_audit.collector.otlp"
#: ``event_name`` of a stored request and of a drop report.
EVENT_REQUEST = "boundary.request"
EVENT_DROP = "boundary.drop_report"
#: Default ports by scheme, for ``server.port`` when the URL names none.
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class EventRow:
    """One stored event with its session's identity (one row of the export query)."""

    event: EventRecord
    process_name: str
    agent: str
    workspace: str


@dataclass(frozen=True, slots=True)
class DropRow:
    """One stored drop report with its counts by reason."""

    report_id: str
    session_id: str
    source: str
    agent: str
    workspace: str
    time_ns: int
    received_ns: int
    dropped: Mapping[str, int] = field(default_factory=dict)


def _put(into: Any, pairs: Mapping[str, str | int | bool]) -> None:
    """Append ``pairs`` to a repeated KeyValue field, in place.

    Filling fields of ``add()``-ed messages is about three times faster than
    building KeyValue/AnyValue objects and copying them in (upb), and the
    mapping is most of the exporter's CPU.
    """
    add = into.add
    for k, v in pairs.items():
        kv = add()
        kv.key = k
        if isinstance(v, bool):
            kv.value.bool_value = v
        elif isinstance(v, int):
            kv.value.int_value = v
        else:
            kv.value.string_value = v


def url_attributes(url: str, host: str) -> dict[str, str | int | bool]:
    """Semantic-convention URL attributes of a request URL (whatever of it parses)."""
    out: dict[str, str | int | bool] = {"url.full": url}
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None  # a URL we cannot parse keeps url.full only
    if parts is not None and parts.scheme:
        out["url.scheme"] = parts.scheme
    out["server.address"] = host or (parts.hostname if parts and parts.hostname else "")
    if parts is not None:
        chosen = port if port is not None else DEFAULT_PORTS.get(parts.scheme.lower())
        if chosen is not None:
            out["server.port"] = chosen
        if parts.path:
            out["url.path"] = parts.path
        if parts.query:
            out["url.query"] = parts.query
    return out


def event_record(row: EventRow) -> LogRecord:
    """A stored request: INFO when allowed, WARN when denied."""
    record = LogRecord()
    fill_event(record, row)
    return record


def fill_event(record: LogRecord, row: EventRow) -> None:
    """Write ``row`` into an empty ``record`` (see :func:`event_record`)."""
    e = row.event
    decision = "allow" if e.allowed else "deny"
    attrs: dict[str, str | int | bool] = {
        "http.request.method": e.method,
        **url_attributes(e.url, e.host),
        "boundary.session.id": e.session_id,
        "boundary.sequence_number": e.sequence_number,
        "boundary.decision": decision,
        "boundary.rule": e.matched_rule,
        "boundary.agent": row.agent,
        "boundary.workspace": row.workspace,
        "boundary.process.name": row.process_name,
        "boundary.stored_id": e.id,
    }
    if e.flags:
        attrs["boundary.event.flags"] = e.flags
    rule = f" by rule {e.matched_rule}" if e.matched_rule else ""
    record.time_unix_nano = e.time_ns
    record.observed_time_unix_nano = e.received_ns
    record.severity_number = SEVERITY_NUMBER_INFO if e.allowed else SEVERITY_NUMBER_WARN
    record.severity_text = "INFO" if e.allowed else "WARN"
    record.event_name = EVENT_REQUEST
    record.body.string_value = f"{decision} {e.method} {e.url}{rule}"
    _put(record.attributes, attrs)


def drop_record(row: DropRow) -> LogRecord:
    """A drop report: always WARN (events were lost before they were stored)."""
    record = LogRecord()
    fill_drop(record, row)
    return record


def fill_drop(record: LogRecord, row: DropRow) -> None:
    """Write ``row`` into an empty ``record`` (see :func:`drop_record`)."""
    total = sum(row.dropped.values())
    _put(
        record.attributes,
        {
            "boundary.session.id": row.session_id,
            "boundary.agent": row.agent,
            "boundary.workspace": row.workspace,
            "boundary.drop.report_id": row.report_id,
            "boundary.drop.source": row.source,
            "boundary.drop.count": total,
        },
    )
    reasons = record.attributes.add(key="boundary.drop.reasons")
    _put(reasons.value.kvlist_value.values, dict(sorted(row.dropped.items())))
    record.time_unix_nano = row.time_ns
    record.observed_time_unix_nano = row.received_ns
    record.severity_number = SEVERITY_NUMBER_WARN
    record.severity_text = "WARN"
    record.event_name = EVENT_DROP
    record.body.string_value = f"{total} events dropped by {row.source or 'a reporter'}"


def resource(host_name: str | None = None) -> Resource:
    """The resource every batch carries: the service and the host it runs on."""
    res = Resource()
    _put(
        res.attributes,
        {
            "service.name": SERVICE_NAME,
            "service.version": __version__,
            "host.name": host_name if host_name is not None else socket.gethostname(),
        },
    )
    return res


def export_request(
    events: Sequence[EventRow], drops: Sequence[DropRow], res: Resource
) -> ExportLogsServiceRequest:
    """One OTLP request holding ``events`` then ``drops``, in order."""
    request = ExportLogsServiceRequest()
    logs = request.resource_logs.add()
    logs.resource.CopyFrom(res)
    scope = logs.scope_logs.add()
    scope.scope.name = SCOPE_NAME
    scope.scope.version = __version__
    add = scope.log_records.add
    for e in events:
        fill_event(add(), e)
    for d in drops:
        fill_drop(add(), d)
    return request


__all__ = [
    "EVENT_DROP",
    "EVENT_REQUEST",
    "SERVICE_NAME",
    "DropRow",
    "EventRow",
    "drop_record",
    "event_record",
    "export_request",
    "resource",
    "url_attributes",
]
