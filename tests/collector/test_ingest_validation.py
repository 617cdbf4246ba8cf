"""Sans-I/O validation of ingest bodies: every refusal names its field, nothing else slips."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.collector import fields
from boundary_audit.collector.fields import STORED_TEXT_CHARS
from boundary_audit.collector.ingest import (
    MAX_DROP_COUNT,
    MAX_EVENTS_PER_REQUEST,
    MIN_EVENT_TIME_NS,
    host_of,
    parse_ingest_request,
)
from boundary_audit.collector.model import INT64_MAX, EventFlag, InvalidRequestError
from boundary_audit.wire import IngestRequest

SESSION = "8d3c2a57-4a6e-4b8e-9a51-3c1f8e2b7d10"


@given(
    seq=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    time_ns=st.one_of(st.none(), st.integers(min_value=-(10**18), max_value=INT64_MAX + 10**18)),
    http=st.one_of(
        st.none(),
        st.tuples(
            st.text(max_size=40),
            st.sampled_from([0, 1, 50, STORED_TEXT_CHARS, STORED_TEXT_CHARS + 1]),
            st.text(max_size=20),
        ),
    ),
)
def test_an_event_is_stored_as_sent_or_refused_alone_as_a_drop(
    seq: int, time_ns: int | None, http: tuple[str, int, str] | None
) -> None:
    method, url_len, rule = http or ("", 0, "")
    request = IngestRequest(batch_id="b")
    log = request.logs.add(session_id=SESSION).logs.add(sequence_number=seq, allowed=True)
    if time_ns is not None:
        log.time.FromNanoseconds(time_ns)
    if http is not None:
        log.http_request.method = method
        log.http_request.url = "u" * url_len
        log.http_request.matched_rule = rule
    parsed = parse_ingest_request(request.SerializeToString())
    if seq < 0:
        assert parsed.sessions == [] or parsed.sessions[0].events == []
        (drop,) = parsed.drops
        assert (drop.session_id, drop.source, drop.dropped) == (
            SESSION,
            "collector",
            {"rejected_by_collector": 1},
        )
        return
    (session,) = parsed.sessions
    (event,) = session.events
    sent_ns = time_ns or 0
    assert event.time_ns == min(max(sent_ns, 0), INT64_MAX)
    assert bool(event.flags & EventFlag.TIME_CLAMPED) == (not 0 <= sent_ns <= INT64_MAX)
    assert event.sequence_number == seq
    assert (event.method, event.matched_rule) == (
        fields.stored_text(method)[0],
        fields.stored_text(rule)[0],
    )
    if url_len > STORED_TEXT_CHARS:
        assert event.flags & EventFlag.CUT
        assert event.url.endswith(fields.CUT_MARKER)
        assert len(event.url) == STORED_TEXT_CHARS
    else:
        assert event.url == "u" * url_len


@given(st.text(alphabet=st.sampled_from("ab\\0x\x00\udc80\udcff\u00e9"), max_size=30))
def test_escaping_is_reversible(value: str) -> None:
    stored, flags = fields.stored_text(value)
    assert "\x00" not in stored
    stored.encode("utf-8")  # storable in any engine
    if flags & EventFlag.ESCAPED:
        assert fields.unescape(stored) == value
    else:
        assert stored == value


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
