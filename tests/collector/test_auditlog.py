"""Audit lines match what structlog's JSON renderer would write, for any values."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import structlog
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.collector.auditlog import audit_record, render_lines
from boundary_audit.collector.model import EventIn, Identity, StoredEvent, format_ns, parse_time

#: Any text, control characters, quotes, surrogate-free unicode and all.
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
#: Event times from 1970 to 2262 (what int64 nanoseconds hold).
TIMES = st.integers(min_value=0, max_value=(1 << 63) - 1)


@given(
    texts=st.fixed_dictionaries(
        {"method": TEXT, "url": TEXT, "rule": TEXT, "agent": TEXT, "workspace": TEXT}
    ),
    allowed=st.booleans(),
    time_ns=TIMES,
)
def test_fast_lines_equal_structlog_rendering(
    texts: dict[str, str], allowed: bool, time_ns: int
) -> None:
    url = texts["url"]
    event = EventIn(1, time_ns, allowed, texts["method"], url, "h", texts["rule"])
    stored = StoredEvent("4c5b0d1e-0000-4000-8000-000000000001", event)
    ident = Identity("id", texts["agent"], texts["workspace"], "agent")
    (line,) = render_lines([stored], ident, "2026-01-01T00:00:00.000001Z")
    reference = structlog.processors.JSONRenderer()(
        None, "info", audit_record(stored, ident, "2026-01-01T00:00:00.000001Z")
    )
    assert line == reference
    assert "\n" not in line
    assert json.loads(line)["url"] == url


@given(TIMES)
def test_format_ns_round_trips_to_the_microsecond(ns: int) -> None:
    text = format_ns(ns)
    assert text.endswith("Z")
    assert len(text) == 27
    assert parse_time(text) == ns - ns % 1000


def test_format_ns_matches_datetime() -> None:
    ns = 1_767_225_845_123_456_789
    expected = datetime.fromtimestamp(ns // 10**9, tz=UTC).replace(microsecond=123456)
    assert format_ns(ns) == expected.isoformat().replace("+00:00", "Z")
