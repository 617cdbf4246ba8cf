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
import os
import sys
from pathlib import Path
from typing import Any, TextIO, cast

from ..auditor import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_QUEUE_SIZE,
    Auditor,
    LogAuditor,
    MultiAuditor,
    OpenResult,
    SocketAuditor,
)
from ..auditor.event import AuditEvent
from ..auditor.log import LogAuditFormat
from ..confine import ConfinementUnavailable, LaunchError, check_enforcement, run_confined
from ..learn import LearnRuleSet
from ..logs import (
    LOG_LEVEL_CHOICES,
    LineWriter,
    configure_logging,
    get_logger,
    is_terminal,
    level_number,
    normalize_level,
)
from ..proxy import (
    CAError,
    CertificateAuthority,
    ProxyServer,
    RuleParseError,
    SessionHeaders,
    parse_rules,
)
from ..wire import socket_path_candidates
from .correlation import SessionCorrelation
from .options import positive_int
from .run_config import (
    DEFAULT_LOG_LEVEL,
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
#: Exit status for a usage or configuration error (argparse uses 2 too),
#: including a configuration that cannot be used (a --proxy-port in use).
EXIT_USAGE = 2
#: Exit status when the command cannot be confined as required (a shell's
#: "cannot execute").
EXIT_CANNOT_CONFINE = 126
#: Per-request lines at or above this level need ``--log-level info`` on a
#: terminal (allowed ones are info, denied ones warning): a terminal UI drawn
#: by the confined program (claude, codex) must not be garbled by them.
TERMINAL_AUDIT_LEVEL = "info"
#: The LogAuditor's minimum that lets no per-request line through (denied
#: lines are warnings).
AUDIT_LINES_OFF = "error"
#: The per-run log file in --log-dir; the session id makes it unique per run.
LOG_FILE_NAME = "boundary-audit-{session_id}.jsonl"
#: --log-dir holds request URLs: private to the user, as is each file.
LOG_DIR_MODE = 0o700
LOG_FILE_MODE = 0o600


def _error(message: str) -> None:
    print(f"boundary-audit run: {message}", file=sys.stderr)


def _level(value: str) -> str:
    """An argparse type: a log level in any accepted spelling (``warn``...)."""
    try:
        return normalize_level(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def terminal_audit_level(settings: RunSettings, args: argparse.Namespace, stream: TextIO) -> str:
    """Minimum level of the per-request lines on ``stream``.

    ``--audit-log-level`` if given; else the run's level when it is info or
    lower; else, on a terminal, none at all, and elsewhere (a pipe, a log
    shipper) the run's level, so denied requests show at warn as in Coder.
    """
    chosen: str | None = args.audit_log_level
    if chosen is not None:
        return chosen
    if level_number(settings.log_level) <= level_number(TERMINAL_AUDIT_LEVEL):
        return settings.log_level
    return AUDIT_LINES_OFF if is_terminal(stream) else settings.log_level


def build_auditor(
    settings: RunSettings, args: argparse.Namespace, log_file: LineWriter | None = None
) -> tuple[MultiAuditor, SocketAuditor | None]:
    """LogAuditor on stderr (and on the run's log file), plus the agent socket
    unless disabled."""
    fmt: LogAuditFormat = args.audit_log_format or ("logfmt" if is_terminal(sys.stderr) else "json")
    children: list[Auditor] = [
        LogAuditor(
            sys.stderr,
            fmt=fmt,
            level=terminal_audit_level(settings, args, sys.stderr),
            session_id=settings.session_id,
        )
    ]
    if log_file is not None:
        children.append(
            LogAuditor(
                cast(TextIO, log_file), fmt="json", level="info", session_id=settings.session_id
            )
        )
    sock: SocketAuditor | None = None
    if not settings.disable_audit_socket:
        sock = SocketAuditor(
            settings.socket_path,
            session_id=settings.session_id,
            confined_process_name=settings.process_name,
            close_timeout=args.audit_flush_timeout,
            queue_size=args.audit_queue_size,
            disabled=False,  # DISABLE_AUDIT_LOGS is already in the settings
        )
        children.append(sock)
    return MultiAuditor(children), sock


def open_log_file(settings: RunSettings) -> LineWriter | None:
    """The run's JSON-lines log in ``log_dir`` (created 0700), or None."""
    if settings.log_dir is None:
        return None
    directory = Path(settings.log_dir)
    path = directory / LOG_FILE_NAME.format(session_id=settings.session_id)
    try:
        directory.mkdir(mode=LOG_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(
            path,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
            LOG_FILE_MODE,
        )
    except OSError as exc:
        origin = settings.origins.get("log_dir", "log_dir")
        raise ConfigError(
            f"cannot write the log file {path}: {exc.strerror}", source=origin
        ) from None
    return LineWriter(os.fdopen(fd, "a", encoding="utf-8"))


def proxy_session_headers(correlation: SessionCorrelation, session_id: str) -> SessionHeaders:
    """The proxy's session headers from the correlation settings: the inject
    targets as they are (domain and optional path) under the chosen names."""
    try:
        return SessionHeaders.of(
            session_id=session_id,
            targets=correlation.targets,
            session_id_header=correlation.session_id_header,
            sequence_number_header=correlation.sequence_number_header,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def _serve_and_run(
    command: list[str],
    settings: RunSettings,
    *,
    auditor: MultiAuditor,
    ca: CertificateAuthority,
    enforced: bool,
    upstream_ca_file: str | None,
    wait_for_handover: bool,
    learn: bool = False,
) -> int:
    rules = parse_rules(settings.rules)
    proxy = ProxyServer(
        LearnRuleSet(rules.rules) if learn else rules,
        auditor,
        ca=ca,
        port=settings.proxy_port,
        upstream_ca_file=upstream_ca_file,
        session_headers=proxy_session_headers(settings.correlation, settings.session_id),
        allowed_uids={os.getuid()},  # only this user's processes (issue 10 item 6)
        wait_for_handover=wait_for_handover,
    )
    try:
        await proxy.start()
    except OSError as exc:
        origin = settings.origins.get("proxy_port", "proxy_port")
        raise ConfigError(
            f"the proxy cannot listen on port {settings.proxy_port}: {exc.strerror}; "
            "choose another port, or leave it unset for a random free one",
            source=origin,
        ) from None
    try:
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
            protect=[ca.cert_path.parent],
            agent_sockets=socket_path_candidates(settings.socket_path),
            on_attempt=lambda a: auditor.audit(AuditEvent(a.method, a.url, a.host, a.allowed)),
        )
    finally:
        await proxy.aclose()


def _configure_run_logging(settings: RunSettings, args: argparse.Namespace) -> LineWriter | None:
    """The run's own level and format on stderr, plus its log file."""
    log_file = open_log_file(settings)
    configure_logging(settings.log_level, args.log_format, file=log_file)
    return log_file


def _log_summary(log: Any, settings: RunSettings, sock: SocketAuditor) -> None:
    stats = sock.stats
    lost = stats.dropped_total + stats.undelivered
    # A loss is a warning (it shows at the default level); a clean run is info.
    (log.warning if lost else log.info)(
        "audit summary",
        session_id=settings.session_id,
        events=stats.queued + stats.dropped_total,
        sent_to_agent=stats.sent,
        delivered=stats.delivered,
        dropped=stats.dropped_total,
        spilled=stats.spilled,
        undelivered=stats.undelivered,
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
    log_file: LineWriter | None = None
    try:
        settings = settings_from_args(args)
        parse_rules(settings.rules)  # fail before anything starts
        proxy_session_headers(settings.correlation, settings.session_id)
        command = command_from_args(args)
        log_file = _configure_run_logging(settings, args)
        log = get_logger("run")
        enforced = check_enforcement(settings.require_enforcement)
        ca = CertificateAuthority.load_or_create(args.ca_dir)
    except (ConfigError, RuleParseError, CAError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ConfinementUnavailable as exc:
        _error(f"cannot enforce: {exc}")
        return EXIT_CANNOT_CONFINE
    log.info(
        "run settings",
        session_id=settings.session_id,
        config_file=settings.config_path,
        origins=dict(settings.origins),
        log_level=settings.log_level,
    )
    for notice in settings.notices:
        log.warning(notice)
    if args.learn:
        log.warning(
            "learn mode: every request is allowed and audited with what the rules would "
            "have decided; nothing is denied",
            session_id=settings.session_id,
            rules=len(settings.rules),
        )
    elif not settings.rules:
        log.warning("no allow rules given: every request will be denied (default deny)")
    auditor, sock = build_auditor(settings, args, log_file)
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
                wait_for_handover=args.audit_handover == "wait",
                learn=args.learn,
            )
        )
    except ConfigError as exc:
        _error(str(exc))
        code = EXIT_USAGE
    except LaunchError as exc:
        _error(str(exc))
        code = exc.exit_code
    except ConfinementUnavailable as exc:
        _error(f"cannot enforce: {exc}")
        code = EXIT_CANNOT_CONFINE
    finally:
        auditor.close()
    if sock is not None:
        _log_summary(log, settings, sock)
    if log_file is not None:
        configure_logging(settings.log_level, args.log_format)  # nothing more to the file
        log_file.close()
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
        default=None,
        help="format of the per-request audit lines on stderr (default: logfmt on a "
        "terminal, else json)",
    )
    parser.add_argument(
        "--audit-log-level",
        type=_level,
        default=None,
        metavar="|".join(LOG_LEVEL_CHOICES),
        help="minimum level of the per-request lines on stderr (allowed=info, denied=warn; "
        "default: --log-level, and on a terminal none below --log-level info)",
    )
    parser.add_argument(
        "--audit-handover",
        choices=("write", "wait"),
        default="write",
        help="write: each request's event goes to the agent at once (no batch linger); "
        "wait: also hold each answer until its event is in the agent's socket, so a "
        "launcher killed from outside loses no answered request (costs ~0.15 ms a "
        "request; default: %(default)s)",
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
        type=positive_int,
        default=DEFAULT_QUEUE_SIZE,
        metavar="EVENTS",
        help="events that may wait for the agent; beyond it new events are dropped and counted "
        f"(default {DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--learn",
        action="store_true",
        help="learn mode: allow every request, deny nothing, and record in each event what "
        "the rules would have decided (matched rule 'learn:allow RULE' or 'learn:deny'); "
        "then write rules with `boundary-audit rules suggest --session ID`",
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
    parser.set_defaults(func=run_command, default_log_level=DEFAULT_LOG_LEVEL, auto_log_format=True)
