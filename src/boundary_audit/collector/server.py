"""Running the collector: uvicorn on a real socket, background retention, clean shutdown."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from boundary_audit.evidence import load_or_generate_key
from boundary_audit.logs import get_logger

from .app import AppSettings, create_app
from .connect import open_storage
from .metrics import CollectorMetrics
from .model import NS_PER_SECOND, StorageUnavailableError
from .otlp import Exporter, OtlpMetrics, OtlpOptions
from .storage import Storage
from .trail import default_key_path

DEFAULT_LISTEN = "127.0.0.1:7468"
LISTEN_ENV = "BOUNDARY_AUDIT_LISTEN"
DB_ENV = "BOUNDARY_AUDIT_DB"
#: How often retention runs: often enough that the store never holds much
#: more than the configured window, rare enough to cost nothing.
DEFAULT_PRUNE_INTERVAL_SECONDS = 300.0
#: How often the store log is signed when it grew: rows stored after the
#: last checkpoint are only as safe as the database until the next, so a
#: minute keeps that window short; a signature costs well under a millisecond.
DEFAULT_CHECKPOINT_INTERVAL_SECONDS = 60.0
#: Seconds uvicorn waits for in-flight requests on shutdown before closing
#: them (an ingest transaction takes milliseconds; 10 s covers a slow disk).
GRACEFUL_SHUTDOWN_SECONDS = 10


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[v6]:PORT`` to (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"listen address {listen!r} has no host")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Only addresses no other machine can reach count (``localhost`` included)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Pending connections the kernel queues before we accept them (bursts of
#: agents reconnecting after a collector restart).
LISTEN_BACKLOG = 2048


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket created with ``IPPROTO_TCP`` spelled out.

    asyncio only sets TCP_NODELAY on accepted sockets whose ``proto`` is
    IPPROTO_TCP; a socket made with the default proto 0 (as uvicorn's
    ``bind_socket`` does) leaves Nagle on, and every keep-alive response then
    waits ~40 ms for the client's delayed ACK.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    """The base URL clients use to reach a listening socket (IPv6 in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn(app: Starlette, host: str, port: int, **options: Any) -> uvicorn.Server:
    """A uvicorn server for ``app``: our own logging, no lifespan, no Server header."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        **options,
    )
    return uvicorn.Server(config)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    db_url: str
    listen: str = DEFAULT_LISTEN
    retention_seconds: float | None = None
    prune_interval_seconds: float = DEFAULT_PRUNE_INTERVAL_SECONDS
    emit_event_logs: bool = True
    #: The Ed25519 key that signs checkpoints (created 0600 at first start).
    signing_key: str | None = None
    checkpoint_interval_seconds: float = DEFAULT_CHECKPOINT_INTERVAL_SECONDS
    #: Ship stored events and drop reports to an OTLP/HTTP endpoint (None: no export).
    otlp: OtlpOptions | None = None
    #: Keep the store log and check chains at ingest. Off only to measure what
    #: they cost: events stored without them are named ``inserted`` by verify.
    record_evidence: bool = True


async def retention_loop(
    storage: Storage,
    metrics: CollectorMetrics,
    retention_seconds: float,
    interval: float,
    exporter: Exporter | None = None,
) -> None:
    """Prune events older than the retention window, now and then every ``interval``."""
    log = get_logger("collector", task="retention")
    while True:
        cutoff = time.time_ns() - int(retention_seconds * NS_PER_SECOND)
        if exporter is not None:
            await run_in_threadpool(exporter.before_prune, cutoff)
        try:
            deleted = await run_in_threadpool(storage.prune, cutoff)
        except StorageUnavailableError as exc:
            metrics.db_errors.labels("prune", "unavailable").inc()
            log.warning("prune_failed", error=str(exc))
        except Exception:
            metrics.db_errors.labels("prune", "error").inc()
            log.exception("prune_failed")
        else:
            metrics.prune_runs.inc()
            metrics.pruned.inc(deleted)
            if deleted:
                log.info("pruned", events=deleted, retention_seconds=retention_seconds)
        await asyncio.sleep(interval)


async def checkpoint_loop(
    storage: Storage, metrics: CollectorMetrics, key: Ed25519PrivateKey, interval: float
) -> None:
    """Sign the store log every ``interval`` when it grew (and once at start)."""
    while True:
        await run_in_threadpool(sign_checkpoint, storage, metrics, key)
        await asyncio.sleep(interval)


def sign_checkpoint(storage: Storage, metrics: CollectorMetrics, key: Ed25519PrivateKey) -> None:
    """One checkpoint if the log grew; failures are logged and counted, never raised."""
    log = get_logger("collector", task="checkpoint")
    try:
        signed = storage.checkpoint(key)
    except StorageUnavailableError as exc:
        metrics.db_errors.labels("checkpoint", "unavailable").inc()
        log.warning("checkpoint_failed", error=str(exc))
    except Exception:
        metrics.db_errors.labels("checkpoint", "error").inc()
        log.exception("checkpoint_failed")
    else:
        if signed is not None:
            metrics.checkpoints.inc()
            c = signed.checkpoint
            log.info(
                "checkpoint_signed",
                tree_size=c.tree_size,
                root_hash=c.root_hash.hex(),
                key_id=c.key_id,
            )


async def serve(options: ServeOptions) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    log = get_logger("collector")
    host, port = parse_listen(options.listen)
    key_path = (
        Path(options.signing_key) if options.signing_key else default_key_path(options.db_url)
    )
    key = await run_in_threadpool(load_or_generate_key, key_path)
    storage = await run_in_threadpool(open_storage, options.db_url)
    storage.record_evidence = options.record_evidence
    if not options.record_evidence:
        log.warning(
            "evidence_off",
            detail="no store-log leaves, no chain check at ingest: "
            "`verify` names every event stored now as inserted",
        )
    metrics = CollectorMetrics()
    settings = AppSettings(
        require_read_auth=not is_loopback(host), emit_event_logs=options.emit_event_logs
    )
    app = create_app(storage, settings, metrics)
    server = _uvicorn(app, host, port, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    # uvicorn's own start/stop lines would repeat ours (collector_listening/stopped).
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    exporter: Exporter | None = None
    exporting: asyncio.Task[None] | None = None
    if options.otlp is not None:
        exporter = Exporter(storage, options.otlp, OtlpMetrics(metrics.registry))
        exporting = asyncio.create_task(exporter.run())
    pruner: asyncio.Task[None] | None = None
    if options.retention_seconds:
        pruner = asyncio.create_task(
            retention_loop(
                storage,
                metrics,
                options.retention_seconds,
                options.prune_interval_seconds,
                exporter,
            )
        )
    signer = asyncio.create_task(
        checkpoint_loop(storage, metrics, key, options.checkpoint_interval_seconds)
    )
    # uvicorn handles SIGINT/SIGTERM gracefully, then re-raises the signal once
    # it has restored the previous handlers; a quiet handler here lets the
    # process finish its own shutdown (close storage, log) and exit 0.
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _stopping) for sig in stop_signals}
    try:
        # Bound (and listening) before serving, so the real port is known and
        # logged even when --listen asked for port 0.
        sock = listen_socket(host, port)
        log.info(
            "collector_listening",
            url=url_of(sock),
            backend=storage.backend,
            read_auth=settings.require_read_auth,
        )
        await server.serve(sockets=[sock])
    finally:
        if pruner is not None:
            pruner.cancel()
        signer.cancel()
        if exporter is not None and exporting is not None:
            # The request in flight finishes (bounded by its timeout) and its
            # cursor is committed before the store closes.
            exporter.stop()
            await exporting
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # Everything stored until now is signed before the store closes.
        await run_in_threadpool(sign_checkpoint, storage, metrics, key)
        await run_in_threadpool(storage.close)
        log.info("collector_stopped")
    return 0 if server.started else 1


def _stopping(signum: int, frame: object) -> None:
    get_logger("collector").info("collector_stopping", signal=signal.Signals(signum).name)


#: Seconds to wait for an in-process server thread to start or stop.
THREAD_START_TIMEOUT_SECONDS = 10.0


class CollectorServer:
    """The app served by uvicorn on a background thread (embedding, tests).

    ``with CollectorServer(storage) as server: httpx.get(server.url + "/healthz")``.
    The storage stays the caller's to close.
    """

    def __init__(
        self,
        storage: Storage,
        settings: AppSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.storage = storage
        self.settings = settings or AppSettings(require_read_auth=not is_loopback(host))
        self.metrics = CollectorMetrics()
        self.app = create_app(storage, self.settings, self.metrics)
        self._server = _uvicorn(self.app, host, port)
        self._sock = listen_socket(host, port)
        self.url = url_of(self._sock)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> CollectorServer:
        self._thread.start()
        deadline = time.monotonic() + THREAD_START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("collector server thread did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(THREAD_START_TIMEOUT_SECONDS)
        self._sock.close()
