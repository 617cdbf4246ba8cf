"""What the CLI's newest-first listings need from storage and the API: the
descending order, its cursors, and the count of what matches (both backends)."""

from __future__ import annotations

import dataclasses
import uuid

import httpx
import pytest

from boundary_audit.collector.ingest import parse_ingest_request
from boundary_audit.collector.model import EventQuery, InvalidRequestError
from boundary_audit.collector.storage import Storage

from .helpers import make_request

pytestmark = pytest.mark.timeout(60)

#: Events in the session; pages of PAGE so the descending cursor is crossed.
EVENTS = 25
PAGE = 10


def _seed(storage: Storage) -> str:
    token = storage.create_token("a")
    ident = storage.authenticate(token)
    assert ident is not None
    sid = str(uuid.uuid4())
    storage.ingest(
        parse_ingest_request(make_request(sid, range(EVENTS)).SerializeToString()), ident
    )
    other = make_request(None, range(3), url="https://other.example/")
    storage.ingest(parse_ingest_request(other.SerializeToString()), ident)
    return sid


@pytest.mark.parametrize("scoped", [True, False])
def test_newest_first_pages_through_everything_once(storage: Storage, scoped: bool) -> None:
    sid = _seed(storage)
    query = EventQuery(session_id=sid if scoped else None, newest_first=True, limit=PAGE)
    seen: list[tuple[str, int]] = []
    cursor = None
    while True:
        page = storage.query_events(dataclasses.replace(query, cursor=cursor))
        seen += [(e.session_id, e.sequence_number) for e in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    mine = [seq for s, seq in seen if s == sid]
    assert mine == list(range(EVENTS))[::-1]
    assert len(seen) == EVENTS + (0 if scoped else 3)
    # An ascending cursor is not a descending one (no silent mix-up).
    ascending = storage.query_events(dataclasses.replace(query, newest_first=False)).next_cursor
    with pytest.raises(InvalidRequestError):
        storage.query_events(dataclasses.replace(query, cursor=ascending))


def test_counts_follow_the_filters(storage: Storage) -> None:
    sid = _seed(storage)
    assert storage.count_events(EventQuery()) == EVENTS + 3
    assert storage.count_events(EventQuery(session_id=sid)) == EVENTS
    assert storage.count_events(EventQuery(allowed=False, session_id=sid)) == EVENTS // 2
    assert storage.count_events(EventQuery(host="other.example")) == 3
    assert storage.count_sessions() == 2


def test_the_api_answers_order_and_count(collector_server: object, storage: Storage) -> None:
    sid = _seed(storage)
    base = str(collector_server.url)  # type: ignore[attr-defined]
    body = httpx.get(
        f"{base}/api/v1/sessions/{sid}/events",
        params={"order": "newest", "count": "true", "limit": 3},
    ).json()
    assert [e["sequence_number"] for e in body["events"]] == [EVENTS - 1, EVENTS - 2, EVENTS - 3]
    assert body["total"] == EVENTS
    assert "total" not in httpx.get(f"{base}/api/v1/events").json()
    assert httpx.get(f"{base}/api/v1/sessions").json()["total"] == 2
    bad = httpx.get(f"{base}/api/v1/events", params={"order": "sideways"})
    assert bad.status_code == 400
