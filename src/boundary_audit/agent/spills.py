"""Delivering spill files: what senders could not hand over before their close timeout.

A sender that could not deliver everything before its close timeout (the
agent frozen, restarting or gone) leaves a spill file
(:mod:`boundary_audit.wire.spill`). The agent looks for them at start and
every ``spill_scan_interval`` seconds, claims each (an exclusive lock, so a
sender delivering the same file at the same moment is never doubled), takes
its frames exactly as a connection's (same checks, same relaying of seals
and drop counts), and removes the file only once all of it is committed to
the spool. A file that does not decode is quarantined (kept as
``*.corrupt``, never delivered) and counted; one that cannot be read stays
for the next scan. The collector stores each (session, sequence number) and
each session record once, so a file delivered twice (the agent died between
commit and removal) is stored once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from ..logs import get_logger
from ..wire.spill import SpillClaim, SpillError, claim_spill, list_spills
from .metrics import AgentMetrics
from .writer import SpoolWriter

if TYPE_CHECKING:
    from .receiver import Receiver

#: Frames of a spill file handed to the writer between waits for room, so a
#: large file (up to the spill bound, 32 MiB) respects the pending bound.
FRAMES_PER_STEP = 256


class SpillScanner:
    """The task that delivers spill files from one directory."""

    def __init__(
        self,
        directory: Path,
        interval: float,
        receiver: Receiver,
        writer: SpoolWriter,
        metrics: AgentMetrics,
    ) -> None:
        self.directory = directory
        self.interval = interval
        self._receiver = receiver
        self._writer = writer
        self._metrics = metrics
        self._log = get_logger("agent", spill_dir=str(directory))
        self._failing: str | None = None
        self._wake = asyncio.Event()

    def scan_now(self) -> None:
        """Look again at once (tests; a sender's hint)."""
        self._wake.set()

    async def run(self) -> None:
        """Scan at once, then every ``interval`` seconds, until cancelled."""
        while True:
            await self.scan()
            self._wake.clear()
            try:
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def scan(self) -> int:
        """Deliver every spill file that can be claimed now; how many were delivered."""
        try:
            paths = await asyncio.to_thread(list_spills, self.directory)
        except OSError as exc:
            self._failed("cannot read the spill directory; its files wait", exc)
            return 0
        if self._failing is not None:
            self._log.info("spill directory readable again", previous_error=self._failing)
            self._failing = None
        delivered = 0
        for path in paths:
            if await self._deliver(path):
                delivered += 1
        return delivered

    async def _deliver(self, path: Path) -> bool:
        try:
            claim = await asyncio.to_thread(claim_spill, path)
        except OSError as exc:
            self._metrics.errors.labels("spill_claim").inc()
            self._log.error(
                "spill file is not private or not readable; not delivered",
                spill=str(path),
                error=str(exc),
            )
            return False
        if claim is None:
            return False  # a sender is delivering it, or it is gone
        try:
            return await self._ingest(claim)
        finally:
            claim.release()  # no-op once removed or quarantined

    async def _ingest(self, claim: SpillClaim) -> bool:
        try:
            frames = await asyncio.to_thread(claim.frames)
        except SpillError as exc:
            kept = await asyncio.to_thread(claim.quarantine)
            self._metrics.spill_files.labels("quarantined").inc()
            self._log.error(
                "spill file does not decode; quarantined, not delivered",
                spill=str(claim.path),
                kept_as=str(kept),
                error=str(exc),
            )
            return False
        except OSError as exc:
            self._metrics.errors.labels("spill_read").inc()
            self._log.error("cannot read spill file; left for the next scan", error=str(exc))
            return False
        ticket = self._writer.ticket()
        for start in range(0, len(frames), FRAMES_PER_STEP):
            step = frames[start : start + FRAMES_PER_STEP]
            ticket = self._receiver.ingest(
                [(f.tag, f.payload) for f in step], source=claim.path.name
            )
            await self._writer.wait_for_room()
        await self._writer.committed_to(ticket)
        await asyncio.to_thread(claim.remove)
        self._metrics.spill_files.labels("delivered").inc()
        self._log.info(
            "spill file delivered and removed", spill=str(claim.path), frames=len(frames)
        )
        return True

    def _failed(self, what: str, exc: OSError) -> None:
        self._metrics.errors.labels("spill_scan").inc()
        if self._failing != str(exc):
            self._failing = str(exc)
            self._log.error(what, error=str(exc))


__all__ = ["FRAMES_PER_STEP", "SpillScanner"]
