"""``boundary-audit run``: confine a command's egress and audit every request.

Glue only, and the one module that joins the enforcement proxy
(``boundary_audit.proxy``: rules, local CA, server) to process confinement
(``boundary_audit.confine``: launcher, Landlock); the run's settings
(:mod:`.run_config`) and the auditors (``boundary_audit.auditor``) each live
in their own module.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from ..auditor import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_QUEUE_SIZE,
    Auditor,
    LogAuditor,
    MultiAuditor,
    OpenResult,
    SocketAuditor,
)
from ..confine import ConfinementUnavailable, LaunchError, check_enforcement, run_confined
from ..logs import LOG_LEVELS, get_logger
from ..proxy import CAError, CertificateAuthority, ProxyServer, RuleParseError, parse_rules
from .run_config import (
    ConfigError,
    RunSettings,
    add_run_arguments,
    command_from_args,
    settings_from_args,
)

#: How long run waits, before it starts the command, for the agent to take
#: the session (our agent binds it to this process, so the confined command
#: cannot claim it first). Ours answers in milliseconds and Coder's is
#: recognised after the sender's ACK_WAIT; with no agent listening the wait
#: ends at once.
CLAIM_TIMEOUT = 2.0
#: Exit status for a usage or configuration error (argparse uses 2 too).
EXIT_USAGE = 2
#: Exit status when the command cannot be confined as required (a shell's
#: "cannot execute").
EXIT_CANNOT_CONFINE = 126


def _error(message: str) -> None:
    print(f"boundary-audit run: {message}", file=sys.stderr)


def _positive_int(value: str) -> int:
    """An argparse type: an integer >= 1, with an error that says so."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def build_auditor(
    settings: RunSettings, args: argparse.Namespace
) -> tuple[MultiAuditor, SocketAuditor | None]:
    """LogAuditor on stderr, plus the agent socket unless disabled."""
    level = args.audit_log_level or settings.log_level or args.log_level
    children: list[Auditor] = [
        LogAuditor(
            sys.stderr, fmt=args.audit_log_format, level=level, session_id=settings.session_id
        )
    ]
    sock: SocketAuditor | None = None
    if not settings.disable_audit_socket:
        sock = SocketAuditor(
            settings.socket_path,
            session_id=settings.session_id,
            confined_process_name=settings.process_name,
            close_timeout=args.audit_flush_timeout,
            queue_size=args.audit_queue_size,
        )
        children.append(sock)
    return MultiAuditor(children), sock


async def _serve_and_run(
    command: list[str],
    settings: RunSettings,
    *,
    auditor: MultiAuditor,
    ca: CertificateAuthority,
    enforced: bool,
    upstream_ca_file: str | None,
) -> int:
    proxy = ProxyServer(
        parse_rules(settings.rules),
        auditor,
        ca=ca,
        upstream_ca_file=upstream_ca_file,
        session_header_domains=settings.session_header_domains,
        session_id=settings.session_id,
    )
    async with proxy:
        get_logger("run").info(
            "proxy listening; starting command",
            proxy=proxy.url,
            session_id=settings.session_id,
            process_name=settings.process_name,
            rules=len(settings.rules),
            enforced=enforced,
        )
        return await run_confined(
            command,
            proxy_url=proxy.url,
            ca_cert_path=ca.cert_path,
            enforced=enforced,
            require_enforcement=settings.require_enforcement,
            isolate_network=settings.isolate_network,
        )


def claim_session(sock: SocketAuditor, session_id: str) -> OpenResult:
    """Open the session with the agent before the command starts; warn when none answers."""
    result = sock.connect_now(CLAIM_TIMEOUT)
    if result is OpenResult.UNREACHABLE:
        get_logger("run").warning(
            "no trusted agent reachable; the command runs anyway: events are queued, "
            "sent when an agent appears, and spilled to disk at exit if none does",
            session_id=session_id,
            candidates=[str(p) for p in sock.socket_paths],
        )
    return result


def run_command(args: argparse.Namespace) -> int:
    log = get_logger("run")
    try:
        settings = settings_from_args(args)
        parse_rules(settings.rules)  # fail before anything starts
        command = command_from_args(args)
        enforced = check_enforcement(settings.require_enforcement)
        ca = CertificateAuthority.load_or_create(args.ca_dir)
    except (ConfigError, RuleParseError, CAError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ConfinementUnavailable as exc:
        _error(f"cannot enforce: {exc}")
        return EXIT_CANNOT_CONFINE
    if not settings.rules:
        log.warning("no allow rules given: every request will be denied (default deny)")
    auditor, sock = build_auditor(settings, args)
    if sock is not None:
        claim_session(sock, settings.session_id)
    try:
        code = asyncio.run(
            _serve_and_run(
                command,
                settings,
                auditor=auditor,
                ca=ca,
                enforced=enforced,
                upstream_ca_file=args.upstream_ca_file,
            )
        )
    except LaunchError as exc:
        _error(str(exc))
        code = exc.exit_code
    except ConfinementUnavailable as exc:
        _error(f"cannot enforce: {exc}")
        code = EXIT_CANNOT_CONFINE
    finally:
        auditor.close()
    if sock is not None:
        stats = sock.stats
        log.info(
            "audit summary",
            session_id=settings.session_id,
            events=stats.queued + stats.dropped_total,
            sent_to_agent=stats.sent,
            delivered=stats.delivered,
            dropped=stats.dropped_total,
            spilled=stats.spilled,
            undelivered=stats.undelivered,
        )
    return code


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a command with its network egress confined and audited",
        description=(
            "Run COMMAND behind a default-deny HTTP/HTTPS proxy: every request is decided "
            "by the allow rules and audited (to stderr and to the agent's socket)."
        ),
        epilog="example: boundary-audit run --allow 'domain=github.com' -- git pull",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--audit-log-format",
        choices=("json", "logfmt"),
        default="json",
        help="format of the per-request audit lines on stderr",
    )
    parser.add_argument(
        "--audit-log-level",
        choices=LOG_LEVELS,
        default=None,
        help="minimum level of audit lines (allowed=info, denied=warning; default: --log-level)",
    )
    parser.add_argument(
        "--audit-flush-timeout",
        type=float,
        default=DEFAULT_CLOSE_TIMEOUT,
        metavar="SECONDS",
        help="at exit, how long to keep trying to deliver queued events to the agent",
    )
    parser.add_argument(
        "--audit-queue-size",
        type=_positive_int,
        default=DEFAULT_QUEUE_SIZE,
        metavar="EVENTS",
        help="events that may wait for the agent; beyond it new events are dropped and counted "
        f"(default {DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--ca-dir",
        type=Path,
        default=None,
        help="directory of the local CA (default: the user's config dir)",
    )
    parser.add_argument(
        "--upstream-ca-file",
        default=None,
        help="extra CA bundle trusted for upstream TLS (besides the system store)",
    )
    parser.set_defaults(func=run_command)
