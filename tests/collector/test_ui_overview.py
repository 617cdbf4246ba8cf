"""The web UI's reads and pages on both engines: hosts, counts, event-time spans, search.

Each test here failed before the UI's overview (no per-host table, no counts,
arrival times as the session's span, no sessions filters, red zeros, times
with microseconds, "More events" as the only pagination).
"""

from __future__ import annotations

import re

import httpx
import pytest

from boundary_audit.collector import CollectorServer, Storage
from boundary_audit.collector.model import EventQuery
from boundary_audit.collector.overview import SessionFilter

from .uidata import DENIED_HOSTS, EVENTS, LONG_URL, SPAN_NS, seed_realistic, time_of

pytestmark = pytest.mark.timeout(120)
#: Between the first and last row shown, as in "1-200 of 1200" (an en dash).
DASH = "\N{EN DASH}"


@pytest.fixture
def seeded(collector_server: CollectorServer, storage: Storage) -> dict[str, str]:
    return seed_realistic(collector_server.url, storage)


def _get(server: CollectorServer, path: str) -> str:
    response = httpx.get(server.url + path, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def test_hosts_put_denied_first_with_event_times(storage: Storage, seeded: dict[str, str]) -> None:
    hosts = storage.session_hosts(seeded["big"])
    assert [h.host for h in hosts[: len(DENIED_HOSTS)]] == sorted(
        DENIED_HOSTS, key=lambda h: -next(x.denied for x in hosts if x.host == h)
    )
    assert all(h.denied > 0 for h in hosts[:2])
    assert all(h.denied == 0 for h in hosts[2:])
    assert sum(h.allowed + h.denied for h in hosts) == EVENTS
    assert storage.count_hosts(seeded["big"]) == len(hosts) == 6
    assert min(h.first_ns for h in hosts) == time_of(0)
    assert max(h.last_ns for h in hosts) == time_of(EVENTS - 1)


def test_event_time_span_not_arrival(storage: Storage, seeded: dict[str, str]) -> None:
    first, last = storage.event_time_range(seeded["big"]) or (0, 0)
    assert last - first == SPAN_NS
    assert storage.event_time_ranges([seeded["big"]])[seeded["big"]] == (first, last)
    assert storage.event_time_range("no-such-session") is None


def test_counts_and_offsets_follow_the_filters(storage: Storage, seeded: dict[str, str]) -> None:
    sid = seeded["big"]
    assert storage.count_events(EventQuery(session_id=sid)) == EVENTS
    denied = EventQuery(session_id=sid, allowed=False)
    assert storage.count_events(denied) == EVENTS // 10
    assert storage.count_events(EventQuery(session_id=sid, url_contains="a1b2c3d4")) == 1
    page = storage.query_events(EventQuery(session_id=sid, allowed=False, limit=50))
    assert storage.events_before(denied) == 0
    after = EventQuery(session_id=sid, allowed=False, cursor=page.next_cursor)
    assert storage.events_before(after) == 50


def test_sessions_filter_and_search(storage: Storage, seeded: dict[str, str]) -> None:
    def found(f: SessionFilter) -> set[str]:
        items = storage.find_sessions(f).items
        assert storage.count_sessions(f) == len(items)
        return {s.session_id for s in items}

    big, clean, lossy = seeded["big"], seeded["clean"], seeded["lossy"]
    assert found(SessionFilter()) == {big, clean, lossy}
    assert found(SessionFilter(agent="ci-agent")) == {big}
    assert found(SessionFilter(process="aider")) == {clean, lossy}
    assert found(SessionFilter(has_denials=True)) == {big, lossy}
    assert found(SessionFilter(has_loss=True)) == {lossy}
    assert found(SessionFilter(host="EXFIL.evil.test")) == {big, lossy}
    assert found(SessionFilter(url_contains="a1b2c3d4e5f6")) == {big}
    assert found(SessionFilter(url_contains="/v1/items/2?")) == {big, clean, lossy}
    assert found(SessionFilter(host="nowhere.test")) == set()
    later = max(s.last_seen_ns for s in storage.find_sessions(SessionFilter()).items) + 1
    assert found(SessionFilter(since_ns=later)) == set()
    assert found(SessionFilter(until_ns=later)) == {big, clean, lossy}


def test_sessions_pages_count_their_place(storage: Storage, seeded: dict[str, str]) -> None:
    first = storage.find_sessions(SessionFilter(), limit=2)
    assert storage.sessions_before(SessionFilter(), first.next_cursor) == 2
    rest = storage.find_sessions(SessionFilter(), limit=2, cursor=first.next_cursor)
    assert len(rest.items) == 1
    assert rest.next_cursor is None


def test_session_page_reads_at_a_glance(
    collector_server: CollectorServer, seeded: dict[str, str]
) -> None:
    page = _get(collector_server, f"/sessions/{seeded['big']}")
    assert re.search(r'id="span">.*45 min 0 s', page)
    assert f"1{DASH}200 of {EVENTS} events" in page
    hosts = re.findall(r'<td class="host"><a href="[^"]*">([^<]+)</a>', page)
    assert set(hosts[:2]) == set(DENIED_HOSTS)
    assert "Next →" in page
    # ISO to the second, the exact time on hover; no microseconds shown.
    assert re.search(
        r'<time datetime="[0-9T:.-]+Z" title="[^"]+">'
        r'<span class="day">[0-9-]+ </span>[0-9:]+Z</time>',
        page,
    )
    assert not re.search(r">[\d:]+\.\d{6}Z<", page)
    # The chart has both axes: time labels and counts.
    assert len(re.findall(r'class="x-tick"', page)) >= 2
    filtered = _get(collector_server, f"/sessions/{seeded['big']}?decision=denied")
    assert f"1{DASH}{EVENTS // 10} of {EVENTS // 10} matching events" in filtered
    second = _get(collector_server, f"/sessions/{seeded['big']}?q=a1b2c3")
    assert f"1{DASH}1 of 1 matching event" in second
    assert LONG_URL.replace("&", "&amp;") in second


def test_red_only_for_denials(collector_server: CollectorServer, seeded: dict[str, str]) -> None:
    listing = _get(collector_server, "/")
    assert '<td class="num">0</td>' in listing  # the clean session's denials
    assert 'class="num denied">0<' not in listing
    clean = _get(collector_server, f"/sessions/{seeded['clean']}")
    assert '<dd id="denied">0</dd>' in clean


def test_sessions_list_filters_and_counts(
    collector_server: CollectorServer, seeded: dict[str, str]
) -> None:
    listing = _get(collector_server, "/")
    assert f"1{DASH}3 of 3 sessions" in listing
    denied = _get(collector_server, "/?denied=1&process=aider")
    assert f"1{DASH}1 of 1 matching session" in denied
    assert seeded["lossy"] in denied
    search = _get(collector_server, "/?host=exfil.evil.test")
    assert seeded["big"] in search
    assert seeded["clean"] not in search
    assert f"1{DASH}2 of 2 matching sessions" in search
    assert "No session matches" in _get(collector_server, "/?agent=nobody")
    bad = httpx.get(collector_server.url + "/?since=yesterdayish", timeout=30)
    assert bad.status_code == 400
    assert "RFC 3339" in bad.text
