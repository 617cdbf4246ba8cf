"""The collector refuses no event a valid frame can carry (SQLite and PostgreSQL, over HTTP)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from boundary_audit.collector import CollectorServer, Storage
from boundary_audit.collector.fields import unescape
from boundary_audit.wire import (
    MAX_PAYLOAD_SIZE,
    BoundaryMessage,
    IngestRequest,
    encode_message,
)

from .helpers import make_request, post_ingest

pytestmark = pytest.mark.timeout(120)
INT64_MAX = (1 << 63) - 1


def _events(server: CollectorServer, sid: str) -> list[dict[str, object]]:
    body = httpx.get(f"{server.url}/api/v1/sessions/{sid}/events").json()
    events: list[dict[str, object]] = body["events"]
    return events


def test_long_fields_and_nul_bytes_are_stored_not_refused(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    long_url = "https://example.com/" + "a" * 9_000
    nul_url = "https://example.com/a\x00b\\0"
    request = make_request(sid, range(4))
    logs = request.logs[0].logs
    logs[0].http_request.url = long_url
    logs[1].allowed = True
    logs[1].http_request.matched_rule = "r" * 1_500
    logs[2].http_request.url = nul_url
    response = post_ingest(collector_server.url, token, request)
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 4
    events = _events(collector_server, sid)
    assert events[0]["url"] == long_url
    assert events[0]["altered"] == []
    assert events[1]["matched_rule"] == "r" * 1_500
    assert events[2]["altered"] == ["escaped"]
    assert unescape(str(events[2]["url"])) == nul_url
    assert "\x00" not in str(events[2]["url"])
    metrics = httpx.get(collector_server.url + "/metrics").text
    assert 'boundary_audit_collector_events_altered_total{alteration="escaped"} 1.0' in metrics


def test_a_full_frame_payload_is_stored_whole(
    collector_server: CollectorServer, storage: Storage
) -> None:
    """An event whose frame payload is exactly the 32 KiB maximum arrives whole."""
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    request = make_request(sid, [0])
    log = request.logs[0].logs[0]
    log.http_request.url = "https://example.com/"
    message = BoundaryMessage()
    message.logs.CopyFrom(request.logs[0])
    http = message.logs.logs[0].http_request
    for _ in range(8):  # the URL's length prefix may grow by a byte: converge
        size = len(message.SerializeToString())
        if size < MAX_PAYLOAD_SIZE:
            http.url += "x" * (MAX_PAYLOAD_SIZE - size)
        elif size > MAX_PAYLOAD_SIZE:
            http.url = http.url[: len(http.url) - (size - MAX_PAYLOAD_SIZE)]
    assert len(message.SerializeToString()) == MAX_PAYLOAD_SIZE
    encode_message(message)  # a valid frame
    request.logs[0].CopyFrom(message.logs)
    assert post_ingest(collector_server.url, token, request).status_code == 200
    (event,) = _events(collector_server, sid)
    assert event["url"] == message.logs.logs[0].http_request.url
    assert event["altered"] == []


def test_unstorable_events_are_refused_alone_as_drops(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    request = make_request(sid, [0, 1, 2])
    request.logs[0].logs[1].sequence_number = -5  # no place in the session's numbering
    request.logs.add(session_id="not-a-uuid").logs.add(sequence_number=0)
    drop = request.drops.add(report_id=str(uuid.uuid4()), session_id=sid, source="agent")
    drop.dropped["spool_full"] = INT64_MAX - 1
    for _ in range(2):  # re-sent: nothing counted twice
        response = post_ingest(collector_server.url, token, request)
        assert response.status_code == 200, response.text
    assert [e["sequence_number"] for e in _events(collector_server, sid)] == [0, 2]
    detail = httpx.get(f"{collector_server.url}/api/v1/sessions/{sid}").json()
    assert detail["dropped_by_reason"] == {
        "rejected_by_collector": 1,
        "spool_full": 1 << 40,
    }
    listing = httpx.get(f"{collector_server.url}/api/v1/sessions").json()
    assert listing["unattributed_dropped_by_reason"] == {"rejected_by_collector": 1}
    metrics = httpx.get(collector_server.url + "/metrics").text
    assert "boundary_audit_collector_counts_clamped_total 2.0" in metrics


def test_data_errors_are_400_naming_the_field(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("agent-1")
    bad = IngestRequest()
    bad.drops.add(report_id="r", source="elsewhere")
    response = post_ingest(collector_server.url, token, bad)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("drops[0].source")
    nul_id = IngestRequest()
    nul_id.drops.add(report_id="r\x00", source="agent").dropped["x\x00"] = 1
    assert post_ingest(collector_server.url, token, nul_id).status_code == 200
