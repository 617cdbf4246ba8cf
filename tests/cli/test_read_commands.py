"""``sessions`` and ``logs`` as people and scripts use them (issue 14, item 1).

Each test runs the real command in a subprocess against a real collector
process and its real SQLite file.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.collector.helpers import CollectorProcess, make_request, post_ingest, start_collector
from tests.support import eventually, stop_process
from tests.support.processes import cli_argv, run_cli

pytestmark = pytest.mark.timeout(180)

#: Events in the big session: more than the default --limit (50) and enough
#: JSON (~300 bytes each) to overflow a 64 KiB pipe, so a closed reader is felt.
BIG = 600
#: Events per ingest batch while seeding.
BATCH = 200
#: Sessions seeded (the big one and two small ones).
SESSIONS = 3
#: A 47-character URL: it must fit whole on one line of a 100-column table.
LONG_URL = "https://registry.example/packages/left-pad/{seq}"
#: Width of the terminal the table tests pretend to be.
TERMINAL_COLUMNS = 100
#: Seconds a follower gets to exit after SIGINT.
FOLLOWER_STOP_TIMEOUT_S = 10.0


@dataclass
class Trail:
    db: str
    collector: CollectorProcess
    token: str
    big: str
    small: list[str]


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    tmp = tmp_path_factory.mktemp("trail")
    db = f"sqlite:///{tmp / 'c.db'}"
    token = run_cli("tokens", "create", "--agent", "a", "--db", db).stdout.strip()
    proc = start_collector(db, tmp / "collector.log")
    big = str(uuid.uuid4())
    for start in range(0, BIG, BATCH):
        request = make_request(big, range(start, start + BATCH), url=LONG_URL)
        assert post_ingest(proc.url, token, request).status_code == 200
    small = [str(uuid.uuid4()) for _ in range(SESSIONS - 1)]
    for sid in small:
        assert post_ingest(proc.url, token, make_request(sid, range(2))).status_code == 200
    try:
        yield Trail(db, proc, token, big, small)
    finally:
        proc.stop()


def _rows(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_logs_are_newest_first_with_a_notice_of_how_many_match(trail: Trail) -> None:
    result = run_cli("logs", "--jsonl", "--db", trail.db)
    rows = _rows(result.stdout)
    assert len(rows) == 50
    # The small sessions arrived last: their events come first, then the big one's newest.
    assert [(r["session_id"], r["sequence_number"]) for r in rows[:5]] == [
        (trail.small[1], 1),
        (trail.small[1], 0),
        (trail.small[0], 1),
        (trail.small[0], 0),
        (trail.big, BIG - 1),
    ]
    assert f"showing 50 of {BIG + 4} events" in result.stderr
    assert "--all" in result.stderr
    everything = run_cli("logs", "--jsonl", "--all", "--session", trail.big, "--db", trail.db)
    seqs = [r["sequence_number"] for r in _rows(everything.stdout)]
    assert seqs == list(range(BIG))[::-1]
    assert "showing" not in everything.stderr
    quiet = run_cli("logs", "-q", "--jsonl", "--db", trail.db)
    assert "showing" not in quiet.stderr


def test_sessions_stop_at_the_limit_with_a_notice(trail: Trail) -> None:
    for source in (["--db", trail.db], ["--collector-url", trail.collector.url]):
        result = run_cli("sessions", "--limit", "2", "--jsonl", *source)
        assert len(_rows(result.stdout)) == 2
        assert f"showing 2 of {SESSIONS} sessions" in result.stderr


def test_json_is_one_document_and_jsonl_one_object_per_line(trail: Trail) -> None:
    for command in (["sessions"], ["logs", "--limit", "5"], ["tokens", "list"]):
        document = json.loads(run_cli(*command, "--json", "--db", trail.db).stdout)
        assert isinstance(document, list)
        assert document
        assert all(isinstance(item, dict) for item in document)
        lines = run_cli(*command, "--jsonl", "--db", trail.db).stdout.splitlines()
        # Same items (idle times aside, which tick between the two runs).
        again = [json.loads(line) for line in lines]
        assert [sorted(item) for item in again] == [sorted(item) for item in document]
        key = "token_id" if command[0] == "tokens" else "session_id"
        assert [i[key] for i in again] == [i[key] for i in document]


def _on_terminal(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the command with stdout on a pseudo-terminal 100 columns wide; its output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, TERMINAL_COLUMNS, 0, 0))
    clean = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "NO_COLOR"}}
    proc = subprocess.Popen(
        cli_argv(*args),
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env={**clean, "TERM": "xterm-256color", **(env or {})},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_table_on_a_100_column_terminal_keeps_one_line_per_event(trail: Trail) -> None:
    out = _on_terminal("logs", "--limit", "10", "--session", trail.big, "--db", trail.db)
    plain = _strip_ansi(out)
    lines = [line for line in plain.splitlines() if line.strip()]
    assert len(lines) == 1 + 10  # heading and one line per event: nothing wraps
    assert all(len(line) <= TERMINAL_COLUMNS for line in lines)
    assert LONG_URL.replace("{seq}", str(BIG - 1)) in plain  # the URL got the width
    assert "deny" in plain
    assert "allow" in plain
    assert "True" not in plain
    assert "False" not in plain
    # With --session the session is said once (on stderr), not on every row.
    assert trail.big[:8] not in plain
    every = _strip_ansi(_on_terminal("logs", "--limit", "3", "--db", trail.db))
    short = {sid[:8] for sid in [trail.big, *trail.small]}
    assert any(s in every for s in short)
    assert not any(sid in every for sid in [trail.big, *trail.small])  # short ids only
    full = _on_terminal("logs", "--full-ids", "--limit", "3", "--db", trail.db)
    assert any(sid in full for sid in [trail.big, *trail.small])


def test_sessions_table_shows_completeness_and_chain(trail: Trail) -> None:
    plain = _strip_ansi(_on_terminal("sessions", "--db", trail.db))
    assert "COMPLETENESS" in plain
    assert "CHAIN" in plain
    assert "unsealed" in plain  # these senders send no seal


def test_colour_only_on_a_terminal_and_never_with_no_color(trail: Trail) -> None:
    args = ("logs", "--limit", "4", "--session", trail.big, "--db", trail.db)
    assert "\x1b[" in _on_terminal(*args)
    assert "\x1b[" not in _on_terminal(*args, env={"NO_COLOR": "1"})
    assert "\x1b[" not in run_cli(*args).stdout


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")


@pytest.mark.parametrize("flag", ["--json", "--jsonl"])
def test_a_closed_pipe_ends_quietly_with_status_0(trail: Trail, flag: str) -> None:
    proc = subprocess.Popen(
        cli_argv("logs", flag, "--all", "--db", trail.db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # | head -1
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"Broken pipe" not in err
    assert b"Errno 32" not in err


@pytest.mark.parametrize(
    "command", [["logs"], ["sessions"], ["tokens", "list"], ["tokens", "revoke", "x"]]
)
def test_reading_a_missing_database_does_not_create_it(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nothing-here.db"
    result = run_cli(*command, "--db", f"sqlite:///{missing}", check=False)
    assert result.returncode != 0
    assert f"no database at {missing}" in result.stderr
    assert "quickstart's is at" in result.stderr
    assert not missing.exists()


def test_every_time_flag_takes_the_one_grammar(trail: Trail) -> None:
    for since in ("yesterday", "today", "1h", "7d", "2000-01-01T00:00:00Z"):
        result = run_cli("logs", "--jsonl", "--since", since, "--db", trail.db)
        assert len(_rows(result.stdout)) == 50, since
    for until in ("1h", "yesterday", "2000-01-01"):
        result = run_cli("logs", "--jsonl", "--until", until, "--db", trail.db)
        assert _rows(result.stdout) == [], until
    assert _rows(run_cli("logs", "--jsonl", "--until", "now", "--db", trail.db).stdout)
    bad = run_cli("logs", "--since", "last tuesday", "--db", trail.db, check=False)
    assert bad.returncode == 1
    assert "--since" in bad.stderr
    assert "yesterday" in bad.stderr  # says what is accepted


def test_session_by_the_short_id_the_table_shows(trail: Trail) -> None:
    result = run_cli("logs", "--jsonl", "--session", trail.big[:8], "--db", trail.db)
    assert {r["session_id"] for r in _rows(result.stdout)} == {trail.big}
    wrong = run_cli("logs", "--session", "zzzz", "--db", trail.db, check=False)
    assert wrong.returncode == 1
    assert "`sessions` lists them" in wrong.stderr


def test_an_unreachable_collector_is_named_with_the_next_step() -> None:
    url = "http://127.0.0.1:9"
    result = run_cli("sessions", "--collector-url", url, check=False)
    assert result.returncode == 1
    assert f"cannot reach the collector at {url}" in result.stderr
    assert "boundary-audit collector" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("postgresql://127.0.0.1:1/audit", "Connection refused"),
        ("postgresql://no-such-host.invalid/audit", "resolve host"),
        ("postgresql://a b@/x", "bad PostgreSQL URL"),
    ],
)
def test_a_bad_postgresql_url_says_why(url: str, cause: str) -> None:
    result = run_cli("sessions", "--db", url, check=False)
    assert result.returncode == 1
    assert cause in result.stderr
    assert "pool initialization" not in result.stderr
    assert "Traceback" not in result.stderr


def test_follow_starts_with_history_and_survives_a_collector_restart(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    token = run_cli("tokens", "create", "--agent", "a", "--db", db).stdout.strip()
    first = start_collector(db, tmp_path / "first.log")
    sid = str(uuid.uuid4())
    assert post_ingest(first.url, token, make_request(sid, range(3))).status_code == 200
    follower = subprocess.Popen(
        cli_argv("logs", "--follow", "--jsonl", "--since", "1h", "--collector-url", first.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[dict[str, object]] = []
    errors: list[str] = []

    def read(stream: object, into: list[object]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(json.loads(line) if into is seen else line)

    threading.Thread(target=read, args=(follower.stdout, seen), daemon=True).start()
    threading.Thread(target=read, args=(follower.stderr, errors), daemon=True).start()
    second: CollectorProcess | None = None
    try:
        eventually(lambda: len(seen) == 3, "the history (--since) printed")
        first.stop()
        eventually(lambda: any("retrying" in e for e in errors), "the follower to retry")
        port = first.url.rsplit(":", 1)[1]
        second = start_collector(db, tmp_path / "second.log", "--listen", f"127.0.0.1:{port}")
        assert post_ingest(second.url, token, make_request(sid, range(3, 5))).status_code == 200
        eventually(lambda: len(seen) == 5, "the events after the restart")
        assert [e["sequence_number"] for e in seen] == [0, 1, 2, 3, 4]  # none missed or twice
        assert follower.poll() is None
        assert any("127.0.0.1" in e for e in errors)  # the retry names the collector
    finally:
        stop_process(follower, FOLLOWER_STOP_TIMEOUT_S, sig=signal.SIGINT)
        if second is not None:
            second.stop()


def test_quiet_flag_after_the_subcommand_silences_notices(trail: Trail) -> None:
    loud = run_cli("sessions", "--db", trail.db, "--limit", "1")
    quiet = run_cli("sessions", "--db", trail.db, "-q", "--limit", "1")
    assert "showing 1 of" in loud.stderr
    assert quiet.stderr == ""
