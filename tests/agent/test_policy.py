"""The pure retry policy: backoff growth, caps, jitter bounds, Retry-After."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest

from boundary_audit.agent import AgentConfig, Backoff, parse_retry_after


def test_backoff_grows_exponentially_and_is_capped() -> None:
    low = Backoff(0.5, 8.0, rand=lambda: 0.0)
    assert [low.next_delay() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    high = Backoff(0.5, 8.0, rand=lambda: 1.0)
    assert [high.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    high.reset()
    assert high.next_delay() == 0.5


def test_backoff_survives_very_many_failures() -> None:
    b = Backoff(0.2, 30.0)
    b.failures = 10_000
    assert 15.0 <= b.next_delay() <= 30.0


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"socket_mode": 0o666}, "other users"),
        ({"socket_mode": 0o777}, "other users"),
        ({"collector_url": "ftp://x"}, "http"),
        ({"token": ""}, "token is required"),
        ({"spool_max_bytes": 0}, "spool_max_bytes"),
        ({"idle_timeout": 0}, "idle_timeout"),
    ],
)
def test_config_rejects_unsafe_or_broken_settings(
    overrides: dict[str, object], message: str
) -> None:
    values: dict[str, Any] = {"collector_url": "http://127.0.0.1:1", "token": "t"}
    values.update(overrides)
    with pytest.raises(ValueError, match=message):
        AgentConfig(**values)


def test_ingest_url_is_derived_from_the_base_url() -> None:
    cfg = AgentConfig(collector_url="http://h:1/", token="t")
    assert cfg.ingest_url == "http://h:1/api/v1/boundary-logs"
    cfg = AgentConfig(collector_url="http://h:1/api/v1/boundary-logs", token="t")
    assert cfg.ingest_url == "http://h:1/api/v1/boundary-logs"
