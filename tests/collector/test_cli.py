"""The CLI and collector processes, as an operator runs them."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from boundary_audit.collector.testing import ThrowawayPostgres
from boundary_audit.wire import IngestRequest
from tests.support import eventually, stop_process
from tests.support.processes import cli_argv, run_cli

from .helpers import (
    HTTP_POLL_INTERVAL_S,
    CollectorProcess,
    add_record,
    ingest_head,
    json_lines,
    make_request,
    post_ingest,
    start_collector,
)

pytestmark = pytest.mark.timeout(120)
#: Between posts while waiting for ``logs --follow`` to print (it polls once a second).
FOLLOW_POST_INTERVAL_S = 0.5
#: Seconds a follower gets to exit after SIGINT.
FOLLOWER_STOP_TIMEOUT_S = 10.0
#: How long a collector told to stop must keep running for an unfinished request
#: to count as waited for (it exits within ~0.1 s when nothing holds it).
STILL_RUNNING_S = 0.5


def _post(url: str, token: str, request: IngestRequest) -> httpx.Response:
    return post_ingest(url, token, request)


def test_tokens_create_list_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    token = run_cli("tokens", "create", "--agent", "ci-runner", "--workspace", "w1", "--db", db)
    secret = token.stdout.strip()
    assert "token id" in token.stderr
    assert secret.startswith("ba_")
    assert len(secret) == 46
    run_cli("tokens", "create", "--agent", "ops", "--reader", "--db", db)
    listed = json_lines(run_cli("tokens", "list", "--jsonl", "--db", db).stdout)
    assert [(t["agent"], t["scope"], t["revoked"]) for t in listed] == [
        ("ci-runner", "agent", None),
        ("ops", "reader", None),
    ]
    assert secret not in run_cli("tokens", "list", "--db", db).stdout
    assert run_cli("tokens", "revoke", str(listed[0]["token_id"]), "--db", db).returncode == 0
    again = run_cli("tokens", "revoke", str(listed[0]["token_id"]), "--db", db, check=False)
    assert again.returncode == 1
    assert "no live token" in again.stderr
    assert json_lines(run_cli("tokens", "list", "--jsonl", "--db", db).stdout)[0]["revoked"]


def test_collector_process_ingest_query_and_clean_shutdown(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    token = run_cli("tokens", "create", "--agent", "agent-1", "--db", db).stdout.strip()
    proc = start_collector(db, tmp_path / "collector.log")
    try:
        sid = str(uuid.uuid4())
        request = make_request(sid, range(6), url="https://pypi.example/{seq}")
        request.logs.extend(make_request(None, range(2), url="https://other.example/").logs)
        assert _post(proc.url, token, request).json()["stored"] == 8
        sealed = IngestRequest()
        add_record(sealed, sid, opened=True, seal={"events_made": 8, "undelivered": 2})
        assert _post(proc.url, token, sealed).status_code == 200
        verdict = "incomplete: 2 of 8 unaccounted for (undelivered 2), 6 stored"
        # Both ways of reading: through the collector and straight from the file.
        for source in (["--collector-url", proc.url], ["--db", db]):
            sessions = json_lines(run_cli("sessions", "--jsonl", *source).stdout)
            assert {s["session_id"] for s in sessions} >= {sid}
            (mine,) = [s for s in sessions if s["session_id"] == sid]
            completeness = mine["completeness"]
            assert isinstance(completeness, dict)
            assert completeness["summary"] == verdict
            # The table shows the state and what is missing; --json the whole verdict.
            row = next(
                line for line in run_cli("sessions", *source).stdout.splitlines() if sid[:8] in line
            )
            assert " incomplete " in row
            assert " 2 " in row
            followed = run_cli("logs", "--jsonl", "--session", sid, *source)
            assert f"session {sid}: {verdict}" in followed.stderr
            denied = json_lines(
                run_cli("logs", "--jsonl", "--denied", "--host", "pypi.example", *source).stdout
            )
            # Newest first.
            assert [(e["session_id"], e["sequence_number"]) for e in denied] == [
                (sid, 5),
                (sid, 3),
                (sid, 1),
            ]
            # The documented keys, spelled out here (not taken from the code under test).
            keys = (
                "session_id sequence_number time allowed method url host matched_rule"
                " time_unix_ns altered"
            )
            assert set(denied[0]) == set(keys.split())
            one = json_lines(
                run_cli(
                    "logs", "--jsonl", "--session", sid.upper(), "--since", "1h", *source
                ).stdout
            )
            assert [e["sequence_number"] for e in one] == list(range(6))[::-1]
        table = run_cli("logs", "--db", db, "--session", sid)
        assert "pypi.example" in table.stdout
        # The verdict is for people: on stderr, so the table alone goes down a pipe.
        assert f"session {sid}: {verdict}" in table.stderr
        lines = proc.log_lines()
        audit = [line for line in lines if line.get("event") == "boundary_event"]
        assert len(audit) == 8
        assert {line["agent"] for line in audit} == {"agent-1"}
    finally:
        code = proc.stop()
    assert code == 0
    assert any(line.get("event") == "collector_stopped" for line in proc.log_lines())


def test_logs_follow_prints_new_events(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    token = run_cli("tokens", "create", "--agent", "a", "--db", db).stdout.strip()
    proc = start_collector(db, tmp_path / "collector.log")
    follower = subprocess.Popen(
        cli_argv("logs", "--follow", "--jsonl", "--collector-url", proc.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _post(proc.url, token, make_request(None, range(3), url="https://before.example/"))
        lines: list[dict[str, object]] = []
        reader = threading.Thread(
            target=lambda: lines.extend(
                json.loads(follower.stdout.readline()) for _ in range(2) if follower.stdout
            ),
            daemon=True,
        )
        reader.start()

        def printed_two() -> bool:
            # Keep adding events until the follower has printed two lines; the
            # follower starts at the tail, so the first batch may predate it.
            _post(proc.url, token, make_request(None, range(1), url="https://after.example/"))
            return not reader.is_alive()

        eventually(printed_two, "the follower to print two events", interval=FOLLOW_POST_INTERVAL_S)
        assert len(lines) == 2
        assert {line["host"] for line in lines} <= {"after.example", "before.example"}
        assert any(line["host"] == "after.example" for line in lines)
    finally:
        stop_process(follower, FOLLOWER_STOP_TIMEOUT_S, sig=signal.SIGINT)
        proc.stop()


def test_retention_flag_runs_in_the_background_by_arrival_time(tmp_path: Path) -> None:
    """Events stamped 2001 by a wrong clock are not deleted at once: they arrived just now."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    token = run_cli("tokens", "create", "--agent", "a", "--db", db).stdout.strip()
    proc = start_collector(
        db, tmp_path / "collector.log", "--retention", "1h", "--prune-interval", "0.2s"
    )
    try:
        wrong_clock = make_request(None, range(5), time_ns=1_000_000_000 * 10**9)
        assert _post(proc.url, token, wrong_clock).json()["stored"] == 5

        def ran_twice() -> bool:
            text = httpx.get(proc.url + "/metrics").text
            runs = re.search(r"^boundary_audit_collector_retention_runs_total (\S+)", text, re.M)
            return runs is not None and float(runs.group(1)) >= 2

        # Two passes: at least one ran wholly after the events were stored.
        eventually(ran_twice, "two retention passes", interval=HTTP_POLL_INTERVAL_S)
        assert "boundary_audit_collector_retention_pruned_events_total 0.0" in (
            httpx.get(proc.url + "/metrics").text
        )
        events = json_lines(run_cli("logs", "--jsonl", "--db", db).stdout)
        assert len(events) == 5
    finally:
        proc.stop()


def test_bad_database_url_fails_clearly(tmp_path: Path) -> None:
    result = run_cli("collector", "--db", "mysql://nope", check=False)
    assert result.returncode == 2
    assert "unsupported database URL" in result.stderr
    result = run_cli("tokens", "list", "--db", "postgres-typo://x", check=False)
    assert result.returncode == 1
    assert "unsupported database URL" in result.stderr
    result = run_cli("sessions", "--collector-url", "http://127.0.0.1:9", check=False)
    assert result.returncode == 1
    assert "cannot reach the collector" in result.stderr


@pytest.mark.postgres
def test_two_collectors_share_one_postgresql(pg_server: ThrowawayPostgres, tmp_path: Path) -> None:
    """Replicas behind a load balancer: concurrent overlapping batches, stored once."""
    db = pg_server.new_database()
    # Started together: both migrate the fresh database at once (advisory lock).
    started: dict[str, CollectorProcess] = {}
    starters = [
        threading.Thread(
            target=lambda n=name: started.__setitem__(n, start_collector(db, tmp_path / f"{n}.log"))
        )
        for name in ("one", "two")
    ]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    first, second = started["one"], started["two"]
    token = run_cli("tokens", "create", "--agent", "a", "--db", db).stdout.strip()
    try:
        sid = str(uuid.uuid4())
        batches = [make_request(sid, range(start, start + 50)) for start in range(0, 500, 25)]
        results: list[httpx.Response] = []

        def send(url: str, chunk: list[IngestRequest]) -> None:
            results.extend(_post(url, token, request) for request in chunk)

        threads = [
            threading.Thread(target=send, args=(first.url, batches)),
            threading.Thread(target=send, args=(second.url, batches[::-1])),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.status_code for r in results] == [200] * 40
        assert sum(r.json()["stored"] for r in results) == 525
        summary = httpx.get(f"{second.url}/api/v1/sessions/{sid}").json()
        assert summary["allowed"] + summary["denied"] == 525
        assert summary["gaps"] == 0
        seen = json_lines(run_cli("logs", "--jsonl", "--all", "--session", sid, "--db", db).stdout)
        assert [e["sequence_number"] for e in seen] == list(range(525))[::-1]
    finally:
        first.stop()
        second.stop()


def test_sigterm_finishes_the_request_in_flight(tmp_path: Path) -> None:
    """Graceful shutdown: a batch whose body is still arriving is stored and acknowledged."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    token = run_cli("tokens", "create", "--agent", "a", "--db", db).stdout.strip()
    proc = start_collector(db, tmp_path / "collector.log")
    body = make_request(None, range(20)).SerializeToString()
    host, port = proc.url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(ingest_head(token, len(body)) + body[:10])
            # Its token checked (the first and only authentication): the
            # handler is reading the body.
            authenticated = 'db_latency_seconds_count{operation="authenticate"} 1.0'
            eventually(
                lambda: authenticated in httpx.get(proc.url + "/metrics").text,
                "the request to reach its handler",
                interval=HTTP_POLL_INTERVAL_S,
            )
            proc.proc.send_signal(signal.SIGTERM)
            eventually(lambda: _refuses_connections(host, int(port)), "the listener closed")
            # A sleep that proves a negative: told to stop, the collector does
            # not exit while our request is unfinished.
            time.sleep(STILL_RUNNING_S)
            assert proc.proc.poll() is None  # still waiting for our request
            sock.sendall(body[10:])
            reply = b""
            while chunk := sock.recv(65536):  # shutting down: closed after the reply
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        assert b'"stored":20' in reply
        assert proc.proc.wait(timeout=30) == 0
    finally:
        proc.stop()
    assert len(json_lines(run_cli("logs", "--jsonl", "--db", db).stdout)) == 20


def _refuses_connections(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_no_evidence_flag_keeps_no_leaves_and_verify_names_what_it_stored(tmp_path: Path) -> None:
    """``--no-evidence`` (the benchmark's "off") stores events without leaves; a
    collector started without it logs them again, and verify names the gap."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    token = run_cli("tokens", "create", "--agent", "a", "--db", db).stdout.strip()
    off_session, on_session = str(uuid.uuid4()), str(uuid.uuid4())
    proc = start_collector(db, tmp_path / "off.log", "--no-evidence")
    try:
        assert _post(proc.url, token, make_request(off_session, range(4))).json()["stored"] == 4
    finally:
        proc.stop()
    assert "evidence_off" in (tmp_path / "off.log").read_text()
    proc = start_collector(db, tmp_path / "on.log")
    try:
        assert _post(proc.url, token, make_request(on_session, range(3))).json()["stored"] == 3
    finally:
        proc.stop()
    assert "evidence_off" not in (tmp_path / "on.log").read_text()
    result = run_cli("verify", "--db", db, "--json", check=False)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    inserted = [
        (f["session"], f["sequence_number"]) for f in report["findings"] if f["kind"] == "inserted"
    ]
    assert sorted(inserted) == [(off_session, n) for n in range(4)]
    assert report["events_checked"] == 7
