"""The agent: socket in, durable spool in the middle, collector out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
from prometheus_client import CollectorRegistry

from ..logs import get_logger
from .config import AgentConfig
from .deadletter import DeadLetterFile
from .diskspace import DiskReserve
from .drops import DropLedger
from .forwarder import Forwarder
from .http import MetricsServer
from .metrics import AgentMetrics
from .receiver import Receiver
from .socketfile import SocketFile
from .spills import SpillScanner
from .spool import AsyncSpool, SpoolStats
from .writer import SpoolWriter


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What :meth:`Agent.stop` left behind for the next start."""

    remaining: SpoolStats
    connections_cut: int
    flushed: bool


class Agent:
    """Receives audit batches on a Unix socket and forwards them without loss.

    Use as an async context manager (``async with Agent(config) as agent``) or
    call :meth:`start` and :meth:`stop`. Raises
    :class:`~boundary_audit.agent.SocketInUseError` when another live agent
    owns the socket and :class:`~boundary_audit.agent.SpoolError` when the
    spool cannot be opened.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        registry: CollectorRegistry | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.metrics = AgentMetrics(registry)
        self._http_client = http_client
        self._log = get_logger("agent")
        self._spool: AsyncSpool | None = None
        self._socket_file = SocketFile(config.socket_path, config.socket_mode, config.socket_group)
        self._ledger = DropLedger()
        self._wake = asyncio.Event()
        self._writer: SpoolWriter | None = None
        self._forwarder: Forwarder | None = None
        self._receiver: Receiver | None = None
        self._metrics_server: MetricsServer | None = None
        self._spills: SpillScanner | None = None
        self._reserve: DiskReserve | None = None
        self._spill_task: asyncio.Task[None] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._started_at = 0.0
        self._last_report: ShutdownReport | None = None
        #: The error that made a background task fail, if one did.
        self.failure: BaseException | None = None

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        sock = None
        try:
            self._spool = spool = await AsyncSpool.open(
                cfg.spool_path, cfg.spool_max_bytes, cfg.spool_sync, self.metrics.observe_spool
            )
            sock = self._socket_file.claim()
            if cfg.metrics_listen is not None:
                self._metrics_server = MetricsServer(
                    *cfg.metrics_listen, self.metrics.registry, self.health
                )
                await self._metrics_server.start()
        except BaseException:
            if sock is not None:
                sock.close()
            await self._close_resources()
            raise
        self._reserve = reserve = DiskReserve(cfg.spool_dir / "spool.reserve")
        if not await asyncio.to_thread(reserve.ensure):
            reserve.reason = "spool disk nearly full: no room for the reserve"
            self._log.error("no room on the spool disk for its reserve", spool=str(cfg.spool_dir))
        self._writer = SpoolWriter(
            spool,
            self.metrics,
            ledger=self._ledger,
            forwarder_wake=self._wake,
            max_pending_bytes=cfg.max_pending_bytes,
            drop_report_interval=cfg.drop_report_interval,
            reserve=reserve,
        )
        dead_letter = DeadLetterFile(cfg.dead_letter_path)
        self._forwarder = Forwarder(
            cfg,
            spool,
            self.metrics,
            self._wake,
            self._http_client,
            dead_letter=dead_letter,
            reserve=reserve,
        )
        self._receiver = Receiver(cfg, self.metrics, self._writer, dead_letter)
        if cfg.spill_dir is not None:
            self._spills = SpillScanner(
                cfg.spill_dir, cfg.spill_scan_interval, self._receiver, self._writer, self.metrics
            )
        self._tasks["writer"] = asyncio.create_task(self._writer.run(), name="agent-writer")
        self._tasks["forwarder"] = asyncio.create_task(
            self._forwarder.run(), name="agent-forwarder"
        )
        for task in self._tasks.values():
            task.add_done_callback(self._task_done)
        await self._receiver.start(sock)
        if self._spills is not None:
            self._spill_task = asyncio.create_task(self._spills.run(), name="agent-spills")
            self._spill_task.add_done_callback(self._task_done)
        self._started_at = time.time()
        stats = spool.stats()
        self._log.info(
            "agent started",
            socket=str(cfg.socket_path),
            socket_mode=oct(cfg.socket_mode),
            collector=cfg.ingest_url,
            spool=str(cfg.spool_path),
            spool_max_bytes=cfg.spool_max_bytes,
            spool_sync=cfg.spool_sync,
            spooled_batches=stats.batches,
            spooled_events=stats.events,
            spill_dir=str(cfg.spill_dir) if cfg.spill_dir is not None else None,
            metrics=self.metrics_address,
        )

    async def stop(self) -> ShutdownReport:
        """Stop accepting, drain connections, flush the spool within the timeouts."""
        if self._stopping:
            await self._stopped.wait()
            assert self._last_report is not None
            return self._last_report
        self._stopping = True
        self._stop_requested.set()
        cfg = self.config
        assert self._receiver is not None
        assert self._writer is not None
        assert self._forwarder is not None
        assert self._spool is not None
        self._log.info("agent stopping", connections=self._receiver.connection_count)
        self._socket_file.unlink()
        if self._spill_task is not None:
            self._spill_task.cancel()  # files not yet committed stay for the next start
            with contextlib.suppress(asyncio.CancelledError):
                await self._spill_task
        await self._receiver.stop_accepting()
        cut = await self._receiver.drain(cfg.drain_timeout)
        await self._commit_rest()
        flushed = await self._flush()
        if self._metrics_server is not None:
            await self._metrics_server.close()
        remaining = self._spool.stats()
        log = self._log.info if remaining.batches == 0 else self._log.warning
        log(
            "agent stopped",
            flushed=flushed,
            remaining_batches=remaining.batches,
            remaining_events=remaining.events,
            remaining_drop_reports=remaining.drop_reports,
            note=None if flushed else "what remains is kept in the spool for the next start",
        )
        await self._forwarder.aclose()
        await self._close_resources()
        self._last_report = ShutdownReport(remaining, cut, flushed)
        self._stopped.set()
        return self._last_report

    async def _commit_rest(self) -> None:
        """Commit what the connections delivered; bounded, so a failing disk cannot hang stop."""
        assert self._writer is not None
        self._writer.stop()
        try:
            async with asyncio.timeout(self.config.drain_timeout):
                await self._tasks["writer"]
        except TimeoutError:
            self.metrics.errors.labels("shutdown_commit").inc()
            self._log.error(
                "shutdown: could not commit what connections sent; senders must re-send it",
                uncommitted_batches=self._writer.pending_batches,
            )
        except Exception as exc:
            # Already logged and counted by _task_done; the stop goes on.
            self._log.debug("writer task had failed", error=repr(exc))
        if self._ledger:
            # The spool had no room even for drop reports: say so, loudly,
            # since these counts die with the process.
            self.metrics.errors.labels("shutdown_drop_counts").inc()
            self._log.error(
                "shutdown: drop counts could not be stored for the collector",
                dropped=self._ledger.totals(),
            )

    async def _flush(self) -> bool:
        """Forward until the spool is empty or the flush timeout; True if emptied."""
        assert self._forwarder is not None
        self._forwarder.draining = True
        self._wake.set()
        try:
            async with asyncio.timeout(self.config.flush_timeout):
                await self._tasks["forwarder"]
        except TimeoutError:
            return False
        except Exception:  # a failure was logged by _task_done
            return False
        return True

    async def _close_resources(self) -> None:
        self._socket_file.close()
        if self._spool is not None:
            spool, self._spool = self._spool, None
            await spool.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    def request_stop(self) -> None:
        """Ask :meth:`serve` to stop (safe from a signal handler)."""
        self._stop_requested.set()

    async def serve(self) -> ShutdownReport:
        """Run until :meth:`request_stop` (or a background task fails), then stop."""
        await self._stop_requested.wait()
        return await self.stop()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.failure = exc
        self.metrics.errors.labels(task.get_name()).inc()
        self._log.error(
            "agent task failed; shutting down",
            task=task.get_name(),
            error=repr(exc),
            exc_info=exc,
        )
        self._stop_requested.set()

    # -- introspection ----------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self.config.socket_path

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return self._metrics_server.address if self._metrics_server is not None else None

    async def scan_spills(self) -> int:
        """Deliver spill files now (what the timer does); how many were delivered."""
        if self._spills is None:
            return 0
        return await self._spills.scan()

    def spool_stats(self) -> SpoolStats:
        if self._spool is None:
            raise RuntimeError("agent is not running")
        return self._spool.stats()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(alive, details)``: alive unless stopping or a background task failed.

        A full spool is ``"degraded"`` but still alive: restarting the agent
        would not make room, only the collector taking data does.
        """
        stats = self._spool.stats() if self._spool is not None else None
        refusing = self._writer.refusing if self._writer is not None else False
        last = self._forwarder.last_success if self._forwarder is not None else None
        disk = self._reserve.reason if self._reserve is not None else None
        alive = not self._stopping and self.failure is None
        healthy = not refusing and disk is None
        status = "ok" if alive and healthy else ("degraded" if alive else "stopping")
        reason = disk or ("spool full: refusing new batches" if refusing else None)
        details: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "stopping": self._stopping,
            "spool_full": refusing,
            "spool_disk": disk,
            "spool_batches": stats.batches if stats else None,
            "spool_events": stats.events if stats else None,
            "spool_bytes": stats.bytes if stats else None,
            "failure": repr(self.failure) if self.failure is not None else None,
            "connections": self._receiver.connection_count if self._receiver else 0,
            "last_forward_success": last,
            "uptime_s": round(time.time() - self._started_at, 3) if self._started_at else 0,
        }
        return alive, details
