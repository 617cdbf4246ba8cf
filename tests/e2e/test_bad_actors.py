"""Bad actors next to real traffic: a hostile local process on the agent socket,
and a forged agent token at the collector_process. The real traffic is unaffected."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from boundary_audit.wire import IngestRequest

from .helpers import (
    AgentFactory,
    CollectorProcess,
    release,
    start_client,
    wait_at_checkpoint,
    wait_until_accounted,
)

pytestmark = pytest.mark.timeout(300)

#: Confined commands sending real traffic while the bad actor runs.
CLIENTS = 2
#: Requests per command: enough traffic before, during and after the attack.
REQUESTS_PER_CLIENT = 1500
#: Checkpoint 1 starts the attack, checkpoint 2 waits for it to end: the
#: traffic in between overlaps it.
CHECKPOINTS = 2
#: The agent's stall timeout for a connection inside a frame: short, so the
#: slow partial frame is cut off quickly.
IDLE_TIMEOUT_S = 2.0
#: Each attack counts one bad frame at the agent: unknown tag, oversize
#: header, undecodable payload, stalled partial frame.
ATTACKS = 4

#: The hostile process: one connection per attack; reports, per attack, whether
#: the agent hung up on it (EOF within the deadline) as JSON on stdout.
BAD_ACTOR_SCRIPT = r"""
import json, socket, struct, sys
path, idle = sys.argv[1], float(sys.argv[2])
def closed_by_peer(s, deadline):
    s.settimeout(deadline)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except socket.timeout:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s
out = {}
s = connect()
s.sendall(b"\xffGARBAGE that is no frame at all\x00\x01\x02" * 4)  # tag 0xff: unknown
out["garbage"] = closed_by_peer(s, 30)
s.close()
s = connect()
s.sendall(struct.pack(">I", (2 << 24) | 0xFFFFFF))  # tag 2, 16 MiB announced
out["oversize"] = closed_by_peer(s, 30)
s.close()
s = connect()
payload = b"\xff\xff\xff\xff\xff\xff\xff\xff"  # not a protobuf message
s.sendall(struct.pack(">I", (2 << 24) | len(payload)) + payload)
out["undecodable_kept_open"] = not closed_by_peer(s, 1.0)
s.close()
s = connect()
s.sendall(struct.pack(">I", (2 << 24) | 100))  # a 100-byte frame...
for _ in range(3):  # ...arriving slowly, a byte every quarter timeout, never finished
    if closed_by_peer(s, idle / 4):  # a wait that the agent must not end early
        break
    s.sendall(b"\x0a")
out["slow_partial"] = closed_by_peer(s, idle * 10)
s.close()
print(json.dumps(out))
"""


def test_hostile_socket_peer_and_forged_token_leave_real_traffic_intact(
    tmp_path: Path,
    upstream: int,
    collector_process: CollectorProcess,
    make_agent_process: AgentFactory,
) -> None:
    agent = make_agent_process("--idle-timeout", str(IDLE_TIMEOUT_S))
    agent.start()
    clients = [
        start_client(
            tmp_path,
            agent.socket_path,
            upstream,
            f"b{i}",
            REQUESTS_PER_CLIENT,
            checkpoints=CHECKPOINTS,
        )
        for i in range(CLIENTS)
    ]
    wait_at_checkpoint(clients, 1, CHECKPOINTS)
    attacker = subprocess.Popen(
        [sys.executable, "-c", BAD_ACTOR_SCRIPT, str(agent.socket_path), str(IDLE_TIMEOUT_S)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    release(clients, 1)
    wait_at_checkpoint(clients, 2, CHECKPOINTS)
    out, err = attacker.communicate(timeout=120)
    release(clients, 2)
    assert attacker.returncode == 0, err
    assert json.loads(out) == {
        "garbage": True,
        "oversize": True,
        "undecodable_kept_open": True,
        "slow_partial": True,
    }

    # A forged agent token: refused before the body is read, nothing stored.
    forged_session = str(uuid.uuid4())
    forged = IngestRequest(batch_id=str(uuid.uuid4()))
    report = forged.logs.add(session_id=forged_session, confined_process_name="forger")
    log = report.logs.add(allowed=True, sequence_number=0)
    log.http_request.method = "GET"
    log.http_request.url = "https://evil.example/"
    response = httpx.post(
        f"{collector_process.url}/api/v1/boundary-logs",
        content=forged.SerializeToString(),
        headers={
            "Authorization": f"Bearer ba_{secrets.token_urlsafe(32)}",
            "Content-Type": "application/x-protobuf",
        },
        timeout=30,
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"

    results = [c.finish() for c in clients]

    sessions = wait_until_accounted(collector_process, results)
    assert forged_session not in sessions
    assert collector_process.session(forged_session) is None
    assert set(sessions) == {r.session_id for r in results}
    for r in results:
        assert (r.summary["dropped"], r.summary["undelivered"]) == (0, 0), r.summary
        row = sessions[r.session_id]
        assert (row["allowed"], row["denied"], row["gaps"]) == (r.allowed, r.denied, 0), row
        assert sorted(collector_process.sequence_numbers_cli(r.session_id, r.made + 100)) == list(
            range(r.made)
        )
    assert agent.metric("boundary_audit_agent_dropped_frames_total", reason="bad_frame") == (
        ATTACKS
    )
    # The agent's log names each attacking connection and why it ended.
    closed = [
        (line["reason"], line["bad_frames"])
        for line in agent.log_lines()
        if line.get("event") == "sender disconnected" and line.get("peer_pid") == attacker.pid
    ]
    assert sorted(closed) == [
        ("eof", 1),  # the undecodable frame was skipped; the attacker hung up
        ("idle_timeout", 1),
        ("protocol_error", 1),
        ("protocol_error", 1),
    ]
    # The real senders never lost their connection to the attack: one
    # connection each, plus one per attack.
    assert agent.metric("boundary_audit_agent_connections_total") == CLIENTS + ATTACKS
