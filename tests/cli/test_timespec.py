"""The shared time grammar of --since/--until (pure: "now" and the zone are given)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.timespec import (
    DURATION_UNITS,
    NS_PER_SECOND,
    TimeSpecError,
    parse_when,
    to_ns,
)

NOW = datetime(2026, 3, 4, 15, 30, 0, tzinfo=UTC)
NOW_NS = to_ns(NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02T03:04:05+01:00", datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC)),
        ("2026-01-02T03:04:05", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),
        ("1h", NOW - timedelta(hours=1)),
        ("90s", NOW - timedelta(seconds=90)),
        ("7d", NOW - timedelta(days=7)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2W", NOW - timedelta(weeks=2)),
        ("now", NOW),
        ("today", datetime(2026, 3, 4, tzinfo=UTC)),
        ("yesterday", datetime(2026, 3, 3, tzinfo=UTC)),
        (" Yesterday ", datetime(2026, 3, 3, tzinfo=UTC)),
    ],
)
def test_each_form_of_the_grammar(text: str, expected: datetime) -> None:
    assert parse_when(text, now_ns=NOW_NS) == to_ns(expected)


def test_today_is_midnight_in_the_given_zone() -> None:
    tokyo = timezone(timedelta(hours=9))
    # 15:30 UTC is 00:30 on March 5th in UTC+9.
    assert parse_when("today", now_ns=NOW_NS, zone=tokyo) == to_ns(
        datetime(2026, 3, 5, tzinfo=tokyo)
    )


@pytest.mark.parametrize("text", ["", "1x", "-1h", "0h", "soon", "2026-13-01", "h", "1 h 2"])
def test_anything_else_is_refused_naming_the_grammar(text: str) -> None:
    with pytest.raises(TimeSpecError) as raised:
        parse_when(text, now_ns=NOW_NS)
    assert repr(text) in str(raised.value)


def test_times_outside_storage_range_are_refused() -> None:
    with pytest.raises(TimeSpecError, match="1970-2262"):
        parse_when("1969-12-31T23:59:59Z", now_ns=NOW_NS)
    with pytest.raises(TimeSpecError, match="1970-2262"):
        parse_when("100000w", now_ns=NOW_NS)


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2262, 1, 1),
        timezones=st.just(UTC),
    )
)
def test_rfc3339_round_trips(moment: datetime) -> None:
    assert parse_when(moment.isoformat(), now_ns=NOW_NS) == to_ns(moment)
    assert parse_when(moment.isoformat().replace("+00:00", "Z"), now_ns=NOW_NS) == to_ns(moment)


# At most 500 weeks (~10 years) ago: well after 1970 from NOW.
@given(st.integers(min_value=1, max_value=500), st.sampled_from(sorted(DURATION_UNITS)))
def test_a_duration_is_that_long_before_now(amount: int, unit: str) -> None:
    ago = parse_when(f"{amount}{unit}", now_ns=NOW_NS)
    assert NOW_NS - ago == amount * DURATION_UNITS[unit] * NS_PER_SECOND


@given(st.text(max_size=20))
def test_any_text_is_a_time_or_a_clear_error(text: str) -> None:
    try:
        ns = parse_when(text, now_ns=NOW_NS)
    except TimeSpecError as exc:
        message = str(exc)
    else:
        assert 0 <= ns < 2**63
        return
    assert any(part in message for part in ("is not", "must be", "1970-2262")), message
