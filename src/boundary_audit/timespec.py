"""One grammar for the times people type (``--since``, ``--until``): pure, no clock.

A time is one of

* an RFC 3339 / ISO 8601 time (``2026-01-02T03:04:05Z``; without a zone, UTC;
  a bare date ``2026-01-02`` is its midnight UTC),
* a duration ago: a positive number and a unit ``s``, ``m``, ``h``, ``d`` or
  ``w`` (``90s``, ``15m``, ``1h``, ``7d``, ``1.5h``),
* ``now``, ``today`` or ``yesterday`` (midnight at the start of that day in
  the given time zone, the local one on the command line).

:func:`parse_when` turns one into epoch nanoseconds given "now" and a zone,
so every command that takes times reads them the same way and tests need no
clock.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

NS_PER_SECOND = 1_000_000_000
#: Latest representable time: storage keeps nanoseconds in a signed 64-bit int.
INT64_MAX = 2**63 - 1
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Seconds per duration unit.
DURATION_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
#: Named days: how many days before today their midnight is.
NAMED_DAYS: dict[str, int] = {"today": 0, "yesterday": 1}
#: Shown in every error, so a refused value says what would be accepted.
GRAMMAR = (
    "an RFC 3339 time (2026-01-02T03:04:05Z), a duration ago (90s, 15m, 1h, 7d),"
    " now, today or yesterday"
)


class TimeSpecError(ValueError):
    """The text is no time in the grammar; the message says what is accepted."""


def parse_duration_seconds(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w`` to seconds (positive)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise TimeSpecError(f"{text!r} is not a duration such as 90s, 15m, 1h, 7d")
    value = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    if not value > 0:
        raise TimeSpecError(f"duration {text!r} must be positive")
    return value


def to_ns(moment: datetime) -> int:
    """Epoch nanoseconds of an aware datetime, exactly (no float rounding)."""
    return (moment - _EPOCH) // _MICROSECOND * 1000


def parse_when(text: str, *, now_ns: int, zone: tzinfo = UTC) -> int:
    """Epoch nanoseconds of ``text`` (see the module docstring); :class:`TimeSpecError` if none."""
    raw = text.strip()
    word = raw.lower()
    if word == "now":
        return now_ns
    if word in NAMED_DAYS:
        now = datetime.fromtimestamp(now_ns / NS_PER_SECOND, zone)
        midnight = datetime.combine(now.date(), datetime.min.time(), zone)
        return _checked(text, to_ns(midnight - timedelta(days=NAMED_DAYS[word])))
    if _DURATION.fullmatch(word):
        return _checked(text, now_ns - int(parse_duration_seconds(word) * NS_PER_SECOND))
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise TimeSpecError(f"{text!r} is not {GRAMMAR}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _checked(text, to_ns(parsed))


def _checked(text: str, ns: int) -> int:
    if not 0 <= ns <= INT64_MAX:
        raise TimeSpecError(f"{text!r} is outside the years 1970-2262")
    return ns


def local_zone() -> tzinfo:
    """The machine's time zone (for ``today``/``yesterday`` on the command line)."""
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else UTC
