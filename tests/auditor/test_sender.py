"""The sender's decisions, without a socket or a thread: the clock is a number we step."""

from __future__ import annotations

import collections
import errno
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boundary_audit._retry import FULL_JITTER, Backoff
from boundary_audit.auditor.delivery import ACK_WAIT, Kind, Sent
from boundary_audit.auditor.encoding import Record
from boundary_audit.auditor.sender import (
    BLOCKED_POLL_INTERVAL,
    DROP_EPISODE_QUIET,
    INITIAL_BACKOFF,
    INVALID_LOG_EVERY,
    MAX_BACKOFF,
    MAX_PENDING_EVENTS,
    PEER_CHECK_INTERVAL,
    Batch,
    DropEpisodes,
    EpisodeOver,
    EpisodeStarted,
    PeriodicCheck,
    Retry,
    SenderState,
    StatusReports,
    failure_kind,
    should_log_invalid,
)

SESSION = "0b8f0f4e-3c4d-4f5e-8a6b-7c8d9e0f1a2b"


def records(n: int, first: int = 0) -> collections.deque[Record]:
    return collections.deque(
        Record(SESSION, i, 0, "GET", f"https://h.example/{i}", True, "r")
        for i in range(first, first + n)
    )


def backoff(rand: Callable[[], float]) -> Backoff:
    """The sender's backoff with its randomness supplied by the test."""
    return Backoff(INITIAL_BACKOFF, MAX_BACKOFF, floor=FULL_JITTER, rand=rand)


# -- batching ------------------------------------------------------------------


def test_batch_is_due_at_its_size_not_before() -> None:
    batch = Batch(size=10, interval=3600)
    queue = records(9)
    batch.take(queue, now=100.0)
    assert not queue
    assert not batch.due(100.0, urgent=False)
    batch.take(records(1, first=9), now=101.0)
    assert batch.due(101.0, urgent=False)


def test_batch_is_due_when_its_oldest_event_is_interval_old() -> None:
    batch = Batch(size=1000, interval=5.0)
    batch.take(records(3), now=10.0)
    batch.take(records(1, first=3), now=14.0)  # a later event does not restart the timer
    assert not batch.due(14.999, urgent=False)
    assert batch.due(15.0, urgent=False)
    assert batch.started == 10.0


def test_an_urgent_flush_sends_any_batch_but_never_an_empty_one() -> None:
    batch = Batch(size=1000, interval=3600)
    assert not batch.due(0.0, urgent=True)
    batch.take(records(1), now=0.0)
    assert batch.due(0.0, urgent=True)


def test_batch_takes_at_most_its_capacity_and_leaves_the_rest_queued() -> None:
    batch = Batch(size=10, interval=5.0)
    queue = records(MAX_PENDING_EVENTS + 5)
    batch.take(queue, now=0.0)
    assert len(batch) == MAX_PENDING_EVENTS
    assert len(queue) == 5
    batch.take(queue, now=1.0)
    assert len(queue) == 5  # still full: nothing more is taken


def test_a_partly_written_batch_keeps_its_age_and_an_empty_one_forgets_it() -> None:
    batch = Batch(size=10, interval=5.0)
    batch.take(records(30), now=1.0)
    batch.written(20, now=2.0)  # a write failed after 20
    assert [r.sequence_number for r in batch.records] == list(range(20, 30))
    assert batch.started == 1.0
    batch.written(10, now=3.0)
    assert not batch.records
    assert batch.started is None
    batch.take(records(1), now=7.0)
    assert batch.started == 7.0


def test_the_rest_of_a_batch_whose_flush_stopped_part_way_is_due_at_once() -> None:
    batch = Batch(size=300, interval=3600)
    batch.take(records(300), now=0.0)
    assert batch.due(0.0, urgent=False)
    batch.written(100, now=1.0)  # the agent's buffer filled up
    assert len(batch) == 200
    assert batch.due(1.0, urgent=False)  # below its size, young: still owed
    batch.written(200, now=2.0)
    batch.take(records(5), now=3.0)
    assert not batch.due(3.0, urgent=False)  # a new batch waits as usual


@given(
    size=st.integers(1, 50),
    interval=st.floats(0.01, 100.0),
    arrivals=st.lists(st.tuples(st.integers(0, 20), st.floats(0.0, 10.0)), max_size=20),
    later=st.floats(0.0, 200.0),
)
@settings(max_examples=200, deadline=None)
def test_batch_due_matches_the_rule(
    size: int, interval: float, arrivals: list[tuple[int, float]], later: float
) -> None:
    """Due exactly when it holds ``size`` events or its first is ``interval`` old."""
    batch = Batch(size, interval)
    now, first_at, held = 0.0, None, 0
    numbers = itertools.count()
    for count, gap in arrivals:
        now += gap
        batch.take(records(count, first=next(numbers)), now)
        held += count
        if held and first_at is None:
            first_at = now
    now += later
    expected = held > 0 and (held >= size or (first_at is not None and now - first_at >= interval))
    assert batch.due(now, urgent=False) == expected


# -- backoff -------------------------------------------------------------------


def old_schedule(rands: list[float]) -> list[float]:
    """The delays the sender computed before it used the shared Backoff."""
    delays, backoff = [], 0.0
    for r in rands:
        backoff = min(MAX_BACKOFF, max(INITIAL_BACKOFF, backoff * 2))
        delays.append(0 + (backoff - 0) * r)  # random.uniform(0, backoff)
    return delays


def test_backoff_doubles_from_50_ms_to_5_s_with_full_jitter() -> None:
    retry = Retry(backoff(lambda: 1.0))
    now, waits = 0.0, []
    for _ in range(10):
        retry.failed("connect:ENOENT", now)
        waits.append(round(retry.retry_at - now, 6))
        assert not retry.ready(now)
        now = retry.retry_at
        assert retry.ready(now)
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    half = Retry(backoff(lambda: 0.5))
    half.failed("connect:ENOENT", 0.0)
    assert half.retry_at == pytest.approx(0.025)
    zero = Retry(backoff(lambda: 0.0))
    zero.failed("connect:ENOENT", 3.0)
    assert zero.ready(3.0)  # full jitter: a retry may come at once


def test_default_retry_uses_the_shared_backoff_with_the_senders_bounds() -> None:
    policy = Retry().backoff
    assert (policy.initial, policy.maximum, policy.floor) == (0.05, 5.0, FULL_JITTER)


@given(rands=st.lists(st.floats(0.0, 1.0), max_size=40))
def test_backoff_reproduces_the_old_delays_exactly(rands: list[float]) -> None:
    supply = iter(rands)
    retry = Retry(backoff(lambda: next(supply)))
    delays = []
    for _ in rands:
        retry.failed("write:EPIPE", 0.0)
        delays.append(retry.retry_at)
    assert delays == pytest.approx(old_schedule(rands))


def test_only_a_new_kind_of_failure_is_news_and_a_connect_starts_over() -> None:
    retry = Retry(backoff(lambda: 1.0))
    assert retry.failed("connect:ENOENT", 0.0)
    assert not retry.failed("connect:ENOENT", 1.0)
    assert retry.failed("connect:ECONNREFUSED", 2.0)
    assert retry.failures == 3
    retry.connected()
    assert (retry.failures, retry.last_error) == (0, None)
    assert retry.failed("write:EPIPE", 10.0)  # news again after a success
    assert retry.retry_at == pytest.approx(10.05)  # and the backoff started over


def test_failure_kinds_name_the_errno_or_the_exception() -> None:
    assert failure_kind("connect", ConnectionRefusedError(errno.ECONNREFUSED, "x")) == (
        "connect:ECONNREFUSED"
    )
    assert failure_kind("write", TimeoutError("stalled")) == "write:TimeoutError"


# -- drop episodes ---------------------------------------------------------------


def test_a_drop_episode_is_one_line_when_it_starts_and_one_after_quiet() -> None:
    drops = DropEpisodes()
    assert drops.observe(0, now=0.0) is None
    assert drops.observe(3, now=1.0) == EpisodeStarted(dropped_total=3)
    assert drops.observe(50, now=2.0) is None  # still dropping: no new line
    assert drops.observe(50, now=2.0 + DROP_EPISODE_QUIET - 0.001) is None
    assert drops.observe(50, now=2.0 + DROP_EPISODE_QUIET) == EpisodeOver(
        dropped_in_episode=50, dropped_total=50
    )
    assert drops.observe(50, now=100.0) is None  # over, and said once
    assert drops.observe(52, now=101.0) == EpisodeStarted(dropped_total=52)
    assert drops.observe(52, now=101.0 + DROP_EPISODE_QUIET) == EpisodeOver(
        dropped_in_episode=2, dropped_total=52
    )


@given(steps=st.lists(st.tuples(st.integers(0, 5), st.floats(0.0, 8.0)), max_size=60))
def test_drop_episodes_alternate_and_account_for_every_drop(
    steps: list[tuple[int, float]],
) -> None:
    drops = DropEpisodes()
    total, now, lines = 0, 0.0, []
    for new, gap in steps:
        total += new
        now += gap
        line = drops.observe(total, now)
        if line is not None:
            lines.append(line)
    assert all(isinstance(x, EpisodeStarted) for x in lines[0::2])
    assert all(isinstance(x, EpisodeOver) for x in lines[1::2])
    over = [x for x in lines if isinstance(x, EpisodeOver)]
    assert sum(x.dropped_in_episode for x in over) == (over[-1].dropped_total if over else 0)


# -- status reports ---------------------------------------------------------------


def test_status_reports_carry_deltas_and_keep_what_failed_to_send() -> None:
    status = StatusReports()
    assert not status.due(0, can_send=True)
    assert status.due(10, can_send=True)
    assert not status.due(10, can_send=False)  # not connected and not closing
    assert status.unreported(10) == 10
    # The write of that status failed: nothing is marked, more drops pile on.
    assert status.unreported(15) == 15
    status.delivered(15)
    assert not status.due(15, can_send=True)
    assert status.unreported(20) == 5


def test_invalid_events_are_logged_first_then_every_thousandth() -> None:
    logged = [n for n in range(1, 3 * INVALID_LOG_EVERY + 1) if should_log_invalid(n)]
    assert logged == [1, INVALID_LOG_EVERY, 2 * INVALID_LOG_EVERY, 3 * INVALID_LOG_EVERY]


def test_periodic_check() -> None:
    check = PeriodicCheck(PEER_CHECK_INTERVAL)
    assert check.due(PEER_CHECK_INTERVAL)
    check.done(10.0)
    assert not check.due(10.0 + PEER_CHECK_INTERVAL / 2)
    assert check.due(10.0 + PEER_CHECK_INTERVAL)


# -- the whole state ----------------------------------------------------------------


def test_flush_waits_for_the_retry_time_whatever_is_due() -> None:
    state = SenderState(batch_size=1, backoff=backoff(lambda: 1.0))
    state.batch.take(records(1), now=0.0)
    assert state.flush_due(0.0, urgent=False, dropped=0, can_report=False)
    state.retry.failed("connect:ENOENT", 0.0)
    assert not state.flush_due(0.01, urgent=True, dropped=5, can_report=True)
    assert state.flush_due(0.05, urgent=False, dropped=0, can_report=False)


def test_a_re_send_a_status_or_extra_frames_alone_are_reason_to_flush() -> None:
    state = SenderState()
    assert not state.flush_due(0.0, urgent=True, dropped=0, can_report=True)
    assert state.flush_due(0.0, urgent=False, dropped=1, can_report=True)
    assert not state.flush_due(0.0, urgent=False, dropped=1, can_report=False)
    assert state.flush_due(0.0, urgent=False, dropped=0, can_report=False, extra=True)
    state.delivery.carried.append(Sent(b"f", Kind.LOGS, 1, 0))
    assert state.flush_due(0.0, urgent=False, dropped=0, can_report=False)
    state.blocked = True  # no room: nothing is due until the agent takes frames
    assert not state.flush_due(0.0, urgent=True, dropped=1, can_report=True, extra=True)


def test_sleep_until_the_next_reason_to_act() -> None:
    state = SenderState(batch_size=100, batch_interval=2.0, backoff=backoff(lambda: 1.0))
    assert state.sleep_for(0.0) == PEER_CHECK_INTERVAL  # idle: only the peer check
    state.batch.take(records(1), now=10.0)
    assert state.sleep_for(10.1) == PEER_CHECK_INTERVAL  # batch deadline is later
    assert state.sleep_for(11.8) == pytest.approx(0.2)  # batch deadline first
    assert state.sleep_for(13.0) == 0.0  # overdue: never negative
    state.retry.failed("connect:ENOENT", 11.99)
    assert state.sleep_for(12.0) == pytest.approx(0.04)  # backing off: the retry time
    state.begin_close(12.0, timeout=0.01)
    assert state.sleep_for(12.0) == pytest.approx(0.01)  # the close deadline first
    assert state.sleep_for(12.0, awaiting_peer=True) == pytest.approx(0.01)
    waiting = SenderState()
    assert waiting.sleep_for(0.0, awaiting_peer=True) == BLOCKED_POLL_INTERVAL
    waiting.blocked = True
    assert waiting.sleep_for(0.0) == BLOCKED_POLL_INTERVAL


def test_sleep_until_the_agent_is_due_to_have_acknowledged() -> None:
    state = SenderState()
    d = state.delivery
    d.wrote(Sent(b"o" * 10, Kind.OPEN), outq_after=768)
    d.sampled(0)
    d.alive(now=50.0)  # the open was read at 50.0
    assert state.sleep_for(50.2) == pytest.approx(ACK_WAIT - 0.2)


def test_close_ends_when_sealed_and_delivered_when_nobody_listens_or_at_the_deadline() -> None:
    state = SenderState()
    state.begin_close(100.0, timeout=5.0)
    state.begin_close(101.0, timeout=60.0)  # the first deadline stands
    assert state.close_deadline == 105.0
    assert not state.close_done(100.0, queue_empty=True)  # the seal is not out yet
    state.sealed = True
    assert state.close_done(100.0, queue_empty=True)
    assert not state.close_done(100.0, queue_empty=False)
    state.delivery.wrote(Sent(b"seal", Kind.SEAL), outq_after=None)
    assert not state.close_done(100.0, queue_empty=True)  # the agent may not have it
    state.delivery.acknowledged(1)
    assert state.close_done(100.0, queue_empty=True)
    state.batch.take(records(1), now=100.0)
    assert not state.close_done(104.9, queue_empty=True)
    assert state.close_done(105.0, queue_empty=True)
    state.no_agent = True
    assert state.close_done(100.0, queue_empty=False)
