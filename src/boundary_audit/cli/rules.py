"""``boundary-audit rules suggest|replay``: learn allow rules from stored history.

I/O only: history comes from the collector (its query API with
``--collector-url``, or the database with ``--db``, as ``logs`` reads), the
logic is :mod:`boundary_audit.learn`. Exit codes: 0 success (replay: nothing
changes), 1 replay: something changes, 2 usage or read error.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

from ..collector.cli_query import (
    add_source_flags,
    open_source,
    resolve_session,
    time_window,
)
from ..collector.client import QuerySource
from ..collector.model import (
    MAX_PAGE_SIZE,
    CollectorError,
    EventQuery,
)
from ..learn import (
    BASELINES,
    DEFAULT_PATH_THRESHOLD,
    Request,
    render_replay,
    render_suggestion,
    replay,
    suggest,
)
from ..logs import get_logger
from ..proxy import RuleParseError, parse_rules
from .config_file import load_config_file
from .options import ConfigError, positive_int

#: Exit status of ``replay`` when the candidate changes some decision.
EXIT_CHANGED = 1
#: Exit status for a usage error, an unreadable rule file or history.
EXIT_ERROR = 2


class HistoryError(Exception):
    """The history cannot be read or is empty; the message says why."""


def _sessions_matching(source: QuerySource, agent: str | None, process: str | None) -> set[str]:
    """Ids of the sessions of ``agent`` and/or confined ``process``."""
    out: set[str] = set()
    cursor: str | None = None
    while True:
        page, cursor = source.sessions(MAX_PAGE_SIZE, cursor)
        for session in page:
            if agent is not None and session.get("agent") != agent:
                continue
            if process is not None and session.get("confined_process_name") != process:
                continue
            out.add(str(session["session_id"]))
        if cursor is None:
            return out


def _query(args: argparse.Namespace) -> EventQuery:
    """``--session``/``--since``/``--until`` read exactly as ``logs`` reads them
    (one grammar: a change there applies here)."""
    since_ns, until_ns = time_window(args)
    return EventQuery(
        session_id=args.session, since_ns=since_ns, until_ns=until_ns, limit=MAX_PAGE_SIZE
    )


def read_history(args: argparse.Namespace) -> list[Request]:
    """Every stored request the selection names, oldest to newest as the API pages them."""
    query = _query(args)
    source = open_source(args)
    try:
        if query.session_id is not None:  # the short id the tables show works too
            query = dataclasses.replace(query, session_id=resolve_session(source, query.session_id))
        wanted = (
            _sessions_matching(source, args.agent, args.process)
            if args.agent is not None or args.process is not None
            else None
        )
        requests = [
            Request.from_json(event)
            for event in _events(source, query)
            if wanted is None or event["session_id"] in wanted
        ]
    finally:
        source.close()
    if not requests:
        raise HistoryError("no stored requests match the selection")
    return requests


def _events(source: QuerySource, query: EventQuery) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        page, cursor, _ = source.events(dataclasses.replace(query, cursor=cursor))
        yield from page
        if cursor is None:
            return


def _describe(args: argparse.Namespace) -> str:
    parts = [f"of session {args.session}" if args.session else f"since {args.since}"]
    if args.agent is not None:
        parts.append(f"agent {args.agent}")
    if args.process is not None:
        parts.append(f"process {args.process}")
    return ", ".join(parts)


def _fail(command: str, exc: Exception) -> int:
    get_logger("rules").error("rules_failed", command=command, error=str(exc))
    print(f"boundary-audit rules {command}: {exc}", file=sys.stderr)
    return EXIT_ERROR


def cmd_suggest(args: argparse.Namespace) -> int:
    try:
        history = read_history(args)
    except (HistoryError, ValueError, OSError, CollectorError) as exc:
        return _fail("suggest", exc)
    suggestion = suggest(
        history, path_threshold=args.merge_paths, merge_subdomains=args.merge_subdomains
    )
    if suggestion.unexpressible:
        get_logger("rules").warning(
            "requests no rule can name",
            count=len(suggestion.unexpressible),
            first=suggestion.unexpressible[0].url,
        )
    if suggestion.fallbacks:
        get_logger("rules").warning(
            "generalised rules missed requests; their narrow rules were added",
            count=suggestion.fallbacks,
        )
    sys.stdout.write(render_suggestion(suggestion, _describe(args)))
    return 0


def load_rule_file(path: str) -> list[str]:
    """The allow rules of a config file, read as ``run --config`` reads it."""
    layer = load_config_file(path)
    given = layer.get("rules")
    if given is None:
        return []
    assert isinstance(given.value, tuple)  # parse_string_list's result
    return [str(rule) for rule in given.value]


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        rules = parse_rules(load_rule_file(args.file))
        history = read_history(args)
    except (HistoryError, ConfigError, RuleParseError, ValueError, OSError, CollectorError) as exc:
        return _fail("replay", exc)
    report = replay(rules, history, baseline=args.baseline)
    sys.stdout.write(render_replay(report, args.baseline))
    return EXIT_CHANGED if report.changed else 0


def _add_history(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--session", metavar="ID", help="the requests of this session")
    which.add_argument(
        "--since", metavar="WHEN", help="requests since a duration ago (7d, 1h) or an RFC 3339 time"
    )
    parser.add_argument("--until", metavar="TIME", help="requests before this RFC 3339 time")
    parser.add_argument("--agent", metavar="A", help="only sessions of this agent")
    parser.add_argument("--process", metavar="P", help="only sessions of this confined process")
    add_source_flags(parser)
    # The filters of ``logs`` that the history does not use (see _query).
    parser.set_defaults(denied=False, allowed=False, host=None, url_contains=None)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rules",
        help="suggest allow rules from stored history, or replay a rule file against it",
        description="Write allow rules from what sessions actually did (record them with "
        "`run --learn`), and check a rule file against stored history.",
    )
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    s = sub.add_parser(
        "suggest",
        help="print a config file whose rules allow every request of the history",
        description="Print a YAML config file (for `run --config`) whose `allowlist` allows "
        "every request of the chosen history, methods grouped and path prefixes merged, "
        "with the number of requests each rule allows.",
        epilog="example: boundary-audit rules suggest --session ID > rules.yaml",
    )
    _add_history(s)
    s.add_argument(
        "--merge-paths",
        type=positive_int,
        default=DEFAULT_PATH_THRESHOLD,
        metavar="N",
        help="merge a path prefix into PREFIX/* when more than N distinct paths follow it "
        "(default: %(default)s)",
    )
    s.add_argument(
        "--merge-subdomains",
        action="store_true",
        help="write *.example.com for two or more subdomains of one parent domain",
    )
    s.set_defaults(func=cmd_suggest)
    r = sub.add_parser(
        "replay",
        help="list what a rule file would newly allow or deny on stored history",
        description="Evaluate the rules of FILE (a config file, e.g. from `rules suggest`) "
        "against stored requests. Exit 0 when no decision changes, 1 when some does, "
        "2 on errors.",
        epilog="example: boundary-audit rules replay rules.yaml --since 7d",
    )
    r.add_argument("file", metavar="FILE", help="config file with the candidate rules")
    _add_history(r)
    r.add_argument(
        "--baseline",
        choices=BASELINES,
        default="recorded",
        help="compare with what the proxy did (recorded; learn mode allowed everything) "
        "or with what the session's rules decided (rules) (default: %(default)s)",
    )
    r.set_defaults(func=cmd_replay)
