"""``boundary-audit agent``: run the agent in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from ..logs import get_logger
from ..wire import SOCKET_PATH_ENV, resolve_socket_path
from ..wire.spill import resolve_spill_dir
from .agent import Agent
from .config import (
    COLLECTOR_URL_ENV,
    CREDENTIAL_ENV,
    DEFAULT_FIRST_FRAME_TIMEOUT,
    DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PID,
    DEFAULT_MAX_CONNECTIONS_PER_UID,
    DEFAULT_SPILL_SCAN_INTERVAL,
    DEFAULT_SPOOL_MAX_BYTES,
    METRICS_LISTEN_ENV,
    SPOOL_DIR_ENV,
    AgentConfig,
    default_spool_dir,
    env_or,
    parse_listen,
)
from .socketfile import SocketInUseError
from .spool import SpoolError

#: Exit status when the configuration is unusable or the agent cannot start.
EXIT_CONFIG = 2
#: Exit status when a background task failed while running.
EXIT_FAILURE = 1
#: Exit status on a second SIGINT/SIGTERM (128 + SIGINT, the shell convention).
EXIT_INTERRUPTED = 130


def octal_mode(value: str) -> int:
    """``660`` or ``0o660`` -> 0o660, with an error argparse can show."""
    try:
        return int(value, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {value!r}") from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "agent",
        help="receive audit batches on a Unix socket and forward them to the collector",
        description=(
            "Receive audit batches from boundary senders on a Unix socket, keep them in a "
            "durable on-disk spool and forward them to the collector until it acknowledges "
            "them. Stops cleanly on SIGINT/SIGTERM."
        ),
    )
    p.add_argument(
        "--socket", help=f"socket path (default: ${SOCKET_PATH_ENV}, else {resolve_socket_path()})"
    )
    p.add_argument("--collector-url", help=f"collector base URL (default: ${COLLECTOR_URL_ENV})")
    p.add_argument(
        "--token", help=f"agent token (default: ${CREDENTIAL_ENV}; visible in ps, prefer env)"
    )
    p.add_argument("--token-file", type=Path, help="read the agent token from this file")
    p.add_argument(
        "--spool-dir",
        help=f"spool directory (default: ${SPOOL_DIR_ENV}, else {default_spool_dir()})",
    )
    p.add_argument(
        "--spool-max-bytes",
        type=int,
        default=DEFAULT_SPOOL_MAX_BYTES,
        help="bound of the spool in payload bytes; beyond it new batches are refused and counted",
    )
    p.add_argument(
        "--spool-sync",
        choices=("normal", "full"),
        default="normal",
        help="normal: survives agent crashes; full: fsync each commit, survives power loss",
    )
    p.add_argument(
        "--metrics-listen", help=f"HOST:PORT for /metrics and /healthz (${METRICS_LISTEN_ENV})"
    )
    p.add_argument(
        "--socket-mode",
        type=octal_mode,
        default=0o660,
        help="octal permissions of the socket (default 660; other-user bits are refused)",
    )
    p.add_argument("--socket-group", help="group that owns the socket (name or gid)")
    p.add_argument(
        "--allow-uid",
        type=int,
        action="append",
        help="accept connections only from this uid (repeatable; default: anyone the mode lets in)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="concurrent sender connections; more are refused and counted",
    )
    p.add_argument(
        "--max-connections-per-process",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS_PER_PID,
        help="connections one process (SO_PEERCRED pid) may hold; more are refused",
    )
    p.add_argument(
        "--max-connections-per-uid",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS_PER_UID,
        help="connections one uid may hold; more are refused",
    )
    p.add_argument(
        "--first-frame-timeout",
        type=float,
        default=DEFAULT_FIRST_FRAME_TIMEOUT,
        help="seconds a new connection may take to send its first frame before it is closed",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        help="seconds a connection may stall inside a frame before it is closed",
    )
    p.add_argument(
        "--spill-dir",
        type=Path,
        help="deliver spill files from this directory "
        "(default: $BOUNDARY_AUDIT_SPILL_DIR, else the per-user state dir's spill folder)",
    )
    p.add_argument(
        "--spill-scan-interval",
        type=float,
        default=DEFAULT_SPILL_SCAN_INTERVAL,
        help="seconds between looks for spill files (also done at start)",
    )
    p.add_argument(
        "--flush-timeout",
        type=float,
        default=DEFAULT_FLUSH_TIMEOUT,
        help="seconds to keep forwarding at shutdown before leaving the rest spooled",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Flags win over environment variables; errors name what is missing."""
    url = env_or(args.collector_url, COLLECTOR_URL_ENV)
    if not url:
        raise ValueError(f"a collector URL is required (--collector-url or ${COLLECTOR_URL_ENV})")
    token = args.token
    if not token and args.token_file is not None:
        token = args.token_file.read_text().strip()
    token = env_or(token, CREDENTIAL_ENV)
    if not token:
        raise ValueError(f"an agent token is required (--token, --token-file or ${CREDENTIAL_ENV})")
    spool_dir = env_or(args.spool_dir, SPOOL_DIR_ENV)
    listen = env_or(args.metrics_listen, METRICS_LISTEN_ENV)
    return AgentConfig(
        collector_url=url,
        token=token,
        socket_path=resolve_socket_path(args.socket),
        spool_dir=Path(spool_dir) if spool_dir else default_spool_dir(),
        spool_max_bytes=args.spool_max_bytes,
        spool_sync=args.spool_sync,
        metrics_listen=parse_listen(listen) if listen else None,
        socket_mode=args.socket_mode,
        socket_group=args.socket_group,
        allowed_uids=frozenset(args.allow_uid) if args.allow_uid else None,
        max_connections=args.max_connections,
        max_connections_per_pid=args.max_connections_per_process,
        max_connections_per_uid=args.max_connections_per_uid,
        first_frame_timeout=args.first_frame_timeout,
        idle_timeout=args.idle_timeout,
        flush_timeout=args.flush_timeout,
        spill_dir=resolve_spill_dir(args.spill_dir),
        spill_scan_interval=args.spill_scan_interval,
    )


def run(args: argparse.Namespace) -> int:
    log = get_logger("agent")
    # httpx logs every request at INFO; at thousands of requests a minute
    # that drowns the agent's own lines. Its warnings still come through.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        log.error("invalid agent configuration", error=str(exc))
        return EXIT_CONFIG
    return asyncio.run(_serve(config))


async def _serve(config: AgentConfig) -> int:
    log = get_logger("agent")
    agent = Agent(config)
    try:
        await agent.start()
    except (SocketInUseError, SpoolError, ValueError, OSError) as exc:
        log.error("agent cannot start", error=str(exc))
        return EXIT_CONFIG
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if agent.stop_requested:
            # Second signal: the operator will not wait for the flush. What
            # is committed is durable; what is not, the senders re-send.
            log.warning(
                "second signal; exiting without waiting", signal=signal.Signals(signum).name
            )
            os._exit(EXIT_INTERRUPTED)
        log.info("signal received; stopping", signal=signal.Signals(signum).name)
        agent.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info("agent running", pid=os.getpid())
    await agent.serve()
    return EXIT_FAILURE if agent.failure is not None else 0
