"""``collector``, ``tokens``, ``sessions`` and ``logs`` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boundary_audit.evidence import load_or_generate_key, public_key_pem
from boundary_audit.logs import get_logger

from . import otlp
from .client import HttpSource, QuerySource, StorageSource
from .connect import open_storage
from .model import (
    EVENT_JSON_FIELDS,
    MAX_PAGE_SIZE,
    NS_PER_SECOND,
    CollectorError,
    EventQuery,
    format_ns,
    parse_duration,
    parse_time,
)
from .server import (
    DB_ENV,
    DEFAULT_CHECKPOINT_INTERVAL_SECONDS,
    DEFAULT_LISTEN,
    DEFAULT_PRUNE_INTERVAL_SECONDS,
    LISTEN_ENV,
    ServeOptions,
    serve,
)
from .storage import TOKEN_ID_CHARS, default_db_url, hash_token
from .trail import DEFAULT_KEY_FILE, default_key_path

COLLECTOR_URL_ENV = "BOUNDARY_AUDIT_COLLECTOR_URL"
READER_ENV = "BOUNDARY_AUDIT_READER_TOKEN"
#: How often ``logs --follow`` asks for new events: prompt for a person
#: watching, one cheap indexed query per second for the collector.
FOLLOW_POLL_SECONDS = 1.0
#: Sessions ``sessions`` prints by default, newest first (more with --limit).
DEFAULT_SESSIONS_LIMIT = 100
#: Events ``logs`` prints without ``--follow`` unless ``--limit`` says otherwise.
DEFAULT_LOGS_LIMIT = 1_000
#: Table width when stdout is not a terminal (a pipe or file): wide enough
#: that URLs stay on one line for grep, where 80 columns would fold them.
PIPE_WIDTH = 240


def _db_default() -> str:
    return os.environ.get(DB_ENV) or default_db_url()


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        help=f"database URL: sqlite:///PATH or postgresql://... (env {DB_ENV}; "
        "default: collector.db in the user data dir)",
    )


def _add_source(parser: argparse.ArgumentParser) -> None:
    _add_db(parser)
    parser.add_argument(
        "--collector-url",
        default=None,
        help=f"query a running collector instead of the database (env {COLLECTOR_URL_ENV})",
    )
    parser.add_argument(
        "--token", default=None, help=f"reader token for --collector-url (env {READER_ENV})"
    )
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "collector",
        help="run the collector (ingest, query API, web UI); `collector key` prints its public key",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["key"],
        help="key: print the public key (PEM) of the checkpoint signing key, creating it if new",
    )
    _add_db(p)
    p.add_argument(
        "--signing-key",
        default=None,
        metavar="PATH",
        help=f"Ed25519 key that signs checkpoints, created 0600 at first start (default: "
        f"{DEFAULT_KEY_FILE} beside a SQLite database, else in the user data dir)",
    )
    p.add_argument(
        "--checkpoint-interval",
        default=f"{DEFAULT_CHECKPOINT_INTERVAL_SECONDS:g}s",
        help="how often the store log is signed when it grew, and at shutdown "
        f"(default {DEFAULT_CHECKPOINT_INTERVAL_SECONDS:g}s)",
    )
    p.add_argument(
        "--listen",
        default=None,
        help=f"HOST:PORT (env {LISTEN_ENV}; default {DEFAULT_LISTEN}); reads need a reader "
        "token unless HOST is a loopback address",
    )
    p.add_argument(
        "--retention", default=None, help="delete events older than this (e.g. 30d, 12h)"
    )
    p.add_argument(
        "--prune-interval",
        default=f"{DEFAULT_PRUNE_INTERVAL_SECONDS:g}s",
        help=f"how often retention runs (default {DEFAULT_PRUNE_INTERVAL_SECONDS:g}s)",
    )
    p.add_argument(
        "--no-event-log",
        action="store_true",
        help="do not emit one JSON log line per stored event",
    )
    otlp.add_arguments(p)
    p.set_defaults(func=cmd_collector)

    t = subparsers.add_parser("tokens", help="create, list and revoke agent and reader tokens")
    tsub = t.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = tsub.add_parser("create", help="create a token and print it (shown only once)")
    create.add_argument("--agent", required=True, help="name of the agent (or reader)")
    create.add_argument("--workspace", default="", help="workspace the agent runs in")
    create.add_argument(
        "--reader", action="store_true", help="a read-only token for the query API and UI"
    )
    _add_db(create)
    create.set_defaults(func=cmd_tokens_create)
    listing = tsub.add_parser("list", help="list tokens (never the secrets)")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    _add_db(listing)
    listing.set_defaults(func=cmd_tokens_list)
    revoke = tsub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", help="the id shown by `tokens list`")
    _add_db(revoke)
    revoke.set_defaults(func=cmd_tokens_revoke)

    s = subparsers.add_parser("sessions", help="list audited sessions")
    _add_source(s)
    s.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_SESSIONS_LIMIT,
        help=f"sessions to show (default {DEFAULT_SESSIONS_LIMIT})",
    )
    s.set_defaults(func=cmd_sessions)

    g = subparsers.add_parser("logs", help="show audited requests")
    _add_source(g)
    g.add_argument("--session", default=None, help="only this session id")
    decision = g.add_mutually_exclusive_group()
    decision.add_argument("--denied", action="store_true", help="only denied requests")
    decision.add_argument("--allowed", action="store_true", help="only allowed requests")
    g.add_argument("--host", default=None, help="only requests to this host")
    g.add_argument("--url-contains", default=None, help="only URLs containing this text")
    g.add_argument("--since", default=None, help="a duration ago (1h, 30m) or an RFC 3339 time")
    g.add_argument("--until", default=None, help="an RFC 3339 time")
    g.add_argument(
        "--limit", type=int, default=DEFAULT_LOGS_LIMIT, help="events to show without --follow"
    )
    g.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    g.set_defaults(func=cmd_logs)


# -- collector ---------------------------------------------------------------------------
def cmd_collector(args: argparse.Namespace) -> int:
    log = get_logger("collector")
    if args.action == "key":
        return _print_key(args)
    try:
        options = ServeOptions(
            db_url=args.db or _db_default(),
            listen=args.listen or os.environ.get(LISTEN_ENV) or DEFAULT_LISTEN,
            retention_seconds=parse_duration(args.retention) if args.retention else None,
            prune_interval_seconds=parse_duration(args.prune_interval),
            emit_event_logs=not args.no_event_log,
            signing_key=args.signing_key,
            checkpoint_interval_seconds=parse_duration(args.checkpoint_interval),
            otlp=otlp.options_from(args),
        )
        return asyncio.run(serve(options))
    except (ValueError, OSError, CollectorError) as exc:
        log.error("collector_failed", error=str(exc))
        print(f"boundary-audit collector: {exc}", file=sys.stderr)
        return 2


def _print_key(args: argparse.Namespace) -> int:
    path = (
        Path(args.signing_key) if args.signing_key else default_key_path(args.db or _db_default())
    )
    try:
        key = load_or_generate_key(path)
    except (OSError, ValueError) as exc:
        print(f"boundary-audit collector key: {path}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(public_key_pem(key).decode())
    return 0


# -- tokens ------------------------------------------------------------------------------
def _reports_errors(
    handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A bad URL or an unreachable database is one clear line and exit 1, not a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (ValueError, OSError, CollectorError) as exc:
            return _fail(exc)

    return run


def _storage(args: argparse.Namespace) -> Any:
    return open_storage(args.db or _db_default())


@_reports_errors
def cmd_tokens_create(args: argparse.Namespace) -> int:
    with _storage(args) as storage:
        token = storage.create_token(
            args.agent, args.workspace, "reader" if args.reader else "agent"
        )
    # The secret alone on stdout (for scripts); its id, for revoking, on stderr.
    print(token)
    print(f"token id {hash_token(token)[:TOKEN_ID_CHARS]} (shown once)", file=sys.stderr)
    return 0


@_reports_errors
def cmd_tokens_list(args: argparse.Namespace) -> int:
    with _storage(args) as storage:
        tokens = storage.list_tokens()
    rows = [
        {
            "token_id": t.token_id,
            "agent": t.agent,
            "workspace": t.workspace,
            "scope": t.scope,
            "created": format_ns(t.created_ns),
            "revoked": format_ns(t.revoked_ns) if t.revoked_ns else None,
        }
        for t in tokens
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        _table("Tokens", list(rows[0]) if rows else ["token_id"], rows)
    return 0


@_reports_errors
def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    with _storage(args) as storage:
        revoked = storage.revoke_token(args.token_id)
    if not revoked:
        print(f"no live token with id {args.token_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.token_id}")
    return 0


# -- queries -----------------------------------------------------------------------------
def _source(args: argparse.Namespace) -> QuerySource:
    url = args.collector_url or (None if args.db else os.environ.get(COLLECTOR_URL_ENV))
    if url:
        return HttpSource(url, args.token or os.environ.get(READER_ENV))
    return StorageSource(open_storage(args.db or _db_default()))


def _table(title: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        # Text objects: rich never interprets markup in values from the wire.
        table.add_row(*(Text("" if row.get(c) is None else str(row.get(c))) for c in columns))
    console = Console()
    if not console.is_terminal:
        console = Console(width=PIPE_WIDTH)
    console.print(table)


def _fail(exc: Exception) -> int:
    print(f"boundary-audit: {exc}", file=sys.stderr)
    return 1


@_reports_errors
def cmd_sessions(args: argparse.Namespace) -> int:
    source = _source(args)
    try:
        rows: list[dict[str, Any]] = []
        cursor = None
        while len(rows) < args.limit:
            page, cursor = source.sessions(min(args.limit - len(rows), MAX_PAGE_SIZE), cursor)
            rows.extend(page)
            if cursor is None:
                break
    finally:
        source.close()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    for row in rows:
        verdict = row.get("completeness") or {}
        row["completeness"] = verdict.get("summary", "")
        row["chain"] = _chain_cell(row.get("chain") or {})
    columns = [
        "session_id",
        "agent",
        "workspace",
        "confined_process_name",
        "last_seen",
        "allowed",
        "denied",
        "dropped",
        "gaps",
        "completeness",
        "chain",
    ]
    _table("Sessions", columns, rows)
    return 0


def _logs_query(args: argparse.Namespace) -> EventQuery:
    since_ns = None
    if args.since:
        try:
            since_ns = time.time_ns() - int(parse_duration(args.since) * NS_PER_SECOND)
        except ValueError:
            since_ns = parse_time(args.since)
    session_id = None
    if args.session:
        try:
            session_id = str(uuid.UUID(args.session))
        except ValueError:
            raise ValueError(f"--session {args.session!r} is not a UUID") from None
    return EventQuery(
        session_id=session_id,
        allowed=False if args.denied else (True if args.allowed else None),
        host=args.host,
        url_contains=args.url_contains,
        since_ns=since_ns,
        until_ns=parse_time(args.until) if args.until else None,
    )


@_reports_errors
def cmd_logs(args: argparse.Namespace) -> int:
    query = _logs_query(args)
    source = _source(args)
    try:
        if args.follow:
            return _follow(source, query, args.json, start_at_tail=args.since is None)
        rows: list[dict[str, Any]] = []
        cursor = None
        while len(rows) < args.limit:
            page_query = _with(query, cursor, min(args.limit - len(rows), MAX_PAGE_SIZE))
            page, cursor, _ = source.events(page_query)
            rows.extend(page)
            if cursor is None:
                break
        verdict = _completeness_line(source, query.session_id)
    except KeyboardInterrupt:
        return 0
    finally:
        source.close()
    if args.json:
        for row in rows:
            print(json.dumps({k: row[k] for k in EVENT_JSON_FIELDS}))
    else:
        _table("Events", list(EVENT_JSON_FIELDS), rows)
    if verdict:
        # On stderr with --json, so the JSON lines stay pure events for pipes.
        print(verdict, file=sys.stderr if args.json else sys.stdout)
    return 0


def _chain_cell(chain: dict[str, Any]) -> str:
    """The chain's state, short (a table cell; ``--json`` and ``logs --session`` say why)."""
    state = str(chain.get("state", "unknown"))
    bad = chain.get("first_bad_sequence")
    return f"{state} at {bad}" if state == "tampered" and bad is not None else state


def _completeness_line(source: QuerySource, session_id: str | None) -> str:
    """``session ID: <completeness summary>`` for ``logs --session``; "" without one."""
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


def _follow(source: QuerySource, query: EventQuery, as_json: bool, *, start_at_tail: bool) -> int:
    """Print matching events as they arrive, one line each, until interrupted."""
    cursor = source.tail(query) if start_at_tail else None
    while True:
        page, next_cursor, resume = source.events(_with(query, cursor, MAX_PAGE_SIZE))
        for row in page:
            if as_json:
                print(json.dumps({k: row[k] for k in EVENT_JSON_FIELDS}), flush=True)
            else:
                decision = "ALLOW" if row["allowed"] else "DENY "
                print(
                    f"{row['time']} {decision} {row['method']} {row['url']!r} "
                    f"session={row['session_id']} rule={row['matched_rule']!r}",
                    flush=True,
                )
        cursor = resume or cursor
        if next_cursor is None:
            time.sleep(FOLLOW_POLL_SECONDS)
