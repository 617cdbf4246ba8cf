"""Stored rows to OpenTelemetry log records: pure mapping, no I/O.

Attribute names follow the OpenTelemetry semantic conventions where one
exists (HTTP and URL attributes); everything else is in the documented
``boundary.*`` namespace (docs/collector.md, "OTLP export").
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import (
    SEVERITY_NUMBER_INFO,
    SEVERITY_NUMBER_WARN,
    LogRecord,
    ResourceLogs,
    ScopeLogs,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from boundary_audit import __version__

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

    id: int
    session_id: str
    sequence_number: int
    time_ns: int
    received_ns: int
    allowed: bool
    method: str
    url: str
    host: str
    matched_rule: str
    process_name: str
    agent: str
    workspace: str
    flags: int = 0


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


def _value(v: str | int | bool) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    return AnyValue(string_value=v)


def _attrs(pairs: Mapping[str, str | int | bool]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in pairs.items()]


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
    decision = "allow" if row.allowed else "deny"
    attrs: dict[str, str | int | bool] = {
        "http.request.method": row.method,
        **url_attributes(row.url, row.host),
        "boundary.session.id": row.session_id,
        "boundary.sequence_number": row.sequence_number,
        "boundary.decision": decision,
        "boundary.rule": row.matched_rule,
        "boundary.agent": row.agent,
        "boundary.workspace": row.workspace,
        "boundary.process.name": row.process_name,
        "boundary.stored_id": row.id,
    }
    if row.flags:
        attrs["boundary.event.flags"] = row.flags
    rule = f" by rule {row.matched_rule}" if row.matched_rule else ""
    return LogRecord(
        time_unix_nano=row.time_ns,
        observed_time_unix_nano=row.received_ns,
        severity_number=SEVERITY_NUMBER_INFO if row.allowed else SEVERITY_NUMBER_WARN,
        severity_text="INFO" if row.allowed else "WARN",
        event_name=EVENT_REQUEST,
        body=AnyValue(string_value=f"{decision} {row.method} {row.url}{rule}"),
        attributes=_attrs(attrs),
    )


def drop_record(row: DropRow) -> LogRecord:
    """A drop report: always WARN (events were lost before they were stored)."""
    total = sum(row.dropped.values())
    attrs = _attrs(
        {
            "boundary.session.id": row.session_id,
            "boundary.agent": row.agent,
            "boundary.workspace": row.workspace,
            "boundary.drop.report_id": row.report_id,
            "boundary.drop.source": row.source,
            "boundary.drop.count": total,
        }
    )
    reasons = KeyValueList(values=_attrs(dict(sorted(row.dropped.items()))))
    attrs.append(KeyValue(key="boundary.drop.reasons", value=AnyValue(kvlist_value=reasons)))
    return LogRecord(
        time_unix_nano=row.time_ns,
        observed_time_unix_nano=row.received_ns,
        severity_number=SEVERITY_NUMBER_WARN,
        severity_text="WARN",
        event_name=EVENT_DROP,
        body=AnyValue(string_value=f"{total} events dropped by {row.source or 'a reporter'}"),
        attributes=attrs,
    )


def resource(host_name: str | None = None) -> Resource:
    """The resource every batch carries: the service and the host it runs on."""
    return Resource(
        attributes=_attrs(
            {
                "service.name": SERVICE_NAME,
                "service.version": __version__,
                "host.name": host_name if host_name is not None else socket.gethostname(),
            }
        )
    )


def export_request(
    events: Sequence[EventRow], drops: Sequence[DropRow], res: Resource
) -> ExportLogsServiceRequest:
    """One OTLP request holding ``events`` then ``drops``, in order."""
    records = [event_record(e) for e in events] + [drop_record(d) for d in drops]
    scope = ScopeLogs(scope=InstrumentationScope(name=SCOPE_NAME, version=__version__))
    scope.log_records.extend(records)
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(resource=res, scope_logs=[scope])])


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
