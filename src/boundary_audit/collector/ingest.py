"""Sans-I/O validation of ingest requests: protobuf bytes in, :class:`IngestBatch` out.

Everything a request could get wrong is found here, before any database work,
so a rejected request never stores anything and its error names the field.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import re
import uuid
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError

from boundary_audit.wire import (
    DropReason,
    DropReport,
    DropSource,
    IngestRequest,
    ReportBoundaryLogsRequest,
    SessionRecord,
)

from .fields import STORED_TEXT_CHARS, clean_text, stored_text
from .model import (
    INT64_MAX,
    NS_PER_SECOND,
    DropIn,
    EventFlag,
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
#: Hex digits of a collector drop report's id: 128 bits, unique in practice.
REFUSED_ID_HEX = 32
#: Distinct reasons in one drop report (real reporters use two or three).
MAX_DROP_REASONS = 32
#: Drop reasons and sender names ("boundary-audit/0.2.0"); batch/report ids
#: are UUIDs (36 chars). Event fields and process names have no limit of their
#: own below a frame's payload (fields.STORED_TEXT_CHARS).
MAX_NAME_CHARS = 256
MAX_ID_CHARS = 128
#: Reporters' times (drop reports, records) outside [2000-01-01, 2200-01-01)
#: are a broken clock: the collector's receive time is used instead. Event
#: times are stored as sent whatever they are.
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
    """An id or name: over its limit or missing (when required) is a 400 naming it;
    a NUL is escaped (fields.py), never a database error."""
    if required and not value:
        raise InvalidRequestError(f"{where} is empty")
    if len(value) > limit:
        raise InvalidRequestError(f"{where} is {len(value)} characters, over the {limit} limit")
    return clean_text(value, limit)


def _reporter_time_ns(seconds: int, nanos: int) -> int:
    """A reporter's time, or 0 (use the receive time) when its clock is plainly wrong."""
    ns = seconds * NS_PER_SECOND + nanos
    return ns if MIN_EVENT_TIME_NS <= ns < MAX_EVENT_TIME_NS else 0


def parse_ingest_request(body: bytes) -> IngestBatch:
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
    refused = _Refused()
    for i, report in enumerate(request.logs):
        _add_report(sessions, refused, i, report)
    for batch in sessions.values():
        batch.events.sort(key=lambda e: e.sequence_number)
    if len(request.sessions) > MAX_SESSION_RECORDS_PER_REQUEST:
        raise InvalidRequestError(
            f"request carries {len(request.sessions)} session records, "
            f"over the {MAX_SESSION_RECORDS_PER_REQUEST} limit"
        )
    clamps = _Clamps()
    drops = [_drop(i, d, clamps) for i, d in enumerate(request.drops)]
    drops += refused.drops()
    records = [_record(i, r, clamps) for i, r in enumerate(request.sessions)]
    ordered = [sessions[k] for k in sorted(sessions)]
    return IngestBatch(
        batch_id=batch_id,
        sessions=ordered,
        drops=drops,
        records=records,
        clamped=clamps.count,
        flagged=dict(refused.flagged),
    )


def _add_report(
    sessions: dict[str, SessionBatch],
    refused: _Refused,
    i: int,
    report: ReportBoundaryLogsRequest,
) -> None:
    """Add one report's events to their session's batch; refuse alone what cannot be stored."""
    where = f"logs[{i}]"
    try:
        session_id = canonical_uuid(report.session_id, f"{where}.session_id")
    except InvalidRequestError:
        # Not attributable to any session: counted as an unattributed drop.
        refused.add("", [log.SerializeToString() for log in report.logs])
        return
    name = clean_text(report.confined_process_name, STORED_TEXT_CHARS)
    batch = sessions.setdefault(session_id, SessionBatch(session_id, name))
    if name and not batch.confined_process_name:
        # Events added so far had the empty name; None would now mean this one.
        for event in batch.events:
            if event.process_name is None:
                event.process_name = ""
        batch.confined_process_name = name
    # Kept per event when it is not the batch's, so a chain can be rebuilt exactly.
    own_name = None if name == batch.confined_process_name else name
    append = batch.events.append
    for log in report.logs:
        # Fast path: plain comparisons; the slow path cuts, escapes, clamps.
        http = log.http_request
        url, method, rule = http.url, http.method, http.matched_rule
        time_ns = log.time.seconds * NS_PER_SECOND + log.time.nanos
        digest = log.chain_digest
        flags = 0
        if (
            log.sequence_number < 0
            or not 0 <= time_ns <= INT64_MAX
            or len(url) > STORED_TEXT_CHARS
            or len(method) > STORED_TEXT_CHARS
            or len(rule) > STORED_TEXT_CHARS
            or len(digest) > MAX_CHAIN_DIGEST_BYTES
            or "\x00" in url
            or "\x00" in method
            or "\x00" in rule
        ):
            if log.sequence_number < 0 or len(digest) > MAX_CHAIN_DIGEST_BYTES:
                # No place in the session's numbering, or a digest that is
                # none: refused alone, counted as a drop of the session.
                refused.add(session_id, [log.SerializeToString()])
                continue
            url, f_url = stored_text(url)
            method, f_method = stored_text(method)
            rule, f_rule = stored_text(rule)
            flags = f_url | f_method | f_rule
            if not 0 <= time_ns <= INT64_MAX:
                time_ns = min(max(time_ns, 0), INT64_MAX)
                flags |= EventFlag.TIME_CLAMPED
            for flag in EventFlag:
                if flags & flag:
                    refused.flagged[str(flag.name).lower()] += 1
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
                flags,
            )
        )


class _Refused:
    """Events refused one by one, to become drop reports of their sessions."""

    def __init__(self) -> None:
        self.by_session: dict[str, list[bytes]] = {}
        #: Events stored with a field cut, escaped or clamped, by EventFlag name.
        self.flagged: collections.Counter[str] = collections.Counter()

    def add(self, session_id: str, raw_events: list[bytes]) -> None:
        self.by_session.setdefault(session_id, []).extend(raw_events)

    def drops(self) -> list[DropIn]:
        """One report per session; its id hashes what was refused, so a re-sent request
        counts the same events once."""
        out = []
        for session_id, raw in sorted(self.by_session.items()):
            if not raw:
                continue
            h = hashlib.sha256(session_id.encode())
            for event in raw:
                h.update(len(event).to_bytes(4, "big") + event)
            out.append(
                DropIn(
                    f"collector-{h.hexdigest()[:REFUSED_ID_HEX]}",
                    session_id,
                    str(DropSource.COLLECTOR),
                    0,
                    {str(DropReason.REJECTED_BY_COLLECTOR): len(raw)},
                )
            )
        return out


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
    name = clean_text(record.confined_process_name, STORED_TEXT_CHARS)
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
            key = _text(reason, MAX_NAME_CHARS, f"{where}.seal.dropped reason")
            dropped[key] = clamps.clamp(count, MAX_DROP_COUNT)
        if len(s.chain_head) > MAX_CHAIN_DIGEST_BYTES:
            raise InvalidRequestError(f"{where}.seal.chain_head is not a digest")
        sealed_at = _reporter_time_ns(s.sealed_at.seconds, s.sealed_at.nanos)
        seal = SealIn(
            events_made=clamps.clamp(s.events_made, MAX_DROP_COUNT),
            events_sent=clamps.clamp(s.events_sent, MAX_DROP_COUNT),
            dropped=dropped,
            undelivered=clamps.clamp(s.undelivered, MAX_DROP_COUNT),
            spilled=clamps.clamp(s.spilled, MAX_DROP_COUNT),
            sealed_at_ns=sealed_at,
            chain_head=s.chain_head,
            chain_count=clamps.clamp(s.chain_count, MAX_DROP_COUNT),
        )
    observed_ns = _reporter_time_ns(record.observed_at.seconds, record.observed_at.nanos)
    return RecordIn(record_id, session_id, opened, seal, observed_ns, name)


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
        key = _text(reason, MAX_NAME_CHARS, f"{where}.dropped reason")
        # Out of range is clamped and counted, not refused: the report still says
        # that events were lost.
        dropped[key] = clamps.clamp(count, MAX_DROP_COUNT)
    time_ns = _reporter_time_ns(report.time.seconds, report.time.nanos)
    return DropIn(report_id, session_id, report.source, time_ns, dropped)
