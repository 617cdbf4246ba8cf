"""``sessions`` and ``logs``: read the audit trail from a collector or a database.

Newest first, ``--limit`` of them (``--all`` for everything) with a notice on
stderr when more match; tables for people, ``--json`` / ``--jsonl`` for
scripts (see :mod:`.cli_output`). ``logs --follow`` keeps printing new events
and reconnects with backoff when the collector restarts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from boundary_audit._retry import Backoff
from boundary_audit.logs import get_logger
from boundary_audit.timespec import TimeSpecError, local_zone, parse_when

from .cli_output import (
    Column,
    Format,
    add_format_flags,
    decision_word,
    notice,
    print_rows,
    print_table,
    reports_errors,
    short_id,
    showing_notice,
)
from .client import HttpSource, QuerySource, StorageSource, UnreachableError
from .connect import SQLITE_PREFIX, open_storage
from .model import EVENT_JSON_FIELDS, MAX_PAGE_SIZE, EventQuery, StorageUnavailableError
from .server import DB_ENV
from .storage import default_db_url, quickstart_db_path

COLLECTOR_URL_ENV = "BOUNDARY_AUDIT_COLLECTOR_URL"
READER_ENV = "BOUNDARY_AUDIT_READER_TOKEN"
#: How often ``logs --follow`` asks for new events: prompt for a person
#: watching, one cheap indexed query per second for the collector.
FOLLOW_POLL_SECONDS = 1.0
#: First wait before ``--follow`` asks a collector that went away again.
FOLLOW_RETRY_INITIAL_SECONDS = 0.5
#: Longest wait between reconnection attempts: a restarted collector is
#: picked up within this long, and a collector down for hours is asked
#: only every few seconds.
FOLLOW_RETRY_MAX_SECONDS = 5.0
#: Sessions ``sessions`` prints by default, newest first (more with --limit/--all).
DEFAULT_SESSIONS_LIMIT = 20
#: Events ``logs`` prints by default, newest first: about a screenful.
DEFAULT_LOGS_LIMIT = 50
#: Shortest session id prefix ``--session`` accepts: four hex digits are
#: 65,536 values, unlikely to be ambiguous in one store, and an ambiguous
#: prefix is refused, never guessed.
MIN_ID_PREFIX = 4
#: Widest the rule column gets in a table: rules are long (``domain=x
#: path=/a/*``) and the URL matters more; ``--json`` has them whole.
RULE_CAP = 14


class NoDatabaseError(ValueError):
    """A read command was pointed at a database file that does not exist."""


def db_default() -> str:
    return os.environ.get(DB_ENV) or default_db_url()


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        help=f"database URL: sqlite:///PATH or postgresql://... (env {DB_ENV}; "
        "default: collector.db in the user data dir)",
    )


def read_storage(url: str) -> Any:
    """Open an existing database; a missing SQLite file is an error, never created."""
    if url.startswith(SQLITE_PREFIX):
        path = Path(url[len(SQLITE_PREFIX) :])
        if path.name and not path.exists():
            quick = quickstart_db_path()
            raise NoDatabaseError(
                f"no database at {path}; the quickstart's is at {quick} "
                f"(use --db sqlite:///{quick}, or --collector-url URL of a running collector)"
            )
    return open_storage(url)


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """``--db``, ``--collector-url`` and ``--token``: where a read command reads (open_source)."""
    add_db(parser)
    parser.add_argument(
        "--collector-url",
        default=None,
        help=f"query a running collector instead of the database (env {COLLECTOR_URL_ENV})",
    )
    parser.add_argument(
        "--token", default=None, help=f"reader token for --collector-url (env {READER_ENV})"
    )


def _add_source(parser: argparse.ArgumentParser, what: str) -> None:
    add_source_flags(parser)
    add_format_flags(parser, what)
    parser.add_argument(
        "--full-ids", action="store_true", help="whole session ids (the table shortens them)"
    )
    parser.add_argument("--all", action="store_true", help="everything that matches, no --limit")


def register(subparsers: Any) -> None:
    s = subparsers.add_parser(
        "sessions",
        help="list audited sessions, newest first, with completeness and chain status",
    )
    _add_source(s, "sessions")
    s.add_argument(
        "--limit", type=int, default=DEFAULT_SESSIONS_LIMIT, help="sessions to show, newest first"
    )
    s.set_defaults(func=cmd_sessions)

    g = subparsers.add_parser("logs", help="show audited requests, newest first")
    _add_source(g, "events")
    g.add_argument("--session", default=None, help="only this session id (a full UUID)")
    decision = g.add_mutually_exclusive_group()
    decision.add_argument("--denied", action="store_true", help="only denied requests")
    decision.add_argument("--allowed", action="store_true", help="only allowed requests")
    g.add_argument("--host", default=None, help="only requests to this host")
    g.add_argument("--url-contains", default=None, help="only URLs containing this text")
    when = "RFC 3339 time, a duration ago (1h, 7d), today or yesterday"
    g.add_argument("--since", default=None, help=f"events at or after this: an {when}")
    g.add_argument("--until", default=None, help=f"events before this: an {when}")
    g.add_argument("--limit", type=int, default=DEFAULT_LOGS_LIMIT, help="events to show")
    g.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new events, oldest first, one per line (with --since, "
        "from then on); reconnects if the collector restarts",
    )
    g.set_defaults(func=cmd_logs)


def open_source(args: argparse.Namespace) -> QuerySource:
    """The collector named by --collector-url (or its env), else the database (never created)."""
    url = args.collector_url or (None if args.db else os.environ.get(COLLECTOR_URL_ENV))
    if url:
        return HttpSource(url, args.token or os.environ.get(READER_ENV))
    return StorageSource(read_storage(args.db or db_default()))


def _limit(args: argparse.Namespace) -> int | None:
    if args.all:
        return None
    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    return int(args.limit)


@reports_errors
def cmd_sessions(args: argparse.Namespace) -> int:
    limit = _limit(args)
    source = open_source(args)
    try:
        rows: list[dict[str, Any]] = []
        cursor = None
        while limit is None or len(rows) < limit:
            want = MAX_PAGE_SIZE if limit is None else min(limit - len(rows), MAX_PAGE_SIZE)
            page, cursor = source.sessions(want, cursor)
            rows.extend(page)
            if cursor is None:
                break
        total = source.count_sessions() if cursor is not None else len(rows)
    finally:
        source.close()
    fmt: Format = args.format
    if fmt != "table":
        print_rows(rows, fmt)
    else:
        print_table(None, SESSION_COLUMNS, [_session_cells(r, args.full_ids) for r in rows], STYLES)
    notice(showing_notice(len(rows), total, "sessions"), args.quiet)
    return 0


SESSION_COLUMNS = (
    Column("session", "SESSION"),
    Column("agent", "AGENT", cap=16),
    Column("process", "PROCESS", wide=True),
    Column("last_seen", "LAST SEEN (UTC)"),
    Column("allowed", "ALLOW", justify="right"),
    Column("denied", "DENY", justify="right"),
    Column("lost", "LOST", justify="right"),
    Column("complete", "COMPLETENESS"),
    Column("chain", "CHAIN", cap=16),
)
#: Cell text -> style, applied only when colour is on.
STYLES = {
    "deny": "red",
    "allow": "green",
    "tampered": "bold red",
    "incomplete": "yellow",
    "verified": "green",
    "complete": "green",
}


def _session_cells(row: dict[str, Any], full_ids: bool) -> dict[str, Any]:
    verdict = row.get("completeness") or {}
    return {
        "session": short_id(row.get("session_id"), full_ids),
        "agent": row.get("agent"),
        "process": row.get("confined_process_name"),
        "last_seen": _seconds(row.get("last_seen")),
        "allowed": row.get("allowed"),
        "denied": row.get("denied"),
        # Reported lost and unaccounted for (the verdict's numbers, which
        # include what the seal says never arrived).
        "lost": int(verdict.get("lost") or 0) + int(verdict.get("unaccounted") or 0),
        # The state; the whole verdict is in --json and `logs --session`.
        "complete": verdict.get("state", ""),
        "chain": _chain_cell(row.get("chain") or {}),
    }


def _seconds(stamp: object) -> str:
    """``2026-01-02T03:04:05.123456Z`` as ``2026-01-02 03:04:05`` (UTC; a table needs no µs)."""
    text = "" if stamp is None else str(stamp)
    return text.partition(".")[0].removesuffix("Z").replace("T", " ")


def _chain_cell(chain: dict[str, Any]) -> str:
    """The chain's state, short (a table cell; ``--json`` and ``logs --session`` say why)."""
    state = str(chain.get("state", "unknown"))
    bad = chain.get("first_bad_sequence")
    return f"{state} at {bad}" if state == "tampered" and bad is not None else state


def time_window(
    args: argparse.Namespace, now_ns: int | None = None
) -> tuple[int | None, int | None]:
    """``--since`` and ``--until`` in nanoseconds, read with the one time grammar."""
    now = time.time_ns() if now_ns is None else now_ns
    zone = local_zone()
    times: dict[str, int | None] = {}
    for flag in ("since", "until"):
        raw = getattr(args, flag)
        try:
            times[flag] = None if raw is None else parse_when(raw, now_ns=now, zone=zone)
        except TimeSpecError as exc:
            raise ValueError(f"--{flag}: {exc}") from None
    return times["since"], times["until"]


def logs_query(args: argparse.Namespace, now_ns: int | None = None) -> EventQuery:
    since_ns, until_ns = time_window(args, now_ns)
    return EventQuery(
        allowed=False if args.denied else (True if args.allowed else None),
        host=args.host,
        url_contains=args.url_contains,
        since_ns=since_ns,
        until_ns=until_ns,
    )


@reports_errors
def cmd_logs(args: argparse.Namespace) -> int:
    query = logs_query(args)
    limit = _limit(args)
    source = open_source(args)
    fmt: Format = args.format
    try:
        if args.session:
            query = dataclasses.replace(query, session_id=resolve_session(source, args.session))
        if args.follow:
            return _follow(source, query, fmt, args, start_at_tail=args.since is None)
        query = dataclasses.replace(query, newest_first=True)
        rows: list[dict[str, Any]] = []
        cursor = None
        while limit is None or len(rows) < limit:
            want = MAX_PAGE_SIZE if limit is None else min(limit - len(rows), MAX_PAGE_SIZE)
            page, cursor, _ = source.events(_with(query, cursor, want))
            rows.extend(page)
            if cursor is None:
                break
        total = source.count_events(query) if cursor is not None else len(rows)
        verdict = _completeness_line(source, query.session_id)
    finally:
        source.close()
    events = [{k: row[k] for k in EVENT_JSON_FIELDS} for row in rows]
    if fmt != "table":
        print_rows(events, fmt)
    else:
        columns = _event_columns(with_session=query.session_id is None)
        print_table(None, columns, [_event_cells(r, args.full_ids) for r in rows], STYLES)
    notice(showing_notice(len(rows), total, "events"), args.quiet)
    notice(verdict, args.quiet)
    return 0


def resolve_session(source: QuerySource, given: str) -> str:
    """A full session id, or the one stored session whose id starts with ``given``
    (the short ids the tables show)."""
    try:
        return str(uuid.UUID(given))
    except ValueError:
        pass
    prefix = given.strip().lower()
    if len(prefix) < MIN_ID_PREFIX or not set(prefix) <= set("0123456789abcdef-"):
        raise ValueError(
            f"--session {given!r} is neither a session id nor the start of one "
            f"({MIN_ID_PREFIX}+ hex digits); `sessions` lists them"
        )
    matches: list[str] = []
    cursor = None
    while True:
        page, cursor = source.sessions(MAX_PAGE_SIZE, cursor)
        matches += [str(s["session_id"]) for s in page if str(s["session_id"]).startswith(prefix)]
        if cursor is None:
            break
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(f"no session id starts with {given!r}; `sessions` lists them")
    raise ValueError(
        f"{len(matches)} session ids start with {given!r} ({', '.join(matches[:3])}, ...);"
        " give more of it"
    )


def _event_columns(*, with_session: bool) -> tuple[Column, ...]:
    session = (Column("session", "SESSION"),) if with_session else ()
    return (
        Column("time", "TIME (UTC)"),
        *session,
        Column("decision", "DECISION"),
        Column("method", "METHOD", cap=7),
        Column("url", "URL", wide=True),
        Column("rule", "RULE", cap=RULE_CAP),
    )


def _event_cells(row: dict[str, Any], full_ids: bool) -> dict[str, Any]:
    return {
        "time": _seconds(row.get("time")),
        "session": short_id(row.get("session_id"), full_ids),
        "decision": decision_word(row.get("allowed")),
        "method": row.get("method"),
        "url": row.get("url"),
        "rule": row.get("matched_rule"),
    }


def _completeness_line(source: QuerySource, session_id: str | None) -> str:
    """``session ID: <completeness summary>; chain ...`` for ``logs --session``; "" without."""
    if session_id is None:
        return ""
    session = source.session(session_id)
    summary = session.get("completeness") or {}
    chain = session.get("chain") or {}
    return (
        f"session {session_id}: {summary.get('summary', 'unknown')};"
        f" chain {chain.get('summary', 'unknown')}"
    )


def _with(query: EventQuery, cursor: str | None, limit: int) -> EventQuery:
    return dataclasses.replace(query, cursor=cursor, limit=limit)


def _follow(
    source: QuerySource,
    query: EventQuery,
    fmt: Format,
    args: argparse.Namespace,
    *,
    start_at_tail: bool,
) -> int:
    """Print matching events as they arrive, one line each, until interrupted.

    A collector (or database) that goes away is asked again with backoff; the
    cursor is kept, so nothing is skipped or printed twice across its restart.
    """
    log = get_logger("logs")
    backoff = Backoff(FOLLOW_RETRY_INITIAL_SECONDS, FOLLOW_RETRY_MAX_SECONDS)
    cursor: str | None = None
    started = not start_at_tail
    while True:
        try:
            if not started:
                cursor = source.tail(query)
                started = True
            page, next_cursor, resume = source.events(_with(query, cursor, MAX_PAGE_SIZE))
        except (UnreachableError, StorageUnavailableError) as exc:
            delay = backoff.next_delay()
            log.warning("follow_retry", error=str(exc), retry_in_s=round(delay, 2))
            notice(f"{exc}; retrying in {delay:.1f}s", args.quiet)
            time.sleep(delay)
            continue
        if backoff.failures:
            notice("reconnected", args.quiet)
            backoff.reset()
        for row in page:
            print(_follow_line(row, fmt, args.full_ids), flush=True)
        cursor = resume or cursor
        if next_cursor is None:
            time.sleep(FOLLOW_POLL_SECONDS)


def _follow_line(row: dict[str, Any], fmt: Format, full_ids: bool) -> str:
    if fmt != "table":
        return json.dumps({k: row[k] for k in EVENT_JSON_FIELDS})
    return (
        f"{row['time']} {decision_word(row['allowed']):5} {row['method']} "
        f"{row['url']} session={short_id(row['session_id'], full_ids)} "
        f"rule={row['matched_rule'] or '-'}"
    )


__all__ = ["COLLECTOR_URL_ENV", "READER_ENV", "NoDatabaseError", "read_storage", "register"]
