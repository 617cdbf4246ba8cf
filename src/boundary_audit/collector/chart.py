"""The session timeline chart's geometry, sans I/O: bars, and the axes that label them.

Drawn by the server as SVG (no script may run: see the UI's CSP), so the
template only places what :func:`chart_layout` computes. The x axis is event
time (the sender's clock), one slot per minute; the y axis is events per minute.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import TimelineBucket, format_ns
from .reads import MAX_TIMELINE_BUCKETS, TIMELINE_BUCKET_NS

#: Height in pixels of the timeline chart's plot area.
CHART_HEIGHT = 120
#: Width in pixels of one minute in the timeline chart (120 minutes fit 1440 px).
CHART_BAR_WIDTH = 12
#: Pixels between neighbouring bars.
CHART_BAR_GAP = 2
#: Room left of the plot for the count labels (six digits at 11 px).
CHART_MARGIN_LEFT = 48
#: Room below the plot for the time labels.
CHART_MARGIN_BOTTOM = 20
#: Room above the plot, so the top count label is not cut in half.
CHART_MARGIN_TOP = 8
#: Room right of the plot, so the last time label is not cut.
CHART_MARGIN_RIGHT = 24
#: Time labels at most: one per 5 characters "HH:MM" plus space, over the narrowest plot.
MAX_TIME_TICKS = 8
#: Minutes between time labels, the smallest that keeps them under MAX_TIME_TICKS.
TICK_STEPS_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120)


@dataclass(frozen=True, slots=True)
class Bar:
    """One minute of the chart: allowed stacked at the bottom, denied on top."""

    x: int
    allowed_y: float
    allowed_h: float
    denied_y: float
    denied_h: float
    label: str


@dataclass(frozen=True, slots=True)
class Tick:
    """A labelled position on an axis (x from the plot's left, y from its top)."""

    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    bars: list[Bar]
    #: Plot area (bars live in it, from 0,0).
    width: int
    height: int
    bar_width: int
    peak: int
    start: str
    end: str
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    left: int = CHART_MARGIN_LEFT
    top: int = CHART_MARGIN_TOP

    @property
    def svg_width(self) -> int:
        return self.left + self.width + CHART_MARGIN_RIGHT

    @property
    def svg_height(self) -> int:
        return self.top + self.height + CHART_MARGIN_BOTTOM


def _time_ticks(minutes: list[int]) -> list[Tick]:
    step = next(
        (s for s in TICK_STEPS_MINUTES if len(minutes) / s <= MAX_TIME_TICKS),
        TICK_STEPS_MINUTES[-1],
    )
    ticks = []
    for i, minute in enumerate(minutes):
        if (minute // TIMELINE_BUCKET_NS) % step == 0:
            ticks.append(Tick(i * CHART_BAR_WIDTH + CHART_BAR_WIDTH / 2, format_ns(minute)[11:16]))
    return ticks


def _count_ticks(peak: int) -> list[Tick]:
    """0, the middle (when it is a whole count) and the peak, placed on the plot's scale."""
    if not peak:
        return [Tick(CHART_HEIGHT, "0")]
    values = sorted({0, peak // 2, peak}) if peak >= 2 else [0, peak]
    return [Tick(round(CHART_HEIGHT - v * CHART_HEIGHT / peak, 1), str(v)) for v in values]


def chart_layout(buckets: list[TimelineBucket]) -> Chart:
    """Geometry of the stacked allowed/denied bars of a session's timeline.

    ``buckets`` are in time order, as :meth:`Storage.timeline` returns them.
    Minutes without events get an empty slot, so the x axis is time; only the
    latest ``MAX_TIMELINE_BUCKETS`` minutes are drawn.
    """
    counts = {b.minute_ns: b for b in buckets}
    minutes: list[int] = []
    if buckets:
        last = buckets[-1].minute_ns
        first = max(buckets[0].minute_ns, last - (MAX_TIMELINE_BUCKETS - 1) * TIMELINE_BUCKET_NS)
        minutes = list(range(first, last + 1, TIMELINE_BUCKET_NS))
    peak = max((b.allowed + b.denied for b in buckets), default=0)
    scale = CHART_HEIGHT / peak if peak else 0
    bars = []
    for i, minute in enumerate(minutes):
        b = counts.get(minute, TimelineBucket(minute, 0, 0))
        # Rounded edges, not heights: two heights each rounded up could
        # stack past the top of the plot (1 allowed + 2399 denied did).
        h_allowed = round(b.allowed * scale, 1)
        top = round((b.allowed + b.denied) * scale, 1)
        bars.append(
            Bar(
                x=i * CHART_BAR_WIDTH,
                allowed_y=CHART_HEIGHT - h_allowed,
                allowed_h=h_allowed,
                denied_y=CHART_HEIGHT - top,
                denied_h=round(top - h_allowed, 1),
                label=f"{format_ns(minute)[:16]}Z: {b.allowed} allowed, {b.denied} denied",
            )
        )
    return Chart(
        bars=bars,
        width=max(len(minutes), 1) * CHART_BAR_WIDTH,
        height=CHART_HEIGHT,
        bar_width=CHART_BAR_WIDTH - CHART_BAR_GAP,
        peak=peak,
        start=format_ns(minutes[0])[:16] + "Z" if minutes else "",
        end=format_ns(minutes[-1] + TIMELINE_BUCKET_NS)[:16] + "Z" if minutes else "",
        x_ticks=_time_ticks(minutes),
        y_ticks=_count_ticks(peak),
    )
