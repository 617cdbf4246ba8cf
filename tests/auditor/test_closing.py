"""The seal and the spill plan, decided without I/O."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.auditor.closing import (
    MAX_EVENTS_MADE,
    compose_seal,
    events_made,
    plan_spill,
)
from boundary_audit.wire import DropReason


def test_events_made_covers_every_number_used_within_int32() -> None:
    assert events_made(0) == 0  # an empty session
    assert events_made(0, -1, -1) == 0
    assert events_made(7, 3, -1) == 7  # the counter's next number
    assert events_made(0, 41, 9) == 42  # own numbers (MultiAuditor): the highest + 1
    assert events_made(0, 5, 99) == 100  # a dropped event's number counts too
    assert events_made(0, 2**40) == MAX_EVENTS_MADE  # never past the wire's range


def test_the_seal_carries_totals_by_reason_and_leaves_out_empty_ones() -> None:
    seal = compose_seal(
        events_made=300,
        events_sent=240,
        dropped={DropReason.CHANNEL_FULL: 34, DropReason.CLOSED: 0, DropReason.SPILL_FULL: 2},
        undelivered=0,
        spilled=24,
        sealed_at_ns=1_700_000_000_123_456_789,
    )
    assert dict(seal.dropped) == {"channel_full": 34, "spill_full": 2}
    assert (seal.events_made, seal.events_sent, seal.spilled, seal.undelivered) == (
        300,
        240,
        24,
        0,
    )
    assert (seal.sealed_at.seconds, seal.sealed_at.nanos) == (1_700_000_000, 123_456_789)


def test_the_spill_keeps_the_oldest_frames_that_fit_and_counts_the_rest() -> None:
    candidates = [(b"a" * 100, 10), (b"b" * 100, 10), (b"c" * 100, 10), (b"d" * 5, 1)]
    plan = plan_spill(candidates, room=250)
    assert plan.frames == (b"a" * 100, b"b" * 100)  # d would fit, but after a gap: no
    assert (plan.spilled_events, plan.spill_full_events, plan.size) == (20, 11, 200)
    assert plan_spill(candidates, room=0).spill_full_events == 31
    assert plan_spill([], room=0).frames == ()


@given(
    candidates=st.lists(st.tuples(st.binary(min_size=1, max_size=300), st.integers(0, 50))),
    room=st.integers(0, 3000),
)
def test_every_event_is_either_spilled_or_counted_as_spill_full(
    candidates: list[tuple[bytes, int]], room: int
) -> None:
    plan = plan_spill(candidates, room)
    assert plan.size <= room
    assert plan.spilled_events + plan.spill_full_events == sum(e for _, e in candidates)
    assert plan.frames == tuple(f for f, _ in candidates[: len(plan.frames)])  # a prefix
    if len(plan.frames) < len(candidates):  # the next one did not fit
        assert plan.size + len(candidates[len(plan.frames)][0]) > room
