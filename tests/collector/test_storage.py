"""Storage behaviour, identical on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from boundary_audit.collector import (
    EventQuery,
    InvalidRequestError,
    SessionOwnershipError,
    Storage,
    parse_ingest_request,
)
from boundary_audit.collector.model import InvalidCursorError
from boundary_audit.collector.schema import MIGRATIONS
from boundary_audit.collector.storage import Tx
from boundary_audit.wire import IngestRequest

from .helpers import add_record, make_request

pytestmark = pytest.mark.timeout(60)


def _ingest(storage: Storage, request: IngestRequest, token: str) -> tuple[int, int, int]:
    ident = storage.authenticate(token)
    assert ident is not None
    out = storage.ingest(parse_ingest_request(request.SerializeToString()), ident)
    return out.stored, out.duplicates, out.gap_delta


def test_migrations_are_versioned_and_idempotent(storage: Storage) -> None:
    assert storage.migrate() == []
    rows = storage.query("SELECT version FROM schema_migrations")
    assert sorted(r[0] for r in rows) == [v for v, _ in MIGRATIONS]


def test_tokens_store_only_hashes_and_revoke(storage: Storage) -> None:
    token = storage.create_token("agent-1", "ws-1")
    assert token.startswith("ba_")
    assert len(token) == 46
    stored = storage.query("SELECT token_hash FROM tokens")
    assert token not in str(stored)
    ident = storage.authenticate(token)
    assert ident is not None
    assert (ident.agent, ident.workspace, ident.scope) == (
        "agent-1",
        "ws-1",
        "agent",
    )
    assert storage.authenticate(token + "x") is None
    assert storage.authenticate("nonsense") is None
    assert storage.revoke_token(ident.token_id)
    assert not storage.revoke_token(ident.token_id)
    assert storage.authenticate(token) is None
    (info,) = storage.list_tokens()
    assert info.revoked_ns is not None


def test_resent_batch_stores_nothing_twice(storage: Storage) -> None:
    token = storage.create_token("a")
    sid = str(uuid.uuid4())
    request = make_request(sid, range(10))
    assert _ingest(storage, request, token)[:2] == (10, 0)
    assert _ingest(storage, request, token)[:2] == (0, 10)
    overlap = make_request(sid, range(5, 15))
    assert _ingest(storage, overlap, token)[:2] == (5, 5)
    summary = storage.get_session(sid)
    assert summary is not None
    assert (summary.allowed, summary.denied, summary.gaps) == (8, 7, 0)
    assert storage.query("SELECT COUNT(*) FROM events")[0][0] == 15


def test_repeats_inside_one_request_are_duplicates(storage: Storage) -> None:
    token = storage.create_token("a")
    assert _ingest(storage, make_request(None, [1, 1, 2, 2, 2]), token)[:2] == (2, 3)


def test_gap_detection_and_late_fill(storage: Storage) -> None:
    token = storage.create_token("a")
    sid = str(uuid.uuid4())
    stored, _, delta = _ingest(storage, make_request(sid, [0, 1, 5, 9]), token)
    assert (stored, delta) == (4, 6)
    summary = storage.get_session(sid)
    assert summary is not None
    assert summary.gaps == 6
    assert summary.max_sequence == 9
    _, _, delta = _ingest(storage, make_request(sid, [2, 3, 4]), token)
    assert delta == -3
    summary = storage.get_session(sid)
    assert summary is not None
    assert summary.gaps == 3


def test_sparse_resend_finds_duplicates_far_apart(storage: Storage) -> None:
    token = storage.create_token("a")
    sid = str(uuid.uuid4())
    _ingest(storage, make_request(sid, [0, 1000, 5000]), token)
    assert _ingest(storage, make_request(sid, [0, 1, 1000, 5000, 5001]), token)[:2] == (2, 3)


def test_session_belongs_to_first_agent(storage: Storage) -> None:
    mine, theirs = storage.create_token("a", "w"), storage.create_token("b", "w")
    sid = str(uuid.uuid4())
    _ingest(storage, make_request(sid, range(2)), mine)
    with pytest.raises(SessionOwnershipError, match=sid):
        _ingest(storage, make_request(sid, range(2, 4)), theirs)
    summary = storage.get_session(sid)
    assert summary is not None
    assert summary.agent == "a"
    assert summary.allowed + summary.denied == 2


def test_rejected_request_stores_nothing(storage: Storage) -> None:
    """All-or-nothing: a later session's conflict rolls back an earlier one's events."""
    mine, theirs = storage.create_token("a"), storage.create_token("b")
    taken = str(uuid.uuid4())
    _ingest(storage, make_request(taken, range(1)), theirs)
    request = make_request("00000000-0000-0000-0000-000000000001", range(5))
    request.logs.extend(make_request(taken, range(1, 3)).logs)
    request.drops.add(report_id="r-1", source="agent").dropped["spool_full"] = 3
    with pytest.raises(SessionOwnershipError):
        _ingest(storage, request, mine)
    assert storage.query("SELECT COUNT(*) FROM events")[0][0] == 1
    assert storage.query("SELECT COUNT(*) FROM drop_reports")[0][0] == 0
    assert storage.get_session("00000000-0000-0000-0000-000000000001") is None


def test_drop_reports_counted_once(storage: Storage) -> None:
    token = storage.create_token("a")
    sid = str(uuid.uuid4())
    request = make_request(sid, range(1))
    report = request.drops.add(report_id="rep-1", session_id=sid, source="boundary")
    report.dropped["boundary_channel_full"] = 4
    report.dropped["boundary_batch_full"] = 1
    request.drops.add(report_id="rep-2", source="agent").dropped["spool_full"] = 7
    ident = storage.authenticate(token)
    assert ident is not None
    batch = parse_ingest_request(request.SerializeToString())
    assert storage.ingest(batch, ident).drop_reports == 2
    assert storage.ingest(batch, ident).drop_reports == 0
    summary = storage.get_session(sid)
    assert summary is not None
    assert summary.dropped == 5
    assert storage.session_drops(sid) == {"boundary_batch_full": 1, "boundary_channel_full": 4}
    assert storage.unattributed_drops() == {"spool_full": 7}


def test_event_pagination_and_filters(storage: Storage) -> None:
    token = storage.create_token("a")
    sid = str(uuid.uuid4())
    request = make_request(sid, range(25), url="https://api.Example.com/v1/item/{seq}")
    _ingest(storage, request, token)
    _ingest(storage, make_request(None, range(5), url="https://other.org/x"), token)
    seen: list[int] = []
    cursor = None
    while True:
        page = storage.query_events(EventQuery(session_id=sid, cursor=cursor, limit=10))
        seen += [e.sequence_number for e in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(range(25))
    denied = storage.query_events(EventQuery(session_id=sid, allowed=False, limit=100))
    assert [e.sequence_number for e in denied.items] == list(range(1, 25, 2))
    by_host = storage.query_events(EventQuery(host="API.example.com", limit=100))
    assert len(by_host.items) == 25
    assert {e.host for e in by_host.items} == {"api.example.com"}
    by_url = storage.query_events(EventQuery(url_contains="item/1", limit=100))
    assert sorted(e.sequence_number for e in by_url.items) == [1, *range(10, 20)]
    # Case-sensitive substring on both engines.
    assert storage.query_events(EventQuery(url_contains="ITEM/1")).items == []
    everything = storage.query_events(EventQuery(limit=100))
    assert len(everything.items) == 30
    assert everything.next_cursor is None
    with pytest.raises(InvalidCursorError):
        storage.query_events(EventQuery(cursor=page.resume_cursor))  # a session cursor
    with pytest.raises(InvalidRequestError):
        storage.query_events(EventQuery(cursor="garbage!"))


def test_time_range_filter(storage: Storage) -> None:
    token = storage.create_token("a")
    hour = 3600 * 10**9
    now = time.time_ns()
    _ingest(storage, make_request(None, range(3), time_ns=now - 2 * hour), token)
    _ingest(storage, make_request(None, range(4), time_ns=now), token)
    recent = storage.query_events(EventQuery(since_ns=now - hour))
    assert len(recent.items) == 4
    old = storage.query_events(EventQuery(until_ns=now - hour))
    assert len(old.items) == 3


def test_session_listing_pages(storage: Storage) -> None:
    token = storage.create_token("a")
    ids = set()
    for _ in range(7):
        sid = str(uuid.uuid4())
        ids.add(sid)
        _ingest(storage, make_request(sid, range(1)), token)
    listed: list[str] = []
    cursor = None
    while True:
        page = storage.list_sessions(limit=3, cursor=cursor)
        listed += [s.session_id for s in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(listed) == 7
    assert set(listed) == ids


def test_retention_prunes_by_arrival_and_keeps_counters_true(storage: Storage) -> None:
    token = storage.create_token("a")
    ident = storage.authenticate(token)
    assert ident is not None
    hour = 3600 * 10**9
    now = time.time_ns()
    old_sid, fresh_sid = str(uuid.uuid4()), str(uuid.uuid4())
    old = make_request(old_sid, range(12), time_ns=now)
    add_record(old, old_sid, opened=True, seal={"events_made": 12})
    storage.ingest(parse_ingest_request(old.SerializeToString()), ident, now - 48 * hour)
    # Stamped 2001 by a wrong clock, but received now: kept like any other.
    wrong_clock = make_request(fresh_sid, range(4), time_ns=1_000_000_000 * 10**9)
    storage.ingest(parse_ingest_request(wrong_clock.SerializeToString()), ident, now)
    assert storage.prune(now - 24 * hour) == 12
    remaining = storage.query_events(EventQuery(limit=100)).items
    assert [e.session_id for e in remaining] == [fresh_sid] * 4
    # No event left and last seen before the cutoff: the session goes too.
    assert storage.get_session(old_sid) is None


def test_pruned_events_still_count_as_arrived(storage: Storage) -> None:
    token = storage.create_token("a")
    ident = storage.authenticate(token)
    assert ident is not None
    hour = 3600 * 10**9
    now = time.time_ns()
    sid = str(uuid.uuid4())
    first = make_request(sid, range(6), time_ns=now)
    add_record(first, sid, opened=True)
    storage.ingest(parse_ingest_request(first.SerializeToString()), ident, now - 48 * hour)
    later = make_request(sid, range(6, 10), time_ns=now)
    add_record(later, sid, seal={"events_made": 10})
    storage.ingest(parse_ingest_request(later.SerializeToString()), ident, now)
    assert storage.prune(now - 24 * hour) == 6
    summary = storage.get_session(sid)
    assert summary is not None
    assert (summary.allowed + summary.denied, summary.pruned, summary.gaps) == (4, 6, 0)
    assert summary.verdict.state == "complete"


def test_timeline_buckets_per_minute(storage: Storage) -> None:
    token = storage.create_token("a")
    sid = str(uuid.uuid4())
    minute = 60 * 10**9
    base = (time.time_ns() // minute) * minute
    _ingest(storage, make_request(sid, range(4), time_ns=base), token)
    _ingest(storage, make_request(sid, range(4, 7), time_ns=base + 2 * minute), token)
    buckets = storage.timeline(sid)
    assert [(b.minute_ns - base, b.allowed, b.denied) for b in buckets] == [
        (0, 2, 2),
        (2 * minute, 2, 1),
    ]


def test_retention_drops_idle_sessions_but_never_under_their_events(storage: Storage) -> None:
    token = storage.create_token("a")
    ident = storage.authenticate(token)
    assert ident is not None
    hour = 3600 * 10**9
    now = time.time_ns()
    idle, skewed = str(uuid.uuid4()), str(uuid.uuid4())
    old = parse_ingest_request(make_request(idle, range(3), time_ns=now).SerializeToString())
    # Received now, yet its events claim to be old (a sender's clock behind).
    behind = parse_ingest_request(
        make_request(skewed, range(2), time_ns=now - 48 * hour).SerializeToString()
    )
    storage.ingest(old, ident, received_ns=now - 48 * hour)
    storage.ingest(behind, ident, received_ns=now)
    assert storage.prune(now - 24 * hour) == 3
    assert storage.get_session(idle) is None
    summary = storage.get_session(skewed)
    assert summary is not None
    assert summary.allowed + summary.denied == 2


def test_an_event_from_2199_does_not_squash_the_chart(storage: Storage) -> None:
    token = storage.create_token("a")
    sid = str(uuid.uuid4())
    minute = 60 * 10**9
    base = (time.time_ns() // minute) * minute
    _ingest(storage, make_request(sid, range(3), time_ns=base), token)
    _ingest(storage, make_request(sid, [3], time_ns=7_000_000_000 * 10**9), token)
    buckets = storage.timeline(sid)
    assert [(b.minute_ns - base, b.allowed + b.denied) for b in buckets] == [(0, 3)]
    assert len(storage.query_events(EventQuery(session_id=sid)).items) == 4


def test_concurrent_requests_are_each_all_or_nothing(storage: Storage) -> None:
    """Many writers at once (SQLite groups them into shared commits): each
    request is stored whole or, when it is rejected, not at all."""
    mine, theirs = storage.create_token("a"), storage.create_token("b")
    taken = str(uuid.uuid4())
    _ingest(storage, make_request(taken, range(1)), theirs)
    good = [str(uuid.uuid4()) for _ in range(12)]
    barrier = threading.Barrier(len(good) + 4)
    errors: list[BaseException] = []

    def send(request: IngestRequest) -> None:
        barrier.wait()
        try:
            _ingest(storage, request, mine)
        except SessionOwnershipError as exc:
            errors.append(exc)

    requests = [make_request(sid, range(10)) for sid in good]
    for k in range(4):  # each also carries a session owned by another agent
        bad = make_request(str(uuid.uuid4()), range(5))
        bad.logs.extend(make_request(taken, range(10 + k, 11 + k)).logs)
        requests.append(bad)
    threads = [threading.Thread(target=send, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4
    assert storage.query("SELECT COUNT(*) FROM events")[0][0] == 1 + 12 * 10
    for sid in good:
        summary = storage.get_session(sid)
        assert summary is not None
        assert summary.allowed + summary.denied == 10


def test_sqlite_group_commit_isolates_a_failing_member(tmp_path: Path) -> None:
    from boundary_audit.collector.sqlite import SQLiteStorage, _GroupItem

    store = SQLiteStorage(tmp_path / "g.db")
    store.migrate()

    def insert(version: int) -> Callable[[Tx], int]:
        def work(tx: Tx) -> int:
            return tx.execute(
                "INSERT INTO schema_migrations (version, applied_ns) VALUES (?, 0)", (version,)
            )

        return work

    def boom(tx: Tx) -> int:
        insert(9001)(tx)
        raise ValueError("rejected")

    items = [_GroupItem(insert(9000)), _GroupItem(boom), _GroupItem(insert(9002))]
    with store._write_lock:
        store._commit_group(items)
    assert [i.done for i in items] == [True, True, True]
    assert isinstance(items[1].error, ValueError)
    assert items[0].error is None
    assert items[2].error is None
    versions = {r[0] for r in store.query("SELECT version FROM schema_migrations")}
    assert {9000, 9002} <= versions
    assert 9001 not in versions  # rolled back to its savepoint, alone
    store.close()
