"""Group commit: one task stores what every connection read, many frames per transaction.

Readers hand batches to :meth:`SpoolWriter.submit` without waiting; the
writer commits everything pending in one transaction, and while that commit
runs on the spool thread the next group gathers. So the commit rate adapts to
load (one frame per commit when idle, thousands when busy) and the disk sees
one sync per group, never one per frame. Memory is bounded by
``max_pending_bytes``: past it readers wait (:meth:`wait_for_room`), which
pushes back on the senders' sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..logs import get_logger
from ..wire import DropReason, DropSource
from .diskspace import DiskReserve
from .drops import DropLedger
from .metrics import AgentMetrics
from .spool import KIND_SESSION, AsyncSpool, NewBatch

#: Wait after a failed commit (disk full, I/O error) before trying again; the
#: pending batches are kept and readers are held back meanwhile.
COMMIT_RETRY_DELAY = 1.0
#: Reclaim steps (1 MiB each, see the spool) per retry while the disk is
#: full: up to 64 MiB a second given back, without holding the spool thread
#: from the forwarder for long.
MAX_RECLAIM_STEPS = 64


class SpoolWriter:
    """The one task that commits: batches from every connection, drop reports on a timer."""

    def __init__(
        self,
        spool: AsyncSpool,
        metrics: AgentMetrics,
        *,
        ledger: DropLedger,
        forwarder_wake: asyncio.Event,
        max_pending_bytes: int,
        drop_report_interval: float,
        reserve: DiskReserve | None = None,
    ) -> None:
        self._spool = spool
        self._reserve = reserve
        self._metrics = metrics
        self._ledger = ledger
        self._forwarder_wake = forwarder_wake
        self._max_pending = max_pending_bytes
        self._report_interval = drop_report_interval
        self._pending: list[NewBatch] = []
        self._pending_bytes = 0
        self._have_items = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = False
        self._refusing = False
        self._refused_events = 0
        self._last_report = time.monotonic()
        self._log = get_logger("agent")
        self.commits = 0
        #: Tickets: every submitted batch (and every drop count a sender
        #: waits to have acknowledged) takes the next number; ``committed``
        #: is the highest whose batch is in the spool (or refused and
        #: counted). Acknowledgements compare the two (see the receiver).
        self._submitted = 0
        self.committed = 0
        self._urgent_drops = False
        #: Called with ``committed`` after it advances.
        self.on_committed: Callable[[int], None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def committed_to(self, ticket: int) -> None:
        """Return once ``committed`` reaches ``ticket`` (see :meth:`ticket`)."""
        if self.committed >= ticket:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((ticket, future))
        await future

    def _advance(self, upto: int) -> None:
        self.committed = upto
        waiting, self._waiters = self._waiters, []
        for ticket, future in waiting:
            if ticket > upto:
                self._waiters.append((ticket, future))
            elif not future.done():
                future.set_result(None)
        if self.on_committed is not None:
            self.on_committed(upto)

    def ticket(self) -> int:
        """The number ``committed`` must reach for everything submitted so far to be ours."""
        return self._submitted

    @property
    def pending_batches(self) -> int:
        """Batches read from sockets and not yet committed."""
        return len(self._pending)

    @property
    def refusing(self) -> bool:
        """True while the spool is at its bound and new batches are refused."""
        return self._refusing

    def submit(self, batch: NewBatch) -> None:
        self._submitted += 1
        self._pending.append(batch)
        self._pending_bytes += len(batch.payload)
        if self._pending_bytes >= self._max_pending:
            self._room.clear()
        self._have_items.set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    def record_drop(
        self,
        source: DropSource,
        session_id: str,
        reason: DropReason,
        events: int,
        *,
        urgent: bool = False,
    ) -> None:
        """Count dropped events; ``urgent``: store the report with the next commit
        (a sender waits for its acknowledgement), not on the report timer."""
        self._ledger.add(source, session_id, reason, events)
        if urgent:
            self._submitted += 1
            self._urgent_drops = True
        self._have_items.set()

    async def run(self) -> None:
        """Commit until :meth:`stop`; then commit what is left and return."""
        while True:
            if not self._pending and not self._stopping:
                timeout = None
                if self._ledger:
                    due = self._last_report + self._report_interval
                    timeout = max(0.0, due - time.monotonic())
                try:
                    async with asyncio.timeout(timeout):
                        await self._have_items.wait()
                except TimeoutError:
                    pass  # time to store the accumulated drop counts
            self._have_items.clear()
            upto = self._submitted
            if self._pending and not await self._commit():
                continue
            if self._ledger and (
                self._stopping
                or self._urgent_drops
                or time.monotonic() - self._last_report >= self._report_interval
            ):
                self._urgent_drops = False
                await self._store_drop_reports()
            if upto > self.committed:
                self._advance(upto)
            if self._stopping and not self._pending:
                return

    def stop(self) -> None:
        self._stopping = True
        self._have_items.set()

    async def _commit(self) -> bool:
        """Commit what is pending; False (kept for a retry) when the spool failed."""
        reserve = self._reserve
        if reserve is not None and not reserve.may_write():
            # Disk full: the room left is for deleting what the collector has;
            # give what the deletes freed back to the disk, then look again.
            self._room.clear()
            await self._reclaim()
            if not reserve.may_write():
                await asyncio.sleep(COMMIT_RETRY_DELAY)
                return False
        items, self._pending = self._pending, []
        size, self._pending_bytes = self._pending_bytes, 0
        try:
            refused = await self._spool.append(items)
        except Exception as exc:
            self._metrics.errors.labels("spool_append").inc()
            if reserve is not None:
                reserve.failed(exc)
            self._log.error(
                "spool commit failed; keeping the batches in memory and retrying",
                batches=len(items),
                error=repr(exc),
                retry_in_s=COMMIT_RETRY_DELAY,
            )
            self._pending = items + self._pending
            self._pending_bytes += size
            self._room.clear()
            await asyncio.sleep(COMMIT_RETRY_DELAY)
            return False
        finally:
            self._metrics.pending_bytes.set(self._pending_bytes)
        if self._pending_bytes < self._max_pending:
            self._room.set()
        self.commits += 1
        self._metrics.spool_commits.inc()
        stored_events = sum(b.events for b in items) - sum(b.events for b in refused)
        self._metrics.events_spooled.inc(stored_events)
        if refused:
            self._refuse(refused)
        elif self._refusing:
            self._log.info(
                "spool has room again; accepting batches", refused_events=self._refused_events
            )
            self._refusing = False
            self._refused_events = 0
        if stored_events or len(refused) < len(items):
            self._forwarder_wake.set()
        return True

    async def _reclaim(self) -> None:
        """Free pages of the spool file back to the disk, a step at a time."""
        try:
            for _ in range(MAX_RECLAIM_STEPS):
                if not await self._spool.reclaim():
                    return
        except Exception as exc:
            self._metrics.errors.labels("spool_reclaim").inc()
            self._log.warning("could not give spool pages back to the disk", error=repr(exc))

    def _refuse(self, refused: list[NewBatch]) -> None:
        events = 0
        for batch in refused:
            if batch.kind == KIND_SESSION:
                self._metrics.errors.labels("session_record_refused").inc()
                self._log.error(
                    "spool full even for its headroom: a session record is lost",
                    session_id=batch.session_id,
                )
                continue
            self._ledger.add(
                DropSource.AGENT, batch.session_id, DropReason.SPOOL_FULL, batch.events
            )
            events += batch.events
        self._urgent_drops = True  # "refused and counted" must be stored before an ack
        self._metrics.dropped_events.labels(DropReason.SPOOL_FULL).inc(events)
        self._metrics.dropped_frames.labels(DropReason.SPOOL_FULL).inc(len(refused))
        self._refused_events += events
        if not self._refusing:
            self._refusing = True
            self._log.warning(
                "spool full; refusing new batches until the collector takes some",
                refused_events=events,
                sessions=sorted({b.session_id for b in refused}),
            )

    async def _store_drop_reports(self) -> None:
        self._last_report = time.monotonic()
        reports = self._ledger.take_reports()
        try:
            stored = await self._spool.add_drop_reports(reports)
        except Exception as exc:
            self._metrics.errors.labels("spool_drop_reports").inc()
            if self._reserve is not None:
                self._reserve.failed(exc)
            self._log.error("storing drop reports failed; keeping the counts", error=repr(exc))
            stored = 0
        if stored < len(reports):
            self._ledger.restore([payload for _, payload in reports[stored:]])
        if stored:
            self._forwarder_wake.set()
