"""Sans-I/O validation of ingest bodies: every refusal names its field, nothing else slips."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.collector.ingest import (
    MAX_DROP_COUNT,
    MAX_EVENT_TIME_NS,
    MAX_EVENTS_PER_REQUEST,
    MAX_METHOD_CHARS,
    MAX_URL_CHARS,
    MIN_EVENT_TIME_NS,
    host_of,
    parse_ingest_request,
)
from boundary_audit.collector.model import InvalidRequestError
from boundary_audit.wire import IngestRequest

SESSION = "8d3c2a57-4a6e-4b8e-9a51-3c1f8e2b7d10"


@given(
    seq=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    time_ns=st.one_of(st.none(), st.integers(min_value=0, max_value=MAX_EVENT_TIME_NS + 10**18)),
    http=st.one_of(
        st.none(),
        st.tuples(
            st.text(max_size=MAX_METHOD_CHARS + 3),
            st.sampled_from([0, 1, 50, MAX_URL_CHARS, MAX_URL_CHARS + 1]),
            st.text(max_size=20),
        ),
    ),
)
def test_an_event_is_either_accepted_whole_or_refused_by_name(
    seq: int, time_ns: int | None, http: tuple[str, int, str] | None
) -> None:
    with_http = http is not None
    method, url_len, rule = http or ("", 0, "")
    request = IngestRequest(batch_id="b")
    log = request.logs.add(session_id=SESSION).logs.add(sequence_number=seq, allowed=True)
    if time_ns is not None:
        log.time.FromNanoseconds(time_ns)
    if with_http:
        log.http_request.method = method
        log.http_request.url = "u" * url_len
        log.http_request.matched_rule = rule
    valid = (
        with_http
        and seq >= 0
        and time_ns is not None
        and MIN_EVENT_TIME_NS <= time_ns < MAX_EVENT_TIME_NS
        and 0 < len(method) <= MAX_METHOD_CHARS
        and 0 < url_len <= MAX_URL_CHARS
    )
    if valid:
        (session,) = parse_ingest_request(request.SerializeToString()).sessions
        (event,) = session.events
        assert (event.sequence_number, event.time_ns, event.method) == (seq, time_ns, method)
    else:
        with pytest.raises(InvalidRequestError, match=r"^logs\[0\]\.logs\[0\]\."):
            parse_ingest_request(request.SerializeToString())


def test_sessions_are_canonical_merged_and_sorted() -> None:
    request = IngestRequest()
    upper = request.logs.add(session_id=SESSION.upper(), confined_process_name="")
    lower = request.logs.add(session_id=SESSION, confined_process_name="codex")
    for report, seqs in ((upper, [5, 1]), (lower, [3])):
        for seq in seqs:
            log = report.logs.add(sequence_number=seq)
            log.time.FromNanoseconds(MIN_EVENT_TIME_NS + 1)
            log.http_request.method = "GET"
            log.http_request.url = "https://a.example/"
    (session,) = parse_ingest_request(request.SerializeToString()).sessions
    assert session.session_id == SESSION
    assert session.confined_process_name == "codex"
    assert [e.sequence_number for e in session.events] == [1, 3, 5]


def test_request_level_limits() -> None:
    request = IngestRequest()
    report = request.logs.add(session_id=str(uuid.uuid4()))
    for _ in range(MAX_EVENTS_PER_REQUEST + 1):
        report.logs.add()
    with pytest.raises(InvalidRequestError, match="events, over the"):
        parse_ingest_request(request.SerializeToString())
    bad_drop = IngestRequest()
    bad_drop.drops.add(report_id="r", source="agent", session_id="nope")
    with pytest.raises(InvalidRequestError, match=r"drops\[0\]\.session_id is not a UUID"):
        parse_ingest_request(bad_drop.SerializeToString())
    # Counts out of range are clamped and counted, never a reason to refuse.
    odd = IngestRequest()
    drop = odd.drops.add(report_id="r", source="agent")
    drop.dropped["spool_full"] = -1
    drop.dropped["rejected"] = (1 << 63) - 1
    parsed = parse_ingest_request(odd.SerializeToString())
    assert parsed.drops[0].dropped == {"spool_full": 0, "rejected": MAX_DROP_COUNT}
    assert parsed.clamped == 2


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://Example.COM:443/x?y#z", "example.com"),
        ("example.com:443", "example.com"),
        ("http://user:pw@h.example/", "h.example"),
        ("https://[::1]:8080/", "::1"),
        ("//cdn.example/a", "cdn.example"),
        ("http://bad[/x", ""),
    ],
)
def test_host_of(url: str, host: str) -> None:
    assert host_of(url) == host
