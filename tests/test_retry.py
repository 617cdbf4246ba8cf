"""The shared retry policy: bounds, growth, jitter floors, Retry-After."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boundary_audit._retry import EQUAL_JITTER, FULL_JITTER, Backoff


def test_delays_double_up_to_the_cap() -> None:
    b = Backoff(0.5, 8.0, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_full_jitter_may_reach_zero_equal_jitter_never_below_half() -> None:
    full = Backoff(1.0, 1.0, floor=FULL_JITTER, rand=lambda: 0.0)
    equal = Backoff(1.0, 1.0, floor=EQUAL_JITTER, rand=lambda: 0.0)
    assert full.next_delay() == 0.0
    assert equal.next_delay() == 0.5


def test_reset_starts_again_from_initial() -> None:
    b = Backoff(0.1, 10.0, rand=lambda: 1.0)
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.failures == 0
    assert b.next_delay() == 0.1


def test_retry_after_adds_at_most_ten_percent_and_counts_a_failure() -> None:
    b = Backoff(0.1, 10.0, rand=lambda: 1.0)
    assert b.after_retry_after(20.0) == pytest.approx(22.0)
    assert b.failures == 1


@pytest.mark.parametrize(("initial", "maximum", "floor"), [(0, 1, 0.5), (1, -1, 0.5), (1, 2, 2.0)])
def test_bad_bounds_are_refused(initial: float, maximum: float, floor: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        Backoff(initial, maximum, floor=floor)


@given(
    initial=st.floats(0.001, 10),
    maximum=st.floats(0.001, 1000),
    floor=st.floats(0, 1),
    failures=st.integers(0, 10_000),
    r=st.floats(0, 1),
)
def test_every_delay_lies_within_its_bounds(
    initial: float, maximum: float, floor: float, failures: int, r: float
) -> None:
    b = Backoff(initial, maximum, floor=floor, rand=lambda: r)
    b.failures = failures
    cap = b.cap
    assert cap <= maximum
    delay = b.next_delay()
    assert cap * floor - 1e-9 <= delay <= cap + 1e-9
