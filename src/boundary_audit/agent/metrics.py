"""The agent's Prometheus metrics, on a registry of its own.

Names follow ``boundary_audit_agent_<name>_<unit>``. Drops are counted in
events where the number is known (``boundary_channel_full``,
``boundary_batch_full``, ``spool_full``, ``rejected``) and in frames where it
is not (``bad_frame``: a payload that does not decode has no countable
events).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Forward latency buckets (seconds): a loopback collector answers in ~1 ms,
#: a remote one in tens of ms, a struggling one in seconds.
FORWARD_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: Every reason an event or frame can be dropped, pre-created so dashboards
#: see zeros rather than missing series.
EVENT_DROP_REASONS = ("boundary_channel_full", "boundary_batch_full", "spool_full", "rejected")
FRAME_DROP_REASONS = ("bad_frame", "spool_full", "rejected")


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = "boundary_audit_agent_"
        self.connections_current = Gauge(
            p + "connections_current", "Open sender connections.", registry=r
        )
        self.connections = Counter(p + "connections", "Sender connections accepted.", registry=r)
        self.connections_rejected = Counter(
            p + "connections_rejected",
            "Sender connections refused (too_many, uid_not_allowed).",
            ["reason"],
            registry=r,
        )
        self.connections_closed = Counter(
            p + "connections_closed",
            "Sender connections closed, by why (eof, protocol_error, idle_timeout, ...).",
            ["reason"],
            registry=r,
        )
        self.frames_received = Counter(
            p + "frames_received", "Whole frames read from senders, by tag.", ["tag"], registry=r
        )
        self.events_received = Counter(
            p + "events_received", "Events in decoded log batches.", registry=r
        )
        self.events_spooled = Counter(
            p + "events_spooled", "Events committed to the spool (accepted).", registry=r
        )
        self.spool_commits = Counter(
            p + "spool_commits", "Group commits of the spool writer.", registry=r
        )
        self.batches_forwarded = Counter(
            p + "batches_forwarded", "Spooled batches the collector acknowledged.", registry=r
        )
        self.events_forwarded = Counter(
            p + "events_forwarded", "Events the collector acknowledged.", registry=r
        )
        self.events_duplicate = Counter(
            p + "events_duplicate",
            "Acknowledged events the collector already had (re-sends).",
            registry=r,
        )
        self.drop_reports_forwarded = Counter(
            p + "drop_reports_forwarded", "Drop reports the collector acknowledged.", registry=r
        )
        self.dropped_events = Counter(
            p + "dropped_events", "Events lost, by reason.", ["reason"], registry=r
        )
        self.dropped_frames = Counter(
            p + "dropped_frames", "Frames (batches) lost, by reason.", ["reason"], registry=r
        )
        self.forward_requests = Counter(
            p + "forward_requests",
            "Ingest requests by outcome (HTTP status or error kind).",
            ["outcome"],
            registry=r,
        )
        self.forward_latency = Histogram(
            p + "forward_latency_seconds",
            "Ingest request round-trip time.",
            buckets=FORWARD_LATENCY_BUCKETS,
            registry=r,
        )
        self.last_forward_success = Gauge(
            p + "last_forward_success_timestamp_seconds",
            "Unix time of the last acknowledged ingest request.",
            registry=r,
        )
        self.spool_batches = Gauge(p + "spool_batches", "Batches waiting in the spool.", registry=r)
        self.spool_events = Gauge(p + "spool_events", "Events waiting in the spool.", registry=r)
        self.spool_bytes = Gauge(
            p + "spool_bytes", "Payload bytes waiting in the spool.", registry=r
        )
        self.spool_drop_reports = Gauge(
            p + "spool_drop_reports", "Drop reports waiting in the spool.", registry=r
        )
        self.pending_bytes = Gauge(
            p + "pending_bytes", "Bytes read from sockets, not yet committed.", registry=r
        )
        self.errors = Counter(
            p + "errors", "Internal errors, by where they happened.", ["where"], registry=r
        )
        for reason in EVENT_DROP_REASONS:
            self.dropped_events.labels(reason)
        for reason in FRAME_DROP_REASONS:
            self.dropped_frames.labels(reason)
