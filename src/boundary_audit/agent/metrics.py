"""The agent's Prometheus metrics, on a registry of its own.

Names follow ``boundary_audit_agent_<name>_<unit>``. Drops are counted in
events where the number is known (``boundary_channel_full``,
``boundary_batch_full``, ``spool_full``, ``rejected``) and in frames where it
is not (``bad_frame``: a payload that does not decode has no countable
events). The label values are :class:`~boundary_audit.wire.DropReason` values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..wire import DropReason
from .spool import SpoolStats

#: Prefix of every metric name.
PREFIX = "boundary_audit_agent_"
#: Forward latency buckets (seconds): a loopback collector answers in ~1 ms,
#: a remote one in tens of ms, a struggling one in seconds.
FORWARD_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: Every reason an event or frame can be dropped, pre-created so dashboards
#: see zeros rather than missing series.
EVENT_DROP_REASONS = (
    DropReason.BOUNDARY_CHANNEL_FULL,
    DropReason.BOUNDARY_BATCH_FULL,
    DropReason.SPOOL_FULL,
    DropReason.REJECTED,
    DropReason.FORGED,
)
FRAME_DROP_REASONS = (
    DropReason.BAD_FRAME,
    DropReason.SPOOL_FULL,
    DropReason.REJECTED,
    DropReason.FORGED,
    DropReason.INVALID_STATUS,
)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=r)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, registry=r)

        self.connections_current = gauge("connections_current", "Open sender connections.")
        self.connections = counter("connections", "Sender connections accepted.")
        self.connections_rejected = counter(
            "connections_rejected",
            "Sender connections refused (too_many, uid_not_allowed).",
            "reason",
        )
        self.connections_closed = counter(
            "connections_closed",
            "Sender connections closed, by why (eof, protocol_error, idle_timeout, ...).",
            "reason",
        )
        self.frames_received = counter(
            "frames_received", "Whole frames read from senders, by tag.", "tag"
        )
        self.events_received = counter("events_received", "Events in decoded log batches.")
        self.events_spooled = counter("events_spooled", "Events committed to the spool (accepted).")
        self.spool_commits = counter("spool_commits", "Group commits of the spool writer.")
        self.batches_forwarded = counter(
            "batches_forwarded", "Spooled batches the collector acknowledged."
        )
        self.events_forwarded = counter("events_forwarded", "Events the collector acknowledged.")
        self.events_duplicate = counter(
            "events_duplicate", "Acknowledged events the collector already had (re-sends)."
        )
        self.drop_reports_forwarded = counter(
            "drop_reports_forwarded", "Drop reports the collector acknowledged."
        )
        self.dropped_events = counter("dropped_events", "Events lost, by reason.", "reason")
        self.dropped_frames = counter(
            "dropped_frames", "Frames (batches) lost, by reason.", "reason"
        )
        self.forward_requests = counter(
            "forward_requests", "Ingest requests by outcome (HTTP status or error kind).", "outcome"
        )
        self.forward_latency = Histogram(
            PREFIX + "forward_latency_seconds",
            "Ingest request round-trip time.",
            buckets=FORWARD_LATENCY_BUCKETS,
            registry=r,
        )
        self.last_forward_success = gauge(
            "last_forward_success_timestamp_seconds",
            "Unix time of the last acknowledged ingest request.",
        )
        self.spool_batches = gauge("spool_batches", "Batches waiting in the spool.")
        self.spool_events = gauge("spool_events", "Events waiting in the spool.")
        self.spool_bytes = gauge("spool_bytes", "Payload bytes waiting in the spool.")
        self.spool_drop_reports = gauge("spool_drop_reports", "Drop reports waiting in the spool.")
        self.pending_bytes = gauge("pending_bytes", "Bytes read from sockets, not yet committed.")
        self.errors = counter("errors", "Internal errors, by where they happened.", "where")
        self.spill_files = counter(
            "spill_files", "Spill files handled, by outcome (delivered, quarantined).", "outcome"
        )
        self.spill_files.labels("delivered")
        self.spill_files.labels("quarantined")
        for reason in EVENT_DROP_REASONS:
            self.dropped_events.labels(reason)
        for reason in FRAME_DROP_REASONS:
            self.dropped_frames.labels(reason)

    def observe_spool(self, stats: SpoolStats) -> None:
        """Set the spool gauges (called by the spool after every change)."""
        self.spool_batches.set(stats.batches)
        self.spool_events.set(stats.events)
        self.spool_bytes.set(stats.bytes)
        self.spool_drop_reports.set(stats.drop_reports)


__all__ = ["EVENT_DROP_REASONS", "FRAME_DROP_REASONS", "PREFIX", "AgentMetrics"]
