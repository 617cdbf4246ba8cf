"""Sans-I/O validation of ingest requests: protobuf bytes in, :class:`IngestBatch` out.

Everything a request could get wrong is found here, before any database work,
so a rejected request never stores anything and its error names the field.
"""

from __future__ import annotations

import functools
import re
import uuid
from typing import NoReturn
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError

from boundary_audit.wire import BoundaryLog, DropReport, DropSource, IngestRequest, SessionRecord

from .model import (
    NS_PER_SECOND,
    DropIn,
    EventIn,
    IngestBatch,
    InvalidRequestError,
    OpenIn,
    RecordIn,
    SealIn,
    SessionBatch,
)

#: Largest body the collector reads (the agent sends at most 1 MiB; 4x headroom
#: for other senders, small enough that one request cannot exhaust memory).
MAX_INGEST_BODY_BYTES = 4 * 1024 * 1024
#: Events per request: a 4 MiB body of minimal events could hold ~100k, which
#: would hold the SQLite write lock for too long; agents send ~100-5000.
MAX_EVENTS_PER_REQUEST = 20_000
#: Drop reports per request; the agent forwards a handful per batch.
MAX_DROP_REPORTS_PER_REQUEST = 1_000
#: Session records per request: an open and up to two seals per session, for
#: the sessions of one agent batch.
MAX_SESSION_RECORDS_PER_REQUEST = 1_000
#: Bytes of a chain digest (SHA-256); anything longer is not one.
MAX_CHAIN_DIGEST_BYTES = 64
#: Distinct reasons in one drop report (real reporters use two or three).
MAX_DROP_REASONS = 32
#: Browsers and servers commonly cap URLs near 8 KiB; longer is not a real request.
MAX_URL_CHARS = 8_192
#: HTTP methods are short tokens; 32 covers every registered and custom one seen.
MAX_METHOD_CHARS = 32
#: Rule text as written in the proxy's rule file.
MAX_RULE_CHARS = 1_024
#: Process names such as "claude-code"; batch/report ids are UUIDs (36 chars).
MAX_NAME_CHARS = 256
MAX_ID_CHARS = 128
#: Event times must fall in [2000-01-01, 2200-01-01): anything else is a broken clock or forgery.
MIN_EVENT_TIME_NS = 946_684_800 * NS_PER_SECOND
MAX_EVENT_TIME_NS = 7_258_118_400 * NS_PER_SECOND
#: Drop counts above this are not events a single process could have made.
MAX_DROP_COUNT = 1 << 40
DROP_SOURCES = frozenset(str(s) for s in DropSource)


def canonical_uuid(value: str, where: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidRequestError(f"{where} is not a UUID") from None


def host_of(url: str) -> str:
    """Lower-case host of ``url``; authority-form (``host:443``) counts too; ``""`` if none.

    Only the authority is parsed, and that is cached: a session's URLs reuse a
    few hosts, and urlsplit on every URL was most of the validation cost.
    """
    match = _AUTHORITY.match(url)
    assert match is not None, "the pattern matches every string"
    authority = match.group(1) if match.group(1) is not None else match.group(2)
    return _host_of_authority(authority)


#: The authority of an absolute or scheme-relative URL, or of authority-form
#: (``host:port``, as in CONNECT) when no ``//`` comes first.
_AUTHORITY = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//([^/?#]*)|([^/?#]*)")
#: Distinct authorities remembered; far more hosts than one collector sees per minute.
HOST_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=HOST_CACHE_SIZE)
def _host_of_authority(authority: str) -> str:
    try:
        return urlsplit("//" + authority).hostname or ""
    except ValueError:
        return ""


def _text(value: str, limit: int, where: str, *, required: bool = True) -> str:
    if required and not value:
        raise InvalidRequestError(f"{where} is empty")
    if len(value) > limit:
        raise InvalidRequestError(f"{where} is {len(value)} characters, over the {limit} limit")
    return value


def _timestamp_ns(seconds: int, nanos: int, where: str) -> int:
    ns = seconds * NS_PER_SECOND + nanos
    if not MIN_EVENT_TIME_NS <= ns < MAX_EVENT_TIME_NS:
        raise InvalidRequestError(f"{where} is missing or outside years 2000-2199")
    return ns


def parse_ingest_request(body: bytes) -> IngestBatch:  # noqa: PLR0912 - one check per field
    """Decode and validate one ``IngestRequest`` body."""
    request = IngestRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidRequestError(f"body is not a valid IngestRequest protobuf: {exc}") from exc
    batch_id = _text(request.batch_id, MAX_ID_CHARS, "batch_id", required=False)
    total = sum(len(r.logs) for r in request.logs)
    if total > MAX_EVENTS_PER_REQUEST:
        raise InvalidRequestError(
            f"request carries {total} events, over the {MAX_EVENTS_PER_REQUEST} limit"
        )
    if len(request.drops) > MAX_DROP_REPORTS_PER_REQUEST:
        raise InvalidRequestError(
            f"request carries {len(request.drops)} drop reports, "
            f"over the {MAX_DROP_REPORTS_PER_REQUEST} limit"
        )
    sessions: dict[str, SessionBatch] = {}
    for i, report in enumerate(request.logs):
        where = f"logs[{i}]"
        session_id = canonical_uuid(report.session_id, f"{where}.session_id")
        name = _text(
            report.confined_process_name,
            MAX_NAME_CHARS,
            f"{where}.confined_process_name",
            required=False,
        )
        batch = sessions.setdefault(session_id, SessionBatch(session_id, name))
        if name and not batch.confined_process_name:
            batch.confined_process_name = name
        # Kept per event (then cleared where it is the batch's), so a chain can
        # be rebuilt exactly.
        own_name = name
        append = batch.events.append
        for j, log in enumerate(report.logs):
            # Fast path: plain comparisons; the slow path names what failed.
            http = log.http_request
            url, method, rule = http.url, http.method, http.matched_rule
            time_ns = log.time.seconds * NS_PER_SECOND + log.time.nanos
            if (
                not log.HasField("http_request")
                or log.sequence_number < 0
                or not MIN_EVENT_TIME_NS <= time_ns < MAX_EVENT_TIME_NS
                or not 0 < len(url) <= MAX_URL_CHARS
                or not 0 < len(method) <= MAX_METHOD_CHARS
                or len(rule) > MAX_RULE_CHARS
            ):
                _explain_event(f"{where}.logs[{j}]", log)
            digest = log.chain_digest
            if len(digest) > MAX_CHAIN_DIGEST_BYTES:
                raise InvalidRequestError(
                    f"{where}.logs[{j}].chain_digest is {len(digest)} bytes, not a digest"
                )
            append(
                EventIn(
                    log.sequence_number,
                    time_ns,
                    log.allowed,
                    method,
                    url,
                    host_of(url),
                    rule,
                    digest or None,
                    own_name,
                )
            )
    for batch in sessions.values():
        batch.events.sort(key=lambda e: e.sequence_number)
    for batch in sessions.values():
        for event in batch.events:
            if event.process_name == batch.confined_process_name:
                event.process_name = None
    if len(request.sessions) > MAX_SESSION_RECORDS_PER_REQUEST:
        raise InvalidRequestError(
            f"request carries {len(request.sessions)} session records, "
            f"over the {MAX_SESSION_RECORDS_PER_REQUEST} limit"
        )
    clamps = _Clamps()
    drops = [_drop(i, d, clamps) for i, d in enumerate(request.drops)]
    records = [_record(i, r, clamps) for i, r in enumerate(request.sessions)]
    ordered = [sessions[k] for k in sorted(sessions)]
    return IngestBatch(
        batch_id=batch_id, sessions=ordered, drops=drops, records=records, clamped=clamps.count
    )


class _Clamps:
    """Counts clamped into range while parsing one request."""

    def __init__(self) -> None:
        self.count = 0

    def clamp(self, value: int, high: int) -> int:
        if 0 <= value <= high:
            return value
        self.count += 1
        return 0 if value < 0 else high


def _record(i: int, record: SessionRecord, clamps: _Clamps) -> RecordIn:
    where = f"sessions[{i}]"
    record_id = _text(record.record_id, MAX_ID_CHARS, f"{where}.record_id")
    session_id = canonical_uuid(record.session_id, f"{where}.session_id")
    name = _text(
        record.confined_process_name,
        MAX_NAME_CHARS,
        f"{where}.confined_process_name",
        required=False,
    )
    opened = None
    if record.HasField("open"):
        o = record.open
        sender = _text(o.sender, MAX_NAME_CHARS, f"{where}.open.sender", required=False)
        opened = OpenIn(sender, o.want_acks, max(0, o.first_sequence_number))
    seal = None
    if record.HasField("seal"):
        s = record.seal
        if len(s.dropped) > MAX_DROP_REASONS:
            raise InvalidRequestError(
                f"{where}.seal.dropped has more than {MAX_DROP_REASONS} reasons"
            )
        dropped = {}
        for reason, count in s.dropped.items():
            _text(reason, MAX_NAME_CHARS, f"{where}.seal.dropped reason")
            dropped[reason] = clamps.clamp(count, MAX_DROP_COUNT)
        if len(s.chain_head) > MAX_CHAIN_DIGEST_BYTES:
            raise InvalidRequestError(f"{where}.seal.chain_head is not a digest")
        sealed_at = s.sealed_at.seconds * NS_PER_SECOND + s.sealed_at.nanos
        seal = SealIn(
            events_made=clamps.clamp(s.events_made, MAX_DROP_COUNT),
            events_sent=clamps.clamp(s.events_sent, MAX_DROP_COUNT),
            dropped=dropped,
            undelivered=clamps.clamp(s.undelivered, MAX_DROP_COUNT),
            spilled=clamps.clamp(s.spilled, MAX_DROP_COUNT),
            sealed_at_ns=clamps.clamp(sealed_at, MAX_EVENT_TIME_NS),
            chain_head=s.chain_head,
            chain_count=clamps.clamp(s.chain_count, MAX_DROP_COUNT),
        )
    observed = record.observed_at.seconds * NS_PER_SECOND + record.observed_at.nanos
    observed_ns = observed if MIN_EVENT_TIME_NS <= observed < MAX_EVENT_TIME_NS else 0
    return RecordIn(record_id, session_id, opened, seal, observed_ns, name)


def _explain_event(at: str, log: BoundaryLog) -> NoReturn:
    """Raise the error that names the first problem of an event the fast path refused."""
    if not log.HasField("http_request"):
        raise InvalidRequestError(f"{at}.http_request is missing")
    if log.sequence_number < 0:
        raise InvalidRequestError(f"{at}.sequence_number is negative")
    if not log.HasField("time"):
        raise InvalidRequestError(f"{at}.time is missing")
    _timestamp_ns(log.time.seconds, log.time.nanos, f"{at}.time")
    http = log.http_request
    _text(http.url, MAX_URL_CHARS, f"{at}.http_request.url")
    _text(http.method, MAX_METHOD_CHARS, f"{at}.http_request.method")
    _text(http.matched_rule, MAX_RULE_CHARS, f"{at}.http_request.matched_rule", required=False)
    raise AssertionError(f"{at} failed the fast checks but passes the detailed ones")


def _drop(i: int, report: DropReport, clamps: _Clamps) -> DropIn:
    where = f"drops[{i}]"
    report_id = _text(report.report_id, MAX_ID_CHARS, f"{where}.report_id")
    session_id = (
        canonical_uuid(report.session_id, f"{where}.session_id") if report.session_id else ""
    )
    if report.source not in DROP_SOURCES:
        raise InvalidRequestError(
            f"{where}.source is {report.source!r}, expected one of {sorted(DROP_SOURCES)}"
        )
    if len(report.dropped) > MAX_DROP_REASONS:
        raise InvalidRequestError(f"{where}.dropped has more than {MAX_DROP_REASONS} reasons")
    dropped: dict[str, int] = {}
    for reason, count in report.dropped.items():
        _text(reason, MAX_NAME_CHARS, f"{where}.dropped reason")
        # Out of range is clamped and counted, not refused: the report still says
        # that events were lost.
        dropped[reason] = clamps.clamp(count, MAX_DROP_COUNT)
    time_ns = (
        _timestamp_ns(report.time.seconds, report.time.nanos, f"{where}.time")
        if report.HasField("time")
        else 0
    )
    return DropIn(report_id, session_id, report.source, time_ns, dropped)
