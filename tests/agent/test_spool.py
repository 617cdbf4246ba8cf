"""The spool on a real SQLite file: order, bound, accounting, persistence, dead letters."""

from __future__ import annotations

import base64
import json
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit.agent import AsyncSpool, Spool, SpoolError, SpoolStats
from boundary_audit.agent.config import DROP_REPORT_HEADROOM_BYTES, SpoolSync
from boundary_audit.agent.deadletter import DeadLetterFile
from boundary_audit.agent.spool import NewBatch

#: Bound of the accounting property test: small, so random batches hit it.
SMALL_BOUND = 2000
#: Spool files the property test creates (one per example): enough variety,
#: a second or so of SQLite work.
ACCOUNTING_EXAMPLES = 40


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


async def test_discard_writes_dead_letter_lines_then_deletes(tmp_path: Path) -> None:
    seen: list[SpoolStats] = []
    spool = await AsyncSpool.open(tmp_path / "s.db", 1_000_000, "normal", seen.append)
    try:
        await spool.append([batch("bad", 3), batch("good", 1)])
        got, _ = await spool.peek(10_000, 100)
        dead = DeadLetterFile(tmp_path / "dead.jsonl")
        detail = "logs[0].session_id is not a UUID"
        await spool.discard(got[:1], [], lambda: dead.append(got[:1], [], 400, detail))
        lines = [json.loads(line) for line in dead.path.read_text().splitlines()]
        assert len(lines) == 1
        assert lines[0]["session_id"] == "bad"
        assert lines[0]["status"] == 400
        assert base64.b64decode(lines[0]["payload_b64"]) == got[0].payload
        remaining, _ = await spool.peek(10_000, 100)
        assert [b.session_id for b in remaining] == ["good"]
        # Every call reported the spool's figures as they were after it.
        assert seen[-1] == spool.stats() == SpoolStats(1, 1, 100, 0)
    finally:
        await spool.close()


async def test_a_failed_dead_letter_write_deletes_nothing(tmp_path: Path) -> None:
    spool = await AsyncSpool.open(tmp_path / "s.db", 1_000_000, "normal", lambda _: None)
    try:
        await spool.append([batch("bad", 3)])
        got, _ = await spool.peek(10_000, 100)
        (tmp_path / "dead.jsonl").mkdir()  # a directory where the file should go
        dead = DeadLetterFile(tmp_path / "dead.jsonl")
        with pytest.raises(IsADirectoryError):
            await spool.discard(got, [], lambda: dead.append(got, [], 400, "bad"))
        assert spool.stats().batches == 1
    finally:
        await spool.close()


def test_dead_letter_file_keeps_the_oldest_evidence_past_its_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=1_000_000)
    spool.append([batch("a", 1), batch("b", 2)])
    got, _ = spool.peek(10_000, 100)
    dead = DeadLetterFile(tmp_path / "dead.jsonl", max_bytes=500)
    dead.append(got[:1], [], 400, "first")  # ~300 bytes: fits
    dead.append(got[1:], [], 400, "second")  # would pass the bound: counted only
    assert [json.loads(x)["detail"] for x in dead.path.read_text().splitlines()] == ["first"]
    assert dead.not_written == 1
    assert not (tmp_path / "dead.jsonl.1").exists()
    assert (dead.path.stat().st_mode & 0o777) == 0o600


#: One step of the accounting test: append batches of these sizes, or delete
#: the oldest few, or store drop reports of these sizes.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.integers(1, 900), max_size=4)),
        st.tuples(st.just("delete"), st.integers(1, 3)),
        st.tuples(st.just("reports"), st.lists(st.integers(1, 400), max_size=3)),
    ),
    max_size=12,
)


@settings(max_examples=ACCOUNTING_EXAMPLES, deadline=None)
@given(steps)
def test_accounting_matches_the_file_and_respects_the_bound(
    ops: list[tuple[str, list[int] | int]],
) -> None:
    """Whatever the sequence of writes and deletes, the counters the agent
    reports (metrics, bound checks) are what the file holds."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.db"
        spool = Spool(path, max_bytes=SMALL_BOUND)
        report_ids = iter(range(1_000_000))
        report_bytes = 0  # drop reports are never deleted here
        for op, arg in ops:
            if op == "append":
                assert isinstance(arg, list)
                before = spool.stats().bytes
                refused = spool.append([NewBatch("s", 1, b"x" * n) for n in arg])
                stored = sum(arg) - sum(len(b.payload) for b in refused)
                assert spool.stats().bytes == before + stored
            elif op == "delete":
                assert isinstance(arg, int)
                got, _ = spool.peek(SMALL_BOUND * 10, arg)
                spool.delete(got[:arg])
            else:
                assert isinstance(arg, list)
                stored = spool.add_drop_reports([(f"r{next(report_ids)}", b"d" * n) for n in arg])
                report_bytes += sum(arg[:stored])
            stats = spool.stats()
            # Batches stay within the bound; drop reports may use the headroom.
            assert stats.bytes - report_bytes <= SMALL_BOUND
            assert stats.bytes <= SMALL_BOUND + DROP_REPORT_HEADROOM_BYTES
        stats = spool.stats()
        spool.close()
        db = sqlite3.connect(path)
        try:
            batches, events, batch_bytes = db.execute(
                "SELECT count(*), coalesce(sum(events), 0), coalesce(sum(length(payload)), 0)"
                " FROM batches"
            ).fetchone()
            reports, report_bytes = db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM drop_reports"
            ).fetchone()
        finally:
            db.close()
        assert stats == SpoolStats(batches, events, batch_bytes + report_bytes, reports)
        # A reopened spool counts the same from the file alone.
        again = Spool(path, max_bytes=SMALL_BOUND)
        assert again.stats() == stats
        again.close()


def test_refuses_a_spool_from_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(SpoolError, match="schema version 99"):
        Spool(path, max_bytes=1000)


def test_sync_policy_is_applied(tmp_path: Path) -> None:
    policies: tuple[tuple[SpoolSync, int], ...] = (("normal", 1), ("full", 2))
    for policy, level in policies:
        spool = Spool(tmp_path / f"{policy}.db", max_bytes=1000, sync=policy)
        db: sqlite3.Connection = spool._db
        assert db.execute("PRAGMA synchronous").fetchone()[0] == level
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        spool.close()
