"""The collector double answers and stores as the real collector does.

Every case posts the same bytes, with the same headers, to the real
collector (its app on uvicorn, a real SQLite file) and to the double the
agent's tests run against; the status codes, the JSON answers and what each
stored must be the same, and the status codes must be what the ingest API
defines. So the double cannot drift from the real thing unnoticed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from boundary_audit.collector import MAX_INGEST_BODY_BYTES
from boundary_audit.wire import SessionOpen, SessionRecord, SessionSeal

from .helpers import Answer, Target, new_id, request

#: A token of the right shape that no collector issued.
FORGED_TOKEN = "ba_" + "f" * 43


@dataclass(frozen=True)
class Post:
    body: bytes
    #: "" for the target's own token, None for no Authorization header.
    token: str | None = ""
    content_type: str = "application/x-protobuf"


@dataclass(frozen=True)
class Case:
    name: str
    posts: list[Post]
    #: The status of each post, as the ingest API defines it.
    statuses: list[int]
    #: Per session, the sequence numbers stored after all posts.
    stored: dict[str, set[int]] = field(default_factory=dict)
    #: Drop report ids stored after all posts (of those the case sent).
    reports: dict[str, bool] = field(default_factory=dict)


def _cases() -> list[Case]:
    s = [new_id() for _ in range(8)]
    r = [new_id() for _ in range(3)]
    valid = request((s[0], [0, 1, 2]))
    report = {"report_id": r[0], "session_id": s[3], "source": "agent"}
    return [
        Case("valid", [Post(valid)], [200], {s[0]: {0, 1, 2}}),
        Case(
            "duplicate re-send and partial overlap",
            [Post(valid), Post(request((s[0], [2, 3, 4])))],
            [200, 200],
            {s[0]: {0, 1, 2, 3, 4}},
        ),
        Case(
            "a repeat inside one request",
            [Post(request((s[1], [5, 5, 6])))],
            [200],
            {s[1]: {5, 6}},
        ),
        Case("empty request", [Post(request())], [200]),
        # Events without a place are refused alone (a rejected_by_collector
        # drop), the rest of the request is stored.
        Case("session id is not a UUID", [Post(request(("not-a-uuid", [0])))], [200]),
        Case(
            "negative sequence number: only that event refused",
            [Post(request((s[2], [0, 1]), (s[4], [-1])))],
            [200],
            {s[2]: {0, 1}, s[4]: set()},
        ),
        Case(
            "drop report: stored once, re-sent as a duplicate",
            [
                Post(request(drops=[dict(report, dropped={"spool_full": 3})])),
                Post(request(drops=[dict(report, dropped={"spool_full": 3})])),
            ],
            [200, 200],
            reports={r[0]: True},
        ),
        Case(
            "drop report from an unknown source",
            [Post(request(drops=[{"report_id": r[1], "source": "elsewhere"}]))],
            [400],
            reports={r[1]: False},
        ),
        Case(
            "drop report without an id",
            [Post(request((s[5], [0]), drops=[{"report_id": "", "source": "boundary"}]))],
            [400],
            {s[5]: set()},
        ),
        Case(
            "drop report for a session that is not a UUID",
            [Post(request(drops=[{"report_id": r[2], "session_id": "x", "source": "agent"}]))],
            [400],
            reports={r[2]: False},
        ),
        Case("body is not an IngestRequest", [Post(b"\xff\xff\xff\xff")], [400]),
        Case(
            "body over the collector's limit",
            [Post(b"\x00" * (MAX_INGEST_BODY_BYTES + 1))],
            [413],
        ),
        Case(
            "no token",
            [Post(request((s[6], [0])), token=None)],
            [401],
            {s[6]: set()},
        ),
        Case(
            "a token nobody issued",
            [Post(request((s[7], [0])), token=FORGED_TOKEN)],
            [401],
            {s[7]: set()},
        ),
        Case(
            "wrong content type",
            [Post(request((s[7], [1])), content_type="application/json")],
            [400],
            {s[7]: set()},
        ),
    ]


CASES = _cases()


def observe(target: Target, case: Case) -> tuple[list[Answer], dict[str, set[int]], set[str]]:
    answers = [target.post(p.body, token=p.token, content_type=p.content_type) for p in case.posts]
    stored = {session: target.stored(session) for session in case.stored}
    reports = set(case.reports) & target.drop_report_ids()
    return answers, stored, reports


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_double_answers_and_stores_as_the_collector_does(
    case: Case, real_collector: Target, double: Target
) -> None:
    real = observe(real_collector, case)
    answers, stored, reports = real
    assert [status for status, _ in answers] == case.statuses, answers
    assert stored == case.stored
    assert reports == {rid for rid, kept in case.reports.items() if kept}
    # The same bytes to the double: the same answers, word for word, and the same data kept.
    assert observe(double, case) == real


def _records(session: str) -> list[SessionRecord]:
    opened = SessionRecord(
        record_id=new_id(),
        session_id=session,
        open=SessionOpen(want_acks=True, sender="contract", first_sequence_number=0),
    )
    opened.observed_at.FromNanoseconds(time.time_ns())
    sealed = SessionRecord(
        record_id=new_id(),
        session_id=session,
        seal=SessionSeal(events_made=3, events_sent=3),
        confined_process_name="contract",
    )
    sealed.observed_at.FromNanoseconds(time.time_ns())
    return [opened, sealed]


def _sessions_case(target: Target) -> tuple[list[int], set[str]]:
    session = new_id()
    records = _records(session)
    body = request((session, [0, 1, 2]), records=records)
    statuses = [target.post(body)[0], target.post(body)[0]]  # the re-send is idempotent
    ids = {r.record_id for r in records}
    return statuses, ids & target.session_record_ids()


def test_the_double_stores_session_records_once_per_record_id(double: Target) -> None:
    statuses, kept = _sessions_case(double)
    assert statuses == [200, 200]
    assert len(kept) == 2


def test_the_collector_stores_session_records_once_per_record_id(real_collector: Target) -> None:
    statuses, kept = _sessions_case(real_collector)
    assert statuses == [200, 200]
    assert len(kept) == 2
