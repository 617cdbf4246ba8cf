"""The spool on a real SQLite file: order, bound, persistence, dead letters."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from boundary_audit.agent import Spool
from boundary_audit.agent.config import DROP_REPORT_HEADROOM_BYTES
from boundary_audit.agent.spool import NewBatch


def batch(session: str, n: int, size: int = 100) -> NewBatch:
    return NewBatch(session, n, bytes([n % 256]) * size)


def test_batches_come_back_in_order_and_leave_on_delete(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=1_000_000)
    assert spool.append([batch("a", i) for i in range(1, 6)]) == []
    got, reports = spool.peek(max_bytes=250, max_events=100)
    assert [b.events for b in got] == [1, 2]  # 100 bytes each, 250-byte budget
    assert reports == []
    spool.delete(got)
    got, _ = spool.peek(max_bytes=10_000, max_events=7)
    assert [b.events for b in got] == [3, 4]  # event cap: 3 + 4 <= 7, + 5 is not
    assert spool.stats().batches == 3
    assert spool.stats().events == 12
    spool.close()


def test_oversize_batch_is_still_peeked_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=1_000_000)
    spool.append([batch("a", 1, size=5000), batch("a", 2)])
    got, _ = spool.peek(max_bytes=1000, max_events=100)
    assert [b.events for b in got] == [1]


def test_bound_refuses_what_does_not_fit_and_keeps_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=280)
    refused = spool.append([batch("a", 1), batch("b", 2), batch("c", 3), batch("d", 4, size=50)])
    assert [b.session_id for b in refused] == ["c"]
    assert spool.stats().bytes == 250  # c (100) did not fit, d (50) did
    # Drop reports may use the headroom beyond the bound, but not more.
    stored = spool.add_drop_reports([("r1", b"x" * 100), ("r2", b"y" * DROP_REPORT_HEADROOM_BYTES)])
    assert stored == 1
    assert spool.stats().drop_reports == 1


def test_contents_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool(path, max_bytes=1_000_000)
    spool.append([batch("a", 1), batch("a", 2)])
    spool.add_drop_reports([("r1", b"report")])
    spool.close()
    again = Spool(path, max_bytes=1_000_000)
    assert again.stats().batches == 2
    assert again.stats().events == 3
    assert again.stats().bytes == 200 + len(b"report")
    got, reports = again.peek(10_000, 100)
    assert [b.events for b in got] == [1, 2]
    assert [r.report_id for r in reports] == ["r1"]
    assert (path.stat().st_mode & 0o777) == 0o600


def test_dead_letter_writes_json_lines_then_deletes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=1_000_000)
    spool.append([batch("bad", 3), batch("good", 1)])
    got, _ = spool.peek(10_000, 100)
    dead = tmp_path / "dead.jsonl"
    spool.dead_letter(dead, got[:1], [], 400, "logs[0].session_id is not a UUID")
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["session_id"] == "bad"
    assert lines[0]["status"] == 400
    assert base64.b64decode(lines[0]["payload_b64"]) == got[0].payload
    remaining, _ = spool.peek(10_000, 100)
    assert [b.session_id for b in remaining] == ["good"]


def test_refuses_a_spool_from_a_newer_schema(tmp_path: Path) -> None:
    import sqlite3

    import pytest

    from boundary_audit.agent import SpoolError

    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(SpoolError, match="schema version 99"):
        Spool(path, max_bytes=1000)


def test_sync_policy_is_applied(tmp_path: Path) -> None:
    import sqlite3

    from boundary_audit.agent.config import SpoolSync

    policies: tuple[tuple[SpoolSync, int], ...] = (("normal", 1), ("full", 2))
    for policy, level in policies:
        spool = Spool(tmp_path / f"{policy}.db", max_bytes=1000, sync=policy)
        db: sqlite3.Connection = spool._db
        assert db.execute("PRAGMA synchronous").fetchone()[0] == level
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        spool.close()
