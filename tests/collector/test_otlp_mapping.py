"""Rows to OTLP log records: attribute names, severities, times (pure, no I/O)."""

from __future__ import annotations

from dataclasses import replace

from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_INFO, SEVERITY_NUMBER_WARN

from boundary_audit.collector.model import EventRecord
from boundary_audit.collector.otlp import DropRow, EventRow, drop_record, event_record
from boundary_audit.collector.otlp.mapping import export_request, resource, url_attributes

from .otlp_receiver import attributes

EVENT = EventRecord(
    id=7,
    session_id="s-1",
    sequence_number=3,
    time_ns=1_780_000_000_123_456_789,
    received_ns=1_780_000_001_000_000_000,
    allowed=False,
    method="POST",
    url="https://api.example.com:8443/v1/x?q=1",
    host="api.example.com",
    matched_rule="",
)
ROW = EventRow(EVENT, process_name="claude-code", agent="laptop", workspace="ws")


def test_denied_event_is_warn_with_semantic_convention_attributes() -> None:
    record = event_record(ROW)
    assert record.time_unix_nano == EVENT.time_ns
    assert record.observed_time_unix_nano == EVENT.received_ns
    assert record.severity_number == SEVERITY_NUMBER_WARN
    assert record.event_name == "boundary.request"
    assert attributes(record) == {
        "http.request.method": "POST",
        "url.full": EVENT.url,
        "url.scheme": "https",
        "server.address": "api.example.com",
        "server.port": 8443,
        "url.path": "/v1/x",
        "url.query": "q=1",
        "boundary.session.id": "s-1",
        "boundary.sequence_number": 3,
        "boundary.decision": "deny",
        "boundary.rule": "",
        "boundary.agent": "laptop",
        "boundary.workspace": "ws",
        "boundary.process.name": "claude-code",
        "boundary.stored_id": 7,
    }
    assert record.body.string_value == f"deny POST {EVENT.url}"


def test_allowed_event_is_info_and_names_its_rule() -> None:

    event = replace(EVENT, allowed=True, matched_rule="domain=example.com", flags=2)
    record = event_record(replace(ROW, event=event))
    assert record.severity_number == SEVERITY_NUMBER_INFO
    attrs = attributes(record)
    assert attrs["boundary.decision"] == "allow"
    assert attrs["boundary.event.flags"] == 2
    assert record.body.string_value.endswith("by rule domain=example.com")


def test_default_port_and_unparsable_url() -> None:
    assert url_attributes("http://h/", "h")["server.port"] == 80
    assert url_attributes("wss://h/", "h")["server.port"] == 443
    bad = url_attributes("http://h:99999999/", "h")
    assert bad == {"url.full": "http://h:99999999/", "server.address": "h"}


def test_drop_report_is_warn_with_counts_by_reason() -> None:
    row = DropRow("rep-1", "s-1", "agent", "laptop", "ws", 10, 20, {"spool_full": 4, "b": 1})
    record = drop_record(row)
    assert record.severity_number == SEVERITY_NUMBER_WARN
    assert record.event_name == "boundary.drop_report"
    attrs = attributes(record)
    assert attrs["boundary.drop.count"] == 5
    assert attrs["boundary.drop.reasons"] == {"b": 1, "spool_full": 4}
    assert attrs["boundary.drop.source"] == "agent"
    assert (record.time_unix_nano, record.observed_time_unix_nano) == (10, 20)


def test_request_carries_resource_and_records_in_order() -> None:
    drop = DropRow("rep-1", "", "agent", "a", "", 1, 2)
    request = export_request([ROW, ROW], [drop], resource("host-1"))
    (rl,) = request.resource_logs
    res = {kv.key: kv.value.string_value for kv in rl.resource.attributes}
    assert res["service.name"] == "boundary-audit-collector"
    assert res["host.name"] == "host-1"
    names = [r.event_name for r in rl.scope_logs[0].log_records]
    assert names == ["boundary.request", "boundary.request", "boundary.drop_report"]
