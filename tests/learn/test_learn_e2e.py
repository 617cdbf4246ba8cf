"""Learn mode end to end: a real ``run --learn`` through the real proxy to a
local server, stored by the real agent and collector; ``rules suggest`` from
that session; a real enforcing ``run`` with the suggestion allows the same
requests; ``rules replay`` of the suggestion exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from boundary_audit.cli.config_file import parse_config_text
from boundary_audit.collector.model import SESSION_EVENTS_PATH
from tests.e2e.helpers import API_TIMEOUT_S, CollectorProcess, wait_until_complete
from tests.support.processes import cli_argv, run_cli
from tests.support.services import AgentProcess

pytestmark = pytest.mark.timeout(300)

#: The confined command: each (method, path) through the proxy, printing the statuses.
SCRIPT = r"""
import http.client, json, os, sys, urllib.parse
port, requests = int(sys.argv[1]), json.loads(sys.argv[2])
proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
statuses = []
for method, path in requests:
    conn = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=60)
    conn.request(method, f"http://127.0.0.1:{port}{path}")
    response = conn.getresponse()
    response.read()
    statuses.append(response.status)
    conn.close()
print(json.dumps(statuses))
"""
#: Rules in force while learning: /ok/* would be allowed, the rest denied.
LEARN_RULE = "domain=127.0.0.1 path=/ok/*"
#: What the agent does: more files under /api/items/ than the merge threshold.
REQUESTS = [
    ("GET", "/ok/1"),
    ("GET", "/"),
    ("POST", "/upload"),
    *(("GET", f"/api/items/{i}") for i in range(8)),
]
#: Not in the history: the suggestion must deny it.
UNSEEN = ("GET", "/admin")
#: Seconds a confined run may take (proxy start, a dozen requests, flush).
RUN_TIMEOUT_S = 120.0
#: Seconds `run` keeps delivering its events to the agent at exit.
FLUSH_TIMEOUT_S = "60"


def _run(
    tmp: Path, agent: AgentProcess, port: int, requests: list[tuple[str, str]], *flags: str
) -> tuple[str, list[int]]:
    session_id = str(uuid.uuid4())
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config")}
    env.pop("BOUNDARY_ALLOW", None)
    result = run_cli_env(
        env,
        "run",
        "--session-id",
        session_id,
        "--audit-socket",
        str(agent.socket_path),
        "--audit-log-level",
        "error",
        "--audit-flush-timeout",
        FLUSH_TIMEOUT_S,
        *flags,
        "--",
        sys.executable,
        "-c",
        SCRIPT,
        str(port),
        json.dumps(requests),
    )
    statuses: list[int] = json.loads(result.stdout.strip().splitlines()[-1])
    return session_id, statuses


def run_cli_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``boundary-audit ARGS`` in ``env`` (a private config home); must exit 0."""
    result = subprocess.run(
        cli_argv(*args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, check=False
    )
    assert result.returncode == 0, f"run exited {result.returncode}: {result.stderr[-3000:]}"
    return result


def _events(collector: CollectorProcess, session_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        collector.url + SESSION_EVENTS_PATH.format(session_id=session_id),
        params={"limit": 1000},
        timeout=API_TIMEOUT_S,
    )
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def test_learn_suggest_run_replay(
    tmp_path: Path,
    collector_process: CollectorProcess,
    agent_process: AgentProcess,
    upstream: int,
) -> None:
    learn_id, statuses = _run(
        tmp_path, agent_process, upstream, REQUESTS, "--learn", "--allow", LEARN_RULE
    )
    assert 403 not in statuses  # learn mode denies nothing
    wait_until_complete(collector_process, learn_id)
    events = {e["url"].split(str(upstream), 1)[1]: e for e in _events(collector_process, learn_id)}
    assert all(e["allowed"] for e in events.values())
    assert events["/ok/1"]["matched_rule"] == f"learn:allow {LEARN_RULE}"
    assert events["/upload"]["matched_rule"] == "learn:deny"

    # Suggest from the database, replay through the collector's API.
    suggested = run_cli("rules", "suggest", "--session", learn_id, "--db", collector_process.db)
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(suggested.stdout)
    rules = parse_config_text(suggested.stdout)["rules"].value
    # Methods grouped; 8 items > the default threshold merge into /api/items/*.
    assert rules == (
        "method=GET domain=127.0.0.1 path=/,/api/items/*,/ok/1",
        "method=POST domain=127.0.0.1 path=/upload",
    )
    assert f"# {len(REQUESTS) - 1} requests (GET {len(REQUESTS) - 1})" in suggested.stdout
    replayed = run_cli(
        "rules",
        "replay",
        str(rule_file),
        "--session",
        learn_id,
        "--collector-url",
        collector_process.url,
        check=False,
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "0 newly denied, 0 newly allowed" in replayed.stdout

    # Enforcing with the suggestion: the same requests pass, an unseen one does not.
    enforced_id, statuses = _run(
        tmp_path, agent_process, upstream, [*REQUESTS, UNSEEN], "--config", str(rule_file)
    )
    assert 403 not in statuses[:-1]
    assert statuses[-1] == 403
    wait_until_complete(collector_process, enforced_id)
    enforced = _events(collector_process, enforced_id)
    assert sum(e["allowed"] for e in enforced) == len(REQUESTS)

    # Against the rules the learning ran with, the suggestion allows more (exit 1).
    against_rules = run_cli(
        "rules",
        "replay",
        str(rule_file),
        "--session",
        learn_id,
        "--db",
        collector_process.db,
        "--baseline",
        "rules",
        check=False,
    )
    assert against_rules.returncode == 1
    assert f"newly allowed: {len(REQUESTS) - 1} requests to 1 host" in against_rules.stdout

    # --since with --agent: both sessions of the agent; another agent has none.
    both = run_cli(
        "rules",
        "suggest",
        "--since",
        "1h",
        "--agent",
        "e2e-agent",
        "--collector-url",
        collector_process.url,
    )
    assert f"{2 * len(REQUESTS) + 1} requests since 1h, agent e2e-agent" in both.stdout
    nobody = run_cli(
        "rules",
        "suggest",
        "--since",
        "1h",
        "--agent",
        "nobody",
        "--db",
        collector_process.db,
        check=False,
    )
    assert nobody.returncode == 2
    assert "no stored requests match" in nobody.stderr
