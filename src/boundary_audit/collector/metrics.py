"""Prometheus metrics of one collector instance (own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: DB call latency buckets in seconds: sub-millisecond SQLite commits up to
#: the 5 s lock/connection timeouts after which requests get a 503.
DB_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "boundary_audit_collector_http_requests_total",
            "HTTP requests answered, by route and status code.",
            ["route", "status"],
            registry=r,
        )
        self.events_stored = Counter(
            "boundary_audit_collector_events_stored_total",
            "Events stored for the first time.",
            registry=r,
        )
        self.duplicates = Counter(
            "boundary_audit_collector_events_duplicate_total",
            "Events ignored because (session_id, sequence_number) was already stored.",
            registry=r,
        )
        self.sessions = Counter(
            "boundary_audit_collector_sessions_created_total",
            "Sessions seen for the first time.",
            registry=r,
        )
        self.drop_reports = Counter(
            "boundary_audit_collector_drop_reports_total",
            "Drop reports stored for the first time.",
            registry=r,
        )
        self.dropped_events = Counter(
            "boundary_audit_collector_reported_dropped_events_total",
            "Events that reporters said were lost before reaching the collector, by reason.",
            ["reason"],
            registry=r,
        )
        self.gaps = Counter(
            "boundary_audit_collector_sequence_gaps_detected_total",
            "Sequence numbers found missing below a session's highest (net of late arrivals).",
            registry=r,
        )
        self.rejected = Counter(
            "boundary_audit_collector_ingest_rejected_total",
            "Ingest requests refused, by reason (unauthorized, invalid, too_large, overload, ...).",
            ["reason"],
            registry=r,
        )
        self.db_latency = Histogram(
            "boundary_audit_collector_db_latency_seconds",
            "Time spent in database calls, by operation.",
            ["operation"],
            buckets=DB_LATENCY_BUCKETS,
            registry=r,
        )
        self.db_errors = Counter(
            "boundary_audit_collector_db_errors_total",
            "Database calls that failed, by operation and kind (unavailable, error).",
            ["operation", "kind"],
            registry=r,
        )
        self.pruned = Counter(
            "boundary_audit_collector_retention_pruned_events_total",
            "Events deleted by the retention task.",
            registry=r,
        )
