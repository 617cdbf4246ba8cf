"""Issue 10 items 1 and 4: the trail and its secrets are out of the command's reach.

The confined command tries what an attacker of the same user would: forge
frames for its own session on the agent's socket (sequence numbers 0..49,
before its real requests, so that the real events would be discarded as
duplicates), read the proxy CA's private key, write the quickstart's SQLite
database, plant a spill file, read the agent's spool, and take the covers
off. Every step must fail, and exactly the two real events must be stored.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest

from boundary_audit.confine.protect import PROTECT_ENV
from tests.e2e.helpers import DELIVERY_TIMEOUT_S, POLL_S, CollectorProcess
from tests.support import eventually
from tests.support.services import AgentProcess

from .helpers import requires_landlock, run_attack, stored_events

pytestmark = [pytest.mark.timeout(300), requires_landlock]

#: Forged events: as many as the issue's attack sent, numbered from 0.
FORGED = 50

FORGE = r"""
import time
from boundary_audit.auditor.encoding import Record, encode_records
port, session_id, agent_socket, agent_pid = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
forged = [
    Record(session_id, i, time.time_ns(), "GET", f"http://forged.example/{i}", True, "forged")
    for i in range(int(sys.argv[5]))
]
def forge(path):
    def send():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            for frame in encode_records(forged, "attacker"):
                s.sendall(frame.frame)
        return "sent"
    return send
attempt("forge", forge(agent_socket))
attempt("forge_via_proc", forge(f"/proc/{agent_pid}/root{agent_socket}"))
out["requests"] = requests(int(port), "forge")
print(json.dumps(out))
"""


#: Events the attack's session must hold: its try at the agent's socket (a
#: refused Unix connect; the one through /proc is refused by Landlock too but
#: is not to a hidden path, so not recorded) and its two real requests;
#: nothing forged.
EXPECTED_EVENTS = 3


def _stored_exactly(collector: CollectorProcess, session_id: str, agent_socket: str) -> None:
    def all_there() -> bool:
        session = collector.session(session_id)
        return session is not None and session["allowed"] + session["denied"] >= EXPECTED_EVENTS

    eventually(all_there, "the session's events", within=DELIVERY_TIMEOUT_S, interval=POLL_S)
    events = stored_events(collector.url, session_id)
    seen = [(e["sequence_number"], e["method"], e["url"], e["allowed"]) for e in events]
    assert [s[0] for s in seen] == list(range(EXPECTED_EVENTS)), seen
    assert not any("forged" in e["url"] for e in events), seen
    assert seen[0][1:] == ("CONNECT", f"unix://{agent_socket}", False), seen
    assert seen[1][1:] == ("GET", seen[1][2], True), seen
    assert seen[1][2].endswith("/ok/forge"), seen
    assert seen[2][1] == "GET", seen
    assert seen[2][2].endswith("/no/forge"), seen
    assert seen[2][3] is False, seen


@pytest.mark.parametrize("where", ["private-dir", "shared-temp-dir"])
def test_forged_frames_never_reach_the_agent_and_the_real_events_are_stored(
    tmp_path: Path,
    *,
    sock_dir: Path,
    upstream: int,
    agent_process: AgentProcess,
    collector_process: CollectorProcess,
    where: str,
) -> None:
    session_id = "5e55a0e1-0000-4000-8000-00000000000a"
    env = None
    if where == "shared-temp-dir":
        # The socket's directory is the temp dir, which the command keeps:
        # only the socket file is covered (Coder's default layout).
        env = {**os.environ, "TMPDIR": str(sock_dir)}
    assert agent_process.proc is not None
    result = run_attack(
        tmp_path,
        FORGE,
        [
            str(upstream),
            session_id,
            str(agent_process.socket_path),
            str(agent_process.proc.pid),
            str(FORGED),
        ],
        socket_path=agent_process.socket_path,
        extra=("--session-id", session_id),
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.out["requests"] == [200, 403]
    expected = errno.ENOENT if where == "private-dir" else errno.ECONNREFUSED
    assert result.out["forge"] == ["error", expected], result.out
    assert result.out["forge_via_proc"][0] == "error", result.out
    _stored_exactly(collector_process, session_id, str(agent_process.socket_path))


SECRETS = r"""
import sqlite3
ca_key, quickstart_db, spill_dir, spool_file, covered = sys.argv[1:6]
attempt("ca_key", lambda: open(ca_key, "rb").read())
def tamper():
    db = sqlite3.connect(quickstart_db)
    try:
        db.execute("DELETE FROM events")
        db.commit()
    finally:
        db.close()
attempt("quickstart_db", tamper)
attempt("quickstart_db_create", lambda: open(quickstart_db, "wb").write(b"x"))
attempt("spill", lambda: open(os.path.join(spill_dir, "forged.spill"), "wb").write(b"x"))
attempt("spool", lambda: open(spool_file, "rb").read())
libc = ctypes.CDLL(None, use_errno=True)
def umount(path):
    def go():
        if libc.umount2(path.encode(), 2) != 0:  # MNT_DETACH
            raise OSError(ctypes.get_errno(), "umount2")
    return go
attempt("umount", umount(covered))
attempt("ca_key_after_umount", lambda: open(ca_key, "rb").read())
print(json.dumps(out))
"""


def test_ca_key_database_spill_and_spool_are_out_of_reach(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_STATE_HOME": str(home / "state"),
        PROTECT_ENV: str(tmp_path / "spool"),
    }
    quickstart = home / "data" / "boundary-audit" / "quickstart"
    quickstart.mkdir(parents=True)
    db_path = quickstart / "collector.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, url TEXT)")
        db.execute("INSERT INTO events (url) VALUES ('http://real.example/')")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "dead-letter.jsonl").write_text('{"real": true}\n')
    spill_dir = Path(os.environ["BOUNDARY_AUDIT_SPILL_DIR"])
    ca_dir = home / "config" / "boundary-audit" / "ca"
    result = run_attack(
        tmp_path,
        SECRETS,
        [
            str(ca_dir / "ca-key.pem"),
            str(db_path),
            str(spill_dir),
            str(spool / "dead-letter.jsonl"),
            str(ca_dir.parent),
        ],
        socket_path=None,
        extra=("--no-audit-socket",),
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.out
    assert (ca_dir / "ca-key.pem").exists()  # the run made its CA there
    for step in (
        "ca_key",
        "quickstart_db",
        "quickstart_db_create",
        "spill",
        "spool",
        "umount",
        "ca_key_after_umount",
    ):
        assert out[step][0] == "error", (step, out[step])
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (1,)
    assert list(spill_dir.iterdir()) == []
