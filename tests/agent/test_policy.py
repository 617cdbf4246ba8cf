"""The pure retry policy: backoff growth, caps, jitter bounds, Retry-After, acks."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest

from boundary_audit.agent import AgentConfig, Backoff, parse_retry_after, retry_delay
from boundary_audit.agent.forwarder import parse_ack

#: A fixed "now" for HTTP-date Retry-After values.
NOW = 1_700_000_000.0


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


def no_jitter() -> Backoff:
    return Backoff(0.5, 8.0, rand=lambda: 0.0)


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_waits_what_retry_after_says_capped(status: int) -> None:
    assert retry_delay(status, "7", no_jitter(), retry_after_max=300.0) == ("throttled", 7.0)
    assert retry_delay(status, "3600", no_jitter(), retry_after_max=300.0) == ("throttled", 300.0)
    date = email.utils.formatdate(NOW + 20, usegmt=True)
    state, delay = retry_delay(status, date, no_jitter(), retry_after_max=300.0, now=NOW)
    assert state == "throttled"
    assert delay == pytest.approx(20.0)


def test_retry_after_gets_at_most_ten_percent_jitter() -> None:
    backoff = Backoff(0.5, 8.0, rand=lambda: 1.0)
    assert retry_delay(429, "10", backoff, retry_after_max=300.0) == ("throttled", 11.0)


def test_throttling_without_a_usable_retry_after_backs_off() -> None:
    backoff = no_jitter()
    assert retry_delay(503, None, backoff, retry_after_max=300.0) == ("throttled", 0.25)
    assert retry_delay(503, "soon", backoff, retry_after_max=300.0) == ("throttled", 0.5)


@pytest.mark.parametrize(
    ("status", "state"), [(401, "unauthorized"), (403, "unauthorized"), (500, "http_500")]
)
def test_other_failures_back_off_and_name_their_state(status: int, state: str) -> None:
    backoff = no_jitter()
    delays = [retry_delay(status, "1", backoff, retry_after_max=300.0) for _ in range(3)]
    assert delays == [(state, 0.25), (state, 0.5), (state, 1.0)]  # Retry-After ignored


def test_every_failure_counts_towards_the_next_backoff() -> None:
    backoff = no_jitter()
    retry_delay(429, "1", backoff, retry_after_max=300.0)
    assert retry_delay(500, None, backoff, retry_after_max=300.0) == ("http_500", 0.5)


def test_acknowledgement_counts_are_parsed_or_refused() -> None:
    assert parse_ack(b'{"batch_id": "b", "stored": 3, "duplicates": 2}') == (3, 2)
    for bad in (b"", b"[]", b'{"stored": 1}', b'{"stored": "x", "duplicates": 0}'):
        with pytest.raises((ValueError, KeyError, TypeError)):
            parse_ack(bad)


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
