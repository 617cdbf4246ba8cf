"""What the web UI shows, sans I/O: readable times and durations, the sessions filter.

Times are shown as ISO 8601 UTC to the second (``2026-01-02 03:04:05Z``),
with the full RFC 3339 value (microseconds) in the ``title`` tooltip and the
``datetime`` attribute; no script runs, so the browser's zone is not known.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from markupsafe import Markup, escape

from .model import NS_PER_SECOND, format_ns, parse_time
from .overview import SessionFilter

#: Seconds per minute, hour and day, for durations.
MINUTE_S = 60
HOUR_S = 60 * MINUTE_S
DAY_S = 24 * HOUR_S
#: Characters of a session id shown in lists (the full id is in the link and tooltip):
#: 8 hex digits tell a deployment's sessions apart at a glance.
SHORT_ID_CHARS = 8

#: The sessions list's query parameters: name -> label, in form order.
SESSION_TEXT_FILTERS = (
    ("agent", "Agent", ""),
    ("process", "Process", ""),
    ("host", "Host", "api.example.com"),
    ("q", "URL contains", ""),
    ("since", "Active since", "2026-01-01T00:00:00Z"),
    ("until", "Started before", ""),
)
SESSION_FLAG_FILTERS = (("denied", "Has denials"), ("loss", "Has loss"))


def short_time(ns: int) -> str:
    """``2026-01-02 03:04:05Z``: to the second, a space for the ``T``."""
    return format_ns(ns)[:19].replace("T", " ") + "Z"


def when(ns: int) -> Markup:
    """A ``<time>`` element: the short time shown, the exact one on hover.

    The date is its own span, so narrow screens can drop it where every row
    shares the session's date (the style sheet does, in the events table).
    """
    exact = format_ns(ns)
    day, clock = short_time(ns).split(" ")
    return Markup(
        '<time datetime="{0}" title="{0} (UTC)"><span class="day">{1} </span>{2}</time>'
    ).format(exact, escape(day), escape(clock))


def duration(ns: int) -> str:
    """``45 min 3 s``, ``2 h 5 min``, ``3 d 4 h``: the two largest units."""
    seconds = max(0, ns) // NS_PER_SECOND
    if seconds < MINUTE_S:
        return f"{seconds} s"
    if seconds < HOUR_S:
        return f"{seconds // MINUTE_S} min {seconds % MINUTE_S} s"
    if seconds < DAY_S:
        return f"{seconds // HOUR_S} h {seconds % HOUR_S // MINUTE_S} min"
    return f"{seconds // DAY_S} d {seconds % DAY_S // HOUR_S} h"


def short_id(session_id: str) -> str:
    return session_id[:SHORT_ID_CHARS]


def session_filter_values(params: Mapping[str, str]) -> dict[str, str]:
    """Each sessions-list filter's text as given (``""`` when absent), to echo back."""
    names = [n for n, _, _ in SESSION_TEXT_FILTERS] + [n for n, _ in SESSION_FLAG_FILTERS]
    return {n: params.get(n, "") for n in names}


def parse_session_filter(values: Mapping[str, str]) -> SessionFilter:
    """The :class:`SessionFilter` of the sessions list's query string (bad times: 400)."""
    since, until = values.get("since", ""), values.get("until", "")
    return SessionFilter(
        agent=values.get("agent", "").strip(),
        process=values.get("process", "").strip(),
        has_denials=bool(values.get("denied")),
        has_loss=bool(values.get("loss")),
        since_ns=parse_time(since) if since else None,
        until_ns=parse_time(until) if until else None,
        host=values.get("host", "").strip(),
        url_contains=values.get("q", ""),
    )


def page_link(values: Mapping[str, str], **extra: str) -> str:
    """A query string keeping the filters in use, plus ``extra`` (a cursor, say)."""
    kept = {k: v for k, v in values.items() if v}
    return "?" + urlencode({**kept, **extra})
