"""The timeline chart's layout, sans I/O: every bar inside the plot, one slot per minute."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from boundary_audit.collector.chart import (
    CHART_BAR_WIDTH,
    CHART_HEIGHT,
    MAX_TIME_TICKS,
    chart_layout,
)
from boundary_audit.collector.model import TimelineBucket
from boundary_audit.collector.reads import MAX_TIMELINE_BUCKETS, TIMELINE_BUCKET_NS

#: What Storage.timeline returns: up to its limit of active minutes, in time
#: order, possibly spread over far more minutes than the chart shows.
BUCKETS = st.dictionaries(
    st.integers(min_value=0, max_value=10 * MAX_TIMELINE_BUCKETS),
    st.tuples(st.integers(0, 10**7), st.integers(0, 10**7)),
    max_size=MAX_TIMELINE_BUCKETS,
).map(
    lambda minutes: [
        TimelineBucket(m * TIMELINE_BUCKET_NS, a, d) for m, (a, d) in sorted(minutes.items())
    ]
)
#: Float noise in sums of pixel positions rounded to tenths.
FLOAT_SLACK = 1e-9


@given(BUCKETS)
def test_bars_stay_inside_the_plot(buckets: list[TimelineBucket]) -> None:
    chart = chart_layout(buckets)
    assert chart.height == CHART_HEIGHT
    assert chart.bar_width < CHART_BAR_WIDTH
    for bar in chart.bars:
        assert bar.x >= 0
        assert bar.x + chart.bar_width <= chart.width
        assert bar.allowed_h >= 0
        assert bar.denied_h >= 0
        assert bar.allowed_y + bar.allowed_h == CHART_HEIGHT  # allowed stands on the axis
        assert abs(bar.denied_y + bar.denied_h - bar.allowed_y) < FLOAT_SLACK  # denied on top of it
        assert bar.denied_y >= 0


@given(BUCKETS)
def test_one_slot_per_minute_up_to_the_latest(buckets: list[TimelineBucket]) -> None:
    chart = chart_layout(buckets)
    if not buckets:
        assert (chart.bars, chart.peak, chart.start, chart.end) == ([], 0, "", "")
        return
    span = (buckets[-1].minute_ns - buckets[0].minute_ns) // TIMELINE_BUCKET_NS + 1
    assert len(chart.bars) == min(span, MAX_TIMELINE_BUCKETS)
    assert [bar.x for bar in chart.bars] == [i * CHART_BAR_WIDTH for i in range(len(chart.bars))]
    assert chart.peak == max(b.allowed + b.denied for b in buckets)
    last = buckets[-1]
    assert chart.bars[-1].label.endswith(f"{last.allowed} allowed, {last.denied} denied")


def test_the_busiest_minute_fills_the_height() -> None:
    minute = TIMELINE_BUCKET_NS
    chart = chart_layout([TimelineBucket(minute, 2, 1), TimelineBucket(3 * minute, 0, 1)])
    first, empty, last = chart.bars
    assert (first.allowed_h, first.denied_h, first.denied_y) == (80.0, 40.0, 0.0)
    assert (empty.allowed_h, empty.denied_h) == (0.0, 0.0)
    assert (last.allowed_h, last.denied_h) == (0.0, 40.0)
    assert first.label == "1970-01-01T00:01Z: 2 allowed, 1 denied"
    assert (chart.start, chart.end) == (
        "1970-01-01T00:01Z",
        "1970-01-01T00:04Z",
    )
    assert [t.label for t in chart.y_ticks] == ["0", "1", "3"]
    assert [t.at for t in chart.y_ticks] == [CHART_HEIGHT, 80.0, 0.0]


@given(BUCKETS)
def test_both_axes_are_labelled_inside_the_drawing(buckets: list[TimelineBucket]) -> None:
    """The chart had no axes: now every label sits on the plot's scale, and few enough fit."""
    chart = chart_layout(buckets)
    assert chart.y_ticks[0].label == "0"
    assert chart.y_ticks[-1].label == str(chart.peak)
    assert all(0 <= t.at <= CHART_HEIGHT for t in chart.y_ticks)
    if not buckets:
        assert chart.x_ticks == []
        return
    assert 1 <= len(chart.x_ticks) <= MAX_TIME_TICKS + 1
    for tick in chart.x_ticks:
        assert 0 < tick.at < chart.width
        assert len(tick.label) == len("HH:MM")
    assert chart.svg_width > chart.width
    assert chart.svg_height > chart.height


def test_a_bar_of_rounded_up_heights_still_fits() -> None:
    """1 of 2400 rounds up to 0.1 px and 2399 of 2400 to 120.0 px: the stack stays 120."""
    (bar,) = chart_layout([TimelineBucket(0, 1, 2399)]).bars
    assert (bar.allowed_y, bar.allowed_h, bar.denied_y) == (119.9, 0.1, 0.0)
    assert abs(bar.denied_h - 119.9) < FLOAT_SLACK
