"""The shipping loop: read past the cursor, POST one OTLP batch, advance on success.

One request in flight and at most ``batch_size`` records in it (the
back-pressure: a slow receiver slows the export, never the ingest). The
cursor moves only after a 2xx (or after a batch is permanently refused,
logged and counted), so a restart resumes where it stopped; after a crash
between the 2xx and the cursor's commit the last batch is sent again
(at-least-once; ``boundary.session.id`` + ``boundary.sequence_number``
identify a record for de-duplication).

Responses: 2xx ships (``partial_success`` rejections are logged and
counted); 413 halves the batch and tries again (a single record refused as
too large is refused for good); 400 is a permanent refusal: retrying the
same bytes cannot succeed and would stall every later record, so the batch
is logged (its id range) and counted as rejected, and the cursor moves on.
Everything else (other 4xx such as 401/403 from a bad token, 5xx, network
errors) is retried with backoff; 429 and 503 honour ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.concurrency import run_in_threadpool

from boundary_audit._retry import Backoff
from boundary_audit.logs import get_logger

from ..metrics import PREFIX
from ..model import NS_PER_SECOND, StorageUnavailableError
from ..storage import Storage
from .mapping import export_request, resource
from .source import Source

#: Records per request: large enough that per-request overhead is small
#: (~1 MB of protobuf at ~0.5 KB a record), small enough for receivers'
#: usual 4-8 MB request limits.
DEFAULT_BATCH_SIZE = 2000
#: Seconds between looks at the store once caught up: export lag stays
#: about this small, and an idle collector costs one cheap query a second.
DEFAULT_POLL_SECONDS = 1.0
#: Least seconds between two lag measurements (a COUNT over the rows not
#: yet exported): fresh enough for an alert, cheap while catching up.
LAG_INTERVAL_SECONDS = 1.0
#: Timeout of one POST: a receiver slower than this is treated as down.
REQUEST_TIMEOUT_SECONDS = 30.0
#: Backoff after a failure: first retry soon, then at most every 30 s.
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
#: Longest ``Retry-After`` honoured (a larger one is clamped to this).
MAX_RETRY_AFTER_SECONDS = 300.0
#: Refusals that cannot succeed on retry: logged, counted, skipped.
PERMANENT_STATUSES = frozenset({400})
#: Refusals whose ``Retry-After`` is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 503})
TOO_LARGE = 413
CONTENT_TYPE = "application/x-protobuf"
#: Verdicts of one send after which the cursor moves on.
ACCEPTED = "accepted"
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class OtlpOptions:
    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)
    batch_size: int = DEFAULT_BATCH_SIZE
    poll_seconds: float = DEFAULT_POLL_SECONDS
    timeout_seconds: float = REQUEST_TIMEOUT_SECONDS


class OtlpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = PREFIX + "otlp_"
        self.exported = Counter(
            p + "records_exported_total",
            "Log records the OTLP receiver accepted, by kind (event, drop).",
            ("kind",),
            registry=registry,
        )
        self.rejected = Counter(
            p + "records_rejected_total",
            "Log records the receiver refused for good, by reason (partial_success, http_400,"
            " too_large): logged and skipped.",
            ("reason",),
            registry=registry,
        )
        self.failures = Counter(
            p + "request_failures_total",
            "Export requests that failed and will be retried, by kind (http_<status>, network,"
            " storage).",
            ("kind",),
            registry=registry,
        )
        self.requests = Counter(p + "requests_total", "Export requests sent.", registry=registry)
        self.pruned = Counter(
            p + "pruned_unexported_total",
            "Events deleted by retention before they were exported (the SIEM never gets them).",
            registry=registry,
        )
        self.lag_events = Gauge(
            p + "lag_events", "Stored events not yet exported.", registry=registry
        )
        self.lag_seconds = Gauge(
            p + "lag_seconds",
            "Age of the oldest stored event not yet exported (0 when caught up).",
            registry=registry,
        )


@dataclass(slots=True)
class Cycle:
    """What one export cycle did: records sent, and the delay before the next (None: none)."""

    sent: int = 0
    delay: float | None = None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(MAX_RETRY_AFTER_SECONDS, max(0.0, float(value)))
    except ValueError:
        return None  # an HTTP date or garbage: our own backoff instead


class Exporter:
    """Ships stored events and drop reports to one OTLP/HTTP logs endpoint."""

    def __init__(
        self,
        storage: Storage,
        options: OtlpOptions,
        metrics: OtlpMetrics,
        *,
        client: httpx.Client | None = None,
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.source = Source(storage)
        self.batch_size = options.batch_size
        self.backoff = Backoff(BACKOFF_INITIAL_SECONDS, BACKOFF_MAX_SECONDS)
        self.client = client or httpx.Client(timeout=options.timeout_seconds)
        self.resource = resource()
        self.horizon = 0
        self.stopping = asyncio.Event()
        self.log = get_logger("collector", task="otlp", endpoint=options.endpoint)
        self._prepared = False
        self._lag_at = -LAG_INTERVAL_SECONDS

    # -- one cycle (blocking; runs in a worker thread) ----------------------------------
    def run_once(self) -> Cycle:
        """Read one batch past the cursor, send it, advance the cursor if it was taken."""
        try:
            if not self._prepared:
                self.source.prepare()
                self._prepared = True
            return self._cycle()
        except StorageUnavailableError as exc:
            self.metrics.failures.labels("storage").inc()
            self.log.warning("otlp_storage_unavailable", error=str(exc))
            return Cycle(delay=self.backoff.next_delay())
        except Exception:
            # Anything else (a database error, a bug) must not end the export
            # silently: logged with its traceback, counted, retried later.
            self.metrics.failures.labels("error").inc()
            self.log.exception("otlp_cycle_failed")
            return Cycle(delay=self.backoff.next_delay())

    def _cycle(self) -> Cycle:
        with self.source.claim() as claim:
            if claim.cursor >= self.horizon:
                self.horizon = self.source.horizon()
                if self.source.rewind(claim, self.horizon):
                    self.log.warning("otlp_cursor_rewound", horizon=self.horizon)
            events = self.source.events(claim, self.horizon, self.batch_size)
            drops = self.source.drops(claim, self.batch_size - len(events))
            if not events and not drops:
                self._update_lag(claim.cursor, force=True)  # caught up: cheap, and exact
                return Cycle()
            request = export_request(events, drops, self.resource)
            last = events[-1].event.id if events else claim.cursor
            span = {"first_id": events[0].event.id if events else None, "last_id": last}
            verdict = self._send(request.SerializeToString(), len(events) + len(drops), span)
            if isinstance(verdict, Cycle):
                return verdict
            claim.advance(last, [d.report_id for d in drops])
            cursor = claim.cursor
        if verdict == ACCEPTED:
            self.metrics.exported.labels("event").inc(len(events))
            self.metrics.exported.labels("drop").inc(len(drops))
        self.backoff.reset()
        self._update_lag(cursor)
        return Cycle(sent=len(events) + len(drops))

    def _send(self, body: bytes, count: int, span: dict[str, int | None]) -> Cycle | str:
        """ACCEPTED or REJECTED: the cursor moves past this batch; a Cycle: retry it."""
        self.metrics.requests.inc()
        try:
            response = self.client.post(
                self.options.endpoint,
                content=body,
                headers={**self.options.headers, "Content-Type": CONTENT_TYPE},
            )
        except httpx.HTTPError as exc:
            self.metrics.failures.labels("network").inc()
            delay = self.backoff.next_delay()
            self.log.warning("otlp_send_failed", error=str(exc), retry_in=round(delay, 3), **span)
            return Cycle(delay=delay)
        status = response.status_code
        if 200 <= status < 300:
            self._partial(response.content, span)
            return ACCEPTED
        if status in PERMANENT_STATUSES or (status == TOO_LARGE and count == 1):
            reason = "too_large" if status == TOO_LARGE else f"http_{status}"
            self.metrics.rejected.labels(reason).inc(count)
            self.log.error(
                "otlp_batch_rejected",
                status=status,
                records=count,
                response=response.text[:500],
                **span,
            )
            return REJECTED
        self.metrics.failures.labels(f"http_{status}").inc()
        if status == TOO_LARGE:
            self.batch_size = max(1, count // 2)
            self.log.warning("otlp_batch_too_large", records=count, next_batch=self.batch_size)
            return Cycle(delay=0.0)
        wait = _retry_after(response) if status in RETRY_AFTER_STATUSES else None
        delay = self.backoff.after_retry_after(wait) if wait else self.backoff.next_delay()
        self.log.warning("otlp_send_refused", status=status, retry_in=round(delay, 3), **span)
        return Cycle(delay=delay)

    def _partial(self, content: bytes, span: dict[str, int | None]) -> None:
        if not content:
            return
        answer = ExportLogsServiceResponse()
        try:
            answer.ParseFromString(content)
        except Exception as exc:  # the batch was accepted; only its answer is odd
            self.log.warning("otlp_response_unreadable", error=str(exc), **span)
            return
        rejected = answer.partial_success.rejected_log_records
        if rejected:
            self.metrics.rejected.labels("partial_success").inc(rejected)
            self.log.error(
                "otlp_records_rejected",
                rejected=rejected,
                message=answer.partial_success.error_message[:500],
                **span,
            )

    def before_prune(self, cutoff_ns: int) -> None:
        """Retention is about to delete events that arrived before ``cutoff_ns``: those not
        exported yet are lost to the SIEM, so they are counted and logged (blocking)."""
        try:
            lost = self.source.unexported_before(self.source.cursor(), cutoff_ns)
        except StorageUnavailableError as exc:
            self.log.warning("otlp_prune_check_failed", error=str(exc))
            return
        if lost:
            self.metrics.pruned.inc(lost)
            self.log.error("otlp_unexported_events_pruned", events=lost, cutoff_ns=cutoff_ns)

    def _update_lag(self, cursor: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._lag_at < LAG_INTERVAL_SECONDS:
            return  # catching up: the gauges are refreshed once a second, not per batch
        self._lag_at = now
        behind, oldest_ns = self.source.lag(cursor)
        self.metrics.lag_events.set(behind)
        age = (time.time_ns() - oldest_ns) / NS_PER_SECOND if oldest_ns is not None else 0.0
        self.metrics.lag_seconds.set(max(0.0, age))

    # -- the loop (async; the collector's event loop) ------------------------------------
    async def run(self) -> None:
        """Export until :meth:`stop`; the cycle in flight finishes first."""
        self.log.info("otlp_export_started", batch_size=self.batch_size)
        while not self.stopping.is_set():
            cycle = await run_in_threadpool(self.run_once)
            if cycle.sent >= self.batch_size:
                continue  # a full batch: more may be waiting
            wait = self.options.poll_seconds if cycle.delay is None else cycle.delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), wait)
        self.client.close()
        self.log.info("otlp_export_stopped")

    def stop(self) -> None:
        self.stopping.set()


__all__ = ["DEFAULT_BATCH_SIZE", "Cycle", "Exporter", "OtlpMetrics", "OtlpOptions"]
