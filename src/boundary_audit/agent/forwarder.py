"""Forwarding the spool to the collector, in order, until it acknowledges.

The retry policy (:func:`retry_delay` on the shared
:class:`~boundary_audit._retry.Backoff`, :func:`parse_retry_after`) and the
request and acknowledgement formats (:func:`build_request`, :func:`parse_ack`)
are pure; the :class:`Forwarder` does the I/O with :class:`httpx.AsyncClient`.

Outcomes of one ingest request (see the ingest API):

* 200: the items leave the spool.
* 400 / 413 with more than one item: split in halves and send each, so one
  bad batch cannot take good ones with it; a single rejected item goes to
  the dead-letter file and is counted (reason ``rejected``,
  :mod:`~boundary_audit.agent.deadletter`).
* 429 / 503: wait ``Retry-After`` (capped), then retry.
* 401 / 403, other statuses, connection errors: capped exponential backoff
  with jitter; the items stay spooled.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from datetime import UTC

import httpx

from .._retry import Backoff
from ..logs import get_logger
from ..wire import IngestRequest
from .config import INGEST_CONTENT_TYPE, AgentConfig
from .deadletter import DeadLetterFile, DeadLetters
from .diskspace import DiskReserve
from .metrics import AgentMetrics
from .spool import KIND_SESSION, AsyncSpool, SpooledBatch, SpooledDropReport

Item = SpooledBatch | SpooledDropReport

#: Statuses after which the data itself is wrong and re-sending cannot help.
PERMANENT_STATUSES = frozenset({400, 413})
#: Statuses that carry ``Retry-After`` (overload, database unavailable).
THROTTLE_STATUSES = frozenset({429, 503})
#: Statuses meaning the token is wrong, missing or revoked.
AUTH_STATUSES = frozenset({401, 403})
#: How much of a response body goes into logs and the dead-letter file.
MAX_DETAIL_CHARS = 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def build_request(items: Sequence[Item]) -> tuple[str, bytes]:
    """``(batch_id, body)`` of one IngestRequest carrying ``items`` in order."""
    request = IngestRequest(batch_id=str(uuid.uuid4()))
    for item in items:
        if isinstance(item, SpooledBatch) and item.kind == KIND_SESSION:
            request.sessions.add().MergeFromString(item.payload)
        elif isinstance(item, SpooledBatch):
            request.logs.add().MergeFromString(item.payload)
        else:
            request.drops.add().MergeFromString(item.payload)
    return request.batch_id, request.SerializeToString()


def retry_delay(
    status: int,
    retry_after: str | None,
    backoff: Backoff,
    retry_after_max: float,
    now: float | None = None,
) -> tuple[str, float]:
    """``(failure state, seconds to wait)`` after a transient failure ``status``.

    429/503 wait what ``Retry-After`` says (capped at ``retry_after_max``,
    plus jitter), or back off when it says nothing usable; any other status
    backs off. Every call counts as one more failure of ``backoff``.
    """
    if status in THROTTLE_STATUSES:
        wait = parse_retry_after(retry_after, now)
        if wait is None:
            return "throttled", backoff.next_delay()
        return "throttled", backoff.after_retry_after(min(wait, retry_after_max))
    state = "unauthorized" if status in AUTH_STATUSES else f"http_{status}"
    return state, backoff.next_delay()


def parse_ack(content: bytes) -> tuple[int, int]:
    """``(stored, duplicates)`` of a 200 answer; ValueError/KeyError/TypeError if malformed."""
    ack = json.loads(content)
    return int(ack["stored"]), int(ack["duplicates"])


class Forwarder:
    """Sends spooled items to the collector; one request in flight, oldest first."""

    def __init__(
        self,
        config: AgentConfig,
        spool: AsyncSpool,
        metrics: AgentMetrics,
        wake: asyncio.Event,
        client: httpx.AsyncClient | None = None,
        *,
        dead_letter: DeadLetterFile | None = None,
        reserve: DiskReserve | None = None,
    ) -> None:
        self._config = config
        self._reserve = reserve
        self._spool = spool
        self._metrics = metrics
        file = dead_letter or DeadLetterFile(config.dead_letter_path)
        self._dead_letters = DeadLetters(file, spool, metrics)
        self._wake = wake
        self._client = client or httpx.AsyncClient(
            timeout=config.request_timeout,
            headers={
                "Authorization": f"Bearer {config.token}",
                "Content-Type": INGEST_CONTENT_TYPE,
            },
        )
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)
        self._log = get_logger("agent", collector=config.ingest_url)
        self._state = "ok"
        self.draining = False
        #: Unix time of the last acknowledged request.
        self.last_success: float | None = None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def run(self) -> None:
        """Forward until cancelled; when :attr:`draining`, return once the spool is empty."""
        while True:
            self._wake.clear()
            try:
                batches, reports = await self._spool.peek(
                    self._config.max_request_bytes, self._config.max_request_events
                )
                if not batches and not reports:
                    if self.draining:
                        return
                    await self._wake.wait()
                    continue
                delay = await self._deliver([*reports, *batches])
            except (sqlite3.Error, OSError) as exc:
                # The spool or the dead-letter file failed (disk full, I/O
                # error): nothing was deleted, so retrying later is safe.
                self._metrics.errors.labels("forward_spool").inc()
                if self._reserve is not None:
                    self._reserve.failed(exc)
                delay = self._backoff.next_delay()
                self._log.error(
                    "spool access failed while forwarding; will retry",
                    error=repr(exc),
                    retry_in_s=round(delay, 3),
                )
            if delay is not None:
                self._log.debug("forward retry scheduled", delay_s=round(delay, 3))
                await asyncio.sleep(delay)

    async def _deliver(self, items: list[Item]) -> float | None:
        """Send ``items``; None when all are settled, else seconds to wait before retrying."""
        batch_id, body = build_request(items)
        started = time.monotonic()
        try:
            response = await self._client.post(self._config.ingest_url, content=body)
        except httpx.HTTPError as exc:
            kind = type(exc).__name__
            self._metrics.forward_requests.labels(kind).inc()
            self._enter_state("unreachable", f"{kind}: {exc}", batch_id)
            return self._backoff.next_delay()
        self._metrics.forward_latency.observe(time.monotonic() - started)
        status = response.status_code
        self._metrics.forward_requests.labels(str(status)).inc()
        if status == 200:
            await self._acknowledged(items, batch_id, response)
            return None
        detail = response.text[:MAX_DETAIL_CHARS]
        if status in PERMANENT_STATUSES:
            return await self._refused(items, batch_id, status, detail)
        return self._retry_delay(status, response, detail, batch_id)

    async def _refused(
        self, items: list[Item], batch_id: str, status: int, detail: str
    ) -> float | None:
        """400/413: split until the bad item is alone, then dead-letter it."""
        if len(items) > 1:
            self._log.warning(
                "collector refused a request; splitting it to isolate the bad part",
                batch_id=batch_id,
                status=status,
                items=len(items),
                detail=detail,
            )
            mid = len(items) // 2
            for half in (items[:mid], items[mid:]):
                delay = await self._deliver(half)
                if delay is not None:
                    return delay
            return None
        batches, reports = _split(items)
        await self._dead_letters.reject(batches, reports, batch_id, status, detail)
        return None

    def _retry_delay(
        self, status: int, response: httpx.Response, detail: str, batch_id: str
    ) -> float:
        """Seconds to wait after a transient failure status."""
        state, delay = retry_delay(
            status,
            response.headers.get("retry-after"),
            self._backoff,
            self._config.retry_after_max,
        )
        self._enter_state(state, f"{status}: {detail}", batch_id)
        return delay

    async def _acknowledged(
        self, items: list[Item], batch_id: str, response: httpx.Response
    ) -> None:
        batches, reports = _split(items)
        await self._spool.delete(batches, reports)
        if self._reserve is not None and self._reserve.reason is not None:
            await self._spool.reclaim()  # give the freed space back to the disk
            self._reserve.wrote()
        events = sum(b.events for b in batches)
        self._metrics.batches_forwarded.inc(len(batches))
        self._metrics.events_forwarded.inc(events)
        self._metrics.drop_reports_forwarded.inc(len(reports))
        self.last_success = time.time()
        self._metrics.last_forward_success.set(self.last_success)
        self._check_ack(response, batch_id, events)
        if self._state != "ok":
            self._log.info(
                "forwarding resumed", previous_state=self._state, failures=self._backoff.failures
            )
            self._state = "ok"
        self._backoff.reset()

    def _check_ack(self, response: httpx.Response, batch_id: str, events: int) -> None:
        """Compare the collector's counts with what was sent; a gap is logged, not fatal."""
        try:
            stored, duplicates = parse_ack(response.content)
        except (ValueError, KeyError, TypeError) as exc:
            self._metrics.errors.labels("ack_unparsable").inc()
            self._log.warning(
                "collector acknowledged with an unexpected body",
                batch_id=batch_id,
                error=str(exc),
                body=response.text[:MAX_DETAIL_CHARS],
            )
            return
        self._metrics.events_duplicate.inc(duplicates)
        if stored + duplicates != events:
            self._metrics.errors.labels("ack_mismatch").inc()
            self._log.warning(
                "collector acknowledged a different number of events than sent",
                batch_id=batch_id,
                sent=events,
                stored=stored,
                duplicates=duplicates,
            )

    def _enter_state(self, state: str, detail: str, batch_id: str) -> None:
        """Log an error once per change of failure state, debug while it persists."""
        if state != self._state:
            self._log.error(
                "forwarding to the collector failed; keeping data spooled and retrying",
                state=state,
                detail=detail,
                batch_id=batch_id,
            )
            self._state = state
        else:
            self._log.debug("forwarding still failing", state=state, detail=detail)


def _split(items: Sequence[Item]) -> tuple[list[SpooledBatch], list[SpooledDropReport]]:
    """The batches and the drop reports among ``items``, each in order."""
    batches = [i for i in items if isinstance(i, SpooledBatch)]
    reports = [i for i in items if isinstance(i, SpooledDropReport)]
    return batches, reports
