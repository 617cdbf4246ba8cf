"""The collector's chain check at ingest: verified, tampered, unverified, in the API, CLI and UI."""

from __future__ import annotations

import subprocess
import uuid

import httpx
import pytest

from boundary_audit.collector import CollectorServer, Storage
from boundary_audit.wire import IngestRequest
from tests.support.processes import cli_argv

from .helpers import add_record, chain_logs, make_request, post_ingest

pytestmark = pytest.mark.timeout(120)


def chain_of(server: CollectorServer, sid: str) -> dict[str, object]:
    response = httpx.get(f"{server.url}/api/v1/sessions/{sid}")
    assert response.status_code == 200, response.text
    body = response.json()["chain"]
    assert isinstance(body, dict)
    return body


def sealed(sid: str, head: bytes, count: int, made: int | None = None) -> IngestRequest:
    request = IngestRequest()
    seal = {"events_made": count if made is None else made, "events_sent": count}
    add_record(request, sid, seal={**seal, "chain_head": head, "chain_count": count})
    return request


def test_a_chained_sealed_session_is_verified_and_late_events_are_rechecked(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    first = make_request(sid, range(6))
    head = chain_logs(first, sid)
    assert post_ingest(collector_server.url, token, first).status_code == 200
    state = chain_of(collector_server, sid)
    assert (state["state"], state["summary"]) == ("unverified", "unverified: not sealed yet")

    # The seal commits to 10 events; 4 come later (a spill file).
    later = make_request(sid, range(6, 10))
    full = chain_logs(later, sid, head)
    assert post_ingest(collector_server.url, token, sealed(sid, full, 10)).status_code == 200
    state = chain_of(collector_server, sid)
    # 6 of 10 stored, each matching: not verified (yet), not tampered either.
    assert state["state"] == "unverified"
    assert "goes on from 6" in str(state["summary"])
    assert post_ingest(collector_server.url, token, later).status_code == 200
    assert chain_of(collector_server, sid) == {
        "state": "verified",
        "first_bad_sequence": None,
        "summary": "verified: the stored events match the sender's chain and seal",
    }


def test_an_altered_event_is_tampered_at_its_sequence_number(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    request = make_request(sid, range(8))
    head = chain_logs(request, sid)
    # Changed after the sender chained it (by the agent, or on the way).
    request.logs[0].logs[3].http_request.url = "https://evil.example/"
    request.MergeFrom(sealed(sid, head, 8))
    assert post_ingest(collector_server.url, token, request).status_code == 200
    state = chain_of(collector_server, sid)
    assert (state["state"], state["first_bad_sequence"]) == ("tampered", 3)
    assert state["summary"] == "tampered: first bad sequence number 3"
    listed = httpx.get(f"{collector_server.url}/api/v1/sessions").json()["sessions"]
    assert listed[0]["chain"] == state
    page = httpx.get(f"{collector_server.url}/sessions/{sid}").text
    assert "tampered: first bad sequence number 3" in page
    assert "tampered (at 3)" in httpx.get(f"{collector_server.url}/").text


def test_a_seal_without_a_chain_is_unverified(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    request = make_request(sid, range(3))
    add_record(request, sid, seal={"events_made": 3, "events_sent": 3})
    assert post_ingest(collector_server.url, token, request).status_code == 200
    state = chain_of(collector_server, sid)
    assert (state["state"], state["summary"]) == (
        "unverified",
        "unverified: the sender does not chain",
    )


def test_sessions_and_logs_commands_show_the_chain(
    collector_server: CollectorServer, storage: Storage, db_url: str
) -> None:
    token = storage.create_token("agent-1")
    sid = str(uuid.uuid4())
    request = make_request(sid, range(4))
    request.MergeFrom(sealed(sid, chain_logs(request, sid), 4))
    assert post_ingest(collector_server.url, token, request).status_code == 200
    listing = subprocess.run(
        [*cli_argv(), "sessions", "--db", db_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "verified" in listing
    assert "tampered" not in listing
    logs = subprocess.run(
        [*cli_argv(), "logs", "--db", db_url, "--session", sid],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stderr  # the session's verdict is a notice: stdout keeps only the rows
    assert f"session {sid}: complete" in logs
    assert "chain verified: the stored events match" in logs
