"""``collector`` and ``tokens`` subcommands (``sessions`` and ``logs``: :mod:`.cli_query`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from boundary_audit.evidence import load_or_generate_key, public_key_pem
from boundary_audit.logs import get_logger

from . import cli_query, otlp
from .cli_output import Column, add_format_flags, print_rows, print_table, reports_errors
from .cli_query import add_db as _add_db
from .cli_query import db_default as _db_default
from .cli_query import read_storage
from .connect import open_storage
from .model import CollectorError, format_ns, parse_duration
from .server import (
    DEFAULT_CHECKPOINT_INTERVAL_SECONDS,
    DEFAULT_LISTEN,
    DEFAULT_PRUNE_INTERVAL_SECONDS,
    LISTEN_ENV,
    ServeOptions,
    serve,
)
from .storage import TOKEN_ID_CHARS, hash_token
from .trail import DEFAULT_KEY_FILE, default_key_path


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
    p.add_argument(
        "--no-evidence",
        action="store_true",
        help="keep no store log and check no chains at ingest (to measure their cost; "
        "`verify` then names the events stored meanwhile as inserted)",
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
    add_format_flags(listing, "tokens")
    _add_db(listing)
    listing.set_defaults(func=cmd_tokens_list)
    revoke = tsub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", help="the id shown by `tokens list`")
    _add_db(revoke)
    revoke.set_defaults(func=cmd_tokens_revoke)

    cli_query.register(subparsers)


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
            record_evidence=not args.no_evidence,
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
@reports_errors
def cmd_tokens_create(args: argparse.Namespace) -> int:
    with open_storage(args.db or _db_default()) as storage:
        token = storage.create_token(
            args.agent, args.workspace, "reader" if args.reader else "agent"
        )
    # The secret alone on stdout (for scripts); its id, for revoking, on stderr.
    print(token)
    print(f"token id {hash_token(token)[:TOKEN_ID_CHARS]} (shown once)", file=sys.stderr)
    return 0


@reports_errors
def cmd_tokens_list(args: argparse.Namespace) -> int:
    with read_storage(args.db or _db_default()) as storage:
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
    if args.format != "table":
        print_rows(rows, args.format)
    else:
        print_table(None, [Column(key, key.upper()) for key in TOKEN_COLUMNS], rows)
    return 0


TOKEN_COLUMNS = ("token_id", "agent", "workspace", "scope", "created", "revoked")


@reports_errors
def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    with read_storage(args.db or _db_default()) as storage:
        revoked = storage.revoke_token(args.token_id)
    if not revoked:
        print(f"no live token with id {args.token_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.token_id}")
    return 0
