"""The real pipeline: SocketAuditor -> agent process -> collector process -> SQLite."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from boundary_audit.auditor import AuditEvent, SocketAuditor
from tests.support import eventually, free_port, stop_process
from tests.support.processes import cli_argv, run_cli

from .helpers import HTTP_POLL_INTERVAL_S, CollectorProcess, start_collector

pytestmark = pytest.mark.timeout(120)
#: Seconds the whole pipeline may take to deliver on a loaded 2-core machine.
DELIVERY_TIMEOUT_S = 60.0
#: Seconds one status request may take (it answers in milliseconds).
REQUEST_TIMEOUT_S = 10.0
EVENTS = 250


def _start_agent(tmp: Path, collector_url: str, token: str) -> subprocess.Popen[bytes]:
    metrics_port = free_port()
    with (tmp / "agent.log").open("wb") as log:
        proc = subprocess.Popen(
            cli_argv(
                "agent",
                "--socket",
                str(tmp / "agent.sock"),
                "--collector-url",
                collector_url,
                "--spool-dir",
                str(tmp / "spool"),
                "--metrics-listen",
                f"127.0.0.1:{metrics_port}",
            ),
            env={**os.environ, "BOUNDARY_AUDIT_AGENT_TOKEN": token},
            stderr=log,
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            log_text = (tmp / "agent.log").read_text()[-3000:]
            raise RuntimeError(f"agent exited {proc.returncode}: {log_text}")
        try:
            return httpx.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=1).is_success
        except httpx.HTTPError:
            return False

    try:
        eventually(
            healthy,
            "the agent to answer /healthz",
            within=DELIVERY_TIMEOUT_S,
            interval=HTTP_POLL_INTERVAL_S,
        )
    except BaseException:
        stop_process(proc)
        raise
    return proc


def _send(socket_path: Path, session_id: uuid.UUID) -> None:
    with SocketAuditor(
        socket_path, session_id=session_id, confined_process_name="pipeline-test"
    ) as auditor:
        for i in range(EVENTS):
            allowed = i % 3 != 0
            auditor.audit(
                AuditEvent(
                    method="GET",
                    url=f"https://pkg{i % 5}.example/file/{i}",
                    host=f"pkg{i % 5}.example",
                    allowed=allowed,
                    rule="domain=*.example" if allowed else None,
                )
            )


def _wait_for(url: str, session_id: uuid.UUID) -> dict[str, Any]:
    """The session's summary once all its events have arrived."""

    def complete() -> dict[str, Any]:
        response = httpx.get(f"{url}/api/v1/sessions/{session_id}", timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200, f"session not there yet: {response.status_code}"
        summary: dict[str, Any] = response.json()
        assert summary["allowed"] + summary["denied"] >= EVENTS, f"not all arrived: {summary}"
        return summary

    return eventually(
        complete, "all events to arrive", within=DELIVERY_TIMEOUT_S, interval=HTTP_POLL_INTERVAL_S
    )


def test_events_flow_from_auditor_through_agent_to_collector(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    token = run_cli("tokens", "create", "--agent", "ws-agent", "--workspace", "ws", "--db", db)
    collector = start_collector(db, tmp_path / "collector.log")
    agent = _start_agent(tmp_path, collector.url, token.stdout.strip())
    try:
        session_id = uuid.uuid4()
        _send(tmp_path / "agent.sock", session_id)
        summary = _wait_for(collector.url, session_id)
        assert (summary["allowed"], summary["denied"], summary["gaps"]) == (166, 84, 0)
        assert (summary["agent"], summary["workspace"]) == ("ws-agent", "ws")
        assert summary["confined_process_name"] == "pipeline-test"
        events = httpx.get(
            f"{collector.url}/api/v1/sessions/{session_id}/events",
            params={"host": "pkg3.example", "limit": 1000},
        ).json()["events"]
        assert [e["sequence_number"] for e in events] == list(range(3, EVENTS, 5))
    finally:
        stop_process(agent)
        collector.stop()


def test_agent_spools_while_the_collector_is_down(tmp_path: Path) -> None:
    """Events sent before the collector exists arrive once it starts, each once."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    token = run_cli("tokens", "create", "--agent", "a", "--db", db).stdout.strip()
    port = free_port()
    agent = _start_agent(tmp_path, f"http://127.0.0.1:{port}", token)
    collector: CollectorProcess | None = None
    try:
        session_id = uuid.uuid4()
        _send(tmp_path / "agent.sock", session_id)
        collector = start_collector(db, tmp_path / "collector.log", "--listen", f"127.0.0.1:{port}")
        summary = _wait_for(collector.url, session_id)
        assert summary["allowed"] + summary["denied"] == EVENTS
        assert summary["gaps"] == 0
    finally:
        stop_process(agent)
        if collector is not None:
            collector.stop()
