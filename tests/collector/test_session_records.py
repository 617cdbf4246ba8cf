"""Opens, seals and chain digests posted as real IngestRequests, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import httpx
import pytest

from boundary_audit.collector import CollectorServer, Storage
from boundary_audit.wire import IngestRequest, chain

from .helpers import T0, add_record, chain_logs, make_request, post_ingest

pytestmark = pytest.mark.timeout(120)


def session(server: CollectorServer, sid: str) -> dict[str, object]:
    response = httpx.get(f"{server.url}/api/v1/sessions/{sid}")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def verdict(server: CollectorServer, sid: str) -> dict[str, object]:
    c = session(server, sid)["completeness"]
    assert isinstance(c, dict)
    return c


def test_open_then_seal_then_a_later_seal_supersedes(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    request = make_request(sid, range(8))
    add_record(request, sid, record_id="open-1", opened=True)
    assert post_ingest(collector_server.url, token, request).status_code == 200
    assert verdict(collector_server, sid)["state"] == "open"

    first = IngestRequest()
    seal = {"events_made": 10, "events_sent": 8, "undelivered": 2}
    add_record(first, sid, record_id="seal-1", seal=dict(seal), sealed_at_ns=T0 + 1)
    assert post_ingest(collector_server.url, token, first).status_code == 200
    c = verdict(collector_server, sid)
    assert (c["state"], c["unaccounted"], c["unaccounted_by_reason"]) == (
        "incomplete",
        2,
        {"undelivered": 2},
    )
    assert "none lost" not in str(c["summary"])

    # The spill's seal comes later: the two numbers were spilled, then arrive.
    later = make_request(sid, [8, 9])
    spill_seal = {"events_made": 10, "events_sent": 8, "spilled": 2}
    add_record(later, sid, record_id="seal-2", seal=dict(spill_seal), sealed_at_ns=T0 + 2)
    # An older seal re-sent (a new record id) after it changes nothing.
    add_record(later, sid, record_id="seal-1-again", seal=dict(seal), sealed_at_ns=T0 + 1)
    assert post_ingest(collector_server.url, token, later).status_code == 200
    c = verdict(collector_server, sid)
    assert (c["state"], c["stored"], c["events_made"], c["lost"]) == ("complete", 10, 10, 0)
    rows = storage.query("SELECT seal_spilled, seal_undelivered FROM sessions")
    assert rows == [(2, 0)]
    # Records are idempotent on record_id.
    assert post_ingest(collector_server.url, token, later).status_code == 200
    assert storage.query("SELECT COUNT(*) FROM session_records")[0][0] == 4


def test_frozen_agent_session_is_never_shown_as_nothing_lost(
    collector_server: CollectorServer, storage: Storage
) -> None:
    """The issue's case: 300 made, 240 stored, 34 dropped (channel full), 26 undelivered."""
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    request = make_request(sid, range(240))
    request.drops.add(report_id="d1", session_id=sid, source="boundary").dropped[
        "boundary_channel_full"
    ] = 34
    add_record(request, sid, opened=True)
    seal = {"events_made": 300, "events_sent": 240, "undelivered": 26}
    add_record(request, sid, seal={**seal, "dropped": {"channel_full": 34}})
    assert post_ingest(collector_server.url, token, request).status_code == 200
    c = verdict(collector_server, sid)
    assert c["state"] == "incomplete"
    assert (c["unaccounted"], c["lost"]) == (26, 34)
    listed = httpx.get(f"{collector_server.url}/api/v1/sessions").json()["sessions"]
    assert listed[0]["completeness"] == c
    page = httpx.get(f"{collector_server.url}/sessions/{sid}").text
    assert "incomplete: 26 of 300 unaccounted for (undelivered 26)" in page
    assert "0 missing of" not in page


def test_a_session_without_open_or_seal_is_unsealed(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    assert post_ingest(collector_server.url, token, make_request(sid, range(5))).status_code == 200
    c = verdict(collector_server, sid)
    assert (c["state"], c["stored"]) == ("unsealed", 5)


def test_chain_digests_and_names_are_stored_as_sent(
    collector_server: CollectorServer, storage: Storage
) -> None:
    """Everything a chain covers can be rebuilt from the stored rows, to the sender's head."""
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    request = make_request(sid, range(4), process="")
    renamed = make_request(sid, range(4, 6), process="codex").logs[0]
    request.logs.append(renamed)
    digest = chain_logs(request, sid)
    events = [
        chain.ChainedEvent(
            log.sequence_number,
            log.time.ToNanoseconds(),
            log.allowed,
            log.http_request.method,
            log.http_request.url,
            log.http_request.matched_rule,
            report.confined_process_name,
        )
        for report in request.logs
        for log in report.logs
    ]
    add_record(request, sid, seal={"events_made": 6, "chain_head": digest, "chain_count": 6})
    assert post_ingest(collector_server.url, token, request).status_code == 200
    rows = storage.query(
        "SELECT e.sequence_number, e.time_ns, e.allowed, e.method, e.url, e.matched_rule,"
        " COALESCE(e.process_name, s.confined_process_name), e.chain_digest"
        " FROM events e JOIN sessions s ON s.session_id = e.session_id"
        " ORDER BY e.sequence_number"
    )
    rebuilt = [
        (chain.ChainedEvent(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6]), bytes(r[7]))
        for r in rows
    ]
    assert [e for e, _ in rebuilt] == events
    ((head, count),) = storage.query("SELECT seal_chain_head, seal_chain_count FROM sessions")
    assert chain.check(sid, rebuilt, bytes(head), count).ok


def test_nanosecond_times_round_trip_exactly(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    exact = T0 + 123_456_789  # nanoseconds that microseconds would lose
    request = make_request(sid, [0], time_ns=exact)
    assert post_ingest(collector_server.url, token, request).status_code == 200
    body = httpx.get(f"{collector_server.url}/api/v1/sessions/{sid}/events").json()
    (event,) = body["events"]
    assert event["time_unix_ns"] == str(exact)
    assert event["time"].endswith(".123456Z")
    assert storage.query("SELECT time_ns FROM events")[0][0] == exact
