"""``verify`` (a store, or an export bundle offline) and ``export`` (one session's bundle)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from boundary_audit.evidence import (
    BundleError,
    CheckpointError,
    VerifyReport,
    load_private_key,
    load_public_key,
    verify_bundle,
)

from .connect import open_storage
from .model import CollectorError, format_ns
from .server import DB_ENV
from .storage import Storage, default_db_url
from .trail import count_store, default_key_path, export_bundle, read_checkpoints, verify_db

#: Stores with at least this many events show a progress bar while verified
#: (below it, verification takes well under a second).
PROGRESS_MIN_EVENTS = 100_000
#: Exit codes: intact, not intact, could not verify at all (bad arguments).
EXIT_INTACT, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def _db(args: argparse.Namespace) -> str:
    return str(args.db or os.environ.get(DB_ENV) or default_db_url())


def register(subparsers: Any) -> None:
    v = subparsers.add_parser(
        "verify",
        help="prove a store (or an export bundle) was not altered: chains, log, checkpoints",
    )
    source = v.add_mutually_exclusive_group()
    source.add_argument("--db", default=None, help=f"database URL (env {DB_ENV})")
    source.add_argument("--bundle", default=None, metavar="FILE", help="an export bundle, offline")
    v.add_argument("--session", default=None, help="check only this session (the log is whole)")
    v.add_argument(
        "--public-key",
        default=None,
        metavar="FILE",
        help="the collector's public key (PEM, from `collector key`); needed for --bundle. "
        "Without it, --db derives it from the signing key file beside the database, "
        "which proves nothing against whoever could edit both",
    )
    v.add_argument("--signing-key", default=None, metavar="PATH", help=argparse.SUPPRESS)
    v.add_argument("--json", action="store_true", help="the report as one JSON document")
    v.set_defaults(func=cmd_verify)

    e = subparsers.add_parser(
        "export", help="write one session's evidence bundle (verify offline with verify --bundle)"
    )
    e.add_argument("--session", required=True, help="the session id")
    e.add_argument("--out", required=True, metavar="FILE", help="where to write the bundle (JSON)")
    e.add_argument("--db", default=None, help=f"database URL (env {DB_ENV})")
    e.add_argument(
        "--signing-key",
        default=None,
        metavar="PATH",
        help="the collector's key, to sign a fresh checkpoint when the session's newest "
        "records are not covered by the latest (default: beside a SQLite database)",
    )
    e.set_defaults(func=cmd_export)


def _error(command: str, message: str) -> int:
    print(f"boundary-audit {command}: {message}", file=sys.stderr)
    return EXIT_ERROR


def cmd_verify(args: argparse.Namespace) -> int:
    if args.bundle:
        if not args.public_key:
            return _error("verify", "--bundle needs --public-key FILE")
        try:
            key = load_public_key(Path(args.public_key).read_bytes())
            data = Path(args.bundle).read_bytes()
        except (OSError, ValueError, CheckpointError) as exc:
            return _error("verify", str(exc))
        report = verify_bundle(data, key)
        return _print_report(report, args, f"bundle {args.bundle}")
    url = _db(args)
    try:
        if args.public_key:
            key = load_public_key(Path(args.public_key).read_bytes())
        else:
            path = Path(args.signing_key) if args.signing_key else default_key_path(url)
            key = load_private_key(path).public_key()
            print(
                f"note: public key taken from {path}; pass --public-key FILE (kept away from "
                "the database) for a proof against whoever can write both",
                file=sys.stderr,
            )
        with open_storage(url, migrate=False) as storage:
            report = _verify_with_progress(storage, key, args.session)
    except (OSError, ValueError, CheckpointError, CollectorError) as exc:
        return _error("verify", str(exc))
    return _print_report(report, args, "store")


def _verify_with_progress(storage: Storage, key: Any, session: str | None) -> VerifyReport:
    counts = count_store(storage)
    if session or counts.events < PROGRESS_MIN_EVENTS:
        return verify_db(storage, key, session=session)
    console = Console(stderr=True)
    columns = (
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("verify", total=counts.events)
        return verify_db(storage, key, progress=lambda done: bar.update(task, completed=done))


def _print_report(report: VerifyReport, args: argparse.Namespace, what: str) -> int:
    code = EXIT_INTACT if report.ok else EXIT_FAILED
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return code
    failures = report.failures()
    if failures:
        table = Table(title=f"{len(failures)} findings", show_lines=False)
        for column in ("finding", "session", "sequence number", "detail"):
            table.add_column(column, overflow="fold")
        for f in failures:
            seq = "" if f.sequence_number is None else str(f.sequence_number)
            table.add_row(str(f.kind), f.session or "", seq, f.detail)
        Console(width=None if sys.stdout.isatty() else 200).print(table)
    notes: dict[str, int] = {}
    for f in report.findings:
        if not f.kind.fails:
            notes[str(f.kind)] = notes.get(str(f.kind), 0) + 1
    signed = (
        f"checkpoint of {report.checkpoint_size} leaves signed "
        f"{format_ns(report.checkpoint_time_ns or 0)}"
        if report.checkpoint_size is not None
        else "no valid checkpoint"
    )
    head = "INTACT" if report.ok else "NOT INTACT"
    print(
        f"{what}: {head}: {report.events_checked} events in {report.sessions_checked} sessions,"
        f" {report.leaves_checked} log leaves, {signed}"
    )
    if notes:
        print("notes: " + ", ".join(f"{k} {n}" for k, n in sorted(notes.items())))
    return code


def cmd_export(args: argparse.Namespace) -> int:
    url = _db(args)
    try:
        with open_storage(url, migrate=False) as storage:
            if storage.get_session(args.session) is None:
                return _error("export", f"no session {args.session} in {url}")
            checkpoints = read_checkpoints(storage)
            try:
                if not checkpoints:
                    raise BundleError("no checkpoint yet")
                data = export_bundle(storage, args.session, checkpoints[-1])
            except BundleError:
                # The session's newest leaves are not signed yet: sign now.
                path = Path(args.signing_key) if args.signing_key else default_key_path(url)
                storage.checkpoint(load_private_key(path))
                data = export_bundle(storage, args.session, read_checkpoints(storage)[-1])
    except (OSError, ValueError, CheckpointError, CollectorError) as exc:
        return _error("export", str(exc))
    Path(args.out).write_bytes(data)
    print(f"wrote {args.out}: session {args.session}", file=sys.stderr)
    return EXIT_INTACT


__all__ = ["register"]
