"""Plain typed records shared by the storage backends, the HTTP app and the CLI.

Times are integers in Unix epoch nanoseconds everywhere below the HTTP layer:
exact (protobuf timestamps carry nanoseconds), cheap to index and to compare,
and the same in SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, Literal, TypeVar

from .chainstatus import ChainState, ChainStatus
from .completeness import Completeness, Facts, assess

Scope = Literal["agent", "reader"]
Decision = Literal["allowed", "denied"]

NS_PER_SECOND = 1_000_000_000
#: Both engines store 64-bit signed integers; nanoseconds run out in 2262.
INT64_MAX = (1 << 63) - 1
#: Largest page a listing returns, whatever the client asks (bounds memory and latency).
MAX_PAGE_SIZE = 1_000

T = TypeVar("T")

#: Paths of the JSON API: its routes, the OpenAPI document and the client all use these.
INGEST_PATH = "/api/v1/boundary-logs"
SESSIONS_PATH = "/api/v1/sessions"
SESSION_PATH = SESSIONS_PATH + "/{session_id}"
SESSION_EVENTS_PATH = SESSION_PATH + "/events"
EVENTS_PATH = "/api/v1/events"


class CollectorError(Exception):
    """Base class of the collector's own errors."""


class StorageUnavailableError(CollectorError):
    """The database cannot be reached or is too busy: retry later (HTTP 503)."""


class NotFoundError(CollectorError):
    """The thing asked for does not exist (HTTP 404)."""


class InvalidRequestError(CollectorError):
    """The client sent something the collector will never accept (HTTP 400).

    ``detail`` names the offending field, e.g. ``logs[3].session_id is not a UUID``.
    """

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class SessionOwnershipError(InvalidRequestError):
    """A session id already belongs to another agent identity."""


class InvalidCursorError(InvalidRequestError):
    """A pagination cursor was not made by this collector."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token belongs to; the only source of agent/workspace on stored rows."""

    token_id: str
    agent: str
    workspace: str
    scope: Scope


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token_id: str
    agent: str
    workspace: str
    scope: Scope
    created_ns: int
    revoked_ns: int | None


class EventFlag(enum.IntFlag):
    """What the collector had to do to an event's fields to store it (``events.flags``)."""

    #: A field was longer than its storage limit and was cut (ends in CUT_MARKER).
    CUT = 1
    #: A field held a NUL or invalid UTF-8 and is stored escaped (see fields.escape).
    ESCAPED = 2
    #: The time was outside what a 64-bit nanosecond count holds (1970-2262).
    TIME_CLAMPED = 4


@dataclass(slots=True)  # not frozen: frozen __init__ costs twice as much per event
class EventIn:
    """One validated event of an ingest request."""

    sequence_number: int
    time_ns: int
    allowed: bool
    method: str
    url: str
    host: str
    matched_rule: str
    #: The sender's chain digest after this event, as sent (None when absent).
    chain_digest: bytes | None = None
    #: Its report's confined_process_name when that differs from the batch's.
    process_name: str | None = None
    #: EventFlag bits.
    flags: int = 0


@dataclass(frozen=True, slots=True)
class SealIn:
    events_made: int
    events_sent: int
    dropped: dict[str, int]
    undelivered: int
    spilled: int
    sealed_at_ns: int
    chain_head: bytes
    chain_count: int


@dataclass(frozen=True, slots=True)
class OpenIn:
    sender: str
    want_acks: bool
    first_sequence_number: int


@dataclass(frozen=True, slots=True)
class RecordIn:
    """A validated SessionRecord: what the sender said about the session as a whole."""

    record_id: str
    session_id: str
    open: OpenIn | None
    seal: SealIn | None
    observed_ns: int
    confined_process_name: str


@dataclass(slots=True)
class SessionBatch:
    """All events of one session within one ingest request, sorted by sequence number."""

    session_id: str
    confined_process_name: str
    events: list[EventIn] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DropIn:
    report_id: str
    session_id: str
    source: str
    time_ns: int
    dropped: dict[str, int]


@dataclass(frozen=True, slots=True)
class IngestBatch:
    """A validated ingest request, ready to store in one transaction."""

    batch_id: str
    sessions: list[SessionBatch]
    drops: list[DropIn]
    records: list[RecordIn] = field(default_factory=list)
    #: Counts above their caps that were clamped (counted in a metric, not refused).
    clamped: int = 0
    #: Events stored with a field cut, escaped or clamped: EventFlag name -> events.
    flagged: dict[str, int] = field(default_factory=dict)

    @property
    def event_count(self) -> int:
        return sum(len(s.events) for s in self.sessions)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event that this request stored for the first time (for the audit log line)."""

    session_id: str
    event: EventIn


@dataclass(slots=True)
class IngestOutcome:
    stored: int = 0
    duplicates: int = 0
    drop_reports: int = 0
    new_sessions: int = 0
    #: Session records stored for the first time (opens, seals).
    records: int = 0
    #: Sequence numbers newly found missing (may be negative when late events fill gaps).
    gap_delta: int = 0
    stored_events: list[StoredEvent] = field(default_factory=list)
    dropped_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session_id: str
    agent: str
    workspace: str
    confined_process_name: str
    first_seen_ns: int
    last_seen_ns: int
    allowed: int
    denied: int
    max_sequence: int
    dropped: int
    #: Events deleted by retention (they had arrived).
    pruned: int = 0
    #: Was anything lost? Computed from the seal, drops and gaps (completeness.py).
    completeness: Completeness | None = None
    #: Does what is stored match the sender's chain and seal (chainstatus.py)?
    chain: ChainStatus = field(default_factory=lambda: ChainStatus(ChainState.UNVERIFIED))

    @property
    def verdict(self) -> Completeness:
        """The completeness storage computed, else what the counters alone say (unsealed)."""
        if self.completeness is not None:
            return self.completeness
        facts = Facts(self.allowed + self.denied, self.pruned, self.max_sequence, {}, False, None)
        return assess(facts)

    @property
    def gaps(self) -> int:
        """Sequence numbers below the highest seen that never arrived."""
        if self.max_sequence < 0:
            return 0
        return max(0, self.max_sequence + 1 - self.allowed - self.denied - self.pruned)

    def to_json(self) -> dict[str, object]:
        return {
            "session_id": self.session_id,
            "agent": self.agent,
            "workspace": self.workspace,
            "confined_process_name": self.confined_process_name,
            "first_seen": format_ns(self.first_seen_ns),
            "last_seen": format_ns(self.last_seen_ns),
            "allowed": self.allowed,
            "denied": self.denied,
            "dropped": self.dropped,
            "gaps": self.gaps,
            "pruned": self.pruned,
            "max_sequence_number": self.max_sequence,
            "completeness": self.verdict.to_json(),
            "chain": self.chain.to_json(),
        }


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    session_id: str
    sequence_number: int
    time_ns: int
    received_ns: int
    allowed: bool
    method: str
    url: str
    host: str
    matched_rule: str
    #: EventFlag bits: what the collector had to do to store it.
    flags: int = 0

    @property
    def altered(self) -> list[str]:
        """Names of the EventFlag bits set (``cut``, ``escaped``, ``time_clamped``)."""
        return [str(f.name).lower() for f in EventFlag if self.flags & f]

    def to_json(self) -> dict[str, object]:
        return {
            "session_id": self.session_id,
            "sequence_number": self.sequence_number,
            "time": format_ns(self.time_ns),
            "allowed": self.allowed,
            "method": self.method,
            "url": self.url,
            "host": self.host,
            "matched_rule": self.matched_rule,
            # Exact: ``time`` shows microseconds, the wire carries nanoseconds.
            "time_unix_ns": str(self.time_ns),
            "altered": self.altered,
        }


#: Keys of an event in the JSON API and in ``logs --json``, in this order.
EVENT_JSON_FIELDS = (
    "session_id",
    "sequence_number",
    "time",
    "allowed",
    "method",
    "url",
    "host",
    "matched_rule",
    "time_unix_ns",
    "altered",
)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for an event listing; ``None`` means "any"."""

    session_id: str | None = None
    allowed: bool | None = None
    host: str | None = None
    url_contains: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    cursor: str | None = None
    limit: int = 100
    #: Newest first (descending), as the CLI lists by default.
    newest_first: bool = False


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    #: Where the next page starts; ``None`` at the end of the listing.
    next_cursor: str | None
    #: Position after the last item returned (or the request's own cursor when
    #: empty): poll with it to see items that arrive later (``--follow``).
    resume_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class TimelineBucket:
    minute_ns: int
    allowed: int
    denied: int


def format_ns(ns: int) -> str:
    """RFC 3339 UTC with microseconds, always six digits (``2026-01-02T03:04:05.000006Z``)."""
    seconds, rest = divmod(ns, NS_PER_SECOND)
    return f"{_format_second(seconds)}.{rest // 1000:06d}Z"


#: Distinct seconds remembered: events arrive in bursts within a few seconds,
#: so formatting the date part once per second saves most of the work.
SECOND_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=SECOND_CACHE_SIZE)
def _format_second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def parse_time(text: str) -> int:
    """RFC 3339 / ISO 8601 (naive means UTC) to epoch nanoseconds."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequestError(f"{text!r} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    # Exact integer arithmetic: a float timestamp loses microseconds near 2262.
    ns = (parsed - _EPOCH) // _MICROSECOND * 1000
    if not 0 <= ns <= INT64_MAX:
        raise InvalidRequestError(f"{text!r} is outside the years 1970-2262")
    return ns


def _cursor_value(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -INT64_MAX <= value <= INT64_MAX
    return isinstance(value, str)


def encode_cursor(kind: str, key: list[int | str]) -> str:
    """Opaque to clients; carries the keyset position and which ordering it belongs to."""
    raw = json.dumps({"o": kind, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, size: int) -> list[int | str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser recurses (a 1.5 KB cursor).
        raise InvalidCursorError("cursor is not valid") from exc
    key = data.get("k") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("o") != kind
        or not isinstance(key, list)
        or len(key) != size
        or not all(_cursor_value(v) for v in key)
    ):
        raise InvalidCursorError("cursor does not belong to this listing")
    return key


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``30d``, ``2w`` (or a bare number of seconds) to seconds."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in _DURATION_UNITS else "s"
    number = raw[:-1] if raw[-1:] in _DURATION_UNITS else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 1h, 30d") from None
    if not value > 0:
        raise ValueError(f"duration {text!r} must be positive")
    return value * _DURATION_UNITS[unit]
