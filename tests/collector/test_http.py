"""The HTTP API against a real uvicorn server on a random loopback port."""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from boundary_audit.collector import AppSettings, CollectorServer, Storage, open_storage
from boundary_audit.collector.ingest import MAX_INGEST_BODY_BYTES
from boundary_audit.collector.model import INGEST_PATH
from boundary_audit.collector.postgres import PostgresStorage
from boundary_audit.collector.sqlite import SQLiteStorage
from boundary_audit.collector.testing import PostgresUnavailableError, throwaway_postgres
from boundary_audit.wire import IngestRequest
from tests.support import eventually

from .helpers import HTTP_POLL_INTERVAL_S, PB, ingest_head, make_request, post_ingest

pytestmark = pytest.mark.timeout(60)


def _post(
    server: CollectorServer, token: str | None, body: bytes | IngestRequest
) -> httpx.Response:
    return post_ingest(server.url, token, body)


def _raw(server: CollectorServer) -> socket.socket:
    parts = urlsplit(server.url)
    assert parts.hostname
    assert parts.port
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def _reply(sock: socket.socket) -> bytes:
    """A whole small JSON response (headers and body may come in several reads)."""
    data = b""
    while not data.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _count(storage: Storage) -> int:
    return int(storage.query("SELECT COUNT(*) FROM events")[0][0])


def test_ingest_and_idempotent_resend(collector_server: CollectorServer, storage: Storage) -> None:
    token = storage.create_token("agent-1", "ws")
    request = make_request(None, range(100))
    first = _post(collector_server, token, request)
    assert first.status_code == 200
    assert first.json() == {
        "batch_id": request.batch_id,
        "stored": 100,
        "duplicates": 0,
        "drop_reports": 0,
        "session_records": 0,
    }
    again = _post(collector_server, token, request)
    assert again.status_code == 200
    assert again.json()["duplicates"] == 100
    assert _count(storage) == 100
    metrics = httpx.get(collector_server.url + "/metrics").text
    assert "boundary_audit_collector_events_stored_total 100.0" in metrics
    assert "boundary_audit_collector_events_duplicate_total 100.0" in metrics
    assert "boundary_audit_collector_sessions_created_total 1.0" in metrics
    assert 'boundary_audit_collector_http_requests_total{route="ingest",status="200"} 2.0' in (
        metrics
    )
    assert "boundary_audit_collector_db_latency_seconds_bucket" in metrics


@pytest.mark.parametrize(
    "header", [None, "Bearer ba_wrong", "Basic abc", "Bearer", "Bearer not-our-format"]
)
def test_bad_credentials_get_401_and_store_nothing(
    collector_server: CollectorServer, storage: Storage, header: str | None
) -> None:
    headers = dict(PB)
    if header is not None:
        headers["Authorization"] = header
    response = httpx.post(
        collector_server.url + INGEST_PATH,
        content=make_request().SerializeToString(),
        headers=headers,
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert _count(storage) == 0


def test_revoked_and_reader_tokens_cannot_ingest(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("a")
    reader = storage.create_token("ops", scope="reader")
    assert _post(collector_server, reader, make_request()).status_code == 401
    assert _post(collector_server, token, make_request()).status_code == 200
    ident = storage.authenticate(token)
    assert ident is not None
    assert storage.revoke_token(ident.token_id)
    assert _post(collector_server, token, make_request()).status_code == 401
    assert _count(storage) == 3


def test_token_checked_before_body_is_read(collector_server: CollectorServer) -> None:
    """A 401 arrives although the announced body was never sent."""
    with _raw(collector_server) as sock:
        sock.sendall(ingest_head("ba_not-a-real-token", 1_000_000))
        reply = _reply(sock)
    assert reply.startswith(b"HTTP/1.1 401")


def test_body_cap_by_header_and_by_stream(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("a")
    with _raw(collector_server) as sock:
        sock.sendall(ingest_head(token, MAX_INGEST_BODY_BYTES + 1))
        reply = _reply(sock)
    assert reply.startswith(b"HTTP/1.1 413")
    assert f'"limit":{MAX_INGEST_BODY_BYTES}'.encode() in reply

    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"\x00" * (MAX_INGEST_BODY_BYTES // 4)

    # No Content-Length (chunked): the cap applies while streaming.
    response = httpx.post(
        collector_server.url + INGEST_PATH,
        content=chunks(),
        headers={**PB, "Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["limit"] == MAX_INGEST_BODY_BYTES
    assert _count(storage) == 0


@pytest.mark.parametrize(
    ("mutate", "detail"),
    [
        (lambda r: r.drops.add(report_id="d", source="elsewhere"), "drops[0].source"),
        (lambda r: r.drops.add(source="agent"), "drops[0].report_id is empty"),
        (lambda r: r.sessions.add(record_id="x", session_id="nope"), "sessions[0].session_id"),
        (lambda r: r.sessions.add(session_id=str(uuid.uuid4())), "sessions[0].record_id"),
    ],
)
def test_invalid_requests_get_400_naming_the_field(
    collector_server: CollectorServer, storage: Storage, mutate: object, detail: str
) -> None:
    token = storage.create_token("a")
    request = make_request(None, range(3))
    request.logs.extend(make_request(None, range(3)).logs)
    assert callable(mutate)
    mutate(request)
    response = _post(collector_server, token, request)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert detail in response.json()["detail"]
    assert _count(storage) == 0
    # The server keeps serving others.
    assert _post(collector_server, token, make_request()).status_code == 200


@pytest.mark.parametrize(
    ("mutate", "stored"),
    [
        (lambda r: setattr(r.logs[0], "session_id", "not-a-uuid"), 3),
        (lambda r: r.logs[0].logs[2].ClearField("http_request"), 6),
        (lambda r: r.logs[0].logs[1].ClearField("time"), 6),
        (lambda r: setattr(r.logs[0].logs[0], "sequence_number", -4), 5),
        (lambda r: setattr(r.logs[0].logs[0].http_request, "url", "x" * 9000), 6),
    ],
)
def test_odd_events_cost_at_most_themselves(
    collector_server: CollectorServer, storage: Storage, mutate: object, stored: int
) -> None:
    """What a valid frame can carry is stored; what cannot be is refused alone, as a drop."""
    token = storage.create_token("a")
    request = make_request(None, range(3))
    request.logs.extend(make_request(None, range(3)).logs)
    assert callable(mutate)
    mutate(request)
    response = _post(collector_server, token, request)
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == stored
    assert _count(storage) == stored
    refused = storage.query("SELECT SUM(count) FROM drop_counts")[0][0]
    assert (refused or 0) == 6 - stored


def test_garbage_body_and_wrong_content_type(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("a")
    garbage = _post(collector_server, token, b"\xff\xff\xff\xff garbage")
    assert garbage.status_code == 400
    assert "protobuf" in garbage.json()["detail"]
    json_body = httpx.post(
        collector_server.url + INGEST_PATH,
        content=b"{}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert json_body.status_code == 400
    assert "Content-Type" in json_body.json()["detail"]


def test_gaps_and_upstream_drops_are_counted(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("a")
    sid = str(uuid.uuid4())
    request = make_request(sid, [0, 1, 5])
    report = request.drops.add(report_id=str(uuid.uuid4()), session_id=sid, source="boundary")
    report.dropped["boundary_channel_full"] = 3
    assert _post(collector_server, token, request).json()["drop_reports"] == 1
    assert _post(collector_server, token, request).json()["drop_reports"] == 0
    detail = httpx.get(f"{collector_server.url}/api/v1/sessions/{sid}").json()
    assert detail["gaps"] == 3
    assert detail["dropped"] == 3
    assert detail["dropped_by_reason"] == {"boundary_channel_full": 3}
    metrics = httpx.get(collector_server.url + "/metrics").text
    assert "boundary_audit_collector_sequence_gaps_detected_total 3.0" in metrics
    assert (
        'boundary_audit_collector_reported_dropped_events_total{reason="boundary_channel_full"} 3.0'
        in metrics
    )
    page = httpx.get(f"{collector_server.url}/sessions/{sid}").text
    assert "boundary_channel_full: 3" in page
    unattributed = IngestRequest(batch_id=str(uuid.uuid4()))
    unattributed.drops.add(report_id=str(uuid.uuid4()), source="agent").dropped["spool_full"] = 7
    assert _post(collector_server, token, unattributed).json()["drop_reports"] == 1
    listing = httpx.get(collector_server.url + "/api/v1/sessions").json()
    assert listing["unattributed_dropped_by_reason"] == {"spool_full": 7}
    assert "spool_full: 7" in httpx.get(collector_server.url + "/").text
    assert "unsealed (the sender sends no seal): 3 stored, 3 lost (boundary_channel_full 3)" in page
    assert "3 below the highest number seen (5)" in page


def test_foreign_session_is_rejected(collector_server: CollectorServer, storage: Storage) -> None:
    sid = str(uuid.uuid4())
    assert _post(collector_server, storage.create_token("a"), make_request(sid)).status_code == 200
    response = _post(collector_server, storage.create_token("b"), make_request(sid, range(3, 5)))
    assert response.status_code == 400
    assert sid in response.json()["detail"]
    assert _count(storage) == 3


def test_overload_answers_429_with_retry_after(storage: Storage) -> None:
    token = storage.create_token("a")
    settings = AppSettings(require_read_auth=False, max_inflight_ingest=1)
    with CollectorServer(storage, settings) as server, _raw(server) as slow:
        body = make_request().SerializeToString()
        # One request holds the only slot: headers and half its body, then silence.
        slow.sendall(ingest_head(token, len(body)) + body[:5])

        def refused() -> httpx.Response | None:
            response = _post(server, token, make_request())
            return response if response.status_code == 429 else None

        response = eventually(
            refused, "a 429 while the only slot is held", within=20, interval=HTTP_POLL_INTERVAL_S
        )
        assert response is not None  # eventually returns only a truthy value
        assert int(response.headers["Retry-After"]) >= 1
        slow.sendall(body[5:])
        assert _reply(slow).startswith(b"HTTP/1.1 200")
        assert _post(server, token, make_request()).status_code == 200


def test_stalled_body_times_out_and_frees_its_slot(storage: Storage) -> None:
    token = storage.create_token("a")
    settings = AppSettings(require_read_auth=False, max_inflight_ingest=1, body_timeout_seconds=0.3)
    with CollectorServer(storage, settings) as server, _raw(server) as stalled:
        stalled.sendall(ingest_head(token, 100) + b"\x0a")
        reply = _reply(stalled)
        assert reply.startswith(b"HTTP/1.1 408")
        assert b'"error":"timeout"' in reply
        assert _post(server, token, make_request()).status_code == 200
        metrics = httpx.get(server.url + "/metrics").text
        assert 'boundary_audit_collector_ingest_rejected_total{reason="body_timeout"} 1.0' in (
            metrics
        )


def test_database_busy_answers_503_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with SQLiteStorage(path, busy_timeout_ms=100) as storage:
        storage.migrate()
        token = storage.create_token("a")
        with CollectorServer(storage, AppSettings(require_read_auth=False)) as server:
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                busy = _post(server, token, make_request())
                assert busy.status_code == 503
                assert int(busy.headers["Retry-After"]) >= 1
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert _post(server, token, make_request()).status_code == 200
            metrics = httpx.get(server.url + "/metrics").text
            assert (
                'boundary_audit_collector_ingest_rejected_total{reason="db_unavailable"} 1.0'
                in (metrics)
            )


def test_each_stored_event_is_one_escaped_json_log_line(storage: Storage) -> None:
    stream = io.StringIO()
    settings = AppSettings(require_read_auth=False, event_log_stream=stream)
    with CollectorServer(storage, settings) as collector_server:
        token = storage.create_token("agent-7", "ws-7")
        hostile = 'https://evil.test/<script>alert(1)</script>"\n{"event":"forged"}'
        sid = str(uuid.uuid4())
        request = make_request(sid, range(2), url=hostile)
        assert _post(collector_server, token, request).status_code == 200
        assert (
            _post(collector_server, token, request).status_code == 200
        )  # duplicates: no new lines
    raw = stream.getvalue().splitlines()
    # The newline inside the URL is escaped: no forged line appears.
    assert not any(line.startswith('{"event":"forged"') for line in raw)
    lines = [json.loads(line) for line in raw]
    events = [line for line in lines if line["event"] == "boundary_event"]
    assert len(events) == 2
    first = events[0]
    assert first["url"] == hostile
    assert first["decision"] == "allowed"
    assert events[1]["decision"] == "denied"
    assert (first["session"], first["agent"], first["workspace"]) == (sid, "agent-7", "ws-7")
    assert first["method"] == "GET"
    assert first["rule"] == "domain=example.com"
    assert first["event_time"].endswith("Z")
    assert first["level"] == "info"
    assert first["component"] == "collector.audit"


def test_query_api_pages_and_filters(collector_server: CollectorServer, storage: Storage) -> None:
    token = storage.create_token("a")
    sid = str(uuid.uuid4())
    _post(collector_server, token, make_request(sid, range(30), url="https://h{seq}.example/p"))
    sessions = httpx.get(collector_server.url + "/api/v1/sessions").json()
    assert [s["session_id"] for s in sessions["sessions"]] == [sid]
    assert sessions["sessions"][0]["allowed"] == 15
    detail = httpx.get(f"{collector_server.url}/api/v1/sessions/{sid}").json()
    assert detail["denied"] == 15
    assert detail["dropped_by_reason"] == {}
    seqs: list[int] = []
    params: dict[str, str | int] = {"limit": 7, "decision": "denied"}
    while True:
        page = httpx.get(
            f"{collector_server.url}/api/v1/sessions/{sid}/events", params=params
        ).json()
        seqs += [e["sequence_number"] for e in page["events"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seqs == list(range(1, 30, 2))
    by_host = httpx.get(
        collector_server.url + "/api/v1/events", params={"host": "h3.example"}
    ).json()
    assert [e["sequence_number"] for e in by_host["events"]] == [3]
    missing = httpx.get(f"{collector_server.url}/api/v1/sessions/{uuid.uuid4()}/events")
    assert missing.status_code == 404
    bad = httpx.get(collector_server.url + "/api/v1/events", params={"limit": 0})
    assert bad.status_code == 400
    assert "limit" in bad.json()["detail"]
    bad_time = httpx.get(collector_server.url + "/api/v1/events", params={"since": "yesterday"})
    assert bad_time.status_code == 400


def test_reads_need_a_reader_token_off_loopback(storage: Storage) -> None:
    token = storage.create_token("a")
    reader = storage.create_token("ops", scope="reader")
    settings = AppSettings(require_read_auth=True)
    with CollectorServer(storage, settings) as server:
        assert _post(server, token, make_request()).status_code == 200
        assert httpx.get(server.url + "/api/v1/sessions").status_code == 401
        agent_read = httpx.get(
            server.url + "/api/v1/sessions", headers={"Authorization": f"Bearer {token}"}
        )
        assert agent_read.status_code == 401
        ok = httpx.get(
            server.url + "/api/v1/sessions", headers={"Authorization": f"Bearer {reader}"}
        )
        assert ok.status_code == 200
        assert len(ok.json()["sessions"]) == 1
        # The UI sends people to a login form, which sets an HttpOnly cookie.
        ui = httpx.get(server.url + "/")
        assert ui.status_code == 303
        assert ui.headers["location"].startswith("/login")
        with httpx.Client(base_url=server.url) as browser:
            failed = browser.post("/login", data={"token": token, "next": "/"})
            assert failed.status_code == 401
            assert "ba_reader" not in browser.cookies
            login = browser.post("/login", data={"token": reader, "next": "//evil.test/"})
            assert login.status_code == 303
            assert login.headers["location"] == "/"
            cookie = login.headers["set-cookie"].lower()
            assert "httponly" in cookie
            assert "samesite=strict" in cookie
            page = browser.get("/")
            assert page.status_code == 200
            assert "claude-code" in page.text


def test_reads_are_open_on_loopback(collector_server: CollectorServer) -> None:
    assert httpx.get(collector_server.url + "/api/v1/sessions").status_code == 200
    assert httpx.get(collector_server.url + "/").status_code == 200
    assert httpx.get(collector_server.url + "/healthz").text == "ok\n"


def test_second_process_sees_first_process_data(tmp_path: Path) -> None:
    """Two storages on one SQLite file (e.g. the CLI next to a running collector_server)."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with open_storage(url) as one, open_storage(url) as two:
        token = one.create_token("a")
        with CollectorServer(one, AppSettings(require_read_auth=False)) as server:
            assert _post(server, token, make_request(None, range(4))).status_code == 200
        assert _count(two) == 4


def test_session_page_timeline_has_a_slot_per_minute(
    collector_server: CollectorServer, storage: Storage
) -> None:
    token = storage.create_token("a")
    sid = str(uuid.uuid4())
    minute = 60 * 10**9
    base = (time.time_ns() // minute) * minute
    _post(collector_server, token, make_request(sid, range(3), time_ns=base))
    _post(collector_server, token, make_request(sid, range(3, 4), time_ns=base + 3 * minute))
    page = httpx.get(f"{collector_server.url}/sessions/{sid}").text
    labels = [line for line in page.splitlines() if line.startswith("<g><title>")]
    assert len(labels) == 4
    assert labels[0].endswith("2 allowed, 1 denied</title>")
    assert labels[1].endswith("0 allowed, 0 denied</title>")
    assert labels[3].endswith("0 allowed, 1 denied</title>")
    assert "peak 3/min" in page


@pytest.mark.postgres
def test_postgresql_outage_answers_503_then_recovers() -> None:
    """Its own (durable) server, crashed and restarted under a running collector."""
    try:
        pg_context = throwaway_postgres(durable=True)
        pg = pg_context.__enter__()
    except PostgresUnavailableError as exc:
        pytest.skip(f"no throwaway PostgreSQL: {exc}")
    try:
        # A short pool timeout: the outage is answered in 1 s instead of 5.
        with PostgresStorage(pg.new_database(), pool_timeout=1.0) as storage:
            storage.migrate()
            token = storage.create_token("a")
            settings = AppSettings(require_read_auth=False)
            with CollectorServer(storage, settings) as server:
                assert _post(server, token, make_request()).status_code == 200
                pg.stop()
                down = _post(server, token, make_request())
                assert down.status_code == 503
                assert int(down.headers["Retry-After"]) >= 1
                assert httpx.get(server.url + "/healthz").status_code == 503
                pg.start()
                statuses: list[int] = []

                def recovered() -> bool:
                    statuses.append(_post(server, token, make_request()).status_code)
                    return statuses[-1] == 200

                eventually(
                    recovered,
                    "ingest to succeed after the restart",
                    within=30,
                    interval=HTTP_POLL_INTERVAL_S,
                )
                assert set(statuses) <= {200, 503}
                assert _count(storage) == 6
    finally:
        pg_context.__exit__(None, None, None)
