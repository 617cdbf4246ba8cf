"""Prometheus metrics of one collector instance (own registry, so tests can run several)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram

#: Every metric's name starts with this (the project, then the component).
PREFIX = "boundary_audit_collector_"
#: DB call latency buckets in seconds: sub-millisecond SQLite commits up to
#: the 5 s lock/connection timeouts after which requests get a 503.
DB_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        c = self._counter
        self.requests = c(
            "http_requests_total",
            "HTTP requests answered, by route and status code.",
            ("route", "status"),
        )
        self.events_stored = c("events_stored_total", "Events stored for the first time.")
        self.duplicates = c(
            "events_duplicate_total",
            "Events ignored because (session_id, sequence_number) was already stored.",
        )
        self.sessions = c("sessions_created_total", "Sessions seen for the first time.")
        self.drop_reports = c("drop_reports_total", "Drop reports stored for the first time.")
        self.session_records = c(
            "session_records_total", "Session records (opens, seals) stored for the first time."
        )
        self.dropped_events = c(
            "reported_dropped_events_total",
            "Events that reporters said were lost before reaching the collector, by reason.",
            ("reason",),
        )
        self.gaps = c(
            "sequence_gaps_detected_total",
            "Sequence numbers found missing below a session's highest (net of late arrivals).",
        )
        self.rejected = c(
            "ingest_rejected_total",
            "Ingest requests refused, by reason (unauthorized, invalid, too_large, overload, ...).",
            ("reason",),
        )
        self.db_latency = Histogram(
            PREFIX + "db_latency_seconds",
            "Time spent in database calls, by operation.",
            ["operation"],
            buckets=DB_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.db_errors = c(
            "db_errors_total",
            "Database calls that failed, by operation and kind (unavailable, error).",
            ("operation", "kind"),
        )
        self.flagged = c(
            "events_altered_total",
            "Events stored with a field cut past its limit, escaped or clamped, by what was done.",
            ("alteration",),
        )
        self.clamped = c(
            "counts_clamped_total", "Counts in drop reports or seals clamped into range."
        )
        self.pruned = c("retention_pruned_events_total", "Events deleted by the retention task.")
        self.prune_runs = c("retention_runs_total", "Retention passes completed.")
        self.checkpoints = c("checkpoints_signed_total", "Signed checkpoints of the store log.")

    def _counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(PREFIX + name, documentation, labels, registry=self.registry)
